"""The ``llava_vitsplit`` lmms-eval model: batched generation with LLaVA-1.5 prompting.

``LlavaViTSplit`` (simple: requests carry the prompt text and a ``doc_to_visual``) and
``LlavaViTSplitChat`` (chat: requests carry ``doc_to_messages``) share loading, batching and decoding.
Requests are grouped by generation kwargs and batched ``batch_size`` at a time; ``until`` (default: the
EOS text; none for the paper's benchmarks, whose LLaVA-1.5 settings ``prompts.py`` applies), ``max_new_tokens`` (default 1024), ``temperature`` (> 0 samples unless the task says
``do_sample: false``), ``top_p`` and ``num_beams`` are honoured; other keys (``image_aspect_ratio``...)
are ignored. Prompts follow LLaVA-1.5 (``prompts.py``): ``<image>`` first, then the question with the
benchmark's LLaVA-1.5 instruction, in the checkpoint's chat template. A request may carry several images
(``doc_to_visual`` returning a list, or several image parts in ``doc_to_messages``): each gets an
``<image>`` tag, where the question writes them or first, in order (``serve.generation.user_message``,
as training records place them).

Model args: ``pretrained`` (checkpoint), ``device`` (auto), ``dtype`` (auto: bf16 on CUDA, fp32 on CPU),
``batch_size``, ``prompt_style`` (llava15 | task). Multi-GPU: ``accelerate launch -m lmms_eval ...``
runs one replica per process (data parallel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages
from PIL import Image
from tqdm import tqdm

from llava_vitsplit.lmms_eval_plugin.prompts import (
    PROMPT_STYLES,
    llava15_answer,
    llava15_generation,
    llava15_text,
)
from llava_vitsplit.serve.generation import (
    GenerationSettings,
    generate_batch,
    prepare_inputs,
    render_prompt,
    user_message,
)
from llava_vitsplit.serve.loading import LoadedModel, load_model

DEFAULT_MAX_NEW_TOKENS = 1024


def _as_batch_size(value) -> int:
    text = str(value)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"llava_vitsplit: batch_size must be a positive integer, got {value!r}")
    return int(text)


def settings_from_gen_kwargs(gen_kwargs: dict, eos_text: str | None) -> GenerationSettings:
    """Map lmms-eval generation kwargs onto :class:`GenerationSettings`."""
    until = gen_kwargs.get("until", [eos_text] if eos_text else [])
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list | tuple):
        raise ValueError(f"gen_kwargs['until'] must be a string or a list, got {type(until).__name__}")
    top_p = gen_kwargs.get("top_p")
    return GenerationSettings(
        max_new_tokens=int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
        temperature=float(gen_kwargs.get("temperature", 0) or 0),
        top_p=float(top_p) if top_p not in (None, 0) else None,
        num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
        do_sample=gen_kwargs.get("do_sample"),
        stop=tuple(str(item) for item in until if item),
    )


def _check_images(visuals: Sequence, where: str) -> list[Image.Image]:
    images = []
    for visual in visuals:
        if not isinstance(visual, Image.Image):
            raise ValueError(f"llava_vitsplit handles images only; {where} gave a {type(visual).__name__}")
        images.append(visual.convert("RGB"))
    return images


class LlavaViTSplit(lmms):
    """Simple variant: prompt text from the task (re-rendered with LLaVA-1.5 settings) + ``doc_to_visual``."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = "auto",
        dtype: str | None = "auto",
        batch_size: int | str = 1,
        prompt_style: str = "llava15",
        **kwargs,
    ) -> None:
        super().__init__()
        kwargs.pop("max_batch_size", None)
        if kwargs:
            raise ValueError(f"llava_vitsplit: unknown model_args {sorted(kwargs)}")
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"llava_vitsplit: prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}"
            )
        from accelerate import Accelerator

        accelerator = Accelerator()
        if accelerator.num_processes > 1:
            device = f"cuda:{accelerator.local_process_index}"
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes
        self.accelerator = accelerator
        self.loaded: LoadedModel = load_model(pretrained, device=device, dtype=dtype)
        self.pretrained = pretrained
        self.batch_size_per_gpu = _as_batch_size(batch_size)
        self.prompt_style = prompt_style

    # attributes the evaluator reads
    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def eot_token_id(self) -> int:
        return self.loaded.tokenizer.eos_token_id

    @property
    def chat_template(self) -> str | None:
        return getattr(self.loaded.processor, "chat_template", None)

    # prompts
    def _question_text(self, task, doc: dict, fallback: str) -> str:
        if self.prompt_style == "llava15" and task is not None:
            text = llava15_text(task, doc)
            if text is not None:
                return text
        return fallback

    def _simple_item(self, context: str, doc_to_visual, doc_id: int, task: str, split: str):
        """(prompt, images) for one simple-mode request."""
        doc = self.task_dict[task][split][doc_id]
        images = _check_images(doc_to_visual(doc) or [], f"task {task} doc {doc_id}")
        text = self._question_text(getattr(doc_to_visual, "__self__", None), doc, context)
        message = user_message(text, len(images), self.loaded.processor.image_token)  # tags kept or first
        return render_prompt(self.loaded.processor, [message]), images

    def _generate(self, items: list[tuple[str, list[Image.Image]]], gen_kwargs: dict) -> list[str]:
        settings = settings_from_gen_kwargs(gen_kwargs, self.loaded.tokenizer.eos_token)
        prompts = [prompt for prompt, _ in items]
        images = [image for _, item_images in items for image in item_images]
        return generate_batch(self.loaded, prompts, images, settings)

    def _item(self, args: tuple):
        context, _gen_kwargs, doc_to_visual, doc_id, task, split = args
        return self._simple_item(context, doc_to_visual, doc_id, task, split)

    _GEN_KWARGS_INDEX = 1
    _TASK_METHOD_INDEX = 2  # the bound doc_to_visual (simple) / doc_to_messages (chat)

    def _with_llava15_generation(self, args: tuple) -> tuple:
        """``args`` with the gen_kwargs LLaVA-1.5 used for the request's task (``prompt_style=llava15``)."""
        if self.prompt_style != "llava15":
            return args
        task = getattr(args[self._TASK_METHOD_INDEX], "__self__", None)
        index = self._GEN_KWARGS_INDEX
        gen_kwargs = llava15_generation(task, dict(args[index]))
        return (*args[:index], gen_kwargs, *args[index + 1 :])

    def _clean_answer(self, args: tuple, answer: str) -> str:
        """``answer`` without control characters for tasks whose results go into a spreadsheet (MMBench)."""
        if self.prompt_style != "llava15":
            return answer
        return llava15_answer(getattr(args[self._TASK_METHOD_INDEX], "__self__", None), answer)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        index = self._GEN_KWARGS_INDEX
        collator = lmms_utils.Collator(
            [self._with_llava15_generation(request.args) for request in requests],
            sort_fn=lambda args: (-len(args[0]), args[0]),
            group_fn=lambda args: args[index],
            grouping=True,
        )
        results: list[str] = []
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="llava_vitsplit")
        for batch in collator.get_batched(n=self.batch_size, batch_fn=None):
            gen_kwargs = dict(batch[0][index])
            outputs = self._generate([self._item(args) for args in batch], gen_kwargs)
            outputs = [self._clean_answer(args, output) for args, output in zip(batch, outputs, strict=True)]
            for args, output in zip(batch, outputs, strict=True):
                self.cache_hook.add_partial("generate_until", (args[0], gen_kwargs), output)
            results.extend(outputs)
            bar.update(len(batch))
        bar.close()
        return collator.get_original(results)

    @torch.inference_mode()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation after the chat-formatted prompt (+ image)."""
        results = []
        for context, doc_to_target, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            doc = self.task_dict[task][split][doc_id]
            continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            prompt, images = self._simple_item(context, doc_to_visual, doc_id, task, split)
            prompt_len = prepare_inputs(self.loaded, [prompt], images)["input_ids"].shape[1]
            inputs = prepare_inputs(self.loaded, [prompt + continuation], images)
            logits = self.model(**inputs).logits.float()  # [1, T, V]
            targets = inputs["input_ids"][:, prompt_len:]  # [1, C]
            log_probs = torch.log_softmax(logits[:, prompt_len - 1 : -1], dim=-1)  # [1, C, V]
            picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [1, C]
            greedy = bool((log_probs.argmax(-1) == targets).all())
            results.append((float(picked.sum()), greedy))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("llava_vitsplit does not implement multi-round generation tasks")

    def clean(self) -> None:
        """Free the model once all requests are answered (lmms-eval may then load a local judge)."""
        self.loaded = replace(self.loaded, model=None)
        super().clean()


class LlavaViTSplitChat(LlavaViTSplit):
    """Chat variant: messages from the task's ``doc_to_messages``; image parts go before the text."""

    is_simple = False
    _GEN_KWARGS_INDEX = 2
    _TASK_METHOD_INDEX = 1

    def _item(self, args: tuple):
        context, doc_to_messages, _gen_kwargs, doc_id, task, split = args
        doc = self.task_dict[task][split][doc_id]
        chat = ChatMessages(messages=doc_to_messages(doc))
        images, videos, audios = chat.extract_media()
        if videos or audios:
            raise ValueError(f"llava_vitsplit handles images only; task {task} doc {doc_id} has video/audio")
        images = _check_images(images, f"task {task} doc {doc_id}")
        task_obj = getattr(doc_to_messages, "__self__", None)
        auto_messages = getattr(getattr(task_obj, "config", None), "doc_to_messages", None) is None
        text = self._question_text(task_obj, doc, None) if auto_messages else None
        messages = []
        image_token = self.loaded.processor.image_token
        for message in chat.to_hf_messages():
            parts = message["content"]
            num_images = sum(part["type"] == "image" for part in parts)
            message_text = "".join(part["text"] for part in parts if part["type"] == "text")
            if text is not None and message["role"] == "user":  # LLaVA-1.5 question text
                message_text, text = text, None
            if message["role"] == "user":
                messages.append(user_message(message_text, num_images, image_token))
            else:
                messages.append(
                    {"role": message["role"], "content": [{"type": "text", "text": message_text}]}
                )
        return render_prompt(self.loaded.processor, messages), images
