"""A whole model's forward pass in NumPy: the layer graph of the file's config, layer by layer.

Runs Sequential and Functional models (Keras 2 and Keras 3 config formats, nested models) made
of the layers in the layer registry (`engine/registry.py`: `feedforward`, `attention`,
`operations` and the recurrent layers here), with Keras's mask propagation (Masking, Embedding
with mask_zero, Keras 3's explicit masks). Every recurrent layer's input, mask and outputs are
recorded so `verify` can compare them one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grucli.engine.registry import entry_for, unsupported_layer
from grucli.engine.steps import (
    RecurrentRun,
    TraceBuffers,
    TraceInto,
    layer_outputs,
    merge_directions,
    run_layer,
    step_input,
)
from grucli.engine.tensor import Tensor
from grucli.errors import ReplayError
from grucli.model import paths
from grucli.model.records import ModelFile, ModelLayers, RawLayer, RecurrentLayer
from grucli.model.registry import Role, is_input_layer, role_of
from grucli.model.semantics import Semantics
from grucli.model.spec import GraphSpec, graph_spec


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


class ModelReplay:
    """Replays a model file; build once, `run` on any input."""

    def __init__(
        self,
        model: ModelFile,
        layers: ModelLayers,
        semantics: Semantics,
        dtype: type = np.float64,
        trace: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
        keep_layer_runs: bool = False,
        trace_only: frozenset[str] | None = None,
        trace_buffers: TraceBuffers | None = None,
    ) -> None:
        self.progress = progress  # (layer path, steps done, steps in all)
        self.model = model
        self.recurrent: dict[str, RecurrentLayer] = {layer.path: layer for layer in layers.recurrent}
        self.semantics = semantics
        self.dtype = dtype
        self.trace = trace
        self.trace_only = trace_only  # with trace: the layer paths to trace (None: every layer)
        self.trace_buffers = trace_buffers  # where the trace is written (None: new arrays each run)
        self.calls: list[RecurrentCall] = []
        self.reversed: dict[str, bool] = {}  # per layer path run: whether it consumed the steps last to first
        # Off by default: keeping every layer's input costs memory on long sequences.
        self.keep_layer_runs = keep_layer_runs
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
        self.reversed = {}
        with np.errstate(all="ignore"):  # NaN/Inf weights give NaN/Inf outputs, reported, not warned
            outputs = self.run_model(self.model.root, "", [Tensor(np.asarray(x)) for x in inputs])
        return [t.value for t in outputs]

    # --- graphs -----------------------------------------------------------------------------------

    def run_model(self, model: RawLayer, prefix: str, inputs: list[Tensor]) -> list[Tensor]:
        spec = self._graph(model)
        if not spec.sequential:
            return self._run_functional(spec, prefix, inputs)
        tensors = inputs
        for member in spec.members:
            if is_input_layer(member.class_name):
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
        return spec.evaluate(
            inputs, lambda node, args, kwargs: self._call(node.layer, f"{prefix}{node.layer.name}", args, kwargs), self.model.path
        )

    # --- layers --------------------------------------------------------------------------------------

    def _call(self, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
        """Run one call of a layer or operation, by its entry in the layer registry (engine/registry.py)."""
        entry = entry_for(layer)
        if entry is None:
            raise ReplayError(f"layer {path} ({layer.class_name}) is not one the replay engine can run")
        return entry.call(self, layer, path, args, kwargs)

    def call_time_distributed_recurrent(self, layer: RawLayer, path: str, x: Tensor) -> list[Tensor]:
        outputs, traces = self.recurrent_outputs(layer, path, x.value, x.mask)
        self.calls.append(RecurrentCall(path, layer.class_name, x.value, x.mask, outputs, traces))
        return [Tensor(value) for value in outputs]

    def call_recurrent(
        self, layer: RawLayer, path: str, x: Tensor, initial_state: list[np.ndarray] | None, output_mask: np.ndarray | None = None
    ) -> list[Tensor]:
        """Runs the layer on `x` (masked by x.mask); its output sequence carries x.mask on, or
        `output_mask` where given."""
        outputs, traces = self.recurrent_outputs(layer, path, x.value, x.mask, initial_state)
        self.calls.append(RecurrentCall(path, layer.class_name, x.value, x.mask, outputs, traces, initial_state))
        # Bidirectional keeps return_sequences on the layer it wraps.
        config = layer.children[0][1].config if role_of(layer.class_name) is Role.BIDIRECTIONAL and layer.children else layer.config
        sequence_mask = (x.mask if output_mask is None else output_mask) if config.get("return_sequences") else None
        return [Tensor(value, sequence_mask if index == 0 else None) for index, value in enumerate(outputs)]

    def recurrent_outputs(
        self,
        layer: RawLayer,
        path: str,
        x: np.ndarray,
        mask: np.ndarray | None,
        initial_state: Sequence[np.ndarray] | None = None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """Outputs of one recurrent layer (as Keras returns them) and each direction's gate trace.

        `initial_state` is what the layer was called with (`initial_state=[h, c]`): for a
        Bidirectional layer the forward states then the backward ones, for stacked cells each
        cell's states in order."""
        x = step_input(x, self.dtype)
        if role_of(layer.class_name) is Role.TIME_DISTRIBUTED:
            return self._time_distributed_recurrent(layer, path, x, mask)
        if role_of(layer.class_name) is Role.BIDIRECTIONAL:
            return self._bidirectional(layer, path, x, mask, initial_state)
        if role_of(layer.class_name) is Role.RNN and len(layer.children) > 1:
            return self._stacked(layer, path, x, mask, initial_state)
        recurrent = self._layer(path)
        run = self._run_layer(recurrent, x, mask, initial_state)
        return layer_outputs(run, recurrent.settings), {path: run.trace}

    def _bidirectional(
        self,
        layer: RawLayer,
        path: str,
        x: np.ndarray,
        mask: np.ndarray | None,
        initial_state: Sequence[np.ndarray] | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        config = layer.config
        directions = dict(layer.children)
        direction_paths = [paths.direction(path, which) for which in (paths.FORWARD, paths.BACKWARD)]
        forward_config = self._direction_config(directions[paths.FORWARD], direction_paths[0])
        return_sequences = bool(forward_config.get("return_sequences"))
        counts = [
            self._state_count(directions[which], direction_path)
            for which, direction_path in zip((paths.FORWARD, paths.BACKWARD), direction_paths)
        ]
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
        self,
        raw: RawLayer,
        path: str,
        x: np.ndarray,
        mask: np.ndarray | None,
        states: list[np.ndarray] | None,
        zero_output: bool,
    ) -> tuple[RecurrentRun, dict[str, dict[str, np.ndarray]]]:
        """One direction of a Bidirectional layer: a recurrent layer, RNN(cell) or an RNN of stacked cells."""
        if path not in self.recurrent and role_of(raw.class_name) is Role.RNN and len(raw.children) > 1:
            return self._stack(raw, path, x, mask, states, zero_output)
        run = self._run_layer(self._layer(path), x, mask, states, zero_output_for_mask=zero_output)
        return run, {path: run.trace}

    def _direction_config(self, raw: RawLayer, path: str) -> Mapping[str, Any]:
        return self.recurrent[path].config if path in self.recurrent else raw.config

    def _state_count(self, raw: RawLayer, path: str) -> int:
        """How many initial states a layer (or an RNN of stacked cells) takes."""
        if path in self.recurrent:
            return self.recurrent[path].family.state_count
        return sum(self._state_count(cell, paths.join(path, role)) for role, cell in raw.children)

    def _stacked(
        self,
        layer: RawLayer,
        path: str,
        x: np.ndarray,
        mask: np.ndarray | None,
        initial_state: Sequence[np.ndarray] | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        run, traces = self._stack(layer, path, x, mask, initial_state, None)
        output = run.sequence if layer.config.get("return_sequences") else run.last_output
        return ([output, *run.states] if layer.config.get("return_state") else [output]), traces

    def _stack(
        self,
        layer: RawLayer,
        path: str,
        x: np.ndarray,
        mask: np.ndarray | None,
        initial_state: Sequence[np.ndarray] | None,
        zero_output: bool | None,
    ) -> tuple[RecurrentRun, dict[str, dict[str, np.ndarray]]]:
        """An RNN of stacked cells, its sequence in processing order like `run_layer`'s.

        Cell k at step t needs only cell k-1's output at t and its own state at t-1, so the
        stack runs as a chain of whole sequences. With go_backwards each cell runs from the last
        step, and its sequence is turned back into time order for the next cell."""
        backwards = bool(layer.config.get("go_backwards"))
        sequence = x
        cells = [self._layer(paths.join(path, role)) for role, _ in layer.children]
        counts = [cell.family.state_count for cell in cells]
        states: list[np.ndarray] = []
        traces = {}
        run = None
        for index, (cell, cell_states) in enumerate(zip(cells, _split_states(initial_state, counts, path))):
            last = index == len(cells) - 1  # the stack's output: what zero_output_for_mask governs
            run = self._run_layer(
                cell, sequence, mask, cell_states, go_backwards=backwards, zero_output_for_mask=zero_output if last else None
            )
            sequence = run.sequence[:, ::-1] if backwards else run.sequence
            states += run.states
            traces[cell.path] = run.trace
        assert run is not None
        return RecurrentRun(run.sequence, run.last_output, states), traces

    def _run_layer(
        self,
        layer: RecurrentLayer,
        x: np.ndarray,
        mask: np.ndarray | None,
        initial_state: Sequence[np.ndarray] | None,
        go_backwards: bool | None = None,
        zero_output_for_mask: bool | None = None,
    ) -> RecurrentRun:
        """`run_layer`, keeping what the layer was fed when `keep_layer_runs` is on."""
        traced = self.trace and (self.trace_only is None or layer.path in self.trace_only)
        trace: bool | TraceInto = TraceInto(self.trace_buffers, layer.path) if traced and self.trace_buffers is not None else traced
        run = run_layer(
            layer,
            x,
            mask,
            self.semantics,
            self.dtype,
            trace,
            zero_output_for_mask=zero_output_for_mask,
            go_backwards=go_backwards,
            progress=self._progress_for(layer.path),
            initial_state=initial_state,
        )
        backwards = layer.settings.go_backwards if go_backwards is None else go_backwards
        self.reversed[layer.path] = bool(backwards)
        if self.keep_layer_runs:
            zero_output = layer.settings.zero_output_for_mask if zero_output_for_mask is None else zero_output_for_mask
            states: tuple[np.ndarray, ...] | None = (
                None if initial_state is None else tuple(np.asarray(state, self.dtype) for state in initial_state)
            )
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
        self,
        layer: RawLayer,
        path: str,
        x: np.ndarray,
        mask: np.ndarray | None,
    ) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """TimeDistributed(GRU): the recurrent layer runs on each outer step's sequence, the outer
        steps folded into the batch; grucli reports it at the wrapper's path."""
        if mask is not None:
            raise ReplayError(
                f"layer {path} (TimeDistributed) is fed a masked sequence; the replay runs a recurrent layer in "
                "TimeDistributed on unmasked input only"
            )
        if x.ndim != 4:
            raise ReplayError(f"layer {path} (TimeDistributed) is fed shape {x.shape}; expected (batch, outer steps, timesteps, features)")
        batch, outer = x.shape[:2]
        outputs, traces = self.recurrent_outputs(layer.children[0][1], path, x.reshape((batch * outer, *x.shape[2:])), None)
        return [value.reshape((batch, outer, *value.shape[1:])) for value in outputs], traces


def _split_states(states: Sequence[np.ndarray] | None, counts: Sequence[int], path: str) -> list[list[np.ndarray] | None]:
    """Initial states handed to several layers (Bidirectional's directions, stacked cells), in order:
    `counts[k]` states for layer k."""
    if states is None:
        return [None] * len(counts)
    if len(states) != sum(counts):
        raise ReplayError(f"layer {path} is given {len(states)} initial states; expected {sum(counts)}")
    split: list[list[np.ndarray] | None] = []
    start = 0
    for count in counts:
        split.append(list(states[start : start + count]))
        start += count
    return split


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
