"""The bundled example repository is what examples/build_models.py makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.models import EXAMPLES


def test_build_models_reproduces_the_bundled_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLES / "build_models.py"), str(tmp_path)], check=True)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    bundled = sorted(p.relative_to(EXAMPLES / "models") for p in (EXAMPLES / "models").rglob("*")
                     if p.is_file())
    assert built == bundled
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (EXAMPLES / "models" / rel).read_bytes(), rel
