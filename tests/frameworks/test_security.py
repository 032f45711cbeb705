"""Untrusted files never run code, under verify and explain too: the Keras model is built from the
config grucli validated and given the weights grucli read; no framework opens the file.

Each crafted model carries code that would create a marker file if it ran (a Lambda's bytecode,
a custom layer's saved TensorFlow graph with a file-writing op). The tests build them the way
tf-keras saves them and then craft the metadata as an attacker would; the marker must never
appear, whatever grucli answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import needs_keras

from grucli.cli import cli


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _gru_with(tf_keras: Any, make_hook: Callable[[], Any]) -> Any:
    layers = tf_keras.layers
    inputs = tf_keras.Input((5, 3), name="x")
    hidden = layers.GRU(4, return_sequences=True, name="gru")(inputs)
    return tf_keras.Model(inputs, make_hook()(hidden))


def _touching_lambda(tf_keras: Any, marker: Path) -> Any:
    # A literal path in the lambda's own code: its bytecode is all a loader gets.
    code = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    return tf_keras.layers.Lambda(eval(code), name="hook")  # noqa: S307 - the crafted payload itself


def _writer_layer(tf_keras: Any, marker: Path) -> Any:
    import tensorflow as tf

    class Writer(tf_keras.layers.Layer):
        """A custom layer whose saved graph writes a file each time it runs."""

        def call(self, inputs: Any) -> Any:
            tf.io.write_file(str(marker), "ran")
            return inputs

    return Writer(name="hook")


def _save_savedmodel(model: Any, folder: Path, marker: Path) -> None:
    model.save(folder, save_format="tf")
    marker.unlink(missing_ok=True)  # saving traces the layer: only what grucli does afterwards counts
    assert (folder / "keras_metadata.pb").is_file()


def _rewrite_metadata(folder: Path, edit: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
    """Rewrite each object's JSON in keras_metadata.pb, as a crafted file would."""
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    for node in metadata.nodes:
        node.metadata = json.dumps(edit(node.node_path, json.loads(node.metadata)))
    (folder / "keras_metadata.pb").write_bytes(metadata.SerializeToString())


HARMLESS = {"class_name": "Activation", "config": {"name": "hook", "trainable": True, "dtype": "float32", "activation": "linear"}}


def _harmless_root(node_path: str, document: dict[str, Any]) -> dict[str, Any]:
    """The root's model config with the hook layer replaced by a linear Activation of its name."""
    if node_path != "root":
        return document
    for key in ("model_config", "config"):
        config = document.get(key)
        holder = config.get("config", config) if isinstance(config, dict) else None
        for layer in holder.get("layers", []) if isinstance(holder, dict) else []:
            if layer.get("config", {}).get("name") == "hook":
                layer["class_name"], layer["config"] = HARMLESS["class_name"], dict(HARMLESS["config"])
    return document


def _disguise_everywhere(node_path: str, document: dict[str, Any]) -> dict[str, Any]:
    """The hook presented as a linear Activation in the root config and in its own metadata."""
    document = _harmless_root(node_path, document)
    if document.get("name") == "hook":
        document["class_name"], document["config"] = HARMLESS["class_name"], dict(HARMLESS["config"])
    return document


def test_a_lambda_hidden_in_per_layer_metadata_is_refused_and_never_runs(tf_keras: Any, tmp_path: Path) -> None:
    marker, folder = tmp_path / "lambda_ran", tmp_path / "model"
    _save_savedmodel(_gru_with(tf_keras, lambda: _touching_lambda(tf_keras, marker)), folder, marker)
    _rewrite_metadata(folder, _harmless_root)
    for command in (["verify", str(folder)], ["explain", str(folder), "--layer", "gru"], ["inspect", str(folder)]):
        result = run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "'hook' is a Lambda in its own metadata but a Activation in the model config" in result.stderr
        assert not marker.exists(), command


def test_a_lambda_in_the_config_is_refused_without_unsafe_and_never_runs(tf_keras: Any, tmp_path: Path) -> None:
    marker = tmp_path / "lambda_ran"
    model = _gru_with(tf_keras, lambda: _touching_lambda(tf_keras, marker))
    _save_savedmodel(model, tmp_path / "model", marker)
    model.save(tmp_path / "model.h5")
    marker.unlink(missing_ok=True)
    for path in (tmp_path / "model", tmp_path / "model.h5"):
        result = run("verify", str(path))
        assert result.exit_code == 2 and "layer hook is a Lambda" in result.stderr, result.output
        # explain compares with Keras only when Keras builds the model: safe mode refuses the
        # lambda there too, and explain falls back to its own replay, saying why.
        explained = run("explain", str(path), "--layer", "gru", "--keras", "tf-keras")
        assert explained.exit_code == 2 and "Lambda" in explained.stderr, explained.output
        assert not marker.exists(), path


def test_a_custom_layer_with_a_file_writing_graph_is_refused_and_never_runs(tf_keras: Any, tmp_path: Path) -> None:
    marker, folder = tmp_path / "graph_ran", tmp_path / "model"
    _save_savedmodel(_gru_with(tf_keras, lambda: _writer_layer(tf_keras, marker)), folder, marker)
    verified = run("verify", str(folder))
    assert verified.exit_code == 2, verified.output
    assert "layer hook is a Writer, a class tf-keras 2.21.0 does not have" in verified.stderr, verified.stderr
    explained = run("explain", str(folder), "--layer", "gru", "--keras", "tf-keras")
    assert explained.exit_code == 2 and "layer hook (Writer) is not one the replay engine can run" in explained.stderr
    assert not marker.exists()


def test_a_custom_layer_disguised_as_an_activation_is_verified_as_what_its_config_says(tf_keras: Any, tmp_path: Path) -> None:
    marker, folder = tmp_path / "graph_ran", tmp_path / "model"
    _save_savedmodel(_gru_with(tf_keras, lambda: _writer_layer(tf_keras, marker)), folder, marker)
    _rewrite_metadata(folder, _disguise_everywhere)
    result = run("verify", str(folder), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["passed"] is True and [layer["path"] for layer in document["layers"]] == ["gru"]
    explained = run("explain", str(folder), "--layer", "gru", "--keras", "tf-keras")
    assert explained.exit_code == 0, explained.output
    assert not marker.exists()


def test_a_savedmodel_whose_metadata_names_a_layer_the_config_lacks_is_refused(tf_keras: Any, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    model = _gru_with(tf_keras, lambda: tf_keras.layers.Dense(2, name="hook"))
    model.save(folder, save_format="tf")

    def renamed(node_path: str, document: dict[str, Any]) -> dict[str, Any]:
        if document.get("name") == "hook":
            document["name"] = "elsewhere"
        return document

    _rewrite_metadata(folder, renamed)
    result = run("verify", str(folder))
    assert result.exit_code == 2
    assert "describes a layer 'elsewhere' (Dense) that the model config does not have" in result.stderr


def test_an_honest_savedmodel_still_verifies_against_tf_keras(tf_keras: Any, tmp_path: Path) -> None:
    """The same model, uncrafted: built from its config by grucli, it matches predict."""
    folder = tmp_path / "model"
    model = _gru_with(tf_keras, lambda: tf_keras.layers.Dense(2, name="hook"))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    model.save(folder, save_format="tf")
    x = rng.normal(size=(3, 5, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    result = run("verify", str(folder), "--input", str(tmp_path / "x.npy"), "--expected", str(_save(tmp_path, model.predict(x, verbose=0))))
    assert result.exit_code == 0, result.output


def _save(tmp_path: Path, array: np.ndarray) -> Path:
    np.save(tmp_path / "expected.npy", array)
    return tmp_path / "expected.npy"


@needs_keras
@pytest.mark.parametrize("framework", ["keras", "tf-keras"])
def test_verify_never_calls_a_framework_loader(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the file, the frameworks' own loaders are never reached."""
    import keras
    import tf_keras

    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append(args)  # recorded: a caller that swallows the exception must not hide the call
        raise AssertionError("a framework loader opened the file")

    for module in (keras.saving, keras.models, tf_keras.models, tf_keras.saving):
        monkeypatch.setattr(module, "load_model", refuse)
    from conftest import sample

    for name in ("k3_gru.keras", "k3_lstm.h5", "k3_bidir_concat.h5") if framework == "keras" else ("tfk_lstm.h5", "tfk_bidir.h5"):
        result = run("verify", str(sample(name)), "--keras", framework)
        assert result.exit_code == 0, (name, result.output)
    assert calls == []


@needs_keras
def test_no_litter_in_the_temporary_folder_after_any_command(tmp_path: Path) -> None:
    """TensorFlow's autograph writes a module per traced function into the temporary folder and
    deletes it at exit: grucli's fast exit must still run that clean-up."""
    import os
    import subprocess
    import sys

    from conftest import sample

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    model = str(sample("tfk_gru.h5"))
    for command in (["verify", model], ["explain", model], ["inspect", model], ["replay", model, "-o", str(tmp_path / "y.npy")]):
        result = subprocess.run([sys.executable, "-m", "grucli", *command], capture_output=True, text=True,
                                env={**os.environ, "TMPDIR": str(temporary)})
        assert result.returncode == 0, (command, result.stderr)
        assert list(temporary.iterdir()) == [], command
