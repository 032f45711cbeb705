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


SAME_RTOL, SAME_ATOL = 1e-6, 1e-7  # what `same` allows: float32 rounding


@dataclass(frozen=True)
class BlockNorms:
    """The norm of each gate block of a layer's kernel and recurrent kernel, in gate order."""

    kernel: tuple[float, ...]
    recurrent_kernel: tuple[float, ...]

    def sizes(self, layer: RecurrentLayer) -> int:
        """The values in the largest block: what float32 rounding can add up over."""
        count = len(layer.family.gates)
        return max(int(np.size(layer.kernel)), int(np.size(layer.recurrent_kernel))) // count


@dataclass(frozen=True)
class PairScreen:
    """What diff has already computed of a pair of layers, gate block by gate block, so the checks
    below can rule a pair out without reading its kernels again (a GRU(2048)'s are 100 MB each in
    float64): `unchanged` where every kernel block is exactly equal; else B can hold A's numbers
    moved only if it holds blocks of the same norms, since every misplacement checked here
    (permuted, transposed, exchanged, directions swapped) moves blocks whole."""

    a: BlockNorms
    b: BlockNorms
    unchanged: bool


def could_be_moved(a: BlockNorms, b: BlockNorms, values: int) -> bool:
    """Whether B's blocks could be A's in other places: the two multisets of block norms match
    within what `same` allows. Elementwise |x − y| ≤ atol + rtol·|y| gives
    |‖x‖ − ‖y‖| ≤ atol·√n + rtol·‖y‖; sorting pairs the norms as closely as any matching can."""
    left = np.sort(np.array(a.kernel + a.recurrent_kernel))
    right = np.sort(np.array(b.kernel + b.recurrent_kernel))
    if left.shape != right.shape or not (np.isfinite(left).all() and np.isfinite(right).all()):
        return True  # NaN or infinite weights: left to the checks themselves
    larger = np.maximum(left, right)
    bound = SAME_ATOL * np.sqrt(values) + SAME_RTOL * larger + 1e-12 * (1 + larger)
    return bool(np.all(np.abs(left - right) <= bound))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """The same numbers, but for float32 rounding."""
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=SAME_RTOL, atol=SAME_ATOL, equal_nan=True))


def layer_mistakes(a: RecurrentLayer, b: RecurrentLayer, screen: PairScreen | None = None) -> list[Finding]:
    """What one pair of layers got wrong, where B holds A's numbers misplaced. `screen`: what diff
    computed of the pair, which spares reading the kernels where it settles the question."""
    found: list[Finding] = _reset_after(a, b)
    if screen is not None and screen.unchanged:
        return found + _biases(a, b)
    if screen is not None and not could_be_moved(screen.a, screen.b, screen.a.sizes(a)):
        return found  # B's kernels are not A's, in any place: nothing misplaced to name
    return found + _misplaced(a, b)


def _misplaced(a: RecurrentLayer, b: RecurrentLayer) -> list[Finding]:
    found: list[Finding] = []
    kernel_a, recurrent_a = np.asarray(a.kernel, np.float64), np.asarray(a.recurrent_kernel, np.float64)
    kernel_b, recurrent_b = np.asarray(b.kernel, np.float64), np.asarray(b.recurrent_kernel, np.float64)
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


def directions_swapped(
    pairs: Sequence[tuple[RecurrentLayer, RecurrentLayer]], screens: Sequence[PairScreen] | None = None
) -> list[Finding]:
    """Consecutive forward/backward pairs whose weights are each other's. `screens`: one per pair,
    as `layer_mistakes` takes them."""
    found = []
    for index, ((fa, fb), (ba, bb)) in enumerate(itertools.pairwise(pairs)):
        if not (fa.settings.go_backwards is False and ba.settings.go_backwards is True):
            continue
        if screens is not None:
            forward, backward = screens[index], screens[index + 1]
            values = forward.a.sizes(fa)
            if forward.unchanged or not (could_be_moved(forward.a, backward.b, values) and could_be_moved(backward.a, forward.b, values)):
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
