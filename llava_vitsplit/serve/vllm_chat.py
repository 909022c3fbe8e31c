"""Streamed chat replies from vLLM's ``AsyncLLM`` (``llava-vitsplit demo --engine vllm``).

One engine serves every user: each reply is a request that vLLM batches with the others (continuous
batching), so many users are answered at once rather than in turn. ``AsyncLLM`` lives on an asyncio
loop in a background thread; :meth:`VLLMChatEngine.stream` is a plain iterator (gradio runs handlers
in worker threads) fed through a queue. Closing the iterator (the demo's Stop, a closed page) cancels
the request's task, and vLLM aborts the request. The reply's token ids are decoded with the
checkpoint's tokenizer as the transformers engine decodes them (special tokens skipped, an incomplete
UTF-8 character held back), so both engines show the same text for the same tokens.

vLLM is imported only here and only when an engine is opened (``make vllm`` installs it).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from llava_vitsplit.serve.generation import (
    STREAM_TIMEOUT_S,
    Conversation,
    GenerationSettings,
    conversation_prompt,
)
from llava_vitsplit.serve.vllm_engine import engine_arguments, prompt_inputs, sampling_params

_DONE = object()  # end of a reply's token stream


@dataclass
class VLLMChatEngine:
    """An ``AsyncLLM`` on one checkpoint, its processor (prompts, decoding) and the loop it runs on."""

    engine: object
    processor: object
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    description: str

    @classmethod
    def open(cls, model: str, dtype: str | None = "auto", **engine_options) -> VLLMChatEngine:
        """Start vLLM on ``model``; ``engine_options`` go to ``AsyncEngineArgs`` (``max_model_len``, ...)."""
        from transformers import AutoProcessor
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**engine_arguments(model, dtype, engine_options))
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="llava-vitsplit-vllm", daemon=True)
        thread.start()

        async def start() -> AsyncLLM:  # built on its loop: its output handler task runs there
            return AsyncLLM.from_engine_args(args)

        try:
            engine = asyncio.run_coroutine_threadsafe(start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            raise
        processor = AutoProcessor.from_pretrained(model)
        return cls(engine, processor, loop, thread, f"{model} on vLLM ({args.dtype})")

    @property
    def image_token(self) -> str:
        return self.processor.image_token

    def stream(self, conversation: Conversation, settings: GenerationSettings) -> Iterator[str]:
        """Yield the reply to the pending user turn in text chunks as vLLM generates its tokens."""
        prompt, images = conversation_prompt(self.processor, conversation)
        (request,) = prompt_inputs([prompt], images, self.processor.image_token)
        tokens: queue.Queue = queue.Queue()
        produced = asyncio.run_coroutine_threadsafe(
            self._produce(request, sampling_params(settings), tokens), self.loop
        )
        shown = text = ""
        try:
            while (item := tokens.get(timeout=STREAM_TIMEOUT_S)) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                text = self.processor.tokenizer.decode(item, skip_special_tokens=True)
                if text.endswith("\ufffd") or not text.startswith(shown) or text == shown:
                    continue  # an incomplete character, or a re-tokenised tail: wait for more
                yield text[len(shown) :]
                shown = text
            if text != shown and text.startswith(shown):  # the held-back end of the reply
                yield text[len(shown) :]
        finally:
            produced.cancel()  # a no-op after the end; otherwise vLLM aborts the request

    async def _produce(self, request: dict, params, tokens: queue.Queue) -> None:
        """Put the reply's token ids so far (a list) after each step, then ``_DONE`` or the error."""
        try:
            async for output in self.engine.generate(request, params, uuid.uuid4().hex):
                tokens.put(list(output.outputs[0].token_ids))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # re-raised in the consumer
            tokens.put(exc)
        else:
            tokens.put(_DONE)

    def close(self) -> None:
        """Stop vLLM's engine processes and the loop thread."""
        self.engine.shutdown()  # cancels its output task from this thread ...
        self.engine = None  # AsyncLLM.__del__ runs now, not at interpreter exit (where it fails)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.1), self.loop).result()  # ... the loop finishes it
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
