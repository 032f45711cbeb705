"""Attention layers replayed in NumPy: Attention, AdditiveAttention and MultiHeadAttention.

Each reads like the Keras layer's `call`: scores, the masks the inputs carry (or that Keras 3 saved
as `mask=`), the causal mask, the softmax and the weighted values. Where the frameworks disagree
(how a query row with every key masked is normalised) the Keras that runs the model decides.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from grucli.engine.feedforward import stored_weights
from grucli.engine.tensor import Tensor
from grucli.errors import ReplayError
from grucli.model.attention import bind_mha_call, mha_projections, mha_settings
from grucli.model.records import RawLayer
from grucli.model.semantics import KERAS3, Semantics

ATTENTION = {"Attention", "AdditiveAttention"}


def attention(layer: RawLayer, path: str, inputs: list[Tensor], kwargs: Mapping[str, Any], dtype: type) -> list[Tensor]:
    """Keras's Attention (dot or concat scores) and AdditiveAttention layers, as their `call` reads:
    scores of query and key, value positions the value mask drops (and, causal, later ones) pushed
    down by 1e9 before the softmax, the weighted sum of the values, zeros where the query is masked."""
    name = layer.class_name
    if len(inputs) not in (2, 3):
        raise ReplayError(f"layer {path} ({name}) is called on {len(inputs)} tensors; expected [query, value] or [query, value, key]")
    query: np.ndarray = inputs[0].value.astype(dtype)
    value: np.ndarray = inputs[1].value.astype(dtype)
    key = inputs[2].value.astype(dtype) if len(inputs) == 3 else value
    if query.ndim != 3 or value.ndim != 3 or key.shape != value.shape[:2] + key.shape[2:] or query.shape[-1] != key.shape[-1]:
        raise ReplayError(
            f"layer {path} ({name}) is called on shapes {[t.value.shape for t in inputs]}; expected "
            "(batch, Tq, dim) queries and (batch, Tv, dim) values and keys"
        )
    query_mask, value_mask = _attention_masks(path, name, inputs, kwargs.get("mask"))
    scores = _attention_scores(layer, path, query, key, dtype)
    allowed = np.ones(scores.shape, bool) if value_mask is None else np.broadcast_to(value_mask[:, None, :], scores.shape)
    if kwargs.get("use_causal_mask"):
        allowed = allowed & np.tril(np.ones(scores.shape[-2:], bool))
    scores = np.where(allowed, scores, scores - 1e9)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = weights / weights.sum(axis=-1, keepdims=True)
    output = weights @ value
    if query_mask is not None:
        output = np.where(query_mask[..., None], output, 0.0)
    if kwargs.get("return_attention_scores"):
        return [Tensor(output, query_mask), Tensor(weights)]
    return [Tensor(output, query_mask)]


def _attention_masks(path: str, name: str, inputs: list[Tensor], explicit: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(query mask, value mask): Keras 3 saves them as `mask=[q, v]`; otherwise they are the masks
    the inputs carry (tf-keras)."""
    if explicit is None:
        masks = [inputs[0].mask, inputs[1].mask]
    elif isinstance(explicit, list) and len(explicit) in (2, 3) and all(m is None or isinstance(m, Tensor) for m in explicit):
        masks = [None if m is None else np.asarray(m.value, bool) for m in explicit[:2]]
    else:
        raise ReplayError(f"layer {path} ({name}) is called with mask={explicit!r}; expected [query mask, value mask]")
    for mask, tensor, role in zip(masks, inputs, ("query", "value")):
        if mask is not None and mask.shape != tensor.value.shape[:2]:
            raise ReplayError(f"layer {path} ({name}) has a {role} mask of shape {mask.shape}; expected {tensor.value.shape[:2]}")
    return masks[0], masks[1]


def _attention_scores(layer: RawLayer, path: str, query: np.ndarray, key: np.ndarray, dtype: type) -> np.ndarray:
    config, name = layer.config, layer.class_name
    use_scale = bool(config.get("use_scale", name == "AdditiveAttention"))
    dim = query.shape[-1]
    if name == "AdditiveAttention":
        scales = stored_weights(layer, [(dim,)] if use_scale else [], "a scale per feature" if use_scale else "no weights")
        factor: np.ndarray | float = scales[0].astype(dtype) if use_scale else 1.0
        return np.sum(factor * np.tanh(query[:, :, None, :] + key[:, None, :, :]), axis=-1)
    mode = config.get("score_mode", "dot")
    if mode not in ("dot", "concat"):
        raise ReplayError(f"layer {path} (Attention) has score_mode={mode!r}; expected dot or concat")
    shapes: list[tuple[int | None, ...]] = [()] * (int(use_scale) + int(mode == "concat"))
    stored: Iterator[np.ndarray] = iter([w.astype(dtype) for w in stored_weights(layer, shapes, "a scalar scale and/or concat weight")])
    scale = next(stored) if use_scale else None
    if mode == "dot":
        scores = query @ np.swapaxes(key, -2, -1)
        return scores * scale if scale is not None else scores
    concat_weight = next(stored)
    summed = query[:, :, None, :] + key[:, None, :, :]
    return concat_weight * np.sum(np.tanh(summed * scale if scale is not None else summed), axis=-1)


# --- MultiHeadAttention ---------------------------------------------------------------------------------


# The call's parameters in Keras's order (`mha(query, value, key=None, ...)`).
def multi_head_attention(
    layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any], semantics: Semantics, dtype: type
) -> list[Tensor]:
    """Keras's MultiHeadAttention on (batch, time, features) inputs: per-head projections, scaled dot
    scores, the masks of query, value and key tensors (and `attention_mask`, causal) combined, the
    softmax, the weighted values and the output projection. The output carries the query's mask."""
    call = bind_mha_call(path, args, kwargs, ReplayError, "the replay")
    query, value = call["query"], call["value"]
    key = call["key"] if call.get("key") is not None else value
    for role, tensor in (("query", query), ("value", value), ("key", key)):
        if not isinstance(tensor, Tensor) or tensor.value.ndim != 3:
            shown = tensor.value.shape if isinstance(tensor, Tensor) else repr(tensor)
            raise ReplayError(f"layer {path} (MultiHeadAttention) has the {role} {shown}; the replay runs (batch, time, features) tensors")
    settings = mha_settings(layer, path, ReplayError, "the replay")
    heads, key_dim, value_dim, use_bias = settings.heads, settings.key_dim, settings.value_dim, settings.use_bias
    out_dim = query.value.shape[-1] if settings.output_dim is None else settings.output_dim
    projections = mha_projections(
        layer,
        path,
        {
            "query": ((query.value.shape[-1], heads, key_dim), (heads, key_dim)),
            "key": ((key.value.shape[-1], heads, key_dim), (heads, key_dim)),
            "value": ((value.value.shape[-1], heads, value_dim), (heads, value_dim)),
            "output": ((heads, value_dim, out_dim), (out_dim,)),
        },
        use_bias,
    )

    def project(x: np.ndarray, role: str) -> np.ndarray:
        kernel, bias = projections[role]
        y = np.einsum("abc,cde->abde", x.astype(dtype), kernel.astype(dtype))
        return y if bias is None else y + bias.astype(dtype)

    q = project(query.value, "query") / np.sqrt(float(key_dim))
    k, v = project(key.value, "key"), project(value.value, "value")
    scores = np.einsum("aecd,abcd->acbe", k, q)  # (batch, heads, Tq, Tk), as Keras writes it
    allowed = _mha_allowed(path, call, query, value, key, scores.shape)
    with_scores = bool(call.get("return_attention_scores"))
    weights = _masked_softmax(scores, allowed, zero_masked_rows=with_scores and semantics == KERAS3)
    attended = np.einsum("acbe,aecd->abcd", weights, v)  # (batch, Tq, heads, value_dim)
    kernel, bias = projections["output"]
    output = np.einsum("abcd,cde->abe", attended, kernel.astype(dtype))
    output = output if bias is None else output + bias.astype(dtype)
    result = Tensor(output, query.mask)
    return [result, Tensor(weights)] if with_scores else [result]


def _mha_allowed(path: str, call: Mapping[str, Any], query: Tensor, value: Tensor, key: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """Which (query step, key step) pairs may attend, per sample: (batch, 1, Tq, Tk)."""
    batch, _, steps_q, steps_k = shape
    allowed = np.ones((batch, steps_q, steps_k), bool)
    explicit = {role: call.get(f"{role}_mask") for role in ("query", "value", "key")}
    for role, tensor in (("query", query), ("value", value), ("key", key if call.get("key") is not None else None)):
        mask = explicit[role]
        mask = np.asarray(mask.value, bool) if isinstance(mask, Tensor) else (None if tensor is None else tensor.mask)
        if explicit[role] is not None and not isinstance(explicit[role], Tensor):
            raise ReplayError(f"layer {path} (MultiHeadAttention) is called with {role}_mask={explicit[role]!r}; expected a tensor")
        if mask is None:
            continue
        if mask.shape != (batch, steps_q if role == "query" else steps_k):
            raise ReplayError(f"layer {path} (MultiHeadAttention) has a {role} mask of shape {mask.shape}; expected it to match the {role}")
        allowed &= mask[:, :, None] if role == "query" else mask[:, None, :]
    if call.get("use_causal_mask"):
        allowed &= np.tril(np.ones((steps_q, steps_k), bool))
    attention_mask = call.get("attention_mask")
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or np.shape(attention_mask.value) not in ((batch, steps_q, steps_k), (steps_q, steps_k)):
            raise ReplayError(f"layer {path} (MultiHeadAttention) is called with an attention_mask that is not a (batch, Tq, Tk) tensor")
        allowed &= np.asarray(attention_mask.value) > 0.5 if attention_mask.value.dtype != bool else attention_mask.value
    return allowed[:, None]


def _masked_softmax(scores: np.ndarray, allowed: np.ndarray, zero_masked_rows: bool) -> np.ndarray:
    """Softmax over key steps, masked pairs left out. A query row with every key masked gets the
    uniform weights Keras's fused attention (and tf-keras's float32 `-1e9`) gives it, or zeros where
    Keras 3 runs its Softmax layer (when the scores are returned)."""
    allowed = np.broadcast_to(allowed, scores.shape)
    masked = np.where(allowed, scores, -np.inf)
    empty = ~allowed.any(axis=-1, keepdims=True)
    masked = np.where(empty, 0.0, masked)
    weights = np.exp(masked - masked.max(axis=-1, keepdims=True))
    weights = weights / weights.sum(axis=-1, keepdims=True)
    return np.where(empty, 0.0, weights) if zero_masked_rows else weights
