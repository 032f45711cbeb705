"""Summary statistics of a weight array, with NaN and Inf counted rather than propagated."""

from __future__ import annotations

from dataclasses import dataclass

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
    # float64 accumulation: float16/bfloat16 sums overflow and lose precision.
    values = np.asarray(array, dtype=np.float64).ravel()
    finite_mask = np.isfinite(values)
    nan = int(np.isnan(values).sum())
    inf = int(values.size - finite_mask.sum() - nan)
    finite = values if nan + inf == 0 else values[finite_mask]
    if finite.size == 0:
        return ArrayStats(int(values.size), None, None, None, None, None, None, nan, inf)
    return ArrayStats(
        size=int(values.size),
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
        norm=float(np.sqrt(np.dot(finite, finite))),
        max_abs=float(np.abs(finite).max()),
        nan=nan,
        inf=inf,
    )
