"""Recurrent layers replayed step by step in NumPy, from the equations Keras documents.

The cells read like Keras's own (`keras/src/layers/rnn/gru.py`, `lstm.py`): `h_tm1` is the
previous output, `c_tm1` the previous cell state, `x_z` the input projection of gate z,
`recurrent_z` its recurrent projection, `hh` the GRU candidate. A step's input and recurrent
products are one matrix product where the equations add them, each step writing into buffers
allocated once (see "the step loop's machinery").

Activations (`engine/activations.py`) follow the Keras version that saved the file.

May import: numpy, engine/ (activations, parallel, spatial), model/, errors.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from grucli.engine import parallel, spatial
from grucli.engine.activations import (
    activation_in_place,
    activation_side_by_side,
    elementwise,
)
from grucli.errors import ReplayError
from grucli.model import gates
from grucli.model.layers import conv_lstm_settings
from grucli.model.records import RecurrentLayer, Settings
from grucli.model.semantics import KERAS3, Semantics

Progress = Callable[[int, int], None]  # (steps done, steps in all) of the layer being replayed


# --- running a recurrent layer ----------------------------------------------------------------------


@dataclass
class RecurrentRun:
    """What one recurrent layer computed: per-timestep outputs (processing order) and final states.

    `trace` holds, when asked for, each gate's activation per timestep, shape (batch, time, units).
    """

    sequence: np.ndarray
    last_output: np.ndarray
    states: list[np.ndarray]
    trace: dict[str, np.ndarray] = field(default_factory=dict)


def run_layer(
    layer: RecurrentLayer,
    inputs: np.ndarray,
    mask: np.ndarray | None = None,
    semantics: Semantics = KERAS3,
    dtype: type = np.float64,
    trace: bool | TraceInto = False,
    zero_output_for_mask: bool | None = None,
    go_backwards: bool | None = None,
    progress: Progress | None = None,
    initial_state: Sequence[np.ndarray] | None = None,
) -> RecurrentRun:
    """Run `layer` over `inputs` (batch, time, features) the way Keras's RNN layer does.

    go_backwards processes time in reverse and leaves the sequence in processing order; at a
    masked step every state is carried over and the output repeats the previous one (or is
    zero with zero_output_for_mask). `initial_state` ([h] or, for an LSTM, [h, c]) replaces the
    zero state the first step starts from (a seq2seq decoder's encoder state).
    """
    family, settings = layer.family, layer.settings
    convolutional = family.convolutional
    rank = layer.kernel.ndim - 2 if convolutional else 0  # ConvLSTM: spatial axes of each step
    if convolutional and inputs.ndim != rank + 3:
        raise ReplayError(
            f"layer {layer.path} ({layer.kind}) expects input (batch, timesteps, {rank} spatial axes, channels), got shape {inputs.shape}"
        )
    if not convolutional and inputs.ndim != 3:
        raise ReplayError(f"layer {layer.path} expects input (batch, timesteps, features), got shape {inputs.shape}")
    if not convolutional and inputs.shape[-1] != layer.input_dim:
        raise ReplayError(f"layer {layer.path} expects {layer.input_dim} features per step, got {inputs.shape[-1]}")
    x = step_input(inputs, dtype)
    if settings.go_backwards if go_backwards is None else go_backwards:
        x = x[:, ::-1]
        mask = mask[:, ::-1] if mask is not None else None
    if zero_output_for_mask is None:
        zero_output_for_mask = settings.zero_output_for_mask
    state_shape = conv_state_shape(layer, x.shape[2:-1]) if convolutional else (layer.units,)
    states = _initial_states(layer, (x.shape[0], *state_shape), initial_state, dtype)
    cell = CELLS[family.cell]
    with np.errstate(over="ignore"):  # exp overflowing to inf in a saturated sigmoid or tanh is exact
        return cell(layer, x, mask, semantics, dtype, trace, zero_output_for_mask, progress, states)


def step_input(inputs: np.ndarray, dtype: type) -> np.ndarray:
    """A layer's input as the step loops read it: float32 and float64 as they are (the dense loops
    cast a step at a time, ConvLSTM a block of steps, so a long float32 input is never copied
    whole into float64), any other type converted to `dtype`."""
    x = np.asarray(inputs)
    return x if x.dtype in (np.float32, np.float64) else x.astype(dtype)


def _initial_states(layer: RecurrentLayer, shape: tuple[int, ...], given: Sequence[np.ndarray] | None, dtype: type) -> list[np.ndarray]:
    """The states the first step starts from: zeros, or the given ones after checking their shapes."""
    count = layer.family.state_count  # [h], or [h, c] for the LSTMs
    if given is None:
        return [np.zeros(shape, dtype) for _ in range(count)]
    shapes = [tuple(np.shape(state)) for state in given]
    if len(given) != count or any(found != shape for found in shapes):
        raise ReplayError(f"layer {layer.path} is given initial states of shapes {shapes}; expected {count} of shape {shape}")
    return [np.asarray(state, dtype=dtype) for state in given]


def _weights(layer: RecurrentLayer, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """kernel, recurrent kernel, input bias, recurrent bias (zeros where the layer has none)."""
    columns = layer.kernel.shape[-1]
    kernel: np.ndarray = np.asarray(layer.kernel).astype(dtype)
    recurrent_kernel: np.ndarray = np.asarray(layer.recurrent_kernel).astype(dtype)
    if layer.bias is None:
        return kernel, recurrent_kernel, np.zeros(columns, dtype), np.zeros(columns, dtype)
    if layer.bias.ndim == 2:
        return kernel, recurrent_kernel, layer.bias[0].astype(dtype), layer.bias[1].astype(dtype)
    return kernel, recurrent_kernel, layer.bias.astype(dtype), np.zeros(columns, dtype)


# --- the step loop's machinery --------------------------------------------------------------------
#
# Buffers, not temporaries: each step's gate values are written in place into arrays allocated
# once, and each new state is copied once into its place in the output sequence. A dense cell's
# x_t·W + b + h_tm1·U is one matrix product per step, [h_tm1, 1, x_t]·[U; b; W] (`_StepOperand`),
# not a separate input projection: the input is read a step at a time, never projected whole. The
# cells below keep Keras's names and order; this is where the buffers live.
#
# Parts of a step: a dense cell's units are computed in ranges, each with its own columns of the
# weights and its own buffers (`_LSTMUnits`, `_GRUUnits`); one range covers every unit, or, where
# it pays, two halves run side by side on two threads (`parallel`). `_run_steps` owns the loop.
#
# Gate-contiguous layout: a step's (batch, k·units) arrays are stored column-major (order="F"),
# so that each gate's columns [:, g·units:(g+1)·units] are one contiguous block of memory. NumPy
# runs an elementwise pass over a contiguous block 3 to 5 times faster than over the same values
# strided across rows, and an LSTM step is a dozen such passes; OpenBLAS writes a column-major
# product as fast (or faster) as a row-major one. Every array a step combines has this layout:
# mixing layouts in one pass is slower than either.

CONV_BLOCK_STEPS = 16  # ConvLSTM: timesteps per input-convolution block (bounded memory, few calls)
Order = Literal["C", "F"]  # a step buffer's memory layout
STEP_ORDER: Order = "F"  # the layout of the step buffers of the dense cells (above)


def _step_matrix(*blocks: np.ndarray, dtype: type) -> np.ndarray:
    """Weights as the step products read them: the blocks stacked (rows of a bias: 1-D blocks),
    column-major like the products, which OpenBLAS writes faster from column-major weights
    (float32 (32, 256) x (256, 1024): 137 against 170 µs)."""
    return np.asfortranarray(np.concatenate([np.atleast_2d(block) for block in blocks]), dtype=dtype)


class _StepOperand:
    """Each step's [h_tm1, 1, x_t] side by side in one column-major buffer, loaded by `load(t, h_tm1)`.

    Multiplied by weights stacked as [U; b; W] (`_step_matrix(U, b, W)`) it gives x_t·W + b + h_tm1·U
    in one product; its slices give the parts: `state_and_one`·[U; b] = h_tm1·U + b and
    `one_and_input`·[b; W] = x_t·W + b (a GRU's candidate keeps them apart). One product per step
    costs less than projecting the input separately and adding it (measured on the 2-core VM, the
    step's products and add, LSTM(256) at batch 32: 0.88 to 0.93x in float64, 0.95x in float32).
    """

    def __init__(self, x: np.ndarray, units: int, dtype: type) -> None:
        batch, _, features = x.shape
        self._x = x  # float32 or float64 (step_input): cast a step at a time as it is loaded
        self._units = units
        self.whole = np.ones((batch, units + 1 + features), dtype, order=STEP_ORDER)
        self.state_and_one = self.whole[:, : units + 1]
        self.one_and_input = self.whole[:, units:]

    def load(self, t: int, h_tm1: np.ndarray) -> None:
        np.copyto(self.whole[:, : self._units], h_tm1)
        np.copyto(self.whole[:, self._units + 1 :], self._x[:, t])


def _time_major_blocks(x: np.ndarray, dtype: type) -> Iterator[np.ndarray]:
    """x (batch, time, ...) as contiguous (steps, batch, ...) blocks of CONV_BLOCK_STEPS timesteps."""
    for start in range(0, x.shape[1], CONV_BLOCK_STEPS):
        yield np.ascontiguousarray(x[:, start : start + CONV_BLOCK_STEPS].swapaxes(0, 1), dtype=dtype)


def _conv_projections(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dtype: type, strides: tuple[int, ...], padding: str, dilation: tuple[int, ...]
) -> Iterator[np.ndarray]:
    """ConvLSTM's x_t ⊛ W + b for each timestep, a block of steps convolved at once (time folded
    into the batch); row-major like the convolution that makes them."""
    batch = x.shape[0]
    for steps in _time_major_blocks(x, dtype):
        count = steps.shape[0]
        projected = spatial.convolve(steps.reshape((count * batch, *x.shape[2:])), kernel, strides, padding, dilation) + bias
        yield from projected.reshape((count, batch, *projected.shape[1:]))


POPULATE_BYTES = 16 << 20  # below this, a few thousand page faults cost little


def _array_to_fill(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An uninitialised array its caller writes whole (the output sequence). A large one is mapped
    with all its pages at once (Linux's MAP_POPULATE) rather than faulted in page by page as the
    steps reach them: measured on the 2-core VM for 156 MiB, 75 against 165 to 199 ms; a 2500-step
    float64 LSTM(256) replay at batch 32, 1.81 against 1.92 s (about 44 µs a step). Elsewhere, or
    if the mapping fails, np.empty."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size < POPULATE_BYTES or not hasattr(mmap, "MAP_POPULATE"):
        return np.empty(shape, dtype)
    try:
        mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    except OSError:
        return np.empty(shape, dtype)
    return np.frombuffer(mapping, dtype).reshape(shape)  # the array keeps the mapping alive


class _Outputs:
    """The output sequence and the state the next step reads, masks applied.

    A step computes its new state into `target(t)`, a buffer of the step layout (two, in turns:
    the other one is the step's h_tm1); `commit(t)` makes it the state and copies it into the
    output sequence. At a masked step the state carries over where a sample's step is masked and
    the output repeats the previous one (or is zero with zero_output_for_mask), as Keras does.
    """

    def __init__(
        self,
        batch: int,
        timesteps: int,
        state_shape: tuple[int, ...],
        mask: np.ndarray | None,
        zero_output: bool,
        dtype: type,
        initial_state: np.ndarray,
        order: Order,
    ) -> None:
        self.sequence = _array_to_fill((batch, timesteps, *state_shape), dtype)
        self._new: list[np.ndarray] = [np.empty((batch, *state_shape), dtype, order=order) for _ in range(2)]
        self.state: np.ndarray = np.array(initial_state, dtype, order=order)
        # (batch, time, 1, ...): a step's mask broadcast over every state axis
        self.mask = None if mask is None else np.asarray(mask, bool).reshape(mask.shape + (1,) * len(state_shape))
        self.zero_output = zero_output

    def target(self, t: int) -> np.ndarray:
        """Where step t's new state is to be written."""
        return self._new[t % 2]

    def commit(self, t: int) -> None:
        """Step t's new state, now in `target(t)`, becomes the state and the output."""
        new = self._new[t % 2]
        if self.mask is None:
            self.state = new
            np.copyto(self.sequence[:, t], new)
            return
        real = self.mask[:, t]
        if self.zero_output or t == 0:  # before the first step the previous output is zeros
            np.copyto(self.sequence[:, t], np.where(real, new, 0.0))
        else:
            np.copyto(self.sequence[:, t], np.where(real, new, self.sequence[:, t - 1]))
        np.copyto(self.state, new, where=real)  # masked: the state is an array of its own throughout

    def keep(self, t: int, new: np.ndarray, old: np.ndarray) -> np.ndarray:
        """A second state (an LSTM's c): the new one where step t is real, the old one where masked."""
        return new if self.mask is None else np.where(self.mask[:, t], new, old)

    def final_state(self) -> np.ndarray:
        """The state after the last step, an array of its own in row-major order."""
        return np.ascontiguousarray(self.state)


def _side_by_side(first: slice, second: slice) -> tuple[slice, slice, slice]:
    """Two adjacent gates' columns (z and r, i and f), for one pass of their shared activation:
    the columns of both, and where each lies within them."""
    both = slice(min(first.start, second.start), max(first.stop, second.stop))
    if both.stop - both.start != (first.stop - first.start) + (second.stop - second.start):
        raise AssertionError(f"gates at columns {first} and {second} are not side by side")
    return both, slice(first.start - both.start, first.stop - both.start), slice(second.start - both.start, second.stop - both.start)


def _step_buffers(leading: tuple[int, ...], dtype: type, order: Order) -> Callable[[int], np.ndarray]:
    """Allocates a step's buffers once: `buffer(n)` is an empty (*leading, n) array in `order`."""
    return lambda last_axis: np.empty((*leading, last_axis), dtype, order=order)


class TraceBuffers:
    """Arrays a trace is written into, kept from one run to the next: a replay over a dataset's
    batches (activations) writes each batch's trace into the arrays of the one before last. Fresh
    arrays each batch cost more than the trace itself: on the 2-core VM a GRU(256)'s batch of 256
    rows took 0.38 s with the last batch's arrays still held, 0.14 s with these
    (benchmarks/bench_activations.py)."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def arrays(self, key: str, names: Sequence[str], shape: tuple[int, ...], dtype: type) -> dict[str, np.ndarray]:
        found = {}
        for name in names:
            array = self._arrays.get((key, name))
            if array is None or array.shape != shape or array.dtype != np.dtype(dtype):
                array = self._arrays[(key, name)] = np.empty(shape, dtype)
            found[name] = array
        return found


@dataclass(frozen=True)
class TraceInto:
    """`trace=` of run_layer: trace into `buffers`, as the layer `key`."""

    buffers: TraceBuffers
    key: str


def _tracer(names: Sequence[str], shape: tuple[int, ...], dtype: type, trace: bool | TraceInto) -> dict[str, np.ndarray]:
    if isinstance(trace, TraceInto):
        return trace.buffers.arrays(trace.key, names, shape, dtype)
    return {name: np.empty(shape, dtype) for name in names} if trace else {}


def gru_cell(
    layer: RecurrentLayer,
    x: np.ndarray,
    mask: np.ndarray | None,
    semantics: Semantics,
    dtype: type,
    trace: bool | TraceInto,
    zero_output: bool,
    progress: Progress | None,
    initial_state: list[np.ndarray],
) -> RecurrentRun:
    units = layer.units
    reset_after = bool(layer.settings.reset_after)
    batch, timesteps, _ = x.shape
    outputs = _Outputs(batch, timesteps, (units,), mask, zero_output, dtype, initial_state[0], STEP_ORDER)
    traced = _tracer(tuple(layer.family.traced), (batch, timesteps, units), dtype, trace)
    step = _StepOperand(x, units, dtype)
    # Without reset_after, r · h_tm1 is multiplied by U_h: each unit's candidate reads every unit's r.
    units_apart = reset_after and elementwise(layer.settings.activation, layer.settings.recurrent_activation)
    parts = parallel.unit_ranges(units, step.whole.size * 3 * units, dtype, units_apart)
    weights = _weights(layer, dtype)
    cells = [_GRUUnits(layer, part, step, weights, reset_after, outputs, traced, semantics, dtype) for part in parts]
    _run_steps(timesteps, step.load, [cell.step for cell in cells], outputs, progress, traced)
    return RecurrentRun(outputs.sequence, outputs.sequence[:, -1], [outputs.final_state()], traced)


def _run_steps(
    timesteps: int,
    load: Callable[[int, np.ndarray], None],
    parts: Sequence[parallel.StepPart],
    outputs: _Outputs,
    progress: Progress | None,
    traced: dict[str, np.ndarray],
) -> None:
    """The step loop of every cell: step t loads its operand (`load(t, h_tm1)`), runs each part
    of the step (each range of units; two side by side, `parallel`), then commits the new state."""
    with parallel.StepsSideBySide(parts) as run_step:
        for t in range(timesteps):
            if progress is not None and t % PROGRESS_EVERY == 0:
                progress(t, timesteps)
            load(t, outputs.state)
            run_step(t)
            outputs.commit(t)
            if traced:
                traced["h"][:, t] = outputs.state  # after the mask: the state the next step reads


class _GRUUnits:
    """A range of a GRU's units (all of them, or half, `parallel`): its weights, its buffers and
    its part of each step, which reads like Keras's GRUCell.call."""

    def __init__(
        self,
        layer: RecurrentLayer,
        part: slice,
        step: _StepOperand,
        weights: tuple[np.ndarray, ...],
        reset_after: bool,
        outputs: _Outputs,
        traced: dict[str, np.ndarray],
        semantics: Semantics,
        dtype: type,
    ) -> None:
        kernel, recurrent_kernel, input_bias, recurrent_bias = weights
        zr_ = gates.columns_of_units(layer.kind, layer.units, part, "zr")
        h_ = gates.columns_of_units(layer.kind, layer.units, part, "h")
        units = len(h_)
        self.part, self.operand, self.outputs, self.traced, self.reset_after = part, step, outputs, traced, reset_after
        self.act = activation_in_place(layer.settings.activation, semantics)
        # z and r, side by side, go through the recurrent activation in one pass
        self.rec_act = activation_side_by_side(layer.settings.recurrent_activation, semantics, units)
        # x_z + recurrent_z (r likewise) in one product, with both biases (recurrent_bias is zeros
        # without reset_after); the candidate's x_h and recurrent_h stay apart, r comes between them
        self.zr_weights = _step_matrix(recurrent_kernel[:, zr_], input_bias[zr_] + recurrent_bias[zr_], kernel[:, zr_], dtype=dtype)
        self.input_weights_h = _step_matrix(input_bias[h_], kernel[:, h_], dtype=dtype)
        if reset_after:
            self.recurrent_weights_h = _step_matrix(recurrent_kernel[:, h_], recurrent_bias[h_], dtype=dtype)
        else:
            self.recurrent_kernel_h = _step_matrix(recurrent_kernel[:, h_], dtype=dtype)
        buffer = _step_buffers((outputs.state.shape[0],), dtype, STEP_ORDER)
        self.zr, self.x_h, self.recurrent_h, self.hh, self.keep_share = (
            buffer(2 * units),
            buffer(units),
            buffer(units),
            buffer(units),
            buffer(units),
        )
        self.reset_state = None if reset_after else buffer(layer.units)

    def step(self, t: int) -> None:
        step, h_tm1, zr = self.operand, self.outputs.state, self.zr
        self.rec_act(np.matmul(step.whole, self.zr_weights, out=zr))  # z = rec_act(x_z + recurrent_z), r likewise
        units = self.x_h.shape[-1]
        z, r = zr[:, :units], zr[:, units:]
        x_h = np.matmul(step.one_and_input, self.input_weights_h, out=self.x_h)  # x_h = x·W_h + b_h
        if self.reset_after:
            recurrent_h = np.matmul(step.state_and_one, self.recurrent_weights_h, out=self.recurrent_h)  # h_tm1·U_h + recurrent b_h
            recurrent_h *= r
        else:  # one part: r covers every unit
            recurrent_h = np.matmul(np.multiply(r, h_tm1, out=self.reset_state), self.recurrent_kernel_h, out=self.recurrent_h)
        hh = self.act(np.add(x_h, recurrent_h, out=self.hh))
        # h = z * h_tm1 + (1 - z) * hh: Keras's order, z keeps the previous state
        h = np.multiply(z, h_tm1[:, self.part], out=self.outputs.target(t)[:, self.part])
        h += np.multiply(np.subtract(1, z, out=self.keep_share), hh, out=self.keep_share)
        if self.traced:
            for name, value in (("z", z), ("r", r), ("hh", hh)):
                self.traced[name][:, t, self.part] = value


def lstm_cell(
    layer: RecurrentLayer,
    x: np.ndarray,
    mask: np.ndarray | None,
    semantics: Semantics,
    dtype: type,
    trace: bool | TraceInto,
    zero_output: bool,
    progress: Progress | None,
    initial_state: list[np.ndarray],
) -> RecurrentRun:
    kernel, recurrent_kernel, bias, _ = _weights(layer, dtype)
    step = _StepOperand(x, layer.units, dtype)
    layout = LSTM_BY_EXP if _tanh_and_sigmoid(layer) else LSTM_AS_KERAS

    def gate_inputs_of(part: slice) -> GateInputs:
        columns = gates.columns_of_units(layer.kind, layer.units, part, [gate for gate, _ in layout])
        factors = np.repeat([factor for _, factor in layout], len(columns) // len(layout))
        weights = _step_matrix(recurrent_kernel[:, columns] * factors, bias[columns] * factors, kernel[:, columns] * factors, dtype=dtype)
        return lambda t, h_tm1, out: np.matmul(step.whole, weights, out=out)

    parts = parallel.unit_ranges(
        layer.units, step.whole.size * 4 * layer.units, dtype, elementwise(layer.settings.activation, layer.settings.recurrent_activation)
    )
    return _lstm_steps(
        layer,
        x.shape[1],
        step.load,
        gate_inputs_of,
        parts,
        layout,
        mask,
        semantics,
        dtype,
        trace,
        zero_output,
        progress,
        initial_state,
        STEP_ORDER,
    )


# Step t's x_t·W + h_tm1·U + b for some of the units (in a layout, below), given h_tm1 and a
# buffer it may write into.
GateInputs = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
# An LSTM step product's layout: its gates left to right, and the factor each gate's weights
# (and so its columns) are multiplied by. Keras's layout, and the one of the exp form
# (_LSTMUnits.step_by_exp): -z_i, -z_f, -z_o, -2·z_c. Multiplying by -1 or -2 is exact.
Layout = tuple[tuple[str, float], ...]
LSTM_AS_KERAS: Layout = (("i", 1.0), ("f", 1.0), ("c", 1.0), ("o", 1.0))
LSTM_BY_EXP: Layout = (("i", -1.0), ("f", -1.0), ("o", -1.0), ("c", -2.0))


def _tanh_and_sigmoid(layer: RecurrentLayer) -> bool:
    """Whether an LSTM's activations are Keras's defaults, which the exp form computes."""
    return layer.settings.activation == "tanh" and layer.settings.recurrent_activation == "sigmoid"


def _lstm_steps(
    layer: RecurrentLayer,
    timesteps: int,
    load: Callable[[int, np.ndarray], None],
    gate_inputs_of: Callable[[slice], GateInputs],
    parts: Sequence[slice],
    layout: Layout,
    mask: np.ndarray | None,
    semantics: Semantics,
    dtype: type,
    trace: bool | TraceInto,
    zero_output: bool,
    progress: Progress | None,
    initial_state: list[np.ndarray],
    order: Order,
) -> RecurrentRun:
    """The LSTM step loop. Step t first calls `load(t, h_tm1)`, then each range of units in
    `parts` (two run side by side, `parallel`) computes its gates and states from
    `gate_inputs_of(part)`: (batch, ..., 4*units of the part) in `layout` and in the memory
    order `order`, written into the buffer it is given (a dense LSTM's one matrix product) or
    returned (ConvLSTM's convolutions)."""
    h_tm1, c_tm1 = initial_state
    outputs = _Outputs(h_tm1.shape[0], timesteps, tuple(h_tm1.shape[1:]), mask, zero_output, dtype, h_tm1, order)
    traced = _tracer(tuple(layer.family.traced), outputs.sequence.shape, dtype, trace)
    cells = [
        _LSTMUnits(layer, part, gate_inputs_of(part), layout, outputs, traced, c_tm1[..., part], semantics, dtype, order) for part in parts
    ]
    _run_steps(timesteps, load, [cell.step for cell in cells], outputs, progress, traced)
    c_tm1 = np.concatenate([cell.c_tm1 for cell in cells], axis=-1)
    return RecurrentRun(outputs.sequence, outputs.sequence[:, -1], [outputs.final_state(), c_tm1], traced)


class _LSTMUnits:
    """A range of an LSTM's units (all of them, or half, `parallel`): its buffers, its part of
    the cell state c, and its part of each step, which reads like Keras's LSTMCell.call."""

    def __init__(
        self,
        layer: RecurrentLayer,
        part: slice,
        gate_inputs: GateInputs,
        layout: Layout,
        outputs: _Outputs,
        traced: dict[str, np.ndarray],
        c_tm1: np.ndarray,
        semantics: Semantics,
        dtype: type,
        order: Order,
    ) -> None:
        units = c_tm1.shape[-1]
        self.part, self.gate_inputs, self.outputs, self.traced = part, gate_inputs, outputs, traced
        self.act = activation_in_place(layer.settings.activation, semantics)
        self.rec_act = activation_side_by_side(layer.settings.recurrent_activation, semantics, units)
        at = {gate: slice(k * units, (k + 1) * units) for k, (gate, _) in enumerate(layout)}
        self.i_, self.f_, self.c_, self.o_ = at["i"], at["f"], at["c"], at["o"]
        self.if_, _, _ = _side_by_side(self.i_, self.f_)  # i and f go through the recurrent activation in one pass
        self.ifo_ = slice(0, 3 * units)  # the exp form's sigmoid gates
        self.step = self.step_by_exp if layout == LSTM_BY_EXP else self.step_as_keras
        buffer = _step_buffers(c_tm1.shape[:-1], dtype, order)
        self.z, self.c_buffers, self.input_share, self.tanh_c = (
            buffer(4 * units),
            (buffer(units), buffer(units)),
            buffer(units),
            buffer(units),
        )
        self.c_tm1: np.ndarray = np.array(c_tm1, dtype, order=order)

    def step_as_keras(self, t: int) -> None:
        act, rec_act, c_tm1 = self.act, self.rec_act, self.c_tm1
        z = self.gate_inputs(t, self.outputs.state, self.z)  # z = x·W + h_tm1·U + b
        rec_act(z[..., self.if_])  # i = rec_act(z0), f = rec_act(z1)
        i, f = z[..., self.i_], z[..., self.f_]
        cc = act(z[..., self.c_])
        c = self.c_buffers[t % 2]  # the other one holds c_tm1
        np.multiply(f, c_tm1, out=c)
        c += np.multiply(i, cc, out=self.input_share)
        o = rec_act(z[..., self.o_])
        np.copyto(self.tanh_c, c)
        np.multiply(o, act(self.tanh_c), out=self.outputs.target(t)[..., self.part])  # h = o * act(c)
        self._commit(t, c, i, f, cc, o)

    def step_by_exp(self, t: int) -> None:
        """The same step for tanh and sigmoid, with the four gates through one exp: the product
        gives -z_i, -z_f, -z_o and -2·z_c (LSTM_BY_EXP), so that i, f, o = sigmoid(z) = 1 / (1 +
        exp(-z)) and cc = tanh(z_c) = 2 / (1 + exp(-2·z_c)) - 1, the forms of _sigmoid_in_place
        and _tanh_in_place. Fewer NumPy calls: two threads contend for the GIL at each."""
        c_tm1 = self.c_tm1
        e = self.gate_inputs(t, self.outputs.state, self.z)  # -z_i, -z_f, -z_o, -2·z_c
        np.exp(e, out=e)  # inf where z is far below 0: the gate is then 0 (or cc -1), as in the limit
        e += 1.0
        np.divide(1.0, e[..., self.ifo_], out=e[..., self.ifo_])  # i, f, o = sigmoid(z)
        i, f, o = e[..., self.i_], e[..., self.f_], e[..., self.o_]
        cc = np.divide(2.0, e[..., self.c_], out=e[..., self.c_])
        cc -= 1.0  # cc = tanh(z_c)
        c = self.c_buffers[t % 2]  # the other one holds c_tm1
        np.multiply(f, c_tm1, out=c)
        c += np.multiply(i, cc, out=self.input_share)  # c = f * c_tm1 + i * cc
        tanh_c = np.multiply(c, -2.0, out=self.tanh_c)
        np.exp(tanh_c, out=tanh_c)
        tanh_c += 1.0
        np.divide(2.0, tanh_c, out=tanh_c)
        tanh_c -= 1.0  # tanh(c)
        np.multiply(o, tanh_c, out=self.outputs.target(t)[..., self.part])  # h = o * tanh(c)
        self._commit(t, c, i, f, cc, o)

    def _commit(self, t: int, c: np.ndarray, i: np.ndarray, f: np.ndarray, cc: np.ndarray, o: np.ndarray) -> None:
        self.c_tm1 = self.outputs.keep(t, c, self.c_tm1)
        if self.traced:
            for name, value in (("i", i), ("f", f), ("cc", cc), ("c", self.c_tm1), ("o", o)):
                self.traced[name][:, t, ..., self.part] = value


def simple_rnn_cell(
    layer: RecurrentLayer,
    x: np.ndarray,
    mask: np.ndarray | None,
    semantics: Semantics,
    dtype: type,
    trace: bool | TraceInto,
    zero_output: bool,
    progress: Progress | None,
    initial_state: list[np.ndarray],
) -> RecurrentRun:
    act = activation_in_place(layer.settings.activation, semantics)
    kernel, recurrent_kernel, bias, _ = _weights(layer, dtype)
    step = _StepOperand(x, layer.units, dtype)
    batch, timesteps, _ = x.shape
    outputs = _Outputs(batch, timesteps, (layer.units,), mask, zero_output, dtype, initial_state[0], STEP_ORDER)
    traced = _tracer(tuple(layer.family.traced), (batch, timesteps, layer.units), dtype, trace)

    def part_of_step(part: slice) -> parallel.StepPart:
        weights = _step_matrix(recurrent_kernel[:, part], bias[part], kernel[:, part], dtype=dtype)

        def step_units(t: int) -> None:
            act(np.matmul(step.whole, weights, out=outputs.target(t)[:, part]))  # h = act(x·W + b + h_tm1·U)

        return step_units

    parts = parallel.unit_ranges(layer.units, step.whole.size * layer.units, dtype, elementwise(layer.settings.activation))
    _run_steps(timesteps, step.load, [part_of_step(part) for part in parts], outputs, progress, traced)
    return RecurrentRun(outputs.sequence, outputs.sequence[:, -1], [outputs.final_state()], traced)


def conv_settings(layer: RecurrentLayer) -> tuple[tuple[int, ...], str, tuple[int, ...]]:
    """A ConvLSTM's input convolution: strides, padding and dilation per spatial axis (validated)."""
    return conv_lstm_settings(layer, ReplayError, "the replay")


def conv_state_shape(layer: RecurrentLayer, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(*spatial, filters): the input convolution's output size per step, as Keras computes it."""
    strides, padding, dilation = conv_settings(layer)
    sizes = []
    for size, window, stride, rate in zip(spatial_shape, layer.kernel.shape, strides, dilation):
        extent = (window - 1) * rate + 1
        sizes.append(-(-size // stride) if padding == "same" else max(-(-(size - extent + 1) // stride), 0))
    return (*sizes, layer.units)


def conv_lstm_cell(
    layer: RecurrentLayer,
    x: np.ndarray,
    mask: np.ndarray | None,
    semantics: Semantics,
    dtype: type,
    trace: bool | TraceInto,
    zero_output: bool,
    progress: Progress | None,
    initial_state: list[np.ndarray],
) -> RecurrentRun:
    """ConvLSTM1D/2D/3D: an LSTM whose kernel products are convolutions, the input's with the
    layer's strides, padding and dilation, the state's with "same" padding and stride 1."""
    kernel, recurrent_kernel, bias, _ = _weights(layer, dtype)
    if x.shape[-1] != kernel.shape[-2]:
        raise ReplayError(f"layer {layer.path} ({layer.kind}) expects {kernel.shape[-2]} channels, got {x.shape[-1]}")
    strides, padding, dilation = conv_settings(layer)
    ones = (1,) * len(strides)

    projections = _conv_projections(x, kernel, bias, dtype, strides, padding, dilation)

    def gate_inputs(t: int, h_tm1: np.ndarray, out: np.ndarray) -> np.ndarray:
        z = spatial.convolve(h_tm1, recurrent_kernel, ones, "same", ones)
        z += next(projections)  # step t's x_t ⊛ W + b, in turn
        return z

    every_unit = [slice(0, layer.units)]  # a convolution's filters are not split between threads
    return _lstm_steps(
        layer,
        x.shape[1],
        lambda t, h_tm1: None,
        lambda part: gate_inputs,
        every_unit,
        LSTM_AS_KERAS,
        mask,
        semantics,
        dtype,
        trace,
        zero_output,
        progress,
        initial_state,
        "C",
    )


PROGRESS_EVERY = 256  # steps between progress reports: cheap next to a step's matrix product

# Each family's cell, by the name its record gives (model/registry.py).
CELLS: Mapping[str, Callable[..., RecurrentRun]] = {
    "gru": gru_cell,
    "lstm": lstm_cell,
    "simple_rnn": simple_rnn_cell,
    "conv_lstm": conv_lstm_cell,
}


def layer_outputs(run: RecurrentRun, settings: Settings) -> list[np.ndarray]:
    """The layer's outputs as Keras returns them: output, then states with return_state."""
    output = run.sequence if settings.return_sequences else run.last_output
    return [output, *run.states] if settings.return_state else [output]


def merge_directions(forward: np.ndarray, backward: np.ndarray, merge_mode: str | None) -> list[np.ndarray]:
    """Bidirectional's merge of the two directions' outputs (backward already in time order)."""
    if merge_mode == "concat":
        return [np.concatenate([forward, backward], axis=-1)]
    if merge_mode == "sum":
        return [forward + backward]
    if merge_mode == "ave":
        return [(forward + backward) / 2]
    if merge_mode == "mul":
        return [forward * backward]
    if merge_mode is None:
        return [forward, backward]
    raise ReplayError(f"Bidirectional merge_mode {merge_mode!r} is not one of concat, sum, ave, mul, None")
