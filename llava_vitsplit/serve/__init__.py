"""Serving: interactive CLI chat, the gradio demo and batch inference, on shared loading/generation helpers.

Modules: ``images`` (load + validate user images), ``loading`` (device/dtype choice, one model load),
``generation`` (prompts, streaming and batched generation), ``chat`` / ``demo`` / ``answer`` (the
``llava-vitsplit chat|demo|answer`` sub-commands). ``llava_vitsplit.testing.scripted`` gives a tiny
checkpoint a fixed answer for end-to-end tests of these paths.
"""
