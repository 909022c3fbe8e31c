"""LLaVA-format records of easy-vqa: stage-1 captions, stage-2 instructions and the evaluation questions.

- stage 1 (feature alignment): one caption record per train image (:func:`caption_records`). Captions are
  written from each image's colour and shape, which are read off the dataset's own question/answer pairs
  (:func:`~llava_vitsplit.quickstart.easy_vqa_source.image_facts`); where the questions leave one of them
  open, the caption states only the known one;
- stage 2: the train questions as LLaVA conversations, each question followed by LLaVA's short-answer
  instruction, mixed with the stage-1 captions asked as instructions (:func:`stage2_records`). By default
  each question is its own conversation: an image's questions name its colour and shape in their own text
  ("what is the blue shape?"), so in a multi-turn record (LLaVA-1.5's VQAv2 layout) most answers can be
  copied from earlier turns instead of read off the image. Optionally the yes/no questions are subsampled
  to equal yes and no answers per phrasing, since their wording predicts the answer
  (:func:`~llava_vitsplit.quickstart.easy_vqa_source.balance_yes_no`);
- evaluation: LLaVA's question format (``question_id``, ``image``, ``text``) plus ``question``,
  ``answer``, ``question_type`` and ``image_id`` (:func:`eval_rows`).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

from llava_vitsplit.model.chat_templates import SHORT_ANSWER_PROMPT
from llava_vitsplit.quickstart.easy_vqa_source import (
    QA,
    EasyVQAError,
    ImageFacts,
    Split,
    balance_yes_no,
    image_facts,
    question_type,
)

CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "What is shown in this picture?",
    "Give a short caption for the image.",
    "Summarize the image in a few words.",
)
STAGE2_MAX_TURNS = 1  # questions per stage-2 conversation (see the module docstring)
STAGE2_CAPTION_SHARE = 1 / 3  # fraction of stage-2 records that are captions (see stage2_records)
STAGE2_BALANCE_YES_NO = False  # equal yes and no answers per yes/no phrasing (see balance_yes_no)


CAPTION_FORMAT = "A {color} {shape}."  # recorded in the stage-1 step's settings: a change redoes it


def caption(facts: ImageFacts) -> str:
    """A caption stating the known colour and shape (at least one must be known).

    One fixed wording: every caption token is then either a fact about the image or predictable, so
    stage 1's gradient is all signal. (With four varied wordings, in a 60-step connector-only probe at
    84 px the caption's colour word was right for 11% of held-out images, against 44% with this one.)
    """
    if facts.color and facts.shape:
        return f"A {facts.color} {facts.shape}."
    if facts.shape:
        return f"A {facts.shape}."
    if facts.color:
        return f"A {facts.color} shape."
    raise EasyVQAError("an image with neither a known colour nor a known shape cannot be captioned")


def image_ref(split: str, image_id: int) -> str:
    """Record image path relative to ``<out_dir>/images``."""
    return f"{split}/{image_id}.png"


def caption_records(split: Split) -> list[dict[str, Any]]:
    """Stage-1 records: ``<image>`` + a caption prompt -> the caption. Images with no known fact are skipped."""
    facts = image_facts(split.questions, split.name)
    known = Counter((f.color is not None, f.shape is not None) for f in facts.values())
    print(
        f"[easy-vqa] {split.name} captions: {known[True, True]} name colour and shape, {known[True, False]} only "
        f"the colour, {known[False, True]} only the shape (the questions leave the rest open), "
        f"{known[False, False]} skipped"
    )
    records = []
    for image_id, fact in sorted(facts.items()):
        if fact.color is None and fact.shape is None:
            continue
        records.append(
            {
                "id": f"easyvqa-{split.name}-{image_id}",
                "image": image_ref(split.name, image_id),
                "conversations": [
                    {
                        "from": "human",
                        "value": "<image>\n" + CAPTION_PROMPTS[image_id % len(CAPTION_PROMPTS)],
                    },
                    {"from": "gpt", "value": caption(fact)},
                ],
            }
        )
    return records


def instruction_records(split: Split, max_turns: int | None = None) -> list[dict[str, Any]]:
    """Stage-2 records: each image's questions as one conversation (``max_turns`` questions per record)."""
    by_image: dict[int, list[QA]] = defaultdict(list)
    for qa in split.questions:
        by_image[qa.image_id].append(qa)
    step = max_turns or max(len(v) for v in by_image.values())
    records = []
    for image_id, qas in sorted(by_image.items()):
        for part, start in enumerate(range(0, len(qas), step)):
            conversation = []
            for turn, qa in enumerate(qas[start : start + step]):
                prefix = "<image>\n" if turn == 0 else ""
                conversation.append({"from": "human", "value": prefix + qa.question + SHORT_ANSWER_PROMPT})
                conversation.append({"from": "gpt", "value": qa.answer})
            suffix = f"-{part}" if len(qas) > step else ""
            records.append(
                {
                    "id": f"easyvqa-{split.name}-{image_id}{suffix}",
                    "image": image_ref(split.name, image_id),
                    "conversations": conversation,
                }
            )
    return records


def stage2_records(
    split: Split,
    max_turns: int | None = STAGE2_MAX_TURNS,
    caption_share: float = STAGE2_CAPTION_SHARE,
    seed: int = 0,
    balanced: bool = STAGE2_BALANCE_YES_NO,
) -> list[dict[str, Any]]:
    """Stage-2 records: the questions (:func:`instruction_records`) plus caption conversations, shuffled.

    ``balanced``: yes/no questions subsampled to equal answers per phrasing (:func:`balance_yes_no`).
    ``caption_share`` is the fraction of records that are captions (repeated as often as needed): the
    caption asks for colour and shape at once, in the chat format the questions use. (In a 40-step,
    batch-16 stage-2 probe from the same stage-1 connector, a share of 1/3 raised teacher-forced accuracy
    on 150 test questions from 71% to 85%: colour 33% -> 62%, shape 36% -> 95%.)
    """
    if not 0.0 <= caption_share < 1.0:
        raise ValueError(f"caption_share must be in [0, 1), got {caption_share}")
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be >= 1 (or None for all of an image's questions), got {max_turns}")
    asked = replace(split, questions=balance_yes_no(split.questions, seed)) if balanced else split
    records = instruction_records(asked, max_turns)
    captions = caption_records(split) if caption_share > 0 else []
    wanted = round(len(records) * caption_share / (1.0 - caption_share)) if captions else 0
    for n in range(wanted):
        record = captions[n % len(captions)]
        repeat = n // len(captions)
        records.append({**record, "id": record["id"] + (f"-caption{repeat}" if repeat else "-caption")})
    random.Random(seed).shuffle(records)
    return records


def eval_rows(split: Split) -> list[dict[str, Any]]:
    """LLaVA evaluation questions (``question_id``, ``image``, ``text``) with answer and type."""
    return [
        {
            "question_id": qa.index,
            "image": image_ref(split.name, qa.image_id),
            "text": qa.question + SHORT_ANSWER_PROMPT,
            "question": qa.question,
            "answer": qa.answer,
            "question_type": question_type(qa),
            "image_id": qa.image_id,
            "category": "easy_vqa",
        }
        for qa in split.questions
    ]
