"""`grucli convert` on what users build beyond plain recurrent stacks: masks (Masking and
Embedding(mask_zero), pre- and post-padded batches, holes, rows with nothing real), keras.ops
calls, attention, Conv2D + RNN, ConvLSTM, stateful layers; and every sample model.

Each model is saved, converted without TensorFlow, run by ONNX Runtime and compared with Keras's
own predict (rtol 1e-5 / atol 1e-6, tf2onnx's bar: small layers over a few steps, whose float32
rounding stays well inside it) and with grucli's float64 replay, at batch 1 and batch 7.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli
from tests.convert.test_onnx import ATOL, RTOL, _as_list, _saved, feeds

onnx = pytest.importorskip("onnx", reason="convert builds ONNX with the onnx package (pip install -e '.[test]')")
onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the converted file (pip install -e '.[test]')")

FEATURES, STEPS, VOCABULARY = 3, 7, 12


def _padded(batch: int, seed: int, pattern: str) -> np.ndarray:
    """A float batch whose masked steps are all-zero rows: pre-padded (pad_sequences' default),
    post-padded, with holes, and (at batch 7) a row with no real step at all."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, STEPS, FEATURES)).astype("float32")
    for row in range(batch):
        length = [STEPS, 1, 4, 0, 6, 2, 5][row % 7] if batch > 1 else 4
        if pattern == "pre":
            x[row, : STEPS - length] = 0
        elif pattern == "post":
            x[row, length:] = 0
        else:  # holes: every third step masked, and the row's tail
            x[row, ::3] = 0
            x[row, length + 1:] = 0
    return x


def _ids(batch: int, seed: int, pattern: str) -> np.ndarray:
    """Token ids with 0 as padding, laid out like `_padded`."""
    values = np.random.default_rng(seed).integers(1, VOCABULARY, size=(batch, STEPS)).astype("int32")
    return np.where(_padded(batch, seed, pattern)[..., 0] == 0, 0, values).astype("int32")


def _masking(keras: Any, *layers: Any) -> Any:
    return keras.Sequential([keras.Input((None, FEATURES)), keras.layers.Masking(0.0), *layers])


def _embedded(keras: Any, *layers: Any) -> Any:
    """A functional model, as Keras 3 saves it: the mask is a NotEqual op handed on as mask=."""
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 4, mask_zero=True)(ids)
    for layer in layers:
        x = layer(x)
    return keras.Model(ids, x)


def _seq2seq_masked(keras: Any) -> Any:
    L = keras.layers
    source, target = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    _, h, c = L.LSTM(4, return_state=True)(L.Embedding(VOCABULARY, 4, mask_zero=True)(source))
    decoded = L.LSTM(4, return_sequences=True)(L.Embedding(VOCABULARY, 4, mask_zero=True)(target), initial_state=[h, c])
    return keras.Model([source, target], L.TimeDistributed(L.Dense(VOCABULARY, activation="softmax"))(decoded))


def _masked_merge(keras: Any) -> Any:
    L = keras.layers
    x = keras.Input((None, FEATURES))
    masked = L.Masking(0.0)(x)
    a, b = L.GRU(4, return_sequences=True)(masked), L.LSTM(4, return_sequences=True, go_backwards=True)(masked)
    joined = L.Concatenate()([L.Add()([a, b]), L.Dense(3)(a)])
    return keras.Model(x, L.GlobalAveragePooling1D()(L.SimpleRNN(3, return_sequences=True)(joined)))


MASKED: dict[str, Callable[[Any], Any]] = {
    "masking_gru": lambda k: _masking(k, k.layers.GRU(4, return_sequences=True), k.layers.Dense(2)),
    "masking_gru_last": lambda k: _masking(k, k.layers.GRU(4, reset_after=False)),
    "masking_lstm_states": lambda k: (lambda x: k.Model(x, k.layers.LSTM(4, return_state=True)(k.layers.Masking(0.0)(x))))(
        k.Input((None, FEATURES))),
    "masking_simple_rnn_backwards": lambda k: _masking(k, k.layers.SimpleRNN(4, go_backwards=True, return_sequences=True)),
    "masking_stacked_lstm": lambda k: _masking(k, k.layers.LSTM(4, return_sequences=True), k.layers.Dropout(0.3),
                                               k.layers.LSTM(3, return_sequences=True)),
    "masking_bidirectional_concat": lambda k: _masking(k, k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True))),
    "masking_bidirectional_ave_last": lambda k: _masking(k, k.layers.Bidirectional(k.layers.LSTM(3), merge_mode="ave")),
    "masking_stacked_cells": lambda k: _masking(k, k.layers.RNN([k.layers.GRUCell(4), k.layers.LSTMCell(3)], return_sequences=True)),
    "masking_time_distributed_pooling": lambda k: _masking(k, k.layers.GRU(4, return_sequences=True),
                                                           k.layers.TimeDistributed(k.layers.Dense(3)), k.layers.GlobalAveragePooling1D()),
    "masked_merges": _masked_merge,
    "embedding_lstm": lambda k: _embedded(k, k.layers.LSTM(4)),
    "embedding_bidirectional_gru": lambda k: _embedded(k, k.layers.Bidirectional(k.layers.GRU(3, return_sequences=True)),
                                                       k.layers.Dense(2)),
}


def _inputs(model: Any, batch: int, seed: int, pattern: str) -> list[np.ndarray]:
    return [_ids(batch, seed + index, pattern) if "int" in str(spec.dtype) else _padded(batch, seed + index, pattern)
            for index, spec in enumerate(model.inputs)]


def _run(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds(session, inputs))


def _converted(path: Path, target: Path) -> Any:
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(target)])
    assert result.exit_code == 0, result.stderr
    assert "pass" in result.stdout
    return onnx.load(target)


def _check_against_keras_and_replay(model: Any, path: Path, onnx_path: Path, inputs: list[np.ndarray]) -> None:
    import grucli

    expected = _as_list(model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))
    ran = _run(onnx_path, inputs)
    assert len(ran) == len(expected)
    for got, want in zip(ran, expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    with grucli.load(path) as loaded:
        replayed = grucli.replay(loaded, inputs, gates=False).outputs
    for got, want in zip(ran, replayed):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("pattern", ["pre", "post", "holes"])
@pytest.mark.parametrize("name", list(MASKED))
def test_masked_models_match_predict(keras3: Any, tmp_path: Path, name: str, pattern: str) -> None:
    path, model = _saved(keras3, MASKED[name], tmp_path)
    graph = _converted(path, tmp_path / "model.onnx").graph
    ops = {node.op_type for node in graph.node}
    assert not {"Loop", "Scan"} & ops  # every mask pattern is written with sequence_lens, no loop
    assert {"GRU", "LSTM", "RNN"} & ops
    for batch in (1, 7):
        _check_against_keras_and_replay(model, path, tmp_path / "model.onnx", _inputs(model, batch, batch, pattern))


@pytest.mark.parametrize("pattern", ["pre", "post"])
def test_masked_seq2seq_with_initial_state(keras3: Any, tmp_path: Path, pattern: str) -> None:
    """A translator: masked encoder, its states handed to a masked decoder (Keras 3 then runs the
    decoder unmasked, its output still carrying the mask)."""
    path, model = _saved(keras3, _seq2seq_masked, tmp_path)
    _converted(path, tmp_path / "model.onnx")
    for batch in (1, 7):
        _check_against_keras_and_replay(model, path, tmp_path / "model.onnx", _inputs(model, batch, 3 * batch, pattern))


@pytest.mark.parametrize("pattern", ["pre", "post"])
def test_tf_keras_masking_model(tf_keras: Any, tmp_path: Path, pattern: str) -> None:
    """tf-keras passes masks implicitly and merges them its own way (every mask must keep a step)."""
    model = _masked_merge(tf_keras)
    rng = np.random.default_rng(8)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "model.h5")
    _converted(tmp_path / "model.h5", tmp_path / "model.onnx")
    for batch in (1, 7):
        _check_against_keras_and_replay(model, tmp_path / "model.h5", tmp_path / "model.onnx", [_padded(batch, batch, pattern)])


def test_katakana_translator_matches_tf_keras_predict(tf_keras: Any, tmp_path: Path) -> None:
    """A published seq2seq (tf.keras 2.2.4): Embedding(mask_zero) encoder and decoder LSTMs,
    pre-padded as its training used pad_sequences, against tf-keras's predict on the file."""
    from conftest import real

    path = real("katakana_seq2seq_lstm_tfkeras2.2.4.h5")
    _converted(path, tmp_path / "k.onnx")
    model = tf_keras.models.load_model(path, compile=False)
    rng = np.random.default_rng(9)
    ids = [rng.integers(1, 40, size=(7, 20)) for _ in range(2)]
    for row in range(7):
        ids[0][row, : 3 * row] = 0  # pre-padded source words of different lengths
        ids[1][row, 20 - 2 * row:] = 0  # post-padded targets, the last row all padding... but one step
    expected = model.predict(ids, verbose=0)
    got = _run(tmp_path / "k.onnx", ids)[0]
    # 64 units over 20 steps: float32 roundings of each step's sums
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_crema_lambda_is_refused_by_name(tmp_path: Path) -> None:
    from conftest import real

    result = CliRunner().invoke(cli, ["convert", str(real("crema_beats_bigru_keras2.0.5.h5")), "-o", str(tmp_path / "c.onnx")])
    assert result.exit_code == 2
    assert result.stderr == "Error: layer lambda_1 (Lambda) holds Python code, which grucli never runs or converts\n"
    assert not (tmp_path / "c.onnx").exists()


# --- operations, attention, spatial layers ---------------------------------------------------------------


def _operations(keras: Any) -> Any:
    ops, L = keras.ops, keras.layers
    x = keras.Input((None, FEATURES))
    g = L.GRU(4, return_sequences=True)(x)
    scaled = ops.maximum(g * 2.0 + 1.0, 0.5) - ops.tanh(g) / 3.0
    last = scaled[:, -1]  # the last step
    pooled = ops.mean(ops.square(scaled), axis=1) + ops.max(ops.abs(g), axis=1)
    soft = ops.softmax(ops.concatenate([last, pooled], axis=-1))
    gated = ops.where(g > 0, ops.sigmoid(g), ops.exp(g) - 1.0)
    steps = ops.transpose(ops.expand_dims(gated[:, 1:, :2], -1), (0, 2, 1, 3))
    return keras.Model(x, [soft, ops.reshape(steps, (-1, 2)), ops.sum(gated, axis=-1, keepdims=True)])


def _attention(keras: Any) -> Any:
    L = keras.layers
    x = keras.Input((None, FEATURES))
    encoded = L.GRU(4, return_sequences=True)(x)
    query = L.Dense(4)(encoded)
    dot = L.Attention(use_scale=True)([query, encoded])
    causal = L.Attention(score_mode="concat")([query, encoded], use_causal_mask=True)
    additive = L.AdditiveAttention()([query, encoded, L.Dense(4)(x)])
    heads = L.MultiHeadAttention(num_heads=2, key_dim=3)(encoded, encoded, use_causal_mask=True)
    return keras.Model(x, L.LSTM(3)(L.Concatenate()([dot, causal, additive, heads])))


def _masked_attention(keras: Any) -> Any:
    """Masked token ids, an LSTM encoder, multi-head self-attention and dot attention over it.
    (The heads' output comes first: Keras 3 applies the masks to an Attention layer whose output
    precedes a MultiHeadAttention's among the model's outputs inconsistently, and grucli, like
    tf-keras, always applies them.)"""
    L = keras.layers
    ids = keras.Input((None,), dtype="int32")
    encoded = L.LSTM(4, return_sequences=True)(L.Embedding(VOCABULARY, 4, mask_zero=True)(ids))
    heads = L.MultiHeadAttention(num_heads=2, key_dim=2)(encoded, encoded)
    attended = L.Attention()([encoded, encoded])
    return keras.Model(ids, [heads, L.GlobalAveragePooling1D()(attended)])


def _crnn(keras: Any) -> Any:
    """A CRNN as audio taggers are built: Conv2D and pooling over (time, frequency), reshaped into a sequence for a GRU."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((8, 6, 1)), L.Conv2D(4, (3, 3), padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPooling2D((1, 2)), L.Conv2D(3, (2, 2), strides=(1, 1)), L.AveragePooling2D((1, 2), padding="same"),
        L.Reshape((7, 3 * 1)), L.GRU(5, return_sequences=True), L.ZeroPadding1D((1, 0)), L.Cropping1D((0, 1)),
        L.UpSampling1D(2), L.Permute((2, 1)), L.Flatten(), L.Dense(4), L.LeakyReLU(0.1), L.RepeatVector(2),
        L.SimpleRNN(3), L.ReLU(max_value=0.8), L.Softmax(),
    ])


def _dot_and_activations(keras: Any) -> Any:
    L = keras.layers
    x = keras.Input((None, FEATURES))
    a, b = L.GRU(4)(x), L.LSTM(4)(x)
    sequences = L.GRU(4, return_sequences=True)(x)
    pair = L.Dot(axes=1, normalize=True)([a, b])
    scores = L.Dot(axes=(2, 2))([sequences, sequences])
    return keras.Model(x, [pair, scores, L.ELU(0.7)(a), L.PReLU()(b), L.ReLU(negative_slope=0.2, threshold=0.1)(a)])


MODELS: dict[str, tuple[Callable[[Any], Any], Callable[[int, int], list[np.ndarray]]]] = {
    "operations": (_operations, lambda batch, seed: [np.random.default_rng(seed).normal(size=(batch, STEPS, FEATURES)).astype("float32")]),
    "attention": (_attention, lambda batch, seed: [np.random.default_rng(seed).normal(size=(batch, STEPS, FEATURES)).astype("float32")]),
    "masked_attention_pre": (_masked_attention, lambda batch, seed: [_ids(batch, seed, "pre")]),
    "masked_attention_post": (_masked_attention, lambda batch, seed: [_ids(batch, seed, "post")]),
    "crnn": (_crnn, lambda batch, seed: [np.random.default_rng(seed).normal(size=(batch, 8, 6, 1)).astype("float32")]),
    "dot_and_activations": (_dot_and_activations,
                            lambda batch, seed: [np.random.default_rng(seed).normal(size=(batch, STEPS, FEATURES)).astype("float32")]),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_operations_attention_and_spatial_layers_match_predict(keras3: Any, tmp_path: Path, name: str) -> None:
    build, inputs = MODELS[name]
    path, model = _saved(keras3, build, tmp_path)
    graph = _converted(path, tmp_path / "model.onnx").graph
    assert not {"Loop", "Scan"} & {node.op_type for node in graph.node}
    for batch in (1, 7):
        _check_against_keras_and_replay(model, path, tmp_path / "model.onnx", inputs(batch, batch))


@pytest.mark.parametrize("rank", [1, 2])
def test_conv_lstm_is_a_scan_that_matches_predict(keras3: Any, tmp_path: Path, rank: int) -> None:
    """ConvLSTM has no ONNX operator: its step is written as a Scan, and says so."""
    L = keras3.layers
    layer = (L.ConvLSTM1D(3, 2, padding="same", return_sequences=True) if rank == 1
             else L.ConvLSTM2D(2, (2, 2), strides=(1, 2), go_backwards=True, return_state=True))
    shape = (None, 6, 2) if rank == 1 else (None, 5, 4, 2)
    build = lambda k: (lambda x: k.Model(x, layer(x)))(k.Input(shape))  # noqa: E731
    path, model = _saved(keras3, build, tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "c.onnx")])
    assert result.exit_code == 0, result.stderr
    assert "ONNX Scan (a ConvLSTM" in result.stdout
    for batch in (1, 7):
        x = np.random.default_rng(batch).normal(size=(batch, 4, *shape[1:])).astype("float32")
        _check_against_keras_and_replay(model, path, tmp_path / "c.onnx", [x])


def test_stateful_layer_takes_and_gives_its_state(tf_keras: Any, tmp_path: Path) -> None:
    """A stateful model (fixed batch) carries its state from one predict call to the next; the
    ONNX file takes it as inputs and gives it as outputs, so chunks fed in turn give predict's numbers."""
    L = tf_keras.layers
    model = tf_keras.Sequential([L.GRU(4, stateful=True, return_sequences=True, batch_input_shape=(3, None, FEATURES)),
                                 L.LSTM(3, stateful=True, return_sequences=True), L.Dense(2)])
    rng = np.random.default_rng(10)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "stateful.h5")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "stateful.h5"), "-o", str(tmp_path / "s.onnx")])
    assert result.exit_code == 0, result.stderr
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()[1:]]
    gru, lstm = model.layers[0].name, model.layers[1].name
    assert names == [f"{gru}/h_in", f"{lstm}/h_in", f"{lstm}/c_in"]
    x = rng.normal(size=(3, 12, FEATURES)).astype("float32")
    states = {name: np.zeros((3, int(session.get_inputs()[1 + k].shape[1])), np.float32) for k, name in enumerate(names)}
    model.reset_states()
    for chunk in np.split(x, [5, 9], axis=1):
        output, *finals = session.run(None, {session.get_inputs()[0].name: chunk, **states})
        states = dict(zip(names, finals))
        np.testing.assert_allclose(output, model.predict(chunk, batch_size=3, verbose=0), rtol=RTOL, atol=ATOL)


SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".keras", ".h5") and "weights" not in p.name))
def test_every_sample_model_with_an_architecture_converts(keras3: Any, tf_keras: Any, tmp_path: Path, name: str) -> None:
    """Every sample model that holds its architecture converts, and ONNX Runtime computes what
    Keras's predict computes (verify --onnx: the framework that fits the file, built from its
    config) and what the float64 replay computes, at batch 1 and 7."""
    import grucli

    with grucli.load(SAMPLES / name) as model:
        report = grucli.api.convert(model, tmp_path / "m.onnx", batch=7)
        assert report.comparison is not None and report.passed, report.comparison
        for batch in (1, 7):
            feeds = grucli.api.model_inputs(model, None, batch, 6, seed=batch)[0]
            checked = grucli.verify(model, feeds, onnx_path=tmp_path / "m.onnx", atol=ATOL, rtol=RTOL)
            assert checked.comparisons["onnx_vs_predict"].passed, checked.comparisons["onnx_vs_predict"]
            ran = _run(tmp_path / "m.onnx", feeds)
            for got, want in zip(ran, grucli.replay(model, feeds, gates=False).outputs):
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_tf_keras_operations_match_predict(tf_keras: Any, tmp_path: Path) -> None:
    """tf.keras 2 saves TensorFlow calls in functional models as TFOpLambda / SlicingOpLambda layers."""
    import tensorflow as tf

    L = tf_keras.layers
    x = tf_keras.Input((None, FEATURES))
    g = L.GRU(4, return_sequences=True)(x)
    scaled = tf.math.maximum(g * 2.0 + 1.0, 0.5) - tf.math.tanh(g) / 3.0
    pooled = tf.math.reduce_mean(tf.math.square(scaled), axis=1) + tf.math.reduce_max(tf.math.abs(g), axis=1)
    joined = tf.nn.softmax(tf.concat([scaled[:, -1], pooled], axis=-1))
    gated = tf.where(g > 0.0, tf.math.sigmoid(g), tf.nn.relu(g))
    product = tf.linalg.matmul(g, g, transpose_b=True)
    moved = tf.transpose(tf.expand_dims(gated[:, 1:, :2], -1), perm=[0, 2, 1, 3])
    model = tf_keras.Model(x, [joined, tf.reshape(moved, (-1, 2)), product, L.ThresholdedReLU(0.1)(tf.squeeze(moved, axis=-1))])
    rng = np.random.default_rng(11)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "ops.h5")
    graph = _converted(tmp_path / "ops.h5", tmp_path / "ops.onnx").graph
    assert not {"Loop", "Scan"} & {node.op_type for node in graph.node}
    for batch in (1, 7):
        inputs = [rng.normal(size=(batch, STEPS, FEATURES)).astype("float32")]
        _check_against_keras_and_replay(model, tmp_path / "ops.h5", tmp_path / "ops.onnx", inputs)


def test_a_masked_softmax_is_refused_by_name(keras3: Any, tmp_path: Path) -> None:
    """The replay does not run a Softmax over masked steps, and convert does not write one."""
    build = lambda k: _masking(k, k.layers.GRU(4, return_sequences=True), k.layers.Softmax())  # noqa: E731
    path, _ = _saved(keras3, build, tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: layer softmax")
    assert result.stderr.endswith("(Softmax) is fed a masked tensor; convert does not write how it treats a mask\n"), result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_keras3_masked_multiply_is_refused_by_name(keras3: Any, tmp_path: Path) -> None:
    """Keras 3 multiplies masked steps as 1 (Multiply._merge_function): refused, not written as a plain Mul."""
    L = keras3.layers

    def build(k: Any) -> Any:
        x = k.Input((None, FEATURES))
        masked = L.Masking(0.0)(x)
        return k.Model(x, L.Multiply()([L.GRU(3, return_sequences=True)(masked), L.LSTM(3, return_sequences=True)(masked)]))

    path, _ = _saved(keras3, build, tmp_path)
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.stderr.endswith("(Multiply) merges masked tensors, which Keras 3 computes step by step with the masks; "
                                  "convert does not write it\n"), result.stderr
