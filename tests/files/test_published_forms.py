"""Forms of published files that stopped or misled grucli, each built here in the layout the release
that wrote it used, then replayed and verified against tf-keras's own numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from click.testing import CliRunner
from conftest import sample

from grucli.cli import cli


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


# --- TimeDistributed(Conv2D(..., input_shape=S)) as a tf.keras 2 first layer -----------------------------


def _time_distributed_model(tf_keras: Any) -> Any:
    layers = tf_keras.layers
    model = tf_keras.Sequential([
        layers.TimeDistributed(layers.Conv2D(4, 3, activation="relu"), input_shape=(5, 6, 6, 1)),
        layers.TimeDistributed(layers.Flatten()), layers.GRU(3)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.3, size=w.shape) for w in model.get_weights()])
    return model


def test_time_distributed_with_its_input_shape_on_the_wrapped_layer(tf_keras: Any, tmp_path: Path) -> None:
    """tf.keras 2 saved the input shape of `TimeDistributed(Conv2D(..., input_shape=S))` on the inner
    Conv2D and no InputLayer: grucli used to stop with "does not declare an input shape; pass
    --input" even when --input was passed. Whether S holds the time axis is not in the file, so a
    random input is refused, saying why; an --input replays and verifies."""
    model = _time_distributed_model(tf_keras)
    model.save(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "a") as handle:  # the older layout, reproduced
        config = json.loads(handle.attrs["model_config"])
        layers = config["config"]["layers"]
        assert layers[0]["class_name"] == "InputLayer"
        layers.pop(0)
        layers[0]["config"]["layer"]["config"]["batch_input_shape"] = layers[0]["config"].pop("batch_input_shape")
        handle.attrs["model_config"] = json.dumps(config)
    x = np.random.default_rng(1).normal(size=(3, 5, 6, 6, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    random = run("replay", str(tmp_path / "m.h5"), "-o", str(tmp_path / "y.npy"))
    assert random.exit_code == 2
    assert "only its wrapped layer conv2d" in random.stderr and "pass --input" in random.stderr
    replayed = run("replay", str(tmp_path / "m.h5"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert replayed.exit_code == 0, replayed.output
    expected = model.predict(x, verbose=0)
    # Small float32 sums (9 products, 3 units over 5 steps): float32 rounding is below 1e-6 here.
    assert np.allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)
    verified = run("verify", str(tmp_path / "m.h5"), "--input", str(tmp_path / "x.npy"), "--json")
    assert verified.exit_code == 0, verified.output
    document = json.loads(verified.stdout)
    assert any("built with an InputLayer of the input's shape [None, 5, 6, 6, 1]" in r for r in document["repairs"])
    assert document["comparisons"]["replay_vs_predict"]["passed"] is True


# --- CuDNNGRU full models under verify's default framework, on a CPU ----------------------------------------


def _to_cudnn_input(block: np.ndarray) -> np.ndarray:
    """Inverse of Keras 2's `kernel.T.reshape(kernel.shape, order="F")` for one gate block (as in
    sample_models/generate.py)."""
    return block.ravel(order="F").reshape(block.shape)


def test_a_cudnn_gru_full_model_verifies_on_a_cpu(tf_keras: Any, tmp_path: Path) -> None:
    """A Keras 2.1.5 full model with a CuDNNGRU layer: tf-keras's own loader builds a CuDNN layer
    whose predict has no CPU kernel. grucli builds the equivalent GRU (reset_after, sigmoid) from the
    config it repaired, so verify's default framework runs it on a CPU."""
    path = tmp_path / "cudnn.h5"
    shutil.copy(sample("tfk_gru.h5"), path)  # GRU(4) on (5, 3), reset_after=True: CuDNN's semantics
    with h5py.File(path, "a") as handle:
        config = json.loads(handle.attrs["model_config"])
        gru = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "GRU")
        gru["class_name"] = "CuDNNGRU"
        for key in ("activation", "recurrent_activation", "reset_after", "use_bias", "dropout", "recurrent_dropout", "unroll",
                    "time_major", "implementation"):
            gru["config"].pop(key, None)
        handle.attrs["model_config"] = json.dumps(config)
        handle.attrs["keras_version"] = "2.1.5"
        group = handle["model_weights"]["gru"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        kernel, recurrent, bias = (group[n][()] for n in names)
        converted = [np.hstack([_to_cudnn_input(k) for k in np.hsplit(kernel, 3)]),
                     np.hstack([k.T for k in np.hsplit(recurrent, 3)]), bias.reshape(-1)]
        for name, array in zip(names, converted):
            del group[name]
            group[name] = array
    inspected = json.loads(run("inspect", str(path), "--json").stdout)
    assert inspected["layers"][0]["class"] == "CuDNNGRU"
    result = run("verify", str(path), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["framework"].startswith("tf-keras") and document["passed"] is True
    assert any("CuDNNGRU became GRU" in repair for repair in document["repairs"])
    # And the same numbers as the original GRU's file, which tf-keras loads itself.
    x = np.random.default_rng(2).normal(size=(2, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    original = tf_keras.models.load_model(sample("tfk_gru.h5"), compile=False)
    assert run("replay", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")).exit_code == 0
    assert np.allclose(np.load(tmp_path / "y.npy"), original.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


# --- labels: the saving Keras, TimeDistributed weights, the defaults of weights-only files ------------------


def test_a_keras3_weights_file_with_its_config_is_not_called_keras_1(keras3: Any, tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(sample("k3_gru.keras")) as archive:
        (tmp_path / "config.json").write_bytes(archive.read("config.json"))
    result = run("verify", str(sample("k3_gru.weights.h5")), "--config", str(tmp_path / "config.json"))
    assert result.exit_code == 0, result.output
    assert "saved by an unrecorded Keras version (Keras 3 definitions)" in result.stdout
    assert "Keras 1" not in result.stdout


def test_time_distributed_weights_are_listed_once(keras3: Any) -> None:
    document = json.loads(run("inspect", str(sample("k3_time_distributed.keras")), "--json").stdout)
    (wrapped,) = [other for other in document["other_layers"] if other["class"].startswith("TimeDistributed")]
    model = keras3.saving.load_model(sample("k3_time_distributed.keras"))
    expected = [list(w.shape) for w in model.get_layer(wrapped["path"]).get_weights()]
    assert [weight["shape"] for weight in wrapped["weights"]] == expected


def test_weights_only_notes_name_the_defaults_of_the_saving_keras() -> None:
    notes = {name: json.loads(run("inspect", str(sample(name)), "--json").stdout)["layers"][0]["notes"]
             for name in ("k3_gru.weights.h5", "tfk_bidir_weights.h5")}
    assert any("the defaults of Keras 3 are tanh and sigmoid" in note for note in notes["k3_gru.weights.h5"])
    assert any("the defaults of Keras 2.21.0 are tanh and sigmoid" in note for note in notes["tfk_bidir_weights.h5"])
    # A Keras 1 weights file (no version recorded) of a published model: Keras 1's GRU used hard_sigmoid.
    from conftest import real

    keras1 = json.loads(run("inspect", str(real("crnn_tagger_gru_keras1_weights.h5")), "--json").stdout)
    assert any("the defaults of Keras 1 are tanh and hard_sigmoid" in note for note in keras1["layers"][0]["notes"])


# --- checkpoints of early TF 2 Sequential models, and SavedModels without Keras metadata ----------------


def _sequential(tf_keras: Any) -> Any:
    layers = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((6,)), layers.Embedding(20, 4), layers.LSTM(3, return_sequences=True),
                                 layers.Dropout(0.1), layers.GRU(2)])
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()])
    return model


def _rewrite_bundle(prefix: Path, edit_graph: Any, target: Path, strings: dict[str, bytes] | None = None) -> None:
    """Copy a checkpoint into `target` (a new prefix) with its object graph edited, every tensor
    and checksum written again by tests/crafted.py: the layout of a checkpoint TensorFlow wrote."""
    import google_crc32c
    import tensorflow as tf
    from crafted import (
        GRAPH_KEY,
        HEADER,
        entry,
        float_entry,
        mask,
        varint,
        write_checkpoint,
    )
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(str(prefix))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(GRAPH_KEY))
    edit_graph(graph)
    shard, items = bytearray(), [("", HEADER)]
    for key in sorted(reader.get_variable_to_shape_map()):
        if key == GRAPH_KEY:
            continue
        value = np.asarray(reader.get_tensor(key))
        if value.dtype != np.float32:
            continue  # counters (save_counter): not model variables
        items.append((key, float_entry(value, len(shard))))
        shard += value.astype("<f4").tobytes()
    for key, data in {GRAPH_KEY: graph.SerializeToString(), **(strings or {})}.items():  # string scalars
        length = np.uint32(len(data)).tobytes()
        checksum = np.uint32(mask(google_crc32c.value(length))).tobytes()
        stored = varint(len(data)) + checksum + data
        items.append((key, entry(7, (), len(shard), len(stored), mask(google_crc32c.value(length + checksum + data)))))
        shard += stored
    write_checkpoint(target, items, bytes(shard))


def test_an_early_tf2_sequential_checkpoint_counting_its_input_layer(tf_keras: Any, tmp_path: Path) -> None:
    """TF 2.0/2.1 tracked a Sequential's InputLayer as `layer-0`, numbering every layer one on:
    --config placed each layer one off ("layer lstm stores 1 weights (.../embeddings)")."""
    model = _sequential(tf_keras)
    model.save_weights(tmp_path / "new" / "weights")

    def input_layer_first(graph: Any) -> None:
        root = graph.nodes[0]
        for child in root.children:
            if child.local_name.startswith("layer-"):
                child.local_name = f"layer-{int(child.local_name[6:]) + 1}"
        graph.nodes.add()  # the InputLayer: an object without variables
        root.children.add(node_id=len(graph.nodes) - 1, local_name="layer-0")

    (tmp_path / "old").mkdir()
    _rewrite_bundle(tmp_path / "new" / "weights", input_layer_first, tmp_path / "old" / "weights")
    (tmp_path / "model.json").write_text(model.to_json())
    x = np.random.default_rng(4).integers(0, 20, (3, 6))
    np.save(tmp_path / "x.npy", x)
    for folder in ("new", "old"):
        result = run("replay", str(tmp_path / folder), "--config", str(tmp_path / "model.json"), "--input", str(tmp_path / "x.npy"),
                     "-o", str(tmp_path / f"{folder}.npy"))
        assert result.exit_code == 0, (folder, result.output)
        assert np.allclose(np.load(tmp_path / f"{folder}.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6), folder
    verified = run("verify", str(tmp_path / "old"), "--config", str(tmp_path / "model.json"), "--input", str(tmp_path / "x.npy"))
    assert verified.exit_code == 0, verified.output

    # Those releases also stored the model's own config at the root (json.dumps of the model with
    # Keras's get_json_type, sort_keys=True): the checkpoint then needs no --config at all.
    stored = json.dumps({"class_name": "Sequential", "config": model.get_config()}, sort_keys=True).encode()
    (tmp_path / "stored").mkdir()
    _rewrite_bundle(tmp_path / "new" / "weights", input_layer_first, tmp_path / "stored" / "weights",
                    {".ATTRIBUTES/OBJECT_CONFIG_JSON": stored})
    inspected = json.loads(run("inspect", str(tmp_path / "stored"), "--json").stdout)
    expected_paths = [layer.name for layer in model.layers if type(layer).__name__ in ("LSTM", "GRU")]
    assert inspected["has_config"] is True and [layer["path"] for layer in inspected["layers"]] == expected_paths
    result = run("replay", str(tmp_path / "stored"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "stored.npy"))
    assert result.exit_code == 0, result.output
    assert np.allclose(np.load(tmp_path / "stored.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert run("verify", str(tmp_path / "stored"), "--input", str(tmp_path / "x.npy")).exit_code == 0


def test_config_option_with_a_savedmodel_folder_without_keras_metadata(tf_keras: Any, tmp_path: Path) -> None:
    """A SavedModel whose Keras config is not in keras_metadata.pb (TF 2.0-2.4 kept it in
    saved_model.pb): --config gives the architecture. It used to be opened as HDF5 ("corrupt")."""
    model = _sequential(tf_keras)
    model.save(tmp_path / "sm", save_format="tf")
    (tmp_path / "sm" / "keras_metadata.pb").unlink()
    (tmp_path / "model.json").write_text(model.to_json())
    x = np.random.default_rng(5).integers(0, 20, (2, 6))
    np.save(tmp_path / "x.npy", x)
    config = ["--config", str(tmp_path / "model.json")]
    result = run("replay", str(tmp_path / "sm"), *config, "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 0, result.output
    assert np.allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert run("verify", str(tmp_path / "sm"), *config, "--input", str(tmp_path / "x.npy")).exit_code == 0
    with_metadata = tmp_path / "sm2"
    model.save(with_metadata, save_format="tf")
    refused = run("inspect", str(with_metadata), *config)
    assert refused.exit_code == 2 and "holds its own model config (keras_metadata.pb)" in refused.stderr


def test_a_tf_2_0_to_2_4_savedmodel_with_its_keras_metadata_in_saved_model_pb(tf_keras: Any, tmp_path: Path) -> None:
    """Before keras_metadata.pb (TF 2.5), each Keras object's metadata lived in saved_model.pb, in its
    SavedUserObject. The layout is reproduced by moving each record of a tf-keras SavedModel there."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    model = _sequential(tf_keras)
    folder = tmp_path / "sm"
    model.save(folder, save_format="tf")
    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    for record in metadata.nodes:
        assert nodes[record.node_id].WhichOneof("kind") == "user_object"
        nodes[record.node_id].user_object.metadata = record.metadata
    (folder / "saved_model.pb").write_bytes(saved.SerializeToString())
    (folder / "keras_metadata.pb").unlink()
    inspected = json.loads(run("inspect", str(folder), "--json").stdout)
    expected = [layer.name for layer in model.layers if type(layer).__name__ in ("LSTM", "GRU")]
    assert inspected["has_config"] is True and [layer["path"] for layer in inspected["layers"]] == expected
    x = np.random.default_rng(6).integers(0, 20, (2, 6))
    np.save(tmp_path / "x.npy", x)
    result = run("replay", str(folder), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 0, result.output
    assert np.allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert run("verify", str(folder), "--input", str(tmp_path / "x.npy")).exit_code == 0
