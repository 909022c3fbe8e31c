"""lmms-eval plugin: the ``llava_vitsplit`` model (simple and chat variants), registered by entry point.

``pyproject.toml`` declares ``[project.entry-points."lmms_eval.models"] llava_vitsplit =
"llava_vitsplit.lmms_eval_plugin:manifest"``; lmms-eval calls :func:`manifest` when it builds its model
registry. ``--model llava_vitsplit`` resolves to the chat class; ``--force_simple`` picks the simple one.
This module imports nothing heavy, so registration stays cheap.
"""

from __future__ import annotations

MODEL_ID = "llava_vitsplit"
SIMPLE_CLASS = "llava_vitsplit.lmms_eval_plugin.model.LlavaViTSplit"
CHAT_CLASS = "llava_vitsplit.lmms_eval_plugin.model.LlavaViTSplitChat"


def manifest():
    """The lmms-eval ``ModelManifest`` for ``llava_vitsplit`` (entry-point payload)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=SIMPLE_CLASS, chat_class_path=CHAT_CLASS)
