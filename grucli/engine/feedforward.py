"""Every layer the replay runs besides recurrent layers and models: one registry keyed by class name.

Each implementation is a small function of (layer, input tensor, runtime) that reads like the
Keras layer's `call`; merges and attention take lists of tensors. Weights are checked against
the shapes the call needs before use, and settings the replay does not run are refused by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from grucli.engine import spatial
from grucli.engine.activations import activation
from grucli.engine.tensor import Runtime, Tensor
from grucli.errors import ModelFileError, ReplayError
from grucli.model.gates import keras1_conv1d_kernel, keras1_conv1d_sizes
from grucli.model.records import NamedArray, RawLayer
from grucli.model.registry import merge_values_follow_masks
from grucli.model.semantics import KERAS3, Semantics

IDENTITY = {
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "InputLayer",
}


def stored_weights(layer: RawLayer, shapes: Sequence[tuple[int | None, ...]], what: str) -> list[np.ndarray]:
    """The layer's stored weights, checked against the shapes its call needs (None: any size)."""
    found = [tuple(w.array.shape) for w in layer.weights]
    fits = len(found) == len(shapes) and all(
        len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want)) for got, want in zip(found, shapes)
    )
    if not fits:
        expected = ", ".join(str(tuple("n" if d is None else d for d in shape)) for shape in shapes)
        raise ModelFileError(
            f"layer {layer.name} ({layer.class_name}) stores weights of shapes {found or 'none'}; expected {what}: {expected or 'none'}"
        )
    return [np.asarray(w.array) for w in layer.weights]


def _dense(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    features = x.value.shape[-1]
    use_bias = layer.config.get("use_bias", True)
    units = layer.config.get("units", layer.config.get("output_dim"))  # Keras 1 says output_dim
    weights = stored_weights(
        layer,
        [(features, units), (units,)][: 1 + bool(use_bias)],
        f"a kernel for {features} input features" + (" and a bias" if use_bias else ""),
    )
    y: np.ndarray = x.value.astype(replay.dtype) @ weights[0].astype(replay.dtype)
    if use_bias:
        y = y + weights[1].astype(replay.dtype)
    return Tensor(activation(_activation_of(layer), replay.semantics)(y), x.mask)


def _activation_of(layer: RawLayer) -> str | None:
    from grucli.model.layers import activation_name

    return activation_name(layer.config.get("activation", "linear"))


def _embedding(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    table: np.ndarray = stored_weights(layer, [(None, None)], "one (vocabulary, dimensions) table")[0].astype(replay.dtype)
    if x.value.dtype.kind == "f" and not np.all(np.mod(x.value, 1) == 0):
        raise ReplayError(f"layer {layer.name} (Embedding) is fed fractions; expected integer ids")
    ids = np.asarray(x.value).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise ReplayError(f"layer {layer.name}: input ids must be in 0..{table.shape[0] - 1}, got {ids.min()}..{ids.max()}")
    mask = ids != 0 if layer.config.get("mask_zero") else None
    return Tensor(table[ids], mask)


def _masking(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    value = float(layer.config.get("mask_value", 0.0))
    mask = np.any(x.value != value, axis=-1)
    return Tensor(x.value * mask[..., None], mask)


def _batch_norm(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    _require_last_axis(layer, x)
    gamma, beta, (mean, variance) = _affine_weights(layer, x.value.shape[-1], ("moving mean", "moving variance"))
    epsilon = float(layer.config.get("epsilon", 1e-3))
    return Tensor((x.value - mean) / np.sqrt(variance + epsilon) * gamma + beta, x.mask)


def _require_last_axis(layer: RawLayer, x: Tensor, unsupported: str = "") -> None:
    """Normalisation layers: the replay runs the last axis (Keras's default) and nothing else."""
    axis = layer.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, x.value.ndim - 1) or unsupported:
        raise ReplayError(
            f"layer {layer.name} ({layer.class_name}) normalises axis {axis!r}{unsupported}; the replay runs the last axis only"
        )


def _affine_weights(layer: RawLayer, features: int, statistics: tuple[str, ...]) -> tuple[Any, Any, list[np.ndarray]]:
    """gamma (1 without scale), beta (0 without center) and the named statistics, each (features,)."""
    scale, center = layer.config.get("scale", True), layer.config.get("center", True)
    names = [name for name, stored in (("gamma", scale), ("beta", center)) if stored] + list(statistics)
    values = dict(zip(names, stored_weights(layer, [(features,)] * len(names), f"{', '.join(names)} for {features} features")))
    return values.get("gamma", 1.0), values.get("beta", 0.0), [values[name] for name in statistics]


def _reshape(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    target = tuple(layer.config.get("target_shape", ()))
    known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
    size = int(np.prod(x.value.shape[1:], dtype=np.int64))
    unknown = target.count(-1)
    if unknown > 1 or any(d < -1 for d in target) or (size != known if unknown == 0 else known == 0 or size % known):
        raise ReplayError(f"layer {layer.name} (Reshape) cannot reshape {x.value.shape[1:]} to target_shape {list(target)}")
    return Tensor(x.value.reshape((x.value.shape[0], *target)))


def _repeat(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    if x.value.ndim != 2:
        raise ReplayError(f"layer {layer.name} (RepeatVector) is fed shape {x.value.shape}; expected (batch, features)")
    return Tensor(np.repeat(x.value[:, None, :], int(layer.config.get("n", 1)), axis=1))


def _identity(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    return x


# --- convolution, pooling, normalisation, shapes (channels last, as Keras's defaults) -------------


def _spatial_settings(layer: RawLayer, rank: int, window_key: str) -> tuple[tuple[int, ...], tuple[int, ...], str, tuple[int, ...]]:
    """(window, strides, padding, dilation) of a convolution or pooling layer, checked."""
    config = layer.config
    _require_channels_last(layer)
    if config.get("groups", 1) != 1:
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has groups={config['groups']!r}; the replay runs groups=1")
    window = _per_axis(layer, config.get(window_key), rank, window_key)
    strides = (
        window
        if config.get("strides") is None and window_key == "pool_size"
        else _per_axis(layer, config.get("strides", 1), rank, "strides")
    )
    dilation = _per_axis(layer, config.get("dilation_rate", 1), rank, "dilation_rate")
    padding = config.get("padding", "valid")
    if padding not in ("valid", "same", "causal") or (padding == "causal" and rank != 1):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has padding={padding!r}; expected valid or same (causal in 1D)")
    if any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) combines strides and dilation, which Keras does not run")
    return window, strides, padding, dilation


def _require_channels_last(layer: RawLayer) -> None:
    if layer.config.get("data_format") not in (None, "channels_last"):
        raise ReplayError(
            f"layer {layer.name} ({layer.class_name}) has data_format={layer.config['data_format']!r}; the replay runs channels_last"
        )


def _per_axis(layer: RawLayer, value: Any, rank: int, key: str) -> tuple[int, ...]:
    values = [value] * rank if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, list) or len(values) != rank or not all(isinstance(v, int) and v >= 1 for v in values):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has {key}={value!r}; expected {rank} positive integer(s)")
    return tuple(values)


def _convolution(rank: int) -> Callable[[RawLayer, Tensor, Runtime], Tensor]:
    def run(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
        window, strides, padding, dilation = _spatial_settings(layer, rank, "kernel_size")
        if x.value.ndim != rank + 2:
            raise ReplayError(
                f"layer {layer.name} ({layer.class_name}) is fed shape {x.value.shape}; expected (batch, {rank} spatial axes, channels)"
            )
        filters, use_bias = layer.config.get("filters"), layer.config.get("use_bias", True)
        shapes = [(*window, x.value.shape[-1], filters), (filters,)][: 1 + bool(use_bias)]
        weights = stored_weights(layer, shapes, f"a kernel for {x.value.shape[-1]} channels" + (" and a bias" if use_bias else ""))
        y = spatial.convolve(x.value.astype(replay.dtype), weights[0].astype(replay.dtype), strides, padding, dilation)
        if use_bias:
            y = y + weights[1].astype(replay.dtype)
        return Tensor(activation(_activation_of(layer), replay.semantics)(y))  # convolutions pass no mask on

    return run


def _keras1_convolution_1d(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    """Keras 1's Convolution1D, read as Keras 2's loader converts it to Conv1D: nb_filter, filter_length,
    subsample_length, border_mode and bias are filters, kernel_size, strides, padding and
    use_bias; the kernel is stored (filter_length, 1, input_dim, nb_filter) by Keras 1.2 and
    (nb_filter, input_dim, filter_length, 1) by Keras 1.1."""
    config = layer.config
    unknown = sorted({"atrous_rate", "dim_ordering"} & set(config))
    if unknown:
        raise ReplayError(f"layer {layer.name} (Convolution1D) has {unknown[0]}={config[unknown[0]]!r}, which the replay does not run")
    filters, window = keras1_conv1d_sizes(config, layer.name)
    converted = {
        "filters": filters,
        "kernel_size": [window],
        "strides": [config.get("subsample_length", 1)],
        "padding": config.get("border_mode", "valid"),
        "activation": config.get("activation", "linear"),
        "use_bias": config.get("bias", True),
    }
    weights = list(layer.weights)
    if weights:
        weights[0] = NamedArray(weights[0].name, keras1_conv1d_kernel(np.asarray(weights[0].array), filters, window))
    return _convolution(1)(RawLayer(layer.name, "Conv1D", converted, tuple(weights)), x, replay)


def _pooling(rank: int, mode: str) -> Callable[[RawLayer, Tensor, Runtime], Tensor]:
    def run(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
        window, strides, padding, _ = _spatial_settings(layer, rank, "pool_size")
        if x.value.ndim != rank + 2:
            raise ReplayError(
                f"layer {layer.name} ({layer.class_name}) is fed shape {x.value.shape}; expected (batch, {rank} spatial axes, channels)"
            )
        return Tensor(spatial.pool(x.value, window, strides, padding, mode))

    return run


def _global_pooling(rank: int, mode: str) -> Callable[[RawLayer, Tensor, Runtime], Tensor]:
    def run(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
        _require_channels_last(layer)
        axes = tuple(range(1, rank + 1))
        keepdims = bool(layer.config.get("keepdims", False))
        if mode == "average" and rank == 1 and x.mask is not None:  # the mean over the steps the mask keeps
            kept = x.mask[..., None].astype(x.value.dtype)
            value = (x.value * kept).sum(axis=1, keepdims=keepdims) / kept.sum(axis=1, keepdims=keepdims)
        else:
            value = (x.value.mean if mode == "average" else x.value.max)(axis=axes, keepdims=keepdims)
        return Tensor(value)

    return run


def _layer_normalization(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    _require_last_axis(layer, x, " with rms_scaling" if layer.config.get("rms_scaling") else "")
    gamma, beta, _ = _affine_weights(layer, x.value.shape[-1], ())
    return Tensor(spatial.layer_normalization(x.value, gamma, beta, float(layer.config.get("epsilon", 1e-3))), x.mask)


def _relu(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    config = layer.config
    max_value, slope, threshold = config.get("max_value"), float(config.get("negative_slope", 0.0)), float(config.get("threshold", 0.0))
    value = np.where(x.value >= threshold, x.value, slope * (x.value - threshold))
    if max_value is not None:
        value = np.minimum(value, float(max_value))
    return Tensor(value, x.mask)


def _leaky_relu(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    slope = float(layer.config.get("negative_slope", layer.config.get("alpha", 0.3)))  # tf-keras calls it alpha
    return Tensor(np.where(x.value > 0, x.value, slope * x.value), x.mask)


def _prelu(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    """`relu(x) - alpha * relu(-x)`, alpha one weight per feature except along `shared_axes`."""
    shared = layer.config.get("shared_axes") or []
    shared = [shared] if isinstance(shared, int) else shared
    shape = tuple(1 if axis + 1 in shared else size for axis, size in enumerate(x.value.shape[1:]))
    alpha: np.ndarray = stored_weights(layer, [shape], f"one alpha per feature of {x.value.shape[1:]} (shared_axes={shared})")[0].astype(
        replay.dtype
    )
    return Tensor(np.maximum(x.value, 0) - alpha * np.maximum(-x.value, 0), x.mask)


def _elu(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    alpha = float(layer.config.get("alpha", 1.0))
    return Tensor(np.where(x.value > 0, x.value, alpha * np.expm1(np.minimum(x.value, 0))), x.mask)


def _thresholded_relu(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    theta = float(layer.config.get("theta", 1.0))
    return Tensor(x.value * (x.value > theta), x.mask)


def dot(layer: RawLayer, path: str, inputs: list[Tensor]) -> Tensor:
    """Keras's Dot: per sample, sum over `axes` of the two inputs (after L2 normalisation along
    them when `normalize`); a result of one number per sample becomes (batch, 1). No mask."""
    if len(inputs) != 2:
        raise ReplayError(f"layer {path} (Dot) is called on {len(inputs)} tensors; expected two")
    x, y = (t.value for t in inputs)
    axes = layer.config.get("axes")
    pair = axes if isinstance(axes, list) else [axes, axes]
    if len(pair) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in pair):
        raise ReplayError(f"layer {path} (Dot) has axes={axes!r}; expected an integer or two")
    axis_x, axis_y = (a % v.ndim if a < 0 else a for a, v in zip(pair, (x, y)))
    if axis_x == 0 or axis_y == 0 or x.shape[axis_x] != y.shape[axis_y] or x.shape[0] != y.shape[0]:
        raise ReplayError(f"layer {path} (Dot) cannot contract shapes {x.shape} and {y.shape} along axes {pair}")
    if layer.config.get("normalize"):
        x = x / np.sqrt(np.maximum(np.sum(np.square(x), axis=axis_x, keepdims=True), 1e-12))
        y = y / np.sqrt(np.maximum(np.sum(np.square(y), axis=axis_y, keepdims=True), 1e-12))
    value = np.stack([np.tensordot(a, b, axes=(axis_x - 1, axis_y - 1)) for a, b in zip(x, y)])
    return Tensor(value[:, None] if value.ndim == 1 else value)


def _softmax_layer(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    if x.mask is not None:
        raise ReplayError(f"layer {layer.name} (Softmax) is fed a masked tensor, whose masked softmax the replay does not run yet")
    axis = layer.config.get("axis", -1)
    if not isinstance(axis, int):
        raise ReplayError(f"layer {layer.name} (Softmax) has axis={axis!r}; the replay runs one axis")
    shifted = np.exp(x.value - x.value.max(axis=axis, keepdims=True))
    return Tensor(shifted / shifted.sum(axis=axis, keepdims=True))


def _permute(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    dims = layer.config.get("dims")
    if not isinstance(dims, list) or sorted(dims) != list(range(1, x.value.ndim)):
        raise ReplayError(f"layer {layer.name} (Permute) has dims={dims!r}; expected a permutation of 1..{x.value.ndim - 1}")
    return Tensor(np.transpose(x.value, (0, *dims)))


def _time_amounts(layer: RawLayer, key: str) -> tuple[int, int]:
    value = layer.config.get(key, 1)
    amounts = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(amounts, list) or len(amounts) != 2 or not all(isinstance(a, int) and a >= 0 for a in amounts):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has {key}={value!r}; expected one or two integers ≥ 0")
    return amounts[0], amounts[1]


def _zero_padding_1d(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    before, after = _time_amounts(layer, "padding")
    return Tensor(np.pad(x.value, [(0, 0), (before, after), (0, 0)]))


def _cropping_1d(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    before, after = _time_amounts(layer, "cropping")
    if before + after >= x.value.shape[1]:
        raise ReplayError(f"layer {layer.name} (Cropping1D) crops {before + after} of {x.value.shape[1]} steps")
    return Tensor(x.value[:, before : x.value.shape[1] - after])


def _upsampling_1d(layer: RawLayer, x: Tensor, replay: Runtime) -> Tensor:
    size = layer.config.get("size", 2)
    if not isinstance(size, int) or size < 1:
        raise ReplayError(f"layer {layer.name} (UpSampling1D) has size={size!r}; expected a positive integer")
    return Tensor(np.repeat(x.value, size, axis=1))


SIMPLE_LAYERS: Mapping[str, Callable[[RawLayer, Tensor, Runtime], Tensor]] = {
    **dict.fromkeys(IDENTITY, _identity),
    "Dense": _dense,
    "Embedding": _embedding,
    "Masking": _masking,
    "BatchNormalization": _batch_norm,
    "Activation": lambda layer, x, replay: Tensor(activation(_activation_of(layer), replay.semantics)(x.value), x.mask),
    "Flatten": lambda layer, x, replay: Tensor(x.value.reshape((x.value.shape[0], -1))),
    "Reshape": _reshape,
    "RepeatVector": _repeat,
    "Conv1D": _convolution(1),
    "Conv2D": _convolution(2),
    "Convolution1D": _keras1_convolution_1d,
    "MaxPooling1D": _pooling(1, "max"),
    "MaxPooling2D": _pooling(2, "max"),
    "AveragePooling1D": _pooling(1, "average"),
    "AveragePooling2D": _pooling(2, "average"),
    "GlobalMaxPooling1D": _global_pooling(1, "max"),
    "GlobalMaxPooling2D": _global_pooling(2, "max"),
    "GlobalAveragePooling1D": _global_pooling(1, "average"),
    "GlobalAveragePooling2D": _global_pooling(2, "average"),
    "LayerNormalization": _layer_normalization,
    "ReLU": _relu,
    "LeakyReLU": _leaky_relu,
    "Softmax": _softmax_layer,
    "Permute": _permute,
    "PReLU": _prelu,
    "ELU": _elu,
    "ThresholdedReLU": _thresholded_relu,
    "ZeroPadding1D": _zero_padding_1d,
    "Cropping1D": _cropping_1d,
    "UpSampling1D": _upsampling_1d,
}


def concatenate(layer: RawLayer, path: str, inputs: list[Tensor], semantics: Semantics) -> Tensor:
    values = [t.value for t in inputs]
    shapes = [v.shape for v in values]
    axis = layer.config.get("axis", -1)
    rank = values[0].ndim
    if (
        not isinstance(axis, int)
        or not -rank <= axis < rank
        or any(v.ndim != rank for v in values)
        or any(np.delete(np.array(shape), axis % rank).tolist() != np.delete(np.array(shapes[0]), axis % rank).tolist() for shape in shapes)
    ):
        raise ReplayError(f"layer {path} ({layer.class_name}) cannot join shapes {shapes} on axis {axis}")
    full = [
        np.ones(t.value.shape, bool)
        if t.mask is None
        else np.broadcast_to(t.mask.reshape(t.mask.shape + (1,) * (t.value.ndim - t.mask.ndim)), t.value.shape)
        for t in inputs
    ]
    mask: np.ndarray | None = None
    if any(t.mask is not None for t in inputs):
        # Keras 3 keeps a position where any joined mask keeps it; Keras 2 / tf-keras where every one does.
        joined = np.concatenate(full, axis=axis)
        mask = np.asarray(joined.any(axis=-1) if semantics == KERAS3 else joined.all(axis=-1))
    return Tensor(np.concatenate(values, axis=axis), mask)


def merge(layer: RawLayer, path: str, inputs: list[Tensor], semantics: Semantics) -> Tensor:
    """Add, Subtract, Multiply, Average, Maximum, Minimum: inputs of one shape, reduced elementwise."""
    name = layer.class_name
    values = [t.value for t in inputs]
    shapes = [v.shape for v in values]
    arity = MERGE_ARITY.get(name)
    if len(set(shapes)) != 1 or (arity is not None and len(values) != arity):
        expected = "two inputs of one shape" if arity == 2 else "inputs of one shape"
        raise ReplayError(f"layer {path} ({name}) is called on shapes {shapes}; expected {expected}")
    if merge_values_follow_masks(name, semantics == KERAS3) and any(t.mask is not None for t in inputs):
        return MASK_AWARE_MERGES[name](inputs)
    return Tensor(MERGE_REDUCTIONS[name](np.stack(values)), _merged_mask(inputs, semantics))


def _feature_mask(t: Tensor) -> np.ndarray | None:
    return None if t.mask is None else np.broadcast_to(t.mask[..., None], t.value.shape)


def _keras3_masked_multiply(inputs: list[Tensor]) -> Tensor:
    """Keras 3's Multiply of masked inputs (`Multiply._merge_function`): masked steps count as 1,
    and where every input is masked and the OR of the masks drops a step, the output is 0."""
    masks = [_feature_mask(t) for t in inputs]
    factors = [t.value if mask is None else np.where(mask, t.value, 1) for t, mask in zip(inputs, masks)]
    output = np.prod(np.stack(factors), axis=0)
    present = [mask for mask in masks if mask is not None]
    if len(present) != len(masks):
        return Tensor(output)
    either = np.logical_or.reduce(present)
    return Tensor(np.where(either, output, 0), either.any(axis=-1))


def _keras3_masked_extreme(function: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[list[Tensor]], Tensor]:
    """Keras 3's Maximum / Minimum of masked inputs (`_apply_merge_op_and_or_mask`), step for step."""

    def merge(inputs: list[Tensor]) -> Tensor:
        output, output_mask = inputs[0].value, _feature_mask(inputs[0])
        for t in inputs[1:]:
            x, mask = t.value, _feature_mask(t)
            if mask is not None:
                x = np.where(mask, x, output)
            if output_mask is not None:
                output = np.where(output_mask, output, x)
            output_mask = np.logical_or(output_mask, mask) if mask is not None and output_mask is not None else None
            output = function(output, x)
        return Tensor(output, None if output_mask is None else np.asarray(output_mask.any(axis=-1)))

    return merge


# How each merge of model.registry.KERAS3_MASK_AWARE_MERGES computes its values under masks.
MASK_AWARE_MERGES: Mapping[str, Callable[[list[Tensor]], Tensor]] = {
    "Multiply": _keras3_masked_multiply,
    "Maximum": _keras3_masked_extreme(np.maximum),
    "Minimum": _keras3_masked_extreme(np.minimum),
}


def _merged_mask(inputs: list[Tensor], semantics: Semantics) -> np.ndarray | None:
    """The output mask of a merge layer, as the Keras that saved the file computes it (`compute_mask`).

    Keras 3: Add, Multiply, ... keep a step where any input keeps it, and only when every input
    is masked. Keras 2 / tf-keras: a step only where every mask keeps it.
    """
    present = [t.mask for t in inputs if t.mask is not None]
    if not present:
        return None
    if semantics == KERAS3:
        return None if len(present) != len(inputs) else np.logical_or.reduce(present)
    return np.logical_and.reduce(present)


MERGE_REDUCTIONS: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {
    "Add": lambda stacked: stacked.sum(axis=0),
    "Subtract": lambda stacked: stacked[0] - stacked[1],
    "Multiply": lambda stacked: stacked.prod(axis=0),
    "Average": lambda stacked: stacked.mean(axis=0),
    "Maximum": lambda stacked: stacked.max(axis=0),
    "Minimum": lambda stacked: stacked.min(axis=0),
}
MERGE_ARITY: Mapping[str, int] = {"Subtract": 2}
# Every merge layer: Concatenate joins, the others reduce.
MERGES: Mapping[str, Callable[[RawLayer, str, list[Tensor], Semantics], Tensor]] = {
    "Concatenate": concatenate,
    **dict.fromkeys(MERGE_REDUCTIONS, merge),
}
