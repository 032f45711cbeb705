"""A Keras model as an ONNX graph: the config's call graph walked once, each layer by its entry in
`CONVERTERS`, recurrent layers from their canonical weights.

ONNX's recurrent operators and Keras's compute the same equations once their gates are put in
ONNX's order (GRU z, r, h as Keras; LSTM i, o, f, c where Keras has i, f, c, o): a GRU with
reset_after=True is `linear_before_reset=1` with separate input and recurrent biases, one with
reset_after=False is 0; both update h = z * h_prev + (1 - z) * hh, as Keras does. A go_backwards
layer is direction="reverse", whose outputs ONNX aligns with the input's time steps, so its
sequence is reversed to Keras's processing order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from grucli.errors import GrucliError
from grucli.files.inputs import input_specs
from grucli.model import paths
from grucli.model.layers import activation_name
from grucli.model.records import ModelFile, ModelLayers, RawLayer, RecurrentLayer
from grucli.model.registry import (
    MODEL_CLASSES,
    RECURRENT_LAYER_CLASSES,
    Role,
    holds_recurrent,
    is_input_layer,
    role_of,
)
from grucli.model.semantics import KERAS2, Semantics, semantics_for
from grucli.model.spec import GraphSpec, Ref, graph_spec

OPSET = 17
IR_VERSION = 8  # what ONNX Runtime 1.16 and later read; opset 17 needs IR 8


class ConvertError(GrucliError):
    """The model holds something grucli cannot write as ONNX that computes the same (the message names it)."""


@dataclass(frozen=True)
class Symbol:
    """A tensor of the graph being built: its ONNX name and rank (batch axis included)."""

    name: str
    rank: int


@dataclass(frozen=True)
class Converted:
    """The ONNX model, its input and output names, and what the conversion did that a user should know."""

    model: Any  # onnx.ModelProto
    inputs: tuple[str, ...]
    input_types: tuple[Any, ...]  # the NumPy dtype each input takes: float32, or int64 token ids
    outputs: tuple[str, ...]
    recurrent_nodes: tuple[str, ...]  # "path: GRU" for every recurrent layer, as the ONNX node that computes it
    # With state_io: each recurrent layer's initial states as inputs `{path}/h_in` (`c_in`), (batch, units)
    # each, and its final states as outputs `{path}/h_out` (`c_out`): a long sequence fed in chunks.
    state_inputs: tuple[tuple[str, int], ...] = field(default=())
    state_outputs: tuple[str, ...] = field(default=())


def convert(model_file: ModelFile, layers: ModelLayers, state_io: bool = False) -> Converted:
    """The ONNX model of a file with a config; raises ConvertError naming what cannot be written."""
    if not model_file.has_config:
        raise ConvertError(f"{model_file.path} holds weights only; convert needs its architecture: pass --config MODEL.json "
                           "(the JSON of model.to_json(), or a .keras config.json)")
    builder = _Builder(model_file, layers, semantics_for(model_file.keras_version, model_file.format), state_io)
    return builder.build()


class _Builder:
    def __init__(self, model_file: ModelFile, layers: ModelLayers, semantics: Semantics, state_io: bool = False) -> None:
        import onnx  # imported here: reading files never needs it

        self.onnx = onnx
        self.file = model_file
        self.semantics = semantics
        self.recurrent: dict[str, RecurrentLayer] = {layer.path: layer for layer in layers.recurrent}
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.recurrent_nodes: list[str] = []
        self.state_io = state_io
        self.state_inputs: list[tuple[str, int]] = []
        self.state_outputs: list[tuple[str, str]] = []  # (graph output, the tensor it shows)
        self._names = itertools.count()

    # --- the graph ---------------------------------------------------------------------------

    def build(self) -> Converted:
        helper, proto = self.onnx.helper, self.onnx.TensorProto
        specs = input_specs(self.file)
        inputs = [Symbol(f"input_{index}" if len(specs) > 1 else "input", 1 + len(spec.shape or ())) for index, spec in enumerate(specs)]
        for spec in specs:
            if spec.shape is None:
                raise ConvertError(f"the config declares no shape for input {spec.name}; convert needs the model's input shapes")
        outputs = self.run_model(self.file.root, "", inputs)
        graph_outputs = []
        named = [(f"output_{index}" if len(outputs) > 1 else "output", symbol.name, symbol.rank) for index, symbol in enumerate(outputs)]
        for name, tensor, rank in [*named, *[(name, tensor, 2) for name, tensor in self.state_outputs]]:
            self.nodes.append(helper.make_node("Identity", [tensor], [name]))
            graph_outputs.append(helper.make_tensor_value_info(name, proto.FLOAT, [None] * rank))
        # An input a vocabulary is declared for (it feeds an Embedding) takes token ids.
        types = [np.int64 if spec.vocabulary is not None else np.float32 for spec in specs]
        graph_inputs = [
            helper.make_tensor_value_info(symbol.name, proto.INT64 if dtype is np.int64 else proto.FLOAT,
                                          ["batch", *[d if d is not None else f"{symbol.name}_axis{i + 1}" for i, d in enumerate(spec.shape or ())]])
            for symbol, spec, dtype in zip(inputs, specs, types)
        ] + [helper.make_tensor_value_info(name, proto.FLOAT, ["batch", units]) for name, units in self.state_inputs]
        graph = helper.make_graph(self.nodes, paths.last_name(self.file.root.name) or "model", graph_inputs, graph_outputs,
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="grucli")
        model.ir_version = IR_VERSION
        self.onnx.checker.check_model(model, full_check=True)
        return Converted(model, tuple(s.name for s in inputs), tuple(types), tuple(name for name, _, _ in named),
                         tuple(self.recurrent_nodes), tuple(self.state_inputs), tuple(name for name, _ in self.state_outputs))

    def run_model(self, model: RawLayer, prefix: str, inputs: list[Symbol]) -> list[Symbol]:
        spec = graph_spec(model, self.file.path)
        if spec.sequential:
            tensors = inputs
            for member in spec.members:
                if is_input_layer(member.class_name):
                    continue
                tensors = self.call(member, f"{prefix}{member.name}", (tensors[0] if len(tensors) == 1 else tensors,), {})
            return tensors
        return self._functional(spec, prefix, inputs)

    def _functional(self, spec: GraphSpec, prefix: str, inputs: list[Symbol]) -> list[Symbol]:
        if len(spec.inputs) != len(inputs):
            raise ConvertError(f"model {spec.name} takes {len(spec.inputs)} inputs; {len(inputs)} given")
        computed: dict[Ref, Symbol] = dict(zip(spec.inputs, inputs))
        pending = list(spec.nodes)
        while pending:
            ready = [node for node in pending if all(ref in computed for ref in node.call.refs())]
            if not ready:
                raise ConvertError(f"cannot order the layer graph of {spec.name}: the inputs of {pending[0].layer.name} are never computed")
            for node in ready:
                args, kwargs = node.call.resolve(computed)
                for index, symbol in enumerate(self.call(node.layer, f"{prefix}{node.layer.name}", args, kwargs)):
                    computed[node.output_ref(index)] = symbol
                pending.remove(node)
        return [computed[ref] for ref in spec.outputs]

    def call(self, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Symbol]:
        if layer.is_operation:
            raise ConvertError(f"layer {path} is the operation {layer.module}.{layer.class_name}, which convert does not write yet")
        converter = CONVERTERS.get(layer.class_name)
        if converter is None:
            raise ConvertError(f"layer {path} ({layer.class_name}) is not one convert can write as ONNX")
        states = None
        if holds_recurrent(layer.class_name):
            kwargs = dict(kwargs)
            states = _initial_states(layer, path, args, kwargs.pop("initial_state", None))
            args = (args[0][0],) if isinstance(args[0], list) and states is not None and len(args[0]) > 1 else args
        for key, value in kwargs.items():
            if not (key in ("training", "mask") and value in (None, False)):
                raise ConvertError(f"layer {path} ({layer.class_name}) is called with {key}, which convert does not write yet")
        if len(args) != 1:
            raise ConvertError(f"layer {path} ({layer.class_name}) is called with {len(args)} positional arguments; expected one")
        if states is not None:
            return _recurrent(self, layer, path, args[0], states)
        return converter(self, layer, path, args[0])

    # --- building blocks -----------------------------------------------------------------------

    def name(self, base: str) -> str:
        return f"{base}_{next(self._names)}"

    def constant(self, array: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def int_constant(self, values: Sequence[int], base: str) -> str:
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attributes: Any) -> list[str]:
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), names, **attributes))
        return names

    def one(self, op: str, inputs: Sequence[str], **attributes: Any) -> str:
        return self.node(op, inputs, **attributes)[0]

    def activation(self, name: str | None, x: str, path: str) -> str:
        """An activation applied elementwise (or softmax on the last axis), exactly as Keras defines it."""
        if name in (None, "linear"):
            return x
        if name in ELEMENTWISE_OPS:
            op, attributes = ELEMENTWISE_OPS[name]
            return self.one(op, [x], **attributes)
        if name == "hard_sigmoid":
            alpha, beta = HARD_SIGMOID[self.semantics]
            return self.one("HardSigmoid", [x], alpha=alpha, beta=beta)
        if name in ("swish", "silu"):
            return self.one("Mul", [x, self.one("Sigmoid", [x])])
        if name == "relu6":
            return self.one("Clip", [x, self.constant(np.float32(0), "zero"), self.constant(np.float32(6), "six")])
        raise ConvertError(f"layer {path}: activation {name!r} is not one convert writes exactly")


ELEMENTWISE_OPS: Mapping[str, tuple[str, dict[str, Any]]] = {
    "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {}), "relu": ("Relu", {}), "elu": ("Elu", {"alpha": 1.0}),
    "selu": ("Selu", {}), "softsign": ("Softsign", {}), "softplus": ("Softplus", {}), "exponential": ("Exp", {}),
    "softmax": ("Softmax", {"axis": -1}),
}
# hard_sigmoid(v) = clip(alpha·v + beta, 0, 1): Keras 1/2 and tf.keras 2 against Keras 3.
HARD_SIGMOID: Mapping[Semantics, tuple[float, float]] = {KERAS2: (0.2, 0.5), Semantics.KERAS3: (1.0 / 6.0, 0.5)}
# The activations ONNX's GRU, LSTM and RNN apply inside the step, with the alpha and beta they take.
RECURRENT_ACTIVATIONS: Mapping[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "tanh": ("Tanh", (), ()), "sigmoid": ("Sigmoid", (), ()), "relu": ("Relu", (), ()), "linear": ("Affine", (1.0,), (0.0,)),
    "softsign": ("Softsign", (), ()), "softplus": ("Softplus", (), ()), "elu": ("Elu", (1.0,), ()),
}


# --- layers ------------------------------------------------------------------------------------------------


def _one_tensor(layer: RawLayer, path: str, x: Any) -> Symbol:
    if not isinstance(x, Symbol):
        raise ConvertError(f"layer {path} ({layer.class_name}) is called on {x!r}; expected one tensor")
    return x


def _tensors(layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = x if isinstance(x, list) else [x]
    if not all(isinstance(v, Symbol) for v in values):
        raise ConvertError(f"layer {path} ({layer.class_name}) is called on {x!r}; expected tensors")
    return values


def _identity(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    return [_one_tensor(layer, path, x)]


def _activation_layer(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = _one_tensor(layer, path, x)
    return [Symbol(b.activation(activation_name(layer.config.get("activation", "linear")), x.name, path), x.rank)]


def _dense(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = _one_tensor(layer, path, x)
    weights = [np.asarray(w.array) for w in layer.weights]
    use_bias = layer.config.get("use_bias", True)
    if len(weights) != (2 if use_bias else 1) or weights[0].ndim != 2:
        raise ConvertError(f"layer {path} (Dense) stores {[w.shape for w in weights]}; expected a kernel (in, units) and a bias")
    y = b.one("MatMul", [x.name, b.constant(weights[0], "kernel")])
    if use_bias:
        y = b.one("Add", [y, b.constant(weights[1], "bias")])
    return [Symbol(b.activation(activation_name(layer.config.get("activation", "linear")), y, path), x.rank)]


def _embedding(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = _one_tensor(layer, path, x)
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


def _conv1d(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """Conv1D on (batch, steps, channels): ONNX's Conv on (batch, channels, steps), transposed around it."""
    x = _one_tensor(layer, path, x)
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


def _pooling1d(op: str) -> Callable[[_Builder, RawLayer, str, Any], list[Symbol]]:
    def pool(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        x = _one_tensor(layer, path, x)
        _channels_last(layer, path)
        window = _window(layer, path, "pool_size", 2)
        strides = layer.config.get("strides") or window
        strides = _window(layer, path, "strides", window) if not isinstance(strides, int) else strides
        y = b.one(op, [b.one("Transpose", [x.name], perm=[0, 2, 1])], kernel_shape=[window], strides=[strides],
                  **_padding(layer, path, window))
        return [Symbol(b.one("Transpose", [y], perm=[0, 2, 1]), 3)]

    return pool


def _global_pooling1d(op: str) -> Callable[[_Builder, RawLayer, str, Any], list[Symbol]]:
    def pool(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        x = _one_tensor(layer, path, x)
        _channels_last(layer, path)
        keepdims = bool(layer.config.get("keepdims", False))
        return [Symbol(b.one(op, [x.name], axes=[1], keepdims=int(keepdims)), 3 if keepdims else 2)]

    return pool


def _last_axis(layer: RawLayer, path: str, x: Symbol) -> None:
    axis = layer.config.get("axis", -1)
    axes = axis if isinstance(axis, list) else [axis]
    if len(axes) != 1 or axes[0] not in (-1, x.rank - 1):
        raise ConvertError(f"layer {path} ({layer.class_name}) normalises axis {axis!r}; convert writes the last axis only")


def _batch_normalization(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """Inference-time BatchNormalization: (x - mean) / sqrt(variance + epsilon) · gamma + beta."""
    x = _one_tensor(layer, path, x)
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


def _layer_normalization(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    x = _one_tensor(layer, path, x)
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


def _merge(op: str, scale: float | None = None) -> Callable[[_Builder, RawLayer, str, Any], list[Symbol]]:
    def merge(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        values = _tensors(layer, path, x)
        y = values[0].name
        for other in values[1:]:
            y = b.one(op, [y, other.name])
        if scale is not None:  # Average: the sum over the count
            y = b.one("Mul", [y, b.constant(np.float32(1.0 / len(values)), "scale")])
        return [Symbol(y, values[0].rank)]

    return merge


def _subtract(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = _tensors(layer, path, x)
    if len(values) != 2:
        raise ConvertError(f"layer {path} (Subtract) is called on {len(values)} tensors; expected two")
    return [Symbol(b.one("Sub", [values[0].name, values[1].name]), values[0].rank)]


def _concatenate(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    values = _tensors(layer, path, x)
    axis = layer.config.get("axis", -1)
    if not isinstance(axis, int):
        raise ConvertError(f"layer {path} (Concatenate) has axis={axis!r}; expected an integer")
    return [Symbol(b.one("Concat", [v.name for v in values], axis=axis), values[0].rank)]


def _time_distributed(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    """TimeDistributed(Dense), (Activation), (Dropout): layers that act on the last axis alone
    compute the same on every step at once, so the inner layer is written on the whole tensor."""
    x = _one_tensor(layer, path, x)
    inner = layer.children[0][1] if layer.children else None
    if inner is None or inner.class_name not in POSITION_WISE:
        raise ConvertError(f"layer {path} is TimeDistributed({inner.class_name if inner else '?'}), which convert does not write yet")
    return CONVERTERS[inner.class_name](b, inner, path, x)


def _model(b: _Builder, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
    return b.run_model(layer, paths.prefix(path), _tensors(layer, path, x))


# --- recurrent layers ---------------------------------------------------------------------------------------


def _initial_states(layer: RawLayer, path: str, args: Sequence[Any], initial_state: Any) -> list[Symbol] | None:
    """A recurrent layer's initial states: Keras 3 passes `initial_state=[...]`; Keras 2 saves the
    call as one list of tensors, the input first."""
    if initial_state is None and args and isinstance(args[0], list) and len(args[0]) > 1:
        initial_state = args[0][1:]
    if initial_state is None:
        return None
    states = initial_state if isinstance(initial_state, list) else [initial_state]
    if not states or not all(isinstance(state, Symbol) for state in states):
        raise ConvertError(f"layer {path} ({layer.class_name}) is given the initial state {initial_state!r}; expected tensors")
    return states


def _recurrent(b: _Builder, layer: RawLayer, path: str, x: Any, states: Sequence[Symbol] | None = None) -> list[Symbol]:
    x = _one_tensor(layer, path, x)
    role = role_of(layer.class_name)
    if role is Role.BIDIRECTIONAL:
        return _bidirectional(b, layer, path, x, states)
    if role is Role.RNN and len(layer.children) > 1:
        return _stacked(b, layer, path, x, states)
    recurrent = _recurrent_layer(b, path, layer)
    states = _checked_states(recurrent, states)
    if b.state_io:
        states = _streamed_states(b, recurrent, states)
    run = _recurrent_node(b, recurrent, x, states)
    if b.state_io:
        b.state_outputs += [(f"{recurrent.path}/{name}_out", state) for name, state in zip(recurrent.family.states, run.states)]
    settings = recurrent.settings
    output = run.sequence if settings.return_sequences else run.last
    return [Symbol(output, 3 if settings.return_sequences else 2), *[Symbol(state, 2) for state in run.states]][
        : 1 + (len(run.states) if settings.return_state else 0)]


def _recurrent_layer(b: _Builder, path: str, raw: RawLayer) -> RecurrentLayer:
    if path not in b.recurrent:
        raise ConvertError(f"no weights were found for recurrent layer {path} ({raw.class_name})")
    layer = b.recurrent[path]
    settings = layer.settings
    if layer.family.onnx_op is None:
        raise ConvertError(f"layer {path} ({layer.kind}) has no ONNX recurrent operator; convert does not write it")
    if settings.stateful:
        raise ConvertError(f"layer {path} is stateful; convert does not write stateful layers yet")
    if layer.config.get("time_major"):
        raise ConvertError(f"layer {path} is time_major; convert does not write it")
    return layer


@dataclass(frozen=True)
class _Run:
    sequence: str  # (batch, time, units), in Keras's processing order
    time_ordered: str  # (batch, time, units), aligned with the input's time steps
    last: str  # (batch, units): the output after the last step processed
    states: tuple[str, ...]  # h, and c for an LSTM, each (batch, units)


def _stacked(b: _Builder, layer: RawLayer, path: str, x: Symbol, states: Sequence[Symbol] | None) -> list[Symbol]:
    """RNN([cell, cell, ...]): cell k at step t needs cell k-1's output at t and its own state at
    t-1, so the stack is a chain of whole sequences, one ONNX node per cell (a go_backwards stack
    runs every cell from the last step, each fed the one before in time order)."""
    if b.state_io:
        raise ConvertError(f"layer {path} (RNN of stacked cells) is not one --state-io streams yet")
    cells = [_recurrent_layer(b, paths.join(path, role), cell) for role, cell in layer.children]
    counts = [cell.family.state_count for cell in cells]
    if states is not None and len(states) != sum(counts):
        raise ConvertError(f"layer {path} is given {len(states)} initial states; expected {sum(counts)} (each cell's, in order)")
    sequence, finals, run = x, [], None
    for index, cell in enumerate(cells):
        given = None if states is None else states[sum(counts[:index]):sum(counts[:index + 1])]
        run = _recurrent_node(b, cell, sequence, given)
        sequence = Symbol(run.time_ordered, 3)
        finals += [Symbol(state, 2) for state in run.states]
    assert run is not None  # an RNN of stacked cells has two or more
    return_sequences, return_state = bool(layer.config.get("return_sequences")), bool(layer.config.get("return_state"))
    output = Symbol(run.sequence, 3) if return_sequences else Symbol(run.last, 2)
    return [output, *finals] if return_state else [output]


def _streamed_states(b: _Builder, layer: RecurrentLayer, states: Sequence[Symbol] | None) -> list[Symbol]:
    """--state-io: the layer's initial states become graph inputs (zeros for a sequence's first chunk)."""
    if states is not None:
        raise ConvertError(f"layer {layer.path} is given its initial state by the model; --state-io streams only layers that start "
                           "from zeros")
    if layer.settings.go_backwards:
        raise ConvertError(f"layer {layer.path} reads its sequence backwards (go_backwards): a sequence fed in chunks does not give "
                           "what one pass gives, so --state-io refuses it")
    names = [f"{layer.path}/{name}_in" for name in layer.family.states]
    b.state_inputs += [(name, layer.units) for name in names]
    return [Symbol(name, 2) for name in names]


def _checked_states(layer: RecurrentLayer, states: Sequence[Symbol] | None) -> Sequence[Symbol] | None:
    if states is not None and len(states) != layer.family.state_count:
        raise ConvertError(f"layer {layer.path} is given {len(states)} initial states; expected {layer.family.state_count} "
                           f"({', '.join(layer.family.states)})")
    return states


def _recurrent_node(b: _Builder, layer: RecurrentLayer, x: Symbol, states: Sequence[Symbol] | None = None) -> _Run:
    """One ONNX GRU, LSTM or RNN node computing `layer` on `x` (batch, time, features)."""
    family, settings = layer.family, layer.settings
    op, order = family.onnx_op, family.onnx_gates
    assert op is not None and order is not None, layer.kind  # _recurrent_layer refuses families without one
    units = layer.units
    columns = np.concatenate([np.arange(units) + family.gates.index(gate) * units for gate in order])
    kernel, recurrent = np.asarray(layer.kernel)[:, columns], np.asarray(layer.recurrent_kernel)[:, columns]
    inputs = [b.one("Transpose", [x.name], perm=[1, 0, 2]), b.constant(kernel.T[None], "W"), b.constant(recurrent.T[None], "R")]
    if layer.bias is not None:
        bias = np.asarray(layer.bias)
        input_bias, recurrent_bias = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))
        inputs.append(b.constant(np.concatenate([input_bias[columns], recurrent_bias[columns]])[None], "B"))
    if states is not None:  # initial_h (and initial_c) after the empty B (when absent) and sequence_lens
        inputs += [""] * (4 - len(inputs)) + [""]
        inputs += [b.one("Unsqueeze", [state.name, b.int_constant([0], "axis")]) for state in states]
    activations, alphas, betas = _step_activations(b, layer, op)
    attributes: dict[str, Any] = {"hidden_size": units, "direction": "reverse" if settings.go_backwards else "forward",
                                  "activations": activations}
    if alphas:
        attributes["activation_alpha"] = alphas
    if betas:
        attributes["activation_beta"] = betas
    if family.two_row_bias:  # GRU: reset_after=True applies r after the recurrent product, as linear_before_reset=1
        attributes["linear_before_reset"] = int(bool(settings.reset_after))
    outputs = b.node(op, inputs, outputs=1 + family.state_count, **attributes)
    b.recurrent_nodes.append(f"{layer.path}: ONNX {op}")
    y = b.one("Squeeze", [outputs[0], b.int_constant([1], "axis")])  # (time, batch, units)
    time_ordered = b.one("Transpose", [y], perm=[1, 0, 2])
    sequence = _reversed_in_time(b, time_ordered) if settings.go_backwards else time_ordered
    states = tuple(b.one("Squeeze", [state, b.int_constant([0], "axis")]) for state in outputs[1:])
    return _Run(sequence, time_ordered, states[0], states)


def _step_activations(b: _Builder, layer: RecurrentLayer, op: str) -> tuple[list[str], list[float], list[float]]:
    """ONNX's activation list for the operator (f, g; f, g, h for an LSTM; f for an RNN), with the
    alpha and beta values of those that take them, in order."""
    settings = layer.settings
    # f (the gates), g (the candidate) and, for an LSTM, h (applied to the cell state).
    names = [settings.recurrent_activation, settings.activation] if layer.family.uses_recurrent_activation else [settings.activation]
    if layer.family.has_cell_state:
        names.append(settings.activation)
    activations, alphas, betas = [], [], []
    for name in names:
        name = name or "linear"
        if name == "hard_sigmoid":
            alpha, beta = HARD_SIGMOID[b.semantics]
            activations.append("HardSigmoid")
            alphas.append(alpha)
            betas.append(beta)
            continue
        if name not in RECURRENT_ACTIVATIONS:
            raise ConvertError(f"layer {layer.path}: activation {name!r} is not one ONNX's {op} computes exactly")
        onnx_name, alpha_values, beta_values = RECURRENT_ACTIVATIONS[name]
        activations.append(onnx_name)
        alphas.extend(alpha_values)
        betas.extend(beta_values)
    return activations, alphas, betas


def _reversed_in_time(b: _Builder, sequence: str) -> str:
    return b.one("Slice", [sequence, b.int_constant([-1], "start"), b.int_constant([-(2**62)], "end"),
                           b.int_constant([1], "axis"), b.int_constant([-1], "step")])


def _bidirectional(b: _Builder, layer: RawLayer, path: str, x: Symbol, states: Sequence[Symbol] | None) -> list[Symbol]:
    directions = dict(layer.children)
    if b.state_io:
        raise ConvertError(f"layer {path} is Bidirectional: its backward direction reads the whole sequence, so a sequence fed in "
                           "chunks does not give what one pass gives; --state-io refuses it")
    if any(role_of(child.class_name) is Role.RNN and len(child.children) > 1 for child in directions.values()):
        raise ConvertError(f"layer {path} (Bidirectional around stacked cells) is not one convert writes yet")
    layers = [_recurrent_layer(b, paths.direction(path, which), directions[which]) for which in (paths.FORWARD, paths.BACKWARD)]
    halves: list[Sequence[Symbol] | None] = [None, None]
    if states is not None:  # the forward direction's states, then the backward one's
        count = layers[0].family.state_count
        if len(states) != count + layers[1].family.state_count:
            raise ConvertError(f"layer {path} is given {len(states)} initial states; expected "
                               f"{count + layers[1].family.state_count} (forward, then backward)")
        halves = [states[:count], states[count:]]
    runs = [(_recurrent_node(b, direction, x, half), direction.settings) for direction, half in zip(layers, halves)]
    (forward, forward_settings), (backward, _) = runs
    if forward_settings.return_sequences:  # both in time order, as Bidirectional returns them
        outputs = [forward.time_ordered, backward.time_ordered]
    else:
        outputs = [forward.last, backward.last]
    rank = 3 if forward_settings.return_sequences else 2
    merge_mode = layer.config.get("merge_mode", "concat")
    merges: Mapping[Any, Callable[[], list[str]]] = {
        "concat": lambda: [b.one("Concat", outputs, axis=-1)],
        "sum": lambda: [b.one("Add", outputs)],
        "mul": lambda: [b.one("Mul", outputs)],
        "ave": lambda: [b.one("Mul", [b.one("Add", outputs), b.constant(np.float32(0.5), "half")])],
        None: lambda: list(outputs),
    }
    if merge_mode not in merges:
        raise ConvertError(f"layer {path} (Bidirectional) has merge_mode={merge_mode!r}; expected concat, sum, mul, ave or None")
    merged = [Symbol(name, rank) for name in merges[merge_mode]()]
    if forward_settings.return_state:
        merged += [Symbol(state, 2) for run, _ in runs for state in run.states]
    return merged


# Every layer class convert writes, and how.
IDENTITY_CLASSES = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")
# Layers that act on the last axis alone, the same at every other position (TimeDistributed adds nothing).
POSITION_WISE = frozenset({"Dense", "Activation", *IDENTITY_CLASSES})
CONVERTERS: Mapping[str, Callable[[_Builder, RawLayer, str, Any], list[Symbol]]] = {
    **{name: _identity for name in IDENTITY_CLASSES},
    "Dense": _dense, "Activation": _activation_layer, "Embedding": _embedding, "TimeDistributed": _time_distributed,
    "Conv1D": _conv1d, "MaxPooling1D": _pooling1d("MaxPool"), "AveragePooling1D": _pooling1d("AveragePool"),
    "GlobalAveragePooling1D": _global_pooling1d("ReduceMean"), "GlobalMaxPooling1D": _global_pooling1d("ReduceMax"),
    "BatchNormalization": _batch_normalization, "LayerNormalization": _layer_normalization,
    "Add": _merge("Add"), "Multiply": _merge("Mul"), "Maximum": _merge("Max"), "Minimum": _merge("Min"),
    "Average": _merge("Add", scale=1.0), "Subtract": _subtract, "Concatenate": _concatenate,
    **{name: _model for name in MODEL_CLASSES},
    **{name: _recurrent for name in RECURRENT_LAYER_CLASSES},
}
