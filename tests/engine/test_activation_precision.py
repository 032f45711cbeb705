"""Every activation the replay knows, at extreme inputs, against Keras's own activations in float32:
no cancellation that turns a tiny output into 0 or a 37 % error (the old sigmoid, 0.5·(1 + tanh(x/2)),
gave 5.96e-08 for 4.34e-08 in float32).

Tolerances: 1e-6 relative, which holds down to the smallest normal float32. Below it TensorFlow
flushes subnormal results to zero, so differences under float32's smallest normal number (times
|x| where x multiplies a flushed value) are allowed. Keras computes elu and selu as exp(x) - 1, which loses the relative precision of small
negative outputs (elu(-1e-20) = 0); for those two only, an absolute float32 epsilon is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli
from grucli.model.semantics import KERAS3
from grucli.engine.activations import COMMON_ACTIVATIONS, HARD_SIGMOID

EXTREMES = np.array([-1e4, -700, -100, -88, -50, -30, -23, -20, -17, -10, -5, -1, -1e-3, -1e-20, 0, 1e-20, 1e-3, 1, 5,
                     10, 17, 20, 23, 30, 50, 88, 100, 700, 1e4], np.float32)
TINY = float(np.finfo(np.float32).tiny)
EPS = float(np.finfo(np.float32).eps)
EXP_MINUS_ONE_IN_KERAS = {"elu", "selu"}


@pytest.mark.parametrize("name", sorted(COMMON_ACTIVATIONS))
def test_activation_at_extremes_matches_keras_in_float32(name: str, keras3: Any) -> None:
    x = EXTREMES.reshape(1, -1) if name == "softmax" else EXTREMES
    with np.errstate(over="ignore"):  # exponential(1e4) is inf in both
        ours = np.asarray(COMMON_ACTIVATIONS[name](x))
    theirs = keras3.ops.convert_to_numpy(keras3.activations.get(name)(x))
    assert ours.dtype == np.float32, name
    # x·sigmoid(x) (silu, swish, mish) multiplies a subnormal sigmoid(-88) that TensorFlow flushed
    # to zero: the bound on a flushed value scales with |x|.
    atol = EPS if name in EXP_MINUS_ONE_IN_KERAS else TINY * np.maximum(1.0, np.abs(x))
    assert np.allclose(ours, theirs, rtol=1e-6, atol=atol, equal_nan=True), (
        name, [(float(a), float(b), float(c)) for a, b, c in zip(x.ravel(), ours.ravel(), theirs.ravel())
               if not np.isclose(b, c, rtol=1e-6, atol=atol, equal_nan=True)])


def test_hard_sigmoid_matches_keras3_in_float32(keras3: Any) -> None:
    ours = HARD_SIGMOID[KERAS3](EXTREMES)
    theirs = keras3.ops.convert_to_numpy(keras3.activations.hard_sigmoid(EXTREMES))
    assert ours.dtype == np.float32 and np.allclose(ours, theirs, rtol=1e-6, atol=TINY)


def test_a_float32_replay_of_tiny_sigmoid_outputs_matches_predict(keras3: Any, tmp_path: Path) -> None:
    """A model ending in sigmoid whose outputs are 5e-12 to 2e-9: its float32 replay equals Keras's
    float32 predict to 1e-6 relative. The pre-activations are exact in float32 (x·1 + (-23)), so the
    comparison measures the sigmoid alone, on any CPU."""
    layers = keras3.layers
    inputs = keras3.Input((6, 1))
    hidden = layers.SimpleRNN(1, activation="linear", return_sequences=True)(inputs)
    model = keras3.Model(inputs, layers.Dense(1, activation="sigmoid")(hidden))
    # The recurrent layer passes its input through unchanged (kernel 1, recurrent kernel 0, bias 0).
    model.layers[1].set_weights([np.ones((1, 1)), np.zeros((1, 1)), np.zeros(1)])
    model.layers[2].set_weights([np.ones((1, 1)), np.array([-23.0])])
    model.save(tmp_path / "m.keras")
    x = np.arange(-3.0, 3.0, 0.25, dtype=np.float32).reshape(4, 6, 1)
    np.save(tmp_path / "x.npy", x)
    expected = model.predict(x, verbose=0)
    assert 1e-12 < expected.min() and expected.max() < 1e-8
    result = CliRunner().invoke(cli, ["replay", str(tmp_path / "m.keras"), "--input", str(tmp_path / "x.npy"),
                                      "--dtype", "float32", "-o", str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    replayed = np.load(tmp_path / "y.npy")
    assert replayed.dtype == np.float32
    assert np.allclose(replayed, expected, rtol=1e-6, atol=0), np.max(np.abs(replayed / expected - 1))
