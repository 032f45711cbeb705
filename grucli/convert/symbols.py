"""What the converters share: the tensors of the graph being built, the error that names what cannot
be written, and how each Keras activation is written in ONNX.

May import: numpy, model/ (semantics), errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from grucli.errors import GrucliError
from grucli.model.records import RawLayer
from grucli.model.semantics import KERAS2, Semantics


class ConvertError(GrucliError):
    """The model holds something grucli cannot write as ONNX that computes the same (the message names it)."""


FLOAT, INT64, INT32, BOOL = "float32", "int64", "int32", "bool"  # the element types convert's tensors have


@dataclass(frozen=True)
class Symbol:
    """A tensor of the graph being built: its ONNX name, rank (batch axis included) and element
    type, and the Keras mask it carries, as Keras passes masks from layer to layer: the name of a
    bool (batch, time) tensor, or None."""

    name: str
    rank: int
    mask: str | None = None
    dtype: str = FLOAT

    def with_mask(self, mask: str | None) -> Symbol:
        return replace(self, mask=mask)


ELEMENTWISE_OPS: Mapping[str, tuple[str, dict[str, Any]]] = {
    "tanh": ("Tanh", {}),
    "sigmoid": ("Sigmoid", {}),
    "relu": ("Relu", {}),
    "elu": ("Elu", {"alpha": 1.0}),
    "selu": ("Selu", {}),
    "softsign": ("Softsign", {}),
    "softplus": ("Softplus", {}),
    "exponential": ("Exp", {}),
    "softmax": ("Softmax", {"axis": -1}),
}


# hard_sigmoid(v) = clip(alpha·v + beta, 0, 1): Keras 1/2 and tf.keras 2 against Keras 3.
HARD_SIGMOID: Mapping[Semantics, tuple[float, float]] = {KERAS2: (0.2, 0.5), Semantics.KERAS3: (1.0 / 6.0, 0.5)}


# The activations ONNX's GRU, LSTM and RNN apply inside the step, with the alpha and beta they take.
RECURRENT_ACTIVATIONS: Mapping[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "tanh": ("Tanh", (), ()),
    "sigmoid": ("Sigmoid", (), ()),
    "relu": ("Relu", (), ()),
    "linear": ("Affine", (1.0,), (0.0,)),
    "softsign": ("Softsign", (), ()),
    "softplus": ("Softplus", (), ()),
    "elu": ("Elu", (1.0,), ()),
}


def one_tensor(layer: RawLayer, path: str, x: Any) -> Symbol:
    if not isinstance(x, Symbol):
        raise ConvertError(f"layer {path} ({layer.class_name}) is called on {x!r}; expected one tensor")
    return x


def tensors(layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = x if isinstance(x, list) else [x]
    if not all(isinstance(v, Symbol) for v in values):
        raise ConvertError(f"layer {path} ({layer.class_name}) is called on {x!r}; expected tensors")
    return values
