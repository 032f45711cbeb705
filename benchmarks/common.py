"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_package() -> None:
    """Byte-compile grucli as `pip install` does: with PYTHONDONTWRITEBYTECODE set (as on CI
    machines), an editable checkout would otherwise be recompiled from source on every run."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "grucli")], check=True)
