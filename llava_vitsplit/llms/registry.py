"""The LLM family registry: one ``LLMFamilySpec`` per family of language models the VLM can be built on.

Everything that depends on the LLM's family reads its spec: the training renderer (``data/templates.py``)
and the inference chat template the processor saves (``model/builder.py``), which render the same bytes;
the end-of-turn token (the last target of every reply, the tokenizer's EOS and the first generation stop);
the pad-token policy; the default system prompt; the chat-template arguments inference passes (Qwen3's
thinking switch, Llama-3.1's date); LoRA's target modules; the released tokenizer's special tokens and a
tiny random config (``testing/llm_families.py`` builds tiny models of each family from them).

``family_for(model_type, tokenizer)`` picks the family: the specs that list the config's ``model_type``,
narrowed by the special tokens each family's tokenizer carries (Vicuna, Llama-3 and SmolLM2 are all
``llama``). An unknown model type or tokenizer is a ``LLMFamilyError`` naming the model type and the
supported families, raised before the model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llava_vitsplit.llms.renderers import RenderContext, Renderer, Segment

IMAGE_TOKEN = "<image>"  # the image placeholder in records, prompts and the tokenizer (one special token)
TEMPLATE_DIR = Path(__file__).parent / "chat_templates"
LLAMA_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LLMFamilyError(ValueError):
    """The LLM's family is unknown, ambiguous, or its tokenizer's template cannot be masked."""


def released_template(name: str) -> str:
    """The chat template stored verbatim in ``chat_templates/<name>.jinja``."""
    return (TEMPLATE_DIR / f"{name}.jinja").read_text()


@dataclass(frozen=True)
class LLMFamilySpec:
    name: str  # also the ``--conv_template`` (``--version``) name of its conversation format
    model_types: tuple[str, ...]  # the text config's ``model_type`` values it covers
    marker_tokens: tuple[str, ...]  # special tokens its tokenizers carry (tells families of one type apart)
    renderer: Renderer  # the training conversation, cut into prompt and generated segments
    chat_template: str  # the released template text (inference); renders what ``renderer`` joins
    template_source: str  # the model id the template was copied from
    end_of_turn: str | None  # closes every reply (None: the tokenizer's EOS, as Vicuna's ``</s>``)
    stop_tokens: tuple[str, ...]  # generation stops at any of these (besides end_of_turn)
    pad_tokens: tuple[str, ...]  # tried in order when the tokenizer has no pad token; "eos_token"/"unk_token"
    special_tokens: dict[str, str]  # the released tokenizer's bos/eos/pad/unk tokens (tiny test tokenizers)
    tiny_config: Callable[[dict], dict]  # common tiny shape -> the family's config kwargs (tests)
    default_system: str | None = None
    template_kwargs: dict = field(default_factory=dict)  # chat-template arguments inference passes
    thinking_switch: str | None = None  # the template argument that turns reasoning on (Qwen3)
    lora_target_modules: tuple[str, ...] = LLAMA_LINEAR_LAYERS
    tokenizer_adds_bos: bool = False  # the released tokenizer prepends BOS itself (Llama, Gemma)

    def context(self, tokenizer) -> RenderContext:
        return RenderContext(
            bos=tokenizer.bos_token or "",
            eos=tokenizer.eos_token or "",
            default_system=self.default_system,
            template_kwargs=self.template_kwargs,
        )

    def segments(self, messages: list[dict], tokenizer) -> list[Segment]:
        return self.renderer(messages, self.context(tokenizer))

    def render_text(self, messages: list[dict], tokenizer, add_generation_prompt: bool = False) -> str:
        """The inference prompt through the stored template (what the saved processor renders)."""
        return tokenizer.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **self.template_kwargs,
        )

    def eos_text(self, tokenizer) -> str:
        return self.end_of_turn or tokenizer.eos_token


FAMILIES: dict[str, LLMFamilySpec] = {}
FALLBACK_FAMILY = "vicuna_v1"  # a ``llama`` tokenizer without another family's tokens (LLaVA-1.5)


def register_llm_family(spec: LLMFamilySpec) -> LLMFamilySpec:
    if spec.name in FAMILIES:
        raise ValueError(f"LLM family {spec.name!r} is already registered")
    FAMILIES[spec.name] = spec
    return spec


def unregister_llm_family(name: str) -> None:
    FAMILIES.pop(name, None)


def supported() -> str:
    return "; ".join(f"{s.name} ({', '.join(s.model_types)})" for s in FAMILIES.values())


def llm_family(name: str) -> LLMFamilySpec:
    if name not in FAMILIES:
        raise LLMFamilyError(f"unknown LLM family {name!r}; supported families (model types): {supported()}")
    return FAMILIES[name]


def family_for(model_type: str, tokenizer) -> LLMFamilySpec:
    """The family of an LLM with config ``model_type`` and ``tokenizer`` (see the module docstring)."""
    typed = [s for s in FAMILIES.values() if model_type in s.model_types]
    if not typed:
        raise LLMFamilyError(
            f"no LLM family covers model_type {model_type!r}; supported families (model types): "
            f"{supported()}. Register one (llava_vitsplit/llms/families.py)."
        )
    vocab = tokenizer.get_vocab()
    fitting = [s for s in typed if all(t in vocab for t in s.marker_tokens)]
    if not fitting:
        wanted = {s.name: s.marker_tokens for s in typed}
        raise LLMFamilyError(
            f"the tokenizer of this {model_type!r} model has none of the special-token sets of its "
            f"families {wanted}; supported families (model types): {supported()}"
        )
    most = max(len(s.marker_tokens) for s in fitting)
    best = [s for s in fitting if len(s.marker_tokens) == most]
    if len(best) > 1:
        raise LLMFamilyError(
            f"model_type {model_type!r}: the tokenizer fits several families {[s.name for s in best]}"
        )
    return best[0]


PROBES = (  # conversations the tokenizer's own template must render exactly as the family's renderer
    [{"role": "user", "content": "<image>\nWhat is it?"}, {"role": "assistant", "content": "A red circle."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>\nColour?"},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Shape?"},
        {"role": "assistant", "content": "A circle 3."},
    ],
)


def prompts_of(segments: list[Segment]) -> list[str]:
    """The text before each generated segment (the prompt of each reply)."""
    texts, prompts = "", []
    for text, generated in segments:
        if generated:
            prompts.append(texts)
        texts += text
    return prompts


def check_tokenizer_template(spec: LLMFamilySpec, tokenizer, model_type: str) -> None:
    """A tokenizer with its own chat template must render the probes as ``spec``'s renderer does (text and
    last generation prompt), else the training masks would not match inference: a ``LLMFamilyError``."""
    own = getattr(tokenizer, "chat_template", None)
    if not own or not isinstance(own, str):
        return
    for messages in PROBES:
        segments = spec.segments(messages, tokenizer)
        expected = ("".join(t for t, _ in segments), prompts_of(segments)[-1])
        try:
            got = tuple(
                tokenizer.apply_chat_template(
                    messages if final else messages[:-1],
                    tokenize=False,
                    add_generation_prompt=not final,
                    **spec.template_kwargs,
                )
                for final in (True, False)
            )
        except Exception as exc:  # the template's own raise_exception, a jinja error
            got = (f"<error: {exc}>", "")
        if got != expected:
            raise LLMFamilyError(
                f"the tokenizer's chat template (model_type {model_type!r}) does not render like family "
                f"{spec.name!r}'s released template ({spec.template_source}), so its training masks "
                f"cannot be built: rendered {got[0]!r}, expected {expected[0]!r}. Use the released "
                f"template, or register a family for it; supported families (model types): {supported()}"
            )


def bos_in_text(tokenizer, text: str) -> bool:
    """Whether ``text`` already starts with the BOS token (chat templates that write it): then neither
    training nor inference lets the tokenizer add a second one."""
    return bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)


__all__ = ["IMAGE_TOKEN", "LLMFamilySpec", "family_for", "llm_family", "register_llm_family"]


def resolve_family(model_type: str, tokenizer) -> LLMFamilySpec:
    """The family of ``(model_type, tokenizer)``, its tokenizer's own template checked against it."""
    spec = family_for(model_type, tokenizer)
    check_tokenizer_template(spec, tokenizer, model_type)
    return spec


def prepare_tokenizer(spec: LLMFamilySpec, tokenizer) -> None:
    """The family's token policy: EOS is the end-of-turn token (so every generation stops there) and a
    tokenizer without a pad token gets the first of ``spec.pad_tokens`` it has."""
    if spec.end_of_turn and tokenizer.eos_token != spec.end_of_turn:
        tokenizer.eos_token = spec.end_of_turn
    if tokenizer.pad_token is not None:
        return
    vocab = tokenizer.get_vocab()
    for candidate in spec.pad_tokens:
        token = getattr(tokenizer, candidate) if candidate in ("eos_token", "unk_token") else candidate
        if token and token in vocab:
            tokenizer.pad_token = token
            return
    raise LLMFamilyError(f"family {spec.name!r}: the tokenizer has none of the pad tokens {spec.pad_tokens}")


def stop_token_ids(spec: LLMFamilySpec, tokenizer) -> list[int]:
    """The ids generation stops at: the end-of-turn (or EOS) token first, then the family's other stops."""
    vocab = tokenizer.get_vocab()
    tokens = [spec.eos_text(tokenizer), *spec.stop_tokens]
    return list(dict.fromkeys(vocab[t] for t in tokens if t in vocab))
