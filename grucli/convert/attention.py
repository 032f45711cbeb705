"""Layers convert writes from their whole saved call (several tensors, keywords): Attention,
AdditiveAttention and MultiHeadAttention, as the replay runs them (engine/attention.py), and the
registry of them (`CALL_CONVERTERS`).

Attention and AdditiveAttention push disallowed scores down by 1e9 before the softmax, as Keras
does; MultiHeadAttention leaves masked pairs out of its softmax (a query row with every key masked
gets uniform weights, or zeros where Keras 3 returns the scores), as the replay does.

May import: numpy, convert/symbols, model/, errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from grucli.convert.builder import GraphBuilder
from grucli.convert.symbols import BOOL, FLOAT, ConvertError, Symbol, tensors
from grucli.model.attention import PROJECTIONS, bind_mha_call, mha_projections, mha_settings
from grucli.model.records import RawLayer
from grucli.model.semantics import Semantics

CallConverter = Callable[["GraphBuilder", RawLayer, str, Sequence[Any], Mapping[str, Any]], list[Symbol]]

ATTENTION_KEYWORDS = ("mask", "use_causal_mask", "return_attention_scores", "training")


def _attention(b: GraphBuilder, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Symbol]:
    """Attention (dot or concat scores) and AdditiveAttention on [query, value(, key)]."""
    name = layer.class_name
    _keywords(layer, path, kwargs, ATTENTION_KEYWORDS)
    if len(args) != 1:
        raise ConvertError(f"layer {path} ({name}) is called with {len(args)} positional arguments; expected [query, value(, key)]")
    inputs = tensors(layer, path, args[0])
    if len(inputs) not in (2, 3) or any(t.rank != 3 for t in inputs):
        raise ConvertError(f"layer {path} ({name}) is called on {len(inputs)} tensors; expected (batch, T, dim) query, value[, key]")
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) == 3 else value
    query_mask, value_mask = _attention_masks(layer, path, inputs, kwargs.get("mask"))
    scores = _scores(b, layer, path, query.name, key.name)  # (batch, Tq, Tv)
    allowed = None if value_mask is None else b.one("Unsqueeze", [value_mask, b.int_constant([1], "axis")])
    if kwargs.get("use_causal_mask"):
        allowed = _and(b, allowed, _causal(b, query.name, key.name))
    if allowed is not None:
        scores = b.one("Where", [allowed, scores, b.one("Sub", [scores, b.constant(np.float32(1e9), "big")])])
    weights = b.one("Softmax", [scores], axis=-1)
    output = b.one("MatMul", [weights, value.name])
    if query_mask is not None:
        kept = b.one("Unsqueeze", [query_mask, b.int_constant([-1], "axis")])
        output = b.one("Where", [kept, output, b.one("ConstantOfShape", [b.one("Shape", [output])])])
    result = [Symbol(output, 3, query_mask)]
    return [*result, Symbol(weights, 3)] if kwargs.get("return_attention_scores") else result


def _attention_masks(layer: RawLayer, path: str, inputs: list[Symbol], explicit: Any) -> tuple[str | None, str | None]:
    """(query mask, value mask): those saved as `mask=[q, v]`, or else the inputs' own, as the replay reads them."""
    if explicit is None:
        return inputs[0].mask, inputs[1].mask
    if (
        isinstance(explicit, list)
        and len(explicit) in (2, 3)
        and all(m is None or (isinstance(m, Symbol) and m.dtype == BOOL) for m in explicit)
    ):
        return tuple(None if m is None else m.name for m in explicit[:2])  # type: ignore[return-value]
    raise ConvertError(f"layer {path} ({layer.class_name}) is called with mask={explicit!r}; expected [query mask, value mask]")


def _scores(b: GraphBuilder, layer: RawLayer, path: str, query: str, key: str) -> str:
    config, name = layer.config, layer.class_name
    use_scale = bool(config.get("use_scale", name == "AdditiveAttention"))
    weights = [np.asarray(w.array, np.float32) for w in layer.weights]
    if name == "AdditiveAttention":
        _expect(layer, path, weights, 1 if use_scale else 0, "a scale per feature")
        summed = b.one(
            "Add", [b.one("Unsqueeze", [query, b.int_constant([2], "axis")]), b.one("Unsqueeze", [key, b.int_constant([1], "axis")])]
        )  # (batch, Tq, Tv, dim)
        tanh = b.one("Tanh", [summed])
        if use_scale:
            tanh = b.one("Mul", [tanh, b.constant(weights[0], "scale")])
        return b.one("ReduceSum", [tanh, b.int_constant([-1], "axis")], keepdims=0)
    mode = config.get("score_mode", "dot")
    if mode not in ("dot", "concat"):
        raise ConvertError(f"layer {path} (Attention) has score_mode={mode!r}; expected dot or concat")
    _expect(layer, path, weights, int(use_scale) + int(mode == "concat"), "a scalar scale and/or concat weight")
    scale = b.constant(weights[0], "scale") if use_scale else None
    if mode == "dot":
        scores = b.one("MatMul", [query, b.one("Transpose", [key], perm=[0, 2, 1])])
        return b.one("Mul", [scores, scale]) if scale else scores
    summed = b.one(
        "Add", [b.one("Unsqueeze", [query, b.int_constant([2], "axis")]), b.one("Unsqueeze", [key, b.int_constant([1], "axis")])]
    )
    summed = b.one("Mul", [summed, scale]) if scale else summed
    reduced = b.one("ReduceSum", [b.one("Tanh", [summed]), b.int_constant([-1], "axis")], keepdims=0)
    return b.one("Mul", [reduced, b.constant(weights[-1], "concat_weight")])


def _expect(layer: RawLayer, path: str, weights: list[np.ndarray], count: int, what: str) -> None:
    if len(weights) != count:
        raise ConvertError(f"layer {path} ({layer.class_name}) stores {len(weights)} weights; expected {count} ({what})")


def _causal(b: GraphBuilder, query: str, key: str) -> str:
    """bool (1, Tq, Tk): key step j is at or before query step i."""
    steps = [b.one("Squeeze", [b.one("Gather", [b.one("Shape", [t]), b.int_constant([1], "axis")])]) for t in (query, key)]
    rows, columns = (b.one("Range", [b.int_constant(0, "start"), n, b.int_constant(1, "delta")]) for n in steps)
    allowed = b.one(
        "LessOrEqual", [b.one("Unsqueeze", [columns, b.int_constant([0], "axis")]), b.one("Unsqueeze", [rows, b.int_constant([1], "axis")])]
    )
    return b.one("Unsqueeze", [allowed, b.int_constant([0], "axis")])


def _and(b: GraphBuilder, first: str | None, second: str | None) -> str | None:
    if first is None or second is None:
        return first if second is None else second
    return b.one("And", [first, second])


# --- MultiHeadAttention ---------------------------------------------------------------------------------


def _multi_head_attention(b: GraphBuilder, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Symbol]:
    call = bind_mha_call(path, args, kwargs, ConvertError, "convert")
    query, value = call["query"], call["value"]
    key = call["key"] if call.get("key") is not None else value
    for role, tensor in (("query", query), ("value", value), ("key", key)):
        if not isinstance(tensor, Symbol) or tensor.rank != 3:
            raise ConvertError(
                f"layer {path} (MultiHeadAttention) has the {role} {tensor!r}; convert writes (batch, time, features) tensors"
            )
    settings = mha_settings(layer, path, ConvertError, "convert")
    heads, key_dim, value_dim, use_bias = settings.heads, settings.key_dim, settings.value_dim, settings.use_bias
    features = {role: _last_dimension(layer, path, role) for role in ("query", "key", "value")}
    out_dim = features["query"] if settings.output_dim is None else settings.output_dim
    projections = mha_projections(
        layer,
        path,
        {
            "query": ((features["query"], heads, key_dim), (heads, key_dim)),
            "key": ((features["key"], heads, key_dim), (heads, key_dim)),
            "value": ((features["value"], heads, value_dim), (heads, value_dim)),
            "output": ((heads, value_dim, out_dim), (out_dim,)),
        },
        use_bias,
    )

    def project(x: str, role: str, size: int) -> str:
        """(batch, T, features) → (batch, heads, T, size)."""
        kernel, bias = projections[role]
        y = b.one("MatMul", [x, b.constant(kernel.reshape(kernel.shape[0], heads * size), f"{role}_kernel")])
        if bias is not None:
            y = b.one("Add", [y, b.constant(bias.reshape(-1), f"{role}_bias")])
        y = b.one("Reshape", [y, b.int_constant([0, 0, heads, size], "shape")])
        return b.one("Transpose", [y], perm=[0, 2, 1, 3])

    q = b.one("Mul", [project(query.name, "query", key_dim), b.constant(np.float32(1.0 / math.sqrt(float(key_dim))), "scale")])
    k, v = project(key.name, "key", key_dim), project(value.name, "value", value_dim)
    scores = b.one("MatMul", [q, b.one("Transpose", [k], perm=[0, 1, 3, 2])])  # (batch, heads, Tq, Tk)
    with_scores = bool(call.get("return_attention_scores"))
    allowed = _mha_allowed(b, path, call, query, value, key)
    weights = _masked_softmax(b, scores, allowed, zero_masked_rows=with_scores and b.semantics == Semantics.KERAS3)
    attended = b.one("Transpose", [b.one("MatMul", [weights, v])], perm=[0, 2, 1, 3])  # (batch, Tq, heads, value_dim)
    flat = b.one("Reshape", [attended, b.int_constant([0, 0, heads * value_dim], "shape")])
    kernel, bias = projections["output"]
    output = b.one("MatMul", [flat, b.constant(kernel.reshape(heads * value_dim, -1), "output_kernel")])
    if bias is not None:
        output = b.one("Add", [output, b.constant(bias, "output_bias")])
    result = Symbol(output, 3, query.mask)
    return [result, Symbol(weights, 4)] if with_scores else [result]


def _last_dimension(layer: RawLayer, path: str, role: str) -> int:
    """The features of the query, key or value, from the kernel that projects it."""
    kernels = [w for w in layer.weights if any(f"/{sub}/" in f"/{w.name}" for sub in PROJECTIONS[role]) and np.ndim(w.array) == 3]
    if len(kernels) != 1:
        raise ConvertError(f"layer {path} (MultiHeadAttention) stores no single {role} kernel; convert needs one")
    return int(kernels[0].array.shape[0])


def _mha_allowed(b: GraphBuilder, path: str, call: Mapping[str, Any], query: Symbol, value: Symbol, key: Symbol) -> str | None:
    """bool (batch, 1, Tq, Tk) of the (query, key) pairs that may attend, or None for all."""
    allowed = None
    for role, tensor in (("query", query), ("value", value), ("key", key if call.get("key") is not None else None)):
        explicit = call.get(f"{role}_mask")
        if explicit is not None and not (isinstance(explicit, Symbol) and explicit.dtype == BOOL):
            raise ConvertError(f"layer {path} (MultiHeadAttention) is called with {role}_mask={explicit!r}; expected a bool tensor")
        mask = explicit.name if explicit is not None else (None if tensor is None else tensor.mask)
        if mask is None:
            continue
        axes = [2] if role == "query" else [1]
        allowed = _and(b, allowed, b.one("Unsqueeze", [mask, b.int_constant(axes, "axis")]))
    if call.get("use_causal_mask"):
        allowed = _and(b, allowed, _causal(b, query.name, key.name))
    attention_mask = call.get("attention_mask")
    if attention_mask is not None:
        if not isinstance(attention_mask, Symbol) or attention_mask.rank != 3:
            raise ConvertError(f"layer {path} (MultiHeadAttention) is called with an attention_mask that is not a (batch, Tq, Tk) tensor")
        given = (
            attention_mask.name
            if attention_mask.dtype == BOOL
            else b.one("Greater", [_as_float(b, attention_mask), b.constant(np.float32(0.5), "half")])
        )
        allowed = _and(b, allowed, given)
    return None if allowed is None else b.one("Unsqueeze", [allowed, b.int_constant([1], "axis")])


def _as_float(b: GraphBuilder, x: Symbol) -> str:
    return x.name if x.dtype == FLOAT else b.one("Cast", [x.name], to=b.onnx.TensorProto.FLOAT)


def _masked_softmax(b: GraphBuilder, scores: str, allowed: str | None, zero_masked_rows: bool) -> str:
    if allowed is None:
        return b.one("Softmax", [scores], axis=-1)
    full = b.one("Expand", [allowed, b.one("Shape", [scores])])
    masked = b.one("Where", [full, scores, b.constant(np.float32(-np.inf), "minus_inf")])
    any_allowed = b.one(
        "Greater",
        [
            b.one("ReduceMax", [b.one("Cast", [full], to=b.onnx.TensorProto.FLOAT)], axes=[-1], keepdims=1),
            b.constant(np.float32(0), "zero"),
        ],
    )
    masked = b.one("Where", [any_allowed, masked, b.constant(np.float32(0), "zero")])  # an empty row: uniform weights
    weights = b.one("Softmax", [masked], axis=-1)
    return b.one("Where", [any_allowed, weights, b.constant(np.float32(0), "zero")]) if zero_masked_rows else weights


def _keywords(layer: RawLayer, path: str, kwargs: Mapping[str, Any], used: Sequence[str]) -> None:
    for key in kwargs:
        if key not in used:
            raise ConvertError(f"layer {path} ({layer.class_name}) is called with {key}=, which convert does not write")
    if kwargs.get("training") not in (None, False):
        raise ConvertError(f"layer {path} ({layer.class_name}) is called with training={kwargs['training']!r}; convert writes inference")


ATTENTION_CONVERTERS: Mapping[str, CallConverter] = {
    "Attention": _attention,
    "AdditiveAttention": _attention,
    "MultiHeadAttention": _multi_head_attention,
}
