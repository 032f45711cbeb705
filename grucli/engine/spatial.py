"""Convolution and pooling over time (1D) or images (2D) in NumPy, channels last, as TensorFlow
computes them: "same" padding puts the odd cell at the end, average pooling over "same" padding
divides by the cells inside the input, max pooling ignores the padding.

Pure functions of arrays; `graph` reads the layer configs and calls them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def same_padding(size: int, window: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) so that "same" gives ceil(size / stride) outputs (TensorFlow's rule)."""
    extent = (window - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _pads(
    shape: Sequence[int], windows: Sequence[int], strides: Sequence[int], dilations: Sequence[int], padding: str
) -> list[tuple[int, int]]:
    if padding == "valid":
        return [(0, 0)] * len(windows)
    if padding == "same":
        return [same_padding(size, w, s, d) for size, w, s, d in zip(shape, windows, strides, dilations)]
    if padding == "causal":  # 1D only: every step sees itself and the past
        return [((windows[0] - 1) * dilations[0], 0)]
    raise ValueError(f"padding {padding!r}")


def _windows(x: np.ndarray, windows: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> np.ndarray:
    """(batch, *out, channels, *windows): every window of the spatial axes 1..n."""
    rank = len(windows)
    extents = [(w - 1) * d + 1 for w, d in zip(windows, dilations)]
    view = np.lib.stride_tricks.sliding_window_view(x, extents, axis=tuple(range(1, rank + 1)))
    index = (slice(None), *(slice(None, None, s) for s in strides), slice(None), *(slice(None, None, d) for d in dilations))
    return view[index]


def convolve(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int], padding: str, dilations: Sequence[int]) -> np.ndarray:
    """x (batch, *spatial, in), kernel (*window, in, out) → (batch, *out_spatial, out)."""
    rank = kernel.ndim - 2
    windows = kernel.shape[:rank]
    pads = _pads(x.shape[1 : 1 + rank], windows, strides, dilations, padding)
    padded = np.pad(x, [(0, 0), *pads, (0, 0)])
    patches = _windows(padded, windows, strides, dilations)  # (batch, *out, in, *window)
    letters = "uvw"[:rank]
    return np.einsum(f"b{letters.upper()}c{letters},{letters}co->b{letters.upper()}o", patches, kernel)


def pool(x: np.ndarray, windows: Sequence[int], strides: Sequence[int], padding: str, mode: str) -> np.ndarray:
    """Max or average pooling of x (batch, *spatial, channels)."""
    rank = len(windows)
    ones = [1] * rank
    pads = _pads(x.shape[1 : 1 + rank], windows, strides, ones, padding)
    spatial_axes = tuple(range(-rank, 0))
    if mode == "max":
        padded = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=-np.inf)
        return _windows(padded, windows, strides, ones).max(axis=spatial_axes)
    padded = np.pad(x, [(0, 0), *pads, (0, 0)])
    inside = np.pad(np.ones((*x.shape[1 : 1 + rank], 1), x.dtype), [*pads, (0, 0)])[None]
    totals = _windows(padded, windows, strides, ones).sum(axis=spatial_axes)
    counts = _windows(inside, windows, strides, ones).sum(axis=spatial_axes)
    return totals / counts


def layer_normalization(x: np.ndarray, gamma: np.ndarray | float, beta: np.ndarray | float, epsilon: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


Reduce = Callable[..., np.ndarray]
