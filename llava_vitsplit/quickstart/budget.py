"""Named compute budgets and model variants of the quickstart (plain data, no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Budget:
    """How much data and compute one quickstart run uses, beyond the quickstart preset's training recipe.

    The learning rates, batch sizes and maximum length of both stages are the ``train`` block of
    ``presets/quickstart.json``; a budget only overrides them where it differs (``None``: the recipe's).

    image_size: square input side in pixels (a multiple of 14; 56 -> 4x4 = 16 image tokens).
    limit_images: convert only the first N easy-vqa images per split (None: all 4,000 / 1,000).
    max_turns: questions per stage-2 conversation (None: all of an image's questions).
    caption_share: fraction of stage-2 records that are caption conversations (``easy_vqa_records.stage2_records``).
    balanced_yes_no: equal yes and no answers per stage-2 yes/no phrasing (``easy_vqa_source.balance_yes_no``).
    *_steps: optimizer steps of each stage.
    *_batch / *_lr: the batch size (one process: global = per-device) and learning rate of each stage.
    connector_lr: stage-2 learning rate of the connector (the LLM uses ``finetune_lr``).
    eval_limit: evaluate the first N test questions (the file is shuffled); None: all 9,673.
    """

    image_size: int
    limit_images: int | None
    max_turns: int | None
    caption_share: float
    balanced_yes_no: bool
    pretrain_steps: int
    finetune_steps: int
    eval_limit: int | None
    eval_batch: int
    pretrain_batch: int | None = None
    pretrain_lr: float | None = None
    finetune_batch: int | None = None
    finetune_lr: float | None = None
    connector_lr: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS: dict[str, Budget] = {
    # 86% test accuracy in about 16 minutes on 2 AVX2 CPU cores after the install, fp32, plain PyTorch
    # (BENCHMARKS.md, "Quickstart": the measured runs and where the time goes). 56 px (16 image tokens)
    # instead of 84 (36): a stage-1 step costs 1.9 s instead of 3.2-3.7 and a stage-2 step 6.2 s instead
    # of 8; the 150 stage-1 steps are what stage 1 needs to learn colour and shape (60 or 100 steps, or
    # batch 8, left the caption's colour word at chance).
    "default": Budget(
        image_size=56,
        limit_images=None,
        max_turns=1,
        caption_share=1 / 3,
        balanced_yes_no=False,
        pretrain_steps=150,
        finetune_steps=80,
        eval_limit=300,
        eval_batch=16,
    ),
    # Every step on a handful of samples: the shortened quickstart of `make test`.
    "smoke": Budget(
        image_size=28,
        limit_images=4,
        max_turns=2,
        caption_share=0.25,
        balanced_yes_no=False,
        pretrain_steps=2,
        finetune_steps=2,
        eval_limit=4,
        eval_batch=4,
        pretrain_batch=2,
        finetune_batch=2,
        finetune_lr=5e-5,
    ),
}

# variant -> extra training arguments; "blind" also swaps every image for one blank image.
VARIANTS: dict[str, list[str]] = {
    "vitsplit": [],
    "mlp": ["--mm_projector_type", "mlp2x_gelu"],
    "blind": [],
}


def get_budget(name: str, **overrides) -> Budget:
    """The named budget with ``overrides`` (None values ignored); unknown names list the valid ones."""
    if name not in BUDGETS:
        raise KeyError(f"unknown budget {name!r}; valid: {', '.join(BUDGETS)}")
    budget = replace(BUDGETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if budget.image_size % 14:
        raise ValueError(f"image_size must be a multiple of the patch size 14, got {budget.image_size}")
    return budget
