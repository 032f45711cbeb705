"""`grucli convert`: the ONNX file ONNX Runtime runs computes what Keras's predict computes.

Models are built here as users build them (Sequential and functional, stacked, Bidirectional in
every merge mode, states returned, two branches merged, Keras 2's hard_sigmoid), saved, converted
by grucli without TensorFlow, run by ONNX Runtime, and compared with Keras's own predict and with
grucli's float64 replay, at batch 1 and batch 7.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli
from tests.cli.test_no_tensorflow import BLOCKER, RUNNER

onnx = pytest.importorskip("onnx", reason="convert builds ONNX with the onnx package (pip install -e '.[test]')")
onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the converted file (pip install -e '.[test]')")

FEATURES = 5
# Small layers over a few steps: float32 rounding in Keras and in ONNX Runtime stays within
# tf2onnx's own bar (rtol 1e-5, atol 1e-6); the errors measured are about 2e-7.
RTOL, ATOL = 1e-5, 1e-6


def _sequential(keras: Any, *layers: Any) -> Any:
    return keras.Sequential([keras.Input((None, FEATURES)), *layers])


def _functional_branches(keras: Any) -> Any:
    L = keras.layers
    x = keras.Input((None, FEATURES))
    forward = L.GRU(4, return_sequences=True)(x)
    backward = L.LSTM(3, return_sequences=True, go_backwards=True)(x)
    return keras.Model(x, L.Dense(3, activation="softmax")(L.Concatenate()([forward, backward])))


def _states(keras: Any) -> Any:
    x = keras.Input((None, FEATURES))
    output, h, c = keras.layers.LSTM(4, return_state=True)(x)
    return keras.Model(x, [output, h, c])


def _merged(keras: Any) -> Any:
    L = keras.layers
    x = keras.Input((None, FEATURES))
    a, b = L.GRU(4)(x), L.SimpleRNN(4)(x)
    return keras.Model(x, [L.Add()([a, b]), L.Average()([a, b]), L.Subtract()([a, b]), L.Multiply()([a, b]), L.Maximum()([a, b])])


CATALOGUE: dict[str, Callable[[Any], Any]] = {
    "gru_reset_after": lambda k: _sequential(k, k.layers.GRU(4, return_sequences=True), k.layers.Dense(2)),
    "gru_reset_before": lambda k: _sequential(k, k.layers.GRU(4, reset_after=False)),
    "gru_without_bias": lambda k: _sequential(k, k.layers.GRU(4, use_bias=False, return_sequences=True)),
    "gru_go_backwards": lambda k: _sequential(k, k.layers.GRU(4, go_backwards=True, return_sequences=True)),
    "lstm_stacked": lambda k: _sequential(k, k.layers.LSTM(4, return_sequences=True), k.layers.Dropout(0.5), k.layers.LSTM(3)),
    "lstm_hard_sigmoid_keras3": lambda k: _sequential(k, k.layers.LSTM(4, recurrent_activation="hard_sigmoid", return_sequences=True)),
    "simple_rnn_relu": lambda k: _sequential(k, k.layers.SimpleRNN(4, activation="relu", return_sequences=True)),
    "simple_rnn_backwards": lambda k: _sequential(k, k.layers.SimpleRNN(4, go_backwards=True)),
    "rnn_gru_cell": lambda k: _sequential(k, k.layers.RNN(k.layers.GRUCell(4), return_sequences=True)),
    "stacked_cells": lambda k: _sequential(k, k.layers.RNN([k.layers.GRUCell(4), k.layers.LSTMCell(3)], return_sequences=True)),
    "stacked_cells_backwards": lambda k: _sequential(k, k.layers.RNN([k.layers.LSTMCell(3), k.layers.SimpleRNNCell(2)],
                                                                      go_backwards=True, return_sequences=True)),
    "conv_then_gru": lambda k: _sequential(k, k.layers.Conv1D(6, 3, padding="causal", activation="relu"),
                                            k.layers.MaxPooling1D(2, padding="same"), k.layers.Conv1D(4, 2, strides=1, padding="same"),
                                            k.layers.GRU(5, return_sequences=True), k.layers.GlobalAveragePooling1D(), k.layers.Dense(2)),
    "conv_valid_dilated_then_lstm": lambda k: _sequential(k, k.layers.Conv1D(4, 2, dilation_rate=2), k.layers.AveragePooling1D(2),
                                                           k.layers.LSTM(3, return_sequences=True), k.layers.GlobalMaxPooling1D()),
    "normalizations": lambda k: _sequential(k, k.layers.BatchNormalization(), k.layers.GRU(4, return_sequences=True),
                                             k.layers.LayerNormalization(), k.layers.Dense(2)),
    "time_distributed_dense": lambda k: _sequential(k, k.layers.LSTM(4, return_sequences=True),
                                                     k.layers.TimeDistributed(k.layers.Dense(3, activation="tanh"))),
    **{f"bidirectional_{mode}": (lambda mode: lambda k: _sequential(
        k, k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True), merge_mode=mode)))(mode)
       for mode in ("concat", "sum", "ave", "mul")},
    "bidirectional_none": lambda k: (lambda x: k.Model(x, k.layers.Bidirectional(k.layers.LSTM(4), merge_mode=None)(x)))(
        k.Input((None, FEATURES))),
    "bidirectional_states": lambda k: (lambda x: k.Model(x, k.layers.Bidirectional(k.layers.GRU(4, return_state=True))(x)))(
        k.Input((None, FEATURES))),
    "lstm_states": _states,
    "two_branches": _functional_branches,
    "merges": _merged,
}


def _saved(keras: Any, build: Callable[[Any], Any], folder: Path, seed: int = 0) -> tuple[Path, Any]:
    model = build(keras)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    for layer in model.layers:  # a variance is positive, as training leaves it
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.abs(layer.moving_variance.numpy()) + 0.1)
    path = folder / "model.keras"
    model.save(path)
    return path, model


def _run(onnx_path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def feeds(session: Any, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays fed in order, each as the element type the graph declares for its input."""
    return {spec.name: np.asarray(x, ORT_TYPES[spec.type]) for spec, x in zip(session.get_inputs(), arrays)}


def _as_list(outputs: Any) -> list[np.ndarray]:
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_onnx_runtime_matches_keras_predict(keras3: Any, tmp_path: Path, name: str) -> None:
    path, model = _saved(keras3, CATALOGUE[name], tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "model.onnx")])
    assert result.exit_code == 0, result.stderr
    assert "pass" in result.stdout  # ONNX Runtime against the replay, on convert's own probe
    graph = onnx.load(tmp_path / "model.onnx").graph
    ops = [node.op_type for node in graph.node]
    assert not {"Loop", "Scan"} & set(ops)
    assert {"GRU", "LSTM", "RNN"} & set(ops)
    for batch in (1, 7):
        x = np.random.default_rng(batch).normal(size=(batch, 6, FEATURES)).astype("float32")
        expected = _as_list(model.predict(x, verbose=0))
        ran = _run(tmp_path / "model.onnx", x)
        assert len(ran) == len(expected)
        for got, want in zip(ran, expected):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["gru_reset_before", "bidirectional_concat", "lstm_states", "two_branches"])
def test_onnx_runtime_matches_the_float64_replay(keras3: Any, tmp_path: Path, name: str) -> None:
    import grucli

    path, _ = _saved(keras3, CATALOGUE[name], tmp_path)
    with grucli.load(path) as model:
        report = grucli.api.convert(model, tmp_path / "model.onnx", inputs=np.zeros((1, 4, FEATURES), np.float32))
        assert report.passed and report.comparison is not None
        for batch in (1, 7):
            x = np.random.default_rng(batch).normal(size=(batch, 9, FEATURES)).astype("float32")
            replayed = grucli.replay(model, x, gates=False).outputs
            ran = _run(tmp_path / "model.onnx", x)
            for got, want in zip(ran, replayed):
                # float32 steps against float64 ones: a few float32 roundings of values near 1
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_keras2_hard_sigmoid_is_keras2s(tf_keras: Any, tmp_path: Path) -> None:
    """A tf-keras file's hard_sigmoid is clip(0.2x + 0.5, 0, 1), not Keras 3's x/6: the ONNX node says so."""
    model = tf_keras.Sequential([tf_keras.Input((None, FEATURES)),
                                 tf_keras.layers.GRU(4, recurrent_activation="hard_sigmoid", return_sequences=True)])
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(scale=1.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "old.h5")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "old.h5"), "-o", str(tmp_path / "old.onnx")])
    assert result.exit_code == 0, result.stderr
    x = rng.normal(size=(3, 8, FEATURES)).astype("float32")
    np.testing.assert_allclose(_run(tmp_path / "old.onnx", x)[0], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    gru = next(node for node in onnx.load(tmp_path / "old.onnx").graph.node if node.op_type == "GRU")
    alphas = next(attribute.floats for attribute in gru.attribute if attribute.name == "activation_alpha")
    assert list(alphas) == pytest.approx([0.2])


def test_a_layer_convert_cannot_write_is_refused_by_name(keras3: Any, tmp_path: Path) -> None:
    build = lambda k: _sequential(k, k.layers.Conv1D(3, 2), k.layers.UnitNormalization(), k.layers.GRU(4))  # noqa: E731
    path, _ = _saved(keras3, build, tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "model.onnx")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: layer unit_normalization")
    assert result.stderr.endswith(" (UnitNormalization) is not one convert can write as ONNX\n")
    assert not (tmp_path / "model.onnx").exists()


def _seq2seq(keras: Any) -> Any:
    """An encoder's final states handed to a decoder (initial_state=), as a translator is built."""
    L = keras.layers
    source, target = keras.Input((None, FEATURES)), keras.Input((None, FEATURES))
    _, h, c = L.LSTM(4, return_state=True, name="encoder")(source)
    decoded = L.LSTM(4, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    return keras.Model([source, target], L.Dense(3, activation="softmax")(decoded))


@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
def test_seq2seq_with_initial_state(request: pytest.FixtureRequest, tmp_path: Path, framework: str) -> None:
    """Keras 3 saves initial_state as a keyword, tf.keras 2 as one list [x, h, c]: both become the
    ONNX LSTM's initial_h and initial_c."""
    keras = request.getfixturevalue(framework)
    model = _seq2seq(keras)
    rng = np.random.default_rng(4)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    path = tmp_path / ("model.keras" if framework == "keras3" else "model.h5")
    model.save(path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "model.onnx")])
    assert result.exit_code == 0, result.stderr
    x = [rng.normal(size=(7, n, FEATURES)).astype("float32") for n in (6, 3)]
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    ran = session.run(None, {i.name: value for i, value in zip(session.get_inputs(), x)})
    np.testing.assert_allclose(ran[0], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


def test_convert_imports_no_tensorflow(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "sample_models"
    runs = [["convert", str(sample / name), "-o", str(tmp_path / f"{index}.onnx")]
            for index, name in enumerate(["k3_bidir_concat.keras", "k3_lstm.h5", "k3_gru_reset_before.keras",
                                          "k3_embedding_mask.keras", "k3_conv_lstm1d.keras"])]
    result = subprocess.run([sys.executable, "-c", f"RUNS = {runs!r}\n" + BLOCKER + RUNNER], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED []" in result.stderr
    assert len(list(tmp_path.glob("*.onnx"))) == 5


REAL_FULL_MODELS = ["trafficflow_gru_keras2.1.4.h5", "trafficflow_lstm_keras2.1.4.h5", "ethnicolr_census2010_lstm_tfkeras2.5.h5",
                    "poreplex_demux_birnn_lstmcell_tfkeras2.2.4.hdf5", "katakana_seq2seq_lstm_tfkeras2.2.4.h5"]


@pytest.mark.parametrize("name", REAL_FULL_MODELS)
def test_published_models_convert_and_match_the_replay(tmp_path: Path, name: str) -> None:
    """Files people published (Keras 2.1.4 hard_sigmoid GRUs and LSTMs, an Embedding + LSTM, a
    Bidirectional RNN(LSTMCell), a masked seq2seq): ONNX Runtime computes what grucli's float64
    replay computes and what tf-keras's predict computes (verify --onnx)."""
    import grucli
    from conftest import real

    with grucli.load(real(name)) as model:
        report = grucli.api.convert(model, tmp_path / "model.onnx", batch=7, timesteps=20)
        assert report.comparison is not None and report.passed, report.comparison
        session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
        for batch in (1, 7):
            inputs = grucli.api.model_inputs(model, None, batch, 20, seed=5 + batch)[0]
            ran = session.run(None, feeds(session, inputs))
            replayed = grucli.replay(model, inputs, gates=False).outputs
            for got, want in zip(ran, replayed):
                # 64 to 128 units: a few float32 roundings of each step's sums, relative to the values
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            if importlib.util.find_spec("tensorflow") is not None:  # and Keras's predict, as verify --onnx runs it
                checked = grucli.verify(model, inputs, onnx_path=tmp_path / "model.onnx", atol=1e-5, rtol=1e-4)
                assert checked.comparisons["onnx_vs_predict"].passed, checked.comparisons["onnx_vs_predict"]


def test_published_lstm_matches_tf_keras_predict(tf_keras: Any, tmp_path: Path) -> None:
    """Keras 2.1.4's LSTMs with Keras 2's hard_sigmoid, which tf-keras loads as saved."""
    from conftest import real

    path = real("trafficflow_lstm_keras2.1.4.h5")
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.stderr
    model = tf_keras.models.load_model(path, compile=False)
    x = np.random.default_rng(2).normal(size=(7, 12, 1)).astype("float32")
    np.testing.assert_allclose(_run(tmp_path / "m.onnx", x)[0], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_state_io_streams_a_long_sequence_in_chunks(keras3: Any, tmp_path: Path) -> None:
    """--state-io: three chunks with the states carried give what one pass gives, and predict's numbers."""
    build = lambda k: _sequential(k, k.layers.GRU(4, return_sequences=True, name="gru"),  # noqa: E731
                                  k.layers.LSTM(3, return_sequences=True, name="lstm"), k.layers.SimpleRNN(2, return_sequences=True, name="rnn"))
    path, model = _saved(keras3, build, tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "s.onnx"), "--state-io"])
    assert result.exit_code == 0, result.stderr
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    state_names = [i.name for i in session.get_inputs()[1:]]
    assert state_names == ["gru/h_in", "lstm/h_in", "lstm/c_in", "rnn/h_in"]
    # the model's own names: its input's, and its last layer's for its output
    assert session.get_inputs()[0].name == model.get_config()["layers"][0]["config"]["name"]  # the InputLayer's
    assert [o.name for o in session.get_outputs()] == ["rnn", "gru/h_out", "lstm/h_out", "lstm/c_out", "rnn/h_out"]
    x = np.random.default_rng(6).normal(size=(2, 30, FEATURES)).astype("float32")
    states = {name: np.zeros((2, int(session.get_inputs()[1 + index].shape[1])), np.float32) for index, name in enumerate(state_names)}
    whole = session.run(None, {session.get_inputs()[0].name: x, **states})[0]
    pieces = []
    for chunk in np.split(x, [7, 19], axis=1):
        output, *finals = session.run(None, {session.get_inputs()[0].name: chunk, **states})
        states = dict(zip(state_names, finals))
        pieces.append(output)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole, model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


def test_state_io_refuses_what_chunks_cannot_reproduce(keras3: Any, tmp_path: Path) -> None:
    path, _ = _saved(keras3, CATALOGUE["bidirectional_concat"], tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "s.onnx"), "--state-io"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: layer bi")  # named, with the reason
    assert "Bidirectional" in result.stderr and "--state-io refuses it" in result.stderr


def test_verify_compares_an_onnx_file_with_predict(keras3: Any, tmp_path: Path) -> None:
    """verify --onnx: grucli's file passes; the file of another training of the same architecture fails (exit 1)."""
    build = CATALOGUE["lstm_stacked"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path, _ = _saved(keras3, build, tmp_path / "a", seed=0)
    other, _ = _saved(keras3, build, tmp_path / "b", seed=1)
    for source, target in ((path, tmp_path / "a.onnx"), (other, tmp_path / "b.onnx")):
        assert CliRunner().invoke(cli, ["convert", str(source), "-o", str(target)]).exit_code == 0
    same = CliRunner().invoke(cli, ["verify", str(path), "--onnx", str(tmp_path / "a.onnx"), "--json"])
    assert same.exit_code == 0, same.stderr
    import json

    assert json.loads(same.stdout)["comparisons"]["onnx_vs_predict"]["passed"] is True
    wrong = CliRunner().invoke(cli, ["verify", str(path), "--onnx", str(tmp_path / "b.onnx"), "--json"])
    assert wrong.exit_code == 1
    assert json.loads(wrong.stdout)["comparisons"]["onnx_vs_predict"]["passed"] is False
