"""Console sub-commands of the dense package (``llava-vitsplit dense-train`` etc.); each has ``main(argv)``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


def reports_data_errors(main: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """Print bad-data and old-checkpoint errors (their messages list the fix) and exit 1, no traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str]) -> int:
        from llava_vitsplit.dense.checkpoint import LegacyCheckpointError
        from llava_vitsplit.dense.validate import BadDataError

        try:
            return main(argv)
        except (BadDataError, LegacyCheckpointError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapper
