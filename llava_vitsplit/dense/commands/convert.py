"""``llava-vitsplit dense-convert-checkpoint``: turn old pickled ``step-<N>.pt`` files into ``step-<N>/`` folders.

The old file is read with ``torch.load(weights_only=True)``, allowing only NumPy's array type (its RNG
state); a file that needs anything else is refused with the names torch reports, and nothing in it runs.
The new folder is written next to the old file, which is left in place.

    llava-vitsplit dense-convert-checkpoint runs/ade20k-s/checkpoints/step-0040000.pt
"""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="llava-vitsplit dense-convert-checkpoint", description=__doc__.splitlines()[0]
    )
    p.add_argument("checkpoints", nargs="+", help="old step-<N>.pt files")
    args = p.parse_args(argv)

    from llava_vitsplit.dense.legacy import convert_legacy

    for path in args.checkpoints:
        print(f"{path} -> {convert_legacy(path)}")
    return 0
