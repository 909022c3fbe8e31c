"""Driver of ``bench/gpu_suite.sh``: every performance check of the project on one device, one report.

Sections (each a bench script run in its own process, writing its own JSON under ``OUT/raw/``):

- ``connector``: ``connector.py``, the four 7B connectors' forward + backward in bf16 at batch 8;
- ``stage1`` / ``stage2``: ``vlm_step.py``, a full training step of ViT-Split and of the MLP baseline at
  real width (CLIP-L/336 + Vicuna-7B width) with reduced LLM depth: step time, tokens/s, MFU, peak memory;
- ``stage2_packed``: ``vlm_step.py``, the ViT-Split stage-2 step on 8 samples of one image and 16 text
  tokens, 2 of them with 1400, padded rows next to ``--packing``'s packed rows (at most 2048 tokens):
  tokens/s (real tokens), pad fraction and MFU of each;
- ``dense``: ``dense_train_step.py``, ViT-Split-S vs full fine-tuning of DINOv2-S at batch 8 (ratio);
- ``deform_conv``: ``deform_conv.py``, the deformable conv per implementation in fp32/bf16(/fp16);
- ``serving_checkpoint``: ``serving_checkpoint.py``, a random-weight LLaVA-ViT-Split 7B (the
  ``llava-v1.5-7b`` preset's embedded configs, all 32 LLM layers, bf16, safetensors) and 16 images;
- ``serving_long`` / ``serving_server``: ``vllm_serving.py`` on it, in bf16, 256 new tokens forced per reply
  of "Describe the image in detail.": (b) the 16 replies in one call, transformers vs vLLM (output tokens/s,
  engine start-up apart); (c) the OpenAI server vs the transformers engine under 1, 4 and 16 concurrent
  streaming clients (4, 4 and 16 requests: requests/s, output tokens/s, TTFT and ITL p50/p95). These two run
  with ``--vllm-python`` (default ``.venv-vllm/bin/python`` where it exists, as ``make vllm`` builds it);
  without one only their transformers half runs, and the report says the vLLM half was skipped.

Writes ``OUT/gpu_suite.json`` (settings, machine, per-section status, seconds and results) and
``OUT/gpu_suite.md`` (one table per section). A section that fails or runs out of the time budget is
recorded as such and the others still run. ``--tiny`` runs every section at tiny sizes on the CPU (a
check of the suite itself, seconds per section).

    python bench/gpu_suite.py --out gpu_suite_out              (on a GPU machine, < 8 minutes)
    python bench/gpu_suite.py --tiny --out /tmp/suite           (anywhere)

``--tiny`` skips the vLLM half of the serving sections unless ``--vllm-python`` is given (vLLM's start-up
on a CPU takes minutes; ``make test-vllm`` covers vLLM itself).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_common import machine_line, resolve_dtype, write_json

BENCH_DIR = Path(__file__).resolve().parent
VLLM_SECTIONS = ("serving_long", "serving_server")
# stage2_packed: the same short and long samples on padded rows and on --packing's packed rows
PACKED = ("--presets", "llava-v1.5-7b", "--layouts", "padded", "packed")
DEFAULT_VLLM_PYTHON = BENCH_DIR.parent / ".venv-vllm" / "bin" / "python"


def serving_sections(tiny: bool, device: str, folder: Path, vllm: bool) -> dict[str, list[str]]:
    """The checkpoint builder and the two ``vllm_serving.py`` workloads on it (``vllm``: with vLLM's half)."""
    common = ["vllm_serving.py", "--model", str(folder / "checkpoint"), "--question-file",
              str(folder / "questions.jsonl"), "--image-folder", str(folder / "images"), "--device", device,
              "--vllm-threads", "machine", "--engines", "transformers", *(["vllm"] if vllm else [])]  # fmt: skip
    if tiny:
        common += ["--dtype", "fp32", "--new-tokens", "8", "--enforce-eager"]
        build = ["serving_checkpoint.py", "--tiny", "--images", "2"]
        long = ["--images", "2", "--batch-size", "2"]
        server = ["--clients", "1", "2", "--requests", "2"]
    else:
        common += ["--dtype", "bf16", "--new-tokens", "256"]
        build = ["serving_checkpoint.py", "--preset", "llava-v1.5-7b", "--dtype", "bf16", "--images", "16"]
        long = ["--images", "16", "--batch-size", "16"]
        server = ["--clients", "1", "4", "16", "--requests", "4"]
    return {
        "serving_checkpoint": [*build, "--device", device, "--out", str(folder)],
        "serving_long": [*common, "--workload", "long", *long, "--out", str(folder / "long")],
        "serving_server": [*common, "--workload", "server", *server, "--out", str(folder / "server")],
    }


def sections(tiny: bool, device: str, dtype: str) -> dict[str, list[str]]:
    """Each section's script and arguments (``--json`` is added by the driver)."""
    base = ["--device", device]
    if tiny:
        tiny_vlm = base + ["--tiny", "--dtype", dtype, "--iters", "2", "--threads", "1"]
        return {
            "connector": ["connector.py", *base, "--tiny", "--dtype", dtype, "--batch-size", "2", "--iters", "2",
                          "--warmup", "0", "--threads", "1", "--presets", "llava-v1.5-7b", "llava-v1.5-7b-mlp"],
            "stage1": ["vlm_step.py", *tiny_vlm, "--stage", "pretrain"],
            "stage2": ["vlm_step.py", *tiny_vlm, "--stage", "finetune", "--text-tokens", "64"],
            "stage2_packed": ["vlm_step.py", *tiny_vlm, "--stage", "finetune", *PACKED, "--text-tokens", "4",
                              "--long-text-tokens", "96", "--max-length", "128", "--batch-size", "4"],
            "dense": ["dense_train_step.py", *base, "--preset", "tiny", "--size", "64", "--batch-size", "2",
                      "--iters", "2", "--dtype", dtype, "--threads", "1",
                      "--variants", "vitsplit", "full_finetune_linear"],
            "deform_conv": ["deform_conv.py", *base, "--shapes", "2,16,8,8", "--dtypes", "fp32", "bf16",
                            "--iters", "2", "--threads", "1"],
        }  # fmt: skip
    vlm = base + [
        "--dtype",
        "bf16",
        "--llm-layers",
        "4",
        "--batch-size",
        "8",
        "--warmup",
        "2",
        "--iters",
        "5",
    ]
    return {
        "connector": ["connector.py", *base, "--dtype", "bf16", "--batch-size", "8", "--iters", "10", "--warmup", "2"],
        "stage1": ["vlm_step.py", *vlm, "--stage", "pretrain", "--text-tokens", "32"],
        "stage2": ["vlm_step.py", *vlm, "--stage", "finetune", "--text-tokens", "512"],
        "stage2_packed": ["vlm_step.py", *vlm, "--stage", "finetune", *PACKED, "--text-tokens", "16",
                          "--long-text-tokens", "1400", "--max-length", "2048"],
        "dense": ["dense_train_step.py", *base, "--batch-size", "8", "--dtype", "bf16", "--warmup", "2",
                  "--iters", "10", "--variants", "vitsplit", "full_finetune_linear"],
        "deform_conv": ["deform_conv.py", *base, "--dtypes", "fp32", "bf16", "fp16", "--iters", "20"],
    }  # fmt: skip


def run_section(
    name: str, argv: list[str], raw_dir: Path, timeout: float, python: str = sys.executable
) -> dict:
    """Run one bench script with ``python``; returns ``{status, seconds, results | error}``."""
    out = raw_dir / f"{name}.json"
    log = raw_dir / f"{name}.log"
    cmd = [python, str(BENCH_DIR / argv[0]), *argv[1:], "--json", str(out)]
    tic = time.perf_counter()
    try:
        with open(log, "w") as f:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": time.perf_counter() - tic, "command": cmd}
    seconds = time.perf_counter() - tic
    if code != 0 or not out.is_file():
        tail = log.read_text().splitlines()[-15:]
        return {"status": "failed", "seconds": seconds, "command": cmd, "error": "\n".join(tail)}
    return {"status": "ok", "seconds": seconds, "command": cmd, "results": json.loads(out.read_text())}


def render_markdown(report: dict) -> str:
    """One heading + table per section (each script's own ``table``), or its failure."""
    import connector
    import deform_conv
    import dense_train_step
    import serving_checkpoint
    import vllm_serving
    import vlm_step

    tables = {
        "connector": connector.table,
        "stage1": vlm_step.table,
        "stage2": vlm_step.table,
        "stage2_packed": vlm_step.table,
        "dense": dense_train_step.table,
        "deform_conv": deform_conv.table,
        "serving_checkpoint": serving_checkpoint.table,
        "serving_long": vllm_serving.table,
        "serving_server": vllm_serving.table,
    }
    lines = [f"# GPU suite ({'tiny, ' if report['tiny'] else ''}{report['machine']})", ""]
    for name, section in report["sections"].items():
        lines.append(f"## {name}: {section['status']} ({section['seconds']:.0f} s)")
        lines.append("")
        if section["status"] == "ok":
            lines.append(tables[name](section["results"]))
            if name in VLLM_SECTIONS and "vllm" not in section["results"]["engines"]:
                lines += ["", f"vLLM half skipped: {report['vllm_python']}"]
        else:
            lines.append("```\n" + section.get("error", section["status"]) + "\n```")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (a check of the suite)")
    p.add_argument("--device", help="default: cuda, or cpu with --tiny")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all sections together")
    p.add_argument("--vllm-python", help="the vLLM venv's python for the serving sections' vLLM half "
                   "(default: .venv-vllm/bin/python where it exists, not with --tiny)")  # fmt: skip
    p.add_argument("--only", nargs="+", help="run only these sections")
    args = p.parse_args(argv)
    device = args.device or ("cpu" if args.tiny else "cuda")
    dtype = resolve_dtype("auto", device)
    raw_dir = args.out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    vllm_python = args.vllm_python or (
        None if args.tiny or not DEFAULT_VLLM_PYTHON.is_file() else str(DEFAULT_VLLM_PYTHON)
    )
    runs = sections(args.tiny, device, dtype)
    runs.update(serving_sections(args.tiny, device, args.out.resolve() / "serving", vllm_python is not None))
    report = {
        "tiny": args.tiny,
        "device": device,
        "dtype": dtype,
        "machine": machine_line(device),
        "vllm_python": vllm_python or "no vLLM python (give --vllm-python, or run `make vllm`)",
        "sections": {},
    }
    start = time.perf_counter()
    for name, section_argv in runs.items():
        if args.only and name not in args.only:
            continue
        left = args.budget - (time.perf_counter() - start)
        if left <= 5:
            report["sections"][name] = {"status": "skipped: time budget spent", "seconds": 0.0}
            continue
        python = vllm_python if name in VLLM_SECTIONS and vllm_python else sys.executable
        report["sections"][name] = run_section(name, section_argv, raw_dir, left, python)
        print(f"{name}: {report['sections'][name]['status']} ({report['sections'][name]['seconds']:.0f} s)")
    report["total_seconds"] = time.perf_counter() - start
    write_json(args.out / "gpu_suite.json", report)
    markdown = render_markdown(report)
    from llava_vitsplit.util.atomic import write_atomic

    write_atomic(args.out / "gpu_suite.md", lambda path: path.write_text(markdown))
    print(markdown)
    return report


if __name__ == "__main__":
    main()
