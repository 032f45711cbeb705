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

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from grucli.convert.layers import (
    CALL_CONVERTERS,
    CONVERTERS,
    MASK_RULES,
    MaskRule,
    with_explicit_mask,
)
from grucli.convert.operations import convert_operation
from grucli.convert.recurrent import initial_states, recurrent_call
from grucli.convert.symbols import (
    BOOL,
    ELEMENTWISE_OPS,
    FLOAT,
    HARD_SIGMOID,
    INT64,
    ConvertError,
    Symbol,
)
from grucli.errors import first_line, install_hint
from grucli.files.inputs import input_specs
from grucli.model import paths
from grucli.model.records import ModelFile, ModelLayers, RawLayer, RecurrentLayer
from grucli.model.registry import (
    holds_recurrent,
    is_input_layer,
    runs_code,
)
from grucli.model.semantics import Semantics, semantics_for
from grucli.model.spec import GraphSpec, graph_spec

OPSET = 17


IR_VERSION = 8  # what ONNX Runtime 1.16 and later read; opset 17 needs IR 8


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
    try:
        import onnx  # noqa: F401 - the graph is built and checked with it
    except ImportError as exc:
        raise ConvertError(f"convert needs the onnx package, which cannot be imported ({first_line(exc)}); "
                           f"install it with {install_hint('onnx')}") from None
    builder = GraphBuilder(model_file, layers, semantics_for(model_file.keras_version, model_file.format), state_io)
    return builder.build()


class GraphBuilder:
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
        # An input a vocabulary is declared for (it feeds an Embedding) takes token ids.
        types = [np.int64 if spec.vocabulary is not None else np.float32 for spec in specs]
        inputs = [Symbol(f"input_{index}" if len(specs) > 1 else "input", 1 + len(spec.shape or ()),
                         dtype=INT64 if dtype is np.int64 else FLOAT) for index, (spec, dtype) in enumerate(zip(specs, types))]
        for spec in specs:
            if spec.shape is None:
                raise ConvertError(f"the config declares no shape for input {spec.name}; convert needs the model's input shapes")
        outputs = self.run_model(self.file.root, "", inputs)
        graph_outputs = []
        named = [(f"output_{index}" if len(outputs) > 1 else "output", symbol.name, symbol.rank, symbol.dtype)
                 for index, symbol in enumerate(outputs)]
        element_types = {FLOAT: proto.FLOAT, INT64: proto.INT64, BOOL: proto.BOOL}
        for name, tensor, rank, dtype in [*named, *[(name, tensor, 2, FLOAT) for name, tensor in self.state_outputs]]:
            self.nodes.append(helper.make_node("Identity", [tensor], [name]))
            graph_outputs.append(helper.make_tensor_value_info(name, element_types[dtype], [None] * rank))
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
        return Converted(model, tuple(s.name for s in inputs), tuple(types), tuple(name for name, _, _, _ in named),
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
        return spec.evaluate(inputs, lambda node, args, kwargs: self.call(node.layer, f"{prefix}{node.layer.name}", args, kwargs),
                             self.file.path)

    def call(self, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Symbol]:
        """One saved call of `layer`: every positional argument and keyword is used or refused by
        name, and the mask its input carries goes on as the replay (and Keras) passes it."""
        if layer.is_operation:
            return [convert_operation(self, layer, path, args, kwargs)]
        whole_call = CALL_CONVERTERS.get(layer.class_name)
        if whole_call is not None:
            return whole_call(self, layer, path, args, kwargs)
        converter = CONVERTERS.get(layer.class_name)
        if converter is None:
            if runs_code(layer.class_name):
                raise ConvertError(f"layer {path} ({layer.class_name}) holds Python code, which grucli never runs or converts")
            raise ConvertError(f"layer {path} ({layer.class_name}) is not one convert can write as ONNX")
        kwargs = dict(kwargs)
        explicit_mask = kwargs.pop("mask", None)
        initial_state = kwargs.pop("initial_state", None) if holds_recurrent(layer.class_name) else None
        for key, value in kwargs.items():
            if not (key == "training" and value in (None, False)):
                raise ConvertError(f"layer {path} ({layer.class_name}) is called with {key}, which convert does not write yet")
        if len(args) != 1:
            raise ConvertError(f"layer {path} ({layer.class_name}) is called with {len(args)} positional arguments; expected one")
        if holds_recurrent(layer.class_name):
            return self._recurrent(layer, path, args[0], initial_state, explicit_mask)
        x = with_explicit_mask(layer, path, args[0], explicit_mask)
        return self._masked_as_the_replay(layer, path, x, converter(self, layer, path, x))

    def _recurrent(self, layer: RawLayer, path: str, first: Any, initial_state: Any, explicit_mask: Any) -> list[Symbol]:
        x, states = initial_states(layer, path, first, initial_state)
        if self.semantics == Semantics.KERAS3 and initial_state is not None and explicit_mask is None and isinstance(x, Symbol):
            # Keras 3 fills in `mask` only when the input is the call's one tensor argument: given
            # initial_state=, the layer runs unmasked and its output sequence carries the input's mask on.
            outputs = recurrent_call(self, layer, path, x.with_mask(None), states)
            return [outputs[0].with_mask(x.mask if outputs[0].rank == 3 else None), *outputs[1:]]
        return recurrent_call(self, layer, path, with_explicit_mask(layer, path, x, explicit_mask), states)

    def _masked_as_the_replay(self, layer: RawLayer, path: str, x: Any, outputs: list[Symbol]) -> list[Symbol]:
        """The outputs with the mask Keras gives them: a layer that acts on each step alone keeps its
        input's mask, one that mixes steps drops it; one that computes its own (Embedding, Masking,
        merges, nested models) has set it; a masked input to any other is refused."""
        inputs = x if isinstance(x, list) else [x]
        if not any(isinstance(value, Symbol) and value.mask is not None for value in inputs):
            return outputs
        rule = MASK_RULES.get(layer.class_name)
        if rule is None:
            raise ConvertError(f"layer {path} ({layer.class_name}) is fed a masked tensor; convert does not write how it treats a mask")
        if rule is MaskRule.KEEP:
            return [output.with_mask(inputs[0].mask) for output in outputs]
        if rule is MaskRule.DROP:
            return [output.with_mask(None) for output in outputs]
        return outputs

    # --- building blocks -----------------------------------------------------------------------

    def name(self, base: str) -> str:
        return f"{base}_{next(self._names)}"

    def constant(self, array: np.ndarray, base: str) -> str:
        """A float32 constant (weights, scales)."""
        return self.constant_of(np.asarray(array, dtype=np.float32), base)

    def constant_of(self, array: np.ndarray, base: str) -> str:
        """A constant of the array's own element type (float32, int64 or bool)."""
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def int_constant(self, values: Sequence[int] | int, base: str) -> str:
        """An int64 constant (axes, shapes, indices)."""
        return self.constant_of(np.asarray(values, dtype=np.int64), base)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[Any]]:
        """Nodes made inside the block go to the list it yields (a Scan's body), not the graph."""
        outer, self.nodes = self.nodes, []
        try:
            yield self.nodes
        finally:
            self.nodes = outer

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
