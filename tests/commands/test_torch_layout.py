"""`export --layout torch`: PyTorch's own equations on the exported arrays reproduce the Keras layer.

The NumPy functions below follow the formulas in PyTorch's documentation of nn.GRU, nn.LSTM
and nn.RNN (gate order r, z, n and i, f, g, o; weights (gates*hidden, input)). Where torch is
installed the same arrays also go through torch's own modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def torch_gru_step(x: np.ndarray, h: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    gi = x @ p["weight_ih"].T + p.get("bias_ih", 0)
    gh = h @ p["weight_hh"].T + p.get("bias_hh", 0)
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def torch_lstm_step(x: np.ndarray, state: tuple[np.ndarray, np.ndarray], p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    h, c = state
    gates = x @ p["weight_ih"].T + p.get("bias_ih", 0) + h @ p["weight_hh"].T + p.get("bias_hh", 0)
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def torch_rnn_step(nonlinearity: str) -> Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], np.ndarray]:
    act = np.tanh if nonlinearity == "tanh" else (lambda v: np.maximum(v, 0))
    return lambda x, h, p: act(x @ p["weight_ih"].T + p.get("bias_ih", 0) + h @ p["weight_hh"].T + p.get("bias_hh", 0))


def run_direction(kind: str, x: np.ndarray, p: dict[str, np.ndarray], hidden: int, nonlinearity: str = "tanh") -> np.ndarray:
    batch, steps, _ = x.shape
    h = np.zeros((batch, hidden))
    c = np.zeros((batch, hidden))
    out = np.zeros((batch, steps, hidden))
    for t in range(steps):
        if kind == "LSTM":
            h, c = torch_lstm_step(x[:, t], (h, c), p)
        elif kind == "GRU":
            h = torch_gru_step(x[:, t], h, p)
        else:
            h = torch_rnn_step(nonlinearity)(x[:, t], h, p)
        out[:, t] = h
    return out


def torch_numpy(kind: str, x: np.ndarray, arrays: dict[str, np.ndarray], prefix: str, hidden: int, nonlinearity: str = "tanh") -> np.ndarray:
    def params(suffix: str) -> dict[str, np.ndarray]:
        return {name: arrays[f"{prefix}/{name}_l0{suffix}"].astype(np.float64) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if f"{prefix}/{name}_l0{suffix}" in arrays}

    forward = run_direction(kind, x.astype(np.float64), params(""), hidden, nonlinearity)
    if f"{prefix}/weight_ih_l0_reverse" not in arrays:
        return forward
    backward = run_direction(kind, x[:, ::-1].astype(np.float64), params("_reverse"), hidden, nonlinearity)[:, ::-1]
    return np.concatenate([forward, backward], axis=-1)


CASES = [
    ("gru", "GRU", lambda L: L.GRU(4, return_sequences=True, name="gru"), "tanh"),
    ("gru_nobias", "GRU", lambda L: L.GRU(4, return_sequences=True, use_bias=False, name="gru_nobias"), "tanh"),
    ("lstm", "LSTM", lambda L: L.LSTM(4, return_sequences=True, name="lstm"), "tanh"),
    ("rnn", "SimpleRNN", lambda L: L.SimpleRNN(4, return_sequences=True, name="rnn"), "tanh"),
    ("rnn_relu", "SimpleRNN", lambda L: L.SimpleRNN(4, activation="relu", return_sequences=True, name="rnn_relu"), "relu"),
    ("bi", "GRU", lambda L: L.Bidirectional(L.GRU(3, return_sequences=True), name="bi"), "tanh"),
    ("bil", "LSTM", lambda L: L.Bidirectional(L.LSTM(3, return_sequences=True), name="bil"), "tanh"),
]


def export_case(keras: Any, tmp_path: Path, build: Callable[[Any], Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], str]:
    model = keras.Sequential([keras.Input((6, 5)), build(keras.layers)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "m.keras")
    x = rng.normal(size=(3, 6, 5)).astype("float32")
    expected = model.predict(x, verbose=0)
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "m.keras"), "--layout", "torch", "-o", str(tmp_path / "t.npz")])
    assert result.exit_code == 0, result.stderr
    with np.load(tmp_path / "t.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return x, expected, arrays, result.stderr


@pytest.mark.parametrize("prefix, kind, build, nonlinearity", CASES, ids=[c[0] for c in CASES])
def test_pytorch_equations_reproduce_keras(keras3: Any, tmp_path: Path, prefix: str, kind: str, build: Any, nonlinearity: str) -> None:
    x, expected, arrays, _ = export_case(keras3, tmp_path, build)
    hidden = arrays[f"{prefix}/weight_hh_l0"].shape[1]
    assert arrays[f"{prefix}/weight_ih_l0"].shape == ({"GRU": 3, "LSTM": 4, "SimpleRNN": 1}[kind] * hidden, 5)
    assert np.abs(torch_numpy(kind, x, arrays, prefix, hidden, nonlinearity) - expected).max() < 1e-6


@pytest.mark.parametrize("prefix, kind, build, nonlinearity", CASES, ids=[c[0] for c in CASES])
def test_torch_itself_reproduces_keras(keras3: Any, tmp_path: Path, prefix: str, kind: str, build: Any, nonlinearity: str) -> None:
    torch = pytest.importorskip("torch")
    x, expected, arrays, _ = export_case(keras3, tmp_path, build)
    constructor = str(arrays.pop(f"{prefix}/constructor"))
    module = eval(constructor, {"nn": torch.nn})  # noqa: S307 - the string grucli wrote, as a user would paste it
    state = {key.split("/")[-1]: torch.from_numpy(value) for key, value in arrays.items()}
    module.load_state_dict(state)
    with torch.no_grad():
        output, _ = module(torch.from_numpy(x))
    assert np.abs(output.numpy() - expected).max() < 1e-6


def test_reset_before_gru_is_refused_unless_approximate(tmp_path: Path) -> None:
    from conftest import sample

    model = sample("k3_gru_reset_before.keras")
    result = CliRunner().invoke(cli, ["export", str(model), "--layout", "torch", "-o", str(tmp_path / "t.npz")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: layer gru: a GRU with reset_after=False applies the reset gate before the recurrent product")
    assert not (tmp_path / "t.npz").exists()
    result = CliRunner().invoke(cli, ["export", str(model), "--layout", "torch", "--approximate", "-o", str(tmp_path / "t.npz")])
    assert result.exit_code == 0
    assert "note: APPROXIMATE: gru has reset_after=False" in result.stderr
    with np.load(tmp_path / "t.npz") as data:
        assert not data["gru/bias_hh_l0"].any()  # the single Keras bias went to bias_ih
