"""The run's vision tower folder: the pretrained tower with the quickstart's image size.

easy-vqa images are 64x64, so the tower's own preprocessing (resize 256, centre-crop 224: 256 tokens that
also cut the image border) wastes most of the CPU budget. The folder written here holds the same config and
weights (the weights file is linked, not copied) with a processor that resizes the whole image to
``image_size`` x ``image_size``; the model's position embeddings are interpolated as usual.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def sized_tower(source: str, out_dir: Path, image_size: int) -> Path:
    """Write ``out_dir`` from ``source`` (a local folder or a hub id) with a ``image_size`` processor."""
    from transformers import AutoImageProcessor

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    src = Path(source)
    if src.is_dir():
        for name in os.listdir(src):
            if name.endswith(".safetensors"):
                os.symlink((src / name).resolve(), out_dir / name)
        shutil.copyfile(src / "config.json", out_dir / "config.json")
    else:  # a hub id: save the model itself
        from transformers import AutoModel

        AutoModel.from_pretrained(source).save_pretrained(out_dir)
    processor = AutoImageProcessor.from_pretrained(source)
    processor.size = {"height": image_size, "width": image_size}
    processor.crop_size = {"height": image_size, "width": image_size}
    processor.do_center_crop = False
    processor.save_pretrained(out_dir)
    (out_dir / "QUICKSTART_TOWER.json").write_text(
        json.dumps({"source": source, "image_size": image_size}) + "\n"
    )
    return out_dir
