"""The mistakes of a hand port, named: where two layers hold the same numbers in other places.

Porting recurrent weights by hand between frameworks goes wrong in a few known ways, each leaving
the numbers intact but misplaced (keras-team/keras#15915: a torch.nn.GRU copied into Keras without
reordering r, z, n; onnx2tf#299; coremltools#1124). Given the layer as it should be (A) and as it
is (B), each check below asks whether B is A with one such mistake, and says which and how to fix it:

- gates_permuted: B's gate blocks are A's in another order ("z and r swapped");
- transposed: B's gate blocks are A's transposed (a PyTorch weight_hh block copied without .T);
- kernels_exchanged: B's kernel is A's recurrent kernel and the other way round;
- bias_rows_swapped: B's two GRU bias rows (input, recurrent) are A's the other way round;
- bias_summed: B's one bias row is the sum of A's two (a reset_after=True GRU's biases summed);
- reset_after_mismatch: one GRU applies r after the recurrent product, the other before;
- directions_swapped: a Bidirectional layer's forward weights are the other's backward ones.

"The same numbers" allows the last bits of float32 (an LSTM's two PyTorch biases, summed).

May import: numpy, model/, errors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grucli.model.records import RecurrentLayer


@dataclass(frozen=True)
class Finding:
    kind: str  # gates_permuted, transposed, kernels_exchanged, bias_rows_swapped, bias_summed, reset_after_mismatch, directions_swapped
    layer: str  # the path in A
    other: str  # the path in B
    detail: str
    fix: str


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """The same numbers, but for float32 rounding."""
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=1e-7, equal_nan=True))


def layer_mistakes(a: RecurrentLayer, b: RecurrentLayer) -> list[Finding]:
    """What one pair of layers got wrong, where B holds A's numbers misplaced."""
    found: list[Finding] = []
    kernel_a, recurrent_a = np.asarray(a.kernel, np.float64), np.asarray(a.recurrent_kernel, np.float64)
    kernel_b, recurrent_b = np.asarray(b.kernel, np.float64), np.asarray(b.recurrent_kernel, np.float64)
    found += _reset_after(a, b)
    if same(kernel_a, kernel_b) and same(recurrent_a, recurrent_b):
        return found + _biases(a, b)
    if same(kernel_a, recurrent_b) and same(recurrent_a, kernel_b):
        return [
            *found,
            Finding(
                "kernels_exchanged",
                a.path,
                b.path,
                "the kernel holds the recurrent kernel's numbers and the other way round",
                "put the input weights (PyTorch weight_ih, ONNX W) in the kernel and the recurrent ones "
                "(weight_hh, R) in the recurrent kernel",
            ),
        ]
    permutation = _permutation(a, (kernel_a, recurrent_a), (kernel_b, recurrent_b))
    if permutation is not None:
        return [*found, _permuted(a, b, permutation)]
    transposed = [
        name
        for name, x, y in (("kernel", kernel_a, kernel_b), ("recurrent_kernel", recurrent_a, recurrent_b))
        if not same(x, y) and _blocks_transposed(a, x, y)
    ]
    if transposed:
        return [
            *found,
            Finding(
                "transposed",
                a.path,
                b.path,
                f"each gate block of {' and '.join(transposed)} is transposed",
                "PyTorch and ONNX store (units × inputs) rows per gate: transpose each block (weight_ih.T) "
                "before putting it in Keras's (inputs × units) columns",
            ),
        ]
    return found


def _reset_after(a: RecurrentLayer, b: RecurrentLayer) -> list[Finding]:
    if not a.family.two_row_bias or a.settings.reset_after == b.settings.reset_after:
        return []
    findings = [
        Finding(
            "reset_after_mismatch",
            a.path,
            b.path,
            f"reset_after={a.settings.reset_after} in A, {b.settings.reset_after} in B: one applies the reset gate after "
            "the recurrent product, the other before, so they compute different things",
            "build the Keras GRU with reset_after=True for PyTorch weights (and ONNX linear_before_reset=1)",
        )
    ]
    if (
        a.bias is not None
        and b.bias is not None
        and np.ndim(a.bias) == 2
        and np.ndim(b.bias) == 1
        and same(np.asarray(a.bias, np.float64).sum(axis=0), np.asarray(b.bias, np.float64))
    ):
        findings.append(
            Finding(
                "bias_summed",
                a.path,
                b.path,
                "B's one bias row is the sum of A's input and recurrent rows",
                "keep the two rows apart: a reset_after=True GRU's bias is (2, 3·units), row 0 input, row 1 recurrent",
            )
        )
    return findings


def _biases(a: RecurrentLayer, b: RecurrentLayer) -> list[Finding]:
    if a.bias is None or b.bias is None or np.shape(a.bias) != np.shape(b.bias) or np.ndim(a.bias) != 2:
        return []
    bias_a, bias_b = np.asarray(a.bias, np.float64), np.asarray(b.bias, np.float64)
    if not same(bias_a, bias_b) and same(bias_a[::-1], bias_b):
        return [
            Finding(
                "bias_rows_swapped",
                a.path,
                b.path,
                "the bias's input row (0) and recurrent row (1) are swapped",
                "row 0 is the input bias (PyTorch bias_ih, ONNX Wb), row 1 the recurrent bias (bias_hh, Rb)",
            )
        ]
    return []


def _permutation(a: RecurrentLayer, left: Sequence[np.ndarray], right: Sequence[np.ndarray]) -> tuple[int, ...] | None:
    """The order of A's gate blocks that B holds in both kernels, other than A's own; None if none fits."""
    count = len(a.family.gates)
    blocks_a = [np.split(array, count, axis=-1) for array in left]
    blocks_b = [np.split(array, count, axis=-1) for array in right]
    for order in itertools.permutations(range(count)):
        if order == tuple(range(count)):
            continue
        if all(same(blocks_b[k][i], blocks_a[k][order[i]]) for k in range(len(left)) for i in range(count)):
            return order
    return None


def _permuted(a: RecurrentLayer, b: RecurrentLayer, order: tuple[int, ...]) -> Finding:
    letters = a.family.gates
    moved = [(letters[i], letters[j]) for i, j in enumerate(order) if i != j]
    if len(moved) == 2 and moved[0] == moved[1][::-1]:
        detail = f"{moved[0][0]} and {moved[0][1]} swapped"
    else:
        detail = "gate columns in the order " + ", ".join(letters[j] for j in order) + f" where Keras expects {', '.join(letters)}"
    family = a.family
    orders = [
        f"{name} stores {', '.join(order)}"
        for name, order in (("PyTorch", family.torch_letters), ("ONNX", family.onnx_letters))
        if order is not None
    ]
    return Finding(
        "gates_permuted",
        a.path,
        b.path,
        f"{detail} (in the kernel and the recurrent kernel alike)",
        f"reorder the gate blocks into Keras's order {', '.join(letters)} ({'; '.join(orders)})",
    )


def _blocks_transposed(a: RecurrentLayer, x: np.ndarray, y: np.ndarray) -> bool:
    count = len(a.family.gates)
    left, right = np.split(x, count, axis=-1), np.split(y, count, axis=-1)
    return all(block.shape[0] == block.shape[1] and same(block.T, other) for block, other in zip(left, right))


def directions_swapped(pairs: Sequence[tuple[RecurrentLayer, RecurrentLayer]]) -> list[Finding]:
    """Consecutive forward/backward pairs whose weights are each other's."""
    found = []
    for (fa, fb), (ba, bb) in itertools.pairwise(pairs):
        if not (fa.settings.go_backwards is False and ba.settings.go_backwards is True):
            continue
        if same(np.asarray(fa.kernel, np.float64), np.asarray(fb.kernel, np.float64)):
            continue
        crossed = all(
            same(np.asarray(getattr(x, name), np.float64), np.asarray(getattr(y, name), np.float64))
            for x, y in ((fa, bb), (ba, fb))
            for name in ("kernel", "recurrent_kernel")
        )
        if crossed:
            found.append(
                Finding(
                    "directions_swapped",
                    fa.path,
                    fb.path,
                    f"{fb.path} holds {ba.path}'s weights and {bb.path} holds {fa.path}'s",
                    "put PyTorch's l{k} weights in the forward layer and l{k}_reverse in the "
                    "backward one (Bidirectional's forward_layer, backward_layer)",
                )
            )
    return found
