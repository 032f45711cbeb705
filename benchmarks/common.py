"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def compile_package() -> None:
    """Byte-compile grucli as `pip install` does: with PYTHONDONTWRITEBYTECODE set (as on CI
    machines), an editable checkout would otherwise be recompiled from source on every run."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "grucli")], check=True)


def median_seconds(function: Callable[[], Any], runs: int = 5) -> float:
    """The median wall time of `runs` calls, after one warm call (graphs traced, caches made)."""
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
