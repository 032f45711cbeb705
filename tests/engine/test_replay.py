"""The NumPy replay against Keras itself: every sample model, every activation, every sequence option.

Truth is `predict` of the model loaded by Keras 3 (its own files) or tf-keras (Keras 2 files,
Keras 2 definitions such as hard_sigmoid = clip(0.2x + 0.5, 0, 1)).
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from conftest import SAMPLES, real, sample
from grucli.engine import steps as replay
from grucli.engine.graph import ModelReplay
from grucli.model.layers import find_layers
from grucli.model.records import RecurrentLayer
from grucli.files.reader import read_model
from grucli.model.semantics import KERAS2, KERAS3, semantics_for
from grucli.engine.steps import run_layer

CPU_LEVEL = 2e-6  # float32 predict against a float64 replay, measured 1e-8..1.5e-6 here

KERAS3_MODELS = sorted(p.name for p in SAMPLES.glob("*.keras")) + ["k3_nested.h5", "k3_stacked_cells.h5"]
TF_KERAS_MODELS = sorted(p.name for p in SAMPLES.glob("tfk_*.h5") if not p.name.endswith("_weights.h5"))


def model_input(model: Any, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = tuple(7 if d is None else d for d in model.inputs[0].shape[1:])
    if any(type(layer).__name__ == "Embedding" for layer in model.layers):
        x = rng.integers(1, 10, size=(3, *shape))
        x[0, -3:] = 0  # padding ids: masked with mask_zero
        x[2, 1] = 0
        return x
    x = rng.normal(size=(3, *shape)).astype("float32")
    x[1, -2:] = 0.0  # all-zero steps: masked where a Masking layer is present
    x[2, 2] = 0.0
    return x


def model_inputs(model: Any, seed: int = 0) -> list[np.ndarray]:
    """One array per model input (a seq2seq has two): ids where the model embeds, else values."""
    if len(model.inputs) == 1:
        return [model_input(model, seed)]
    rng = np.random.default_rng(seed)
    embeds = any(type(layer).__name__ == "Embedding" for layer in model.layers)
    shapes = [tuple(7 if d is None else d for d in t.shape[1:]) for t in model.inputs]
    return [rng.integers(0, 40, size=(3, *shape)) if embeds else rng.normal(size=(3, *shape)).astype("float32") for shape in shapes]


def replay_file(path: Path, x: np.ndarray | list[np.ndarray], dtype: type = np.float64) -> list[np.ndarray]:
    model_file = read_model(path)
    replay = ModelReplay(model_file, find_layers(model_file), semantics_for(model_file.keras_version, model_file.format), dtype)
    return replay.run(x if isinstance(x, list) else [x])


def predict(model: Any, x: np.ndarray) -> list[np.ndarray]:
    out = model.predict(x, verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def max_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("name", KERAS3_MODELS)
def test_keras3_sample_models(name: str, keras3: Any) -> None:
    model = keras3.saving.load_model(sample(name), compile=False)
    xs = model_inputs(model)
    assert max_error(replay_file(sample(name), xs), predict(model, xs if len(xs) > 1 else xs[0])) < CPU_LEVEL


@pytest.mark.parametrize("name", TF_KERAS_MODELS)
def test_tf_keras_sample_models(name: str, tf_keras: Any) -> None:
    model = tf_keras.models.load_model(sample(name), compile=False)
    x = model_input(model)
    assert max_error(replay_file(sample(name), x), predict(model, x)) < CPU_LEVEL


def test_float32_replay_is_close_too(keras3: Any) -> None:
    model = keras3.saving.load_model(sample("k3_lstm.keras"), compile=False)
    x = model_input(model)
    assert max_error(replay_file(sample("k3_lstm.keras"), x, np.float32), predict(model, x)) < 1e-5


# --- every activation, every sequence option, on layers built here --------------------------------------------

ACTIVATIONS = ["tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "elu", "selu", "softsign", "softplus",
               "exponential", "gelu", "silu", "relu6", "mish", "log_sigmoid", "leaky_relu", "hard_silu", "softmax"]


def recurrent_layer(kind: str, keras_layer: Any, config: dict[str, Any], weights: list[np.ndarray]) -> RecurrentLayer:
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if len(weights) == 3 else None
    return RecurrentLayer("l", kind, kind, recurrent.shape[0], kernel.shape[0], config, (), kernel, recurrent, bias)


def keras_run(keras: Any, layer: Any, x: np.ndarray, seed: int, scale: float = 0.6) -> tuple[list[np.ndarray], list[np.ndarray]]:
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, scale, size=w.shape).astype("float32") for w in model.get_weights()]
    model.set_weights(weights)
    return weights, predict(model, x)


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "SimpleRNN"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation(keras3: Any, kind: str, name: str) -> None:
    x = np.random.default_rng(1).normal(size=(2, 4, 3)).astype("float32")
    settings: dict[str, Any] = {"activation": name, "return_sequences": True}
    if kind != "SimpleRNN":
        settings["recurrent_activation"] = name if name not in ("exponential", "relu", "linear", "elu", "selu", "softplus", "gelu", "silu", "relu6", "mish", "leaky_relu", "hard_silu") else "sigmoid"
    # exp(exp(...)) in an LSTM overflows float32 with ordinary weights, in Keras as here.
    scale = 0.2 if name == "exponential" else 0.6
    weights, (expected,) = keras_run(keras3, getattr(keras3.layers, kind)(3, **settings), x, ACTIVATIONS.index(name), scale)
    assert np.all(np.isfinite(expected))
    run = run_layer(recurrent_layer(kind, None, settings, weights), x, semantics=KERAS3)
    assert np.abs(run.sequence - expected).max() < 1e-5 * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "SimpleRNN"])
def test_keras2_hard_sigmoid_matches_tf_keras(tf_keras: Any, kind: str) -> None:
    x = np.random.default_rng(2).normal(size=(2, 5, 3)).astype("float32") * 3  # reach the clipped region
    settings = {"activation": "hard_sigmoid", "return_sequences": True}
    if kind != "SimpleRNN":
        settings["recurrent_activation"] = "hard_sigmoid"
    if kind == "GRU":
        settings["reset_after"] = False
    weights, (expected,) = keras_run(tf_keras, getattr(tf_keras.layers, kind)(3, **settings), x, seed=4)
    layer = recurrent_layer(kind, None, settings, weights)
    assert np.abs(run_layer(layer, x, semantics=KERAS2).sequence - expected).max() < CPU_LEVEL
    # Keras 3's definition differs, visibly: the reason verify warns about old files.
    assert np.abs(run_layer(layer, x, semantics=KERAS3).sequence - expected).max() > 1e-3


def mapping_behind(array: np.ndarray) -> object:
    base = array
    while isinstance(base, np.ndarray) or isinstance(base, memoryview):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return base


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "SimpleRNN"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("mapped", [False, True], ids=["empty", "mapped"])
def test_go_backwards_masks_and_states(keras3: Any, kind: str, go_backwards: bool, zero_output_for_mask: bool, mapped: bool,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if mapped:  # a long sequence's output array, mapped with its pages populated (Linux), at any size
        if not hasattr(mmap, "MAP_POPULATE"):
            pytest.skip("no MAP_POPULATE here")
        monkeypatch.setattr(replay, "POPULATE_BYTES", 0)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 6, 2)).astype("float32")
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False  # trailing padding
    mask[1, :2] = False  # leading padding
    mask[2, 3] = False  # a hole
    settings = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards, "zero_output_for_mask": zero_output_for_mask}
    keras_layer = getattr(keras3.layers, kind)(4, **settings)
    inputs = keras3.Input((6, 2))
    outputs = keras_layer(keras3.layers.Masking(0.0)(inputs))
    model = keras3.Model(inputs, outputs)
    weights = [rng.normal(0, 0.6, size=w.shape).astype("float32") for w in model.get_weights()]
    model.set_weights(weights)
    masked_x = x * mask[..., None]
    expected = predict(model, masked_x)
    layer = recurrent_layer(kind, None, {**settings, "activation": "tanh", "recurrent_activation": "sigmoid"}, weights)
    run = run_layer(layer, masked_x, mask=mask, semantics=KERAS3)
    assert isinstance(mapping_behind(run.sequence), mmap.mmap) == mapped
    assert np.abs(run.sequence - expected[0]).max() < CPU_LEVEL
    for state, keras_state in zip(run.states, expected[1:]):
        assert np.abs(state - keras_state).max() < CPU_LEVEL


def test_trace_reproduces_the_output(keras3: Any) -> None:
    model = keras3.saving.load_model(sample("q_gru2_linear.keras"), compile=False)
    [layer] = [l for l in find_layers(read_model(sample("q_gru2_linear.keras"))).recurrent]
    x = np.array([[[0.5], [-1.0], [2.0]]], dtype="float32")
    run = run_layer(layer, x, semantics=KERAS3, trace=True)
    z, hh = run.trace["z"], run.trace["hh"]
    # By hand from the traced gates: h_t = z_t * h_{t-1} + (1 - z_t) * hh_t, from h_{-1} = 0.
    h = np.zeros(2)
    for t in range(3):
        h = z[0, t] * h + (1 - z[0, t]) * hh[0, t]
    assert np.allclose(h, run.last_output[0])
    gru_out = keras3.Model(model.inputs, model.layers[0].output).predict(x, verbose=0)
    assert np.abs(h - gru_out[0]).max() < CPU_LEVEL


# --- the real files, against tf-keras (Keras 2 semantics), with no TensorFlow in the replay -----------------


def tf_keras_real_model(tf_keras: Any, name: str) -> Any:
    path = real(name)
    if "gru" not in name:
        return tf_keras.models.load_model(path, compile=False)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    for layer in config["config"]:
        if layer["class_name"] == "GRU":
            layer["config"]["reset_after"] = False  # the bias shape (192,) says so; tf-keras needs the key
    model = tf_keras.models.model_from_json(json.dumps(config))
    model.load_weights(path)
    return model


@pytest.mark.parametrize("name", ["trafficflow_gru_keras2.1.4.h5", "trafficflow_lstm_keras2.1.4.h5", "ethnicolr_census2010_lstm_tfkeras2.5.h5"])
def test_real_files_against_tf_keras(tf_keras: Any, name: str) -> None:
    model = tf_keras_real_model(tf_keras, name)
    rng = np.random.default_rng(7)
    x = rng.integers(0, 977, size=(5, 20)) if "ethnicolr" in name else rng.uniform(0, 1, size=(5, 12, 1)).astype("float32")
    assert max_error(replay_file(real(name), x), predict(model, x)) < CPU_LEVEL
