"""Summary statistics of a weight array, with NaN and Inf counted rather than propagated."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ArrayStats:
    """Statistics over the finite values; None where the array has no finite value."""

    size: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    norm: float | None
    max_abs: float | None
    nan: int
    inf: int


def array_stats(array: np.ndarray) -> ArrayStats:
    accumulator = StatsAccumulator()
    for chunk in row_chunks(array):
        accumulator.update(chunk)
    return accumulator.result()


CHUNK_BYTES = 8 * 2**20


def row_chunks(array: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """`array` in blocks of leading rows of about `chunk_bytes`: contiguous reads from a file."""
    shape = tuple(array.shape)
    if not shape:
        yield np.asarray(array)
        return
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize)
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, shape[0], step):
        yield np.asarray(array[start : start + step])


class StatsAccumulator:
    """The same statistics, gathered chunk by chunk in one pass with no full-size copy.

    Each block is copied once to float64 (float16/bfloat16 sums would overflow or drift), so
    memory stays at one block whatever the array's size.
    """

    def __init__(self) -> None:
        self.size = 0
        self.count = 0
        self.total = 0.0
        self.squares = 0.0
        self.low = np.inf
        self.high = -np.inf
        self.nan = 0
        self.inf = 0

    def update(self, values: np.ndarray) -> None:
        # One contiguous float64 copy of the block, then BLAS-speed sum, dot, min and max.
        values = np.asarray(values, dtype=np.float64).ravel()
        self.size += values.size
        if values.size == 0:
            return
        total = float(values.sum())
        if not np.isfinite(total):  # only then look for NaN and Inf element by element
            finite_mask = np.isfinite(values)
            nan = int(np.isnan(values).sum())
            self.nan += nan
            self.inf += int(values.size - finite_mask.sum() - nan)
            values = values[finite_mask]
            if values.size == 0:
                return
            total = float(values.sum())
        self.count += values.size
        self.total += total
        self.squares += float(np.dot(values, values))
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def merge(self, other: StatsAccumulator) -> None:
        """Add what another accumulator saw (another block of rows of the same array)."""
        self.size += other.size
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        self.nan += other.nan
        self.inf += other.inf

    def result(self) -> ArrayStats:
        if self.count == 0:
            return ArrayStats(self.size, None, None, None, None, None, None, self.nan, self.inf)
        mean = self.total / self.count
        variance = max(self.squares / self.count - mean * mean, 0.0)
        return ArrayStats(
            size=self.size,
            mean=mean,
            std=float(np.sqrt(variance)),
            min=self.low,
            max=self.high,
            norm=float(np.sqrt(self.squares)),
            max_abs=max(abs(self.low), abs(self.high)),
            nan=self.nan,
            inf=self.inf,
        )
