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

from grucli.errors import MALFORMED, describe
from grucli.layers import LAYER_KINDS
from grucli.model import CELL_CLASSES, MODEL_CLASSES, ModelFile, ModelLayers, RawLayer, RecurrentLayer
from grucli.replay import ReplayError, activation, layer_outputs, merge_directions, run_layer

IDENTITY = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "InputLayer",
}
MERGES = {"Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
RECURRENT = set(LAYER_KINDS) - CELL_CLASSES | {"RNN", "Bidirectional"}
SUPPORTED = IDENTITY | MERGES | MODEL_CLASSES | RECURRENT | {
    "Dense", "Embedding", "Masking", "Activation", "Flatten", "Reshape", "RepeatVector",
    "TimeDistributed", "BatchNormalization",
}


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
        try:
            with np.errstate(all="ignore"):  # NaN/Inf weights give NaN/Inf outputs, reported, not warned
                outputs = self._run_model(self.model.root, "", [Tensor(np.asarray(x)) for x in inputs])
        except ReplayError:
            raise
        except MALFORMED as exc:
            raise ReplayError(f"cannot replay {self.model.path}: its layer graph or weights are malformed ({describe(exc)})") from None
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
                tensors = self._call(member, f"{prefix}{member.name}", tensors, {})
            return tensors
        return self._run_functional(model, prefix, inputs)

    def _run_functional(self, model: RawLayer, prefix: str, inputs: list[Tensor]) -> list[Tensor]:
        config = model.config
        entries = _layer_entries(config)
        by_name = {child.name: child for _, child in model.children}
        computed: dict[tuple[str, int, int], Tensor] = {}
        for (name, node, index), tensor in zip(_refs(config.get("input_layers")), inputs):
            computed[(name, node, index)] = tensor
        pending = [(entry, node_index, node) for entry in entries for node_index, node in enumerate(_inbound_nodes(entry))]
        while pending:
            progressed = False
            for item in list(pending):
                entry, node_index, node = item
                refs, kwargs = _node_inputs(node)
                if not all(ref in computed for ref in refs):
                    continue
                name = _entry_name(entry)
                layer = by_name[name]
                outputs = self._call(layer, f"{prefix}{name}", [computed[ref] for ref in refs], kwargs)
                saved_index = node_index + _skipped_first_node(layer, node)
                for index, tensor in enumerate(outputs):
                    computed[(name, saved_index, index)] = tensor
                pending.remove(item)
                progressed = True
            if not progressed:
                missing = _entry_name(pending[0][0])
                raise ReplayError(f"cannot order the layer graph of {model.name}: the inputs of {missing} are never computed")
        return [computed[ref] for ref in _refs(config.get("output_layers"))]

    # --- layers --------------------------------------------------------------------------------------

    def _call(self, layer: RawLayer, path: str, inputs: list[Tensor], kwargs: Mapping[str, Any]) -> list[Tensor]:
        name = layer.class_name
        if name in MODEL_CLASSES:
            return self._run_model(layer, f"{path}/", inputs)
        if name in MERGES:
            return [_merge(name, layer.config, inputs)]
        if len(inputs) != 1:
            raise ReplayError(f"layer {path} ({name}) is called on {len(inputs)} inputs; the replay expects one")
        if kwargs.get("initial_state") is not None:
            raise ReplayError(f"layer {path} is called with initial_state, which the replay does not support")
        x = inputs[0]
        if name in RECURRENT:
            return self._call_recurrent(layer, path, x)
        if name == "TimeDistributed":
            return [self._time_distributed(layer, path, x)]
        return [SIMPLE_LAYERS[name](layer, x, self)]

    def _call_recurrent(self, layer: RawLayer, path: str, x: Tensor) -> list[Tensor]:
        outputs, traces = self.recurrent_outputs(layer, path, x.value, x.mask)
        self.calls.append(RecurrentCall(path, layer.class_name, x.value, x.mask, outputs, traces))
        config = layer.config
        sequence_mask = x.mask if config.get("return_sequences") else None
        return [Tensor(value, sequence_mask if index == 0 else None) for index, value in enumerate(outputs)]

    def recurrent_outputs(self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """Outputs of one recurrent layer (as Keras returns them) and each direction's gate trace."""
        x = np.asarray(x, dtype=self.dtype)
        if layer.class_name == "Bidirectional":
            return self._bidirectional(layer, path, x, mask)
        if layer.class_name == "RNN" and len(layer.children) > 1:
            return self._stacked(layer, path, x, mask)
        recurrent = self._layer(path)
        run = run_layer(recurrent, x, mask, self.semantics, self.dtype, self.trace, progress=self._progress_for(path))
        return layer_outputs(run, recurrent.config), {path: run.trace}

    def _bidirectional(self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        config = layer.config
        forward, backward = self._layer(f"{path}/forward"), self._layer(f"{path}/backward")
        return_sequences = bool(forward.config.get("return_sequences"))
        # Bidirectional forces zero_output_for_mask = return_sequences on both directions.
        runs = [
            run_layer(l, x, mask, self.semantics, self.dtype, self.trace, zero_output_for_mask=return_sequences, progress=self._progress_for(l.path))
            for l in (forward, backward)
        ]
        if return_sequences:
            y_forward, y_backward = runs[0].sequence, runs[1].sequence[:, ::-1]
        else:
            y_forward, y_backward = runs[0].last_output, runs[1].last_output
        merged = merge_directions(y_forward, y_backward, config.get("merge_mode", "concat"))
        if forward.config.get("return_state"):
            merged += runs[0].states + runs[1].states
        return merged, {f"{path}/forward": runs[0].trace, f"{path}/backward": runs[1].trace}

    def _stacked(self, layer: RawLayer, path: str, x: np.ndarray, mask: np.ndarray | None) -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
        # Cell k at step t needs only cell k-1's output at t and its own state at t-1, so the
        # stack runs as a chain of whole sequences. go_backwards reverses time once, up front.
        config = layer.config
        backwards = bool(config.get("go_backwards"))
        sequence = x[:, ::-1] if backwards else x
        step_mask = mask[:, ::-1] if backwards and mask is not None else mask
        states: list[np.ndarray] = []
        traces = {}
        run = None
        for role, _ in layer.children:
            cell = self._layer(f"{path}/{role}")
            run = run_layer(cell, sequence, step_mask, self.semantics, self.dtype, self.trace, go_backwards=False,
                            progress=self._progress_for(cell.path))
            sequence = run.sequence
            states += run.states
            traces[f"{path}/{role}"] = run.trace
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


def _skipped_first_node(layer: RawLayer, node: Any) -> int:
    """1 where a Keras 2 config numbers a nested model's calls from 1, as tf-keras's
    `_should_skip_first_node` does: such a model's own input node is node 0 and is not saved."""
    if isinstance(node, Mapping) or layer.class_name not in MODEL_CLASSES:
        return 0
    members = [child for _, child in layer.children]
    if layer.class_name == "Sequential":
        return int(bool(members) and members[0].class_name == "InputLayer")
    return 1


def _refs(value: Any) -> list[tuple[str, int, int]]:
    """`input_layers` / `output_layers`: one [name, node, index] or a list of them."""
    if not value:
        return []
    if isinstance(value[0], str):
        value = [value]
    return [(str(v[0]), int(v[1]), int(v[2])) for v in value]


def _node_inputs(node: Any) -> tuple[list[tuple[str, int, int]], dict[str, Any]]:
    if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
        refs = list(_keras_tensors(node.get("args", [])))
        kwargs = dict(node.get("kwargs", {}))
        if any(True for _ in _keras_tensors(kwargs.get("initial_state"))):
            kwargs["initial_state"] = True
        return refs, kwargs
    refs = [(str(item[0]), int(item[1]), int(item[2])) for item in node]  # Keras 2: [[name, node, index, kwargs], ...]
    kwargs: dict[str, Any] = {}
    for item in node:
        if len(item) > 3 and isinstance(item[3], Mapping):
            kwargs.update(item[3])
    return refs, kwargs


def _keras_tensors(value: Any) -> Iterator[tuple[str, int, int]]:
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            history = value["config"]["keras_history"]
            yield (str(history[0]), int(history[1]), int(history[2]))
        else:
            for item in value.values():
                yield from _keras_tensors(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keras_tensors(item)


# --- the layers themselves ------------------------------------------------------------------------------


def _weights(layer: RawLayer) -> list[np.ndarray]:
    return [np.asarray(w.array) for w in layer.weights]


def _dense(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    weights = _weights(layer)
    y = x.value.astype(replay.dtype) @ weights[0].astype(replay.dtype)
    if layer.config.get("use_bias", True) and len(weights) > 1:
        y = y + weights[1].astype(replay.dtype)
    return Tensor(activation(_activation_of(layer), replay.semantics)(y), x.mask)


def _activation_of(layer: RawLayer) -> str | None:
    from grucli.layers import activation_name

    return activation_name(layer.config.get("activation", "linear"))


def _embedding(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    table = _weights(layer)[0].astype(replay.dtype)
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
    weights = iter(_weights(layer))
    gamma = next(weights) if config.get("scale", True) else 1.0
    beta = next(weights) if config.get("center", True) else 0.0
    mean, variance = next(weights), next(weights)
    epsilon = float(config.get("epsilon", 1e-3))
    return Tensor((x.value - mean) / np.sqrt(variance + epsilon) * gamma + beta, x.mask)


def _reshape(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    return Tensor(x.value.reshape((x.value.shape[0], *layer.config["target_shape"])))


def _repeat(layer: RawLayer, x: Tensor, replay: ModelReplay) -> Tensor:
    return Tensor(np.repeat(x.value[:, None, :], int(layer.config["n"]), axis=1))


SIMPLE_LAYERS: Mapping[str, Callable[[RawLayer, Tensor, ModelReplay], Tensor]] = {
    **{name: (lambda layer, x, replay: x) for name in IDENTITY},
    "Dense": _dense,
    "Embedding": _embedding,
    "Masking": _masking,
    "BatchNormalization": _batch_norm,
    "Activation": lambda layer, x, replay: Tensor(activation(_activation_of(layer), replay.semantics)(x.value), x.mask),
    "Flatten": lambda layer, x, replay: Tensor(x.value.reshape((x.value.shape[0], -1))),
    "Reshape": _reshape,
    "RepeatVector": _repeat,
}


def _merge(name: str, config: Mapping[str, Any], inputs: list[Tensor]) -> Tensor:
    values = [t.value for t in inputs]
    if name == "Concatenate":
        value = np.concatenate(values, axis=int(config.get("axis", -1)))
    elif name == "Add":
        value = np.sum(values, axis=0)
    elif name == "Subtract":
        value = values[0] - values[1]
    elif name == "Multiply":
        value = np.prod(values, axis=0)
    elif name == "Average":
        value = np.mean(values, axis=0)
    elif name == "Maximum":
        value = np.max(values, axis=0)
    else:
        value = np.min(values, axis=0)
    masks = [t.mask for t in inputs if t.mask is not None]
    mask = np.logical_and.reduce(masks) if masks else None
    return Tensor(value, mask)


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
