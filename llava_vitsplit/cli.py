"""``llava-vitsplit`` console command: one sub-command per module, imported lazily.

Each entry maps a sub-command to ``module:function``; the function takes the remaining argv list and
returns an exit code. Add a line here to add a sub-command.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("llava_vitsplit.params", "Trainable/frozen parameter counts of a preset"),
    "train": (
        "llava_vitsplit.train.run",
        "Train one LLaVA stage (pretrain / finetune / LoRA) on the Trainer",
    ),
    "validate-data": ("llava_vitsplit.data.validate", "Report every problem in a LLaVA training set"),
    "merge-lora": ("llava_vitsplit.train.lora", "Merge a LoRA training run into a plain checkpoint"),
    "dense-train": (
        "llava_vitsplit.dense.commands.train",
        "Train a dense preset (segmentation/depth/detection)",
    ),
    "dense-eval": (
        "llava_vitsplit.dense.commands.evaluate",
        "Evaluate a dense checkpoint (mIoU, depth, COCO AP)",
    ),
    "dense-predict": ("llava_vitsplit.dense.commands.predict", "Dense predictions as PNG masks / depth maps"),
    "dense-validate": (
        "llava_vitsplit.dense.commands.validate",
        "Report every problem in a dense dataset split",
    ),
    "dense-convert-checkpoint": (
        "llava_vitsplit.dense.commands.convert",
        "Convert old pickled dense step-<N>.pt checkpoints to the safe format",
    ),
    "cka": (
        "llava_vitsplit.dense.commands.cka",
        "Linear CKA between all layers of a backbone (heatmap + JSON)",
    ),
    "quickstart": (
        "llava_vitsplit.quickstart.cli",
        "Offline quickstart: assets, easy-vqa, both stages, lmms-eval",
    ),
    "easy-vqa": (
        "llava_vitsplit.quickstart.easy_vqa",
        "Convert the easy-vqa package to LLaVA data + an lmms-eval task",
    ),
    "assets": (
        "llava_vitsplit.assets.cli",
        "Recover the quickstart's DINOv2-S and SmolLM2 into playground/models",
    ),
    "chat": ("llava_vitsplit.serve.chat", "Multi-turn terminal chat about an image (streaming)"),
    "demo": ("llava_vitsplit.serve.demo_cli", "Gradio web demo (127.0.0.1 unless --public; --engine vllm)"),
    "answer": (
        "llava_vitsplit.serve.answer",
        "Batch inference on LLaVA question JSONL (shardable, resumable)",
    ),
    "serve": (
        "llava_vitsplit.serve.vllm_server",
        "vLLM's OpenAI-compatible server on a checkpoint (127.0.0.1 unless --public; `make vllm`)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: llava-vitsplit COMMAND [ARGS...]\n\ncommands:")
        for name, (_, help_text) in sorted(COMMANDS.items()):
            print(f"  {name:<16} {help_text}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"llava-vitsplit: unknown command {name!r}; valid: {', '.join(sorted(COMMANDS))}", file=sys.stderr
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
