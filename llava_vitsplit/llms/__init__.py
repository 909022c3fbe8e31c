"""LLM families: one spec per family (``registry.py``), the registered ones (``families.py``), their
training renderers (``renderers.py``) and released chat templates (``chat_templates/*.jinja``)."""

from llava_vitsplit.llms import families  # noqa: F401 (registers the families)
from llava_vitsplit.llms.registry import (
    FAMILIES,
    IMAGE_TOKEN,
    LLMFamilyError,
    LLMFamilySpec,
    family_for,
    llm_family,
    register_llm_family,
    unregister_llm_family,
)

__all__ = [
    "FAMILIES",
    "IMAGE_TOKEN",
    "LLMFamilyError",
    "LLMFamilySpec",
    "family_for",
    "llm_family",
    "register_llm_family",
    "unregister_llm_family",
]
