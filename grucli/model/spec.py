"""A model's layer graph, parsed once from its config: which layer is called on what.

`graph_spec(model)` reads one model (the file's root, or a nested model) into a `GraphSpec`:
its members in order and, for a functional model, every saved call as a `NodeSpec` whose `Call`
holds the positional arguments and keywords as saved, each tensor a `Ref`. All config dialects
are normalised here, once:

- Keras 1/2 and tf.keras 2 `inbound_nodes` lists (`[[name, node, index, kwargs], ...]`): a call
  on several tensors is one argument, their list; tf.keras 2 saves a TFOpLambda's one-tensor
  call as the item itself, a constant first operand (`1.0 - g`) as `["_CONSTANT_VALUE", -1,
  value]`, and tensors among the keywords (`y=`, `mask=`) as `[name, node, index]`;
- Keras 3 nodes (`{"args": [...], "kwargs": {...}}`) with `__keras_tensor__`, `__slice__` and
  `__ellipsis__` objects (operations and `x[:, -1]`);
- Sequential models (list- and dict-style), whose members are called in order.

The reader has validated the structure (`schema`); this module gives it meaning. The replay
engine (`graph`) and the input shapes (`inputs`) read a `GraphSpec`, never the raw dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from grucli.errors import ModelFileError
from grucli.model.records import RawLayer
from grucli.model.registry import is_input_layer, is_model, is_sequential

KERAS2_CONSTANT = "_CONSTANT_VALUE"
T = TypeVar("T")


@dataclass(frozen=True)
class Ref:
    """A tensor of the graph: output `index` of call `node` of layer `layer`."""

    layer: str
    node: int
    index: int


@dataclass(frozen=True)
class Call:
    """One saved call of a layer or operation: positional args and keyword args as saved, each
    tensor a `Ref`, everything else the constant the file holds (numbers, lists, None, slices)."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    keras2: bool = False  # saved in the Keras 2 node format (numbers a nested model's calls from 1)

    def refs(self) -> list[Ref]:
        return list(_refs_in([self.args, dict(self.kwargs)]))

    def resolve(self, computed: Mapping[Ref, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call with every `Ref` replaced by the value computed for it."""
        return tuple(_resolved(a, computed) for a in self.args), {k: _resolved(v, computed) for k, v in self.kwargs.items()}


@dataclass(frozen=True)
class NodeSpec:
    """One call of a member layer in a functional graph."""

    layer: RawLayer
    call: Call
    output_node: int  # the node number its outputs are referred to by (`Ref.node`)

    def output_ref(self, index: int) -> Ref:
        return Ref(self.layer.name, self.output_node, index)


@dataclass(frozen=True)
class GraphSpec:
    """One model's graph: Sequential (members called in order) or functional (`nodes`)."""

    name: str
    sequential: bool
    members: tuple[RawLayer, ...]
    inputs: tuple[Ref, ...]
    outputs: tuple[Ref, ...]
    nodes: tuple[NodeSpec, ...]

    def member(self, name: str) -> RawLayer | None:
        return next((layer for layer in self.members if layer.name == name), None)

    def evaluate(
        self, inputs: Sequence[T], call: Callable[[NodeSpec, tuple[Any, ...], dict[str, Any]], Sequence[T]], where: str
    ) -> list[T]:
        """The functional graph's outputs: each node called (by `call`, with its arguments resolved)
        once every tensor it takes is computed; the replay computes arrays, convert ONNX names."""
        if len(self.inputs) != len(inputs):
            raise ModelFileError(f"model {self.name} takes {len(self.inputs)} inputs; {len(inputs)} given")
        computed: dict[Ref, T] = dict(zip(self.inputs, inputs))
        pending = list(self.nodes)
        while pending:
            ready = [node for node in pending if all(ref in computed for ref in node.call.refs())]
            if not ready:
                raise ModelFileError(
                    f"cannot order the layer graph of {self.name}: the inputs of {pending[0].layer.name} are never computed"
                )
            for node in ready:
                args, kwargs = node.call.resolve(computed)
                for index, value in enumerate(call(node, args, kwargs)):
                    computed[node.output_ref(index)] = value
                pending.remove(node)
        missing = [ref for ref in self.outputs if ref not in computed]
        if missing:
            ref = missing[0]
            raise ModelFileError(f"{where}: the output {[ref.layer, ref.node, ref.index]} of {self.name} is not computed by its graph")
        return [computed[ref] for ref in self.outputs]

    def consumers(self, ref_layer: str) -> list[RawLayer]:
        """The layers called on a tensor of layer `ref_layer` (an input's first consumer: its Embedding)."""
        return [node.layer for node in self.nodes if any(ref.layer == ref_layer for ref in node.call.refs())]


def graph_spec(model: RawLayer, source: str) -> GraphSpec:
    """The graph of `model` (the file's root or a nested model; validated by the reader) in the
    file `source` (named in errors)."""
    members = tuple(child for _, child in model.children)
    config = model.config
    entries = _layer_entries(config)
    sequential = is_sequential(model.class_name) or (
        isinstance(config.get("layers"), list) and not any(_inbound_nodes(entry) for entry in entries)
    )
    if sequential:
        return GraphSpec(model.name, True, members, (), (), ())
    by_name = {layer.name: layer for layer in members}
    nodes = []
    for entry in entries:
        name = _entry_name(entry)
        if name not in by_name:
            raise ModelFileError(f"{source}: the graph of {model.name} calls layer {name!r}, which it does not define")
        layer = by_name[name]
        for node_index, node in enumerate(_inbound_nodes(entry)):
            call = parse_call(node)
            nodes.append(NodeSpec(layer, call, node_index + _skipped_first_node(layer, call.keras2)))
    return GraphSpec(
        model.name, False, members, tuple(_refs(config.get("input_layers"))), tuple(_refs(config.get("output_layers"))), tuple(nodes)
    )


# --- config graph formats (Keras 2 lists, Keras 3 dicts) ------------------------------------------------


def _layer_entries(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    layers = config.get("layers", [])
    return [entry for entry in layers if isinstance(entry, Mapping)] if isinstance(layers, list) else []


def _entry_name(entry: Mapping[str, Any]) -> str:
    return str(entry.get("name") or entry.get("config", {}).get("name"))


def _inbound_nodes(entry: Mapping[str, Any]) -> list[Any]:
    nodes = entry.get("inbound_nodes") or []
    return list(nodes) if isinstance(nodes, list) else []


def _skipped_first_node(layer: RawLayer, keras2: bool) -> int:
    """1 where a Keras 2 config numbers a nested model's calls from 1, as tf-keras's
    `_should_skip_first_node` does: such a model's own input node is node 0 and is not saved."""
    if not keras2 or not is_model(layer.class_name):
        return 0
    members = [child for _, child in layer.children]
    if is_sequential(layer.class_name):
        return int(bool(members) and is_input_layer(members[0].class_name))
    return 1


def parse_call(node: Any) -> Call:
    """A node of `inbound_nodes` (structure validated by the reader) as a `Call`."""
    if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
        return Call(tuple(_decoded(a) for a in node.get("args", [])), {str(k): _decoded(v) for k, v in node.get("kwargs", {}).items()})
    # Keras 2: [[name, node, index, kwargs], ...]; a layer called on a list (a merge, or an RNN
    # given its initial state) lists every tensor of that list. tf.keras 2 saves a constant first
    # argument (`1.0 - g`) as ["_CONSTANT_VALUE", -1, value], and tensors among the keywords
    # (`y=` of a TFOpLambda, `mask=`) as [name, node, index].
    if node and isinstance(node[0], str):  # tf.keras 2 saves a TFOpLambda's one-tensor call as the item itself
        node = [node]
    refs = [item[2] if item[0] == KERAS2_CONSTANT else Ref(str(item[0]), int(item[1]), int(item[2])) for item in node]
    kwargs: dict[str, Any] = {}
    for item in node:
        if len(item) > 3:
            kwargs.update({str(k): _keras2_decoded(v) for k, v in item[3].items()})
    return Call((refs[0] if len(refs) == 1 else refs,), kwargs, keras2=True)


def _decoded(value: Any) -> Any:
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            history = value["config"]["keras_history"]
            return Ref(str(history[0]), int(history[1]), int(history[2]))
        if value.get("class_name") == "__slice__":  # bounds validated by the reader
            bounds = value["config"]
            return slice(bounds.get("start"), bounds.get("stop"), bounds.get("step"))
        if value.get("class_name") == "__ellipsis__":
            return Ellipsis
        return {str(k): _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def _keras2_decoded(value: Any) -> Any:
    """A Keras 2 call keyword: [name, node, index] (and [name, node, index, kwargs]) are tensors,
    as tf-keras's `_deserialize_keras_tensors` reads them."""
    if isinstance(value, list):
        if (
            3 <= len(value) <= 4
            and isinstance(value[0], str)
            and all(_is_count(v) for v in value[1:3])
            and (len(value) == 3 or isinstance(value[3], Mapping))
        ):
            return Ref(value[0], int(value[1]), int(value[2]))
        return [_keras2_decoded(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _keras2_decoded(v) for k, v in value.items()}
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _refs_in(value: Any) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _refs_in(item)


def _resolved(value: Any, computed: Mapping[Ref, Any]) -> Any:
    if isinstance(value, Ref):
        return computed[value]
    if isinstance(value, list):
        return [_resolved(v, computed) for v in value]
    if isinstance(value, dict):
        return {k: _resolved(v, computed) for k, v in value.items()}
    return value


def _refs(value: Any) -> list[Ref]:
    """`input_layers` / `output_layers`: one [name, node, index] or a list of them (validated by the reader)."""
    if not value:
        return []
    if isinstance(value[0], str):
        value = [value]
    return [Ref(str(v[0]), int(v[1]), int(v[2])) for v in value]
