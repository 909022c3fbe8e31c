"""The engines a chat streams its replies from: transformers in this process, or vLLM (``--engine``).

A :class:`ChatEngine` takes a :class:`~llava_vitsplit.serve.generation.Conversation` (its images and
turns) and :class:`~llava_vitsplit.serve.generation.GenerationSettings` and yields the reply to the
pending user turn as text chunks; closing the iterator early stops that reply. Both engines build the
prompt with :func:`~llava_vitsplit.serve.generation.conversation_prompt` (the processor's chat
template), so the same conversation gets the same greedy reply from either. The vLLM engine
(:class:`~llava_vitsplit.serve.vllm_chat.VLLMChatEngine`) batches the replies of many users at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from llava_vitsplit.serve.generation import Conversation, GenerationSettings, stream_reply
from llava_vitsplit.serve.loading import LoadedModel, load_model

ENGINES = ("transformers", "vllm")


class ChatEngine(Protocol):
    """Streams replies to conversations; ``description`` names the model and where it runs (for logs)."""

    description: str

    @property
    def image_token(self) -> str: ...  # the processor's image placeholder (``<image>``)

    def stream(self, conversation: Conversation, settings: GenerationSettings) -> Iterator[str]: ...

    def close(self) -> None: ...


@dataclass
class TransformersChatEngine:
    """``generate`` on one loaded model, one reply per worker thread (the demo's ``--concurrency``)."""

    loaded: LoadedModel
    description: str = ""

    @property
    def image_token(self) -> str:
        return self.loaded.processor.image_token

    def stream(self, conversation: Conversation, settings: GenerationSettings) -> Iterator[str]:
        return stream_reply(self.loaded, conversation, settings)

    def close(self) -> None:
        """Nothing to stop: the model lives in this process."""


def open_chat_engine(
    engine: str, model: str, device: str = "auto", dtype: str | None = "auto", **vllm_options
) -> ChatEngine:
    """Load ``model`` into the named engine (``transformers`` or ``vllm``; vLLM picks its own device).

    ``vllm_options`` go to vLLM's ``AsyncEngineArgs`` (``max_model_len``, ``enforce_eager``, ...).
    """
    if engine == "transformers":
        loaded = load_model(model, device=device, dtype=dtype)
        return TransformersChatEngine(loaded, f"{model} on {loaded.device} ({loaded.dtype})")
    if engine == "vllm":
        from llava_vitsplit.serve.vllm_chat import VLLMChatEngine
        from llava_vitsplit.serve.vllm_plugin import require_vllm

        require_vllm()
        return VLLMChatEngine.open(model, dtype=dtype, **vllm_options)
    raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
