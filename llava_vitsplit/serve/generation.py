"""Prompts, streaming and batched generation shared by the CLI chat, the demo, ``answer`` and lmms-eval.

A :class:`Conversation` holds the alternating user/assistant texts and the images each user message
brought (none, one as in LLaVA-1.5, or several); the processor's chat template (``vicuna_v1`` for LLaVA
checkpoints) renders it. A user text gets its images' ``<image>`` tags as a training record's turn does
(``place_image_tags``: tags the user wrote are kept, otherwise one per image goes first), so inference
prompts are the training text exactly. Streaming runs ``generate`` in a worker
thread feeding a ``TextIteratorStreamer``; an exception in the worker is re-raised in the caller.
Batched generation left-pads, decodes only the new tokens and cuts each text at the first stop string.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from llava_vitsplit.model.chat_templates import place_image_tags
from llava_vitsplit.serve.loading import LoadedModel

STREAM_TIMEOUT_S = 600.0  # a token that takes longer than this means the worker is stuck


@dataclass
class GenerationSettings:
    """Decoding parameters; ``temperature == 0`` (or ``do_sample=False``) means greedy.

    ``min_new_tokens``: the end-of-sequence token is not generated before this many new tokens (benchmarks
    set it to ``max_new_tokens`` so that every engine generates the same number of tokens).
    """

    max_new_tokens: int = 512
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    do_sample: bool | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0 and self.do_sample is not False

    def generate_kwargs(self, tokenizer) -> dict:
        """Keyword arguments for ``model.generate`` (sampling knobs only when sampling)."""
        kwargs: dict = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.sampling,
            "num_beams": self.num_beams,
            "pad_token_id": tokenizer.pad_token_id,
        }  # EOS: the checkpoint's generation_config, the LLM family's end-of-turn and stop tokens
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = self.min_new_tokens
        if self.sampling:
            kwargs["temperature"] = self.temperature
            kwargs["top_p"] = self.top_p if self.top_p is not None else 1.0
        else:  # override sampling defaults a checkpoint's generation_config may carry
            kwargs["temperature"] = None
            kwargs["top_p"] = None
            kwargs["top_k"] = None
        if self.stop:
            kwargs["stop_strings"] = list(self.stop)
            kwargs["tokenizer"] = tokenizer
        return kwargs


@dataclass
class Conversation:
    """The images and turns so far; the last assistant text is None while pending.

    ``images`` given here go with the first user message; :meth:`add_image` adds one to the next user
    message. ``image_turns[i]`` is the index of the user turn image ``i`` goes with; images of a turn
    that is removed (``turns.pop()``) go with the next message instead.
    """

    images: list[Image.Image] = field(default_factory=list)
    turns: list[list[str | None]] = field(default_factory=list)  # [[user, assistant | None], ...]
    system: str | None = None
    image_turns: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.images = list(self.images)
        self.image_turns = [0] * len(self.images)

    def add_image(self, image: Image.Image) -> None:
        """``image`` goes with the next user message (after any already waiting)."""
        self.images.append(image)
        self.image_turns.append(len(self.turns))

    @property
    def pending(self) -> bool:
        return bool(self.turns) and self.turns[-1][1] is None

    def add_user(self, text: str, image_token: str | None = None) -> None:
        """Add a user message; the images waiting go with it.

        With ``image_token``, a text whose tags do not match its images raises ``ValueError`` and nothing
        is added (``place_image_tags``).
        """
        if self.pending:
            raise ValueError("the previous user message has no reply yet")
        new = len(self.turns)
        if image_token is not None:
            place_image_tags(text, sum(turn >= new for turn in self.image_turns), image_token)
        self.image_turns = [min(turn, new) for turn in self.image_turns]  # waiting images go with it
        self.turns.append([text, None])

    def set_reply(self, text: str) -> None:
        if not self.turns or self.turns[-1][1] is not None:
            raise ValueError("no pending user message to reply to")
        self.turns[-1][1] = text

    def images_in_turns(self) -> list[Image.Image]:
        """The images of the turns so far, in prompt order (those waiting for a message left out)."""
        return [
            image for image, turn in zip(self.images, self.image_turns, strict=True) if turn < len(self.turns)
        ]

    def messages(self, image_token: str) -> list[dict]:
        """Chat-template messages; each user text carries its images' ``image_token`` tags."""
        messages: list[dict] = []
        if self.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system}]})
        for index, (user, assistant) in enumerate(self.turns):
            messages.append(user_message(user, self.image_turns.count(index), image_token))
            if assistant is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
        return messages


def user_message(text: str, num_images: int, image_token: str) -> dict:
    """A user message with ``num_images`` images, its text as a training record's turn (``place_image_tags``).

    A text with a tag count other than 0 or ``num_images`` raises ``ValueError``.
    """
    return {
        "role": "user",
        "content": [{"type": "text", "text": place_image_tags(text, num_images, image_token)}],
    }


def user_messages(text: str, num_images: int, image_token: str, system: str | None = None) -> list[dict]:
    """The messages of a single-turn question with ``num_images`` images (batch inference, benchmarks)."""
    system_message = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return [*system_message, user_message(text, num_images, image_token)]


def render_prompt(processor, messages: list[dict]) -> str:
    """The prompt text for ``messages`` ending with the assistant's generation prompt."""
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def conversation_prompt(processor, conversation: Conversation) -> tuple[str, list[Image.Image]]:
    """The prompt every engine generates the pending reply from, and its images in prompt order."""
    prompt = render_prompt(processor, conversation.messages(processor.image_token))
    return prompt, conversation.images_in_turns()


def prepare_inputs(loaded: LoadedModel, prompts: Sequence[str], images: Sequence[Image.Image]):
    """Tokenise ``prompts`` (left-padded) with ``images`` (in prompt order, one per ``<image>``)."""
    inputs = loaded.processor(
        text=list(prompts), images=list(images) or None, return_tensors="pt", padding=True
    )
    inputs = inputs.to(loaded.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)  # [N_img, 3, H, W]
    return inputs


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (excluding) the earliest occurrence of any stop string."""
    end = len(text)
    for item in stop:
        if item:
            position = text.find(item)
            if position != -1:
                end = min(end, position)
    return text[:end]


@torch.inference_mode()
def generate_batch(
    loaded: LoadedModel,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    settings: GenerationSettings,
) -> list[str]:
    """Generate one reply per prompt in a single batched ``generate`` call."""
    inputs = prepare_inputs(loaded, prompts, images)
    output = loaded.model.generate(**inputs, **settings.generate_kwargs(loaded.tokenizer))  # [B, T + new]
    new_tokens = output[:, inputs["input_ids"].shape[1] :]  # [B, new]
    texts = loaded.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [cut_at_stop(text, settings.stop).strip() for text in texts]


class _CancelCriteria(StoppingCriteria):
    """Stops generation once ``event`` is set (the consumer went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def stream_reply(
    loaded: LoadedModel, conversation: Conversation, settings: GenerationSettings
) -> Iterator[str]:
    """Yield the reply to the conversation's pending user turn as text chunks, as they are generated."""
    prompt, images = conversation_prompt(loaded.processor, conversation)
    inputs = prepare_inputs(loaded, [prompt], images)
    streamer = TextIteratorStreamer(
        loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S
    )
    failure: list[BaseException] = []
    cancel = threading.Event()

    def work() -> None:
        try:
            with torch.inference_mode():
                loaded.model.generate(
                    **inputs,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]),
                    **settings.generate_kwargs(loaded.tokenizer),
                )
        except BaseException as exc:  # re-raised in the consumer below
            failure.append(exc)
            streamer.end()

    worker = threading.Thread(target=work, name="llava-vitsplit-generate", daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:
        cancel.set()  # no-op when generation already finished; stops it when the consumer quit early
        worker.join()
    if failure:
        raise failure[0]
