"""`inspect` and `export` never import TensorFlow or Keras: run them where those imports fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REAL, SAMPLES

BLOCKER = """
import importlib.abc, sys
BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "torch")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked import of " + name)
sys.meta_path.insert(0, Block())
"""

RUNNER = """
from grucli.cli import cli
code = 0
for args in RUNS:
    try:
        cli.main(args=args, prog_name="grucli", standalone_mode=False)
    except SystemExit as exc:
        code = code or exc.code
leaked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
print("LEAKED", leaked, file=sys.stderr)
sys.exit(code or (3 if leaked else 0))
"""


def model_files() -> list[Path]:
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".keras", ".h5"))
    files += sorted(p for p in REAL.glob("*") if p.suffix in (".h5", ".hdf5")) if REAL.exists() else []
    return files


def test_blocker_works() -> None:
    script = BLOCKER + "\nimport tensorflow"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "blocked import of tensorflow" in result.stderr


def test_inspect_and_export_without_tensorflow(tmp_path: Path) -> None:
    runs = []
    for index, path in enumerate(model_files()):
        runs.append(["inspect", str(path), "--values"])
        runs.append(["inspect", str(path), "--json"])
        runs.append(["export", str(path), "-o", str(tmp_path / f"{index}.npz")])
    assert len(runs) > 100
    result = subprocess.run([sys.executable, "-c", f"RUNS = {runs!r}\n" + BLOCKER + RUNNER], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED []" in result.stderr
    assert len(list(tmp_path.glob("*.npz"))) == len(model_files())
