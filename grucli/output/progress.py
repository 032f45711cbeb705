"""A progress line on stderr for long runs, shown only after a delay and only on a terminal.

May import: rich.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from rich.console import Console

from grucli.errors import printable


class DelayedProgress:
    """A progress bar on stderr for work that takes more than a couple of seconds (a replay's
    timesteps, a check's gates), one line per layer.

    Shown only on a terminal; it appears once the work has run for `delay` seconds, so quick
    runs print nothing.
    """

    def __init__(self, action: str, unit: str, delay: float = 2.0) -> None:
        self._action = action
        self._unit = unit
        self._clock = time.monotonic
        self._start = self._clock()
        self._delay = delay
        self._enabled = (sys.stderr.isatty() and "NO_COLOR" not in os.environ) or os.environ.get("GRUCLI_PROGRESS") == "1"
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, path: str, done: int, total: int) -> None:
        if not self._enabled or self._clock() - self._start < self._delay:
            return
        if self._bar is None:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(f"{self._action} {{task.description}}", markup=False),
                BarColumn(),
                TextColumn(f"{{task.completed}}/{{task.total}} {self._unit}", markup=False),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
        if path not in self._tasks:
            self._tasks[path] = self._bar.add_task(printable(path), total=total)
        self._bar.update(self._tasks[path], completed=done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> DelayedProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RowsProgress:
    """A progress bar of rows (rows/s and time left) on stderr, for a run over a dataset; shown only
    on a terminal (or with GRUCLI_PROGRESS=1), after `delay` seconds."""

    def __init__(self, action: str, delay: float = 1.0) -> None:
        self._action = action
        self._start = time.monotonic()
        self._delay = delay
        self._enabled = (sys.stderr.isatty() and "NO_COLOR" not in os.environ) or os.environ.get("GRUCLI_PROGRESS") == "1"
        self._bar: Any = None
        self._task: Any = None
        self._first: tuple[float, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)  # rows kept from an earlier run do not count towards the rate
        if not self._enabled or now - self._start < self._delay:
            return
        if self._bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"{self._action}", markup=False),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} rows", markup=False),
                TextColumn("{task.fields[rate]}", markup=False),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._action, total=total, rate="")
        began, rows = self._first
        rate = (done - rows) / (now - began) if now > began else 0.0
        self._bar.update(self._task, completed=done, rate=f"{rate:,.0f} rows/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> RowsProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
