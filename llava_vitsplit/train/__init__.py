"""Two-stage LLaVA training with the ViT-Split connector, on the transformers Trainer (+ DeepSpeed, peft).

``run`` is the entry point (``llava-vitsplit train`` / ``python -m llava_vitsplit.train``); ``arguments``
holds LLaVA's command-line names; ``recipe_args`` puts the preset's training recipe under them;
``model_setup`` builds the model and applies the freezing table (``llava_vitsplit.stages``);
``trainer`` adds grouped sampling, lr groups and atomic checkpoints; ``connector_io`` saves and loads
the stage-1 connector; ``lora`` merges LoRA runs into plain checkpoints.
"""
