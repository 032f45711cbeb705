"""Ctrl-C and SIGTERM: exit 130 and 143 with one line, no traceback, and no partial output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory, keras3: Any) -> Path:
    # Any sequence length: a replay over millions of steps runs until it is interrupted.
    model = keras3.Sequential([keras3.Input((None, 3)), keras3.layers.GRU(32)])
    path = tmp_path_factory.mktemp("slow") / "variable_length.keras"
    model.save(path)
    return path


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell starts background jobs (a test run under `&`) with SIGINT ignored, and children
    # inherit that; a command in a terminal has the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_interrupted_replay_leaves_nothing(slow_model: Path, tmp_path: Path, signum: int, code: int, word: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "grucli", "replay", str(slow_model), "--timesteps", "3000000", "--max-timesteps", "3000000", "--batch", "1",
         "-o", str(out / "y.npy"), "--gates", str(out / "t.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    time.sleep(3.0)  # past start-up, inside the replay loop
    assert process.poll() is None, process.communicate()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code
    assert stderr == f"Error: {word}; nothing was written\n"
    assert list(out.iterdir()) == []
