"""A whole model's forward pass in NumPy: the layer graph of the file's config, layer by layer.

Runs Sequential and Functional models (Keras 2 and Keras 3 config formats, nested models) made
of the layers listed in `SUPPORTED`, with Keras's mask propagation (Masking, Embedding with
mask_zero). Every recurrent layer's input, mask and outputs are recorded so `verify` can
compare them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from grucli.errors import ModelFileError
from grucli.layers import LAYER_KINDS
from grucli.model import CELL_CLASSES, MODEL_CLASSES, ModelFile, ModelLayers, RawLayer, RecurrentLayer
from grucli import gates, spatial
from grucli.replay import KERAS3, STATE_COUNT, ReplayError, activation, layer_outputs, merge_directions, run_layer

IDENTITY = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "InputLayer",
}
MERGES = {"Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
ATTENTION = {"Attention", "AdditiveAttention"}
RECURRENT = set(LAYER_KINDS) - CELL_CLASSES | {"RNN", "Bidirectional"}


@dataclass
class Tensor:
    value: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class RecurrentCall:
    """One call of a recurrent layer (GRU, LSTM, SimpleRNN, RNN, Bidirectional) during a replay."""

    path: str
    class_name: str
    inputs: np.ndarray
    mask: np.ndarray | None
    outputs: list[np.ndarray]
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def unsupported_layer(root: RawLayer, prefix: str = "") -> tuple[str, str] | None:
    """(path, class) of the first layer the replay cannot run, or None when it can run them all."""
    for role, child in root.children:
        path = f"{prefix}{child.name}"
        if child.is_operation:
            if child.class_name not in OPERATIONS:
                return path, f"operation {child.module}.{child.class_name}"
            continue
        if child.class_name not in SUPPORTED:
            return path, child.class_name
        if child.class_name in MODEL_CLASSES:
            found = unsupported_layer(child, f"{path}/")
            if found:
                return found
        if child.class_name == "TimeDistributed" and child.children:
            inner = child.children[0][1]
            if inner.class_name not in SUPPORTED or inner.class_name in RECURRENT | MODEL_CLASSES:
                return f"{path}", f"TimeDistributed({inner.class_name})"
        if child.class_name.startswith("ConvLSTM"):
            return path, child.class_name
        if child.class_name == "RNN" and any(c.class_name not in CELL_CLASSES for _, c in child.children):
            return path, "RNN with a custom cell"
        if child.class_name == "Bidirectional":
            inner = [c for _, c in child.children]
            if any(c.class_name == "RNN" and [r for r, _ in c.children] != ["cell"] for c in inner):
                return path, "Bidirectional around an RNN of stacked cells"
            if any(c.class_name == "RNN" and any(cell.class_name not in CELL_CLASSES for _, cell in c.children) for c in inner):
                return path, "Bidirectional around an RNN with a custom cell"
    return None


class ModelReplay:
    """Replays a model file; build once, `run` on any input."""

    def __init__(
        self, model: ModelFile, layers: ModelLayers, semantics: str, dtype: type = np.float64, trace: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.progress = progress  # (layer path, steps done, steps in all)
        self.model = model
        self.recurrent: dict[str, RecurrentLayer] = {layer.path: layer for layer in layers.recurrent}
        self.semantics = semantics
        self.dtype = dtype
        self.trace = trace
        self.calls: list[RecurrentCall] = []

    def check_supported(self) -> None:
        found = unsupported_layer(self.model.root)
        if found:
            raise ReplayError(f"layer {found[0]} ({found[1]}) is not one the replay engine can run")

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.check_supported()
        self.calls = []
        with np.errstate(all="ignore"):  # NaN/Inf weights give NaN/Inf outputs, reported, not warned
            outputs = self._run_model(self.model.root, "", [Tensor(np.asarray(x)) for x in inputs])
        return [t.value for t in outputs]

    # --- graphs -----------------------------------------------------------------------------------

    def _run_model(self, model: RawLayer, prefix: str, inputs: list[Tensor]) -> list[Tensor]:
        members = [child for _, child in model.children]
        config = model.config
        if model.class_name == "Sequential" or isinstance(config.get("layers"), list) and not any(
            _inbound_nodes(m) for m in _layer_entries(config)
        ):
            tensors = inputs
            for member in members:
                if member.class_name == "InputLayer":
                    continue
                args = (tensors[0] if len(tensors) == 1 else tensors,)
                tensors = self._call(member, f"{prefix}{member.name}", args, {})
            return tensors
        return self._run_functional(model, prefix, inputs)

    def _run_functional(self, model: RawLayer, prefix: str, inputs: list[Tensor]) -> list[Tensor]:
        config = model.config
        entries = _layer_entries(config)
        by_name = {child.name: child for _, child in model.children}
        computed: dict[Ref, Tensor] = {}
        input_refs = _refs(config.get("input_layers"))
        if len(input_refs) != len(inputs):
            raise ReplayError(f"model {model.name} takes {len(input_refs)} inputs; {len(inputs)} given")
        for ref, tensor in zip(input_refs, inputs):
            computed[ref] = tensor
        pending = [(entry, node_index, parse_call(node)) for entry in entries for node_index, node in enumerate(_inbound_nodes(entry))]
        while pending:
            progressed = False
            for item in list(pending):
                entry, node_index, call = item
                if not all(ref in computed for ref in call.refs()):
                    continue
                name = _entry_name(entry)
                if name not in by_name:
                    raise ModelFileError(f"{self.model.path}: the graph of {model.name} calls layer {name!r}, which it does not define")
                layer = by_name[name]
                args, kwargs = call.resolve(computed)
                outputs = self._call(layer, f"{prefix}{name}", args, kwargs)
                saved_index = node_index + _skipped_first_node(layer, call.keras2)
                for index, tensor in enumerate(outputs):
                    computed[Ref(name, saved_index, index)] = tensor
                pending.remove(item)
                progressed = True
            if not progressed:
                missing = _entry_name(pending[0][0])
                raise ReplayError(f"cannot order the layer graph of {model.name}: the inputs of {missing} are never computed")
        outputs = []
        for ref in _refs(config.get("output_layers")):
            if ref not in computed:
                raise ModelFileError(f"{self.model.path}: the output {[ref.layer, ref.node, ref.index]} of {model.name} is not computed by its graph")
            outputs.append(computed[ref])
        return outputs

    # --- layers --------------------------------------------------------------------------------------

    def _call(self, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
        """Run one call of a layer or operation on its whole saved call: every positional argument
        and keyword is either used or refused by name, never dropped."""
        name = layer.class_name
        if layer.is_operation:
            return [run_operation(layer, path, args, kwargs)]
        _check_keywords(layer, path, kwargs, _used_keywords(name))
        if len(args) != 1:
            raise ReplayError(f"layer {path} ({name}) is called with {len(args)} positional arguments; the replay runs layers called on one input")
        if name in MODEL_CLASSES:
            return self._run_model(layer, f"{path}/", _tensor_list(args[0], path, name))
        if name in MERGES:
            return [_merge(layer, path, _tensor_list(args[0], path, name), self.semantics)]
        if name in ATTENTION:
            return _attention(layer, path, _tensor_list(args[0], path, name), kwargs, self.dtype)
        if name in RECURRENT:
            x, initial_state = _recurrent_inputs(layer, path, args[0], kwargs.get("initial_state"))
            return self._call_recurrent(layer, path, _with_explicit_mask(layer, path, x, kwargs.get("mask")), initial_state)
        x = args[0]
        if not isinstance(x, Tensor):
            what = f"{len(x)} tensors" if isinstance(x, list) else f"the constant {x!r}"
            raise ReplayError(f"layer {path} ({name}) is called on {what}; the replay expects one tensor")
        x = _with_explicit_mask(layer, path, x, kwargs.get("mask"))
        if name == "TimeDistributed":
            return [self._time_distributed(layer, path, x)]
        return [SIMPLE_LAYERS[name](layer, x, self)]

    def _call_recurrent(self, layer: RawLayer, path: str, x: Tensor, initial_state: list[np.ndarray] | None) -> list[Tensor]:
        outputs, traces = self.recurrent_outputs(layer, path, x.value, x.mask, initial_state)
        self.calls.append(RecurrentCall(path, layer.class_name, x.value, x.mask, outputs, traces))
        # Bidirectional keeps return_sequences on the layer it wraps.
        config = layer.children[0][1].config if layer.class_name == "Bidirectional" and layer.children else layer.config
        sequence_mask = x.mask if config.get("return_sequences") else None
        return [Tensor(value, sequence_mask if index == 0 else None) for index, value in enumerate(outputs)]

    def recurrent_outputs(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None = None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """Outputs of one recurrent layer (as Keras returns them) and each direction's gate trace.

        `initial_state` is what the layer was called with (`initial_state=[h, c]`): for a
        Bidirectional layer the forward states then the backward ones, for stacked cells each
        cell's states in order."""
        x = np.asarray(x, dtype=self.dtype)
        if layer.class_name == "Bidirectional":
            return self._bidirectional(layer, path, x, mask, initial_state)
        if layer.class_name == "RNN" and len(layer.children) > 1:
            return self._stacked(layer, path, x, mask, initial_state)
        recurrent = self._layer(path)
        run = run_layer(recurrent, x, mask, self.semantics, self.dtype, self.trace, progress=self._progress_for(path),
                        initial_state=initial_state)
        return layer_outputs(run, recurrent.config), {path: run.trace}

    def _bidirectional(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        config = layer.config
        forward, backward = self._layer(f"{path}/forward"), self._layer(f"{path}/backward")
        return_sequences = bool(forward.config.get("return_sequences"))
        halves = _split_states(initial_state, [forward, backward], path)
        # Bidirectional forces zero_output_for_mask = return_sequences on both directions.
        runs = [
            run_layer(direction, x, mask, self.semantics, self.dtype, self.trace, zero_output_for_mask=return_sequences,
                      progress=self._progress_for(direction.path), initial_state=states)
            for direction, states in zip((forward, backward), halves)
        ]
        if return_sequences:
            y_forward, y_backward = runs[0].sequence, runs[1].sequence[:, ::-1]
        else:
            y_forward, y_backward = runs[0].last_output, runs[1].last_output
        merged = merge_directions(y_forward, y_backward, config.get("merge_mode", "concat"))
        if forward.config.get("return_state"):
            merged += runs[0].states + runs[1].states
        return merged, {f"{path}/forward": runs[0].trace, f"{path}/backward": runs[1].trace}

    def _stacked(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        # Cell k at step t needs only cell k-1's output at t and its own state at t-1, so the
        # stack runs as a chain of whole sequences. go_backwards reverses time once, up front.
        config = layer.config
        backwards = bool(config.get("go_backwards"))
        sequence = x[:, ::-1] if backwards else x
        step_mask = mask[:, ::-1] if backwards and mask is not None else mask
        states: list[np.ndarray] = []
        traces = {}
        run = None
        cells = [self._layer(f"{path}/{role}") for role, _ in layer.children]
        for cell, cell_states in zip(cells, _split_states(initial_state, cells, path)):
            run = run_layer(cell, sequence, step_mask, self.semantics, self.dtype, self.trace, go_backwards=False,
                            progress=self._progress_for(cell.path), initial_state=cell_states)
            sequence = run.sequence
            states += run.states
            traces[cell.path] = run.trace
        assert run is not None
        output = run.sequence if config.get("return_sequences") else run.last_output
        return ([output, *states] if config.get("return_state") else [output]), traces

    def _progress_for(self, path: str) -> Callable[[int, int], None] | None:
        report = self.progress
        if report is None:
            return None
        return lambda done, total: report(path, done, total)

    def _layer(self, path: str) -> RecurrentLayer:
        if path not in self.recurrent:
            raise ReplayError(f"no weights were found for recurrent layer {path}")
        return self.recurrent[path]

    def _time_distributed(self, layer: RawLayer, path: str, x: Tensor) -> Tensor:
        inner = layer.children[0][1]
        batch, timesteps = x.value.shape[:2]
        flat = Tensor(x.value.reshape((batch * timesteps,) + x.value.shape[2:]))
        if inner.class_name not in SIMPLE_LAYERS:
            raise ReplayError(f"layer {path} wraps {inner.class_name} in TimeDistributed, which the replay cannot run")
        out = SIMPLE_LAYERS[inner.class_name](inner, flat, self).value
        return Tensor(out.reshape((batch, timesteps) + out.shape[1:]), x.mask)


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
    if not keras2 or layer.class_name not in MODEL_CLASSES:
        return 0
    members = [child for _, child in layer.children]
    if layer.class_name == "Sequential":
        return int(bool(members) and members[0].class_name == "InputLayer")
    return 1


@dataclass(frozen=True)
class Ref:
    """A tensor of the graph: output `index` of call `node` of layer `layer`."""

    layer: str
    node: int
    index: int


@dataclass(frozen=True)
class Call:
    """One saved call of a layer or operation: positional args and keyword args as saved, each
    tensor a `Ref`, everything else the constant the file holds (numbers, lists, None, arrays)."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    keras2: bool = False  # saved in the Keras 2 node format (numbers a nested model's calls from 1)

    def refs(self) -> list[Ref]:
        return list(_refs_in([self.args, dict(self.kwargs)]))

    def resolve(self, computed: Mapping[Ref, Tensor]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call with every `Ref` replaced by the tensor computed for it."""
        return tuple(_resolved(a, computed) for a in self.args), {k: _resolved(v, computed) for k, v in self.kwargs.items()}


def parse_call(node: Any) -> Call:
    """A node of `inbound_nodes` (structure validated by the reader) as a `Call`."""
    if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
        return Call(tuple(_decoded(a) for a in node.get("args", [])), {str(k): _decoded(v) for k, v in node.get("kwargs", {}).items()})
    # Keras 2: [[name, node, index, kwargs], ...]; a layer called on a list (a merge, or an RNN
    # given its initial state) lists every tensor of that list.
    refs = [Ref(str(item[0]), int(item[1]), int(item[2])) for item in node]
    kwargs: dict[str, Any] = {}
    for item in node:
        if len(item) > 3:
            kwargs.update({str(k): _decoded(v) for k, v in item[3].items()})
    return Call((refs[0] if len(refs) == 1 else refs,), kwargs, keras2=True)


def _decoded(value: Any) -> Any:
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            history = value["config"]["keras_history"]
            return Ref(str(history[0]), int(history[1]), int(history[2]))
        return {str(k): _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def _refs_in(value: Any) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _refs_in(item)


def _resolved(value: Any, computed: Mapping[Ref, Tensor]) -> Any:
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


def _tensor_list(value: Any, path: str, name: str) -> list[Tensor]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, Tensor) for v in values):
        raise ReplayError(f"layer {path} ({name}) is called on {value!r}; the replay expects tensors only")
    return values


RECURRENT_KEYWORDS = ("initial_state", "mask")
ATTENTION_KEYWORDS = ("mask", "use_causal_mask", "return_attention_scores")


def _used_keywords(class_name: str) -> tuple[str, ...]:
    """The call keywords each kind of layer's implementation reads (the rest are refused if they matter)."""
    if class_name in RECURRENT:
        return RECURRENT_KEYWORDS
    if class_name in ATTENTION:
        return ATTENTION_KEYWORDS
    if class_name in MERGES or class_name in MODEL_CLASSES:
        return ()
    return ("mask",)


def _attention(layer: RawLayer, path: str, inputs: list[Tensor], kwargs: Mapping[str, Any], dtype: type) -> list[Tensor]:
    """Keras's Attention (dot or concat scores) and AdditiveAttention layers, as their `call` reads:
    scores of query and key, value positions the value mask drops (and, causal, later ones) pushed
    down by 1e9 before the softmax, the weighted sum of the values, zeros where the query is masked."""
    name, config = layer.class_name, layer.config
    if len(inputs) not in (2, 3):
        raise ReplayError(f"layer {path} ({name}) is called on {len(inputs)} tensors; expected [query, value] or [query, value, key]")
    query, value = inputs[0].value.astype(dtype), inputs[1].value.astype(dtype)
    key = inputs[2].value.astype(dtype) if len(inputs) == 3 else value
    if query.ndim != 3 or value.ndim != 3 or key.shape != value.shape[:2] + key.shape[2:] or query.shape[-1] != key.shape[-1]:
        raise ReplayError(f"layer {path} ({name}) is called on shapes {[t.value.shape for t in inputs]}; expected "
                          "(batch, Tq, dim) queries and (batch, Tv, dim) values and keys")
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
        scale = _weights(layer, [(dim,)] if use_scale else [], "a scale per feature" if use_scale else "no weights")
        factor = scale[0].astype(dtype) if use_scale else 1.0
        return np.sum(factor * np.tanh(query[:, :, None, :] + key[:, None, :, :]), axis=-1)
    mode = config.get("score_mode", "dot")
    if mode not in ("dot", "concat"):
        raise ReplayError(f"layer {path} (Attention) has score_mode={mode!r}; expected dot or concat")
    shapes = [()] * (int(use_scale) + int(mode == "concat"))
    stored = iter(w.astype(dtype) for w in _weights(layer, shapes, "a scalar scale and/or concat weight"))
    scale = next(stored) if use_scale else None
    if mode == "dot":
        scores = query @ np.swapaxes(key, -2, -1)
        return scores * scale if scale is not None else scores
    concat_weight = next(stored)
    summed = query[:, :, None, :] + key[:, None, :, :]
    return concat_weight * np.sum(np.tanh(summed * scale if scale is not None else summed), axis=-1)


def _with_explicit_mask(layer: RawLayer, path: str, x: Tensor, mask: Any) -> Tensor:
    """Keras 3 saves the mask a layer was called with (`mask=`: recurrent layers, global average
    pooling, ...) as a tensor of the graph; it replaces the one the input carries."""
    if mask is None:
        return x
    if not isinstance(mask, Tensor) or np.shape(mask.value) != x.value.shape[:2]:
        shown = np.shape(mask.value) if isinstance(mask, Tensor) else repr(mask)
        raise ReplayError(f"layer {path} ({layer.class_name}) is called with mask {shown}; expected a tensor of shape {x.value.shape[:2]}")
    return Tensor(x.value, np.asarray(mask.value, dtype=bool))


def _recurrent_inputs(layer: RawLayer, path: str, first: Any, initial_state: Any) -> tuple[Tensor, list[np.ndarray] | None]:
    """A recurrent layer's input and initial states: Keras 3 passes `initial_state=[...]`; Keras 2
    saves a call with initial_state as one list of tensors, the input first."""
    if isinstance(first, list) and first and initial_state is None:
        first, initial_state = first[0], first[1:] or None
    if not isinstance(first, Tensor):
        raise ReplayError(f"layer {path} ({layer.class_name}) is called on {first!r}; the replay expects a tensor")
    if initial_state is None:
        return first, None
    states = list(_flattened(initial_state))  # stacked cells take one list per cell: [[h0], [h1, c1]]
    if not states or not all(isinstance(state, Tensor) for state in states):
        raise ReplayError(f"layer {path} ({layer.class_name}) is given the initial state {initial_state!r}; expected tensors")
    return first, [state.value for state in states]


def _flattened(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flattened(item)
    else:
        yield value


def _split_states(states: Sequence[np.ndarray] | None, layers: Sequence[RecurrentLayer], path: str) -> list[list[np.ndarray] | None]:
    """Initial states handed to several layers (Bidirectional's directions, stacked cells), in order."""
    if states is None:
        return [None] * len(layers)
    counts = [STATE_COUNT[gates.equation_family(layer.kind)] for layer in layers]
    if len(states) != sum(counts):
        raise ReplayError(f"layer {path} is given {len(states)} initial states; expected {sum(counts)}")
    split, start = [], 0
    for count in counts:
        split.append(list(states[start:start + count]))
        start += count
    return split


# Keywords a saved layer call may carry that change nothing at inference, with the values that do so.
_HARMLESS_KEYWORDS: Mapping[str, tuple[Any, ...]] = {"training": (None, False), "mask": (None,)}


def _check_keywords(layer: RawLayer, path: str, kwargs: Mapping[str, Any], used: Sequence[str] = ()) -> None:
    """Refuse, by name, any keyword the layer's implementation does not use (`used`) and that
    would change what it computes."""
    for key, value in kwargs.items():
        if key in used:
            continue
        if key in _HARMLESS_KEYWORDS and any(value is allowed for allowed in _HARMLESS_KEYWORDS[key]):
            continue
        shown = "a tensor" if isinstance(value, Tensor) else repr(value)
        raise ReplayError(f"layer {path} ({layer.class_name}) is called with {key}={shown}, which the replay does not support")


@dataclass(frozen=True)
class Operation:
    """How the replay runs one `keras.ops` call saved in a Keras 3 functional model."""

    arity: int  # positional arguments, each a tensor or a number (a list, for `takes_list`)
    settings: tuple[str, ...]  # the op's own config keys it reads (besides `name`)
    compute: Callable[[list[Any], Mapping[str, Any]], Any]
    takes_list: bool = False  # one positional argument: a list of tensors (concatenate)
    required: tuple[str, ...] = ()  # settings without a default


def run_operation(layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Tensor:
    """A Keras 3 operation saved in a functional model (`g * 2 + 1`, `keras.ops.maximum(g, 0)`, and
    the NotEqual/Any/LogicalOr ops Keras 3 saves to compute masks). Every argument and setting is
    used or refused by name."""
    name = layer.class_name
    if name not in OPERATIONS:
        known = ", ".join(sorted(OPERATIONS))
        raise ReplayError(f"layer {path} is the operation {layer.module}.{name}, which the replay cannot run; it runs: {known}")
    operation = OPERATIONS[name]
    unused = sorted(set(layer.config) - {"name", *operation.settings})
    if unused:
        raise ReplayError(f"operation {path} ({name}) has the setting {unused[0]}={layer.config[unused[0]]!r}, which the replay does not use")
    if kwargs:
        raise ReplayError(f"operation {path} ({name}) is called with {', '.join(sorted(kwargs))}, which the replay does not support")
    if len(args) != operation.arity:
        raise ReplayError(f"operation {path} ({name}) is called with {len(args)} arguments; expected {operation.arity}")
    if operation.takes_list:
        if not isinstance(args[0], list) or not args[0]:
            raise ReplayError(f"operation {path} ({name}) is called on {args[0]!r}; expected a list of tensors")
        operands = [_operand(arg, path, name) for arg in args[0]]
    else:
        operands = [_operand(arg, path, name) for arg in args]
    settings = {key: layer.config[key] for key in operation.settings if key in layer.config}
    missing = [key for key in operation.required if settings.get(key) is None]
    if missing:
        raise ReplayError(f"operation {path} ({name}) has no {missing[0]} setting; expected one")
    _check_settings(path, name, settings)
    try:
        with np.errstate(all="ignore"):
            value = operation.compute(operands, settings)
    except (ValueError, np.exceptions.AxisError) as exc:  # numpy's words for shapes and axes that do not fit
        shapes = [np.shape(operand) for operand in operands]
        raise ReplayError(f"operation {path} ({name}) cannot run on shapes {shapes} with {settings or 'no settings'}: {exc}") from None
    # Keras 3 operations do not pass a mask on (only layers do): `e * 2` after a masking
    # Embedding feeds the next layer unmasked, and so does the replay.
    return Tensor(np.asarray(value))


def _check_settings(path: str, name: str, settings: Mapping[str, Any]) -> None:
    axis = settings.get("axis")
    if axis is not None and not (isinstance(axis, int) and not isinstance(axis, bool)
                                 or isinstance(axis, list) and all(isinstance(a, int) for a in axis)):
        raise ReplayError(f"operation {path} ({name}) has axis={axis!r}; expected an integer, a list of them or null")
    if "keepdims" in settings and not isinstance(settings["keepdims"], bool):
        raise ReplayError(f"operation {path} ({name}) has keepdims={settings['keepdims']!r}; expected true or false")
    for flag in ("sparse", "ragged"):
        if settings.get(flag):
            raise ReplayError(f"operation {path} ({name}) has {flag}={settings[flag]!r}; the replay runs dense tensors only")
    dtype = settings.get("dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in NUMPY_DTYPES):
        raise ReplayError(f"operation {path} ({name}) has dtype={dtype!r}; expected one of {', '.join(NUMPY_DTYPES)}")


def _operand(value: Any, path: str, name: str) -> np.ndarray | int | float | bool:
    if isinstance(value, Tensor):
        return value.value
    if not isinstance(value, (int, float, bool)):
        raise ReplayError(f"operation {path} ({name}) has the argument {value!r}; expected a tensor or a number")
    return value


def _axis(settings: Mapping[str, Any]) -> int | tuple[int, ...] | None:
    axis = settings.get("axis")
    return tuple(axis) if isinstance(axis, list) else axis


def _binary(function: Callable[[Any, Any], Any]) -> Operation:
    return Operation(2, (), lambda operands, settings: function(operands[0], operands[1]))


def _reduction(function: Callable[..., Any]) -> Operation:
    return Operation(1, ("axis", "keepdims"), lambda operands, settings: function(
        operands[0], axis=_axis(settings), keepdims=bool(settings.get("keepdims", False))))


def _like(fill: int) -> Operation:
    def compute(operands: list[Any], settings: Mapping[str, Any]) -> np.ndarray:
        dtype = settings.get("dtype")
        return np.full_like(operands[0], fill, dtype=NUMPY_DTYPES[dtype] if dtype else None)

    return Operation(1, ("dtype",), compute)


NUMPY_DTYPES: Mapping[str, type] = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64, "bool": np.bool_,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8,
}

# `keras.ops` (and the Python operators that call them) by their saved class names.
OPERATIONS: Mapping[str, Operation] = {
    "Add": _binary(np.add), "Subtract": _binary(np.subtract), "Multiply": _binary(np.multiply),
    "Divide": _binary(np.true_divide), "TrueDivide": _binary(np.true_divide), "Power": _binary(np.power),
    "Maximum": _binary(np.maximum), "Minimum": _binary(np.minimum),
    "Equal": _binary(np.equal), "NotEqual": _binary(np.not_equal), "Greater": _binary(np.greater),
    "GreaterEqual": _binary(np.greater_equal), "Less": _binary(np.less), "LessEqual": _binary(np.less_equal),
    "LogicalAnd": _binary(np.logical_and), "LogicalOr": _binary(np.logical_or),
    "LogicalNot": Operation(1, (), lambda operands, settings: np.logical_not(operands[0])),
    "Any": _reduction(np.any), "All": _reduction(np.all), "Mean": _reduction(np.mean), "Sum": _reduction(np.sum),
    "Max": _reduction(np.max), "Min": _reduction(np.min),
    "ExpandDims": Operation(1, ("axis",), lambda operands, settings: np.expand_dims(operands[0], _axis(settings)), required=("axis",)),
    "ZerosLike": _like(0), "OnesLike": _like(1),
    "ConvertToTensor": Operation(1, ("dtype", "sparse", "ragged"), lambda operands, settings: np.asarray(
        operands[0], dtype=NUMPY_DTYPES[settings["dtype"]] if settings.get("dtype") else None)),
    "Cast": Operation(1, ("dtype",), lambda operands, settings: np.asarray(operands[0]).astype(NUMPY_DTYPES[settings["dtype"]]),
                      required=("dtype",)),
    "Concatenate": Operation(1, ("axis",), lambda operands, settings: np.concatenate(operands, axis=settings.get("axis", 0)),
                             takes_list=True),
}


# --- the layers themselves ------------------------------------------------------------------------------


def _weights(layer: RawLayer, shapes: Sequence[tuple[int | None, ...]], what: str) -> list[np.ndarray]:
    """The layer's stored weights, checked against the shapes its call needs (None: any size)."""
    found = [tuple(w.array.shape) for w in layer.weights]
    fits = len(found) == len(shapes) and all(
        len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want)) for got, want in zip(found, shapes)
    )
    if not fits:
        expected = ", ".join(str(tuple("n" if d is None else d for d in shape)) for shape in shapes)
        raise ModelFileError(f"layer {layer.name} ({layer.class_name}) stores weights of shapes {found or 'none'}; "
                             f"expected {what}: {expected or 'none'}")
    return [np.asarray(w.array) for w in layer.weights]


def _dense(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    features = x.value.shape[-1]
    use_bias = layer.config.get("use_bias", True)
    units = layer.config.get("units", layer.config.get("output_dim"))  # Keras 1 says output_dim
    weights = _weights(layer, [(features, units), (units,)][: 1 + bool(use_bias)],
                       f"a kernel for {features} input features" + (" and a bias" if use_bias else ""))
    y = x.value.astype(replay.dtype) @ weights[0].astype(replay.dtype)
    if use_bias:
        y = y + weights[1].astype(replay.dtype)
    return Tensor(activation(_activation_of(layer), replay.semantics)(y), x.mask)


def _activation_of(layer: RawLayer) -> str | None:
    from grucli.layers import activation_name

    return activation_name(layer.config.get("activation", "linear"))


def _embedding(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    table = _weights(layer, [(None, None)], "one (vocabulary, dimensions) table")[0].astype(replay.dtype)
    if x.value.dtype.kind == "f" and not np.all(np.mod(x.value, 1) == 0):
        raise ReplayError(f"layer {layer.name} (Embedding) is fed fractions; expected integer ids")
    ids = np.asarray(x.value).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise ReplayError(f"layer {layer.name}: input ids must be in 0..{table.shape[0] - 1}, got {ids.min()}..{ids.max()}")
    mask = ids != 0 if layer.config.get("mask_zero") else None
    return Tensor(table[ids], mask)


def _masking(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    value = float(layer.config.get("mask_value", 0.0))
    mask = np.any(x.value != value, axis=-1)
    return Tensor(x.value * mask[..., None], mask)


def _batch_norm(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    config = layer.config
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, x.value.ndim - 1):
        raise ReplayError(f"layer {layer.name} (BatchNormalization) normalises axis {axis}; the replay runs the last axis only")
    features = x.value.shape[-1]
    scale, center = config.get("scale", True), config.get("center", True)
    weights = iter(_weights(layer, [(features,)] * (2 + bool(scale) + bool(center)),
                            f"{'gamma, ' if scale else ''}{'beta, ' if center else ''}moving mean and variance for {features} features"))
    gamma = next(weights) if scale else 1.0
    beta = next(weights) if center else 0.0
    mean, variance = next(weights), next(weights)
    epsilon = float(config.get("epsilon", 1e-3))
    return Tensor((x.value - mean) / np.sqrt(variance + epsilon) * gamma + beta, x.mask)


def _reshape(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    target = tuple(layer.config.get("target_shape", ()))
    known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
    size = int(np.prod(x.value.shape[1:], dtype=np.int64))
    unknown = target.count(-1)
    if unknown > 1 or any(d < -1 for d in target) or (size != known if unknown == 0 else known == 0 or size % known):
        raise ReplayError(f"layer {layer.name} (Reshape) cannot reshape {x.value.shape[1:]} to target_shape {list(target)}")
    return Tensor(x.value.reshape((x.value.shape[0], *target)))


def _repeat(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    if x.value.ndim != 2:
        raise ReplayError(f"layer {layer.name} (RepeatVector) is fed shape {x.value.shape}; expected (batch, features)")
    return Tensor(np.repeat(x.value[:, None, :], int(layer.config.get("n", 1)), axis=1))


def _identity(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    return x


# --- convolution, pooling, normalisation, shapes (channels last, as Keras's defaults) -------------


def _spatial_settings(layer: RawLayer, rank: int, window_key: str) -> tuple[tuple[int, ...], tuple[int, ...], str, tuple[int, ...]]:
    """(window, strides, padding, dilation) of a convolution or pooling layer, checked."""
    config = layer.config
    if config.get("data_format") not in (None, "channels_last"):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has data_format={config['data_format']!r}; the replay runs channels_last")
    if config.get("groups", 1) != 1:
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has groups={config['groups']!r}; the replay runs groups=1")
    window = _per_axis(layer, config.get(window_key), rank, window_key)
    strides = window if config.get("strides") is None and window_key == "pool_size" else _per_axis(layer, config.get("strides", 1), rank, "strides")
    dilation = _per_axis(layer, config.get("dilation_rate", 1), rank, "dilation_rate")
    padding = config.get("padding", "valid")
    if padding not in ("valid", "same", "causal") or (padding == "causal" and rank != 1):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has padding={padding!r}; expected valid or same (causal in 1D)")
    if any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) combines strides and dilation, which Keras does not run")
    return window, strides, padding, dilation


def _per_axis(layer: RawLayer, value: Any, rank: int, key: str) -> tuple[int, ...]:
    values = [value] * rank if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, list) or len(values) != rank or not all(isinstance(v, int) and v >= 1 for v in values):
        raise ReplayError(f"layer {layer.name} ({layer.class_name}) has {key}={value!r}; expected {rank} positive integer(s)")
    return tuple(values)


def _convolution(rank: int) -> Callable[[RawLayer, Tensor, ModelReplay], Tensor]:
    def run(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
        window, strides, padding, dilation = _spatial_settings(layer, rank, "kernel_size")
        if x.value.ndim != rank + 2:
            raise ReplayError(f"layer {layer.name} ({layer.class_name}) is fed shape {x.value.shape}; expected (batch, {rank} spatial axes, channels)")
        filters, use_bias = layer.config.get("filters"), layer.config.get("use_bias", True)
        shapes = [(*window, x.value.shape[-1], filters), (filters,)][: 1 + bool(use_bias)]
        weights = _weights(layer, shapes, f"a kernel for {x.value.shape[-1]} channels" + (" and a bias" if use_bias else ""))
        y = spatial.convolve(x.value.astype(replay.dtype), weights[0].astype(replay.dtype), strides, padding, dilation)
        if use_bias:
            y = y + weights[1].astype(replay.dtype)
        return Tensor(activation(_activation_of(layer), replay.semantics)(y))  # convolutions pass no mask on

    return run


def _pooling(rank: int, mode: str) -> Callable[[RawLayer, Tensor, ModelReplay], Tensor]:
    def run(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
        window, strides, padding, _ = _spatial_settings(layer, rank, "pool_size")
        if x.value.ndim != rank + 2:
            raise ReplayError(f"layer {layer.name} ({layer.class_name}) is fed shape {x.value.shape}; expected (batch, {rank} spatial axes, channels)")
        return Tensor(spatial.pool(x.value, window, strides, padding, mode))

    return run


def _global_pooling(rank: int, mode: str) -> Callable[[RawLayer, Tensor, ModelReplay], Tensor]:
    def run(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
        if layer.config.get("data_format") not in (None, "channels_last"):
            raise ReplayError(f"layer {layer.name} ({layer.class_name}) has data_format={layer.config['data_format']!r}; the replay runs channels_last")
        axes = tuple(range(1, rank + 1))
        keepdims = bool(layer.config.get("keepdims", False))
        if mode == "average" and rank == 1 and x.mask is not None:  # the mean over the steps the mask keeps
            kept = x.mask[..., None].astype(x.value.dtype)
            value = (x.value * kept).sum(axis=1, keepdims=keepdims) / kept.sum(axis=1, keepdims=keepdims)
        else:
            value = (x.value.mean if mode == "average" else x.value.max)(axis=axes, keepdims=keepdims)
        return Tensor(value)

    return run


def _layer_normalization(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    config = layer.config
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, x.value.ndim - 1) or config.get("rms_scaling"):
        raise ReplayError(f"layer {layer.name} (LayerNormalization) normalises axis {axis!r}"
                          f"{' with rms_scaling' if config.get('rms_scaling') else ''}; the replay runs the last axis only")
    features = x.value.shape[-1]
    scale, center = config.get("scale", True), config.get("center", True)
    weights = iter(_weights(layer, [(features,)] * (bool(scale) + bool(center)), f"{'gamma ' if scale else ''}{'beta ' if center else ''}for {features} features"))
    gamma = next(weights) if scale else 1.0
    beta = next(weights) if center else 0.0
    return Tensor(spatial.layer_normalization(x.value, gamma, beta, float(config.get("epsilon", 1e-3))), x.mask)


def _relu(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    config = layer.config
    max_value, slope, threshold = config.get("max_value"), float(config.get("negative_slope", 0.0)), float(config.get("threshold", 0.0))
    value = np.where(x.value >= threshold, x.value, slope * (x.value - threshold))
    if max_value is not None:
        value = np.minimum(value, float(max_value))
    return Tensor(value, x.mask)


def _leaky_relu(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    slope = float(layer.config.get("negative_slope", layer.config.get("alpha", 0.3)))  # tf-keras calls it alpha
    return Tensor(np.where(x.value > 0, x.value, slope * x.value), x.mask)


def _softmax_layer(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    if x.mask is not None:
        raise ReplayError(f"layer {layer.name} (Softmax) is fed a masked tensor, whose masked softmax the replay does not run yet")
    axis = layer.config.get("axis", -1)
    if not isinstance(axis, int):
        raise ReplayError(f"layer {layer.name} (Softmax) has axis={axis!r}; the replay runs one axis")
    shifted = np.exp(x.value - x.value.max(axis=axis, keepdims=True))
    return Tensor(shifted / shifted.sum(axis=axis, keepdims=True))


def _permute(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
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


def _zero_padding_1d(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    before, after = _time_amounts(layer, "padding")
    return Tensor(np.pad(x.value, [(0, 0), (before, after), (0, 0)]))


def _cropping_1d(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    before, after = _time_amounts(layer, "cropping")
    if before + after >= x.value.shape[1]:
        raise ReplayError(f"layer {layer.name} (Cropping1D) crops {before + after} of {x.value.shape[1]} steps")
    return Tensor(x.value[:, before:x.value.shape[1] - after])


def _upsampling_1d(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    size = layer.config.get("size", 2)
    if not isinstance(size, int) or size < 1:
        raise ReplayError(f"layer {layer.name} (UpSampling1D) has size={size!r}; expected a positive integer")
    return Tensor(np.repeat(x.value, size, axis=1))


SIMPLE_LAYERS: Mapping[str, Callable[[RawLayer, Tensor, ModelReplay], Tensor]] = {
    **dict.fromkeys(IDENTITY, _identity),
    "Dense": _dense,
    "Embedding": _embedding,
    "Masking": _masking,
    "BatchNormalization": _batch_norm,
    "Activation": lambda layer, x, replay: Tensor(activation(_activation_of(layer), replay.semantics)(x.value), x.mask),
    "Flatten": lambda layer, x, replay: Tensor(x.value.reshape((x.value.shape[0], -1))),
    "Reshape": _reshape,
    "RepeatVector": _repeat,
    "Conv1D": _convolution(1), "Conv2D": _convolution(2),
    "MaxPooling1D": _pooling(1, "max"), "MaxPooling2D": _pooling(2, "max"),
    "AveragePooling1D": _pooling(1, "average"), "AveragePooling2D": _pooling(2, "average"),
    "GlobalMaxPooling1D": _global_pooling(1, "max"), "GlobalMaxPooling2D": _global_pooling(2, "max"),
    "GlobalAveragePooling1D": _global_pooling(1, "average"), "GlobalAveragePooling2D": _global_pooling(2, "average"),
    "LayerNormalization": _layer_normalization,
    "ReLU": _relu, "LeakyReLU": _leaky_relu, "Softmax": _softmax_layer, "Permute": _permute,
    "ZeroPadding1D": _zero_padding_1d, "Cropping1D": _cropping_1d, "UpSampling1D": _upsampling_1d,
}
# Every layer class the replay runs: the registry above, merges, models, recurrent layers.
SUPPORTED = frozenset(SIMPLE_LAYERS) | MERGES | ATTENTION | MODEL_CLASSES | RECURRENT | {"TimeDistributed"}


def _merge(layer: RawLayer, path: str, inputs: list[Tensor], semantics: str) -> Tensor:
    name = layer.class_name
    values = [t.value for t in inputs]
    shapes = [v.shape for v in values]
    if name == "Concatenate":
        axis = layer.config.get("axis", -1)
        rank = values[0].ndim
        if not isinstance(axis, int) or not -rank <= axis < rank or any(v.ndim != rank for v in values) or any(
            np.delete(np.array(shape), axis % rank).tolist() != np.delete(np.array(shapes[0]), axis % rank).tolist() for shape in shapes
        ):
            raise ReplayError(f"layer {path} (Concatenate) cannot join shapes {shapes} on axis {axis}")
        value = np.concatenate(values, axis=axis)
    else:
        if len(set(shapes)) != 1 or (name == "Subtract" and len(values) != 2):
            expected = "two inputs of one shape" if name == "Subtract" else "inputs of one shape"
            raise ReplayError(f"layer {path} ({name}) is called on shapes {shapes}; expected {expected}")
        if semantics == KERAS3 and name in KERAS3_MASKED_MERGES and any(t.mask is not None for t in inputs):
            return KERAS3_MASKED_MERGES[name](inputs)
        value = MERGE_REDUCTIONS[name](np.stack(values))
    return Tensor(value, _merged_mask(layer, inputs, semantics))


def _feature_mask(t: Tensor) -> np.ndarray | None:
    return None if t.mask is None else np.broadcast_to(t.mask[..., None], t.value.shape)


def _keras3_masked_multiply(inputs: list[Tensor]) -> Tensor:
    """Keras 3's Multiply of masked inputs (`Multiply._merge_function`): masked steps count as 1,
    and where every input is masked and the OR of the masks drops a step, the output is 0."""
    masks = [_feature_mask(t) for t in inputs]
    factors = [t.value if mask is None else np.where(mask, t.value, 1) for t, mask in zip(inputs, masks)]
    output = np.prod(np.stack(factors), axis=0)
    if any(mask is None for mask in masks):
        return Tensor(output)
    either = np.logical_or.reduce(masks)
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
        return Tensor(output, None if output_mask is None else output_mask.any(axis=-1))

    return merge


KERAS3_MASKED_MERGES: Mapping[str, Callable[[list[Tensor]], Tensor]] = {
    "Multiply": _keras3_masked_multiply,
    "Maximum": _keras3_masked_extreme(np.maximum),
    "Minimum": _keras3_masked_extreme(np.minimum),
}


def _merged_mask(layer: RawLayer, inputs: list[Tensor], semantics: str) -> np.ndarray | None:
    """The output mask of a merge layer, as the Keras that saved the file computes it (`compute_mask`).

    Keras 3: Add, Multiply, ... keep a step where any input keeps it, and only when every input
    is masked; Concatenate joins the masks (unmasked inputs all kept) and keeps a position where
    any joined mask does. Keras 2 / tf-keras: both keep a step only where every mask keeps it.
    """
    masks = [t.mask for t in inputs]
    if all(mask is None for mask in masks):
        return None
    if layer.class_name == "Concatenate":
        full = [np.ones(t.value.shape, bool) if t.mask is None else np.broadcast_to(
            t.mask.reshape(t.mask.shape + (1,) * (t.value.ndim - t.mask.ndim)), t.value.shape) for t in inputs]
        joined = np.concatenate(full, axis=layer.config.get("axis", -1))
        return joined.any(axis=-1) if semantics == KERAS3 else joined.all(axis=-1)
    if semantics == KERAS3:
        return None if any(mask is None for mask in masks) else np.logical_or.reduce(masks)
    return np.logical_and.reduce([mask for mask in masks if mask is not None])


MERGE_REDUCTIONS: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {
    "Add": lambda stacked: stacked.sum(axis=0),
    "Subtract": lambda stacked: stacked[0] - stacked[1],
    "Multiply": lambda stacked: stacked.prod(axis=0),
    "Average": lambda stacked: stacked.mean(axis=0),
    "Maximum": lambda stacked: stacked.max(axis=0),
    "Minimum": lambda stacked: stacked.min(axis=0),
}


def trace_arrays(calls: Sequence[RecurrentCall]) -> dict[str, np.ndarray]:
    """Every traced gate and state, keyed `{layer path}/{name}`: (batch, timesteps, units) each.

    GRU: z, r, hh (candidate), h; LSTM: i, f, cc (cell candidate), c (cell state), o, h;
    SimpleRNN: h. Timesteps are in processing order (reversed for go_backwards layers).
    """
    arrays: dict[str, np.ndarray] = {}
    for call in calls:
        for path, gates in call.traces.items():
            for name, values in gates.items():
                arrays[f"{path}/{name}"] = values
    return arrays


def layer_output(calls: Sequence[RecurrentCall], path: str) -> np.ndarray:
    """The main output of the recurrent layer at `path` during the last run."""
    for call in calls:
        if call.path == path:
            return call.outputs[0]
    available = ", ".join(call.path for call in calls) or "none"
    raise ReplayError(f"no recurrent layer {path!r} ran in this model; expected one of: {available}")
