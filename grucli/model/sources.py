"""Recurrent weights as PyTorch and ONNX store them, and the exact way to Keras's canonical layout.

PyTorch's `nn.GRU` stores `weight_ih_l{k}` (3u, input) with its gate rows in the order r, z, n,
`weight_hh_l{k}` (3u, u) likewise, and two biases `bias_ih_l{k}`, `bias_hh_l{k}`; it computes

    r = σ(W_ir x + b_ir + W_hr h + b_hr)        z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))    h' = (1 − z) ⊙ n + z ⊙ h

which is Keras's GRU with reset_after=True, gate for gate (n is Keras's candidate h), the kernel
the transpose of the rows: `kernel = [W_iz; W_ir; W_in]ᵀ`, bias row 0 the input biases, row 1
the recurrent ones. `nn.LSTM` rows are i, f, g, o (Keras i, f, c, o) and its two biases add up
to Keras's one; `nn.RNN` likewise, with tanh or relu (which a state_dict does not record).

ONNX's GRU stores W (directions, 3u, input), R (directions, 3u, u) in the order z, r, h and
B (directions, 6u) = [Wb, Rb]; `linear_before_reset=1` is Keras's reset_after=True (two bias
rows), 0 is reset_after=False (one bias, Wb + Rb). Its LSTM orders gates i, o, f, c.

Each family's orders are the family registry's (`torch_gates`, `torch_letters`, `onnx_gates`,
`onnx_letters`); this module holds the arithmetic and the words. May import: numpy, model/records,
model/registry, errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grucli.errors import ModelFileError
from grucli.model.registry import Family

PYTORCH, ONNX = "pytorch", "onnx"  # source_layout of a RecurrentLayer read from those formats


@dataclass(frozen=True)
class SourceWeights:
    """A recurrent layer's weights as another framework stores them: its arrays in its own layout
    (gate blocks stacked along the first axis, in `letters` order), what each gate is in Keras
    (`keras_gates`, aligned with `letters`), and the settings it records."""

    framework: str  # PYTORCH or ONNX
    module: str  # "nn.GRU", "nn.LSTMCell", "ONNX GRU"
    letters: tuple[str, ...]  # the framework's gate letters, in its stored order (r, z, n)
    keras_gates: tuple[str, ...]  # the Keras gate each letter is (r, z, h)
    arrays: tuple[tuple[str, np.ndarray], ...]  # (role, array): weight_ih, weight_hh, bias_ih, bias_hh (PyTorch); W, R, Wb, Rb (ONNX)
    names: tuple[str, ...]  # the names the file stores them under (rnn.weight_ih_l0, node W initializer ...)
    settings: Mapping[str, Any] = field(default_factory=dict)  # linear_before_reset, activations, direction, nonlinearity

    def array(self, role: str) -> np.ndarray | None:
        return next((array for name, array in self.arrays if name == role), None)

    @property
    def gate_rows(self) -> int:
        kernel = self.arrays[0][1]
        return int(kernel.shape[0]) // len(self.letters)


def torch_to_keras(
    family: Family, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None, b_hh: np.ndarray | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """PyTorch's rows to Keras's kernel, recurrent kernel and bias (GRU: two rows; else summed)."""
    order = _order(family.torch_gates, family, where)
    kernel = _columns(w_ih, order, family, where)
    recurrent = _columns(w_hh, order, family, where)
    if b_ih is None and b_hh is None:
        return kernel, recurrent, None
    if b_ih is None or b_hh is None:
        raise ModelFileError(f"{where} stores one of bias_ih and bias_hh without the other; expected both or neither")
    input_bias, recurrent_bias = (_blocks_to_keras(np.asarray(b, np.float64), order, family) for b in (b_ih, b_hh))
    if family.two_row_bias:  # nn.GRU is reset_after=True: the recurrent bias stays apart (inside r ⊙ (...))
        return kernel, recurrent, np.stack([input_bias, recurrent_bias]).astype(np.result_type(b_ih, b_hh))
    return kernel, recurrent, (input_bias + recurrent_bias).astype(np.result_type(b_ih, b_hh))


def onnx_to_keras(
    family: Family, w: np.ndarray, r: np.ndarray, b: np.ndarray | None, linear_before_reset: bool, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One direction of an ONNX recurrent node (W (G·u, in), R (G·u, u), B (2·G·u,)) to Keras's layout."""
    order = _order(family.onnx_gates, family, where)
    kernel = _columns(w, order, family, where)
    recurrent = _columns(r, order, family, where)
    if b is None:
        return kernel, recurrent, None
    input_bias, recurrent_bias = (_blocks_to_keras(part, order, family) for part in np.split(np.asarray(b), 2))
    if family.two_row_bias and linear_before_reset:
        return kernel, recurrent, np.stack([input_bias, recurrent_bias])
    return kernel, recurrent, input_bias + recurrent_bias


def keras_to_torch(family: Family, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray | None) -> dict[str, np.ndarray]:
    """The inverse, for the tests and the proof: PyTorch's weight_ih, weight_hh, bias_ih, bias_hh."""
    order = _order(family.torch_gates, family, "")
    blocks = [np.split(np.asarray(a).T, len(family.gates)) for a in (kernel, recurrent)]
    out = {name: np.concatenate([parts[family.gates.index(g)] for g in order]) for name, parts in zip(("weight_ih", "weight_hh"), blocks)}
    if bias is not None:
        rows = (bias[0], bias[1]) if np.ndim(bias) == 2 else (bias, np.zeros_like(bias))
        for name, row in zip(("bias_ih", "bias_hh"), rows):
            parts = np.split(np.asarray(row), len(family.gates))
            out[name] = np.concatenate([parts[family.gates.index(g)] for g in order])
    return out


def _order(order: tuple[str, ...] | None, family: Family, where: str) -> tuple[str, ...]:
    if order is None:
        raise ModelFileError(f"{where}: a {family.name} has no layout in that framework")
    return order


def _columns(rows: np.ndarray, order: Sequence[str], family: Family, where: str) -> np.ndarray:
    """(G·u, n) rows stored in `order` to Keras's (n, G·u) columns in Keras's gate order."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] % len(order):
        raise ModelFileError(f"{where} stores a weight of shape {rows.shape}; expected ({len(order)}·units, features)")
    blocks = np.split(rows, len(order))
    return np.concatenate([blocks[order.index(gate)].T for gate in family.gates], axis=1)


def _blocks_to_keras(vector: np.ndarray, order: Sequence[str], family: Family) -> np.ndarray:
    blocks = np.split(np.asarray(vector), len(order))
    return np.concatenate([blocks[order.index(gate)] for gate in family.gates])


# --- the framework's own equations and how they map to Keras -----------------------------------------------


def source_equations(source: SourceWeights, family: Family) -> tuple[str, ...]:
    """One step as the framework's documentation writes it, with its own letters."""
    if source.framework == PYTORCH:
        return _TORCH_EQUATIONS[family.name](source)
    return _ONNX_EQUATIONS[family.name](source)


def _torch_gru(source: SourceWeights) -> tuple[str, ...]:
    return (
        "r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)",
        "z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)",
        "n = tanh(W_in x + b_in + r * (W_hn h + b_hn))",
        "h' = (1 - z) * n + z * h",
    )


def _torch_lstm(source: SourceWeights) -> tuple[str, ...]:
    return (
        "i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)",
        "f = sigmoid(W_if x + b_if + W_hf h + b_hf)",
        "g = tanh(W_ig x + b_ig + W_hg h + b_hg)",
        "o = sigmoid(W_io x + b_io + W_ho h + b_ho)",
        "c' = f * c + i * g",
        "h' = o * tanh(c')",
    )


def _torch_rnn(source: SourceWeights) -> tuple[str, ...]:
    nonlinearity = source.settings.get("nonlinearity") or "tanh or relu (nn.RNN's nonlinearity; a state_dict does not record it)"
    return (f"h' = {nonlinearity}(W_ih x + b_ih + W_hh h + b_hh)",)


def _onnx_gru(source: SourceWeights) -> tuple[str, ...]:
    f, g = _onnx_activations(source, ("Sigmoid", "Tanh"))
    candidate = (
        "h~ = {g}(X Wh^T + r * (H Rh^T + Rbh) + Wbh)"
        if source.settings.get("linear_before_reset")
        else "h~ = {g}(X Wh^T + (r * H) Rh^T + Rbh + Wbh)"
    ).format(g=g)
    return (f"z = {f}(X Wz^T + H Rz^T + Wbz + Rbz)", f"r = {f}(X Wr^T + H Rr^T + Wbr + Rbr)", candidate, "H' = (1 - z) * h~ + z * H")


def _onnx_lstm(source: SourceWeights) -> tuple[str, ...]:
    f, g, h = _onnx_activations(source, ("Sigmoid", "Tanh", "Tanh"))
    return (
        f"i = {f}(X Wi^T + H Ri^T + Wbi + Rbi)",
        f"o = {f}(X Wo^T + H Ro^T + Wbo + Rbo)",
        f"f = {f}(X Wf^T + H Rf^T + Wbf + Rbf)",
        f"c~ = {g}(X Wc^T + H Rc^T + Wbc + Rbc)",
        "C' = f * C + i * c~",
        f"H' = o * {h}(C')",
    )


def _onnx_rnn(source: SourceWeights) -> tuple[str, ...]:
    (f,) = _onnx_activations(source, ("Tanh",))
    return (f"H' = {f}(X Wi^T + H Ri^T + Wbi + Rbi)",)


def _onnx_activations(source: SourceWeights, defaults: tuple[str, ...]) -> tuple[str, ...]:
    given = tuple(source.settings.get("activations") or ())
    return given[: len(defaults)] if len(given) >= len(defaults) else defaults


_TORCH_EQUATIONS = {"GRU": _torch_gru, "LSTM": _torch_lstm, "SimpleRNN": _torch_rnn}
_ONNX_EQUATIONS = {"GRU": _onnx_gru, "LSTM": _onnx_lstm, "SimpleRNN": _onnx_rnn}


def correspondence(source: SourceWeights, family: Family, reset_after: bool | None) -> tuple[str, ...]:
    """How the framework's layer is a Keras layer: which gate is which, which setting, which arrays."""
    pairs = ", ".join(f"{letter} = Keras {gate} ({family.meaning(gate)})" for letter, gate in zip(source.letters, source.keras_gates))
    keras = f"Keras {family.name}" + ("" if reset_after is None else f"(reset_after={reset_after})")
    lines = [f"{source.module} computes what {keras} computes: {pairs}"]
    if source.framework == PYTORCH:
        lines.append(
            "weight_ih / weight_hh rows are gate blocks (units × inputs): Keras's kernel / recurrent_kernel are their "
            "transposes, columns in Keras's gate order"
        )
        lines.append(
            "bias_ih and bias_hh are Keras's two bias rows (input, recurrent)"
            if family.two_row_bias
            else "Keras's one bias is bias_ih + bias_hh"
        )
    else:
        lines.append("W / R rows are gate blocks (units × inputs): Keras's kernel / recurrent_kernel are their transposes")
        lines.append("B = [Wb, Rb]: Keras's two bias rows (linear_before_reset=1)" if reset_after else "Keras's one bias is Wb + Rb")
    return tuple(lines)


# --- a layer's arrays sliced by the framework's own gates ------------------------------------------------

# Each stored array's name in the reports (the recurrent one labelled by previous-state rows).
RECURRENT_ROLES = frozenset({"weight_hh", "R"})


def gate_blocks(source: SourceWeights, letter: str, unit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Gate `letter`'s part of every stored array, (inputs × units) as every grucli table shows a
    gate (the transpose of the rows stored), biases as (units,); ONNX's B split into Wb and Rb.
    With `unit`, that unit's column (and bias value) only."""
    index, count = source.letters.index(letter), len(source.letters)
    found = []
    for role, array in source.arrays:
        parts = list(zip(("Wb", "Rb"), np.split(np.asarray(array), 2))) if role == "B" else [(role, array)]
        for name, part in parts:
            block = np.split(np.asarray(part), count)[index]
            block = block.T if block.ndim == 2 else block
            found.append((name, block[..., unit] if unit is not None else block))
    return found


def source_layout_lines(source: SourceWeights, family: Family, units: int) -> tuple[str, ...]:
    """Where each gate lies in the stored arrays, in the framework's terms."""
    names = ", ".join(role for role, _ in source.arrays)
    spans = ", ".join(
        f"[{k * units}:{(k + 1) * units}] {letter} ({family.meaning(gate)}; Keras {gate})"
        for k, (letter, gate) in enumerate(zip(source.letters, source.keras_gates))
    )
    lines = [f"rows of {names}: {spans}"]
    if source.framework == ONNX and source.array("B") is not None:
        lines.append(f"B holds Wb (the first {len(source.letters) * units} values) then Rb, each in the same gate order")
    lines.append("each gate is shown (inputs × units), the transpose of its stored rows, as Keras holds it")
    return tuple(lines)
