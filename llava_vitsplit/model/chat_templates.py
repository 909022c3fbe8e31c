"""Prompt texts the inference side shares: LLaVA-1.5's short-answer suffix, and Vicuna's system prompt and
``vicuna_v1`` template (defined with the other LLM families in ``llava_vitsplit/llms/families.py``)."""

from llava_vitsplit.llms.families import VICUNA_V1_CHAT_TEMPLATE, VICUNA_V1_SYSTEM

# LLaVA-1.5's suffix for short-answer VQA questions (VQAv2, GQA, POPE, VizWiz; its training mix uses it too).
SHORT_ANSWER_PROMPT = "\nAnswer the question using a single word or phrase."

__all__ = ["SHORT_ANSWER_PROMPT", "VICUNA_V1_CHAT_TEMPLATE", "VICUNA_V1_SYSTEM"]
