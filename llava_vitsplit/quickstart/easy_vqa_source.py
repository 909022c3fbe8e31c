"""The ``easy-vqa`` package's questions and what they tell about each image.

``easy-vqa`` ships 4,000 train / 1,000 test 64x64 images, each one shape (circle, rectangle, triangle) of
one of eight colours, with 38,575 / 9,673 questions over 13 answers. This module loads a split
(:func:`load_split`), names each question's type (:func:`question_type`), reads each image's colour and
shape off its questions (:func:`image_facts`), and masks a question's colour and shape words to its
phrasing, by which the yes/no questions can be balanced (:func:`balance_yes_no`). The LLaVA records built
from them are :mod:`llava_vitsplit.quickstart.easy_vqa_records`; the converter is
:mod:`llava_vitsplit.quickstart.easy_vqa`.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")
QUESTION_TYPES = ("yes/no", "color", "shape")
SHAPES = ("circle", "rectangle", "triangle")
_NEGATIONS = {"not", "no"}


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
