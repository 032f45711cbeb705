"""Recurrent layers as native ONNX GRU, LSTM and RNN nodes: gate orders from the family record,
reset_after as linear_before_reset, go_backwards as direction=reverse, Bidirectional, stacked cells,
initial states and --state-io.

May import: numpy, convert/symbols, model/, errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from grucli.convert.symbols import (
    HARD_SIGMOID,
    RECURRENT_ACTIVATIONS,
    ConvertError,
    Symbol,
    one_tensor,
)
from grucli.model import paths
from grucli.model.records import RawLayer, RecurrentLayer
from grucli.model.registry import (
    Role,
    role_of,
)

if TYPE_CHECKING:
    from grucli.convert.onnx_graph import GraphBuilder


def initial_states(layer: RawLayer, path: str, args: Sequence[Any], initial_state: Any) -> list[Symbol] | None:
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


def recurrent_call(b: GraphBuilder, layer: RawLayer, path: str, x: Any, states: Sequence[Symbol] | None = None) -> list[Symbol]:
    x = one_tensor(layer, path, x)
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


def _recurrent_layer(b: GraphBuilder, path: str, raw: RawLayer) -> RecurrentLayer:
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


def _stacked(b: GraphBuilder, layer: RawLayer, path: str, x: Symbol, states: Sequence[Symbol] | None) -> list[Symbol]:
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


def _streamed_states(b: GraphBuilder, layer: RecurrentLayer, states: Sequence[Symbol] | None) -> list[Symbol]:
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


def _recurrent_node(b: GraphBuilder, layer: RecurrentLayer, x: Symbol, states: Sequence[Symbol] | None = None) -> _Run:
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


def _step_activations(b: GraphBuilder, layer: RecurrentLayer, op: str) -> tuple[list[str], list[float], list[float]]:
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


def _reversed_in_time(b: GraphBuilder, sequence: str) -> str:
    return b.one("Slice", [sequence, b.int_constant([-1], "start"), b.int_constant([-(2**62)], "end"),
                           b.int_constant([1], "axis"), b.int_constant([-1], "step")])


def _bidirectional(b: GraphBuilder, layer: RawLayer, path: str, x: Symbol, states: Sequence[Symbol] | None) -> list[Symbol]:
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
