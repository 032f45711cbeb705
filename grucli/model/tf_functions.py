"""The TensorFlow functions tf.keras 2 saves in TFOpLambda / SlicingOpLambda layers, by their
signatures, and how a saved call binds to one.

tf.keras 2 saves `tf.math.reduce_mean(g, axis=1)`, `g[:, -1]` and `1.0 - g` in functional models
as layers whose config names the function (`math.reduce_mean`) and whose call holds its
arguments: the first positional, the rest as keywords. Binding them to the parameters the way
Python binds a call is the same for the replay (which computes the function) and convert (which
writes it); a parameter at a value grucli does not run is refused by name.

May import: model/records, errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grucli.errors import GrucliError


@dataclass(frozen=True)
class TfSignature:
    parameters: tuple[str, ...]  # in TensorFlow's order
    defaults: Mapping[str, Any]  # optional parameters; any other value for the `fixed` ones is refused
    fixed: tuple[str, ...] = ()  # parameters grucli runs only at their default
    takes_list: str | None = None  # the parameter that is a list of tensors (concat, stack)


def _signature(parameters: str, fixed: Mapping[str, Any] | None = None, takes_list: str | None = None, **defaults: Any) -> TfSignature:
    return TfSignature(tuple(parameters.split()), {**defaults, **(fixed or {})}, tuple(fixed or ()), takes_list)


BINARY = (
    "__operators__.add",
    "math.add",
    "math.subtract",
    "math.multiply",
    "math.truediv",
    "math.divide",
    "math.pow",
    "math.maximum",
    "math.minimum",
    "math.squared_difference",
    "math.equal",
    "math.not_equal",
    "math.greater",
    "math.greater_equal",
    "math.less",
    "math.less_equal",
    "math.logical_and",
    "math.logical_or",
)
UNARY = (
    "math.logical_not",
    "math.exp",
    "math.log",
    "math.sqrt",
    "math.square",
    "math.abs",
    "math.negative",
    "math.sign",
    "math.reciprocal",
    "math.log1p",
    "math.expm1",
    "math.tanh",
    "math.sigmoid",
    "math.floor",
    "math.ceil",
)
FEATURES_UNARY = ("nn.relu", "nn.relu6", "nn.elu", "nn.selu", "math.softsign", "math.softplus")
REDUCTIONS = (
    "math.reduce_mean",
    "math.reduce_sum",
    "math.reduce_max",
    "math.reduce_min",
    "math.reduce_any",
    "math.reduce_all",
    "math.reduce_prod",
)
_TRANSPOSE = _signature("a perm conjugate", fixed={"conjugate": False}, perm=None)
_SQUEEZE = _signature("input axis squeeze_dims", axis=None, squeeze_dims=None)

TF_SIGNATURES: Mapping[str, TfSignature] = {
    **{name: _signature("x y") for name in BINARY},
    **{name: _signature("x") for name in UNARY},
    **{name: _signature("features") for name in FEATURES_UNARY},
    "nn.silu": _signature("features beta", beta=1.0),
    "nn.leaky_relu": _signature("features alpha", alpha=0.2),
    "nn.gelu": _signature("features approximate", approximate=False),
    "nn.softmax": _signature("logits axis", axis=None),
    "nn.log_softmax": _signature("logits axis", axis=None),
    **{name: _signature("input_tensor axis keepdims", axis=None, keepdims=False) for name in REDUCTIONS},
    "reshape": _signature("tensor shape"),
    "transpose": _TRANSPOSE,
    "compat.v1.transpose": _TRANSPOSE,
    "expand_dims": _signature("input axis"),
    "squeeze": _SQUEEZE,
    "compat.v1.squeeze": _SQUEEZE,
    "concat": _signature("values axis", takes_list="values"),
    "stack": _signature("values axis", takes_list="values", axis=0),
    "linalg.matmul": _signature(
        "a b transpose_a transpose_b adjoint_a adjoint_b a_is_sparse b_is_sparse output_type",
        fixed={"adjoint_a": False, "adjoint_b": False, "a_is_sparse": False, "b_is_sparse": False, "output_type": None},
        transpose_a=False,
        transpose_b=False,
    ),
    "where": _signature("condition x y"),
    "cast": _signature("x dtype"),
    "__operators__.getitem": _signature("tensor slice_spec"),
}


def bind(
    signature: TfSignature,
    where: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    error: type[GrucliError],
    is_tensor: Callable[[Any], bool],
) -> dict[str, Any]:
    """The call's arguments by parameter, defaults filled in; `error` names what does not bind.
    The list parameter (concat, stack) is always a list: `tf.concat([g], 1)` is saved as a call on g."""
    if len(args) > len(signature.parameters):
        raise error(f"layer {where} is called with {len(args)} positional arguments; it takes {len(signature.parameters)}")
    bound: dict[str, Any] = dict(zip(signature.parameters, args))
    for key, value in kwargs.items():
        if key == "name":  # the TensorFlow op's name: no effect on the value
            continue
        if key not in signature.parameters:
            raise error(f"layer {where} is called with {key}=, which grucli does not support")
        if key in bound:
            raise error(f"layer {where} is given {key} twice")
        bound[key] = value
    for key in signature.fixed:
        if key in bound and bound[key] != signature.defaults[key]:
            raise error(f"layer {where} is called with {key}={bound[key]!r}, which grucli does not support")
    missing = [key for key in signature.parameters if key not in bound and key not in signature.defaults]
    if missing:
        raise error(f"layer {where} is called without {missing[0]}; expected it")
    if signature.takes_list is not None and signature.takes_list in bound:
        value = bound[signature.takes_list]
        value = [value] if is_tensor(value) else value
        if not isinstance(value, list) or not value or not all(is_tensor(item) for item in value):
            raise error(f"layer {where} is called with {signature.takes_list}={value!r}; expected a list of tensors")
        bound[signature.takes_list] = value
    return {**signature.defaults, **bound}


def slice_spec_key(value: Any) -> Any:
    """tf-keras's saved `slice_spec` decoded: {start, stop, step} objects are slices, `__ellipsis__`
    is `...`; integers and None stay (a list stays a list: one item per axis)."""

    def decoded(item: Any) -> Any:
        if isinstance(item, Mapping) and set(item) == {"start", "stop", "step"}:
            return slice(item["start"], item["stop"], item["step"])
        if isinstance(item, Mapping) and item.get("class_name") == "__ellipsis__":
            return Ellipsis
        return item

    return [decoded(item) for item in value] if isinstance(value, list) else decoded(value)
