"""Keras's activations in NumPy, in the definitions of the Keras that saved the file, and the
in-place forms the step loops apply to their buffers.

May import: numpy, model/semantics, errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from grucli.errors import ReplayError
from grucli.model.semantics import KERAS2, KERAS3, Semantics

Activation = Callable[[np.ndarray], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """sigmoid(x) = 1 / (1 + exp(-x)), through exp(-|x|) ≤ 1, which never overflows: for x < 0 as
    e / (1 + e), relatively exact however small (the tanh form 0.5·(1 + tanh(x/2)) cancels to 0
    in float32 below x ≈ -17, and gave 37 % errors near 1e-8)."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(x, np.float32), copy=False)


_erfc = np.vectorize(math.erfc, otypes=[float])


def _gelu(x: np.ndarray) -> np.ndarray:
    """gelu(x) = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), written 0.5·x·erfc(-x/√2): the same number, without
    the cancellation of 1 + erf(…) ≈ 1 - 1 that made gelu(-10) = 0 instead of -7.6e-23."""
    return (0.5 * x * _erfc(-x / math.sqrt(2.0))).astype(x.dtype)


def _selu(x: np.ndarray) -> np.ndarray:
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# One definition of each hard_sigmoid (the in-place ones below), applied here to a float copy.
def _hard_sigmoid_keras2(x: np.ndarray) -> np.ndarray:
    return _hard_sigmoid_keras2_in_place(np.multiply(x, 1.0))


def _hard_sigmoid_keras3(x: np.ndarray) -> np.ndarray:
    return _hard_sigmoid_keras3_in_place(np.multiply(x, 1.0))


COMMON_ACTIVATIONS: Mapping[str, Activation] = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": _selu,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "exponential": np.exp,
    "gelu": _gelu,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "mish": lambda x: x * np.tanh(np.logaddexp(0, x)),
    "log_sigmoid": lambda x: -np.logaddexp(0, -x),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "softmax": _softmax,
}
HARD_SIGMOID = {KERAS2: _hard_sigmoid_keras2, KERAS3: _hard_sigmoid_keras3}


def activation(name: str | None, semantics: Semantics) -> Activation:
    if name is None or name == "linear":
        return COMMON_ACTIVATIONS["linear"]
    if name == "hard_sigmoid":
        return HARD_SIGMOID[semantics]
    if name in ("hard_silu", "hard_swish"):
        hard = HARD_SIGMOID[semantics]
        return lambda x: x * hard(x)
    if name not in COMMON_ACTIVATIONS:
        raise ReplayError(
            f"activation {name!r} is not one the replay knows; expected one of: "
            f"{', '.join(sorted([*COMMON_ACTIVATIONS, 'hard_sigmoid', 'hard_silu']))}"
        )
    return COMMON_ACTIVATIONS[name]


def activation_in_place(name: str | None, semantics: Semantics) -> Activation:
    """The activation `name` as a function that overwrites its argument and returns it: the step
    loops apply it to buffers they own. The common ones run as in-place ufuncs."""
    if name is None or name == "linear":
        return lambda v: v
    if name in IN_PLACE:
        return IN_PLACE[name]
    if name == "hard_sigmoid":
        return _HARD_SIGMOID_IN_PLACE[semantics]
    plain = activation(name, semantics)

    def overwrite(v: np.ndarray) -> np.ndarray:
        v[...] = plain(v)
        return v

    return overwrite


# The step loops' sigmoid and tanh go through exp: NumPy's float64 tanh costs twice its exp (no
# SIMD for either on AVX2), and these are most of a float64 step. Both forms are exact in
# arithmetic and within a few ulp of 1 in float64; exp's overflow to inf gives the right limits.


def _sigmoid_in_place(v: np.ndarray) -> np.ndarray:
    """sigmoid(v) = 1 / (1 + exp(-v))"""
    np.negative(v, out=v)
    np.exp(v, out=v)  # inf for v < -709: 1 / inf = 0 (run_layer silences the overflow warning)
    v += 1.0
    return np.divide(1.0, v, out=v)


def _tanh_in_place(v: np.ndarray) -> np.ndarray:
    """tanh(v) = 2 * sigmoid(2v) - 1"""
    v *= -2.0
    np.exp(v, out=v)
    v += 1.0
    np.divide(2.0, v, out=v)
    v -= 1.0
    return v


def _hard_sigmoid_keras2_in_place(v: np.ndarray) -> np.ndarray:
    v *= 0.2
    v += 0.5
    return np.clip(v, 0.0, 1.0, out=v)


def _hard_sigmoid_keras3_in_place(v: np.ndarray) -> np.ndarray:
    v /= 6.0
    v += 0.5
    return np.clip(v, 0.0, 1.0, out=v)


IN_PLACE: Mapping[str, Activation] = {
    "tanh": _tanh_in_place,
    "sigmoid": _sigmoid_in_place,
    "relu": lambda v: np.maximum(v, 0, out=v),
}
_HARD_SIGMOID_IN_PLACE = {KERAS2: _hard_sigmoid_keras2_in_place, KERAS3: _hard_sigmoid_keras3_in_place}
# Elementwise for certain: one pass may cover several gates side by side. Any other activation
# (softmax works over the last axis) is applied gate by gate, as Keras applies it.
ELEMENTWISE = {None, "linear", "hard_sigmoid", *IN_PLACE}


def elementwise(*names: str | None) -> bool:
    """Whether the activations `names` are all elementwise."""
    return all(name in ELEMENTWISE for name in names)


def activation_side_by_side(name: str | None, semantics: Semantics, units: int) -> Activation:
    """The in-place activation `name` over gates of `units` columns each, side by side on the last
    axis (a GRU's z and r, an LSTM's i and f): one pass where it is elementwise, else gate by gate."""
    act = activation_in_place(name, semantics)
    if name in ELEMENTWISE:
        return act

    def gate_by_gate(v: np.ndarray) -> np.ndarray:
        for start in range(0, v.shape[-1], units):
            act(v[..., start : start + units])
        return v

    return gate_by_gate
