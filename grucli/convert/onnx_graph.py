"""A Keras model as an ONNX graph: the config's call graph walked once, each layer by its entry in
`CONVERTERS`, recurrent layers from their canonical weights, wrappers (TimeDistributed) and nested
models by the walk itself.

ONNX's recurrent operators and Keras's compute the same equations once their gates are put in
ONNX's order (GRU z, r, h as Keras; LSTM i, o, f, c where Keras has i, f, c, o): a GRU with
reset_after=True is `linear_before_reset=1` with separate input and recurrent biases, one with
reset_after=False is 0; both update h = z * h_prev + (1 - z) * hh, as Keras does. A go_backwards
layer is direction="reverse", whose outputs ONNX aligns with the input's time steps, so its
sequence is reversed to Keras's processing order.

The graph's inputs and outputs carry the Keras model's names (its inputs' names; each output the
name of the layer computing it, made unique as tf.keras's `model.output_names` does), so a user
feeds ONNX Runtime by the names they know; an input keeps the integer type its Keras input declares.

May import: onnx, numpy, convert/ (every converter), files/ (input declarations), model/, errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grucli.convert.builder import GraphBuilder
from grucli.convert.layers import (
    CALL_CONVERTERS,
    CONVERTERS,
    MASK_RULES,
    POSITION_WISE,
    MaskRule,
    with_explicit_mask,
)
from grucli.convert.operations import convert_operation
from grucli.convert.recurrent import initial_states, recurrent_call
from grucli.convert.symbols import BOOL, FLOAT, INT32, INT64, ConvertError, Symbol, one_tensor, tensors
from grucli.errors import first_line, install_hint
from grucli.files.inputs import InputSpec, input_specs
from grucli.model import paths
from grucli.model.records import ModelFile, ModelLayers, RawLayer
from grucli.model.registry import Role, holds_recurrent, is_input_layer, role_of, runs_code
from grucli.model.semantics import Semantics, semantics_for
from grucli.model.spec import graph_spec

OPSET = 17
IR_VERSION = 8  # what ONNX Runtime 1.16 and later read; opset 17 needs IR 8

# NumPy's type of each element type a graph input or output may have.
NUMPY_TYPES: Mapping[str, type[np.generic]] = {FLOAT: np.float32, INT64: np.int64, INT32: np.int32, BOOL: np.bool_}
# The integer types a Keras input may declare that convert keeps (the graph casts them where a layer needs another).
INTEGER_INPUTS = frozenset({INT32, INT64})


@dataclass(frozen=True)
class Converted:
    """The ONNX model, its input and output names, and what the conversion did that a user should know."""

    model: Any  # onnx.ModelProto
    inputs: tuple[str, ...]  # the Keras model's input names, in order
    input_types: tuple[type[np.generic], ...]  # the NumPy type each input takes: float32, or the integer type of ids
    outputs: tuple[str, ...]  # the Keras model's output names, in order, made unique
    recurrent_nodes: tuple[str, ...]  # "path: GRU" for every recurrent layer, as the ONNX node that computes it
    # With state_io: each recurrent layer's initial states as inputs `{path}/h_in` (`c_in`), (batch, units)
    # each, and its final states as outputs `{path}/h_out` (`c_out`): a long sequence fed in chunks.
    state_inputs: tuple[tuple[str, int], ...] = field(default=())
    state_outputs: tuple[str, ...] = field(default=())
    shapes_from_input: tuple[str, ...] = field(default=())  # inputs whose rank came from the given input, not the config
    input_dims: tuple[tuple[int | str, ...], ...] = field(default=())  # each input's axes after the batch: sizes, or free axes' names

    def input_signatures(self) -> tuple[str, ...]:
        """Each graph input as a user feeds it: "encoder_inputs float32 (batch, any, 3)"."""
        return tuple(
            f"{name} {np.dtype(dtype).name} (batch, {', '.join(str(d) if isinstance(d, int) else 'any' for d in dims)})"
            for name, dtype, dims in zip(self.inputs, self.input_types, self.input_dims)
        )


def convert(
    model_file: ModelFile, layers: ModelLayers, state_io: bool = False, given_inputs: Sequence[np.ndarray] | None = None
) -> Converted:
    """The ONNX model of a file with a config; raises ConvertError naming what cannot be written.

    `given_inputs` (the probe input: --input) give the rank of an input the config declares no
    shape for, as they give the replay its shape."""
    if not model_file.has_config:
        raise ConvertError(
            f"{model_file.path} holds weights only; convert needs its architecture: pass --config MODEL.json "
            "(the JSON of model.to_json(), or a .keras config.json)"
        )
    try:
        import onnx  # noqa: F401 - the graph is built and checked with it
    except ImportError as exc:
        raise ConvertError(
            f"convert needs the onnx package, which cannot be imported ({first_line(exc)}); install it with {install_hint('onnx')}"
        ) from None
    semantics = semantics_for(model_file.keras_version, model_file.format)
    builder = GraphBuilder({layer.path: layer for layer in layers.recurrent}, semantics, state_io)
    return ModelWalk(model_file, builder).build(given_inputs)


@dataclass(frozen=True)
class _GraphInput:
    name: str
    dtype: str
    dims: tuple[int | str, ...]  # without the batch axis: sizes, or names of free axes


class ModelWalk:
    """The walk of one model's call graph: each saved call written by its converter, in order."""

    def __init__(self, model_file: ModelFile, builder: GraphBuilder) -> None:
        self.file = model_file
        self.b = builder

    # --- the graph ---------------------------------------------------------------------------

    def build(self, given_inputs: Sequence[np.ndarray] | None = None) -> Converted:
        b = self.b
        helper = b.onnx.helper
        specs = input_specs(self.file)
        declared = [_graph_input(spec, index, given_inputs) for index, spec in enumerate(specs)]
        input_names = _unique([spec.name for spec in specs], reserved=())
        b.reserve(input_names)
        inputs = [self._entering(name, graph_input, spec) for name, graph_input, spec in zip(input_names, declared, specs)]
        outputs = self.run_model(self.file.root, "", inputs)
        state_names = [name for name, _ in b.state_inputs] + [name for name, _ in b.state_outputs]
        # Inner tensors were named first; an output whose Keras name one of them took gets a suffix.
        output_names = _unique(_output_layer_names(self.file.root, self.file.path, len(outputs)), reserved=(*b.used, *state_names))
        elements = {
            FLOAT: b.onnx.TensorProto.FLOAT,
            INT64: b.onnx.TensorProto.INT64,
            INT32: b.onnx.TensorProto.INT32,
            BOOL: b.onnx.TensorProto.BOOL,
        }
        graph_outputs = []
        shown = [(name, symbol.name, symbol.rank, symbol.dtype) for name, symbol in zip(output_names, outputs)]
        for name, tensor, rank, dtype in [*shown, *[(name, tensor, 2, FLOAT) for name, tensor in b.state_outputs]]:
            b.nodes.append(helper.make_node("Identity", [tensor], [name]))
            graph_outputs.append(helper.make_tensor_value_info(name, elements[dtype], [None] * rank))
        graph_inputs = [
            helper.make_tensor_value_info(name, elements[graph_input.dtype], ["batch", *graph_input.dims])
            for name, graph_input in zip(input_names, declared)
        ]
        graph_inputs += [helper.make_tensor_value_info(name, elements[FLOAT], ["batch", units]) for name, units in b.state_inputs]
        graph = helper.make_graph(b.nodes, paths.last_name(self.file.root.name) or "model", graph_inputs, graph_outputs, b.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="grucli")
        model.ir_version = IR_VERSION
        b.onnx.checker.check_model(model, full_check=True)
        from_input = tuple(spec.name for spec in specs if spec.shape is None)
        return Converted(
            model,
            tuple(input_names),
            tuple(NUMPY_TYPES[graph_input.dtype] for graph_input in declared),
            tuple(output_names),
            tuple(b.recurrent_nodes),
            tuple(b.state_inputs),
            tuple(name for name, _ in b.state_outputs),
            from_input,
            tuple(graph_input.dims for graph_input in declared),
        )

    def _entering(self, name: str, graph_input: _GraphInput, spec: InputSpec) -> Symbol:
        """A graph input as the layers inside read it: token ids as int64, other values as float32
        (Keras casts an integer input to the float32 its layers compute in)."""
        rank = 1 + len(graph_input.dims)
        inside = INT64 if spec.vocabulary is not None else FLOAT
        if graph_input.dtype == inside:
            return Symbol(name, rank, dtype=inside)
        to = self.b.onnx.TensorProto.INT64 if inside == INT64 else self.b.onnx.TensorProto.FLOAT
        return Symbol(self.b.one("Cast", [name], to=to), rank, dtype=inside)

    def run_model(self, model: RawLayer, prefix: str, inputs: list[Symbol]) -> list[Symbol]:
        spec = graph_spec(model, self.file.path)
        if spec.sequential:
            values = inputs
            for member in spec.members:
                if is_input_layer(member.class_name):
                    continue
                values = self.call(member, f"{prefix}{member.name}", (values[0] if len(values) == 1 else values,), {})
            return values
        return spec.evaluate(
            inputs, lambda node, args, kwargs: self.call(node.layer, f"{prefix}{node.layer.name}", args, kwargs), self.file.path
        )

    def call(self, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Symbol]:
        """One saved call of `layer`: every positional argument and keyword is used or refused by
        name, and the mask its input carries goes on as the replay (and Keras) passes it."""
        b = self.b
        if layer.is_operation:
            return [convert_operation(b, layer, path, args, kwargs)]
        whole_call = CALL_CONVERTERS.get(layer.class_name)
        if whole_call is not None:
            return whole_call(b, layer, path, args, kwargs)
        role = role_of(layer.class_name)
        if layer.class_name not in CONVERTERS and role not in (Role.MODEL, Role.TIME_DISTRIBUTED):
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
        return self._masked_as_the_replay(layer, path, x, self._layer(layer, path, x))

    def _layer(self, layer: RawLayer, path: str, x: Any) -> list[Symbol]:
        """A layer that is not recurrent: a nested model, a TimeDistributed wrapper, or a converter's."""
        role = role_of(layer.class_name)
        if role is Role.MODEL:
            return self.run_model(layer, paths.prefix(path), tensors(layer, path, x))
        if role is Role.TIME_DISTRIBUTED:
            return self._time_distributed(layer, path, one_tensor(layer, path, x))
        return CONVERTERS[layer.class_name](self.b, layer, path, x)

    def _recurrent(self, layer: RawLayer, path: str, first: Any, initial_state: Any, explicit_mask: Any) -> list[Symbol]:
        x, states = initial_states(layer, path, first, initial_state)
        if self.b.semantics == Semantics.KERAS3 and initial_state is not None and explicit_mask is None and isinstance(x, Symbol):
            # Keras 3 fills in `mask` only when the input is the call's one tensor argument: given
            # initial_state=, the layer runs unmasked and its output sequence carries the input's mask on.
            outputs = recurrent_call(self.b, layer, path, x.with_mask(None), states)
            return [outputs[0].with_mask(x.mask if outputs[0].rank == 3 else None), *outputs[1:]]
        return recurrent_call(self.b, layer, path, with_explicit_mask(layer, path, x, explicit_mask), states)

    def _time_distributed(self, layer: RawLayer, path: str, x: Symbol) -> list[Symbol]:
        """TimeDistributed(inner), as the replay runs it: the inner layer on every outer step, the
        outer steps folded into the batch. A layer that acts on the last axis alone (Dense,
        Activation, Dropout) computes the same on the whole tensor, so it is written on it as is."""
        if not layer.children:
            raise ConvertError(f"layer {path} (TimeDistributed) wraps no layer")
        inner = layer.children[0][1]
        if inner.class_name in POSITION_WISE:
            return CONVERTERS[inner.class_name](self.b, inner, path, x)
        if x.rank < 3:
            raise ConvertError(f"layer {path} (TimeDistributed) is fed a tensor of rank {x.rank}; expected (batch, steps, ...)")
        if holds_recurrent(inner.class_name) and x.mask is not None:
            raise ConvertError(
                f"layer {path} (TimeDistributed) is fed a masked sequence; convert, as the replay, runs a recurrent "
                "layer in TimeDistributed on unmasked input only"
            )
        b = self.b
        shape = b.one("Shape", [x.name])
        batch_and_steps = b.one("Slice", [shape, b.int_constant([0], "start"), b.int_constant([2], "end")])
        rest = b.one("Slice", [shape, b.int_constant([2], "start"), b.int_constant([x.rank], "end")])
        folded = Symbol(
            b.one("Reshape", [x.name, b.one("Concat", [b.int_constant([-1], "batch_steps"), rest], axis=0)]), x.rank - 1, dtype=x.dtype
        )
        if holds_recurrent(inner.class_name):
            # The replay reports a recurrent layer in TimeDistributed at the wrapper's path, as inspect lists it.
            outputs = recurrent_call(b, inner, path, folded)
        else:
            outputs = self._layer(inner, path, folded)
        unfolded = []
        for output in outputs:
            inner_shape = b.one("Shape", [output.name])
            after_batch = b.one("Slice", [inner_shape, b.int_constant([1], "start"), b.int_constant([output.rank], "end")])
            target = b.one("Concat", [batch_and_steps, after_batch], axis=0)
            unfolded.append(Symbol(b.one("Reshape", [output.name, target]), output.rank + 1, dtype=output.dtype))
        return unfolded

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


def _graph_input(spec: InputSpec, index: int, given: Sequence[np.ndarray] | None) -> _GraphInput:
    """How a Keras input is declared in the graph: its element type (the integer type the Keras
    input declares; int64 for token ids it leaves as floats, which Keras casts; float32 otherwise)
    and its axes (the config's, or, where it declares none, as many free axes as the given input has)."""
    if spec.dtype in INTEGER_INPUTS:
        dtype = spec.dtype
    else:
        dtype = INT64 if spec.vocabulary is not None else FLOAT
    if spec.shape is not None:
        return _GraphInput(spec.name, dtype, tuple(d if d is not None else f"{spec.name}_axis{i + 1}" for i, d in enumerate(spec.shape)))
    if given is None or index >= len(given):
        raise ConvertError(
            f"{spec.undeclared or f'the config declares no shape for input {spec.name}'}; convert takes the input's rank from --input"
        )
    rank = np.ndim(given[index])
    return _GraphInput(spec.name, dtype, tuple(f"{spec.name}_axis{i}" for i in range(1, rank)))


def _output_layer_names(model: RawLayer, source: str, count: int) -> list[str]:
    """The name of the layer that computes each model output (a Sequential's: its last layer's)."""
    spec = graph_spec(model, source)
    if spec.sequential:
        last = next((member.name for member in reversed(spec.members) if not is_input_layer(member.class_name)), "output")
        return [last] * count
    return [ref.layer for ref in spec.outputs]


def _unique(names: Sequence[str], reserved: Sequence[str]) -> list[str]:
    """`names` made unique as tf.keras makes `model.output_names` unique (lstm, lstm_1, lstm_2),
    and distinct from the `reserved` names of the graph's other inputs and outputs."""
    taken = set(reserved)
    counts: dict[str, int] = {}
    unique: list[str] = []
    for name in names:
        proposal = name
        while proposal in taken:
            counts[name] = counts.get(name, 0) + 1
            proposal = f"{name}_{counts[name]}"
        taken.add(proposal)
        unique.append(proposal)
    return unique
