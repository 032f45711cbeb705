"""Models whose batch is fixed (`batch_input_shape`, stateful layers): verify runs predict in batches
of that size, as the user's own predict must, and refuses by name an input it cannot split into them.
A framework's failure is shown with its cause, not the first line of TensorFlow's traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from grucli.cli import cli
from grucli.errors import framework_cause


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _stateful_512(tf_keras: Any) -> Any:
    """As the published file: a stateful GRU whose batch_input_shape is [512, 25, 26]."""
    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.GRU(16, stateful=True, return_sequences=True, batch_input_shape=(512, 25, 26)),
                                 layers.Dense(3, activation="softmax")])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_a_stateful_gru_fixed_at_batch_512_verifies(tf_keras: Any, tmp_path: Path) -> None:
    model = _stateful_512(tf_keras)
    model.save(tmp_path / "stateful.h5")
    x = np.random.default_rng(1).normal(size=(512, 25, 26)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run("verify", str(tmp_path / "stateful.h5"), "--input", str(tmp_path / "x.npy"), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["passed"] is True
    assert document["comparisons"]["replay_vs_predict"]["passed"] is True
    # The replay's output is the model's own: tf-keras's predict at its batch of 512, from zero state.
    model.reset_states()
    expected = model.predict(x, batch_size=512, verbose=0)
    replayed = run("replay", str(tmp_path / "stateful.h5"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert replayed.exit_code == 0, replayed.output
    # 26 features and 16 units over 25 steps: float32 sums of ~40 products, then a softmax.
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)
    # explain's reference is the same predict, at the same batch.
    explained = run("explain", str(tmp_path / "stateful.h5"), "--input", str(tmp_path / "x.npy"), "--sample", "3", "--json")
    assert explained.exit_code == 0, explained.output
    output = json.loads(explained.stdout)["output"]
    assert output["reference"] == "predict" and output["reference_by"].startswith("tf-keras") and output["max_abs_diff"] < 1e-5


def test_a_stateful_model_refuses_rows_that_are_not_one_batch(tf_keras: Any, tmp_path: Path) -> None:
    _stateful_512(tf_keras).save(tmp_path / "stateful.h5")
    np.save(tmp_path / "x.npy", np.zeros((1024, 25, 26), np.float32))
    result = run("verify", str(tmp_path / "stateful.h5"), "--input", str(tmp_path / "x.npy"))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: input ") and "expects (batch of exactly 512, 25, 26)" in result.stderr
    assert "carry each row's state from one batch to the next" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_fixed_batch_runs_in_whole_batches(tf_keras: Any, tmp_path: Path) -> None:
    """A model that fixes its batch without stateful layers: any whole number of batches is fed to
    predict in batches of that size; a remainder is refused, naming the batch."""
    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.LSTM(4, return_sequences=True, batch_input_shape=(8, 5, 3)), layers.GRU(2)])
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(tmp_path / "fixed.h5")
    np.save(tmp_path / "x24.npy", rng.normal(size=(24, 5, 3)).astype(np.float32))
    result = run("verify", str(tmp_path / "fixed.h5"), "--input", str(tmp_path / "x24.npy"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"] is True
    np.save(tmp_path / "x20.npy", rng.normal(size=(20, 5, 3)).astype(np.float32))
    refused = run("verify", str(tmp_path / "fixed.h5"), "--input", str(tmp_path / "x20.npy"))
    assert refused.exit_code == 2
    assert "expects (batch a multiple of 8, 5, 3) (the model fixes its batch: predict runs it in batches of 8)" in refused.stderr


def test_a_framework_error_keeps_its_cause(tf_keras: Any, keras3: Any) -> None:
    """TensorFlow's own messages, as raised: the cause is the last block, behind a traceback."""
    x = np.zeros((32, 25, 26), np.float32)
    model = _stateful_512(tf_keras)
    try:
        model.predict(x, batch_size=32, verbose=0)
    except Exception as exc:  # noqa: BLE001 - the framework's own error is the subject here
        raw, cause = str(exc), framework_cause(exc)
    assert raw.splitlines()[0] == "in user code:"
    assert "\n" not in cause and "File \"" not in cause and "•" not in cause
    assert "expected shape=(512, None, 26), found shape=(32, 25, 26)" in cause

    layers = keras3.layers
    stateful = keras3.Sequential([keras3.Input(batch_shape=(8, 5, 3)), layers.GRU(4, stateful=True)])
    try:
        stateful.predict(np.zeros((32, 5, 3), np.float32), batch_size=32, verbose=0)
    except Exception as exc:  # noqa: BLE001
        cause = framework_cause(exc)
    assert "\x1b" not in cause and "\n" not in cause and "Arguments received" not in cause
    assert "If an RNN is stateful" in cause and "Expected batch size: 8" in cause and "Received batch size: 32" in cause


def test_framework_cause_of_a_one_line_message() -> None:
    assert framework_cause(ValueError("plain")) == "plain"
    assert framework_cause(RuntimeError("")) == "RuntimeError"
