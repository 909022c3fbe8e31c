"""The dense sub-package and the adapter import nothing from the VLM, the LLM code or training/serving.

Each check runs in a fresh interpreter, imports every module of ``llava_vitsplit.dense``,
``llava_vitsplit.adapter`` and ``llava_vitsplit.backbones``, builds and runs a tiny dense model (so lazy
imports count too), and lists what ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import llava_vitsplit
from llava_vitsplit.backbones.registry import BACKBONES

PACKAGE_DIR = Path(llava_vitsplit.__file__).parent

# llava_vitsplit modules the dense code may load; anything else (model, training, serving, eval, data) may not.
ALLOWED_OWN = (
    "llava_vitsplit.adapter",
    "llava_vitsplit.backbones",
    "llava_vitsplit.dense",
    "llava_vitsplit.util",
)
# The fixture this test builds its tiny preset with (it imports only dense code itself).
TEST_FIXTURES = {"llava_vitsplit.testing", "llava_vitsplit.testing.dense_synthetic"}
# transformers model families the dense code may load: the auto machinery (which loads encoder_decoder
# itself) and the vision towers of the backbone registry (the package of each spec's model class).
ALLOWED_TRANSFORMERS = {"auto", "encoder_decoder"} | {
    spec.model_cls().__module__.split(".")[2] for spec in BACKBONES.values()
}
FORBIDDEN_PACKAGES = ("peft", "gradio", "lmms_eval", "deepspeed.runtime.zero")

PROBE = """
import json, pkgutil, sys, importlib
{preamble}
import llava_vitsplit.adapter, llava_vitsplit.backbones, llava_vitsplit.dense
for pkg in (llava_vitsplit.adapter, llava_vitsplit.backbones, llava_vitsplit.dense):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
import torch
from llava_vitsplit.dense.build import build_backbone, build_dense_model
from llava_vitsplit.testing.dense_synthetic import tiny_preset
preset = tiny_preset()
build_dense_model([preset], build_backbone(preset.backbone))(torch.zeros(1, 3, 16, 16))
print(json.dumps(sorted(sys.modules)))
"""

# Loads the sub-packages without running llava_vitsplit/__init__.py (which registers the VLM with the
# Auto classes): checks what the dense, adapter and backbone code itself pulls in.
BYPASS_PACKAGE_INIT = """
import types
_pkg = types.ModuleType("llava_vitsplit")
_pkg.__path__ = [{path!r}]
sys.modules["llava_vitsplit"] = _pkg
"""


def _loaded_modules(preamble: str) -> list[str]:
    code = textwrap.dedent(PROBE).format(preamble=textwrap.dedent(preamble))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _violations(modules: list[str]) -> list[str]:
    bad = []
    for name in modules:
        if name in TEST_FIXTURES:
            continue
        if name.startswith("llava_vitsplit.") and not name.startswith(ALLOWED_OWN):
            bad.append(name)
        elif name.startswith("transformers.models."):
            if name.split(".")[2] not in ALLOWED_TRANSFORMERS:
                bad.append(name)
        elif name.split(".")[0] in FORBIDDEN_PACKAGES or name.startswith(FORBIDDEN_PACKAGES):
            bad.append(name)
    return bad


def test_dense_and_adapter_code_imports_no_vlm_code():
    modules = _loaded_modules(BYPASS_PACKAGE_INIT.format(path=str(PACKAGE_DIR)))
    assert "llava_vitsplit.dense.trainer" in modules and "transformers.models.dinov2" in modules
    assert _violations(modules) == []


def test_importing_the_dense_package_loads_only_the_registration_of_the_vlm():
    """What a user gets from ``import llava_vitsplit.dense`` (package ``__init__`` included).

    ``import llava_vitsplit`` registers the VLM with transformers' Auto classes (the core contract), so
    the VLM's own classes, transformers' llava module and the LLM family registry (``llava_vitsplit.llms``:
    plain data and text renderers the processor takes its chat template from, no model code) come with any
    sub-package; nothing else does: no LLM model code, no training, serving, data or evaluation modules.
    """
    registration = ("llava_vitsplit.model", "transformers.models.llava", "llava_vitsplit.llms")
    bad = [name for name in _violations(_loaded_modules("")) if not name.startswith(registration)]
    assert bad == []
