"""`grucli export` gives every gate slice exactly as Keras's own get_weights() has it.

Each sample model and each real file is loaded by the Keras that can load it (Keras 3 for its
own files, tf-keras for Keras 2 files, tf-keras's converters for CuDNN and Keras 1 layouts),
its recurrent weights are split by the documented gate order, and the arrays grucli exported
must match bit for bit, with no key missing and none extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES, expected_gate_slices, keras_recurrent_weights, real, sample
from grucli.cli import cli

KERAS3_FILES = sorted(p.name for p in SAMPLES.glob("*.keras")) + sorted(
    p.name for p in SAMPLES.glob("k3_*.h5") if not p.name.endswith(".weights.h5")
)
KERAS3_WEIGHTS_FILES = sorted(p.name for p in SAMPLES.glob("*.weights.h5"))
TF_KERAS_FILES = sorted(p.name for p in SAMPLES.glob("tfk_*.h5") if not p.name.endswith("_weights.h5"))
TF_KERAS_WEIGHTS_FILES = sorted(p.name for p in SAMPLES.glob("tfk_*_weights.h5"))


def export(path: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    out = tmp_path / "gates.npz"
    result = CliRunner().invoke(cli, ["export", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def expected_from_model(model: Any) -> dict[str, np.ndarray]:
    expected: dict[str, np.ndarray] = {}
    for path, kind, weights in keras_recurrent_weights(model):
        for key, array in expected_gate_slices(kind, weights).items():
            expected[f"{path}/{key}"] = array
    assert expected, "the model has no recurrent layer: the test would check nothing"
    return expected


def assert_same_arrays(exported: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(exported) == sorted(expected)
    for key, array in expected.items():
        assert exported[key].shape == array.shape, key
        assert np.array_equal(exported[key], array), key


@pytest.mark.parametrize("name", KERAS3_FILES)
def test_keras3_samples(name: str, tmp_path: Path, keras3: Any) -> None:
    model = keras3.saving.load_model(sample(name), compile=False)
    assert_same_arrays(export(sample(name), tmp_path), expected_from_model(model))


@pytest.mark.parametrize("name", TF_KERAS_FILES)
def test_tf_keras_samples(name: str, tmp_path: Path, tf_keras: Any) -> None:
    model = tf_keras.models.load_model(sample(name), compile=False)
    assert_same_arrays(export(sample(name), tmp_path), expected_from_model(model))


WEIGHTS_ONLY = [(name, name.replace(".weights.h5", ".keras"), "keras") for name in KERAS3_WEIGHTS_FILES] + [
    (name, name.replace("_weights.h5", ".h5"), "tf_keras") for name in TF_KERAS_WEIGHTS_FILES
]


@pytest.mark.parametrize("name, full_model, framework", WEIGHTS_ONLY)
def test_weights_only_files(name: str, full_model: str, framework: str, tmp_path: Path, keras3: Any, tf_keras: Any) -> None:
    load = keras3.saving.load_model if framework == "keras" else tf_keras.models.load_model
    model = load(sample(full_model), compile=False)
    # Zero the model first so only the weights file can supply the truth.
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(sample(name))
    assert_same_arrays(export(sample(name), tmp_path), expected_from_model(model))


def test_keras1_per_gate_files_match_tf_keras_conversion(tmp_path: Path, tf_keras: Any) -> None:
    from tf_keras.src.saving.legacy import hdf5_format

    for name, layer in [
        ("keras1_gru.h5", tf_keras.layers.GRU(4, reset_after=False, name="gru_1")),
        ("keras1_lstm.h5", tf_keras.layers.LSTM(4, name="lstm_1")),
    ]:
        layer.build((None, 5, 3))
        with h5py.File(sample(name), "r") as f:
            group = f["model_weights"][layer.name]
            stored = [group[n if isinstance(n, str) else n.decode()][()] for n in group.attrs["weight_names"]]
        converted = hdf5_format.preprocess_weights_for_loading(layer, stored, original_keras_version="1")
        kind = "GRU" if "gru" in name else "LSTM"
        expected = {f"{layer.name}/{k}": v for k, v in expected_gate_slices(kind, converted).items()}
        (tmp_path / name).mkdir()
        assert_same_arrays(export(sample(name), tmp_path / name), expected)


def test_cudnn_gru_weights_match_tf_keras_conversion(tmp_path: Path, tf_keras: Any) -> None:
    model = tf_keras.Sequential([tf_keras.layers.GRU(4, reset_after=True, input_shape=(5, 3), name="cu_dnngru_1")])
    model.load_weights(sample("cudnn_gru_weights.h5"), by_name=True)
    assert_same_arrays(export(sample("cudnn_gru_weights.h5"), tmp_path), expected_from_model(model))
    # The file was made from tfk_gru.h5's weights: the conversion must give them back.
    original = tf_keras.models.load_model(sample("tfk_gru.h5"), compile=False)
    for a, b in zip(original.get_weights(), model.get_weights()):
        assert np.array_equal(a, b)


# --- the real files people published ------------------------------------------------------------


def test_real_trafficflow_lstm(tmp_path: Path, tf_keras: Any) -> None:
    path = real("trafficflow_lstm_keras2.1.4.h5")
    model = tf_keras.models.load_model(path, compile=False)
    assert_same_arrays(export(path, tmp_path), expected_from_model(model))


def test_real_ethnicolr_lstm(tmp_path: Path, tf_keras: Any) -> None:
    path = real("ethnicolr_census2010_lstm_tfkeras2.5.h5")
    model = tf_keras.models.load_model(path, compile=False)
    assert_same_arrays(export(path, tmp_path), expected_from_model(model))


def test_real_trafficflow_gru_reset_before(tmp_path: Path, tf_keras: Any) -> None:
    # tf-keras refuses this file as saved (no reset_after key); patch the config in memory.
    path = real("trafficflow_gru_keras2.1.4.h5")
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    for layer in config["config"]:
        if layer["class_name"] == "GRU":
            layer["config"]["reset_after"] = False
    model = tf_keras.models.model_from_json(json.dumps(config))
    model.load_weights(path)
    assert_same_arrays(export(path, tmp_path), expected_from_model(model))


def test_real_textgenrnn_cudnn_lstm(tmp_path: Path, tf_keras: Any) -> None:
    # A user's recipe: LSTM(128) layers named like the CuDNNLSTM ones, loaded by name.
    path = real("textgenrnn_cudnnlstm_weights_keras2.1.5.hdf5")
    layers = tf_keras.layers
    inputs = layers.Input((None,))
    x = layers.Embedding(465, 100, name="embedding")(inputs)
    x = layers.LSTM(128, return_sequences=True, name="rnn_1")(x)
    x = layers.LSTM(128, return_sequences=True, name="rnn_2")(x)
    model = tf_keras.Model(inputs, x)
    model.load_weights(path, by_name=True)
    assert_same_arrays(export(path, tmp_path), expected_from_model(model))
