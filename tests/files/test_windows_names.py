""".keras and .weights.h5 files saved by tf.keras 2.13-2.15 on Windows, whose weight groups are named
with `\\` (`layers\\lstm\\cell/vars`; keras-team/keras#18528, tensorflow/tensorflow#74439).

Keras cannot load them. Each test builds one the way that release wrote it: a tf-keras model saved
in the .keras format, its weight file rewritten as the Windows saver wrote it (every weight group
created at the root under its `\\`-joined path), and its metadata saying Keras 2.15.0. grucli reads
each `\\` as `/`, says so, and the file replays and verifies against tf-keras's own predict.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def windows_weights(data: bytes, extra: dict[str, np.ndarray] | None = None) -> bytes:
    """A Keras 3 weights file as tf.keras 2.15 on Windows wrote it: `H5IOStore.make(path)` created
    `path` (joined with os.path.join: `\\`) at the file's root, then its `vars` group."""
    source = h5py.File(io.BytesIO(data), "r")
    out = io.BytesIO()
    with h5py.File(out, "w") as target:
        def copy(name: str, item: Any) -> None:
            if isinstance(item, h5py.Group) and name.split("/")[-1] == "vars":
                owner = name[: -len("vars")].rstrip("/")
                group = target.require_group(owner.replace("/", "\\")) if owner else target
                dest = group.create_group("vars")
                for key in item:
                    dest.create_dataset(key, data=item[key][()])

        source.visititems(copy)
        for name, value in (extra or {}).items():
            target.create_dataset(name, data=value)
    return out.getvalue()


def windows_keras_zip(source: Path, target: Path, extra: dict[str, np.ndarray] | None = None) -> None:
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as written:
        for name in original.namelist():
            data = original.read(name)
            if name == "model.weights.h5":
                data = windows_weights(data, extra)
            elif name == "metadata.json":
                metadata = json.loads(data)
                metadata["keras_version"] = "2.15.0"
                data = json.dumps(metadata).encode()
            written.writestr(name, data)


def _model(tf_keras: Any) -> Any:
    layers = tf_keras.layers
    inputs = tf_keras.Input((6, 3))
    hidden = layers.Bidirectional(layers.GRU(4, return_sequences=True))(inputs)
    model = tf_keras.Model(inputs, layers.Dense(2)(layers.LSTM(3, recurrent_activation="hard_sigmoid")(hidden)))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_a_windows_keras_file_is_read_replayed_and_verified(tf_keras: Any, tmp_path: Path) -> None:
    model = _model(tf_keras)
    model.save(tmp_path / "linux.keras")
    windows_keras_zip(tmp_path / "linux.keras", tmp_path / "windows.keras")
    with zipfile.ZipFile(tmp_path / "windows.keras") as archive:
        names: list[str] = []
        h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r").visit(names.append)
    assert any("\\" in name and name.endswith("cell/vars") for name in names)  # layers\lstm\cell/vars, as the issue shows

    inspected = run("inspect", str(tmp_path / "windows.keras"))
    assert inspected.exit_code == 0, inspected.output
    assert "note: weight groups are named with '\\'" in inspected.stdout
    assert "saved by Keras 2.15.0" in inspected.stdout
    document = json.loads(run("inspect", str(tmp_path / "windows.keras"), "--json").stdout)
    assert len(document["notes"]) == 1 and "Windows" in document["notes"][0]
    assert [layer["path"] for layer in document["layers"]] == [f"{model.layers[1].name}/forward", f"{model.layers[1].name}/backward",
                                                                model.layers[2].name]
    plain = json.loads(run("inspect", str(tmp_path / "linux.keras"), "--json").stdout)
    assert plain["notes"] == []

    x = np.random.default_rng(1).normal(size=(5, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    replayed = run("replay", str(tmp_path / "windows.keras"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert replayed.exit_code == 0, replayed.output
    # tf.keras 2.15's definitions (Keras 2's hard_sigmoid): the numbers tf-keras's predict gives.
    # Float32 sums of a few products over 6 steps: rounding stays near 1e-7.
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    verified = run("verify", str(tmp_path / "windows.keras"), "--input", str(tmp_path / "x.npy"), "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["passed"] is True and report["semantics"] == "keras2"
    assert [layer["path"] for layer in report["layers"]] == [model.layers[1].name, model.layers[2].name]  # the wrapper, checked whole


def test_a_windows_weights_file_is_read_with_its_config(tf_keras: Any, tmp_path: Path) -> None:
    """`save_weights("m.weights.h5")` on Windows: the same root groups, read with --config."""
    model = _model(tf_keras)
    model.save_weights(tmp_path / "m.weights.h5")
    (tmp_path / "m.weights.h5").write_bytes(windows_weights((tmp_path / "m.weights.h5").read_bytes()))
    (tmp_path / "model.json").write_text(model.to_json())
    config = str(tmp_path / "model.json")
    inspected = run("inspect", str(tmp_path / "m.weights.h5"), "--config", config)
    assert inspected.exit_code == 0, inspected.output
    assert "note: weight groups are named with '\\'" in inspected.stdout
    x = np.random.default_rng(2).normal(size=(3, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    replayed = run("replay", str(tmp_path / "m.weights.h5"), "--config", config, "--input", str(tmp_path / "x.npy"),
                   "-o", str(tmp_path / "y.npy"))
    assert replayed.exit_code == 0, replayed.output
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # Without the config the layers are inferred from the same groups.
    inferred = json.loads(run("inspect", str(tmp_path / "m.weights.h5"), "--json").stdout)
    assert sorted(layer["kind"] for layer in inferred["layers"]) == ["GRU", "GRU", "LSTM"]


def test_names_that_collide_once_read_with_slashes_are_refused(tf_keras: Any, tmp_path: Path) -> None:
    """A group `layers\\lstm\\cell` beside `layers/lstm/cell`: which one holds the model is not known."""
    model = _model(tf_keras)
    model.save(tmp_path / "linux.keras")
    lstm = "lstm"  # a weights file names its groups after each layer's class
    duplicate = {f"layers/{lstm}/cell/vars/0": np.zeros((8, 12), np.float32)}
    windows_keras_zip(tmp_path / "linux.keras", tmp_path / "both.keras", duplicate)
    for command in ("inspect", "export"):
        args = [command, str(tmp_path / "both.keras")] + (["-o", str(tmp_path / "g.npz")] if command == "export" else [])
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("Error: ") and "name the same weights once '\\' is read as '/'" in result.stderr
        assert f"/layers/{lstm} and /layers\\{lstm} name the same weights" in result.stderr  # both named, as stored
    assert not (tmp_path / "g.npz").exists()


def test_the_renamed_tree_is_charged_to_the_read_budget(tmp_path: Path) -> None:
    """Thousands of `\\`-named groups: counted before they are read, refused by --max-layers."""
    with h5py.File(tmp_path / "many.weights.h5", "w") as handle:
        handle.create_group("vars")
        for index in range(120):
            handle.create_group(f"layers\\dense_{index}").create_group("vars")
    result = run("inspect", str(tmp_path / "many.weights.h5"), "--max-layers", "2")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "--max-layers" in result.stderr


@pytest.mark.parametrize("version, semantics", [("2.15.0", "keras2"), ("3.5.0", "keras3"), (None, "keras3")])
def test_a_keras_zip_follows_the_definitions_of_the_keras_that_wrote_it(version: str | None, semantics: str) -> None:
    """tf.keras 2.13+ and tf-keras write the .keras format too, with Keras 2's hard_sigmoid."""
    from grucli.model.semantics import semantics_for

    assert semantics_for(version, "keras-v3") == semantics
    assert semantics_for(version, "keras-v3-weights") == semantics
