"""A whole model's forward pass in NumPy: the layer graph of the file's config, layer by layer.

Runs Sequential and Functional models (Keras 2 and Keras 3 config formats, nested models) made
of the layers listed in `SUPPORTED` (`feedforward`, `operations` and the recurrent layers here),
with Keras's mask propagation (Masking, Embedding with mask_zero, Keras 3's explicit masks). Every recurrent layer's input, mask and outputs are recorded so `verify` can
compare them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from grucli.engine.attention import ATTENTION, attention, multi_head_attention
from grucli.engine.feedforward import MERGES, SIMPLE_LAYERS, dot, merge
from grucli.engine.operations import (
    OPERATIONS,
    TF_FUNCTIONS,
    run_operation,
    run_tf_function,
)
from grucli.engine.steps import (
    KERAS3,
    STATE_COUNT,
    RecurrentRun,
    ReplayError,
    layer_outputs,
    merge_directions,
    run_layer,
    step_input,
)
from grucli.engine.tensor import Tensor
from grucli.errors import ModelFileError
from grucli.model import gates, paths
from grucli.model.layers import LAYER_KINDS
from grucli.model.records import (
    CELL_CLASSES,
    MODEL_CLASSES,
    ModelFile,
    ModelLayers,
    RawLayer,
    RecurrentLayer,
)
from grucli.model.spec import GraphSpec, Ref, graph_spec

RECURRENT = set(LAYER_KINDS) - CELL_CLASSES | {"RNN", "Bidirectional"}
TF_OP_LAMBDAS = {"TFOpLambda", "SlicingOpLambda"}  # tf.keras 2's saved TensorFlow calls
# Recurrent layers TimeDistributed can wrap: grucli slices them at the wrapper's own path.
TIME_DISTRIBUTED_RECURRENT = set(LAYER_KINDS) - CELL_CLASSES - {"Bidirectional", "RNN"}


@dataclass
class RecurrentCall:
    """One call of a recurrent layer (GRU, LSTM, SimpleRNN, RNN, Bidirectional) during a replay."""

    path: str
    class_name: str
    inputs: np.ndarray
    mask: np.ndarray | None
    outputs: list[np.ndarray]
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    initial_state: list[np.ndarray] | None = None  # what the layer was called with (None: zeros)


@dataclass(frozen=True)
class LayerRun:
    """What one recurrent layer, direction or cell was fed and computed, kept when `ModelReplay`
    is asked to (`explain` follows one unit of it step by step).

    `inputs` and `mask` are in time order; `go_backwards` says the steps ran from the last to the
    first; `run` holds the outputs in processing order, as `run_layer` returns them."""

    path: str
    inputs: np.ndarray
    mask: np.ndarray | None
    go_backwards: bool
    zero_output_for_mask: bool
    initial_state: tuple[np.ndarray, ...] | None
    run: RecurrentRun


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
        if child.class_name in TF_OP_LAMBDAS and child.config.get("function") not in TF_FUNCTIONS:
            return path, f"{child.class_name} calling tf.{child.config.get('function')}"
        if child.class_name in MODEL_CLASSES:
            found = unsupported_layer(child, paths.prefix(path))
            if found:
                return found
        if child.class_name == "TimeDistributed" and child.children:
            inner = child.children[0][1]
            runs_inner = inner.class_name in SIMPLE_LAYERS or inner.class_name in TIME_DISTRIBUTED_RECURRENT
            if not runs_inner:
                return f"{path}", f"TimeDistributed({inner.class_name})"
        if child.class_name == "RNN" and any(c.class_name not in CELL_CLASSES for _, c in child.children):
            return path, "RNN with a custom cell"
        if child.class_name == "Bidirectional":
            inner = [c for _, c in child.children]
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
        # Off by default: keeping every layer's input costs memory on long sequences.
        self.keep_layer_runs = False
        self.layer_runs: dict[str, LayerRun] = {}
        self._graphs: dict[int, GraphSpec] = {}

    def check_supported(self) -> None:
        found = unsupported_layer(self.model.root)
        if found:
            raise ReplayError(f"layer {found[0]} ({found[1]}) is not one the replay engine can run")

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.check_supported()
        self.calls = []
        self.layer_runs = {}
        with np.errstate(all="ignore"):  # NaN/Inf weights give NaN/Inf outputs, reported, not warned
            outputs = self._run_model(self.model.root, "", [Tensor(np.asarray(x)) for x in inputs])
        return [t.value for t in outputs]

    # --- graphs -----------------------------------------------------------------------------------

    def _run_model(self, model: RawLayer, prefix: str, inputs: list[Tensor]) -> list[Tensor]:
        spec = self._graph(model)
        if not spec.sequential:
            return self._run_functional(spec, prefix, inputs)
        tensors = inputs
        for member in spec.members:
            if member.class_name == "InputLayer":
                continue
            args = (tensors[0] if len(tensors) == 1 else tensors,)
            tensors = self._call(member, f"{prefix}{member.name}", args, {})
        return tensors

    def _graph(self, model: RawLayer) -> GraphSpec:
        """The parsed graph of a model (the root or a nested one), parsed once per replay."""
        key = id(model)
        if key not in self._graphs:
            self._graphs[key] = graph_spec(model, self.model.path)
        return self._graphs[key]

    def _run_functional(self, spec: GraphSpec, prefix: str, inputs: list[Tensor]) -> list[Tensor]:
        if len(spec.inputs) != len(inputs):
            raise ReplayError(f"model {spec.name} takes {len(spec.inputs)} inputs; {len(inputs)} given")
        computed: dict[Ref, Tensor] = dict(zip(spec.inputs, inputs))
        pending = list(spec.nodes)
        while pending:
            ready = [node for node in pending if all(ref in computed for ref in node.call.refs())]
            if not ready:
                raise ReplayError(f"cannot order the layer graph of {spec.name}: the inputs of {pending[0].layer.name} are never computed")
            for node in ready:
                args, kwargs = node.call.resolve(computed)
                outputs = self._call(node.layer, f"{prefix}{node.layer.name}", args, kwargs)
                for index, tensor in enumerate(outputs):
                    computed[node.output_ref(index)] = tensor
                pending.remove(node)
        missing = [ref for ref in spec.outputs if ref not in computed]
        if missing:
            ref = missing[0]
            raise ModelFileError(f"{self.model.path}: the output {[ref.layer, ref.node, ref.index]} of {spec.name} is not computed by its graph")
        return [computed[ref] for ref in spec.outputs]

    # --- layers --------------------------------------------------------------------------------------

    def _call(self, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
        """Run one call of a layer or operation on its whole saved call: every positional argument
        and keyword is either used or refused by name, never dropped."""
        name = layer.class_name
        if layer.is_operation:
            return [run_operation(layer, path, args, kwargs)]
        if name in TF_OP_LAMBDAS:
            return [run_tf_function(layer, path, args, kwargs)]
        if name == "MultiHeadAttention":  # called on (query, value[, key]) with its own keywords
            return multi_head_attention(layer, path, args, kwargs, self.semantics, self.dtype)
        _check_keywords(layer, path, kwargs, _used_keywords(name))
        if len(args) != 1:
            raise ReplayError(f"layer {path} ({name}) is called with {len(args)} positional arguments; the replay runs layers called on one input")
        if name in MODEL_CLASSES:
            return self._run_model(layer, paths.prefix(path), _tensor_list(args[0], path, name))
        if name in MERGES:
            return [merge(layer, path, _tensor_list(args[0], path, name), self.semantics)]
        if name == "Dot":
            return [dot(layer, path, _tensor_list(args[0], path, name))]
        if name in ATTENTION:
            return attention(layer, path, _tensor_list(args[0], path, name), kwargs, self.dtype)
        if name in RECURRENT:
            x, initial_state = _recurrent_inputs(layer, path, args[0], kwargs.get("initial_state"))
            if self.semantics == KERAS3 and kwargs.get("initial_state") is not None and kwargs.get("mask") is None:
                # Keras 3 fills in `mask` from the input only when the input is the call's one tensor
                # argument (Layer.__call__, "Populate mask argument(s)"): given initial_state=, the
                # layer runs unmasked, and its output sequence still carries the input's mask on.
                return self._call_recurrent(layer, path, Tensor(x.value), initial_state, output_mask=x.mask)
            return self._call_recurrent(layer, path, _with_explicit_mask(layer, path, x, kwargs.get("mask")), initial_state)
        x = args[0]
        if not isinstance(x, Tensor):
            what = f"{len(x)} tensors" if isinstance(x, list) else f"the constant {x!r}"
            raise ReplayError(f"layer {path} ({name}) is called on {what}; the replay expects one tensor")
        x = _with_explicit_mask(layer, path, x, kwargs.get("mask"))
        if name == "TimeDistributed" and layer.children and layer.children[0][1].class_name in RECURRENT:
            outputs, traces = self.recurrent_outputs(layer, path, x.value, x.mask)
            self.calls.append(RecurrentCall(path, name, x.value, x.mask, outputs, traces))
            return [Tensor(value) for value in outputs]
        if name == "TimeDistributed":
            return [self._time_distributed(layer, path, x)]
        return [SIMPLE_LAYERS[name](layer, x, self)]

    def _call_recurrent(self, layer: RawLayer, path: str, x: Tensor, initial_state: list[np.ndarray] | None,
                        output_mask: np.ndarray | None = None) -> list[Tensor]:
        """Runs the layer on `x` (masked by x.mask); its output sequence carries x.mask on, or
        `output_mask` where given."""
        outputs, traces = self.recurrent_outputs(layer, path, x.value, x.mask, initial_state)
        self.calls.append(RecurrentCall(path, layer.class_name, x.value, x.mask, outputs, traces, initial_state))
        # Bidirectional keeps return_sequences on the layer it wraps.
        config = layer.children[0][1].config if layer.class_name == "Bidirectional" and layer.children else layer.config
        sequence_mask = (x.mask if output_mask is None else output_mask) if config.get("return_sequences") else None
        return [Tensor(value, sequence_mask if index == 0 else None) for index, value in enumerate(outputs)]

    def recurrent_outputs(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None = None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """Outputs of one recurrent layer (as Keras returns them) and each direction's gate trace.

        `initial_state` is what the layer was called with (`initial_state=[h, c]`): for a
        Bidirectional layer the forward states then the backward ones, for stacked cells each
        cell's states in order."""
        x = step_input(x, self.dtype)
        if layer.class_name == "TimeDistributed":
            return self._time_distributed_recurrent(layer, path, x, mask)
        if layer.class_name == "Bidirectional":
            return self._bidirectional(layer, path, x, mask, initial_state)
        if layer.class_name == "RNN" and len(layer.children) > 1:
            return self._stacked(layer, path, x, mask, initial_state)
        recurrent = self._layer(path)
        run = self._run_layer(recurrent, x, mask, initial_state)
        return layer_outputs(run, recurrent.config), {path: run.trace}

    def _bidirectional(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        config = layer.config
        directions = dict(layer.children)
        direction_paths = [paths.direction(path, which) for which in (paths.FORWARD, paths.BACKWARD)]
        forward_config = self._direction_config(directions[paths.FORWARD], direction_paths[0])
        return_sequences = bool(forward_config.get("return_sequences"))
        counts = [self._state_count(directions[which], direction_path)
                  for which, direction_path in zip((paths.FORWARD, paths.BACKWARD), direction_paths)]
        halves = _split_states(initial_state, counts, path)
        # Bidirectional forces zero_output_for_mask = return_sequences on both directions.
        runs, traces = [], {}
        for which, direction_path, states in zip((paths.FORWARD, paths.BACKWARD), direction_paths, halves):
            run, direction_traces = self._direction(directions[which], direction_path, x, mask, states, return_sequences)
            runs.append(run)
            traces.update(direction_traces)
        if return_sequences:
            y_forward, y_backward = runs[0].sequence, runs[1].sequence[:, ::-1]
        else:
            y_forward, y_backward = runs[0].last_output, runs[1].last_output
        merged = merge_directions(y_forward, y_backward, config.get("merge_mode", "concat"))
        if forward_config.get("return_state"):
            merged += runs[0].states + runs[1].states
        return merged, traces

    def _direction(
        self, raw: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, states: list[np.ndarray] | None, zero_output: bool,
    ) -> tuple[RecurrentRun, dict[str, dict[str, np.ndarray]]]:
        """One direction of a Bidirectional layer: a recurrent layer, RNN(cell) or an RNN of stacked cells."""
        if path not in self.recurrent and raw.class_name == "RNN" and len(raw.children) > 1:
            return self._stack(raw, path, x, mask, states, zero_output)
        run = self._run_layer(self._layer(path), x, mask, states, zero_output_for_mask=zero_output)
        return run, {path: run.trace}

    def _direction_config(self, raw: RawLayer, path: str) -> Mapping[str, Any]:
        return self.recurrent[path].config if path in self.recurrent else raw.config

    def _state_count(self, raw: RawLayer, path: str) -> int:
        """How many initial states a layer (or an RNN of stacked cells) takes."""
        if path in self.recurrent:
            return STATE_COUNT[gates.equation_family(self.recurrent[path].kind)]
        return sum(self._state_count(cell, paths.join(path, role)) for role, cell in raw.children)

    def _stacked(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        run, traces = self._stack(layer, path, x, mask, initial_state, None)
        output = run.sequence if layer.config.get("return_sequences") else run.last_output
        return ([output, *run.states] if layer.config.get("return_state") else [output]), traces

    def _stack(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None,
        zero_output: bool | None,
    ) -> tuple[RecurrentRun, dict[str, dict[str, np.ndarray]]]:
        """An RNN of stacked cells, its sequence in processing order like `run_layer`'s.

        Cell k at step t needs only cell k-1's output at t and its own state at t-1, so the
        stack runs as a chain of whole sequences. With go_backwards each cell runs from the last
        step, and its sequence is turned back into time order for the next cell."""
        backwards = bool(layer.config.get("go_backwards"))
        sequence = x
        cells = [self._layer(paths.join(path, role)) for role, _ in layer.children]
        counts = [STATE_COUNT[gates.equation_family(cell.kind)] for cell in cells]
        states: list[np.ndarray] = []
        traces = {}
        run = None
        for index, (cell, cell_states) in enumerate(zip(cells, _split_states(initial_state, counts, path))):
            last = index == len(cells) - 1  # the stack's output: what zero_output_for_mask governs
            run = self._run_layer(cell, sequence, mask, cell_states, go_backwards=backwards,
                                  zero_output_for_mask=zero_output if last else None)
            sequence = run.sequence[:, ::-1] if backwards else run.sequence
            states += run.states
            traces[cell.path] = run.trace
        assert run is not None
        return RecurrentRun(run.sequence, run.last_output, states), traces

    def _run_layer(
        self, layer: RecurrentLayer, x: np.ndarray, mask: np.ndarray | None, initial_state: Sequence[np.ndarray] | None,
        go_backwards: bool | None = None, zero_output_for_mask: bool | None = None,
    ) -> RecurrentRun:
        """`run_layer`, keeping what the layer was fed when `keep_layer_runs` is on."""
        run = run_layer(layer, x, mask, self.semantics, self.dtype, self.trace, zero_output_for_mask=zero_output_for_mask,
                        go_backwards=go_backwards, progress=self._progress_for(layer.path), initial_state=initial_state)
        if self.keep_layer_runs:
            backwards = bool(layer.config.get("go_backwards")) if go_backwards is None else go_backwards
            zero_output = bool(layer.config.get("zero_output_for_mask")) if zero_output_for_mask is None else zero_output_for_mask
            states = None if initial_state is None else tuple(np.asarray(state, self.dtype) for state in initial_state)
            self.layer_runs[layer.path] = LayerRun(layer.path, np.asarray(x, self.dtype), mask, backwards, zero_output, states, run)
        return run

    def _progress_for(self, path: str) -> Callable[[int, int], None] | None:
        report = self.progress
        if report is None:
            return None
        return lambda done, total: report(path, done, total)

    def _layer(self, path: str) -> RecurrentLayer:
        if path not in self.recurrent:
            raise ReplayError(f"no weights were found for recurrent layer {path}")
        return self.recurrent[path]

    def _time_distributed_recurrent(
        self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """TimeDistributed(GRU): the recurrent layer runs on each outer step's sequence, the outer
        steps folded into the batch; grucli reports it at the wrapper's path."""
        if mask is not None:
            raise ReplayError(f"layer {path} (TimeDistributed) is fed a masked sequence; the replay runs a recurrent layer in "
                              "TimeDistributed on unmasked input only")
        if x.ndim != 4:
            raise ReplayError(f"layer {path} (TimeDistributed) is fed shape {x.shape}; expected (batch, outer steps, timesteps, features)")
        batch, outer = x.shape[:2]
        outputs, traces = self.recurrent_outputs(layer.children[0][1], path, x.reshape((batch * outer, *x.shape[2:])), None)
        return [value.reshape((batch, outer, *value.shape[1:])) for value in outputs], traces

    def _time_distributed(self, layer: RawLayer, path: str, x: Tensor) -> Tensor:
        inner = layer.children[0][1]
        batch, timesteps = x.value.shape[:2]
        flat = Tensor(x.value.reshape((batch * timesteps,) + x.value.shape[2:]))
        if inner.class_name not in SIMPLE_LAYERS:
            raise ReplayError(f"layer {path} wraps {inner.class_name} in TimeDistributed, which the replay cannot run")
        out = SIMPLE_LAYERS[inner.class_name](inner, flat, self).value
        return Tensor(out.reshape((batch, timesteps) + out.shape[1:]), x.mask)


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
    if class_name in MERGES or class_name in MODEL_CLASSES or class_name == "Dot":
        return ()
    return ("mask",)


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


def _split_states(states: Sequence[np.ndarray] | None, counts: Sequence[int], path: str) -> list[list[np.ndarray] | None]:
    """Initial states handed to several layers (Bidirectional's directions, stacked cells), in order:
    `counts[k]` states for layer k."""
    if states is None:
        return [None] * len(counts)
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


# Every layer class the replay runs: the feed-forward registry, merges, attention, models, recurrent layers.
SUPPORTED = frozenset(SIMPLE_LAYERS) | MERGES | ATTENTION | MODEL_CLASSES | RECURRENT | TF_OP_LAMBDAS | {"TimeDistributed", "Dot", "MultiHeadAttention"}


def trace_arrays(calls: Sequence[RecurrentCall]) -> dict[str, np.ndarray]:
    """Every traced gate and state, keyed `{layer path}/{name}`: (batch, timesteps, units) each.

    GRU: z, r, hh (candidate), h; LSTM: i, f, cc (cell candidate), c (cell state), o, h;
    SimpleRNN: h. Timesteps are in processing order (reversed for go_backwards layers).
    """
    arrays: dict[str, np.ndarray] = {}
    for call in calls:
        for path, traced in call.traces.items():
            for name, values in traced.items():
                arrays[f"{path}/{name}"] = values
    return arrays


def layer_output(calls: Sequence[RecurrentCall], path: str) -> np.ndarray:
    """The main output of the recurrent layer at `path` during the last run."""
    for call in calls:
        if call.path == path:
            return call.outputs[0]
    available = ", ".join(call.path for call in calls) or "none"
    raise ReplayError(f"no recurrent layer {path!r} ran in this model; expected one of: {available}")
