"""`--config`: a weights-only file plus its architecture (model.to_json() or a .keras config.json)
is a full model for every command. Truth from tf-keras / Keras 3 loading the same weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import real, sample
from grucli.cli import cli

REACTIONRNN = "reactionrnn_gru_keras2.0.6_cntk_weights.hdf5"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def reactionrnn_model(tf_keras: Any, dtype: str = "float32") -> Any:
    """reactionrnn's architecture (its repository's reactionrnn.py) under Keras 2.0.6's GRU defaults
    (hard_sigmoid, reset_after=False), with its published weights.

    `dtype="float64"` builds the same model computing in float64: the ground truth for grucli's
    float64 replay on any CPU (a float32 GRU(256) over 40 steps moves by ~1e-5 between AVX2 and
    AVX-512 kernels; in float64 both agree to ~1e-15)."""
    layers = tf_keras.layers
    ids = tf_keras.Input((40,), name="input")
    embedded = layers.Embedding(401, 100, name="embedding", dtype=dtype)(ids)
    hidden = layers.GRU(256, reset_after=False, recurrent_activation="hard_sigmoid", name="rnn", dtype=dtype)(embedded)
    model = tf_keras.Model(ids, layers.Dense(5, activation="softmax", name="output", dtype=dtype)(hidden))
    model.load_weights(real(REACTIONRNN))
    return model


def test_a_real_weights_only_file_replays_and_verifies_with_its_architecture(tf_keras: Any, tmp_path: Path) -> None:
    model = reactionrnn_model(tf_keras)
    (tmp_path / "model.json").write_text(model.to_json())
    ids = np.random.default_rng(0).integers(1, 401, (3, 40))
    np.save(tmp_path / "ids.npy", ids)
    weights, config = str(real(REACTIONRNN)), str(tmp_path / "model.json")
    replayed = run("replay", weights, "--config", config, "--input", str(tmp_path / "ids.npy"), "-o", str(tmp_path / "y.npy"))
    assert replayed.exit_code == 0, replayed.stderr
    reference = reactionrnn_model(tf_keras, "float64").predict(ids, verbose=0)
    assert reference.dtype == np.float64
    assert np.allclose(np.load(tmp_path / "y.npy"), reference, rtol=1e-9, atol=1e-12)
    # 40 steps of a GRU(256) in float32 drift ~1.4e-5 from float64 inside the layer (the softmax
    # output agrees to 1e-6): the per-layer check needs a tolerance above the 1e-5 default.
    verified = run("verify", weights, "--config", config, "--input", str(tmp_path / "ids.npy"), "--atol", "1e-4", "--json")
    document = json.loads(verified.stdout)
    assert verified.exit_code == 0, verified.stdout
    assert document["repairs"][0] == f"built from --config {config} with the weights of {weights}"
    assert document["comparisons"]["replay_vs_predict"]["passed"] is True
    inspected = json.loads(run("inspect", weights, "--config", config, "--json").stdout)
    # The weights file's Keras (2.0.6, CNTK) decides the definitions, not the Keras that wrote the JSON.
    assert (inspected["keras_version"], inspected["backend"], inspected["config_path"]) == ("2.0.6", "cntk", config)
    assert [(layer["path"], layer["kind"], layer["config"]["recurrent_activation"]) for layer in inspected["layers"]] == [
        ("rnn", "GRU", "hard_sigmoid")]


def test_keras3_weights_and_config_json(keras3: Any, tmp_path: Path) -> None:
    layers = keras3.layers
    inputs = keras3.Input((6, 3))
    sequence = layers.Bidirectional(layers.LSTM(4, return_sequences=True), name="bi")(inputs)
    model = keras3.Model(inputs, layers.Dense(2, name="head")(layers.GRU(3, name="gru")(sequence)))
    model.set_weights([np.random.default_rng(1).normal(scale=0.5, size=w.shape) for w in model.get_weights()])
    model.save_weights(tmp_path / "m.weights.h5")
    (tmp_path / "config.json").write_text(model.to_json())
    weights, config = str(tmp_path / "m.weights.h5"), str(tmp_path / "config.json")
    exported = run("export", weights, "--config", config, "-o", str(tmp_path / "g.npz"))
    assert exported.exit_code == 0, exported.stderr
    with np.load(tmp_path / "g.npz") as archive:  # real names: bi/forward, not inferred group names
        assert np.array_equal(archive["gru/z/kernel"], model.get_layer("gru").get_weights()[0][:, :3])
        assert np.array_equal(archive["bi/backward/f/recurrent_kernel"], model.get_layer("bi").backward_layer.get_weights()[1][:, 4:8])
    x = np.random.default_rng(2).normal(size=(3, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    replayed = run("replay", weights, "--config", config, "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert replayed.exit_code == 0, replayed.stderr
    assert np.allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    verified = run("verify", weights, "--config", config, "--json")
    assert verified.exit_code == 0, verified.stdout
    assert json.loads(verified.stdout)["framework"].startswith("Keras 3")


def test_diff_a_weights_only_file_against_the_full_model(keras3: Any, tmp_path: Path) -> None:
    model = keras3.saving.load_model(sample("k3_gru.keras"))
    model.save_weights(tmp_path / "m.weights.h5")
    (tmp_path / "config.json").write_text(model.to_json())
    same = run("diff", str(sample("k3_gru.keras")), str(tmp_path / "m.weights.h5"), "--config", str(tmp_path / "config.json"),
               "--exit-code", "--json")
    assert same.exit_code == 0, same.stdout + same.stderr
    both_full = run("diff", str(sample("k3_gru.keras")), str(sample("k3_gru.keras")), "--config", str(tmp_path / "config.json"))
    assert both_full.exit_code == 2
    assert "both hold their own configs; expected at least one weights-only file" in both_full.stderr


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file; expected the JSON of model.to_json() or a .keras config.json"),
    ("{not json", "is not valid JSON"),
    ('{"a": 1}', "is not a Keras model config; expected an object with class_name and config"),
])
def test_an_unusable_config_is_refused(content: str | None, message: str, tmp_path: Path) -> None:
    config = tmp_path / "model.json"
    if content is not None:
        config.write_text(content)
    result = run("inspect", str(real(REACTIONRNN)), "--config", str(config))
    assert result.exit_code == 2 and result.stderr.startswith("Error: --config ") and message in result.stderr, result.stderr


def test_config_for_a_full_model_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"class_name": "Sequential", "config": {"layers": []}}')
    result = run("replay", str(sample("k3_gru.keras")), "--config", str(tmp_path / "model.json"), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {sample('k3_gru.keras')} holds its own model config; --config is for weights-only files "
                             "(.h5 from save_weights, .weights.h5)\n")


def test_a_config_that_does_not_fit_the_weights_is_a_bad_file(tf_keras: Any, tmp_path: Path) -> None:
    # The architecture of another model: its layers are not in the weights file.
    other = tf_keras.Sequential([tf_keras.layers.LSTM(3, input_shape=(5, 2), name="lstm_x")])
    (tmp_path / "model.json").write_text(other.to_json())
    result = run("inspect", str(real(REACTIONRNN)), "--config", str(tmp_path / "model.json"))
    assert result.exit_code == 2 and result.stderr.startswith("Error: "), result.stderr
    assert "internal error" not in result.stderr


def test_the_saved_by_label_says_where_the_version_came_from(tf_keras: Any, tmp_path: Path) -> None:
    """A TF checkpoint records no Keras version: the one shown is the --config JSON's, and says so."""
    layers = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((4, 2)), layers.GRU(1)])
    model.save_weights(tmp_path / "ckpt" / "weights")
    (tmp_path / "model.json").write_text(model.to_json())
    inspected = run("inspect", str(tmp_path / "ckpt"), "--config", str(tmp_path / "model.json"))
    assert inspected.exit_code == 0, inspected.output
    text = " ".join(inspected.stdout.split())  # as one line, however the header wraps
    assert f"saved by Keras {tf_keras.__version__} (the version the --config JSON records; the file records none)" in text
    assert "GRU  ·  1 unit  ·  input_dim 2" in inspected.stdout  # one unit, in the singular
    document = json.loads(run("inspect", str(tmp_path / "ckpt"), "--config", str(tmp_path / "model.json"), "--json").stdout)
    assert document["keras_version_source"] == "config"
    verified = run("verify", str(tmp_path / "ckpt"), "--config", str(tmp_path / "model.json"))
    assert "(the version the --config JSON records; the file records none)" in " ".join(verified.stdout.split())
    own = json.loads(run("inspect", str(sample("q_gru1.keras")), "--json").stdout)
    assert own["keras_version_source"] == "file"
    assert "saved by Keras 3.15.1\n" in run("inspect", str(sample("q_gru1.keras"))).stdout + "\n"
