"""LLaVA-1.5's ``vicuna_v1`` conversation format as a Jinja chat template (for tokenizers without one).

Rendered text: ``SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:`` — the system prompt and
each user turn are followed by a space, each assistant reply by ``</s>`` (the tokenizer's EOS text).
Message content may be a string or a list of parts (``{"type": "image"}``, ``{"type": "text", ...}``);
image parts render as ``<image>\\n`` before the text.
"""

# LLaVA-1.5's suffix for short-answer VQA questions (VQAv2, GQA, POPE, VizWiz; its training mix uses it too).
SHORT_ANSWER_PROMPT = "\nAnswer the question using a single word or phrase."

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

VICUNA_V1_CHAT_TEMPLATE = (
    "{%- set system = namespace(text='" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system.text = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- endif -%}"
    "{{ system.text ~ ' ' }}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set text = namespace(v='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set text.v = text.v + '<image>\\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set text.v = text.v + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = text.v -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' ~ text ~ ' ' }}"
    "{%- else -%}{{ 'ASSISTANT: ' ~ text ~ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
