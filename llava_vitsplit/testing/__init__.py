"""Fixtures for tests, CI, benchmarks and smoke runs; nothing in the library imports this package.

- ``tiny``: tiny random vision towers, Llama LMs, BPE tokenizer and whole ``llava_vitsplit`` checkpoints.
- ``tiny_parts``: the tiny CLIP tower + sentencepiece Llama pair the training scripts are tested on.
- ``scripted``: make a tiny checkpoint answer a fixed reply (end-to-end tests of the serving paths).
- ``llava_mix``: generated data shaped like LLaVA-1.5's 665K mix, and the eager record list (reference).
- ``dense_synthetic``: generated segmentation / depth / COCO sets and a tiny dense preset.
"""
