"""Recurrent layers as native ONNX GRU, LSTM and RNN nodes: gate orders from the family record,
reset_after as linear_before_reset, go_backwards as direction=reverse, Bidirectional, stacked cells,
initial states and --state-io.

May import: numpy, convert/symbols, model/, errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grucli.convert.builder import GraphBuilder
from grucli.convert.conv_recurrent import conv_lstm_call
from grucli.convert.masks import compact, expanded, final_state, reversed_in_time
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


def initial_states(layer: RawLayer, path: str, first: Any, initial_state: Any) -> tuple[Any, list[Symbol] | None]:
    """A recurrent layer's input and initial states: Keras 3 passes `initial_state=[...]`; Keras 2
    saves the call as one list of tensors, the input first."""
    if initial_state is None and isinstance(first, list) and len(first) > 1:
        first, initial_state = first[0], first[1:]
    if initial_state is None:
        return first, None
    states = initial_state if isinstance(initial_state, list) else [initial_state]
    if not states or not all(isinstance(state, Symbol) for state in states):
        raise ConvertError(f"layer {path} ({layer.class_name}) is given the initial state {initial_state!r}; expected tensors")
    return first, states


def recurrent_call(b: GraphBuilder, layer: RawLayer, path: str, x: Any, states: Sequence[Symbol] | None = None) -> list[Symbol]:
    """A recurrent layer, RNN(cell), an RNN of stacked cells or Bidirectional on `x`, masked by
    the mask `x` carries; its output sequence carries that mask on, as Keras's does."""
    x = one_tensor(layer, path, x)
    role = role_of(layer.class_name)
    if role is Role.BIDIRECTIONAL:
        return _bidirectional(b, layer, path, x, states)
    if role is Role.RNN and len(layer.children) > 1:
        return _stacked(b, layer, path, x, states)
    recurrent = _recurrent_layer(b, path, layer, scan_allowed=True)
    settings = recurrent.settings
    states = _checked_states(recurrent, states)
    if recurrent.family.convolutional:
        return conv_lstm_call(b, recurrent, x, states)
    streamed = b.state_io or settings.stateful
    if streamed:
        states = _streamed_states(b, recurrent, states)
    run = _run_chain(b, [recurrent], x, [states], settings.go_backwards, settings.zero_output_for_mask)
    if streamed:
        b.state_outputs += [(f"{recurrent.path}/{name}_out", state) for name, state in zip(recurrent.family.states, run.states)]
    return _layer_outputs(run, x.mask, settings.return_sequences, settings.return_state)


def _layer_outputs(run: _Run, mask: str | None, return_sequences: bool, return_state: bool) -> list[Symbol]:
    output = Symbol(run.sequence, 3, mask) if return_sequences else Symbol(run.last, 2)
    return [output, *[Symbol(state, 2) for state in run.states]] if return_state else [output]


def _recurrent_layer(b: GraphBuilder, path: str, raw: RawLayer, scan_allowed: bool = False) -> RecurrentLayer:
    """The layer's weights and settings; a ConvLSTM (a Scan, no ONNX operator) only where `scan_allowed`."""
    if path not in b.recurrent:
        raise ConvertError(f"no weights were found for recurrent layer {path} ({raw.class_name})")
    layer = b.recurrent[path]
    if layer.family.onnx_op is None and not (scan_allowed and layer.family.convolutional):
        raise ConvertError(f"layer {path} ({layer.kind}) has no ONNX recurrent operator; convert does not write it")
    if layer.config.get("time_major"):
        raise ConvertError(f"layer {path} is time_major; convert does not write it")
    return layer


@dataclass(frozen=True)
class _Run:
    sequence: str  # (batch, time, units), in Keras's processing order
    time_ordered: str  # (batch, time, units), aligned with the input's time steps
    last: str  # (batch, units): the output after the last step processed
    states: tuple[str, ...]  # every layer's final states (h, and c for an LSTM), each (batch, units), in order


def _run_chain(
    b: GraphBuilder,
    cells: Sequence[RecurrentLayer],
    x: Symbol,
    states: Sequence[Sequence[Symbol] | None],
    backwards: bool,
    zero_output: bool,
) -> _Run:
    """One recurrent layer, or a stack of cells (cell k at step t reads cell k-1's output at t and
    its own state at t-1, so the stack is a chain of whole sequences, one ONNX node per cell),
    run on `x` from the first step or, `backwards`, from the last; masked by x.mask."""
    finals: list[str] = []
    if x.mask is None:
        sequence, run = x, None
        for cell, given in zip(cells, states):
            run = _recurrent_node(b, cell, sequence, given, backwards)
            sequence = Symbol(run.time_ordered, 3)  # a go_backwards stack feeds each cell the one before in time order
            finals += run.states
        assert run is not None  # a chain has one cell or more
        return _Run(run.sequence, run.time_ordered, run.last, tuple(finals))
    steps, mask = (reversed_in_time(b, x.name), reversed_in_time(b, x.mask)) if backwards else (x.name, x.mask)
    compaction = compact(b, Symbol(steps, 3), mask)
    sequence = compaction.x
    for cell, given in zip(cells, states):
        run = _recurrent_node(b, cell, sequence, given, False, compaction.lens)
        sequence = Symbol(run.sequence, 3)
        starts: list[str | None] = [None] * len(run.states) if given is None else [start.name for start in given]
        finals += [final_state(b, compaction, state, start) for state, start in zip(run.states, starts)]
    output = expanded(b, compaction, sequence.name, zero_output)  # in processing order
    last = b.one("Squeeze", [b.one("Gather", [output, b.int_constant([-1], "last")], axis=1), b.int_constant([1], "axis")])
    return _Run(output, reversed_in_time(b, output) if backwards else output, last, tuple(finals))


def _stacked(b: GraphBuilder, layer: RawLayer, path: str, x: Symbol, states: Sequence[Symbol] | None) -> list[Symbol]:
    """RNN([cell, cell, ...]): the initial states are each cell's, in order."""
    if b.state_io or layer.config.get("stateful"):
        raise ConvertError(f"layer {path} (RNN of stacked cells) is not one --state-io or a stateful model streams yet")
    cells = [_recurrent_layer(b, paths.join(path, role), cell) for role, cell in layer.children]
    counts = [cell.family.state_count for cell in cells]
    if states is not None and len(states) != sum(counts):
        raise ConvertError(f"layer {path} is given {len(states)} initial states; expected {sum(counts)} (each cell's, in order)")
    given = [None if states is None else states[sum(counts[:index]) : sum(counts[: index + 1])] for index in range(len(cells))]
    # The stack's output is the last cell's: its zero_output_for_mask says what a masked step gives.
    run = _run_chain(b, cells, x, given, bool(layer.config.get("go_backwards")), cells[-1].settings.zero_output_for_mask)
    return _layer_outputs(run, x.mask, bool(layer.config.get("return_sequences")), bool(layer.config.get("return_state")))


def _streamed_states(b: GraphBuilder, layer: RecurrentLayer, states: Sequence[Symbol] | None) -> list[Symbol]:
    """--state-io, and every stateful layer: the layer's initial states become graph inputs (zeros
    for a sequence's first chunk) and its final states outputs, so the caller carries the state from
    one call to the next, as Keras carries a stateful layer's between predict calls."""
    if states is not None:
        raise ConvertError(
            f"layer {layer.path} is given its initial state by the model; --state-io streams only layers that start from zeros"
        )
    if layer.settings.go_backwards and not layer.settings.stateful:
        raise ConvertError(
            f"layer {layer.path} reads its sequence backwards (go_backwards): a sequence fed in chunks does not give "
            "what one pass gives, so --state-io refuses it"
        )
    names = [f"{layer.path}/{name}_in" for name in layer.family.states]
    b.state_inputs += [(name, layer.units) for name in names]
    return [Symbol(name, 2) for name in names]


def _checked_states(layer: RecurrentLayer, states: Sequence[Symbol] | None) -> Sequence[Symbol] | None:
    if states is not None and len(states) != layer.family.state_count:
        raise ConvertError(
            f"layer {layer.path} is given {len(states)} initial states; expected {layer.family.state_count} "
            f"({', '.join(layer.family.states)})"
        )
    return states


def _recurrent_node(
    b: GraphBuilder, layer: RecurrentLayer, x: Symbol, states: Sequence[Symbol] | None, backwards: bool, lens: str | None = None
) -> _Run:
    """One ONNX GRU, LSTM or RNN node computing `layer` on `x` (batch, time, features), over the
    first `lens` steps of each row where given."""
    family, settings = layer.family, layer.settings
    op, order = family.onnx_op, family.onnx_gates
    assert op is not None and order is not None, layer.kind  # _recurrent_layer refuses families without one
    units = layer.units
    columns = np.concatenate([np.arange(units) + family.gates.index(gate) * units for gate in order])
    kernel, recurrent = np.asarray(layer.kernel)[:, columns], np.asarray(layer.recurrent_kernel)[:, columns]
    inputs = [b.one("Transpose", [x.name], perm=[1, 0, 2]), b.constant(kernel.T[None], "W"), b.constant(recurrent.T[None], "R")]
    bias = np.zeros((2, len(columns)), np.float32) if layer.bias is None else np.asarray(layer.bias)
    input_bias, recurrent_bias = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))
    inputs.append(b.constant(np.concatenate([input_bias[columns], recurrent_bias[columns]])[None], "B"))
    inputs.append(lens or "")
    if states is not None:
        inputs += [b.one("Unsqueeze", [state.name, b.int_constant([0], "axis")]) for state in states]
    activations, alphas, betas = _step_activations(b, layer, op)
    attributes: dict[str, Any] = {"hidden_size": units, "direction": "reverse" if backwards else "forward", "activations": activations}
    if alphas:
        attributes["activation_alpha"] = alphas
    if betas:
        attributes["activation_beta"] = betas
    if family.two_row_bias:  # GRU: reset_after=True applies r after the recurrent product, as linear_before_reset=1
        attributes["linear_before_reset"] = int(bool(settings.reset_after))
    outputs = b.node(op, inputs, outputs=1 + family.state_count, **attributes)
    b.recurrent_nodes.append(f"{layer.path}: ONNX {op}" + (" (masked: sequence_lens)" if lens else ""))
    y = b.one("Squeeze", [outputs[0], b.int_constant([1], "axis")])  # (time, batch, units)
    time_ordered = b.one("Transpose", [y], perm=[1, 0, 2])
    sequence = reversed_in_time(b, time_ordered) if backwards else time_ordered
    final = tuple(b.one("Squeeze", [state, b.int_constant([0], "axis")]) for state in outputs[1:])
    return _Run(sequence, time_ordered, final[0], final)


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


def _bidirectional(b: GraphBuilder, layer: RawLayer, path: str, x: Symbol, states: Sequence[Symbol] | None) -> list[Symbol]:
    directions = dict(layer.children)
    if b.state_io:
        raise ConvertError(
            f"layer {path} is Bidirectional: its backward direction reads the whole sequence, so a sequence fed in "
            "chunks does not give what one pass gives; --state-io refuses it"
        )
    if any(role_of(child.class_name) is Role.RNN and len(child.children) > 1 for child in directions.values()):
        raise ConvertError(f"layer {path} (Bidirectional around stacked cells) is not one convert writes yet")
    if any(child.config.get("stateful") for child in directions.values()):
        raise ConvertError(f"layer {path} is a stateful Bidirectional layer, which convert does not write")
    layers = [_recurrent_layer(b, paths.direction(path, which), directions[which]) for which in (paths.FORWARD, paths.BACKWARD)]
    halves: list[Sequence[Symbol] | None] = [None, None]
    if states is not None:  # the forward direction's states, then the backward one's
        count = layers[0].family.state_count
        if len(states) != count + layers[1].family.state_count:
            raise ConvertError(
                f"layer {path} is given {len(states)} initial states; expected "
                f"{count + layers[1].family.state_count} (forward, then backward)"
            )
        halves = [states[:count], states[count:]]
    forward_settings = layers[0].settings
    # Bidirectional forces zero_output_for_mask = return_sequences on both directions.
    forward, backward = [
        _run_chain(b, [direction], x, [half], direction.settings.go_backwards, bool(forward_settings.return_sequences))
        for direction, half in zip(layers, halves)
    ]
    if forward_settings.return_sequences:  # Bidirectional flips the backward direction's sequence, whichever way it ran
        flipped = backward.time_ordered if layers[1].settings.go_backwards else reversed_in_time(b, backward.sequence)
        outputs = [forward.sequence, flipped]
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
    mask = x.mask if forward_settings.return_sequences else None
    merged = [Symbol(name, rank, mask) for name in merges[merge_mode]()]
    if forward_settings.return_state:
        merged += [Symbol(state, 2) for run in (forward, backward) for state in run.states]
    return merged
