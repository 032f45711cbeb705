"""The sweep: `replay` on every sample model and on a catalogue of models built the way users build
them either matches Keras's predict or exits 2 naming what it cannot run. Never exit 0 with a
mismatch (issue "never silently wrong")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES, real
from grucli.cli import cli

SAMPLE_MODELS = sorted(
    p.name for p in SAMPLES.iterdir() if p.suffix in (".keras", ".h5") and "weights" not in p.name and "cudnn" not in p.name
)
TF_KERAS_FILES = ("tfk_", "keras1_")


def check_replay(path: Path, predict: Callable[[list[np.ndarray]], list[np.ndarray]], tmp_path: Path) -> str:
    """'match' or 'refused'; fails on a mismatch with exit 0 or on any other exit."""
    out = tmp_path / "out.npz"
    result = CliRunner().invoke(cli, ["replay", str(path), "-o", str(out), "--batch", "3", "--timesteps", "6", "--force",
                                      "--seed", "5"])
    if result.exit_code == 2:
        assert result.stderr.startswith("Error: ") and "layer " in result.stderr, result.stderr
        return "refused"
    assert result.exit_code == 0, result.stderr
    inputs = _same_random_inputs(path)
    expected = predict(inputs)
    loaded = np.load(out)  # one output: .npy bytes; several: an .npz of output_0, output_1, ...
    if isinstance(loaded, np.ndarray):
        replayed = [loaded]
    else:
        with loaded:
            replayed = [loaded[f"output_{index}"] for index in range(len(loaded.files))]
    assert len(replayed) == len(expected)
    for got, want in zip(replayed, expected):
        assert np.allclose(got, want, rtol=1e-6, atol=1e-6), (path, float(np.abs(got - want).max()))
    return "match"


def set_random_weights(model: Any, rng: np.random.Generator) -> None:
    """Weights of scale 0.5, so every gate and unit matters; variances stay positive."""
    values = []
    for variable in model.weights:
        value = rng.normal(scale=0.5, size=variable.shape).astype(np.float32)
        name = getattr(variable, "path", None) or variable.name  # Keras 3 paths, tf-keras names
        values.append(np.abs(value) if "variance" in name else value)
    model.set_weights(values)


def _same_random_inputs(path: Path) -> list[np.ndarray]:
    from grucli.files.inputs import input_specs, random_inputs
    from grucli.files.reader import read_model

    with read_model(path) as model_file:
        return random_inputs(input_specs(model_file), 3, 6, 5)


def _predictor(model: Any) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    def predict(inputs: list[np.ndarray]) -> list[np.ndarray]:
        output = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
        return [np.asarray(o) for o in (output if isinstance(output, (list, tuple)) else [output])]

    return predict


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_every_sample_model(name: str, tmp_path: Path, keras3: Any, tf_keras: Any) -> None:
    path = SAMPLES / name
    if name.startswith("keras1_"):
        # tf-keras cannot read Keras 1 configs: verify's repaired load (weights through grucli's
        # reader, whose Keras 1 conversion test_export_truth checks against tf-keras's own).
        from grucli.model.layers import find_layers
        from grucli.files.reader import read_model
        from grucli.frameworks.framework import open_framework

        with read_model(path) as model_file:
            model, _ = open_framework("tf-keras").load(model_file, find_layers(model_file), False)
    elif name.startswith(TF_KERAS_FILES):
        model = tf_keras.models.load_model(path, compile=False)
    else:
        model = keras3.saving.load_model(path, compile=False)
    outcome = check_replay(path, _predictor(model), tmp_path)
    assert outcome == "match"


def _catalogue(keras: Any) -> dict[str, tuple[Callable[[], Any], str]]:
    """Models as users build them, each with the outcome grucli must give today."""
    layers, ops = keras.layers, getattr(keras, "ops", None)  # tf-keras has no ops module

    def functional(build: Callable[[Any], Any], shape: tuple[int, ...] = (6, 3)) -> Callable[[], Any]:
        def make() -> Any:
            inputs = keras.Input(shape)
            return keras.Model(inputs, build(inputs))
        return make

    def ops_shapes_and_slices(g: Any) -> Any:
        last, middle = g[:, -1, :], g[:, 1:4]
        gram = ops.matmul(g, ops.transpose(g, (0, 2, 1)))  # (batch, 6, 6)
        flat = ops.reshape(middle, (-1, 12))
        squeezed = ops.squeeze(ops.expand_dims(last, 1), axis=1)
        stacked = ops.stack([last, squeezed], axis=1)
        kept = ops.where(g > 0, g, 0.1 * g)[..., ::2]
        return [layers.GRU(2)(ops.concatenate([gram, kept], axis=-1)), flat, stacked]

    def ops_elementwise(h: Any) -> Any:
        return (ops.exp(h) + ops.log(ops.abs(h) + 1) + ops.sqrt(ops.square(h)) - ops.negative(h) + ops.sigmoid(h)
                + ops.relu(h) + ops.softmax(h) + ops.tanh(h) + ops.gelu(h) + ops.silu(h) + ops.elu(h, 0.5)
                + ops.leaky_relu(h, 0.1) + ops.log_softmax(h) + ops.hard_sigmoid(h) + ops.softplus(h))

    def seq2seq() -> Any:
        encoder_in, decoder_in = keras.Input((6, 3)), keras.Input((6, 2))
        _, h, c = layers.LSTM(4, return_state=True)(encoder_in)
        decoded = layers.LSTM(4, return_sequences=True)(decoder_in, initial_state=[h, c])
        return keras.Model([encoder_in, decoder_in], layers.Dense(2)(decoded))

    def seq2seq_masked() -> Any:
        """Token ids padded with 0 on both sides, the decoder started from the encoder's states.
        Keras 3 hands a layer the input's mask only when the input is its one tensor argument: a
        decoder given initial_state runs unmasked (its output still carries the mask on);
        tf-keras masks it."""
        source, target = keras.Input((7,), dtype="int32"), keras.Input((6,), dtype="int32")
        _, h, c = layers.LSTM(4, return_state=True)(layers.Embedding(12, 3, mask_zero=True)(source))
        decoded = layers.LSTM(4, return_sequences=True)(layers.Embedding(12, 3, mask_zero=True)(target), initial_state=[h, c])
        pooled = layers.GlobalAveragePooling1D()(decoded)  # averages the unmasked steps only
        return keras.Model([source, target], [layers.Dense(2)(decoded), pooled])

    def gru_with_attention() -> Any:
        """The tutorial shape: masked token ids, a GRU encoder, dot attention of every step over all
        steps, pooled, then a classifier."""
        ids = keras.Input((7,), dtype="int32")
        states = layers.GRU(4, return_sequences=True)(layers.Embedding(12, 3, mask_zero=True)(ids))
        context = layers.Attention()([states, states])
        pooled = layers.GlobalAveragePooling1D()(layers.Concatenate()([states, context]))
        return keras.Model(ids, layers.Dense(2, activation="softmax")(pooled))

    def image_and_sequence(image: Any, pooling: Any, rows_as_steps: tuple[int, int]) -> Any:
        """An image's pooled features beside a GRU reading its rows as timesteps."""
        return layers.Concatenate()([pooling(image), layers.GRU(2)(layers.Reshape(rows_as_steps)(image))])

    def bidirectional_with_state() -> Any:
        sequence, context = keras.Input((6, 3)), keras.Input((5,))
        h_forward, h_backward = layers.Dense(3, activation="tanh")(context), layers.Dense(3)(context)
        return keras.Model([sequence, context], layers.Bidirectional(layers.GRU(3))(sequence, initial_state=[h_forward, h_backward]))

    def stacked_cells_with_state() -> Any:
        sequence, context = keras.Input((6, 3)), keras.Input((4,))
        cells = [layers.GRUCell(4), layers.LSTMCell(4)]
        h0, h1, c1 = (layers.Dense(4)(context) for _ in range(3))
        return keras.Model([sequence, context], layers.RNN(cells, return_sequences=True)(sequence, initial_state=[[h0], [h1, c1]]))

    def two_branches() -> Any:
        a, b = keras.Input((6, 3)), keras.Input((6, 3))
        merged = layers.Concatenate()([layers.GRU(3)(a), layers.LSTM(2)(b)])
        return keras.Model([a, b], [layers.Dense(1)(merged), merged])

    def multi_head_attention() -> Any:
        """A decoder-style block: masked token ids, a GRU, causal self-attention over its steps, and
        cross-attention to a second (masked) sequence given as value and key."""
        ids, other = keras.Input((7,), dtype="int32"), keras.Input((5,), dtype="int32")
        states = layers.GRU(4, return_sequences=True)(layers.Embedding(12, 3, mask_zero=True)(ids))
        memory = layers.Embedding(9, 6, mask_zero=True)(other)
        attended = layers.MultiHeadAttention(num_heads=2, key_dim=3)(states, states, use_causal_mask=True)
        crossed = layers.MultiHeadAttention(num_heads=3, key_dim=2, value_dim=4, output_shape=5)(attended, memory, key=memory)
        return keras.Model([ids, other], layers.GRU(3)(crossed))

    def dot_products() -> Any:
        a, b = keras.Input((6, 3)), keras.Input((5, 3))
        sequence_a, sequence_b = layers.GRU(4, return_sequences=True)(a), layers.LSTM(4, return_sequences=True)(b)
        similarity = layers.Dot(axes=2)([sequence_a, sequence_b])  # (batch, 6, 5)
        cosine = layers.Dot(axes=1, normalize=True)([layers.GRU(3)(a), layers.GRU(3)(a)])
        return keras.Model([a, b], [layers.PReLU(shared_axes=[1])(similarity), layers.ELU(0.7)(cosine),
                                    layers.PReLU()(layers.Dense(2)(sequence_a))])

    def conv_lstm() -> Any:
        """Video-like inputs: ConvLSTM1D/2D/3D with same and valid padding, strides, dilation,
        go_backwards, return_state and a Bidirectional ConvLSTM2D."""
        rows, frames, volume = keras.Input((5, 7, 2)), keras.Input((4, 6, 5, 1)), keras.Input((3, 4, 4, 3, 2))
        sequence = layers.ConvLSTM1D(3, 3, padding="same", return_sequences=True)(rows)
        last, h, c = layers.ConvLSTM1D(2, 2, strides=2, go_backwards=True, return_state=True)(sequence)
        maps = layers.ConvLSTM2D(2, (3, 2), dilation_rate=(2, 1), return_sequences=True)(frames)
        both = layers.Bidirectional(layers.ConvLSTM2D(2, 2, padding="same"))(maps)
        cubes = layers.ConvLSTM3D(2, 2, padding="same")(volume)
        return keras.Model([rows, frames, volume], [last, h, c, both, cubes])

    def stateful_and_reshaping() -> Any:
        """A fixed-batch stateful GRU, a masked go_backwards LSTM, and the reshaping and
        inference-identity layers between them."""
        inputs = keras.Input(batch_shape=(3, 6, 3))
        masked = layers.Masking(0.0)(layers.GaussianNoise(0.3)(layers.Dropout(0.5)(inputs)))
        backwards = layers.LSTM(4, go_backwards=True, return_sequences=True)(masked)
        stateful = layers.GRU(3, stateful=True)(layers.BatchNormalization()(backwards))
        repeated = layers.RepeatVector(4)(layers.Flatten()(layers.Reshape((3, 1))(stateful)))
        return keras.Model(inputs, layers.TimeDistributed(layers.Dense(2, activation="tanh"))(layers.SimpleRNN(5, return_sequences=True)(repeated)))

    def bidirectional_stacked_cells() -> Any:
        """Bidirectional around RNNs of stacked cells (a masked sequence, then a summed last state)."""
        inputs = keras.Input((6, 3))
        masked = layers.Masking()(inputs)
        sequence = layers.Bidirectional(layers.RNN([layers.GRUCell(3), layers.LSTMCell(2)], return_sequences=True))(masked)
        last = layers.Bidirectional(layers.RNN([layers.GRUCell(3), layers.SimpleRNNCell(2)]), merge_mode="sum")(sequence)
        return keras.Model(inputs, [sequence, last])

    def time_distributed_recurrent() -> Any:
        """A GRU over each sentence's words, then an LSTM over the sentences (a hierarchical reader)."""
        words = keras.Input((4, 6, 3))
        sentences = layers.TimeDistributed(layers.GRU(3))(words)
        return keras.Model(words, layers.LSTM(2)(layers.TimeDistributed(layers.Dense(3))(sentences)))

    return {
        "bidirectional_stacked_cells": (bidirectional_stacked_cells, "match"),
        "time_distributed_recurrent": (time_distributed_recurrent, "match"),
        "stateful_and_reshaping": (stateful_and_reshaping, "match"),
        "conv_lstm": (conv_lstm, "match"),
        "multi_head_attention": (multi_head_attention, "match"),
        "dot_prelu_elu": (dot_products, "match"),
        "ops_arithmetic": (functional(lambda x: layers.GRU(4)(x) * 3 - 1), "match"),
        "ops_max_min": (functional(lambda x: ops.minimum(ops.maximum(layers.GRU(4)(x), -0.2), 0.5)), "match"),
        "ops_reverse_subtract": (functional(lambda x: 1 - layers.SimpleRNN(4)(x)), "match"),
        "stacked_bidirectional": (functional(lambda x: layers.Bidirectional(layers.GRU(3))(layers.Bidirectional(layers.LSTM(2, return_sequences=True))(x))), "match"),
        # Keras 3 saves a functional Masking as NotEqual/Any operations and an explicit mask= argument.
        "masking": (functional(lambda x: layers.GRU(3)(layers.Masking()(x))), "match"),
        "time_distributed_head": (functional(lambda x: layers.TimeDistributed(layers.Dense(2))(layers.GRU(3, return_sequences=True)(x))), "match"),
        "two_inputs_two_outputs": (two_branches, "match"),
        "seq2seq_initial_state": (seq2seq, "match"),
        "seq2seq_masked": (seq2seq_masked, "match"),
        "bidirectional_initial_state": (bidirectional_with_state, "match"),
        "stacked_cells_initial_state": (stacked_cells_with_state, "match"),
        "conv_then_gru": (functional(lambda x: layers.GRU(3)(layers.Conv1D(4, 3)(x))), "match"),
        "crnn_1d": (functional(lambda x: layers.GRU(3)(layers.MaxPooling1D(2)(layers.Conv1D(5, 3, padding="same", activation="relu")(x))),
                              (12, 3)), "match"),
        "conv_causal_dilated_strided": (functional(lambda x: layers.LSTM(3)(layers.Conv1D(4, 2, strides=2, padding="same")(
            layers.Conv1D(4, 3, padding="causal", dilation_rate=2)(x))), (11, 3)), "match"),
        "crnn_2d": (functional(lambda x: layers.GRU(3)(layers.Reshape((4, 12))(layers.MaxPooling2D((2, 2))(
            layers.Conv2D(3, (3, 3), padding="same", activation="relu")(layers.Conv2D(2, (2, 3), strides=(1, 1))(x))))),
            (9, 10, 1)), "match"),
        "pooling_same_and_average": (functional(lambda x: layers.GRU(3)(layers.AveragePooling1D(3, strides=2, padding="same")(
            layers.MaxPooling1D(3, 1, padding="same")(x))), (7, 3)), "match"),
        "average_pooling_2d_same": (functional(lambda x: image_and_sequence(
            layers.AveragePooling2D((2, 2), padding="same")(x), layers.GlobalAveragePooling2D(), (3, 6)), (5, 5, 2)), "match"),
        "layer_norm_and_activations": (functional(lambda x: layers.Softmax()(layers.Dense(4)(layers.LeakyReLU(0.1)(
            layers.ReLU(max_value=0.6, negative_slope=0.05)(layers.LayerNormalization()(layers.GRU(5, return_sequences=True)(x))))))),
            "match"),
        "global_pooling_of_a_masked_sequence": (functional(lambda x: layers.GlobalAveragePooling1D()(
            layers.GRU(4, return_sequences=True)(layers.Masking(0.0)(x)))), "match"),
        "shapes": (functional(lambda x: layers.GRU(3)(layers.UpSampling1D(2)(layers.Cropping1D((1, 2))(
            layers.ZeroPadding1D((2, 1))(layers.Permute((2, 1))(layers.Permute((2, 1))(x))))))), "match"),
        "global_max_2d": (functional(lambda x: image_and_sequence(layers.Conv2D(3, 2)(x), layers.GlobalMaxPooling2D(), (4, 9)),
                                    (5, 4, 2)), "match"),
        "attention": (functional(lambda x: layers.Attention()([layers.GRU(3, return_sequences=True)(x)] * 2)), "match"),
        "gru_with_attention": (gru_with_attention, "match"),
        "attention_scaled_concat_causal": (functional(lambda x: layers.Attention(use_scale=True, score_mode="concat")(
            [layers.GRU(3, return_sequences=True)(x), layers.LSTM(3, return_sequences=True)(x)], use_causal_mask=True)), "match"),
        "additive_attention": (functional(lambda x: layers.AdditiveAttention()(
            [layers.GRU(3, return_sequences=True)(x), layers.Dense(3)(x), layers.Dense(3)(x)])), "match"),
        "mean_over_time": (functional(lambda x: ops.mean(layers.GRU(3, return_sequences=True)(x), axis=1)), "match"),
        "transposed_sequence": (functional(lambda x: layers.GRU(3)(ops.transpose(x, (0, 2, 1)))), "match"),
        "ops_shapes_and_slices": (functional(lambda x: ops_shapes_and_slices(layers.GRU(4, return_sequences=True)(x))), "match"),
        "ops_elementwise": (functional(lambda x: ops_elementwise(layers.GRU(4)(x))), "match"),
        "ops_gather_refused": (functional(lambda x: ops.take(layers.GRU(4, return_sequences=True)(x), 1, axis=1)), "refused"),
    }


CATALOGUE = [
    "additive_attention", "attention", "attention_scaled_concat_causal", "average_pooling_2d_same",
    "bidirectional_initial_state", "bidirectional_stacked_cells", "conv_causal_dilated_strided", "conv_lstm", "conv_then_gru", "crnn_1d", "crnn_2d",
    "dot_prelu_elu", "global_max_2d", "global_pooling_of_a_masked_sequence", "gru_with_attention",
    "layer_norm_and_activations", "masking", "mean_over_time", "multi_head_attention", "ops_arithmetic",
    "ops_elementwise", "ops_gather_refused", "ops_max_min", "ops_reverse_subtract", "ops_shapes_and_slices",
    "pooling_same_and_average", "seq2seq_initial_state", "seq2seq_masked", "shapes", "stacked_bidirectional",
    "stacked_cells_initial_state", "stateful_and_reshaping", "time_distributed_head", "time_distributed_recurrent", "transposed_sequence", "two_inputs_two_outputs",
]


@pytest.mark.parametrize("name", CATALOGUE)
def test_models_users_build(name: str, tmp_path: Path, keras3: Any) -> None:
    catalogue = _catalogue(keras3)
    assert sorted(catalogue) == CATALOGUE
    build, outcome = catalogue[name]
    model = build()
    rng = np.random.default_rng(3)
    set_random_weights(model, rng)
    model.save(tmp_path / "m.keras")
    assert check_replay(tmp_path / "m.keras", _predictor(model), tmp_path) == outcome
    if outcome == "match":  # and verify checks each recurrent layer and the whole model
        assert_verify_passes_end_to_end(tmp_path / "m.keras")


@pytest.mark.parametrize("name", [
    "trafficflow_gru_keras2.1.4.h5", "trafficflow_lstm_keras2.1.4.h5", "ethnicolr_census2010_lstm_tfkeras2.5.h5",
    "katakana_seq2seq_lstm_tfkeras2.2.4.h5", "poreplex_demux_birnn_lstmcell_tfkeras2.2.4.hdf5",
])
def test_shared_real_files(name: str, tmp_path: Path, tf_keras: Any) -> None:
    path = real(name)
    import h5py
    import json

    with h5py.File(path) as f:
        config = json.loads(f.attrs["model_config"])
    for layer in config["config"]["layers"] if isinstance(config["config"], dict) else config["config"]:
        if layer["class_name"] == "GRU":
            layer["config"].setdefault("reset_after", False)  # tf-keras refuses the 2.1.4 GRU otherwise (see README)
    if "trafficflow_gru" in name:
        model = tf_keras.models.model_from_json(json.dumps(config))
        model.load_weights(path)
    else:
        model = tf_keras.models.load_model(path, compile=False)
    outcome = check_replay(path, _predictor(model), tmp_path)
    assert outcome == "match"


TF_KERAS_CATALOGUE = ["additive_attention", "attention", "conv_lstm", "crnn_1d", "crnn_2d", "dot_prelu_elu", "global_pooling_of_a_masked_sequence",
                      "gru_with_attention", "layer_norm_and_activations", "multi_head_attention", "shapes", "stateful_and_reshaping",
                      "bidirectional_stacked_cells", "time_distributed_recurrent", "seq2seq_masked"]


@pytest.mark.parametrize("name", TF_KERAS_CATALOGUE)
def test_models_users_build_with_tf_keras(name: str, tmp_path: Path, tf_keras: Any) -> None:
    # The same architectures saved by tf-keras (Keras 2 configs, .h5), replayed against tf-keras.
    build, outcome = _catalogue(tf_keras)[name]
    model = build()
    rng = np.random.default_rng(3)
    set_random_weights(model, rng)
    model.save(tmp_path / "m.h5")
    assert check_replay(tmp_path / "m.h5", _predictor(model), tmp_path) == outcome == "match"
    assert_verify_passes_end_to_end(tmp_path / "m.h5")


def assert_verify_passes_end_to_end(path: Path) -> None:
    """verify (the default --keras auto) checks each recurrent layer and the whole model, and passes."""
    result = CliRunner().invoke(cli, ["verify", str(path), "--json"])
    document = json.loads(result.stdout) if result.stdout else None
    assert result.exit_code == 0, result.stdout or result.stderr
    assert document is not None and document["layers"] and document["comparisons"]["replay_vs_predict"]["passed"] is True


def _lstm_seq2seq(keras: Any) -> Any:
    """Keras's own lstm_seq2seq example (character-level translation), at a small size."""
    encoder_inputs = keras.Input(shape=(None, 7), name="encoder_inputs")
    _, state_h, state_c = keras.layers.LSTM(8, return_state=True)(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, 5), name="decoder_inputs")
    decoder_outputs, _, _ = keras.layers.LSTM(8, return_sequences=True, return_state=True)(decoder_inputs, initial_state=[state_h, state_c])
    return keras.Model([encoder_inputs, decoder_inputs], keras.layers.Dense(5, activation="softmax")(decoder_outputs))


def _crnn(keras: Any) -> Any:
    """A convolutional-recurrent tagger: spectrogram → Conv2D blocks → rows as timesteps → GRU."""
    layers = keras.layers
    spectrogram = keras.Input((16, 12, 1), name="spectrogram")
    x = layers.MaxPooling2D((2, 2))(layers.Conv2D(4, 3, padding="same", activation="relu")(spectrogram))
    x = layers.MaxPooling2D((2, 1))(layers.BatchNormalization()(layers.Conv2D(6, 3, padding="same", activation="relu")(x)))
    x = layers.Reshape((4, 36))(layers.Permute((1, 2, 3))(x))
    return keras.Model(spectrogram, layers.Dense(3, activation="sigmoid")(layers.GRU(5)(x)))


def _gru_with_attention(keras: Any) -> Any:
    layers = keras.layers
    ids = keras.Input((9,), dtype="int32", name="ids")
    states = layers.Bidirectional(layers.GRU(4, return_sequences=True))(layers.Embedding(20, 6, mask_zero=True)(ids))
    context = layers.Attention(use_scale=True)([states, states])
    return keras.Model(ids, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling1D()(context)))


TUTORIALS: dict[str, tuple[Callable[[Any], Any], Callable[[np.random.Generator], dict[str, np.ndarray]]]] = {
    "lstm_seq2seq": (_lstm_seq2seq, lambda rng: {"encoder_inputs": rng.normal(size=(3, 6, 7)), "decoder_inputs": rng.normal(size=(3, 4, 5))}),
    "crnn": (_crnn, lambda rng: {"spectrogram": rng.normal(size=(3, 16, 12, 1))}),
    "gru_with_attention": (_gru_with_attention, lambda rng: {"ids": np.where(rng.random((3, 9)) < 0.3, 0, rng.integers(1, 20, (3, 9)))}),
}


@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
@pytest.mark.parametrize("name", sorted(TUTORIALS))
def test_tutorial_models_verify_and_replay_with_one_command(name: str, framework: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    keras = request.getfixturevalue(framework)
    build, make_inputs = TUTORIALS[name]
    model = build(keras)
    rng = np.random.default_rng(9)
    # Random weights, with BatchNormalization's moving variances kept positive (as training keeps them).
    model.set_weights([np.abs(v) if "variance" in w.name else v
                       for w, v in ((w, rng.normal(scale=0.4, size=w.shape).astype(np.float32)) for w in model.weights)])
    path = tmp_path / ("m.keras" if framework == "keras3" else "m.h5")
    model.save(path)
    inputs = make_inputs(rng)
    np.savez(tmp_path / "x.npz", **inputs)
    verified = CliRunner().invoke(cli, ["verify", str(path), "--input", str(tmp_path / "x.npz"), "--json"])
    document = json.loads(verified.stdout)
    assert verified.exit_code == 0, verified.stdout
    assert document["comparisons"]["replay_vs_predict"]["passed"] is True and all(layer["passed"] for layer in document["layers"])
    replayed = CliRunner().invoke(cli, ["replay", str(path), "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npy")])
    assert replayed.exit_code == 0, replayed.stderr
    values = list(inputs.values())  # in the order the model takes them
    expected = model.predict(values if len(values) > 1 else values[0], verbose=0)
    assert np.allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=1e-6)


def _tf_operations_model(tf_keras: Any) -> Any:
    """TensorFlow functions applied to Keras tensors, which tf.keras 2 saves as TFOpLambda and
    SlicingOpLambda layers: slices, reshapes, reductions, math, a constant first operand, and a
    masked sequence whose mask the TFOpLambda drops."""
    import tensorflow as tf

    layers = tf_keras.layers
    ids = tf_keras.Input((7,), dtype="int32")
    g = layers.GRU(4, return_sequences=True)(layers.Embedding(9, 3, mask_zero=True)(ids))
    last = g[:, -1, :]
    gram = tf.matmul(g, tf.transpose(g, (0, 2, 1)))
    combined = tf.concat([gram, tf.where(g > 0, g, 0.1 * g)[..., ::2]], axis=-1)
    pooled = tf.math.reduce_mean(g, axis=1) + tf.reduce_max(g, 1) * 2.0 - tf.math.reduce_sum(g, axis=[1], keepdims=False)
    math = (tf.math.exp(last) + tf.math.log(tf.math.abs(last) + 1.0) + tf.nn.relu(last) + tf.nn.softmax(last) / 3
            + tf.math.sigmoid(last) + tf.nn.gelu(last) + tf.math.softplus(last) + (1.0 - tf.math.tanh(last)))
    stacked = tf.stack([last, tf.squeeze(tf.expand_dims(last, 1), axis=1)], axis=1)
    return tf_keras.Model(ids, [layers.GRU(3)(combined), pooled, math, tf.reshape(stacked, (-1, 8)),
                                layers.ThresholdedReLU(0.2)(layers.GRU(2)(g * 2.0 + 1.0))])


def test_tf_keras_operations(tmp_path: Path, tf_keras: Any) -> None:
    model = _tf_operations_model(tf_keras)
    rng = np.random.default_rng(3)
    set_random_weights(model, rng)
    model.save(tmp_path / "m.h5")
    assert check_replay(tmp_path / "m.h5", _predictor(model), tmp_path) == "match"
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "m.h5"), "--json"])
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["comparisons"]["replay_vs_predict"]["passed"] is True


def test_tf_keras_operation_it_cannot_run_is_refused_by_name(tmp_path: Path, tf_keras: Any) -> None:
    import tensorflow as tf

    inputs = tf_keras.Input((6, 3))
    model = tf_keras.Model(inputs, tf.math.cumsum(tf_keras.layers.GRU(4)(inputs), axis=1))
    model.save(tmp_path / "m.h5")
    result = CliRunner().invoke(cli, ["replay", str(tmp_path / "m.h5"), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: layer tf.math.cumsum (TFOpLambda calling tf.math.cumsum) is not one the replay engine can run")


@pytest.mark.parametrize("layout", ["keras1.2", "keras1.1"])
def test_keras1_convolution1d_then_gru(layout: str, tmp_path: Path, tf_keras: Any) -> None:
    """A Keras 1 CRNN (Convolution1D, then a GRU in Keras 1's per-gate arrays), written from a tf-keras
    Conv1D + GRU model by inverting tf-keras's Keras 1 conversion; the replay matches that model."""
    import h5py

    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.Conv1D(4, 3, strides=2, padding="same", activation="relu", input_shape=(9, 2), name="conv"),
                                 layers.GRU(3, reset_after=False, recurrent_activation="hard_sigmoid", name="gru")])
    set_random_weights(model, np.random.default_rng(4))
    kernel, conv_bias, gru_kernel, gru_recurrent, gru_bias = model.get_weights()
    stored_kernel = kernel[:, None] if layout == "keras1.2" else np.transpose(kernel[:, None], (3, 2, 0, 1))
    gates = {g: slice(k * 3, (k + 1) * 3) for k, g in enumerate("zrh")}
    per_gate = [(f"{kind}_{g}", array[..., gates[g]]) for g in "zrh" for kind, array in (("W", gru_kernel), ("U", gru_recurrent), ("b", gru_bias))]
    config = {"class_name": "Sequential", "config": [
        {"class_name": "Convolution1D", "config": {
            "name": "conv_1", "nb_filter": 4, "filter_length": 3, "subsample_length": 2, "border_mode": "same", "activation": "relu",
            "bias": True, "input_dim": 2, "input_length": 9, "batch_input_shape": [None, 9, 2], "init": "glorot_uniform", "trainable": True}},
        {"class_name": "GRU", "config": {
            "name": "gru_1", "output_dim": 3, "activation": "tanh", "inner_activation": "hard_sigmoid", "return_sequences": False,
            "go_backwards": False, "stateful": False, "unroll": False, "consume_less": "cpu", "dropout_W": 0.0, "dropout_U": 0.0}},
    ]}
    path = tmp_path / "keras1_crnn.h5"
    with h5py.File(path, "w") as f:  # Keras 1 wrote no keras_version attribute
        f.attrs["model_config"] = json.dumps(config).encode()
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = [b"conv_1", b"gru_1"]
        for name, arrays in (("conv_1", [("W", stored_kernel), ("b", conv_bias)]), ("gru_1", per_gate)):
            group = weights.create_group(name)
            group.attrs["weight_names"] = [f"{name}_{short}".encode() for short, _ in arrays]
            for short, array in arrays:
                group.create_dataset(f"{name}_{short}", data=array)
    x = np.random.default_rng(5).normal(size=(3, 9, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(cli, ["replay", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.stderr
    assert np.allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    assert_verify_passes_end_to_end(path)  # tf-keras builds it from the repaired Keras 1 config
