"""Every other layer convert writes, and the registry of all of them (`CONVERTERS`): dense, embedding,
convolution, pooling, normalisation, merges, nested models.

May import: numpy, convert/symbols, convert/recurrent, model/, errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from grucli.convert.recurrent import recurrent_call
from grucli.convert.symbols import ConvertError, Symbol, one_tensor, tensors
from grucli.model import paths
from grucli.model.layers import activation_name
from grucli.model.records import RawLayer
from grucli.model.registry import (
    MODEL_CLASSES,
    RECURRENT_LAYER_CLASSES,
)

if TYPE_CHECKING:
    from grucli.convert.onnx_graph import GraphBuilder


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
    if layer.config.get("mask_zero"):
        raise ConvertError(f"layer {path} (Embedding) has mask_zero=True; convert does not write masks yet")
    weights = [np.asarray(w.array) for w in layer.weights]
    if len(weights) != 1 or weights[0].ndim != 2:
        raise ConvertError(f"layer {path} (Embedding) stores {[w.shape for w in weights]}; expected one matrix (vocabulary, dim)")
    ids = b.one("Cast", [x.name], to=b.onnx.TensorProto.INT64)  # Keras casts ids to integers, as this does
    return [Symbol(b.one("Gather", [b.constant(weights[0], "embeddings"), ids], axis=0), x.rank + 1)]


def _window(layer: RawLayer, path: str, key: str, default: int = 1) -> int:
    value = layer.config.get(key, default)
    values = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
    if len(values) != 1 or not isinstance(values[0], int) or values[0] < 1:
        raise ConvertError(f"layer {path} ({layer.class_name}) has {key}={value!r}; expected one positive integer")
    return values[0]


def _channels_last(layer: RawLayer, path: str) -> None:
    if layer.config.get("data_format") not in (None, "channels_last"):
        raise ConvertError(f"layer {path} ({layer.class_name}) has data_format={layer.config['data_format']!r}; convert writes channels_last")


def _padding(layer: RawLayer, path: str, window: int, dilation: int = 1) -> dict[str, Any]:
    """Keras's padding as ONNX's: valid; same pads the extra step at the end (SAME_UPPER, as
    TensorFlow does); causal pads (window - 1)·dilation steps in front."""
    padding = layer.config.get("padding", "valid")
    if padding == "valid":
        return {"pads": [0, 0]}
    if padding == "same":
        return {"auto_pad": "SAME_UPPER"}
    if padding == "causal":
        return {"pads": [(window - 1) * dilation, 0]}
    raise ConvertError(f"layer {path} ({layer.class_name}) has padding={padding!r}; expected valid, same or causal")


def _conv1d(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """Conv1D on (batch, steps, channels): ONNX's Conv on (batch, channels, steps), transposed around it."""
    x = one_tensor(layer, path, x)
    _channels_last(layer, path)
    weights = [np.asarray(w.array) for w in layer.weights]
    use_bias = layer.config.get("use_bias", True)
    if len(weights) != (2 if use_bias else 1) or weights[0].ndim != 3 or layer.config.get("groups", 1) != 1:
        raise ConvertError(f"layer {path} (Conv1D) stores {[w.shape for w in weights]}; expected a kernel (window, in, filters)"
                           " and a bias, one group")
    window, strides, dilation = weights[0].shape[0], _window(layer, path, "strides"), _window(layer, path, "dilation_rate")
    inputs = [b.one("Transpose", [x.name], perm=[0, 2, 1]), b.constant(np.transpose(weights[0], (2, 1, 0)), "kernel")]
    if use_bias:
        inputs.append(b.constant(weights[1], "bias"))
    y = b.one("Conv", inputs, kernel_shape=[window], strides=[strides], dilations=[dilation], **_padding(layer, path, window, dilation))
    y = b.one("Transpose", [y], perm=[0, 2, 1])
    return [Symbol(b.activation(activation_name(layer.config.get("activation", "linear")), y, path), 3)]


def _pooling1d(op: str) -> Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]:
    def pool(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        x = one_tensor(layer, path, x)
        _channels_last(layer, path)
        window = _window(layer, path, "pool_size", 2)
        strides = layer.config.get("strides") or window
        strides = _window(layer, path, "strides", window) if not isinstance(strides, int) else strides
        y = b.one(op, [b.one("Transpose", [x.name], perm=[0, 2, 1])], kernel_shape=[window], strides=[strides],
                  **_padding(layer, path, window))
        return [Symbol(b.one("Transpose", [y], perm=[0, 2, 1]), 3)]

    return pool


def _global_pooling1d(op: str) -> Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]:
    def pool(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        x = one_tensor(layer, path, x)
        _channels_last(layer, path)
        keepdims = bool(layer.config.get("keepdims", False))
        return [Symbol(b.one(op, [x.name], axes=[1], keepdims=int(keepdims)), 3 if keepdims else 2)]

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
    features = (weights[0] if weights else None)
    size = features.shape[0] if features is not None else None
    if size is None:
        raise ConvertError(f"layer {path} (LayerNormalization) without gamma or beta is not one convert writes")
    gamma = weights.pop(0) if scale else np.ones(size, np.float32)
    beta = weights.pop(0) if center else np.zeros(size, np.float32)
    y = b.one("LayerNormalization", [x.name, b.constant(gamma, "gamma"), b.constant(beta, "beta")], axis=-1,
              epsilon=float(layer.config.get("epsilon", 1e-3)))
    return [Symbol(y, x.rank)]


def _merge(op: str, scale: float | None = None) -> Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]:
    def merge(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        values = tensors(layer, path, x)
        y = values[0].name
        for other in values[1:]:
            y = b.one(op, [y, other.name])
        if scale is not None:  # Average: the sum over the count
            y = b.one("Mul", [y, b.constant(np.float32(1.0 / len(values)), "scale")])
        return [Symbol(y, values[0].rank)]

    return merge


def _subtract(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = tensors(layer, path, x)
    if len(values) != 2:
        raise ConvertError(f"layer {path} (Subtract) is called on {len(values)} tensors; expected two")
    return [Symbol(b.one("Sub", [values[0].name, values[1].name]), values[0].rank)]


def _concatenate(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = tensors(layer, path, x)
    axis = layer.config.get("axis", -1)
    if not isinstance(axis, int):
        raise ConvertError(f"layer {path} (Concatenate) has axis={axis!r}; expected an integer")
    return [Symbol(b.one("Concat", [v.name for v in values], axis=axis), values[0].rank)]


def _time_distributed(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """TimeDistributed(Dense), (Activation), (Dropout): layers that act on the last axis alone
    compute the same on every step at once, so the inner layer is written on the whole tensor."""
    x = one_tensor(layer, path, x)
    inner = layer.children[0][1] if layer.children else None
    if inner is None or inner.class_name not in POSITION_WISE:
        raise ConvertError(f"layer {path} is TimeDistributed({inner.class_name if inner else '?'}), which convert does not write yet")
    return CONVERTERS[inner.class_name](b, inner, path, x)


def _model(b: GraphBuilder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    return b.run_model(layer, paths.prefix(path), tensors(layer, path, x))


# Every layer class convert writes, and how.
IDENTITY_CLASSES = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")


# Layers that act on the last axis alone, the same at every other position (TimeDistributed adds nothing).
POSITION_WISE = frozenset({"Dense", "Activation", *IDENTITY_CLASSES})


CONVERTERS: Mapping[str, Callable[[GraphBuilder, RawLayer, str, Any], list[Symbol]]] = {
    **{name: _identity for name in IDENTITY_CLASSES},
    "Dense": _dense, "Activation": _activation_layer, "Embedding": _embedding, "TimeDistributed": _time_distributed,
    "Conv1D": _conv1d, "MaxPooling1D": _pooling1d("MaxPool"), "AveragePooling1D": _pooling1d("AveragePool"),
    "GlobalAveragePooling1D": _global_pooling1d("ReduceMean"), "GlobalMaxPooling1D": _global_pooling1d("ReduceMax"),
    "BatchNormalization": _batch_normalization, "LayerNormalization": _layer_normalization,
    "Add": _merge("Add"), "Multiply": _merge("Mul"), "Maximum": _merge("Max"), "Minimum": _merge("Min"),
    "Average": _merge("Add", scale=1.0), "Subtract": _subtract, "Concatenate": _concatenate,
    **{name: _model for name in MODEL_CLASSES},
    **{name: recurrent_call for name in RECURRENT_LAYER_CLASSES},
}
