"""convert on the forms published files take: TimeDistributed around every layer convert writes
(convolutions, pooling, normalisation, Flatten, Dense, nested models, a recurrent layer), a
tf.keras 2 Sequential whose input shape is declared only on its wrapped first layer, graph inputs
and outputs that carry the Keras model's names, and integer inputs of the type Keras declares.

Each model is built as users build it, saved, converted without TensorFlow, run by ONNX Runtime and
compared with Keras's own predict at batch 1 and 7.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli
from tests.convert.test_onnx import ATOL, RTOL, _as_list, feeds

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the converted file (pip install -e '.[test]')")


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _randomized(keras: Any, model: Any, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.4, size=w.shape).astype("float32") for w in model.get_weights()])
    for layer in _all_layers(model):  # a variance is positive, as training leaves it
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.abs(layer.moving_variance.numpy()) + 0.1)
    return model


def _all_layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        inner = getattr(layer, "layer", None)
        if inner is not None:
            found.append(inner)
            found += _all_layers(inner) if hasattr(inner, "layers") else []
    return found


def _frames(keras: Any) -> Any:
    """Each of 5 frames a short sequence of 8 steps: per-frame Conv1D, normalisation, pooling, Flatten."""
    L = keras.layers
    x = keras.Input((5, 8, 3))
    y = L.TimeDistributed(L.Conv1D(4, 3, padding="same", activation="relu"))(x)
    y = L.TimeDistributed(L.BatchNormalization())(y)
    y = L.TimeDistributed(L.MaxPooling1D(2))(y)
    y = L.TimeDistributed(L.Conv1D(3, 2))(y)
    y = L.TimeDistributed(L.Flatten())(y)
    y = L.TimeDistributed(L.Dense(6, activation="tanh"))(y)
    return keras.Model(x, L.GRU(4, return_sequences=True)(y))


def _nested_per_frame(keras: Any) -> Any:
    """A per-frame encoder as a nested model inside TimeDistributed, beside a recurrent one."""
    L = keras.layers
    encoder = keras.Sequential([keras.Input((8, 3)), L.Conv1D(4, 2, activation="relu"), L.GlobalAveragePooling1D(), L.Dense(5)],
                               name="frame_encoder")
    x = keras.Input((5, 8, 3))
    encoded = L.TimeDistributed(encoder)(x)
    summarised = L.TimeDistributed(L.LSTM(3))(x)
    joined = L.Concatenate()([encoded, summarised])
    return keras.Model(x, L.Bidirectional(L.GRU(3))(joined))


def _frames_2d(keras: Any) -> Any:
    L = keras.layers
    x = keras.Input((4, 6, 6, 1))
    y = L.TimeDistributed(L.Conv2D(3, 3, activation="relu"))(x)
    y = L.TimeDistributed(L.AveragePooling2D(2))(y)
    y = L.TimeDistributed(L.LayerNormalization())(y)
    y = L.TimeDistributed(L.Flatten())(y)
    return keras.Model(x, L.LSTM(3)(y))


WRAPPED: dict[str, Callable[[Any], Any]] = {"frames_conv1d": _frames, "nested_per_frame": _nested_per_frame, "frames_conv2d": _frames_2d}


def _check_against_predict(onnx_path: Path, model: Any, shape: tuple[int, ...], seed: int) -> None:
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = np.random.default_rng(seed + batch).normal(size=(batch, *shape)).astype(np.float32)
        ran = session.run(None, feeds(session, [x]))
        for got, want in zip(ran, _as_list(model.predict(x, verbose=0))):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_time_distributed_layers_convert_to_what_predict_computes(request: pytest.FixtureRequest, tmp_path: Path, framework: str,
                                                                  name: str) -> None:
    keras = request.getfixturevalue(framework)
    model = _randomized(keras, WRAPPED[name](keras))
    path = tmp_path / ("model.keras" if framework == "keras3" else "model.h5")
    model.save(path)
    result = run("convert", str(path), "-o", str(tmp_path / "model.onnx"))
    assert result.exit_code == 0, result.output
    assert "pass" in result.stdout
    _check_against_predict(tmp_path / "model.onnx", model, tuple(model.inputs[0].shape[1:]), seed=3)
    # and the replay runs them as ONNX Runtime does (verify: replay and predict)
    verified = run("verify", str(path), "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["comparisons"]["replay_vs_predict"]["passed"] is True


def _shape_on_the_wrapped_layer(tf_keras: Any, path: Path) -> Any:
    """tf.keras 2.3: `TimeDistributed(Conv2D(..., input_shape=S))` first in a Sequential, saved with
    S on the inner Conv2D and no InputLayer (the layout rewritten as that release wrote it)."""
    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.TimeDistributed(layers.Conv2D(4, 3, activation="relu"), input_shape=(5, 6, 6, 1)),
                                 layers.TimeDistributed(layers.MaxPooling2D(2)), layers.TimeDistributed(layers.Flatten()),
                                 layers.GRU(3)])
    _randomized(tf_keras, model, seed=4)
    model.save(path)
    with h5py.File(path, "a") as handle:
        config = json.loads(handle.attrs["model_config"])
        entries = config["config"]["layers"]
        assert entries[0]["class_name"] == "InputLayer"
        entries.pop(0)
        entries[0]["config"]["layer"]["config"]["batch_input_shape"] = entries[0]["config"].pop("batch_input_shape", [None, 6, 6, 1])
        handle.attrs["model_config"] = json.dumps(config)
    return model


def test_a_shape_declared_only_on_the_wrapped_layer_comes_from_the_input(tf_keras: Any, tmp_path: Path) -> None:
    model = _shape_on_the_wrapped_layer(tf_keras, tmp_path / "m.h5")
    refused = run("convert", str(tmp_path / "m.h5"), "-o", str(tmp_path / "m.onnx"))
    assert refused.exit_code == 2
    assert "only its wrapped layer conv2d" in refused.stderr and "pass --input" in refused.stderr
    assert not (tmp_path / "m.onnx").exists()
    x = np.random.default_rng(5).normal(size=(3, 5, 6, 6, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    converted = run("convert", str(tmp_path / "m.h5"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "m.onnx"))
    assert converted.exit_code == 0, converted.output
    assert "pass" in converted.stdout
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()[0].shape) == 5  # the rank the input gave
    _check_against_predict(tmp_path / "m.onnx", model, (5, 6, 6, 1), seed=6)
    # The graph's axes are free: another number of frames runs as the model runs it.
    longer = np.random.default_rng(7).normal(size=(2, 9, 6, 6, 1)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, feeds(session, [longer]))[0], model.predict(longer, verbose=0), rtol=RTOL, atol=ATOL)


def _seq2seq(keras: Any) -> Any:
    L = keras.layers
    source, target = keras.Input((None, 4), name="encoder_inputs"), keras.Input((None, 3), name="decoder_inputs")
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(source)
    decoded = L.LSTM(5, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    return keras.Model([source, target], L.Dense(3, activation="softmax", name="decoder_dense")(decoded))


@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
def test_a_two_input_seq2seq_is_fed_by_its_keras_input_names(request: pytest.FixtureRequest, tmp_path: Path, framework: str) -> None:
    keras = request.getfixturevalue(framework)
    model = _randomized(keras, _seq2seq(keras), seed=8)
    path = tmp_path / ("model.keras" if framework == "keras3" else "model.h5")
    model.save(path)
    result = run("convert", str(path), "-o", str(tmp_path / "model.onnx"))
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["encoder_inputs", "decoder_inputs"]
    assert [o.name for o in session.get_outputs()] == ["decoder_dense"]
    rng = np.random.default_rng(9)
    for batch in (1, 7):
        source, target = rng.normal(size=(batch, 6, 4)).astype(np.float32), rng.normal(size=(batch, 3, 3)).astype(np.float32)
        # fed by name, in the other order: the names, not the positions, say which array is which
        ran = session.run(None, {"decoder_inputs": target, "encoder_inputs": source})
        np.testing.assert_allclose(ran[0], model.predict([source, target], verbose=0), rtol=RTOL, atol=ATOL)


def test_outputs_carry_the_names_of_the_layers_that_compute_them(keras3: Any, tmp_path: Path) -> None:
    """An LSTM's output and states as three model outputs: named as tf.keras's output_names makes
    them unique (encoder, encoder_1, encoder_2)."""
    L = keras3.layers
    x = keras3.Input((None, 4), name="frames")
    output, h, c = L.LSTM(3, return_state=True, name="encoder")(x)
    model = _randomized(keras3, keras3.Model(x, [L.Dense(2, name="head")(output), output, h, c]), seed=10)
    model.save(tmp_path / "m.keras")
    assert run("convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.onnx")).exit_code == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["frames"]
    assert [o.name for o in session.get_outputs()] == ["head", "encoder", "encoder_1", "encoder_2"]
    x_value = np.random.default_rng(11).normal(size=(7, 5, 4)).astype(np.float32)
    for got, want in zip(session.run(None, {"frames": x_value}), model.predict(x_value, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("framework, dtype", [("keras3", "int32"), ("tf_keras", "int32"), ("keras3", "int64")])
def test_integer_ids_are_fed_as_the_keras_input_declares(request: pytest.FixtureRequest, tmp_path: Path, framework: str,
                                                         dtype: str) -> None:
    keras = request.getfixturevalue(framework)
    L = keras.layers
    ids = keras.Input((None,), dtype=dtype, name="token_ids")
    model = _randomized(keras, keras.Model(ids, L.Dense(2)(L.GRU(4)(L.Embedding(50, 6, mask_zero=True)(ids)))), seed=12)
    path = tmp_path / ("model.keras" if framework == "keras3" else "model.h5")
    model.save(path)
    result = run("convert", str(path), "-o", str(tmp_path / "model.onnx"))
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "token_ids" and session.get_inputs()[0].type == f"tensor({dtype})"
    rng = np.random.default_rng(13)
    for batch in (1, 7):
        tokens = rng.integers(1, 50, size=(batch, 9)).astype(dtype)
        tokens[:, :3] = 0  # pre-padded, as pad_sequences pads
        ran = session.run(None, {"token_ids": tokens})  # the array the Keras model takes, as it is
        np.testing.assert_allclose(ran[0], model.predict(tokens, verbose=0), rtol=RTOL, atol=ATOL)
