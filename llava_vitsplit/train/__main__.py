"""``python -m llava_vitsplit.train ARGS``: the same as ``llava-vitsplit train ARGS``."""

import sys

from llava_vitsplit.train.run import main

if __name__ == "__main__":
    sys.exit(main())
