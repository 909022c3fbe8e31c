"""``docs/ARCHITECTURE.md``'s generated tables match the code (``python docs/architecture.py`` rewrites them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_architecture_document_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(DOCS / "architecture.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_a_module_without_a_docstring_is_named(tmp_path):
    sys.path.insert(0, str(DOCS))
    try:
        import architecture
    finally:
        sys.path.remove(str(DOCS))
    bare = tmp_path / "bare.py"
    bare.write_text("x = 1\n")
    with pytest.raises(ValueError, match="bare.py: no module docstring"):
        architecture.summary_line(bare)
