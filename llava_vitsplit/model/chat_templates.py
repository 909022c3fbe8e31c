"""LLaVA-1.5's ``vicuna_v1`` conversation format as a Jinja chat template (for tokenizers without one).

Rendered text: ``SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:`` — the system prompt and
each user turn are followed by a space, each assistant reply by ``</s>`` (the tokenizer's EOS text).
Message content may be a string or a list of parts (``{"type": "image"}``, ``{"type": "text", ...}``);
image parts render as ``<image>\\n`` where they are (``place_image_tags`` is the same rule on a string).
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


def place_image_tags(text: str, num_images: int, image_token: str = "<image>") -> str:
    """A user turn's text with one ``image_token`` per image, as training and inference both render it.

    Text that already holds ``num_images`` tags is kept as written (the i-th tag is the i-th image);
    text without tags gets ``image_token + "\\n"`` per image in front, as ``num_images`` image parts
    before a text part render. Any other tag count raises ``ValueError``.
    """
    found = text.count(image_token)
    if found == num_images:
        return text
    if found == 0:
        return f"{image_token}\n" * num_images + text
    raise ValueError(f"{num_images} image(s) but {found} {image_token} tag(s) in the text")
