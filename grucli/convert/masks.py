"""Keras masks in the ONNX graph: the masks Masking and Embedding(mask_zero) compute, and a masked
recurrent layer written as a native ONNX node, without a Loop or Scan, for any mask pattern.

Keras skips a masked step: every state carries over and the output repeats the previous one (zero
before the first real step, or zero at every masked step with zero_output_for_mask). ONNX's
GRU/LSTM/RNN take `sequence_lens` instead: the first n steps of a row are real, the rest are not.
So each row's real steps are moved to the front, in order (a pre-padded batch, Keras's
`pad_sequences` default, and a post-padded one alike, and a mask with holes), the node runs with
n = the row's count of real steps, and step t's output is read back from the compacted position of
the last real step at or before t. The final states are the node's (its state after the n-th
step), or the initial states for a row with no real step.

May import: numpy, convert/symbols, errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grucli.convert.builder import GraphBuilder
from grucli.convert.symbols import BOOL, Symbol


def not_equal_mask(b: GraphBuilder, x: str, value: str) -> str:
    """bool: x != value, elementwise."""
    return b.one("Not", [b.one("Equal", [x, value])])


def any_feature(b: GraphBuilder, kept: str) -> str:
    """bool (batch, time) from bool (batch, time, features): a step is real where any feature is kept."""
    as_float = b.one("Cast", [kept], to=b.onnx.TensorProto.FLOAT)
    return b.one("Greater", [b.one("ReduceMax", [as_float], axes=[-1], keepdims=0), b.constant(np.float32(0), "zero")])


def masking(b: GraphBuilder, x: Symbol, mask_value: float) -> Symbol:
    """Keras's Masking: a step is real where any feature differs from mask_value; masked steps are zeroed."""
    mask = any_feature(b, not_equal_mask(b, x.name, b.constant(np.float32(mask_value), "mask_value")))
    kept = b.one("Unsqueeze", [b.one("Cast", [mask], to=b.onnx.TensorProto.FLOAT), b.int_constant([-1], "axis")])
    return Symbol(b.one("Mul", [x.name, kept]), x.rank, mask)


def reversed_in_time(b: GraphBuilder, sequence: str) -> str:
    """A (batch, time, ...) tensor with its time axis reversed."""
    return b.one(
        "Slice",
        [
            sequence,
            b.int_constant([-1], "start"),
            b.int_constant([-(2**62)], "end"),
            b.int_constant([1], "axis"),
            b.int_constant([-1], "step"),
        ],
    )


@dataclass(frozen=True)
class Compaction:
    """A masked batch with each row's real steps moved to the front, and how to read a step back."""

    x: Symbol  # (batch, time, features): the real steps first, in order
    lens: str  # int32 (batch,): real steps per row, at least 1 (ONNX's sequence_lens)
    any_real: str  # bool (batch, 1): the row has a real step
    source: str  # int64 (batch, time, 1): the compacted position of the last real step at or before t (0 before the first)
    seen: str  # bool (batch, time, 1): a real step has come at or before t
    real: str  # bool (batch, time, 1): step t is real


def compact(b: GraphBuilder, x: Symbol, mask: str) -> Compaction:
    """`x` with the real steps of each row first: sorting t + T·(step t is masked) puts them in
    order ahead of the masked ones (the keys are distinct, so the order is exact)."""
    proto = b.onnx.TensorProto
    real = b.one("Cast", [mask], to=proto.INT64)  # (batch, time)
    steps = b.one("Gather", [b.one("Shape", [x.name]), b.int_constant([1], "time_axis")])  # [T]
    positions = b.one("Range", [b.int_constant(0, "start"), b.one("Squeeze", [steps]), b.int_constant(1, "delta")])
    masked = b.one("Sub", [b.int_constant(1, "one"), real])
    keys = b.one("Add", [positions, b.one("Mul", [masked, steps])])
    _, order = b.node("TopK", [keys, steps], outputs=2, axis=1, largest=0, sorted=1)
    compacted = b.one("GatherND", [x.name, b.one("Unsqueeze", [order, b.int_constant([-1], "axis")])], batch_dims=1)
    count = b.one("ReduceSum", [real, b.int_constant([1], "axis")], keepdims=0)  # (batch,)
    lens = b.one("Cast", [b.one("Max", [count, b.int_constant(1, "one")])], to=proto.INT32)
    any_real = b.one("Unsqueeze", [b.one("Greater", [count, b.int_constant(0, "zero")]), b.int_constant([-1], "axis")])
    seen_count = b.one("CumSum", [real, b.int_constant(1, "axis")])  # real steps at or before t
    source = b.one("Max", [b.one("Sub", [seen_count, b.int_constant(1, "one")]), b.int_constant(0, "zero")])
    last_axis = b.int_constant([-1], "axis")
    return Compaction(
        x=Symbol(compacted, 3),
        lens=lens,
        any_real=any_real,
        source=b.one("Unsqueeze", [source, last_axis]),
        seen=b.one("Unsqueeze", [b.one("Greater", [seen_count, b.int_constant(0, "zero")]), last_axis]),
        real=b.one("Unsqueeze", [mask, last_axis]),
    )


def expanded(b: GraphBuilder, c: Compaction, sequence: str, zero_output: bool) -> str:
    """The compacted output sequence (batch, time, units) back on the steps of the batch: a real
    step's own output, a masked step the previous real one's (zero before the first real step),
    or zero at every masked step with zero_output_for_mask."""
    gathered = b.one("GatherND", [sequence, c.source], batch_dims=1)
    keep = c.real if zero_output else c.seen
    return b.one("Where", [keep, gathered, b.one("ConstantOfShape", [b.one("Shape", [gathered])])])


def final_state(b: GraphBuilder, c: Compaction, state: str, initial: str | None) -> str:
    """A final state (batch, units): the node's, or the initial state (zeros without one) for a row with no real step."""
    start = initial if initial is not None else b.one("ConstantOfShape", [b.one("Shape", [state])])
    return b.one("Where", [c.any_real, state, start])


def mask_symbol(name: str) -> Symbol:
    """A bool (batch, time) mask as a tensor of its own (Keras 3 saves the ops computing one)."""
    return Symbol(name, 2, dtype=BOOL)
