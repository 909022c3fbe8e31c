"""``llava-vitsplit params --preset NAME [--json]``: parameter accounting of a preset.

VLM presets are built on the meta device (no memory, no download) and counted per component:
vision tower (frozen, as run: blocks past the feature layer are dropped), the connector's task head,
prior head, fusion and MLP, and the language model (LM head included, tied weights counted once),
with the trainable/frozen totals of stage 1 (``pretrain``) and stage 2 (``finetune``). Dense presets
(``dense-*``) are counted by ``llava_vitsplit.dense.param_report.dense_param_report``. A trained checkpoint's
architecture is counted the same way from its ``config.json`` (``checkpoint_param_report``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from llava_vitsplit.presets import get_preset, vlm_presets
from llava_vitsplit.stages import (
    CONNECTOR_PARTS,
    REPORTED_STAGES,
    connector_components,
    model_components,
    stage_table,
)

# The report's rows: the freezing table's components, the connector's parts and the LM head merged.
REPORT_COMPONENTS = {"connector": CONNECTOR_PARTS, "language_model": ("language_model", "lm_head")}


def count_parameters(modules: Iterable[nn.Module], seen: set[int] | None = None) -> int:
    """Number of distinct parameters in ``modules`` (shared/tied tensors counted once across calls)."""
    seen = set() if seen is None else seen
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def model_param_report(model) -> dict:
    """Per-component, per-connector-part and per-stage counts of a ``LlavaViTSplitForConditionalGeneration``.

    Each stage's trainable count is what its freezing row (``stages.STAGES``) trains (tied tensors counted once)."""
    parts = model_components(model)

    def merged(row: str) -> list[nn.Module]:
        return [m for part in REPORT_COMPONENTS.get(row, (row,)) for m in parts.get(part, [])]

    seen: set[int] = set()
    components = {row: count_parameters(merged(row), seen) for row in ("vision_tower", *REPORT_COMPONENTS)}
    connector = {part: count_parameters(mods) for part, mods in connector_components(model.connector).items()}
    total = sum(components.values())
    stages = {}
    for stage in REPORTED_STAGES:
        table = stage_table(stage)
        trained = [m for part, mods in parts.items() if table[part] is True for m in mods]
        n_train = count_parameters(trained)
        stages[stage] = {"trainable": n_train, "frozen": total - n_train}
    return {"components": components, "connector": connector, "stages": stages}


def _meta_model(config):
    from llava_vitsplit.model import LlavaViTSplitForConditionalGeneration

    with torch.device("meta"):
        return LlavaViTSplitForConditionalGeneration(config)


def vlm_param_report(name: str) -> dict:
    """Per-component and per-stage counts for VLM preset ``name``."""
    preset = get_preset(name)
    report = model_param_report(_meta_model(preset.model_config()))
    return {"preset": name, "description": preset.description, **report}


def checkpoint_param_report(checkpoint: str | Path) -> dict:
    """The counts of a saved checkpoint's architecture (its ``config.json``; no weights are read)."""
    from llava_vitsplit.model import LlavaViTSplitConfig

    return model_param_report(_meta_model(LlavaViTSplitConfig.from_pretrained(str(checkpoint))))


def _dense_report(name: str) -> dict | None:
    try:
        from llava_vitsplit.dense.param_report import dense_param_report
        from llava_vitsplit.dense.presets import dense_presets
    except ImportError:
        return None
    return dense_param_report(name) if name in dense_presets() else None


def _all_preset_names() -> list[str]:
    names = list(vlm_presets())
    try:
        from llava_vitsplit.dense.presets import dense_presets

        names += list(dense_presets())
    except ImportError:
        pass
    return sorted(names)


def format_vlm_report(report: dict) -> str:
    rows = [f"preset {report['preset']}: {report['description']}", ""]
    rows.append(f"{'component':<22}{'parameters':>16}   stage 1     stage 2")

    def status(row: str, stage: str) -> str:
        table = stage_table(stage)
        trains = {table[part] is True for part in REPORT_COMPONENTS.get(row, (row,))}
        return "trainable" if trains == {True} else "frozen" if trains == {False} else "partly"

    for part, n in report["components"].items():
        rows.append(f"{part:<22}{n:>16,}   {status(part, 'pretrain'):<12}{status(part, 'finetune')}")
        if part == "connector":
            for sub, m in report["connector"].items():
                rows.append(f"  {sub:<20}{m:>16,}")
    rows.append("")
    for stage, label in (("pretrain", "stage 1 (pretrain)"), ("finetune", "stage 2 (finetune)")):
        s = report["stages"][stage]
        rows.append(f"{label}: trainable {s['trainable']:,}  frozen {s['frozen']:,}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llava-vitsplit params", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="preset name (see --list)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    if argv is not None and "--list" in argv:
        print("\n".join(_all_preset_names()))
        return 0
    args = parser.parse_args(argv)
    if args.preset in vlm_presets():
        report = vlm_param_report(args.preset)
        text = format_vlm_report(report)
    else:
        report = _dense_report(args.preset)
        if report is None:
            print(
                f"unknown preset {args.preset!r}; valid presets: {', '.join(_all_preset_names())}",
                file=sys.stderr,
            )
            return 2
        text = json.dumps(report, indent=2)
    print(json.dumps(report, indent=2) if args.json else text)
    return 0
