"""Crafted files that once crashed grucli (exit 3), fooled it into other numbers than TensorFlow
reads, reached outside the output path or the model's folder, or wrote to the terminal: each is
now one `Error:` line and exit 2, or read exactly as TensorFlow reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample
from crafted import HEADER, VARIABLE, entry, gru_checkpoint, gru_graph, write_checkpoint

from grucli.cli import cli


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def assert_refused(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


# --- checkpoint tables, read as TensorFlow reads them ----------------------------------------------------


def test_a_crafted_gru_checkpoint_reads(tmp_path: Path) -> None:
    """The writer in tests/crafted.py is right: each refusal below breaks one rule of a valid file."""
    gru_checkpoint(tmp_path / "c", graph=gru_graph())
    result = run("inspect", str(tmp_path / "c"), "--json")
    assert result.exit_code == 0, result.stderr
    (layer,) = json.loads(result.stdout)["layers"]
    assert (layer["kind"], layer["units"]) == ("GRU", 4)


def test_a_duplicated_key_is_a_corrupt_table(tmp_path: Path) -> None:
    # TensorFlow's reader takes the first entry of a key, a dict the last: a NaN kernel placed second
    # would have been hidden from check and verify. Neither: the table is corrupt.
    nan_kernel = entry(1, (3, 12), 0, 144)
    gru_checkpoint(tmp_path / "c", extra=[(f"layer_with_weights-0/cell/kernel{VARIABLE}", nan_kernel)])
    assert_refused(run("inspect", str(tmp_path / "c")), "repeats the key before it", "the table is corrupt")


def test_unsorted_keys_are_a_corrupt_table(tmp_path: Path) -> None:
    gru_checkpoint(tmp_path / "c", sort=False, extra=[("a/kernel" + VARIABLE, entry(1, (0,), 0, 0))])
    assert_refused(run("inspect", str(tmp_path / "c")), "comes before the key before it")


def test_a_table_without_its_header_entry(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "c", [(f"layer_with_weights-0/cell/kernel{VARIABLE}", entry(1, (0,), 0, 0))], b"")
    assert_refused(run("inspect", str(tmp_path / "c")), "has no header entry (the empty key)")


@pytest.mark.parametrize("key", ["layer_with_weights-0/cell/ker\nnel", "layer_with_weights-0/\x1b[2Jkernel"])
def test_control_characters_in_a_key(key: str, tmp_path: Path) -> None:
    gru_checkpoint(tmp_path / "c", extra=[(key + VARIABLE, entry(1, (0,), 0, 0))])
    result = run("inspect", str(tmp_path / "c"))
    assert_refused(result, "holds control characters")
    assert "\x1b" not in result.stderr


def test_a_non_utf8_key(tmp_path: Path) -> None:
    from crafted import block, table

    items = [(b"", HEADER), (b"layer_with_weights-0/\xff/kernel" + VARIABLE.encode(), entry(1, (0,), 0, 0))]
    Path(f"{tmp_path / 'c'}.index").write_bytes(table([block(items)]))
    Path(f"{tmp_path / 'c'}.data-00000-of-00001").write_bytes(b"")
    assert_refused(run("inspect", str(tmp_path / "c")), "is not UTF-8")


def test_an_object_graph_node_claiming_two_keys(tmp_path: Path) -> None:
    # The kernel's node also claims the bias key: the bias would have been dropped and use_bias reported False.
    gru_checkpoint(tmp_path / "c", graph=gru_graph(bias_key_also_on_kernel=True))
    assert_refused(run("inspect", str(tmp_path / "c")), "gives keys", "the same object")


# --- numbers in names: ASCII digits, bounded ---------------------------------------------------------------------


@pytest.mark.parametrize("index", ["²", "1" * 5000, "٣"])
def test_odd_digits_in_layer_indexes_and_cell_numbers(index: str, tmp_path: Path) -> None:
    # Keras 3 weights: vars/<n> datasets; checkpoints: cells/<n> and layer-<n> object names.
    path = tmp_path / "w.weights.h5"
    shutil.copy(sample("k3_gru.weights.h5"), path)
    with h5py.File(path, "a") as handle:
        vars_group = next(handle[name] for name in _groups(handle) if name.endswith("/vars") and len(handle[name]))
        vars_group[index] = np.zeros(3, np.float32)
    result = run("inspect", str(path))
    assert result.exit_code in (0, 2), result.output
    assert "internal error" not in result.stderr
    gru_checkpoint(tmp_path / "c", extra=[(f"layer_with_weights-0/cell/cells/{index}/kernel{VARIABLE}", entry(1, (0,), 0, 0))])
    result = run("inspect", str(tmp_path / "c"))
    assert result.exit_code in (0, 2) and "internal error" not in result.stderr, result.output
    h5 = tmp_path / "m.h5"
    shutil.copy(sample("tfk_gru.h5"), h5)
    with h5py.File(h5, "a") as handle:
        handle.attrs["keras_version"] = f"{index}.0.0"
    result = run("inspect", str(h5))
    assert result.exit_code == 0 and "internal error" not in result.stderr, result.output


def _groups(handle: h5py.File) -> list[str]:
    found: list[str] = []
    handle.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Group) else None)
    return found


# --- config and weights that disagree --------------------------------------------------------------------------------


def _stacked_keras(tmp_path: Path, keras3: Any) -> Path:
    layers = keras3.layers
    model = keras3.Sequential([keras3.Input((5, 3)), layers.GRU(4, return_sequences=True), layers.GRU(4)])
    path = tmp_path / "m.keras"
    model.save(path)
    return path


def test_a_keras_file_whose_config_lacks_a_layer(keras3: Any, tmp_path: Path) -> None:
    """Keras 3 finds weights by class and position (`gru`, `gru_1`): without the first GRU in the
    config, the second would have been given the first one's weights, and verified."""
    path = _stacked_keras(tmp_path, keras3)
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    layers = config["config"]["layers"]
    config["config"]["layers"] = [layer for layer in layers if layer["config"]["name"] != layers[1]["config"]["name"]]
    members["config.json"] = json.dumps(config).encode()
    crafted = tmp_path / "crafted.keras"
    with zipfile.ZipFile(crafted, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    for command in (["inspect", str(crafted)], ["verify", str(crafted)], ["replay", str(crafted), "-o", str(tmp_path / "y.npy")]):
        assert_refused(run(*command), "the weights hold /layers/gru_1/cell/vars/0, which no layer of the config takes")


def test_an_h5_whose_config_lacks_a_layer(tf_keras: Any, tmp_path: Path) -> None:
    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.GRU(4, return_sequences=True, input_shape=(5, 3), name="first"), layers.GRU(4, name="second")])
    model.save(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "a") as handle:
        config = json.loads(handle.attrs["model_config"])
        config["config"]["layers"] = [layer for layer in config["config"]["layers"] if layer["config"].get("name") != "second"]
        handle.attrs["model_config"] = json.dumps(config)
    assert_refused(run("inspect", str(tmp_path / "m.h5")), "the weights hold /model_weights/second/", "no layer of the config takes")


def test_a_checkpoint_and_a_config_that_lacks_a_layer(tf_keras: Any, tmp_path: Path) -> None:
    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.GRU(4, return_sequences=True, input_shape=(5, 3), name="first"), layers.GRU(4, name="second")])
    model.save_weights(tmp_path / "ckpt" / "weights")
    config = json.loads(model.to_json())
    config["config"]["layers"] = [layer for layer in config["config"]["layers"] if layer["config"].get("name") != "second"]
    (tmp_path / "model.json").write_text(json.dumps(config))
    assert_refused(run("inspect", str(tmp_path / "ckpt"), "--config", str(tmp_path / "model.json")), "no layer of the config takes")


def test_a_layer_computing_in_strings(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    shutil.copy(sample("tfk_gru.h5"), path)
    with h5py.File(path, "a") as handle:
        config = json.loads(handle.attrs["model_config"])
        next(layer for layer in config["config"]["layers"] if layer["class_name"] == "GRU")["config"]["dtype"] = "string"
        handle.attrs["model_config"] = json.dumps(config)
    for command in ("inspect", "check", "verify"):
        assert_refused(run(command, str(path)), '.config.dtype: expected a numeric dtype name or policy, found "string"')


# --- nothing outside the model's folder or the output path --------------------------------------------------------


def test_a_savedmodel_whose_variables_lead_outside_its_folder(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    gru_checkpoint(secret / "variables")  # a bundle somewhere else, holding someone's bytes
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    (folder / "variables").symlink_to(secret)
    assert_refused(run("inspect", str(folder)), "leads outside the model's folder")
    os.unlink(folder / "variables")
    (folder / "variables").mkdir()
    gru_checkpoint(folder / "variables" / "variables")
    os.unlink(folder / "variables" / "variables.data-00000-of-00001")
    (folder / "variables" / "variables.data-00000-of-00001").symlink_to(secret / "variables.data-00000-of-00001")
    assert_refused(run("inspect", str(folder)), "variables.data-00000-of-00001 leads outside the model's folder")


def test_a_checkpoint_state_file_naming_a_prefix_elsewhere(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    gru_checkpoint(elsewhere / "weights")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "{elsewhere / "weights"}"\n')
    result = run("inspect", str(folder))
    assert_refused(result, "no weights.index")


def test_export_member_names_never_climb_out(keras3: Any, tmp_path: Path) -> None:
    path = sample("k3_gru.keras")
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    gru = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "GRU")
    old = gru["config"]["name"]
    text = json.dumps(config).replace(json.dumps(old), json.dumps("../../../../tmp/evil"))
    members["config.json"] = text.encode()
    crafted = tmp_path / "crafted.keras"
    with zipfile.ZipFile(crafted, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    result = run("export", str(crafted), "-o", str(tmp_path / "g.npz"))
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "g.npz") as archive:
        names = archive.namelist()
    assert names and all(not name.startswith("/") and ".." not in name.split("/") for name in names), names
    assert "%2E%2E/%2E%2E/%2E%2E/%2E%2E/tmp/evil/z/kernel.npy" in names
    with np.load(tmp_path / "g.npz") as archive:  # readable as any .npz
        assert archive["%2E%2E/%2E%2E/%2E%2E/%2E%2E/tmp/evil/z/kernel"].shape == (3, 4)


def test_output_is_never_a_device_fifo_or_directory(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    model = str(sample("k3_gru.keras"))
    for target in (fifo, tmp_path):
        result = run("export", model, "-o", str(target), "--force")
        assert result.exit_code == 2, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the FIFO: never replaced by a regular file


def test_outputs_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        result = run("export", str(sample("k3_gru.keras")), "-o", str(tmp_path / "g.npz"))
    finally:
        os.umask(previous)
    assert result.exit_code == 0
    assert stat.S_IMODE((tmp_path / "g.npz").stat().st_mode) == 0o640


# --- names from files are data, in every text output --------------------------------------------------------------

HOSTILE_NAME = "gru\x1b]0;pwned\x07\x1b[2J\nError: fake\u202e"


@pytest.fixture()
def hostile_named(tmp_path: Path) -> Path:
    path = sample("k3_gru.keras")
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    old = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "GRU")["config"]["name"]
    members["config.json"] = json.dumps(config).replace(json.dumps(old), json.dumps(HOSTILE_NAME)).encode()
    crafted = tmp_path / "hostile.keras"
    with zipfile.ZipFile(crafted, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    return crafted


def test_control_characters_in_names_never_reach_the_terminal(hostile_named: Path, tmp_path: Path) -> None:
    model = str(hostile_named)
    for command in (["inspect", model], ["inspect", model, "--values"], ["inspect", model, "--heatmap"], ["check", model],
                    ["explain", model, "--keras", "none"], ["diff", model, model], ["inspect", model, "--layer", "nope"],
                    ["export", model, "-o", str(tmp_path / "g.npz"), "--force"],
                    ["export", model, "--layout", "torch", "-o", str(tmp_path / "t.npz"), "--force"]):
        result = run(*command)
        assert result.exit_code in (0, 1, 2), (command, result.output)
        for stream in (result.stdout, result.stderr):
            assert not any(ord(c) < 32 and c != "\n" or c in "\x7f\u202e" for c in stream), (command, stream)
        assert "Error: fake" not in result.stdout.splitlines() and "Error: fake" not in result.stderr.splitlines()
        if result.exit_code == 2:
            assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, (command, result.stderr)
    shown = run("inspect", model).stdout
    assert "gru\\x1b]0;pwned\\x07\\x1b[2J\\x0aError: fake\\u202e" in shown
    # JSON keeps the name exactly, escaped as JSON escapes it.
    document = json.loads(run("inspect", model, "--json").stdout)
    assert document["layers"][0]["path"] == HOSTILE_NAME


def test_a_slash_in_a_layer_name_under_verify(keras3: Any, tmp_path: Path) -> None:
    path = sample("k3_gru.keras")
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    old = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "GRU")["config"]["name"]
    members["config.json"] = json.dumps(config).replace(json.dumps(old), json.dumps("g/ru")).encode()
    crafted = tmp_path / "slash.keras"
    with zipfile.ZipFile(crafted, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    assert_refused(run("verify", str(crafted), "--keras", "keras"), "cannot contain character `/`")
    assert run("inspect", str(crafted)).exit_code == 0  # read as data, the name as written
