"""Keras 3 operations (`keras.ops` calls saved in functional models: `g * 2 + 1`, `x[:, -1]`,
`keras.ops.maximum(g, 0)`, the NotEqual that computes an Embedding's mask) written as ONNX, the
same ones the replay runs (engine/operations.py), each from its whole call; anything else is
refused by name.

Element types follow Keras: a number takes the type of the tensor it meets, a comparison gives
bool, true division gives float32, and tensors of different types meet as float32. Operations
pass no mask on, as in Keras 3.

May import: numpy, convert/symbols, model/, errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grucli.convert.builder import GraphBuilder
from grucli.convert.symbols import BOOL, FLOAT, INT64, ConvertError, Symbol
from grucli.model.operations import index_key, operation_settings
from grucli.model.records import RawLayer
from grucli.model.tf_functions import TF_SIGNATURES, bind, slice_spec_key

Operand = Any  # a Symbol or a Python number


@dataclass(frozen=True)
class Operation:
    """How convert writes one `keras.ops` call."""

    arity: int  # positional arguments (one list of tensors with takes_list)
    settings: tuple[str, ...]  # the op's config keys it reads (besides name)
    write: Callable[[GraphBuilder, list[Operand], Mapping[str, Any], str], Symbol]
    takes_list: bool = False


def convert_operation(b: GraphBuilder, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Symbol:
    name = layer.class_name
    operation = OPERATIONS.get(name)
    if operation is None:
        raise ConvertError(
            f"layer {path} is the operation {layer.module}.{name}, which convert does not write; it writes: {', '.join(sorted(OPERATIONS))}"
        )
    settings = operation_settings(layer, path, operation.settings, operation.arity, args, kwargs, ConvertError, "convert")
    operands = list(args[0]) if operation.takes_list else list(args)
    if operation.takes_list and (not isinstance(args[0], list) or not all(isinstance(a, Symbol) for a in operands)):
        raise ConvertError(f"operation {path} ({name}) is called on {args[0]!r}; expected a list of tensors")
    if name != "GetItem" and not all(isinstance(o, Symbol) or _is_number(o) for o in operands):
        raise ConvertError(f"operation {path} ({name}) has the arguments {operands!r}; expected tensors or numbers")
    return operation.write(b, operands, settings, f"operation {path} ({name})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, bool))


# --- element types -------------------------------------------------------------------------------------

_ONNX_TYPES = {FLOAT: 1, INT64: 7, BOOL: 9}  # TensorProto.FLOAT, INT64, BOOL
_NUMPY = {FLOAT: np.float32, INT64: np.int64, BOOL: np.bool_}
# Keras dtypes convert writes, by the element type it gives them (integers as int64: the values are the same).
_DTYPES = {
    "float32": FLOAT,
    "float16": FLOAT,
    "float64": FLOAT,
    "int32": INT64,
    "int64": INT64,
    "int16": INT64,
    "int8": INT64,
    "uint8": INT64,
    "bool": BOOL,
}


def _cast(b: GraphBuilder, x: Symbol, dtype: str) -> Symbol:
    return x if x.dtype == dtype else Symbol(b.one("Cast", [x.name], to=_ONNX_TYPES[dtype]), x.rank, dtype=dtype)


def _operands(b: GraphBuilder, operands: list[Operand], where: str, dtype: str | None = None) -> list[Symbol]:
    """Tensors of one element type (`dtype`, or the tensors' own; float32 where they differ), numbers as constants of it."""
    symbols = [o for o in operands if isinstance(o, Symbol)]
    if not symbols:
        raise ConvertError(f"{where} is called on numbers only; expected a tensor")
    if dtype is None:
        types = {s.dtype for s in symbols}
        dtype = types.pop() if len(types) == 1 else FLOAT
        if dtype != FLOAT and any(isinstance(o, float) for o in operands):
            dtype = FLOAT  # an integer tensor meeting 0.5 is computed in float32
    rank = max(s.rank for s in symbols)
    return [
        _cast(b, o, dtype) if isinstance(o, Symbol) else Symbol(b.constant_of(np.asarray(o, _NUMPY[dtype]), "number"), rank, dtype=dtype)
        for o in operands
    ]


# --- writers -------------------------------------------------------------------------------------------


def _binary(op: str, result: str | None = None, dtype: str | None = None) -> Operation:
    """An elementwise operation of two operands, broadcast as NumPy does; `result` the element type it gives."""

    def write(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
        x, y = _operands(b, operands, where, dtype)
        return Symbol(b.one(op, [x.name, y.name]), max(x.rank, y.rank), dtype=result or x.dtype)

    return Operation(2, (), write)


def _unary(build: Callable[[GraphBuilder, str], str], dtype: str = FLOAT) -> Operation:
    def write(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
        (x,) = _operands(b, operands, where, dtype)
        return Symbol(build(b, x.name), x.rank, dtype=x.dtype)

    return Operation(1, (), write)


def _op(name: str, **attributes: Any) -> Callable[[GraphBuilder, str], str]:
    return lambda b, x: b.one(name, [x], **attributes)


def _axes(settings: Mapping[str, Any], rank: int, where: str, required: bool = False) -> list[int] | None:
    axis = settings.get("axis")
    if axis is None:
        if required:
            raise ConvertError(f"{where} has no axis; convert writes it with one")
        return None
    axes = axis if isinstance(axis, list) else [axis]
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ConvertError(f"{where} has axis={axis!r}; expected an integer or a list of them")
    return [a % rank for a in axes]


def _reduction(op: str, logical: bool = False) -> Operation:
    """Sum, Mean, Max, Min over `axis` (every axis when None); Any and All as Max and Min of the values as 0/1."""

    def write(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
        (x,) = _operands(b, operands, where, FLOAT)
        if settings.get("initial") is not None:  # keras.ops.max and min save initial=None unless given
            raise ConvertError(f"{where} has initial={settings['initial']!r}; convert writes it without one")
        keepdims = settings.get("keepdims", False)
        if not isinstance(keepdims, bool):
            raise ConvertError(f"{where} has keepdims={keepdims!r}; expected true or false")
        axes = _axes(settings, x.rank, where)
        every = list(range(x.rank)) if axes is None else axes
        if logical:  # any / all: nonzero values
            x = Symbol(b.one("Cast", [b.one("Cast", [x.name], to=_ONNX_TYPES[BOOL])], to=_ONNX_TYPES[FLOAT]), x.rank)
        if op == "ReduceSum":
            y = b.one(op, [x.name, b.int_constant(every, "axes")], keepdims=int(keepdims))
        else:
            y = b.one(op, [x.name], axes=every, keepdims=int(keepdims))
        rank = x.rank if keepdims else x.rank - len(set(every))
        if logical:
            return Symbol(b.one("Cast", [y], to=_ONNX_TYPES[BOOL]), rank, dtype=BOOL)
        return Symbol(y, rank)

    return Operation(1, ("axis", "keepdims", "initial"), write)


def _expand_dims(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, operands, where)
    axis = settings.get("axis")
    given = axis if isinstance(axis, list) else [axis]
    axes = [a for a in given if isinstance(a, int) and not isinstance(a, bool)]
    if len(axes) != len(given):
        raise ConvertError(f"{where} has axis={axis!r}; expected an integer or a list of them")
    rank = x.rank + len(axes)
    return Symbol(b.one("Unsqueeze", [x.name, b.int_constant([a % rank for a in axes], "axes")]), rank, dtype=x.dtype)


def _squeeze(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, operands, where)
    axes = _axes(settings, x.rank, where, required=True)
    assert axes is not None
    return Symbol(b.one("Squeeze", [x.name, b.int_constant(axes, "axes")]), x.rank - len(axes), dtype=x.dtype)


def _filled(fill: int) -> Operation:
    def write(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
        (x,) = _operands(b, operands, where)
        dtype = _dtype(settings, where) or x.dtype
        value = b.onnx.numpy_helper.from_array(np.asarray([fill], _NUMPY[dtype]))
        return Symbol(b.one("ConstantOfShape", [b.one("Shape", [x.name])], value=value), x.rank, dtype=dtype)

    return Operation(1, ("dtype",), write)


def _dtype(settings: Mapping[str, Any], where: str) -> str | None:
    dtype = settings.get("dtype")
    if dtype is None:
        return None
    if dtype not in _DTYPES:
        raise ConvertError(f"{where} has dtype={dtype!r}; convert writes {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _cast_operation(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, operands, where)
    for flag in ("sparse", "ragged"):
        if settings.get(flag):
            raise ConvertError(f"{where} has {flag}={settings[flag]!r}; convert writes dense tensors")
    dtype = _dtype(settings, where)
    return x if dtype is None else _cast(b, x, dtype)


def _concatenate(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    values = _operands(b, operands, where)
    axis = settings.get("axis", 0)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ConvertError(f"{where} has axis={axis!r}; expected an integer")
    return Symbol(b.one("Concat", [v.name for v in values], axis=axis), values[0].rank, dtype=values[0].dtype)


def _stack(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    values = _operands(b, operands, where)
    axis = settings.get("axis", 0)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ConvertError(f"{where} has axis={axis!r}; expected an integer")
    rank = values[0].rank + 1
    expanded = [b.one("Unsqueeze", [v.name, b.int_constant([axis % rank], "axis")]) for v in values]
    return Symbol(b.one("Concat", expanded, axis=axis % rank), rank, dtype=values[0].dtype)


def _reshape(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, operands, where)
    shape = settings.get("newshape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and (d >= 1 or d == -1) for d in shape) or shape.count(-1) > 1:
        raise ConvertError(f"{where} has newshape={shape!r}; expected sizes, at most one of them -1")
    return Symbol(b.one("Reshape", [x.name, b.int_constant(shape, "shape")]), len(shape), dtype=x.dtype)


def _transpose(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, operands, where)
    axes = settings.get("axes")
    perm = list(reversed(range(x.rank))) if axes is None else [a % x.rank for a in axes]
    if sorted(perm) != list(range(x.rank)):
        raise ConvertError(f"{where} has axes={axes!r}; expected a permutation of the {x.rank} axes")
    return Symbol(b.one("Transpose", [x.name], perm=perm), x.rank, dtype=x.dtype)


def _where(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    condition, *values = operands
    if not isinstance(condition, Symbol):
        raise ConvertError(f"{where} has the condition {condition!r}; expected a tensor")
    x, y = (
        _operands(b, values, where) if any(isinstance(v, Symbol) for v in values) else _operands(b, [condition, *values], where, FLOAT)[1:]
    )
    test = _cast(b, condition, BOOL)
    return Symbol(b.one("Where", [test.name, x.name, y.name]), max(test.rank, x.rank, y.rank), dtype=x.dtype)


def _matmul(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    x, y = _operands(b, operands, where, FLOAT)
    return Symbol(b.one("MatMul", [x.name, y.name]), max(x.rank, y.rank) if min(x.rank, y.rank) > 1 else max(x.rank, y.rank) - 1)


def _get_item(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    """x[key] for keys of integers, slices (with steps), `...` and None (new axes)."""
    x, key = operands
    if not isinstance(x, Symbol):
        raise ConvertError(f"{where} indexes {x!r}; expected a tensor")
    checked = index_key(key, where, ConvertError, "convert", lambda item: isinstance(item, Symbol))
    items = list(checked) if isinstance(checked, tuple) else [checked]
    if items.count(Ellipsis) > 1:
        raise ConvertError(f"{where} indexes with more than one ...")
    explicit = sum(1 for item in items if item is not None and item is not Ellipsis)
    if explicit > x.rank:
        raise ConvertError(f"{where} indexes {explicit} axes of a rank-{x.rank} tensor")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + [slice(None)] * (x.rank - explicit) + items[at + 1 :]
    starts, ends, axes, steps, dropped, new_axes = [], [], [], [], [], []
    axis = 0  # the input axis the next item indexes
    out_axis = 0  # where that axis is in the output, once integers are dropped
    for item in items:
        if item is None:
            new_axes.append(out_axis)
            out_axis += 1
            continue
        if isinstance(item, int):
            starts.append(item)
            ends.append(item + 1 if item != -1 else 2**62)
            steps.append(1)
            axes.append(axis)
            dropped.append(axis)
        elif item != slice(None):
            step = 1 if item.step is None else item.step
            if step == 0:
                raise ConvertError(f"{where} slices with step 0")
            starts.append(item.start if item.start is not None else (0 if step > 0 else 2**62))
            ends.append(item.stop if item.stop is not None else (2**62 if step > 0 else -(2**62)))
            steps.append(step)
            axes.append(axis)
        if not isinstance(item, int):
            out_axis += 1
        axis += 1
    y = x.name
    if axes:
        y = b.one(
            "Slice",
            [
                y,
                b.int_constant(starts, "starts"),
                b.int_constant(ends, "ends"),
                b.int_constant(axes, "axes"),
                b.int_constant(steps, "steps"),
            ],
        )
    if dropped:
        y = b.one("Squeeze", [y, b.int_constant(dropped, "axes")])
    rank = x.rank - len(dropped)
    if new_axes:
        y = b.one("Unsqueeze", [y, b.int_constant(new_axes, "axes")])
        rank += len(new_axes)
    return Symbol(y, rank, dtype=x.dtype)


def _softmax(log: bool) -> Operation:
    def write(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
        (x,) = _operands(b, operands, where, FLOAT)
        axis = settings.get("axis", -1)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ConvertError(f"{where} has axis={axis!r}; convert writes one axis")
        return Symbol(b.one("LogSoftmax" if log else "Softmax", [x.name], axis=axis), x.rank)

    return Operation(1, ("axis",), write)


def _with_setting(key: str, default: float, build: Callable[[GraphBuilder, str, float], str]) -> Operation:
    def write(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
        (x,) = _operands(b, operands, where, FLOAT)
        return Symbol(build(b, x.name, float(settings.get(key, default))), x.rank)

    return Operation(1, (key,), write)


def _gelu(b: GraphBuilder, operands: list[Operand], settings: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, operands, where, FLOAT)
    half = b.one("Mul", [x.name, b.constant(np.float32(0.5), "half")])
    if bool(settings.get("approximate", True)):  # keras.ops.gelu's default: the tanh form
        cubic = b.one("Mul", [b.one("Mul", [b.one("Mul", [x.name, x.name]), x.name]), b.constant(np.float32(0.044715), "c")])
        inner = b.one("Mul", [b.one("Add", [x.name, cubic]), b.constant(np.float32(math.sqrt(2.0 / math.pi)), "c")])
        return Symbol(b.one("Mul", [half, b.one("Add", [b.one("Tanh", [inner]), b.constant(np.float32(1), "one")])]), x.rank)
    erf = b.one("Erf", [b.one("Mul", [x.name, b.constant(np.float32(1 / math.sqrt(2.0)), "c")])])
    return Symbol(b.one("Mul", [half, b.one("Add", [erf, b.constant(np.float32(1), "one")])]), x.rank)


def _plus_one(b: GraphBuilder, x: str) -> str:
    return b.one("Add", [x, b.constant(np.float32(1), "one")])


def _times_hard_sigmoid(b: GraphBuilder, x: str) -> str:
    return b.one("Mul", [x, b.one("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)])


OPERATIONS: Mapping[str, Operation] = {
    "Add": _binary("Add"),
    "Subtract": _binary("Sub"),
    "Multiply": _binary("Mul"),
    "Divide": _binary("Div", dtype=FLOAT),
    "TrueDivide": _binary("Div", dtype=FLOAT),
    "Power": _binary("Pow", dtype=FLOAT),
    "Maximum": _binary("Max"),
    "Minimum": _binary("Min"),
    "Equal": _binary("Equal", BOOL),
    "NotEqual": Operation(2, (), lambda b, o, s, w: _not(b, _binary("Equal", BOOL).write(b, o, s, w))),
    "Greater": _binary("Greater", BOOL),
    "GreaterEqual": _binary("GreaterOrEqual", BOOL),
    "Less": _binary("Less", BOOL),
    "LessEqual": _binary("LessOrEqual", BOOL),
    "LogicalAnd": _binary("And", BOOL, BOOL),
    "LogicalOr": _binary("Or", BOOL, BOOL),
    "LogicalNot": _unary(_op("Not"), BOOL),
    "Any": _reduction("ReduceMax", logical=True),
    "All": _reduction("ReduceMin", logical=True),
    "Mean": _reduction("ReduceMean"),
    "Sum": _reduction("ReduceSum"),
    "Max": _reduction("ReduceMax"),
    "Min": _reduction("ReduceMin"),
    "ExpandDims": Operation(1, ("axis",), _expand_dims),
    "Squeeze": Operation(1, ("axis",), _squeeze),
    "ZerosLike": _filled(0),
    "OnesLike": _filled(1),
    "ConvertToTensor": Operation(1, ("dtype", "sparse", "ragged"), _cast_operation),
    "Cast": Operation(1, ("dtype",), _cast_operation),
    "Concatenate": Operation(1, ("axis",), _concatenate, takes_list=True),
    "Stack": Operation(1, ("axis",), _stack, takes_list=True),
    "GetItem": Operation(2, (), _get_item),
    "Reshape": Operation(1, ("newshape",), _reshape),
    "Transpose": Operation(1, ("axes",), _transpose),
    "Matmul": Operation(2, (), _matmul),
    "Where": Operation(3, (), _where),
    "Exp": _unary(_op("Exp")),
    "Log": _unary(_op("Log")),
    "Sqrt": _unary(_op("Sqrt")),
    "Square": _unary(lambda b, x: b.one("Mul", [x, x])),
    "Absolute": _unary(_op("Abs")),
    "Abs": _unary(_op("Abs")),
    "Negative": _unary(_op("Neg")),
    "Sign": _unary(_op("Sign")),
    "Reciprocal": _unary(_op("Reciprocal")),
    "Log1p": _unary(lambda b, x: b.one("Log", [_plus_one(b, x)])),
    "Expm1": _unary(lambda b, x: b.one("Sub", [b.one("Exp", [x]), b.constant(np.float32(1), "one")])),
    "Floor": _unary(_op("Floor")),
    "Ceil": _unary(_op("Ceil")),
    "Sin": _unary(_op("Sin")),
    "Cos": _unary(_op("Cos")),
    "Tanh": _unary(_op("Tanh")),
    "Sigmoid": _unary(_op("Sigmoid")),
    "Relu": _unary(_op("Relu")),
    "Relu6": _unary(lambda b, x: b.one("Clip", [x, b.constant(np.float32(0), "zero"), b.constant(np.float32(6), "six")])),
    "Softplus": _unary(_op("Softplus")),
    "Softsign": _unary(_op("Softsign")),
    "Silu": _unary(lambda b, x: b.one("Mul", [x, b.one("Sigmoid", [x])])),
    "Swish": _unary(lambda b, x: b.one("Mul", [x, b.one("Sigmoid", [x])])),
    "LogSigmoid": _unary(lambda b, x: b.one("Neg", [b.one("Softplus", [b.one("Neg", [x])])])),
    "Selu": _unary(_op("Selu")),
    "Mish": _unary(lambda b, x: b.one("Mul", [x, b.one("Tanh", [b.one("Softplus", [x])])])),
    "HardSigmoid": _unary(_op("HardSigmoid", alpha=1.0 / 6.0, beta=0.5)),  # Keras 3: relu6(x + 3) / 6
    "HardSilu": _unary(_times_hard_sigmoid),
    "HardSwish": _unary(_times_hard_sigmoid),
    "Softmax": _softmax(log=False),
    "LogSoftmax": _softmax(log=True),
    "Elu": _with_setting("alpha", 1.0, lambda b, x, alpha: b.one("Elu", [x], alpha=alpha)),
    "LeakyRelu": _with_setting("negative_slope", 0.2, lambda b, x, slope: b.one("LeakyRelu", [x], alpha=slope)),
    "Gelu": Operation(1, ("approximate",), _gelu),
}


def _not(b: GraphBuilder, x: Symbol) -> Symbol:
    return Symbol(b.one("Not", [x.name]), x.rank, dtype=BOOL)


# --- tf.keras 2: TFOpLambda / SlicingOpLambda -----------------------------------------------------------
#
# Each TensorFlow function the replay runs is bound to its signature (model/tf_functions.py) and
# written as the keras.ops operation that computes the same.


def _as(
    operation: str,
    operands: tuple[str, ...],
    settings: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda bound: {},
) -> Callable[[GraphBuilder, Mapping[str, Any], str], Symbol]:
    def write(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
        values = [bound[name] for name in operands]
        listed = OPERATIONS[operation].takes_list
        if not listed and not all(isinstance(v, Symbol) or _is_number(v) for v in values) and operation != "GetItem":
            raise ConvertError(f"{where} has the arguments {values!r}; expected tensors or numbers")
        return OPERATIONS[operation].write(b, values[0] if listed else values, settings(bound), where)

    return write


def _squared_difference(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
    difference = OPERATIONS["Subtract"].write(b, [bound["x"], bound["y"]], {}, where)
    return Symbol(b.one("Mul", [difference.name, difference.name]), difference.rank, dtype=difference.dtype)


def _silu(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, [bound["features"]], where, FLOAT)
    scaled = b.one("Mul", [x.name, b.constant(np.float32(bound["beta"]), "beta")])
    return Symbol(b.one("Mul", [x.name, b.one("Sigmoid", [scaled])]), x.rank)


def _reduce_prod(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
    (x,) = _operands(b, [bound["input_tensor"]], where, FLOAT)
    axes = _axes({"axis": bound["axis"]}, x.rank, where)
    every = list(range(x.rank)) if axes is None else axes
    keepdims = bool(bound["keepdims"])
    return Symbol(b.one("ReduceProd", [x.name], axes=every, keepdims=int(keepdims)), x.rank if keepdims else x.rank - len(set(every)))


def _tf_matmul(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
    x, y = _operands(b, [bound["a"], bound["b"]], where, FLOAT)
    swapped = [
        Symbol(b.one("Transpose", [v.name], perm=[*range(v.rank - 2), v.rank - 1, v.rank - 2]), v.rank) if flag else v
        for v, flag in ((x, bound["transpose_a"]), (y, bound["transpose_b"]))
    ]
    return OPERATIONS["Matmul"].write(b, swapped, {}, where)


def _tf_squeeze(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
    axis = bound["axis"] if bound["axis"] is not None else bound["squeeze_dims"]
    return OPERATIONS["Squeeze"].write(b, [bound["input"]], {"axis": axis}, where)


def _tf_where(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
    if bound["x"] is None or bound["y"] is None:  # tf.where(condition) alone gives indices, a shape known only at run time
        raise ConvertError(f"{where} is called without x and y; convert writes tf.where(condition, x, y)")
    return OPERATIONS["Where"].write(b, [bound["condition"], bound["x"], bound["y"]], {}, where)


def _tf_getitem(b: GraphBuilder, bound: Mapping[str, Any], where: str) -> Symbol:
    return OPERATIONS["GetItem"].write(b, [bound["tensor"], slice_spec_key(bound["slice_spec"])], {}, where)


_BINARY = {
    "__operators__.add": "Add",
    "math.add": "Add",
    "math.subtract": "Subtract",
    "math.multiply": "Multiply",
    "math.truediv": "TrueDivide",
    "math.divide": "TrueDivide",
    "math.pow": "Power",
    "math.maximum": "Maximum",
    "math.minimum": "Minimum",
    "math.equal": "Equal",
    "math.not_equal": "NotEqual",
    "math.greater": "Greater",
    "math.greater_equal": "GreaterEqual",
    "math.less": "Less",
    "math.less_equal": "LessEqual",
    "math.logical_and": "LogicalAnd",
    "math.logical_or": "LogicalOr",
}
_UNARY = {
    "math.logical_not": "LogicalNot",
    "math.exp": "Exp",
    "math.log": "Log",
    "math.sqrt": "Sqrt",
    "math.square": "Square",
    "math.abs": "Abs",
    "math.negative": "Negative",
    "math.sign": "Sign",
    "math.reciprocal": "Reciprocal",
    "math.log1p": "Log1p",
    "math.expm1": "Expm1",
    "math.tanh": "Tanh",
    "math.sigmoid": "Sigmoid",
    "math.floor": "Floor",
    "math.ceil": "Ceil",
}
_FEATURES = {
    "nn.relu": "Relu",
    "nn.relu6": "Relu6",
    "nn.elu": "Elu",
    "nn.selu": "Selu",
    "math.softsign": "Softsign",
    "math.softplus": "Softplus",
}
_REDUCTIONS = {
    "math.reduce_mean": "Mean",
    "math.reduce_sum": "Sum",
    "math.reduce_max": "Max",
    "math.reduce_min": "Min",
    "math.reduce_any": "Any",
    "math.reduce_all": "All",
}


def _softmax_axis(bound: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"axis": -1 if bound["axis"] is None else bound["axis"]}


TF_WRITERS: Mapping[str, Callable[[GraphBuilder, Mapping[str, Any], str], Symbol]] = {
    **{name: _as(operation, ("x", "y")) for name, operation in _BINARY.items()},
    "math.squared_difference": _squared_difference,
    **{name: _as(operation, ("x",)) for name, operation in _UNARY.items()},
    **{name: _as(operation, ("features",)) for name, operation in _FEATURES.items()},
    "nn.silu": _silu,
    "nn.leaky_relu": _as("LeakyRelu", ("features",), lambda bound: {"negative_slope": bound["alpha"]}),
    "nn.gelu": _as("Gelu", ("features",), lambda bound: {"approximate": bool(bound["approximate"])}),
    "nn.softmax": _as("Softmax", ("logits",), _softmax_axis),
    "nn.log_softmax": _as("LogSoftmax", ("logits",), _softmax_axis),
    **{
        name: _as(operation, ("input_tensor",), lambda bound: {"axis": bound["axis"], "keepdims": bool(bound["keepdims"])})
        for name, operation in _REDUCTIONS.items()
    },
    "math.reduce_prod": _reduce_prod,
    "reshape": _as(
        "Reshape",
        ("tensor",),
        lambda bound: {"newshape": list(bound["shape"]) if isinstance(bound["shape"], (list, tuple)) else bound["shape"]},
    ),
    "transpose": _as("Transpose", ("a",), lambda bound: {"axes": bound["perm"]}),
    "compat.v1.transpose": _as("Transpose", ("a",), lambda bound: {"axes": bound["perm"]}),
    "expand_dims": _as("ExpandDims", ("input",), lambda bound: {"axis": bound["axis"]}),
    "squeeze": _tf_squeeze,
    "compat.v1.squeeze": _tf_squeeze,
    "concat": _as("Concatenate", ("values",), lambda bound: {"axis": bound["axis"]}),
    "stack": _as("Stack", ("values",), lambda bound: {"axis": bound["axis"]}),
    "linalg.matmul": _tf_matmul,
    "where": _tf_where,
    "cast": _as("Cast", ("x",), lambda bound: {"dtype": bound["dtype"]}),
    "__operators__.getitem": _tf_getitem,
}


def convert_tf_function(b: GraphBuilder, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Symbol]:
    """A TFOpLambda or SlicingOpLambda call, bound to its TensorFlow function's parameters."""
    name = layer.config.get("function")
    if not isinstance(name, str) or name not in TF_WRITERS:
        raise ConvertError(
            f"layer {path} ({layer.class_name}) calls tf.{name}, which convert does not write; it writes: "
            f"{', '.join(f'tf.{known}' for known in sorted(TF_WRITERS))}"
        )
    where = f"layer {path} (tf.{name})"
    bound = bind(TF_SIGNATURES[name], f"{path} (tf.{name})", args, kwargs, ConvertError, lambda value: isinstance(value, Symbol))
    # A TFOpLambda passes no mask on (tf-keras computes none for it).
    return [TF_WRITERS[name](b, bound, where)]
