"""Batch generation through vLLM (``llava-vitsplit answer --engine vllm``), same inputs as the transformers path.

:class:`VLLMEngine` takes what :func:`~llava_vitsplit.serve.generation.generate_batch` takes (rendered
prompts, their images in prompt order, :class:`GenerationSettings`) and returns the same replies: vLLM's
greedy decoding equals transformers' ``generate`` on the same checkpoint in fp32. Each prompt's images
are the next ``prompt.count("<image>")`` of ``images``, as the processor pairs them (one or several). The dtype
follows the transformers path (:func:`~llava_vitsplit.serve.loading.resolve_dtype`: fp32 on CPU, bf16 on
CUDA). vLLM's per-prompt image limit (``limit_mm_per_prompt``, 999 by default) comes from the model:
:func:`images_per_prompt`, as many images as its context holds.

vLLM (``make vllm``) loads this package's plugin in each of its processes; imported only where it is installed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from PIL import Image

from llava_vitsplit.llms.registry import bos_in_text
from llava_vitsplit.serve.generation import GenerationSettings, cut_at_stop
from llava_vitsplit.serve.loading import check_checkpoint, resolve_device, resolve_dtype


def vllm_dtype(dtype: str | None) -> str:
    """The ``--dtype`` for vLLM that the transformers path would use on this machine (``float32``, ...)."""
    return str(resolve_dtype(dtype, resolve_device("auto"))).removeprefix("torch.")


def engine_arguments(model: str, dtype: str | None, engine_options: dict) -> dict:
    """vLLM engine arguments for a checked checkpoint: this machine's dtype, seed 0 unless given."""
    check_checkpoint(model)
    return {"model": model, "dtype": vllm_dtype(dtype), "seed": 0, **engine_options}


def images_per_prompt(model: str, max_model_len: int | None = None) -> int:
    """How many images one prompt of checkpoint ``model`` can hold: its context over one image's tokens.

    The context is ``max_model_len`` when given, else the LLM's ``max_position_embeddings``; one image is
    ``count_image_tokens(processor)`` tokens (576 for CLIP-L/336: LLaVA-1.5-7B's 4096 hold 7). At least 1.
    """
    from transformers import AutoConfig, AutoProcessor

    import llava_vitsplit  # noqa: F401  (registers the llava_vitsplit config and processor)
    from llava_vitsplit.data.dataset import count_image_tokens

    context = max_model_len or AutoConfig.from_pretrained(model).text_config.max_position_embeddings
    return max(1, context // count_image_tokens(AutoProcessor.from_pretrained(model)))


def sampling_params(settings: GenerationSettings):
    """vLLM ``SamplingParams`` for ``settings``: greedy unless sampling, stop strings cut afterwards."""
    from vllm import SamplingParams

    if settings.num_beams != 1:
        raise ValueError(
            f"--engine vllm decodes greedily or samples; --num-beams {settings.num_beams} needs transformers"
        )
    lengths = {"max_tokens": settings.max_new_tokens, "min_tokens": settings.min_new_tokens}
    if not settings.sampling:
        return SamplingParams(temperature=0.0, **lengths)
    return SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p if settings.top_p is not None else 1.0,
        **lengths,
    )


def prompt_inputs(prompts: Sequence[str], images: Sequence[Image.Image], image_token: str) -> Iterator[dict]:
    """vLLM prompt dicts: each prompt with the next ``count(image_token)`` images."""
    remaining = iter(images)
    for prompt in prompts:
        wanted = [next(remaining) for _ in range(prompt.count(image_token))]
        item: dict = {"prompt": prompt}
        if wanted:
            item["multi_modal_data"] = {"image": wanted[0] if len(wanted) == 1 else wanted}
        yield item
    if next(remaining, None) is not None:
        raise ValueError(f"more images than {image_token!r} placeholders in the prompts")


@dataclass
class VLLMEngine:
    """A vLLM ``LLM`` on one checkpoint and the checkpoint's processor (for prompts)."""

    llm: object
    processor: object

    @classmethod
    def open(cls, model: str, dtype: str | None = "auto", **engine_options) -> VLLMEngine:
        """Start vLLM on ``model`` (20-45 s on 2 CPU cores); ``engine_options`` go to ``vllm.LLM``."""
        from transformers import AutoProcessor
        from vllm import LLM

        engine_options.setdefault(
            "limit_mm_per_prompt", {"image": images_per_prompt(model, engine_options.get("max_model_len"))}
        )
        llm = LLM(**engine_arguments(model, dtype, engine_options))
        return cls(llm=llm, processor=AutoProcessor.from_pretrained(model))

    def generate(
        self, prompts: Sequence[str], images: Sequence[Image.Image], settings: GenerationSettings
    ) -> list[str]:
        """One reply per prompt, as ``generate_batch`` returns them (stop strings cut, stripped)."""
        vllm_prompts = [self.vllm_prompt(prompt) for prompt in prompts]
        inputs = list(prompt_inputs(vllm_prompts, images, self.processor.image_token))
        outputs = self.llm.generate(inputs, sampling_params(settings), use_tqdm=False)
        # decoded as generate_batch decodes (vLLM's incremental text holds back incomplete UTF-8)
        new_tokens = [list(output.outputs[0].token_ids) for output in outputs]
        texts = self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [cut_at_stop(text, settings.stop).strip() for text in texts]

    def vllm_prompt(self, prompt: str) -> str:
        """``prompt`` as vLLM must get it for the processor's token ids: vLLM lets the tokenizer add its BOS
        even after a chat template wrote one (Llama-3, Gemma-3), so a written BOS is left to the tokenizer."""
        tokenizer = self.processor.tokenizer
        adds_bos = tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]
        if adds_bos and bos_in_text(tokenizer, prompt):
            return prompt[len(tokenizer.bos_token) :]
        return prompt

    def close(self) -> None:
        """Stop vLLM's engine processes now (instead of at interpreter exit)."""
        self.llm.llm_engine.engine_core.shutdown()
