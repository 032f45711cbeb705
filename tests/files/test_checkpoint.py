"""TensorFlow checkpoints and SavedModel variables, read without TensorFlow: weights bit for bit
against tf-keras's `get_weights()`, every path form, and damaged files refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli
from grucli.model.layers import find_layers
from grucli.files.reader import read_model
from tests.cli.test_no_tensorflow import BLOCKER, RUNNER


def models(tf_keras: Any) -> dict[str, Any]:
    layers = tf_keras.layers
    return {
        "gru_reset_after": lambda: tf_keras.Sequential([layers.GRU(4, input_shape=(5, 3)), layers.Dense(2)]),
        "gru_reset_before": lambda: tf_keras.Sequential([layers.GRU(4, reset_after=False, input_shape=(5, 3))]),
        "lstm": lambda: tf_keras.Sequential([layers.LSTM(4, input_shape=(5, 3))]),
        "simple_rnn": lambda: tf_keras.Sequential([layers.SimpleRNN(4, input_shape=(5, 3))]),
        "bidirectional_and_stacked": lambda: tf_keras.Sequential([
            layers.Bidirectional(layers.GRU(3, return_sequences=True), input_shape=(5, 3)),
            layers.LSTM(4, return_sequences=True), layers.SimpleRNN(2)]),
    }


def canonical(layer: Any) -> list[np.ndarray]:
    return [np.asarray(layer.kernel), np.asarray(layer.recurrent_kernel), *([] if layer.bias is None else [np.asarray(layer.bias)])]


def keras_recurrent_weights(model: Any) -> list[list[np.ndarray]]:
    found = []
    for layer in model.layers:
        if type(layer).__name__ == "Bidirectional":
            found += [layer.forward_layer.get_weights(), layer.backward_layer.get_weights()]
        elif type(layer).__name__ in ("GRU", "LSTM", "SimpleRNN"):
            found.append(layer.get_weights())
    return found


@pytest.mark.parametrize("name", ["gru_reset_after", "gru_reset_before", "lstm", "simple_rnn", "bidirectional_and_stacked"])
def test_checkpoint_weights_match_get_weights_bit_for_bit(name: str, tf_keras: Any, tmp_path: Path) -> None:
    model = models(tf_keras)[name]()
    model.compile("adam", "mse")  # one training step: the checkpoint then also holds optimizer slots, to be skipped
    model.fit(np.ones((2, 5, 3)), np.ones((2, model.output_shape[-1])), verbose=0)
    model.save_weights(tmp_path / "ckpt" / "weights")
    with read_model(tmp_path / "ckpt" / "weights") as checkpoint:
        assert checkpoint.format == "tf-checkpoint" and not checkpoint.has_config
        found = find_layers(checkpoint).recurrent
        assert len(found) == len(keras_recurrent_weights(model))
        for layer, expected in zip(found, keras_recurrent_weights(model)):
            assert len(canonical(layer)) == len(expected)
            assert all(np.array_equal(a, b) for a, b in zip(canonical(layer), expected)), layer.path
        paths = [layer.path for layer in found]
    # And `export` writes them: its gate slices put side by side are get_weights()'s kernels.
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "g.npz")])
    assert result.exit_code == 0, result.stderr
    gate_order = {3: "zrh", 4: "ifco", 1: "h"}
    with np.load(tmp_path / "g.npz") as archive:
        for path, expected in zip(paths, keras_recurrent_weights(model)):
            gates = gate_order[expected[1].shape[1] // expected[1].shape[0]]
            for index, array in enumerate(("kernel", "recurrent_kernel")):
                joined = np.concatenate([archive[f"{path}/{gate}/{array}"] for gate in gates], axis=-1)
                assert np.array_equal(joined, expected[index]), (path, array)


def test_every_way_of_naming_a_checkpoint(tf_keras: Any, tmp_path: Path) -> None:
    model = models(tf_keras)["lstm"]()
    model.save_weights(tmp_path / "ckpt" / "weights")
    for given in ("ckpt/weights", "ckpt/weights.index", "ckpt"):
        result = CliRunner().invoke(cli, ["inspect", str(tmp_path / given), "--json"])
        assert result.exit_code == 0, (given, result.stderr)
        assert '"format": "tf-checkpoint"' in result.stdout and '"path": "layer_with_weights-0"' in result.stdout


@pytest.mark.parametrize("name", ["gru_reset_after", "gru_reset_before", "lstm", "simple_rnn", "bidirectional_and_stacked"])
def test_a_savedmodel_directory_is_read_from_its_variables(name: str, tf_keras: Any, tmp_path: Path) -> None:
    model = models(tf_keras)[name]()
    model.save(tmp_path / "saved", save_format="tf")
    with read_model(tmp_path / "saved") as saved:
        assert saved.format == "tf-savedmodel" and saved.has_config
        found = find_layers(saved).recurrent
        for layer, expected in zip(found, keras_recurrent_weights(model), strict=True):
            assert all(np.array_equal(a, b) for a, b in zip(canonical(layer), expected)), layer.path


def savedmodel_users_build(tf_keras: Any, path: Path) -> Any:
    """A functional model with a Bidirectional GRU, an RNN of stacked cells and a nested Sequential LSTM."""
    layers = tf_keras.layers
    inputs = tf_keras.Input((5, 3))
    sequence = layers.Bidirectional(layers.GRU(3, return_sequences=True))(inputs)
    sequence = layers.RNN([layers.GRUCell(2), layers.LSTMCell(2)], return_sequences=True)(sequence)
    inner = tf_keras.Sequential([layers.LSTM(4, input_shape=(5, 2))], name="inner")
    model = tf_keras.Model(inputs, layers.Dense(2)(inner(sequence)))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()])
    model.save(path, save_format="tf")
    return model


def test_a_savedmodel_has_its_architecture_replays_and_verifies(tf_keras: Any, tmp_path: Path) -> None:
    model = savedmodel_users_build(tf_keras, tmp_path / "saved")
    with read_model(tmp_path / "saved") as saved:  # real names from keras_metadata.pb, weights from variables/
        found = find_layers(saved).recurrent
        bidirectional, rnn, inner = model.layers[1], model.layers[2], model.layers[3]  # names depend on Keras's counters
        assert [layer.path for layer in found] == [f"{bidirectional.name}/forward", f"{bidirectional.name}/backward", f"{rnn.name}/cell_0",
                                                   f"{rnn.name}/cell_1", f"inner/{inner.layers[0].name}"]
        expected = [*keras_recurrent_weights(model)[:2], *[cell.get_weights() for cell in rnn.cell.cells], inner.layers[0].get_weights()]
        for layer, weights in zip(found, expected, strict=True):
            assert all(np.array_equal(a, b) for a, b in zip(canonical(layer), weights)), layer.path
    x = np.random.default_rng(1).normal(size=(3, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    replayed = CliRunner().invoke(cli, ["replay", str(tmp_path / "saved"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")])
    assert replayed.exit_code == 0, replayed.stderr
    assert np.allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    verified = CliRunner().invoke(cli, ["verify", str(tmp_path / "saved"), "--input", str(tmp_path / "x.npy"), "--json"])
    assert verified.exit_code == 0, verified.stdout
    assert '"replay_vs_predict": {' in verified.stdout and "tf-keras" in verified.stdout
    # The same model saved as .h5: the two files hold the same weights under the same names.
    model.save(tmp_path / "m.h5")
    same = CliRunner().invoke(cli, ["diff", str(tmp_path / "saved"), str(tmp_path / "m.h5"), "--exit-code"])
    assert same.exit_code == 0, same.stdout + same.stderr


def test_reading_checkpoints_imports_no_tensorflow(tf_keras: Any, tmp_path: Path) -> None:
    model = models(tf_keras)["bidirectional_and_stacked"]()
    model.save_weights(tmp_path / "ckpt" / "weights")
    model.save(tmp_path / "saved", save_format="tf")
    runs = [["inspect", str(tmp_path / "ckpt"), "--values"], ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "g.npz")],
            ["check", str(tmp_path / "ckpt" / "weights")], ["diff", str(tmp_path / "ckpt"), str(tmp_path / "ckpt"), "--exit-code"],
            ["inspect", str(tmp_path / "saved")], ["replay", str(tmp_path / "saved"), "-o", str(tmp_path / "y.npy")]]
    result = subprocess.run([sys.executable, "-c", f"RUNS = {runs!r}\n" + BLOCKER + RUNNER], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED []" in result.stderr


def _damaged(tf_keras: Any, tmp_path: Path, damage: str) -> Path:
    model = models(tf_keras)["gru_reset_after"]()
    model.save_weights(tmp_path / "ckpt" / "weights")
    index, shard = tmp_path / "ckpt" / "weights.index", tmp_path / "ckpt" / "weights.data-00000-of-00001"
    if damage == "truncated index":
        index.write_bytes(index.read_bytes()[:-20])
    elif damage == "flipped index byte":
        data = bytearray(index.read_bytes())
        data[10] ^= 0xFF
        index.write_bytes(bytes(data))
    elif damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:40])
    elif damage == "flipped shard byte":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x01
        shard.write_bytes(bytes(data))
    elif damage == "missing shard":
        shard.unlink()
    elif damage == "empty index":
        index.write_bytes(b"")
    return tmp_path / "ckpt"


@pytest.mark.parametrize(("damage", "message"), [
    ("truncated index", "does not end with a table's magic number"),
    ("flipped index byte", "fails its crc32c check"),
    ("truncated shard", "the file is truncated"),
    ("flipped shard byte", "fails its crc32c check"),
    ("missing shard", "is missing; a checkpoint needs every data shard"),
    ("empty index", "shorter than a table footer"),
])
def test_damaged_checkpoints_are_refused_with_one_line(damage: str, message: str, tf_keras: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(_damaged(tf_keras, tmp_path, damage))])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


# --- crafted checkpoints: a minimal tensor-bundle writer, to say what each field claims --------------------

import struct  # noqa: E402

import google_crc32c  # noqa: E402

from crafted import entry, field, varint  # noqa: E402
from grucli.files.checkpoint import _mask  # noqa: E402


# The checkpoint writer's pieces live in tests/crafted.py (shared with the security tests).
_varint, _field, _entry = varint, field, entry


def _block(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in items)
    return body + struct.pack("<I", 0) + struct.pack("<I", 1)


def write_bundle(prefix: Path, items: dict[str, bytes], shard: bytes) -> None:
    """`PREFIX.index` (one data block, an index block, a footer) and one data shard."""
    data = _block(sorted((k.encode(), v) for k, v in items.items()))
    out = bytearray()

    def append_block(block: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(block + b"\x00" + struct.pack("<I", _mask(google_crc32c.value(block + b"\x00"))))
        return offset, len(block)

    data_offset, data_size = append_block(data)
    index_offset, index_size = append_block(_block([(b"\xff", _varint(data_offset) + _varint(data_size))]))
    meta_offset, meta_size = append_block(_block([]))
    footer = _varint(meta_offset) + _varint(meta_size) + _varint(index_offset) + _varint(index_size)
    out.extend(footer.ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57))
    Path(f"{prefix}.index").write_bytes(bytes(out))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(shard)


KERNEL = "layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _gru_items(kernel_entry: bytes) -> tuple[dict[str, bytes], bytes]:
    shard = np.zeros(3 * 12 + 4 * 12 + 12, np.float32).tobytes()
    items = {
        "": _field(1, 1),
        KERNEL: kernel_entry,
        "layer_with_weights-0/cell/recurrent_kernel/.ATTRIBUTES/VARIABLE_VALUE": _entry(1, (4, 12), 144, 192),
        "layer_with_weights-0/cell/bias/.ATTRIBUTES/VARIABLE_VALUE": _entry(1, (12,), 336, 48),
    }
    return items, shard


def test_a_crafted_checkpoint_reads_as_a_gru(tmp_path: Path) -> None:
    # The hand-written bundle is valid: the writer above is right, so the refusals below are about one field each.
    items, shard = _gru_items(_entry(1, (3, 12), 0, 144))
    write_bundle(tmp_path / "c", items, shard)
    with read_model(tmp_path / "c") as crafted:
        (layer,) = find_layers(crafted).recurrent
        assert (layer.kind, layer.units, np.asarray(layer.kernel).shape) == ("GRU", 4, (3, 12))


@pytest.mark.parametrize(("kernel_entry", "message"), [
    (_entry(1, (3, 12), 0, 10**15), "declares shape (3, 12) (144 bytes) but 1000000000000000 bytes"),
    (_entry(1, (10**6, 10**6), 0, 4 * 10**12), "over the limit of 4.0 GiB per array; expected a smaller file (raise the limit with --max-mb)"),
    (_entry(1, (3, 12), 10**9, 144), "lies at bytes 1000000000..1000000144"),
    (_entry(7, (3, 12), 0, 144), "is a string tensor; expected a numeric weight"),
    (_entry(1, (3, 12), 0, 144, crc=12345), "fails its crc32c check"),
    (_field(1, 1) + _field(7, b"x"), "is a partitioned variable (slices)"),
    (b"\x0b", "protobuf wire type 3"),
])
def test_crafted_entries_are_refused_before_reading(kernel_entry: bytes, message: str, tmp_path: Path) -> None:
    items, shard = _gru_items(kernel_entry)
    write_bundle(tmp_path / "c", items, shard)
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "c")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr


def test_a_cyclic_object_graph_ends(tmp_path: Path) -> None:
    # root → layer_with_weights-0 → cell → kernel, and cell → back to root: breadth first, each node once.
    graph_nodes = [
        _field(1, _field(1, 1) + _field(2, b"layer_with_weights-0")),
        _field(1, _field(1, 2) + _field(2, b"cell")),
        _field(1, _field(1, 3) + _field(2, b"kernel")) + _field(1, _field(1, 0) + _field(2, b"loop")),
        _field(2, _field(1, b"VARIABLE_VALUE") + _field(3, KERNEL.encode())),
    ]
    graph = b"".join(_field(1, node) for node in graph_nodes)
    items, shard = _gru_items(_entry(1, (3, 12), 0, 144))
    length = struct.pack("<I", len(graph))
    checksum = struct.pack("<I", _mask(google_crc32c.value(length)))
    stored = _varint(len(graph)) + checksum + graph
    items["_CHECKPOINTABLE_OBJECT_GRAPH"] = _entry(7, (), len(shard), len(stored), _mask(google_crc32c.value(length + checksum + graph)))
    write_bundle(tmp_path / "c", items, shard + stored)
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.stderr
    # Only the kernel is reachable through layers in this graph: the layer is not a full GRU, and says so.
    assert '"path": "layer_with_weights-0"' in result.stdout


def test_a_checkpoint_with_its_architecture_replays_verifies_and_diffs_against_the_h5(tf_keras: Any, tmp_path: Path) -> None:
    # Layers without weights (Dropout) shift `layer_with_weights-N` from `layer-N`: the object graph's
    # layer-N names place each config layer; a nested model's members are placed inside it.
    layers = tf_keras.layers
    inputs = tf_keras.Input((5, 3))
    inner = tf_keras.Sequential([layers.Dropout(0.1, input_shape=(5, 4)), layers.LSTM(3)], name="inner")
    sequence = layers.Bidirectional(layers.GRU(2, return_sequences=True))(layers.Dropout(0.2)(inputs))
    model = tf_keras.Model(inputs, layers.Dense(2)(inner(sequence)))
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()])
    model.save_weights(tmp_path / "ckpt" / "weights")
    model.save(tmp_path / "m.h5")
    (tmp_path / "model.json").write_text(model.to_json())
    ckpt, config = str(tmp_path / "ckpt"), str(tmp_path / "model.json")
    x = rng.normal(size=(3, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    replayed = CliRunner().invoke(cli, ["replay", ckpt, "--config", config, "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")])
    assert replayed.exit_code == 0, replayed.stderr
    assert np.allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    verified = CliRunner().invoke(cli, ["verify", ckpt, "--config", config, "--json"])
    assert verified.exit_code == 0, verified.stdout
    same = CliRunner().invoke(cli, ["diff", ckpt, str(tmp_path / "m.h5"), "--config", config, "--exit-code", "--json"])
    assert same.exit_code == 0, same.stdout + same.stderr
    document = json.loads(same.stdout)
    assert document["identical"] is True
    # Every gate array of the three recurrent layers (two directions and the nested LSTM) was compared.
    assert sorted({change["path"] for change in document["changes"]}) == sorted(
        [f"{model.layers[2].name}/forward", f"{model.layers[2].name}/backward", f"inner/{inner.layers[1].name}"])
