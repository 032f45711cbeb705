"""Keras 3 operations (`keras.ops` calls saved in functional models) replayed in NumPy.

Keras 3 saves `g * 2 + 1`, `keras.ops.maximum(g, 0)` and the NotEqual/Any/LogicalOr operations
that compute masks as entries of the layer graph whose module is `keras.src.ops.*`. Each is run
from its whole call: positional arguments (tensors or numbers) and its own settings (`axis`,
`keepdims`, `dtype`); anything it does not use is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grucli.engine.activations import activation
from grucli.engine.tensor import Tensor
from grucli.errors import ReplayError
from grucli.model.operations import index_key, operation_settings
from grucli.model.records import RawLayer
from grucli.model.semantics import KERAS3
from grucli.model.tf_functions import TF_SIGNATURES, TfSignature, bind, slice_spec_key


@dataclass(frozen=True)
class Operation:
    """How the replay runs one `keras.ops` call saved in a Keras 3 functional model."""

    arity: int  # positional arguments, each a tensor or a number (a list, for `takes_list`)
    settings: tuple[str, ...]  # the op's own config keys it reads (besides `name`)
    compute: Callable[[list[Any], Mapping[str, Any]], Any]
    takes_list: bool = False  # one positional argument: a list of tensors (concatenate)
    required: tuple[str, ...] = ()  # settings without a default
    index_argument: int | None = None  # the position of an indexing key (`x[:, -1]`), not a tensor


def run_operation(layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Tensor:
    """A Keras 3 operation saved in a functional model (`g * 2 + 1`, `keras.ops.maximum(g, 0)`, and
    the NotEqual/Any/LogicalOr ops Keras 3 saves to compute masks). Every argument and setting is
    used or refused by name."""
    name = layer.class_name
    if name not in OPERATIONS:
        known = ", ".join(sorted(OPERATIONS))
        raise ReplayError(f"layer {path} is the operation {layer.module}.{name}, which the replay cannot run; it runs: {known}")
    operation = OPERATIONS[name]
    settings = operation_settings(layer, path, operation.settings, operation.arity, args, kwargs, ReplayError, "the replay")
    if operation.takes_list:
        if not isinstance(args[0], list) or not args[0]:
            raise ReplayError(f"operation {path} ({name}) is called on {args[0]!r}; expected a list of tensors")
        operands = [_operand(arg, path, name) for arg in args[0]]
    else:
        operands = [
            _index_key(arg, f"operation {path} ({name})") if position == operation.index_argument else _operand(arg, path, name)
            for position, arg in enumerate(args)
        ]
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
    if axis is not None and not (
        (isinstance(axis, int) and not isinstance(axis, bool)) or (isinstance(axis, list) and all(isinstance(a, int) for a in axis))
    ):
        raise ReplayError(f"operation {path} ({name}) has axis={axis!r}; expected an integer, a list of them or null")
    if "keepdims" in settings and not isinstance(settings["keepdims"], bool):
        raise ReplayError(f"operation {path} ({name}) has keepdims={settings['keepdims']!r}; expected true or false")
    if settings.get("initial") is not None:
        raise ReplayError(f"operation {path} ({name}) has initial={settings['initial']!r}; the replay runs it without one")
    for flag in ("sparse", "ragged"):
        if settings.get(flag):
            raise ReplayError(f"operation {path} ({name}) has {flag}={settings[flag]!r}; the replay runs dense tensors only")
    dtype = settings.get("dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in NUMPY_DTYPES):
        raise ReplayError(f"operation {path} ({name}) has dtype={dtype!r}; expected one of {', '.join(NUMPY_DTYPES)}")


def _index_key(value: Any, where: str) -> Any:
    return index_key(value, where, ReplayError, "the replay", lambda item: isinstance(item, Tensor))


def _operand(value: Any, path: str, name: str) -> np.ndarray | int | float | bool:
    if isinstance(value, Tensor):
        return value.value
    if not isinstance(value, (int, float, bool)):
        raise ReplayError(f"operation {path} ({name}) has the argument {value!r}; expected a tensor or a number")
    return value


def _axis(settings: Mapping[str, Any]) -> int | tuple[int, ...] | None:
    axis = settings.get("axis")
    return tuple(axis) if isinstance(axis, list) else axis


def _softmax_axis(settings: Mapping[str, Any]) -> int | tuple[int, ...]:
    axis = settings.get("axis", -1)
    return tuple(axis) if isinstance(axis, list) else -1 if axis is None else axis


def _binary(function: Callable[[Any, Any], Any]) -> Operation:
    return Operation(2, (), lambda operands, settings: function(operands[0], operands[1]))


def _reduction(function: Callable[..., Any]) -> Operation:
    # keras.ops.max and min save `initial` (None unless given), which _check_settings lets through only as None.
    return Operation(
        1,
        ("axis", "keepdims", "initial"),
        lambda operands, settings: function(operands[0], axis=_axis(settings), keepdims=bool(settings.get("keepdims", False))),
    )


def _unary(function: Callable[[Any], Any], settings: tuple[str, ...] = ()) -> Operation:
    return Operation(1, settings, lambda operands, given: function(operands[0]))


def _softmax(x: np.ndarray, axis: int | tuple[int, ...], log: bool = False) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    log_total = np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return shifted - log_total if log else np.exp(shifted - log_total)


def _gelu(x: np.ndarray, approximate: bool) -> np.ndarray:
    if approximate:  # keras.ops.gelu's default
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[float])(x / np.sqrt(2.0)))


def _elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _like(fill: int) -> Operation:
    def compute(operands: list[Any], settings: Mapping[str, Any]) -> np.ndarray:
        dtype = settings.get("dtype")
        return np.full_like(operands[0], fill, dtype=NUMPY_DTYPES[dtype] if dtype else None)

    return Operation(1, ("dtype",), compute)


NUMPY_DTYPES: Mapping[str, type] = {
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "bool": np.bool_,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
}

# `keras.ops` (and the Python operators that call them) by their saved class names.
OPERATIONS: Mapping[str, Operation] = {
    "Add": _binary(np.add),
    "Subtract": _binary(np.subtract),
    "Multiply": _binary(np.multiply),
    "Divide": _binary(np.true_divide),
    "TrueDivide": _binary(np.true_divide),
    "Power": _binary(np.power),
    "Maximum": _binary(np.maximum),
    "Minimum": _binary(np.minimum),
    "Equal": _binary(np.equal),
    "NotEqual": _binary(np.not_equal),
    "Greater": _binary(np.greater),
    "GreaterEqual": _binary(np.greater_equal),
    "Less": _binary(np.less),
    "LessEqual": _binary(np.less_equal),
    "LogicalAnd": _binary(np.logical_and),
    "LogicalOr": _binary(np.logical_or),
    "LogicalNot": Operation(1, (), lambda operands, settings: np.logical_not(operands[0])),
    "Any": _reduction(np.any),
    "All": _reduction(np.all),
    "Mean": _reduction(np.mean),
    "Sum": _reduction(np.sum),
    "Max": _reduction(np.max),
    "Min": _reduction(np.min),
    "ExpandDims": Operation(1, ("axis",), lambda operands, settings: np.expand_dims(operands[0], settings["axis"]), required=("axis",)),
    "ZerosLike": _like(0),
    "OnesLike": _like(1),
    "ConvertToTensor": Operation(
        1,
        ("dtype", "sparse", "ragged"),
        lambda operands, settings: np.asarray(operands[0], dtype=NUMPY_DTYPES[settings["dtype"]] if settings.get("dtype") else None),
    ),
    "Cast": Operation(
        1, ("dtype",), lambda operands, settings: np.asarray(operands[0]).astype(NUMPY_DTYPES[settings["dtype"]]), required=("dtype",)
    ),
    "Concatenate": Operation(
        1, ("axis",), lambda operands, settings: np.concatenate(operands, axis=settings.get("axis", 0)), takes_list=True
    ),
    "Stack": Operation(1, ("axis",), lambda operands, settings: np.stack(operands, axis=settings.get("axis", 0)), takes_list=True),
    "GetItem": Operation(2, (), lambda operands, settings: np.asarray(operands[0])[operands[1]], index_argument=1),
    "Reshape": Operation(
        1, ("newshape",), lambda operands, settings: np.reshape(operands[0], tuple(settings["newshape"])), required=("newshape",)
    ),
    "Transpose": Operation(
        1,
        ("axes",),
        lambda operands, settings: np.transpose(operands[0], None if settings.get("axes") is None else tuple(settings["axes"])),
    ),
    "Squeeze": Operation(1, ("axis",), lambda operands, settings: np.squeeze(operands[0], axis=_axis(settings))),
    "Matmul": _binary(np.matmul),
    "Where": Operation(3, (), lambda operands, settings: np.where(np.asarray(operands[0], dtype=bool), operands[1], operands[2])),
    # Elementwise math (keras.ops.numpy) and activations (keras.ops.nn, Keras 3's definitions).
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Sqrt": _unary(np.sqrt),
    "Square": _unary(np.square),
    "Absolute": _unary(np.abs),
    "Abs": _unary(np.abs),
    "Negative": _unary(np.negative),
    "Sign": _unary(np.sign),
    "Reciprocal": _unary(np.reciprocal),
    "Log1p": _unary(np.log1p),
    "Expm1": _unary(np.expm1),
    "Floor": _unary(np.floor),
    "Ceil": _unary(np.ceil),
    "Sin": _unary(np.sin),
    "Cos": _unary(np.cos),
    "Tanh": _unary(np.tanh),
    **{
        name: _unary(activation(function, KERAS3))
        for name, function in {
            "Sigmoid": "sigmoid",
            "Relu": "relu",
            "Relu6": "relu6",
            "Softplus": "softplus",
            "Softsign": "softsign",
            "Silu": "silu",
            "Swish": "silu",
            "LogSigmoid": "log_sigmoid",
            "Selu": "selu",
            "Mish": "mish",
            "HardSigmoid": "hard_sigmoid",
            "HardSilu": "hard_silu",
            "HardSwish": "hard_silu",
        }.items()
    },
    "Softmax": Operation(1, ("axis",), lambda operands, settings: _softmax(operands[0], _softmax_axis(settings))),
    "LogSoftmax": Operation(1, ("axis",), lambda operands, settings: _softmax(operands[0], _softmax_axis(settings), log=True)),
    "Elu": Operation(1, ("alpha",), lambda operands, settings: _elu(operands[0], float(settings.get("alpha", 1.0)))),
    "LeakyRelu": Operation(
        1,
        ("negative_slope",),
        lambda operands, settings: np.where(operands[0] >= 0, operands[0], float(settings.get("negative_slope", 0.2)) * operands[0]),
    ),
    "Gelu": Operation(1, ("approximate",), lambda operands, settings: _gelu(operands[0], bool(settings.get("approximate", True)))),
}


# --- tf.keras 2: TFOpLambda / SlicingOpLambda ---------------------------------------------------------
#
# tf.keras 2 saves `tf.math.reduce_mean(g, axis=1)`, `g[:, -1]` and `1.0 - g` in functional models
# as TFOpLambda / SlicingOpLambda layers whose config names the TensorFlow function
# (`math.reduce_mean`) and whose call holds its arguments: the first positional (a tensor, a list
# of tensors, or a constant), the rest as keywords. They are bound to the function's parameters
# the way Python binds a call; a parameter the replay does not run, at a value that changes the
# result, is refused by name.


@dataclass(frozen=True)
class TfFunction:
    """How the replay runs one TensorFlow function saved in a TFOpLambda: its signature
    (model/tf_functions.py) and what it computes from the bound arguments."""

    signature: TfSignature
    compute: Callable[..., Any]  # takes the bound parameters as keywords


def run_tf_function(layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Tensor:
    """A TFOpLambda or SlicingOpLambda call, bound to its TensorFlow function's parameters."""
    function_name = layer.config.get("function")
    if not isinstance(function_name, str) or function_name not in TF_FUNCTIONS:
        known = ", ".join(f"tf.{name}" for name in sorted(TF_FUNCTIONS))
        raise ReplayError(f"layer {path} ({layer.class_name}) calls tf.{function_name}, which the replay cannot run; it runs: {known}")
    function = TF_FUNCTIONS[function_name]
    where = f"{path} (tf.{function_name})"
    bound = bind(function.signature, where, args, kwargs, ReplayError, lambda value: isinstance(value, Tensor))
    values = {
        key: [_operand(item, where, key) for item in value]
        if key == function.signature.takes_list
        else value.value
        if isinstance(value, Tensor)
        else value
        for key, value in bound.items()
    }
    try:
        with np.errstate(all="ignore"):
            value = function.compute(**values)
    except (ValueError, np.exceptions.AxisError) as exc:  # numpy's words for shapes and axes that do not fit
        raise ReplayError(f"layer {path} (tf.{function_name}) cannot run on {_shapes(values)}: {exc}") from None
    # A TFOpLambda passes no mask on (tf-keras computes none for it), like Keras 3 operations.
    return Tensor(np.asarray(value))


def _shapes(bound: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {np.shape(value)}" for key, value in bound.items() if isinstance(value, np.ndarray))


def _tf_axis(axis: Any) -> Any:
    return tuple(axis) if isinstance(axis, list) else axis


def _tf_reduction(function: Callable[..., Any]) -> Callable[..., Any]:
    return lambda input_tensor, axis, keepdims: function(input_tensor, axis=_tf_axis(axis), keepdims=bool(keepdims))


def _tf_matmul(a: np.ndarray, b: np.ndarray, transpose_a: bool, transpose_b: bool, **fixed: Any) -> np.ndarray:
    return np.matmul(np.swapaxes(a, -1, -2) if transpose_a else a, np.swapaxes(b, -1, -2) if transpose_b else b)


def _tf_squeeze(input: np.ndarray, axis: Any, squeeze_dims: Any) -> np.ndarray:
    return np.squeeze(input, axis=_tf_axis(axis if axis is not None else squeeze_dims))


def _tf_transpose(a: np.ndarray, perm: Any, conjugate: bool) -> np.ndarray:
    return np.transpose(a, None if perm is None else tuple(perm))


# TensorFlow's functions bind their saved arguments by name: each NumPy function is wrapped in one
# whose parameters carry TensorFlow's names (x, y; features).


def _of_x_y(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def compute(x: Any, y: Any) -> Any:
        return function(x, y)

    return compute


def _of_x(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def compute(x: Any) -> Any:
        return function(x)

    return compute


def _of_features(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def compute(features: Any) -> Any:
        return function(features)

    return compute


_TF_BINARY: Mapping[str, Callable[[Any, Any], Any]] = {
    "__operators__.add": np.add,
    "math.add": np.add,
    "math.subtract": np.subtract,
    "math.multiply": np.multiply,
    "math.truediv": np.true_divide,
    "math.divide": np.true_divide,
    "math.pow": np.power,
    "math.maximum": np.maximum,
    "math.minimum": np.minimum,
    "math.squared_difference": lambda x, y: np.square(x - y),
    "math.equal": np.equal,
    "math.not_equal": np.not_equal,
    "math.greater": np.greater,
    "math.greater_equal": np.greater_equal,
    "math.less": np.less,
    "math.less_equal": np.less_equal,
    "math.logical_and": np.logical_and,
    "math.logical_or": np.logical_or,
}


_TF_UNARY: Mapping[str, Callable[[Any], Any]] = {
    "math.logical_not": np.logical_not,
    "math.exp": np.exp,
    "math.log": np.log,
    "math.sqrt": np.sqrt,
    "math.square": np.square,
    "math.abs": np.abs,
    "math.negative": np.negative,
    "math.sign": np.sign,
    "math.reciprocal": np.reciprocal,
    "math.log1p": np.log1p,
    "math.expm1": np.expm1,
    "math.tanh": np.tanh,
    "math.sigmoid": activation("sigmoid", KERAS3),
    "math.floor": np.floor,
    "math.ceil": np.ceil,
}


_TF_ACTIVATIONS: Mapping[str, str] = {
    "nn.relu": "relu",
    "nn.relu6": "relu6",
    "nn.elu": "elu",
    "nn.selu": "selu",
    "math.softsign": "softsign",
    "math.softplus": "softplus",
}


_TF_REDUCTIONS: Mapping[str, Callable[..., Any]] = {
    "math.reduce_mean": np.mean,
    "math.reduce_sum": np.sum,
    "math.reduce_max": np.max,
    "math.reduce_min": np.min,
    "math.reduce_any": np.any,
    "math.reduce_all": np.all,
    "math.reduce_prod": np.prod,
}


_TF_COMPUTE: Mapping[str, Callable[..., Any]] = {
    **{name: _of_x_y(function) for name, function in _TF_BINARY.items()},
    **{name: _of_x(function) for name, function in _TF_UNARY.items()},
    **{name: _of_features(activation(function, KERAS3)) for name, function in _TF_ACTIVATIONS.items()},
    "nn.silu": lambda features, beta: features * activation("sigmoid", KERAS3)(beta * features),
    "nn.leaky_relu": lambda features, alpha: np.where(features >= 0, features, alpha * features),
    "nn.gelu": lambda features, approximate: _gelu(features, bool(approximate)),
    "nn.softmax": lambda logits, axis: _softmax(logits, -1 if axis is None else axis),
    "nn.log_softmax": lambda logits, axis: _softmax(logits, -1 if axis is None else axis, log=True),
    **{name: _tf_reduction(function) for name, function in _TF_REDUCTIONS.items()},
    "reshape": lambda tensor, shape: np.reshape(tensor, tuple(shape)),
    "transpose": _tf_transpose,
    "compat.v1.transpose": _tf_transpose,
    "expand_dims": lambda input, axis: np.expand_dims(input, axis),
    "squeeze": _tf_squeeze,
    "compat.v1.squeeze": _tf_squeeze,
    "concat": lambda values, axis: np.concatenate(values, axis=axis),
    "stack": lambda values, axis: np.stack(values, axis=axis),
    "linalg.matmul": _tf_matmul,
    "where": lambda condition, x, y: _tf_where(condition, x, y),
    "cast": lambda x, dtype: np.asarray(x).astype(_tf_dtype(dtype)),
    "__operators__.getitem": lambda tensor, slice_spec: np.asarray(tensor)[
        _index_key(slice_spec_key(slice_spec), "tf.__operators__.getitem")
    ],
}

TF_FUNCTIONS: Mapping[str, TfFunction] = {name: TfFunction(TF_SIGNATURES[name], compute) for name, compute in _TF_COMPUTE.items()}


def _tf_where(condition: np.ndarray, x: Any, y: Any) -> np.ndarray:
    if x is None or y is None:  # tf.where(condition) alone returns indices, a shape only known at run time
        raise ReplayError("tf.where is called without x and y; the replay runs tf.where(condition, x, y)")
    return np.where(np.asarray(condition, dtype=bool), x, y)


def _tf_dtype(dtype: Any) -> type:
    if not isinstance(dtype, str) or dtype not in NUMPY_DTYPES:
        raise ReplayError(f"tf.cast to {dtype!r}; the replay casts to {', '.join(NUMPY_DTYPES)}")
    return NUMPY_DTYPES[dtype]
