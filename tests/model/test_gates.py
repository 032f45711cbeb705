"""Gate slicing: the block grucli calls `z` behaves as Keras's update gate, `o` as the output gate.

Each test writes a large bias into the columns grucli assigns to one gate and checks what
Keras's `predict` does, against a hand-derived expectation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from grucli.model import gates
from grucli.model.records import NamedArray, RecurrentLayer


def _layer(kind: str, units: int, input_dim: int, bias_rows: int = 1) -> RecurrentLayer:
    n = len(gates.gate_names(kind))
    columns = n * units
    kernel = np.arange(input_dim * columns, dtype=float).reshape(input_dim, columns)
    recurrent = 1000 + np.arange(units * columns, dtype=float).reshape(units, columns)
    bias = -np.arange(bias_rows * columns, dtype=float).reshape((bias_rows, columns) if bias_rows == 2 else (columns,))
    return RecurrentLayer("l", kind, kind, units, input_dim, {}, (), kernel, recurrent, bias)


def test_gru_slices_by_hand() -> None:
    sliced = gates.slice_gates(_layer("GRU", units=2, input_dim=1, bias_rows=2))
    # kernel row 0 is 0..5: z takes columns 0-1, r 2-3, h 4-5; bias row 1 is the recurrent bias.
    assert sliced["z"]["kernel"].tolist() == [[0, 1]]
    assert sliced["r"]["kernel"].tolist() == [[2, 3]]
    assert sliced["h"]["kernel"].tolist() == [[4, 5]]
    assert sliced["h"]["recurrent_kernel"].tolist() == [[1004, 1005], [1010, 1011]]
    assert sliced["r"]["bias"].tolist() == [-2, -3]
    assert sliced["r"]["recurrent_bias"].tolist() == [-8, -9]


def test_lstm_slices_by_hand() -> None:
    sliced = gates.slice_gates(_layer("LSTM", units=1, input_dim=1))
    assert [sliced[g]["kernel"].item() for g in "ifco"] == [0, 1, 2, 3]
    assert [sliced[g]["bias"].item() for g in "ifco"] == [0, -1, -2, -3]
    assert "recurrent_bias" not in sliced["i"]


def test_keras1_order_and_suffix_agree() -> None:
    rng = np.random.default_rng(0)
    stored_order = ["i", "c", "f", "o"]
    arrays = [NamedArray(f"lstm_1_{role}_{g}", rng.normal(size=(3, 2) if role == "W" else (2, 2) if role == "U" else (2,)))
              for g in stored_order for role in ("W", "U", "b")]
    by_suffix = gates.from_keras1("LSTM", arrays)
    by_order = gates.from_keras1("LSTM", [NamedArray(f"w{i}", a.array) for i, a in enumerate(arrays)])
    for a, b in zip(by_suffix, by_order):
        assert np.array_equal(a, b)
    # canonical i, f, c, o: the forget gate's kernel is stored third (W_f), and lands second.
    assert np.array_equal(by_suffix[0][:, 2:4], arrays[6].array)


def _predict(keras: Any, layer: Any, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    model.set_weights(weights)
    return np.asarray(model.predict(x, verbose=0))


@pytest.mark.parametrize("reset_after", [True, False])
def test_z_is_the_update_gate(keras3: Any, reset_after: bool) -> None:
    rng = np.random.default_rng(1)
    units, x = 3, rng.normal(size=(2, 4, 2)).astype("float32")
    layer = keras3.layers.GRU(units, reset_after=reset_after)
    layer.build((None, 4, 2))
    kernel, recurrent, bias = (rng.normal(size=w.shape).astype("float32") for w in layer.get_weights())
    z = gates.gate_columns("GRU", units, "z")
    # z = 1 everywhere: Keras's h = z*h_prev + (1-z)*hh keeps the zero initial state.
    bias_open = bias.copy()
    bias_open[..., z] = 50.0
    assert np.allclose(_predict(keras3, keras3.layers.GRU(units, reset_after=reset_after), [kernel, recurrent, bias_open], x), 0.0, atol=1e-6)
    # z = 0 everywhere: h = hh, which is not zero for these weights.
    bias_shut = bias.copy()
    bias_shut[..., z] = -50.0
    assert np.abs(_predict(keras3, keras3.layers.GRU(units, reset_after=reset_after), [kernel, recurrent, bias_shut], x)).min() > 1e-3


def test_o_is_the_lstm_output_gate_and_f_the_forget_gate(keras3: Any) -> None:
    rng = np.random.default_rng(2)
    units, x = 2, rng.normal(size=(2, 3, 2)).astype("float32")
    layer = keras3.layers.LSTM(units)
    layer.build((None, 3, 2))
    kernel, recurrent, bias = (rng.normal(size=w.shape).astype("float32") for w in layer.get_weights())
    shut_output = bias.copy()
    shut_output[gates.gate_columns("LSTM", units, "o")] = -50.0
    assert np.allclose(_predict(keras3, keras3.layers.LSTM(units), [kernel, recurrent, shut_output], x), 0.0, atol=1e-6)
    # i = 0 and f = 1: the cell never leaves 0, so h = o * tanh(0) = 0 whatever o is.
    frozen_cell = bias.copy()
    frozen_cell[gates.gate_columns("LSTM", units, "i")] = -50.0
    frozen_cell[gates.gate_columns("LSTM", units, "f")] = 50.0
    assert np.allclose(_predict(keras3, keras3.layers.LSTM(units), [kernel, recurrent, frozen_cell], x), 0.0, atol=1e-6)


def test_cudnn_conversion_matches_tf_keras_on_random_weights(tf_keras: Any) -> None:
    from tf_keras.src.saving.legacy import hdf5_format

    rng = np.random.default_rng(3)
    units, input_dim = 3, 5
    cudnn = [rng.normal(size=(input_dim, 4 * units)), rng.normal(size=(units, 4 * units)), rng.normal(size=(8 * units,))]
    target = tf_keras.layers.LSTM(units)
    target.build((None, 2, input_dim))
    expected = hdf5_format._convert_rnn_weights(target, [w.copy() for w in cudnn])
    ours = gates.from_cudnn("LSTM", *cudnn)
    for a, b in zip(ours, expected):
        assert np.array_equal(a, b)


def test_describe_layout_names_bias_rows_and_update_rule() -> None:
    lines = " ".join(gates.describe_layout(_layer("GRU", units=2, input_dim=1, bias_rows=2)))
    assert "row 0 is the input bias" in lines and "row 1 the recurrent bias" in lines
    assert "h = z * h_prev + (1 - z) * hh" in lines
