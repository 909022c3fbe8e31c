"""llava-vitsplit: ViT-Split connectors for LLaVA-1.5 and dense-task heads on frozen vision towers.

Importing the package registers the ``llava_vitsplit`` model type with transformers' Auto classes.
"""

__version__ = "0.1.0"

from llava_vitsplit.model import register as _register  # noqa: E402

_register()
