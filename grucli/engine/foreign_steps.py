"""A layer of another framework run by its own equations, in NumPy: the proof a port needs where
that framework is not installed, and the reference the per-layer proof compares Keras's replay to.

Written from PyTorch's and ONNX's documented equations, on the arrays as those frameworks store them
(gate blocks stacked in rows, in their own order), never from Keras's canonical layout: a port that
put a gate in the wrong place gives other numbers here than the Keras replay of the ported file.

PyTorch nn.GRU:  r = σ(W_ir x + b_ir + W_hr h + b_hr); z = σ(...); n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));
                 h' = (1 − z) ⊙ n + z ⊙ h
PyTorch nn.LSTM: i, f, g, o from W_ih x + b_ih + W_hh h + b_hh; c' = σ(f) c + σ(i) tanh(g); h' = σ(o) tanh(c')
PyTorch nn.RNN:  h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh or relu
ONNX GRU/LSTM/RNN: the operator's definitions (z, r, h; i, o, f, c; linear_before_reset; activations).

May import: numpy, model/, errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from grucli.errors import ReplayError
from grucli.model.registry import Family
from grucli.model.sources import ONNX, SourceWeights


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


TORCH_ACTIVATIONS: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}


def onnx_activation(name: str, alpha: float | None, beta: float | None) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX's activation functions, as the operators' specification defines them."""
    if name == "Sigmoid":
        return _sigmoid
    if name == "Tanh":
        return np.tanh
    if name == "Relu":
        return lambda v: np.maximum(v, 0.0)
    if name == "HardSigmoid":
        a, b = 0.2 if alpha is None else alpha, 0.5 if beta is None else beta
        return lambda v: np.clip(a * v + b, 0.0, 1.0)
    if name == "Affine":
        a, b = 1.0 if alpha is None else alpha, 0.0 if beta is None else beta
        return lambda v: a * v + b
    if name == "Softsign":
        return lambda v: v / (1.0 + np.abs(v))
    if name == "Softplus":
        return lambda v: np.log1p(np.exp(v))
    raise ReplayError(f"ONNX activation {name} is not one grucli's reference of the ONNX operators computes")


def run_source(source: SourceWeights, family: Family, x: np.ndarray, reverse: bool, nonlinearity: str | None = None) -> np.ndarray:
    """The layer's output at every step, (batch, time, units) in processing order (from the last
    step when `reverse`), from zero state, in float64. `nonlinearity`: nn.RNN's, which a state_dict
    does not record."""
    steps = np.asarray(x, np.float64)[:, ::-1] if reverse else np.asarray(x, np.float64)
    if source.framework == ONNX:
        return _run_onnx(source, family, steps)
    return _run_torch(source, family, steps, nonlinearity)


def _arrays(source: SourceWeights, names: Sequence[str]) -> list[np.ndarray | None]:
    return [None if (array := source.array(name)) is None else np.asarray(array, np.float64) for name in names]


def _run_torch(source: SourceWeights, family: Family, x: np.ndarray, nonlinearity: str | None) -> np.ndarray:
    w_ih, w_hh, b_ih, b_hh = _arrays(source, ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    assert w_ih is not None and w_hh is not None  # a reader never makes a layer without them
    hidden = w_hh.shape[1]
    b_ih = np.zeros(w_ih.shape[0]) if b_ih is None else b_ih
    b_hh = np.zeros(w_hh.shape[0]) if b_hh is None else b_hh
    batch, steps, _ = x.shape
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    out = np.empty((batch, steps, hidden))
    for t in range(steps):
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if family.two_row_bias:  # GRU
            r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = _sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
            n = np.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
            h = (1.0 - z) * n + z * h
        elif family.has_cell_state:  # LSTM
            gates = gi + gh
            i, f = _sigmoid(gates[:, :hidden]), _sigmoid(gates[:, hidden : 2 * hidden])
            g, o = np.tanh(gates[:, 2 * hidden : 3 * hidden]), _sigmoid(gates[:, 3 * hidden :])
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            if nonlinearity is None or nonlinearity not in TORCH_ACTIVATIONS:
                raise ReplayError(f"nn.RNN computes tanh or relu; {nonlinearity!r} is neither")
            h = TORCH_ACTIVATIONS[nonlinearity](gi + gh)
        out[:, t] = h
    return out


def _run_onnx(source: SourceWeights, family: Family, x: np.ndarray) -> np.ndarray:
    w, r, b = _arrays(source, ("W", "R", "B"))
    assert w is not None and r is not None
    hidden = r.shape[1]
    count = w.shape[0] // hidden
    b = np.zeros(2 * count * hidden) if b is None else b
    wb, rb = b[: count * hidden], b[count * hidden :]
    names = list(source.settings.get("onnx_activations") or [])
    alphas = list(source.settings.get("onnx_activation_alpha") or [])
    betas = list(source.settings.get("onnx_activation_beta") or [])
    functions = [
        onnx_activation(name, alphas[k] if k < len(alphas) else None, betas[k] if k < len(betas) else None) for k, name in enumerate(names)
    ]
    batch, steps, _ = x.shape
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    out = np.empty((batch, steps, hidden))

    def block(matrix: np.ndarray, k: int) -> np.ndarray:
        return matrix[k * hidden : (k + 1) * hidden]

    for t in range(steps):
        xt = x[:, t]
        if family.two_row_bias:  # GRU
            f, g = functions[0], functions[1]
            z = f(xt @ block(w, 0).T + h @ block(r, 0).T + block(wb, 0) + block(rb, 0))
            reset = f(xt @ block(w, 1).T + h @ block(r, 1).T + block(wb, 1) + block(rb, 1))
            if source.settings.get("linear_before_reset"):
                candidate = g(xt @ block(w, 2).T + block(wb, 2) + reset * (h @ block(r, 2).T + block(rb, 2)))
            else:
                candidate = g(xt @ block(w, 2).T + (reset * h) @ block(r, 2).T + block(rb, 2) + block(wb, 2))
            h = (1.0 - z) * candidate + z * h
        elif family.has_cell_state:  # LSTM
            f, g, act_h = functions[0], functions[1], functions[2]
            pre = [xt @ block(w, k).T + h @ block(r, k).T + block(wb, k) + block(rb, k) for k in range(4)]  # i, o, f, c
            i, o, forget, cc = f(pre[0]), f(pre[1]), f(pre[2]), g(pre[3])
            c = forget * c + i * cc
            h = o * act_h(c)
        else:
            h = functions[0](xt @ block(w, 0).T + h @ block(r, 0).T + block(wb, 0) + block(rb, 0))
        out[:, t] = h
    return out
