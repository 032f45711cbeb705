"""Every other layer convert writes, and the registries of all of them: `CONVERTERS` (dense,
embedding, masking, convolution, pooling, normalisation, shapes, merges, recurrent layers; the
walk in onnx_graph.py writes nested models and TimeDistributed around any of them) and
`MASK_RULES` (what each does with a mask it is fed, as the replay and Keras do).

May import: numpy, convert/ (symbols, builder and the converters: not onnx_graph, which walks with them), model/, errors.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from grucli.convert.attention import ATTENTION_CONVERTERS, CallConverter
from grucli.convert.builder import GraphBuilder
from grucli.convert.masks import masking, not_equal_mask
from grucli.convert.operations import convert_tf_function
from grucli.convert.recurrent import recurrent_call
from grucli.convert.symbols import BOOL, ConvertError, Symbol, one_tensor, tensors
from grucli.model.layers import activation_name
from grucli.model.records import RawLayer
from grucli.model.registry import MODEL_CLASSES, RECURRENT_LAYER_CLASSES, merge_values_follow_masks
from grucli.model.semantics import Semantics


def _identity(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    return [one_tensor(layer, path, x)]


def _activation_layer(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    return [Symbol(b.activation(activation_name(layer.config.get("activation", "linear")), x.name, path), x.rank)]


def _dense(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    weights = [np.asarray(w.array) for w in layer.weights]
    use_bias = layer.config.get("use_bias", True)
    if len(weights) != (2 if use_bias else 1) or weights[0].ndim != 2:
        raise ConvertError(f"layer {path} (Dense) stores {[w.shape for w in weights]}; expected a kernel (in, units) and a bias")
    y = b.one("MatMul", [x.name, b.constant(weights[0], "kernel")])
    if use_bias:
        y = b.one("Add", [y, b.constant(weights[1], "bias")])
    return [Symbol(b.activation(activation_name(layer.config.get("activation", "linear")), y, path), x.rank)]


def _embedding(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    weights = [np.asarray(w.array) for w in layer.weights]
    if len(weights) != 1 or weights[0].ndim != 2:
        raise ConvertError(f"layer {path} (Embedding) stores {[w.shape for w in weights]}; expected one matrix (vocabulary, dim)")
    ids = b.one("Cast", [x.name], to=b.onnx.TensorProto.INT64)  # Keras casts ids to integers, as this does
    mask = not_equal_mask(b, ids, b.int_constant(0, "zero")) if layer.config.get("mask_zero") else None
    return [Symbol(b.one("Gather", [b.constant(weights[0], "embeddings"), ids], axis=0), x.rank + 1, mask)]


def _masking(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    if x.rank != 3:
        raise ConvertError(f"layer {path} (Masking) is fed a tensor of rank {x.rank}; convert writes Masking of (batch, time, features)")
    return [masking(b, x, float(layer.config.get("mask_value", 0.0)))]


def with_explicit_mask(layer: RawLayer, path: str, x: Any, mask: Any) -> Any:
    """Keras 3 saves the mask a layer was called with (`mask=`) as a tensor of the graph; it replaces
    the one the input carries."""
    if mask is None:
        return x
    if not isinstance(x, Symbol) or not isinstance(mask, Symbol) or mask.rank != 2 or x.rank < 3:
        raise ConvertError(
            f"layer {path} ({layer.class_name}) is called with mask {mask!r} on {x!r}; expected a (batch, time) mask of a sequence"
        )
    if mask.dtype != BOOL:
        raise ConvertError(f"layer {path} ({layer.class_name}) is called with a mask of type {mask.dtype}; expected bool")
    return x.with_mask(mask.name)


def _per_axis(layer: RawLayer, path: str, key: str, rank: int, default: Any = 1) -> list[int]:
    value = layer.config.get(key, default)
    values = [value] * rank if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(values, (list, tuple))
        or len(values) != rank
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
    ):
        raise ConvertError(f"layer {path} ({layer.class_name}) has {key}={value!r}; expected {rank} positive integer(s)")
    return list(values)


def _channels_last(layer: RawLayer, path: str) -> None:
    if layer.config.get("data_format") not in (None, "channels_last"):
        raise ConvertError(
            f"layer {path} ({layer.class_name}) has data_format={layer.config['data_format']!r}; convert writes channels_last"
        )


def _padding(layer: RawLayer, path: str, windows: list[int], dilations: list[int]) -> dict[str, Any]:
    """Keras's padding as ONNX's: valid; same pads the extra cell at the end (SAME_UPPER, as
    TensorFlow does); causal (1D) pads (window - 1)·dilation steps in front."""
    padding = layer.config.get("padding", "valid")
    if padding == "valid":
        return {"pads": [0] * 2 * len(windows)}
    if padding == "same":
        return {"auto_pad": "SAME_UPPER"}
    if padding == "causal" and len(windows) == 1:
        return {"pads": [(windows[0] - 1) * dilations[0], 0]}
    raise ConvertError(f"layer {path} ({layer.class_name}) has padding={padding!r}; expected valid or same (causal in 1D)")


def _channels_first(b: GraphBuilder, x: str, rank: int) -> str:
    return b.one("Transpose", [x], perm=[0, rank + 1, *range(1, rank + 1)])


def _channels_back(b: GraphBuilder, y: str, rank: int) -> str:
    return b.one("Transpose", [y], perm=[0, *range(2, rank + 2), 1])


def _convolution(rank: int) -> Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]:
    """Conv1D / Conv2D on channels-last input: ONNX's Conv on channels first, transposed around it."""

    def convolution(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        x = one_tensor(layer, path, x)
        _channels_last(layer, path)
        weights = [np.asarray(w.array) for w in layer.weights]
        use_bias = layer.config.get("use_bias", True)
        if (
            len(weights) != (2 if use_bias else 1)
            or weights[0].ndim != rank + 2
            or layer.config.get("groups", 1) != 1
            or x.rank != rank + 2
        ):
            raise ConvertError(
                f"layer {path} ({layer.class_name}) stores {[w.shape for w in weights]} for input of rank {x.rank}; "
                f"expected a kernel (window..., in, filters) and a bias, one group"
            )
        windows = list(weights[0].shape[:rank])
        strides, dilations = _per_axis(layer, path, "strides", rank), _per_axis(layer, path, "dilation_rate", rank)
        kernel = np.transpose(weights[0], (rank + 1, rank, *range(rank)))  # (filters, in, window...)
        inputs = [_channels_first(b, x.name, rank), b.constant(kernel, "kernel")]
        if use_bias:
            inputs.append(b.constant(weights[1], "bias"))
        y = b.one("Conv", inputs, kernel_shape=windows, strides=strides, dilations=dilations, **_padding(layer, path, windows, dilations))
        y = _channels_back(b, y, rank)
        return [Symbol(b.activation(activation_name(layer.config.get("activation", "linear")), y, path), x.rank)]

    return convolution


def _pooling(rank: int, op: str) -> Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]:
    def pool(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        x = one_tensor(layer, path, x)
        _channels_last(layer, path)
        windows = _per_axis(layer, path, "pool_size", rank, 2)
        strides = windows if layer.config.get("strides") is None else _per_axis(layer, path, "strides", rank)
        # Average pooling over "same" padding divides by the cells inside the input (count_include_pad=0), as Keras does.
        y = b.one(
            op, [_channels_first(b, x.name, rank)], kernel_shape=windows, strides=strides, **_padding(layer, path, windows, [1] * rank)
        )
        return [Symbol(_channels_back(b, y, rank), x.rank)]

    return pool


def _global_pooling(rank: int, op: str) -> Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]:
    def pool(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        x = one_tensor(layer, path, x)
        _channels_last(layer, path)
        keepdims = int(bool(layer.config.get("keepdims", False)))
        rank_out = x.rank if keepdims else x.rank - rank
        if op == "ReduceMean" and rank == 1 and x.mask is not None:  # the mean over the steps the mask keeps
            kept = b.one("Unsqueeze", [b.one("Cast", [x.mask], to=b.onnx.TensorProto.FLOAT), b.int_constant([-1], "axis")])
            total = b.one("ReduceSum", [b.one("Mul", [x.name, kept]), b.int_constant([1], "axis")], keepdims=keepdims)
            count = b.one("ReduceSum", [kept, b.int_constant([1], "axis")], keepdims=keepdims)
            return [Symbol(b.one("Div", [total, count]), rank_out)]
        return [Symbol(b.one(op, [x.name], axes=list(range(1, rank + 1)), keepdims=keepdims), rank_out)]

    return pool


def _last_axis(layer: RawLayer, path: str, x: Symbol) -> None:
    axis = layer.config.get("axis", -1)
    axes = axis if isinstance(axis, list) else [axis]
    if len(axes) != 1 or axes[0] not in (-1, x.rank - 1):
        raise ConvertError(f"layer {path} ({layer.class_name}) normalises axis {axis!r}; convert writes the last axis only")


def _batch_normalization(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """Inference-time BatchNormalization: (x - mean) / sqrt(variance + epsilon) · gamma + beta."""
    x = one_tensor(layer, path, x)
    _last_axis(layer, path, x)
    weights = [np.asarray(w.array, np.float32) for w in layer.weights]
    scale, center = layer.config.get("scale", True), layer.config.get("center", True)
    if len(weights) != 2 + int(bool(scale)) + int(bool(center)):
        raise ConvertError(f"layer {path} (BatchNormalization) stores {len(weights)} arrays; expected gamma, beta, mean, variance")
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    mean, variance = weights
    y = b.one("Sub", [x.name, b.constant(mean, "mean")])
    root = np.sqrt(variance + np.float32(layer.config.get("epsilon", 1e-3)))
    y = b.one("Div", [y, b.constant(root, "root")])
    if gamma is not None:
        y = b.one("Mul", [y, b.constant(gamma, "gamma")])
    if beta is not None:
        y = b.one("Add", [y, b.constant(beta, "beta")])
    return [Symbol(y, x.rank)]


def _layer_normalization(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    _last_axis(layer, path, x)
    if layer.config.get("rms_scaling"):
        raise ConvertError(f"layer {path} (LayerNormalization) has rms_scaling=True, which convert does not write")
    weights = [np.asarray(w.array, np.float32) for w in layer.weights]
    scale, center = layer.config.get("scale", True), layer.config.get("center", True)
    if len(weights) != int(bool(scale)) + int(bool(center)):
        raise ConvertError(f"layer {path} (LayerNormalization) stores {len(weights)} arrays; expected gamma and beta")
    features = weights[0] if weights else None
    size = features.shape[0] if features is not None else None
    if size is None:
        raise ConvertError(f"layer {path} (LayerNormalization) without gamma or beta is not one convert writes")
    gamma = weights.pop(0) if scale else np.ones(size, np.float32)
    beta = weights.pop(0) if center else np.zeros(size, np.float32)
    y = b.one(
        "LayerNormalization",
        [x.name, b.constant(gamma, "gamma"), b.constant(beta, "beta")],
        axis=-1,
        epsilon=float(layer.config.get("epsilon", 1e-3)),
    )
    return [Symbol(y, x.rank)]


def _merged_mask(b: GraphBuilder, layer: RawLayer, path: str, values: list[Symbol]) -> str | None:
    """A merge layer's output mask as the Keras that saved the file computes it: Keras 3 keeps a
    step where any input keeps it (none when an input is unmasked), Keras 2 / tf-keras where every
    masked input does."""
    masks = [value.mask for value in values]
    if all(mask is None for mask in masks):
        return None
    if b.semantics == Semantics.KERAS3:
        if any(mask is None for mask in masks):
            return None
        return _reduce(b, "Or", [mask for mask in masks if mask is not None])
    return _reduce(b, "And", [mask for mask in masks if mask is not None])


def _reduce(b: GraphBuilder, op: str, names: list[str]) -> str:
    result = names[0]
    for other in names[1:]:
        result = b.one(op, [result, other])
    return result


def _merge(op: str, scale: bool = False) -> Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]:
    def merge(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        values = tensors(layer, path, x)
        masked = any(value.mask is not None for value in values)
        if masked and merge_values_follow_masks(layer.class_name, b.semantics == Semantics.KERAS3):
            raise ConvertError(
                f"layer {path} ({layer.class_name}) merges masked tensors, which Keras 3 computes step by step "
                "with the masks; convert does not write it"
            )
        y = _reduce(b, op, [value.name for value in values])
        if scale:  # Average: the sum over the count
            y = b.one("Mul", [y, b.constant(np.float32(1.0 / len(values)), "scale")])
        return [Symbol(y, values[0].rank, _merged_mask(b, layer, path, values))]

    return merge


def _subtract(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = tensors(layer, path, x)
    if len(values) != 2:
        raise ConvertError(f"layer {path} (Subtract) is called on {len(values)} tensors; expected two")
    return [Symbol(b.one("Sub", [values[0].name, values[1].name]), values[0].rank, _merged_mask(b, layer, path, values))]


def _concatenate(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = tensors(layer, path, x)
    axis = layer.config.get("axis", -1)
    rank = values[0].rank
    if not isinstance(axis, int) or isinstance(axis, bool) or not -rank <= axis < rank:
        raise ConvertError(f"layer {path} (Concatenate) has axis={axis!r}; expected an axis of the rank-{rank} inputs")
    mask = None
    if any(value.mask is not None for value in values):
        if axis % rank != rank - 1 or rank < 3:
            raise ConvertError(f"layer {path} (Concatenate) joins masked tensors on axis {axis}; convert writes the features axis only")
        # Along the features, Keras 3 keeps a step where any input keeps it (an unmasked input keeps
        # every step: no mask), Keras 2 / tf-keras where every masked input does: as the merges.
        mask = _merged_mask(b, layer, path, values)
    return [Symbol(b.one("Concat", [v.name for v in values], axis=axis), rank, mask)]


def _dot(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """Keras's Dot of two (batch, n) or (batch, steps, n) tensors: per sample, a sum over one axis of
    each (after L2 normalisation along it with normalize)."""
    values = tensors(layer, path, x)
    if len(values) != 2:
        raise ConvertError(f"layer {path} (Dot) is called on {len(values)} tensors; expected two")
    axes = layer.config.get("axes")
    pair = axes if isinstance(axes, list) else [axes, axes]
    if len(pair) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in pair):
        raise ConvertError(f"layer {path} (Dot) has axes={axes!r}; expected an integer or two")
    (a, b_), ranks = values, [v.rank for v in values]
    axis_a, axis_b = (axis % rank for axis, rank in zip(pair, ranks))
    if ranks not in ([2, 2], [3, 3]) or 0 in (axis_a, axis_b):
        raise ConvertError(f"layer {path} (Dot) contracts tensors of ranks {ranks} along axes {pair}; convert writes ranks 2 or 3")
    left, right = a.name, b_.name
    if layer.config.get("normalize"):
        left, right = _l2_normalized(b, left, axis_a), _l2_normalized(b, right, axis_b)
    if ranks == [2, 2]:
        return [Symbol(b.one("ReduceSum", [b.one("Mul", [left, right]), b.int_constant([1], "axis")], keepdims=1), 2)]
    # (batch, i, k) · (batch, k, j): move each contracted axis into place for a batched MatMul.
    left = b.one("Transpose", [left], perm=[0, 2, 1]) if axis_a == 1 else left
    right = b.one("Transpose", [right], perm=[0, 2, 1]) if axis_b == 2 else right
    return [Symbol(b.one("MatMul", [left, right]), 3)]


def _l2_normalized(b: GraphBuilder, x: str, axis: int) -> str:
    squares = b.one("ReduceSum", [b.one("Mul", [x, x]), b.int_constant([axis], "axis")], keepdims=1)
    return b.one("Div", [x, b.one("Sqrt", [b.one("Max", [squares, b.constant(np.float32(1e-12), "epsilon")])])])


# --- shapes -------------------------------------------------------------------------------------------


def _flatten(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    _channels_last(layer, path)
    return [Symbol(b.one("Flatten", [x.name], axis=1), 2)]


def _reshape(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    target = layer.config.get("target_shape")
    if not isinstance(target, list) or not all(isinstance(d, int) and (d >= 1 or d == -1) for d in target) or target.count(-1) > 1:
        raise ConvertError(f"layer {path} (Reshape) has target_shape={target!r}; expected sizes, at most one of them -1")
    batch = b.one("Slice", [b.one("Shape", [x.name]), b.int_constant([0], "start"), b.int_constant([1], "end")])
    shape = b.one("Concat", [batch, b.int_constant(target, "target_shape")], axis=0)
    return [Symbol(b.one("Reshape", [x.name, shape]), 1 + len(target))]


def _repeat_vector(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    n = layer.config.get("n", 1)
    if x.rank != 2 or not isinstance(n, int) or n < 1:
        raise ConvertError(f"layer {path} (RepeatVector) has n={n!r} on rank {x.rank}; expected a positive n on (batch, features)")
    expanded = b.one("Unsqueeze", [x.name, b.int_constant([1], "axis")])
    return [Symbol(b.one("Tile", [expanded, b.int_constant([1, n, 1], "repeats")]), 3)]


def _permute(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    dims = layer.config.get("dims")
    if not isinstance(dims, list) or sorted(dims) != list(range(1, x.rank)):
        raise ConvertError(f"layer {path} (Permute) has dims={dims!r}; expected a permutation of 1..{x.rank - 1}")
    return [Symbol(b.one("Transpose", [x.name], perm=[0, *dims]), x.rank)]


def _time_amounts(layer: RawLayer, path: str, key: str) -> tuple[int, int]:
    value = layer.config.get(key, 1)
    amounts = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(amounts, list) or len(amounts) != 2 or not all(isinstance(a, int) and a >= 0 for a in amounts):
        raise ConvertError(f"layer {path} ({layer.class_name}) has {key}={value!r}; expected one or two integers ≥ 0")
    return amounts[0], amounts[1]


def _zero_padding_1d(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    before, after = _time_amounts(layer, path, "padding")
    return [Symbol(b.one("Pad", [x.name, b.int_constant([0, before, 0, 0, after, 0], "pads")]), 3)]


def _cropping_1d(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    before, after = _time_amounts(layer, path, "cropping")
    end = b.int_constant([-after if after else 2**62], "end")
    return [Symbol(b.one("Slice", [x.name, b.int_constant([before], "start"), end, b.int_constant([1], "axis")]), 3)]


def _upsampling_1d(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    size = layer.config.get("size", 2)
    if not isinstance(size, int) or size < 1 or x.rank != 3:
        raise ConvertError(f"layer {path} (UpSampling1D) has size={size!r} on rank {x.rank}; expected a positive size on a sequence")
    # each step repeated `size` times in place: (batch, steps, 1, features) tiled, then merged back
    tiled = b.one("Tile", [b.one("Unsqueeze", [x.name, b.int_constant([2], "axis")]), b.int_constant([1, 1, size, 1], "repeats")])
    merged = b.one(
        "Concat",
        [
            b.one("Slice", [b.one("Shape", [x.name]), b.int_constant([0], "s"), b.int_constant([1], "e")]),
            b.int_constant([-1], "steps"),
            b.one("Slice", [b.one("Shape", [x.name]), b.int_constant([2], "s"), b.int_constant([3], "e")]),
        ],
        axis=0,
    )
    return [Symbol(b.one("Reshape", [tiled, merged]), 3)]


# --- activation layers ---------------------------------------------------------------------------------


def _relu(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """ReLU(max_value, negative_slope, threshold): x at or above threshold, slope·(x - threshold) below, capped at max_value."""
    x = one_tensor(layer, path, x)
    config = layer.config
    slope, threshold = float(config.get("negative_slope", 0.0) or 0.0), float(config.get("threshold", 0.0) or 0.0)
    limit = b.constant(np.float32(threshold), "threshold")
    below = b.one("Mul", [b.one("Sub", [x.name, limit]), b.constant(np.float32(slope), "slope")])
    y = b.one("Where", [b.one("GreaterOrEqual", [x.name, limit]), x.name, below])
    if config.get("max_value") is not None:
        y = b.one("Min", [y, b.constant(np.float32(config["max_value"]), "max_value")])
    return [Symbol(y, x.rank)]


def _leaky_relu(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    slope = float(layer.config.get("negative_slope", layer.config.get("alpha", 0.3)))  # tf-keras calls it alpha
    return [Symbol(b.one("LeakyRelu", [x.name], alpha=slope), x.rank)]


def _prelu(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    weights = [np.asarray(w.array) for w in layer.weights]
    if len(weights) != 1 or weights[0].ndim != x.rank - 1:
        raise ConvertError(f"layer {path} (PReLU) stores {[w.shape for w in weights]}; expected one alpha per feature")
    return [Symbol(b.one("PRelu", [x.name, b.constant(weights[0], "alpha")]), x.rank)]


def _elu(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    return [Symbol(b.one("Elu", [x.name], alpha=float(layer.config.get("alpha", 1.0))), x.rank)]


def _thresholded_relu(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    return [Symbol(b.one("ThresholdedRelu", [x.name], alpha=float(layer.config.get("theta", 1.0))), x.rank)]


def _softmax(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = one_tensor(layer, path, x)
    axis = layer.config.get("axis", -1)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ConvertError(f"layer {path} (Softmax) has axis={axis!r}; convert writes one axis")
    return [Symbol(b.one("Softmax", [x.name], axis=axis), x.rank)]


# --- the registries ------------------------------------------------------------------------------------


IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)


# Layers that act on the last axis alone, the same at every other position (TimeDistributed adds nothing).
POSITION_WISE = frozenset({"Dense", "Activation", *IDENTITY_CLASSES})


CONVERTERS: Mapping[str, Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]] = {
    **dict.fromkeys(IDENTITY_CLASSES, _identity),
    "Dense": _dense,
    "Activation": _activation_layer,
    "Embedding": _embedding,
    "Masking": _masking,
    "Conv1D": _convolution(1),
    "Conv2D": _convolution(2),
    "MaxPooling1D": _pooling(1, "MaxPool"),
    "AveragePooling1D": _pooling(1, "AveragePool"),
    "MaxPooling2D": _pooling(2, "MaxPool"),
    "AveragePooling2D": _pooling(2, "AveragePool"),
    "GlobalAveragePooling1D": _global_pooling(1, "ReduceMean"),
    "GlobalMaxPooling1D": _global_pooling(1, "ReduceMax"),
    "GlobalAveragePooling2D": _global_pooling(2, "ReduceMean"),
    "GlobalMaxPooling2D": _global_pooling(2, "ReduceMax"),
    "BatchNormalization": _batch_normalization,
    "LayerNormalization": _layer_normalization,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "RepeatVector": _repeat_vector,
    "Permute": _permute,
    "ZeroPadding1D": _zero_padding_1d,
    "Cropping1D": _cropping_1d,
    "UpSampling1D": _upsampling_1d,
    "ReLU": _relu,
    "LeakyReLU": _leaky_relu,
    "PReLU": _prelu,
    "ELU": _elu,
    "ThresholdedReLU": _thresholded_relu,
    "Softmax": _softmax,
    "Add": _merge("Add"),
    "Multiply": _merge("Mul"),
    "Maximum": _merge("Max"),
    "Minimum": _merge("Min"),
    "Average": _merge("Add", scale=True),
    "Subtract": _subtract,
    "Concatenate": _concatenate,
    "Dot": _dot,
    **dict.fromkeys(RECURRENT_LAYER_CLASSES, recurrent_call),
}


# Layers written from their whole saved call (several tensors, keywords).
CALL_CONVERTERS: Mapping[str, CallConverter] = {
    **ATTENTION_CONVERTERS,
    "TFOpLambda": convert_tf_function,
    "SlicingOpLambda": convert_tf_function,
}


class MaskRule(enum.Enum):
    """What a layer fed a masked tensor gives on, as the replay (and Keras) does."""

    KEEP = "keep"  # acts on each step alone: the input's mask goes on
    DROP = "drop"  # mixes or reshapes steps: no mask goes on
    OWN = "own"  # computes its output mask itself (the converter sets it)


# Layers that act on each step alone: the input's mask goes on.
_KEEP_MASK = (
    *POSITION_WISE,
    "BatchNormalization",
    "LayerNormalization",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "ThresholdedReLU",
    "TimeDistributed",
)
# Layers that mix or reshape steps: no mask goes on.
_DROP_MASK = (
    "Conv1D",
    "Conv2D",
    "MaxPooling1D",
    "AveragePooling1D",
    "GlobalMaxPooling1D",
    "Flatten",
    "Reshape",
    "RepeatVector",
    "Permute",
    "ZeroPadding1D",
    "Cropping1D",
    "UpSampling1D",
    "Dot",
)
# Layers that compute their output mask themselves.
_OWN_MASK = (
    "Embedding",
    "Masking",
    "GlobalAveragePooling1D",
    "Add",
    "Multiply",
    "Maximum",
    "Minimum",
    "Average",
    "Subtract",
    "Concatenate",
    *MODEL_CLASSES,
)
MASK_RULES: Mapping[str, MaskRule] = {
    **dict.fromkeys(_KEEP_MASK, MaskRule.KEEP),
    **dict.fromkeys(_DROP_MASK, MaskRule.DROP),
    **dict.fromkeys(_OWN_MASK, MaskRule.OWN),
}
