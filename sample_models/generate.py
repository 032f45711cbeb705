"""Write the small model files in this folder: every recurrent-layer variant current Keras can save.

Run from the repository root with the test dependencies installed:

    python sample_models/generate.py

Keras 3 models are written as `.keras` (and some as legacy `.h5` and `.weights.h5`); tf-keras
(Keras 2 semantics) models as legacy `.h5`. Two layouts that no current Keras writes, a Keras 1
per-gate file and a CuDNNGRU weights file, are assembled with h5py from a tf-keras model's weights
by the conversion rules of tf-keras's own loader, so that tests can check grucli against tf-keras.
Weights are set from a seeded generator (biases non-zero) so every gate slice is distinctive.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def randomize(model, seed: int) -> None:
    """Replace every weight with seeded values, so biases are non-zero and gates differ."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.5, size=w.shape).astype(w.dtype) for w in model.get_weights()])


def keras3_models() -> dict[str, Callable]:
    """Builders of Keras 3 models, by file stem."""
    import keras
    from keras import layers as L

    def seq(*layers_):
        return keras.Sequential(list(layers_))

    def bidir(merge_mode):
        def build():
            inp = keras.Input((5, 3))
            out = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode=merge_mode, name="bi")(inp)
            return keras.Model(inp, out)
        return build

    def nested():
        inner = keras.Sequential([keras.Input((6, 3)), L.GRU(4, return_sequences=True, name="enc_gru")], name="encoder")
        inp = keras.Input((6, 3))
        x = inner(inp)
        x = L.LSTM(3, name="dec_lstm")(x)
        return keras.Model(inp, L.Dense(2, name="head")(x), name="outer")

    return {
        "k3_gru": lambda: seq(keras.Input((5, 3)), L.GRU(4, name="gru"), L.Dense(2, name="dense")),
        "k3_gru_reset_before": lambda: seq(keras.Input((5, 3)), L.GRU(4, reset_after=False, name="gru")),
        "k3_gru_nobias": lambda: seq(keras.Input((5, 3)), L.GRU(4, use_bias=False, name="gru")),
        "k3_gru_hard_sigmoid": lambda: seq(keras.Input((5, 3)), L.GRU(4, recurrent_activation="hard_sigmoid", name="gru")),
        "k3_lstm": lambda: seq(keras.Input((5, 3)), L.LSTM(4, return_sequences=True, name="lstm"), L.LSTM(2, name="lstm_2")),
        "k3_lstm_nobias": lambda: seq(keras.Input((5, 3)), L.LSTM(4, use_bias=False, name="lstm")),
        "k3_simple_rnn": lambda: seq(keras.Input((5, 3)), L.SimpleRNN(4, activation="relu", name="rnn")),
        "k3_bidir_concat": bidir("concat"),
        "k3_bidir_sum": bidir("sum"),
        "k3_bidir_ave": bidir("ave"),
        "k3_bidir_mul": bidir("mul"),
        "k3_bidir_none": bidir(None),
        "k3_lstm_backwards_bidir": lambda: seq(keras.Input((5, 3)), L.LSTM(3, go_backwards=True, return_sequences=True, name="back"), L.Bidirectional(L.LSTM(2), name="bl")),
        "k3_nested": nested,
        "k3_rnn_cell": lambda: seq(keras.Input((5, 3)), L.RNN(L.GRUCell(4), name="rnn_gru_cell")),
        "k3_stacked_cells": lambda: seq(keras.Input((5, 3)), L.RNN([L.GRUCell(4), L.LSTMCell(3), L.SimpleRNNCell(2)], name="stack")),
        "k3_masking": lambda: seq(keras.Input((6, 2)), L.Masking(0.0), L.GRU(3, return_sequences=True, name="gru")),
        "k3_embedding_mask": lambda: seq(keras.Input((6,)), L.Embedding(10, 4, mask_zero=True), L.LSTM(3, name="lstm")),
        "k3_time_distributed": lambda: seq(keras.Input((5, 3)), L.GRU(4, return_sequences=True, name="gru"), L.TimeDistributed(L.Dense(2))),
        "k3_conv_lstm1d": lambda: seq(keras.Input((4, 6, 2)), L.ConvLSTM1D(3, kernel_size=2, name="conv_lstm")),
        # The exact models from people's questions about matching GRU math by hand.
        "q_gru2_linear": lambda: seq(keras.Input((3, 1)), L.GRU(2, activation="linear"), L.Dense(1)),
        "q_gru32_dense10": lambda: seq(keras.Input((5, 10)), L.GRU(32), L.Dense(10)),
        "q_gru1": lambda: seq(keras.Input((4, 1)), L.GRU(1)),
        "q_gru3_dense30": lambda: seq(keras.Input((30, 1)), L.GRU(3), L.Dense(30)),
        "q_gru10_seq": lambda: seq(keras.Input((8, 15)), L.GRU(10, return_sequences=True)),
    }


# Keras 3 models also saved in the legacy `.h5` format and as weights only.
KERAS3_ALSO_H5 = ["k3_gru", "k3_bidir_concat", "k3_nested", "k3_stacked_cells", "k3_lstm"]
KERAS3_ALSO_WEIGHTS = ["k3_gru", "k3_bidir_concat", "k3_stacked_cells", "k3_lstm"]


def tf_keras_models() -> dict[str, Callable]:
    """Builders of tf-keras (Keras 2 semantics) models, by file stem."""
    import tf_keras as tk
    from tf_keras import layers as L

    def nested():
        inner = tk.Sequential([L.GRU(4, return_sequences=True, input_shape=(6, 3), name="enc_gru")], name="encoder")
        inp = tk.Input((6, 3))
        x = L.LSTM(3, name="dec_lstm")(inner(inp))
        return tk.Model(inp, L.Dense(2, name="head")(x), name="outer")

    return {
        "tfk_gru_reset_before": lambda: tk.Sequential([L.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", input_shape=(5, 3), name="gru"), L.Dense(2)]),
        "tfk_gru": lambda: tk.Sequential([L.GRU(4, return_sequences=True, input_shape=(5, 3), name="gru")]),
        "tfk_lstm": lambda: tk.Sequential([L.LSTM(4, recurrent_activation="hard_sigmoid", input_shape=(5, 3), name="lstm")]),
        "tfk_simple_rnn": lambda: tk.Sequential([L.SimpleRNN(4, input_shape=(5, 3), name="rnn")]),
        "tfk_bidir": lambda: tk.Sequential([L.Bidirectional(L.GRU(4, reset_after=False), input_shape=(5, 3), name="bi")]),
        "tfk_nested": nested,
        "tfk_stacked_cells": lambda: tk.Sequential([L.RNN([L.GRUCell(4), L.LSTMCell(3)], input_shape=(5, 3), name="stack")]),
    }


TF_KERAS_ALSO_WEIGHTS = ["tfk_bidir", "tfk_lstm"]


def write_keras3() -> None:
    import keras

    for index, (stem, build) in enumerate(sorted(keras3_models().items())):
        keras.utils.set_random_seed(index)
        model = build()
        randomize(model, seed=100 + index)
        model.save(HERE / f"{stem}.keras")
        if stem in KERAS3_ALSO_H5:
            model.save(HERE / f"{stem}.h5")
        if stem in KERAS3_ALSO_WEIGHTS:
            model.save_weights(HERE / f"{stem}.weights.h5")


def write_seq2seq() -> None:
    """A two-input encoder-decoder, as Keras's seq2seq example builds it: the decoder starts from the
    encoder's states. Its inputs have names of their own, which convert's ONNX graph keeps."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(7)
    source, target = keras.Input((None, 3), name="encoder_inputs"), keras.Input((None, 2), name="decoder_inputs")
    _, h, c = L.LSTM(4, return_state=True, name="encoder")(source)
    decoded = L.LSTM(4, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    model = keras.Model([source, target], L.Dense(2, activation="softmax", name="next_token")(decoded))
    randomize(model, seed=300)
    model.save(HERE / "k3_seq2seq.keras")


def write_counting() -> None:
    """A GRU trained to count: at every step it outputs how many 1s its input has had so far (as a
    fraction of the 20 steps); with 300 sequences of 0s and 1s and their counts (the total, and
    at each step), for the README's study of a dataset (activations, probe, plot --trajectories)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(21)
    steps = 20
    rng = np.random.default_rng(21)
    x_train = (rng.random((2048, steps, 1)) < 0.5).astype(np.float32)
    inputs = keras.Input((steps, 1), name="bits")
    model = keras.Model(inputs, L.Dense(1, name="count")(L.GRU(16, return_sequences=True, name="counter")(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x_train, np.cumsum(x_train, axis=1) / steps, epochs=30, batch_size=64, verbose=0)
    model.save(HERE / "k3_counter_gru.keras")
    x = (rng.random((300, steps, 1)) < 0.5).astype(np.float32)
    counts = np.cumsum(x[..., 0], axis=1)
    np.save(HERE / "counting_x.npy", x)
    np.save(HERE / "counting_steps.npy", counts)
    np.save(HERE / "counting_total.npy", counts[:, -1])


def write_torch_samples() -> None:
    """A PyTorch GRU with a Linear head on its last step, as a user saves it (state_dict and ONNX), for
    the README's port into sample_models/k3_gru.keras (GRU(4) on 3 features, Dense(2)); and the port
    people make by hand (keras-team/keras#15915), the tensors transposed but the gates left in
    PyTorch's order r, z, n, for diff to name."""
    import keras
    import torch

    class GRUHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = torch.nn.GRU(3, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.gru(x)[0][:, -1])

    torch.manual_seed(0)
    module = GRUHead().eval()
    torch.save(module.state_dict(), HERE / "torch_gru_head.pt")
    torch.onnx.export(module, (torch.zeros(1, 5, 3),), str(HERE / "torch_gru_head.onnx"), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "steps"}})
    state = {name: value.numpy() for name, value in module.state_dict().items()}
    naive = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, name="gru"), keras.layers.Dense(2, name="dense")])
    naive.layers[0].set_weights([state["gru.weight_ih_l0"].T, state["gru.weight_hh_l0"].T,
                                 np.stack([state["gru.bias_ih_l0"], state["gru.bias_hh_l0"]])])
    naive.layers[1].set_weights([state["head.weight"].T, state["head.bias"]])
    naive.save(HERE / "k3_gru_naive_port.keras")


def write_tf_keras() -> None:
    import tf_keras as tk

    for index, (stem, build) in enumerate(sorted(tf_keras_models().items())):
        tk.utils.set_random_seed(index)
        model = build()
        randomize(model, seed=200 + index)
        model.save(HERE / f"{stem}.h5", save_format="h5")
        if stem in TF_KERAS_ALSO_WEIGHTS:
            model.save_weights(HERE / f"{stem}_weights.h5", save_format="h5")


def write_keras1_files() -> None:
    """Keras 1.2 per-gate layout: W_z, U_z, b_z, ... (LSTM gates stored i, c, f, o).

    The weights come from the tf-keras models `tfk_gru_reset_before` and `tfk_lstm`, split back
    into per-gate arrays by inverting tf-keras's Keras 1 conversion, under a Keras 1 config.
    """
    for source, out, kind in [
        ("tfk_gru_reset_before.h5", "keras1_gru.h5", "GRU"),
        ("tfk_lstm.h5", "keras1_lstm.h5", "LSTM"),
    ]:
        with h5py.File(HERE / source, "r") as f:
            layer_name = "gru" if kind == "GRU" else "lstm"
            group = f["model_weights"][layer_name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            kernel, recurrent, bias = (group[n][()] for n in names)
        units = recurrent.shape[0]
        stored_order = ["z", "r", "h"] if kind == "GRU" else ["i", "c", "f", "o"]
        canonical_order = ["z", "r", "h"] if kind == "GRU" else ["i", "f", "c", "o"]
        per_gate: list[tuple[str, np.ndarray]] = []
        for gate in stored_order:
            k = canonical_order.index(gate)
            cols = slice(k * units, (k + 1) * units)
            per_gate += [(f"W_{gate}", kernel[:, cols]), (f"U_{gate}", recurrent[:, cols]), (f"b_{gate}", bias[cols])]
        name = f"{layer_name}_1"
        config = {
            "class_name": "Sequential",
            "config": [
                {
                    "class_name": kind,
                    "config": {
                        "name": name,
                        "output_dim": int(units),
                        "input_dim": int(kernel.shape[0]),
                        "input_length": 5,
                        "batch_input_shape": [None, 5, int(kernel.shape[0])],
                        "activation": "tanh",
                        "inner_activation": "hard_sigmoid",
                        "return_sequences": False,
                        "go_backwards": False,
                        "stateful": False,
                        "unroll": False,
                        "consume_less": "cpu",
                        "dropout_W": 0.0,
                        "dropout_U": 0.0,
                        "trainable": True,
                    },
                }
            ],
        }
        with h5py.File(HERE / out, "w") as f:
            # Keras 1 wrote no keras_version attribute: its absence is how loaders recognise it.
            f.attrs["model_config"] = json.dumps(config).encode()
            weights = f.create_group("model_weights")
            weights.attrs["layer_names"] = [name.encode()]
            layer = weights.create_group(name)
            full_names = [f"{name}_{short}" for short, _ in per_gate]
            layer.attrs["weight_names"] = [n.encode() for n in full_names]
            for full_name, (_, array) in zip(full_names, per_gate):
                layer.create_dataset(full_name, data=array)


def write_cudnn_gru_weights() -> None:
    """A CuDNNGRU weights-only file in tf-keras's legacy layout, from `tfk_gru`'s weights.

    Inverts tf-keras's CuDNN conversion: per gate, input kernels go to cuDNN's transposed
    Fortran layout, recurrent kernels are transposed, the (2, 3u) bias is flattened to (6u,).
    """
    with h5py.File(HERE / "tfk_gru.h5", "r") as f:
        group = f["model_weights"]["gru"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        kernel, recurrent, bias = (group[n][()] for n in names)
    cudnn_kernel = np.hstack([_to_cudnn_input(k) for k in np.hsplit(kernel, 3)])
    cudnn_recurrent = np.hstack([k.T for k in np.hsplit(recurrent, 3)])
    cudnn_bias = bias.reshape(-1)
    with h5py.File(HERE / "cudnn_gru_weights.h5", "w") as f:
        f.attrs["keras_version"] = b"2.1.5"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["layer_names"] = [b"cu_dnngru_1"]
        layer = f.create_group("cu_dnngru_1")
        names = ["cu_dnngru_1/kernel:0", "cu_dnngru_1/recurrent_kernel:0", "cu_dnngru_1/bias:0"]
        layer.attrs["weight_names"] = [n.encode() for n in names]
        for name, array in zip(names, [cudnn_kernel, cudnn_recurrent, cudnn_bias]):
            layer.create_dataset(name, data=array)


def _to_cudnn_input(block: np.ndarray) -> np.ndarray:
    """Inverse of tf-keras's `kernel.T.reshape(kernel.shape, order="F")` for one gate block.

    That reshape reads `kernel` in C order and writes in Fortran order, so the inverse reads
    the canonical block in Fortran order and writes in C order.
    """
    return block.ravel(order="F").reshape(block.shape)


def main() -> int:
    for old in HERE.glob("*"):
        if old.suffix in {".keras", ".h5"}:
            old.unlink()
    write_keras3()
    write_seq2seq()
    write_counting()
    write_torch_samples()
    write_tf_keras()
    write_keras1_files()
    write_cudnn_gru_weights()
    for path in sorted(HERE.iterdir()):
        if path.suffix in {".keras", ".h5"}:
            print(f"{path.stat().st_size:>8}  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
