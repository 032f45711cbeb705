"""Keras 3 operations (`keras.ops` calls saved in functional models) replayed in NumPy.

Keras 3 saves `g * 2 + 1`, `keras.ops.maximum(g, 0)` and the NotEqual/Any/LogicalOr operations
that compute masks as entries of the layer graph whose module is `keras.src.ops.*`. Each is run
from its whole call: positional arguments (tensors or numbers) and its own settings (`axis`,
`keepdims`, `dtype`); anything it does not use is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from grucli.model import RawLayer
from grucli.replay import ReplayError
from grucli.tensor import Tensor


@dataclass(frozen=True)
class Operation:
    """How the replay runs one `keras.ops` call saved in a Keras 3 functional model."""

    arity: int  # positional arguments, each a tensor or a number (a list, for `takes_list`)
    settings: tuple[str, ...]  # the op's own config keys it reads (besides `name`)
    compute: Callable[[list[Any], Mapping[str, Any]], Any]
    takes_list: bool = False  # one positional argument: a list of tensors (concatenate)
    required: tuple[str, ...] = ()  # settings without a default


def run_operation(layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Tensor:
    """A Keras 3 operation saved in a functional model (`g * 2 + 1`, `keras.ops.maximum(g, 0)`, and
    the NotEqual/Any/LogicalOr ops Keras 3 saves to compute masks). Every argument and setting is
    used or refused by name."""
    name = layer.class_name
    if name not in OPERATIONS:
        known = ", ".join(sorted(OPERATIONS))
        raise ReplayError(f"layer {path} is the operation {layer.module}.{name}, which the replay cannot run; it runs: {known}")
    operation = OPERATIONS[name]
    unused = sorted(set(layer.config) - {"name", *operation.settings})
    if unused:
        raise ReplayError(f"operation {path} ({name}) has the setting {unused[0]}={layer.config[unused[0]]!r}, which the replay does not use")
    if kwargs:
        raise ReplayError(f"operation {path} ({name}) is called with {', '.join(sorted(kwargs))}, which the replay does not support")
    if len(args) != operation.arity:
        raise ReplayError(f"operation {path} ({name}) is called with {len(args)} arguments; expected {operation.arity}")
    if operation.takes_list:
        if not isinstance(args[0], list) or not args[0]:
            raise ReplayError(f"operation {path} ({name}) is called on {args[0]!r}; expected a list of tensors")
        operands = [_operand(arg, path, name) for arg in args[0]]
    else:
        operands = [_operand(arg, path, name) for arg in args]
    settings = {key: layer.config[key] for key in operation.settings if key in layer.config}
    missing = [key for key in operation.required if settings.get(key) is None]
    if missing:
        raise ReplayError(f"operation {path} ({name}) has no {missing[0]} setting; expected one")
    _check_settings(path, name, settings)
    try:
        with np.errstate(all="ignore"):
            value = operation.compute(operands, settings)
    except (ValueError, np.exceptions.AxisError) as exc:  # numpy's words for shapes and axes that do not fit
        shapes = [np.shape(operand) for operand in operands]
        raise ReplayError(f"operation {path} ({name}) cannot run on shapes {shapes} with {settings or 'no settings'}: {exc}") from None
    # Keras 3 operations do not pass a mask on (only layers do): `e * 2` after a masking
    # Embedding feeds the next layer unmasked, and so does the replay.
    return Tensor(np.asarray(value))


def _check_settings(path: str, name: str, settings: Mapping[str, Any]) -> None:
    axis = settings.get("axis")
    if axis is not None and not (isinstance(axis, int) and not isinstance(axis, bool)
                                 or isinstance(axis, list) and all(isinstance(a, int) for a in axis)):
        raise ReplayError(f"operation {path} ({name}) has axis={axis!r}; expected an integer, a list of them or null")
    if "keepdims" in settings and not isinstance(settings["keepdims"], bool):
        raise ReplayError(f"operation {path} ({name}) has keepdims={settings['keepdims']!r}; expected true or false")
    for flag in ("sparse", "ragged"):
        if settings.get(flag):
            raise ReplayError(f"operation {path} ({name}) has {flag}={settings[flag]!r}; the replay runs dense tensors only")
    dtype = settings.get("dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in NUMPY_DTYPES):
        raise ReplayError(f"operation {path} ({name}) has dtype={dtype!r}; expected one of {', '.join(NUMPY_DTYPES)}")


def _operand(value: Any, path: str, name: str) -> np.ndarray | int | float | bool:
    if isinstance(value, Tensor):
        return value.value
    if not isinstance(value, (int, float, bool)):
        raise ReplayError(f"operation {path} ({name}) has the argument {value!r}; expected a tensor or a number")
    return value


def _axis(settings: Mapping[str, Any]) -> int | tuple[int, ...] | None:
    axis = settings.get("axis")
    return tuple(axis) if isinstance(axis, list) else axis


def _binary(function: Callable[[Any, Any], Any]) -> Operation:
    return Operation(2, (), lambda operands, settings: function(operands[0], operands[1]))


def _reduction(function: Callable[..., Any]) -> Operation:
    return Operation(1, ("axis", "keepdims"), lambda operands, settings: function(
        operands[0], axis=_axis(settings), keepdims=bool(settings.get("keepdims", False))))


def _like(fill: int) -> Operation:
    def compute(operands: list[Any], settings: Mapping[str, Any]) -> np.ndarray:
        dtype = settings.get("dtype")
        return np.full_like(operands[0], fill, dtype=NUMPY_DTYPES[dtype] if dtype else None)

    return Operation(1, ("dtype",), compute)


NUMPY_DTYPES: Mapping[str, type] = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64, "bool": np.bool_,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8,
}

# `keras.ops` (and the Python operators that call them) by their saved class names.
OPERATIONS: Mapping[str, Operation] = {
    "Add": _binary(np.add), "Subtract": _binary(np.subtract), "Multiply": _binary(np.multiply),
    "Divide": _binary(np.true_divide), "TrueDivide": _binary(np.true_divide), "Power": _binary(np.power),
    "Maximum": _binary(np.maximum), "Minimum": _binary(np.minimum),
    "Equal": _binary(np.equal), "NotEqual": _binary(np.not_equal), "Greater": _binary(np.greater),
    "GreaterEqual": _binary(np.greater_equal), "Less": _binary(np.less), "LessEqual": _binary(np.less_equal),
    "LogicalAnd": _binary(np.logical_and), "LogicalOr": _binary(np.logical_or),
    "LogicalNot": Operation(1, (), lambda operands, settings: np.logical_not(operands[0])),
    "Any": _reduction(np.any), "All": _reduction(np.all), "Mean": _reduction(np.mean), "Sum": _reduction(np.sum),
    "Max": _reduction(np.max), "Min": _reduction(np.min),
    "ExpandDims": Operation(1, ("axis",), lambda operands, settings: np.expand_dims(operands[0], _axis(settings)), required=("axis",)),
    "ZerosLike": _like(0), "OnesLike": _like(1),
    "ConvertToTensor": Operation(1, ("dtype", "sparse", "ragged"), lambda operands, settings: np.asarray(
        operands[0], dtype=NUMPY_DTYPES[settings["dtype"]] if settings.get("dtype") else None)),
    "Cast": Operation(1, ("dtype",), lambda operands, settings: np.asarray(operands[0]).astype(NUMPY_DTYPES[settings["dtype"]]),
                      required=("dtype",)),
    "Concatenate": Operation(1, ("axis",), lambda operands, settings: np.concatenate(operands, axis=settings.get("axis", 0)),
                             takes_list=True),
}
