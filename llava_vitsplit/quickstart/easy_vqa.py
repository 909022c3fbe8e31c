"""Convert the ``easy-vqa`` package (64x64 shape images with VQA questions) into LLaVA-format data.

``easy-vqa`` ships 4,000 train / 1,000 test images, each one shape (circle, rectangle, triangle) of one of
eight colours, with 38,575 / 9,673 questions over 13 answers. This module writes, under ``out_dir``:

- ``images/{train,test}/<id>.png``: the images (records refer to them relative to ``images/``);
- ``stage1_captions.json``: one caption record per train image for stage 1 (feature alignment). Captions
  are written from each image's colour and shape, which are read off the dataset's own question/answer
  pairs (:func:`image_facts`); where the questions leave one of them open, the caption states only the known
  one;
- ``stage2_instruct.json``: the train questions as LLaVA conversations, each question followed by LLaVA's
  short-answer instruction, mixed with the stage-1 captions asked as instructions (:func:`stage2_records`).
  By default each question is its own conversation: an image's questions name its colour and shape in
  their own text ("what is the blue shape?"), so in a multi-turn record (LLaVA-1.5's VQAv2 layout) most
  answers can be copied from earlier turns instead of read off the image. Optionally the yes/no
  questions are subsampled to equal yes and no answers per phrasing, since their wording predicts the
  answer (:func:`balance_yes_no`);
- ``test_questions.jsonl``: LLaVA's evaluation question format (``question_id``, ``image``, ``text``) plus
  ``question``, ``answer``, ``question_type`` and ``image_id``;
- ``lmms_eval_tasks/``: a local lmms-eval task over the test split (``--include_path``), see
  :mod:`llava_vitsplit.quickstart.easy_vqa_task`.

Every step shows a progress bar and records its parameters in ``steps.json``; a re-run with the same
parameters skips finished steps. ``llava-vitsplit easy-vqa --help`` is the command.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llava_vitsplit.model.chat_templates import SHORT_ANSWER_PROMPT
from llava_vitsplit.util import atomic
from llava_vitsplit.util.atomic import write_jsonl
from llava_vitsplit.util.step_cache import StepCache

SPLITS = ("train", "test")
QUESTION_TYPES = ("yes/no", "color", "shape")
SHAPES = ("circle", "rectangle", "triangle")
DEFAULT_OUT = Path("playground/data/easy_vqa")
STAGE1_FILE = "stage1_captions.json"
STAGE2_FILE = "stage2_instruct.json"
EVAL_FILE = "test_questions.jsonl"
STEPS_DIR = "steps"  # one stamp per finished step (llava_vitsplit.util.step_cache)
CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "What is shown in this picture?",
    "Give a short caption for the image.",
    "Summarize the image in a few words.",
)
_NEGATIONS = {"not", "no"}
STAGE2_MAX_TURNS = 1  # questions per stage-2 conversation (see the module docstring)
STAGE2_CAPTION_SHARE = 1 / 3  # fraction of stage-2 records that are captions (see stage2_records)
STAGE2_BALANCE_YES_NO = False  # equal yes and no answers per yes/no phrasing (see balance_yes_no)


class EasyVQAError(ValueError):
    """The easy-vqa data contradicts itself or is missing; the message names the split, image and field."""


@dataclass(frozen=True)
class QA:
    """One easy-vqa question; ``index`` is its position in the split's ``questions.json``."""

    index: int
    question: str
    answer: str
    image_id: int


@dataclass(frozen=True)
class ImageFacts:
    """What the questions tell about an image (None: the questions leave it open)."""

    color: str | None
    shape: str | None


@dataclass(frozen=True)
class Split:
    name: str
    questions: list[QA]
    image_paths: dict[int, Path]


def load_split(name: str, limit_images: int | None = None) -> Split:
    """Questions and image paths of ``name`` ("train"/"test"); ``limit_images`` keeps the lowest image ids."""
    import easy_vqa

    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    texts, answers, image_ids = getattr(easy_vqa, f"get_{name}_questions")()
    paths = {int(k): Path(v) for k, v in getattr(easy_vqa, f"get_{name}_image_paths")().items()}
    keep = set(sorted(paths)[:limit_images]) if limit_images is not None else set(paths)
    questions = [
        QA(index=i, question=q, answer=a, image_id=int(img))
        for i, (q, a, img) in enumerate(zip(texts, answers, image_ids, strict=True))
        if int(img) in keep
    ]
    missing = sorted({qa.image_id for qa in questions} - set(paths))
    if missing:
        raise EasyVQAError(f"easy-vqa {name}: questions refer to images without a file: {missing[:10]}")
    return Split(name, questions, {k: v for k, v in paths.items() if k in keep})


def colors() -> tuple[str, ...]:
    """The colour answers of easy-vqa (its answer list minus yes/no and the shapes)."""
    import easy_vqa

    return tuple(a for a in easy_vqa.get_answers() if a not in SHAPES and a not in ("yes", "no"))


def question_type(qa: QA) -> str:
    """``yes/no``, ``color`` or ``shape``, from the answer."""
    if qa.answer in ("yes", "no"):
        return "yes/no"
    if qa.answer in SHAPES:
        return "shape"
    if qa.answer in colors():
        return "color"
    raise EasyVQAError(f"question {qa.index} ({qa.question!r}): unknown answer {qa.answer!r}")


def image_facts(questions: Iterable[QA], split: str = "?") -> dict[int, ImageFacts]:
    """Colour and shape of each image, from its questions.

    An open question's answer is a colour or a shape; a word of the other kind in it ("what color is the
    triangle?") names the other fact. A yes/no question names a colour or shape that is present when the
    answer is "yes" and the question is not negated (or "no" and negated), absent otherwise; when all but
    one value are absent the remaining one is the fact. Contradictions raise EasyVQAError.
    """
    palette = colors()
    vocab = {"color": set(palette), "shape": set(SHAPES)}
    present: dict[int, dict[str, set[str]]] = defaultdict(lambda: {"color": set(), "shape": set()})
    absent: dict[int, dict[str, set[str]]] = defaultdict(lambda: {"color": set(), "shape": set()})
    for qa in questions:
        words = re.findall(r"[a-z]+", qa.question.lower())
        mentioned = {kind: [w for w in words if w in vocab[kind]] for kind in vocab}
        if qa.answer in ("yes", "no"):
            is_present = (qa.answer == "yes") != bool(_NEGATIONS & set(words))
            for kind, values in mentioned.items():
                (present if is_present else absent)[qa.image_id][kind].update(values)
        else:
            answer_kind = "color" if qa.answer in vocab["color"] else "shape"
            other = "shape" if answer_kind == "color" else "color"
            present[qa.image_id][answer_kind].add(qa.answer)
            present[qa.image_id][other].update(mentioned[other])

    facts = {}
    for image_id in sorted(set(present) | set(absent)):
        values = {}
        for kind in ("color", "shape"):
            yes, no = present[image_id][kind], absent[image_id][kind]
            if len(yes) > 1 or yes & no:
                raise EasyVQAError(
                    f"easy-vqa {split} image {image_id}: questions disagree on its {kind}: "
                    f"present {sorted(yes)}, absent {sorted(no)}"
                )
            remaining = vocab[kind] - no
            values[kind] = (
                next(iter(yes)) if yes else (next(iter(remaining)) if len(remaining) == 1 else None)
            )
        facts[image_id] = ImageFacts(**values)
    return facts


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


def phrasing(question: str) -> str:
    """The question with its colour and shape words masked: ``is there not a <color> shape?``."""
    masked = re.sub(rf"\b({'|'.join(colors())})\b", "<color>", question.lower())
    return re.sub(rf"\b({'|'.join(SHAPES)})\b", "<shape>", masked)


def balance_yes_no(questions: list[QA], seed: int = 0) -> list[QA]:
    """Keep every open question; subsample yes/no questions to equal yes and no counts per phrasing.

    easy-vqa's yes/no answers follow their wording: ``is there a <color> shape?`` is "no" for 88% of the
    train questions and its negation ``is there not a <color> shape?`` "yes" for 88% (the shape phrasings
    2:1). A model can score that prior from the text alone (the blind baseline does), and a short stage 2
    learns the prior instead of looking at the image. Within each phrasing the majority answer is
    randomly subsampled (``seed``) to the minority's count; the original order is kept. Off by default:
    in the quickstart's 80-step stage 2 it removed the prior without teaching the model to look (it then
    answered "yes" to 93% of yes/no questions; BENCHMARKS.md).
    """
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, qa in enumerate(questions):
        if qa.answer in ("yes", "no"):
            groups[phrasing(qa.question), qa.answer].append(position)
    rng = random.Random(seed)
    keep = {i for i, qa in enumerate(questions) if qa.answer not in ("yes", "no")}
    for (text, answer), positions in sorted(groups.items()):
        other = groups.get((text, "no" if answer == "yes" else "yes"), [])
        keep.update(rng.sample(positions, min(len(positions), len(other))))
    return [qa for i, qa in enumerate(questions) if i in keep]


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


def write_json(path: Path, data: Any) -> None:
    atomic.write_json(path, data, indent=1)


class Steps(StepCache):
    """The converter's finished steps (stamps under ``<out>/steps/``); a step reruns when its settings change."""

    def __init__(self, out_dir: Path, force: bool = False) -> None:
        super().__init__(out_dir / STEPS_DIR, force)

    def run(self, name: str, params: dict, outputs: list[Path], fn: Callable[[], None]) -> float | None:
        seconds = super().run(name, params, outputs, fn)
        if seconds is None:
            print(f"[easy-vqa] {name}: up to date, skipped")
        return seconds


def copy_images(split: Split, out_dir: Path) -> None:
    """Copy the split's images to ``out_dir/images/<split>/``."""
    target = out_dir / "images" / split.name
    target.mkdir(parents=True, exist_ok=True)
    for image_id, src in tqdm(
        sorted(split.image_paths.items()), desc=f"copy {split.name} images", unit="img"
    ):
        shutil.copyfile(src, target / f"{image_id}.png")


def output_paths(out_dir: Path) -> dict[str, Path]:
    """Where ``convert`` writes each output, by name."""
    return {
        "image_folder": out_dir / "images",
        "stage1": out_dir / STAGE1_FILE,
        "stage2": out_dir / STAGE2_FILE,
        "eval": out_dir / EVAL_FILE,
        "task_dir": out_dir / "lmms_eval_tasks",
    }


def _write_training_files(
    steps: Steps, splits: dict[str, Split], base: dict, paths: dict[str, Path], stage2: dict[str, Any]
) -> None:
    """The images of every split and the stage-1 / stage-2 LLaVA records (``stage2``: its settings)."""
    for name, split in splits.items():
        steps.run(
            f"images-{name}",
            base,
            [paths["image_folder"] / name / f"{i}.png" for i in split.image_paths],
            lambda split=split: copy_images(split, paths["image_folder"].parent),
        )
    steps.run(
        "stage1",
        {**base, "captions": CAPTION_FORMAT},
        [paths["stage1"]],
        lambda: write_json(paths["stage1"], caption_records(splits["train"])),
    )
    settings = {"max_turns": stage2["max_turns"], "caption_share": stage2["caption_share"]}
    steps.run(
        "stage2",
        {**base, "captions": CAPTION_FORMAT, **settings, "balanced_yes_no": stage2["balanced"]},
        [paths["stage2"]],
        lambda: write_json(
            paths["stage2"],
            stage2_records(splits["train"], **settings, seed=stage2["seed"], balanced=stage2["balanced"]),
        ),
    )


def _write_eval_files(steps: Steps, test: Split, base: dict, paths: dict[str, Path], seed: int) -> None:
    """The shuffled test questions, the blind variant's blank image and the local lmms-eval task."""
    from llava_vitsplit.quickstart import easy_vqa_task

    rows = eval_rows(test)
    random.Random(seed).shuffle(rows)  # so lmms-eval's --limit N takes a representative sample
    steps.run("eval", {**base, "seed": seed}, [paths["eval"]], lambda: write_jsonl(paths["eval"], rows))
    blank = paths["image_folder"] / easy_vqa_task.BLANK_IMAGE_NAME
    steps.run("blank-image", {}, [blank], lambda: easy_vqa_task.blank_image().save(blank))
    steps.run(
        "lmms-eval-task",
        {**base, "seed": seed, "task": easy_vqa_task.TASK_NAME},
        easy_vqa_task.task_files(paths["task_dir"]),
        lambda: easy_vqa_task.write_task(paths["task_dir"], rows, paths["image_folder"]),
    )


def convert(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    limit_images: int | None = None,
    max_turns: int | None = STAGE2_MAX_TURNS,
    caption_share: float = STAGE2_CAPTION_SHARE,
    balanced: bool = STAGE2_BALANCE_YES_NO,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Path]:
    """Write all outputs (see the module docstring); returns their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = Steps(out_dir, force)
    splits = {name: load_split(name, limit_images) for name in SPLITS}
    base = {
        "limit_images": limit_images,
        "easy_vqa_questions": {n: len(s.questions) for n, s in splits.items()},
    }
    paths = output_paths(out_dir)
    stage2 = {"max_turns": max_turns, "caption_share": caption_share, "balanced": balanced, "seed": seed}
    _write_training_files(steps, splits, base, paths, stage2)
    _write_eval_files(steps, splits["test"], base, paths, seed)
    return paths


def summary(out_dir: Path) -> str:
    """Counts per output file and test question type."""
    stage1 = json.loads((out_dir / STAGE1_FILE).read_text())
    stage2 = json.loads((out_dir / STAGE2_FILE).read_text())
    rows = [json.loads(line) for line in (out_dir / EVAL_FILE).read_text().splitlines()]
    turns = sum(len(r["conversations"]) // 2 for r in stage2)
    types = Counter(r["question_type"] for r in rows)
    return (
        f"stage 1: {len(stage1)} captions; "
        f"stage 2: {len(stage2)} conversations, {turns} questions; "
        f"test: {len(rows)} questions ({', '.join(f'{k} {v}' for k, v in sorted(types.items()))})"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-vitsplit easy-vqa", description="Convert easy-vqa to LLaVA format."
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--limit-images", type=int, default=None, help="keep the first N images of each split"
    )
    parser.add_argument(
        "--max-turns",
        type=int,
        default=STAGE2_MAX_TURNS,
        help="questions per stage-2 conversation (default: %(default)s; 0: all of an image's questions)",
    )
    parser.add_argument(
        "--caption-share",
        type=float,
        default=STAGE2_CAPTION_SHARE,
        help="fraction of stage-2 records that are captions (default: %(default).2f)",
    )
    parser.add_argument(
        "--balance-yes-no",
        dest="balanced",
        action="store_true",
        help="subsample stage-2 yes/no questions to equal yes and no answers per phrasing",
    )
    parser.add_argument("--seed", type=int, default=0, help="order of the test questions")
    parser.add_argument("--force", action="store_true", help="redo every step")
    args = parser.parse_args(argv)
    try:
        paths = convert(
            args.out,
            limit_images=args.limit_images,
            max_turns=None if args.max_turns == 0 else args.max_turns,
            caption_share=args.caption_share,
            balanced=args.balanced,
            seed=args.seed,
            force=args.force,
        )
    except ValueError as err:  # EasyVQAError, or a bad --max-turns / --caption-share
        print(f"llava-vitsplit easy-vqa: {err}")
        return 1
    print(summary(Path(args.out)))
    for name, path in paths.items():
        print(f"  {name:<13} {path}")
    return 0
