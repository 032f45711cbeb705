"""Model files to layer trees: `read_model` picks the format and its reader (files/ holds the only code
that opens model files: h5py, zipfile, json).

Four layouts are read, none through Keras:

- `keras-v3`: a Keras 3 `.keras` zip: `config.json` plus `model.weights.h5`, whose groups are
  named after each layer's class (`layers/gru_1/cell/vars/0`), not its name;
- `keras-v3-weights`: a Keras 3 `.weights.h5` (the same groups, no config);
- `legacy-h5`: a full model saved by Keras 1/2, tf.keras 2 or Keras 3 in HDF5 (`model_config`
  attribute, `model_weights/<layer>/<weight name>` datasets listed by `weight_names`);
- `legacy-h5-weights`: `save_weights` HDF5 (`layer_names` on the root, no config).

The result is a `ModelFile` whose tree mirrors the model: containers (models, Bidirectional,
RNN with cells, TimeDistributed) have children, and every weight ends up on the layer or cell
that owns it. Files without config get a tree inferred from group names and weight shapes.

May import: files/ (every format reader), model/, errors.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

from grucli.errors import ModelFileError, first_line
from grucli.files import regular as files
from grucli.files.budget import Budget, Limits
from grucli.files.hdf5 import LegacyRoot, child_group, legacy_stored, refuse_unclaimed
from grucli.files.inference import infer_keras3_group, infer_legacy_weights
from grucli.files.keras_zip import (
    ZIP_SIGNATURE,
    Keras3Weights,
    keras3_stored,
    read_keras_zip,
)
from grucli.files.safetensors_file import is_safetensors
from grucli.files.torch_pickle import is_legacy_torch
from grucli.files.tree import attr_text, build_layer, parse_json
from grucli.files.windows_names import NOTE as WINDOWS_NAMES_NOTE
from grucli.files.windows_names import joined_root
from grucli.model.records import ModelFile

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_model(path: str | Path, limits: Limits | None = None, config_path: str | Path | None = None) -> ModelFile:
    """Read a Keras model or weights file into a `ModelFile`, without importing TensorFlow.

    `config_path` names the architecture of a weights-only file: the JSON of `model.to_json()`
    or a `.keras` zip's config.json. With it the weights get their real layers, names and classes.
    Everything read is charged to one `Budget` of `limits` (see `grucli.files.budget`), handed to
    every reader that reads a part of the file."""
    budget = Budget(limits or Limits())
    if config_path is None:
        return _read_model(Path(path), budget)
    return _read_with_config(Path(path), Path(config_path), budget)


def _read_with_config(path: Path, config_path: Path, budget: Budget) -> ModelFile:
    config = _read_config_file(config_path, budget)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        # A SavedModel's variables are a checkpoint, placed by its object graph like any other.
        if (path / "keras_metadata.pb").exists():
            raise ModelFileError(f"{path} holds its own model config (keras_metadata.pb); --config is for folders and files without one")
        from grucli.files.savedmodel import checkpoint_with_config

        return checkpoint_with_config(path, path / "variables" / "variables", config, config_path, budget, "tf-savedmodel")
    prefix = files.checkpoint_prefix(path)
    if prefix is not None:
        from grucli.files.savedmodel import checkpoint_with_config

        return checkpoint_with_config(path, prefix, config, config_path, budget)
    model = _read_model(path, budget)
    if model.has_config:
        model.close()
        raise ModelFileError(f"{path} holds its own model config; --config is for weights-only files (.h5 from save_weights, .weights.h5)")
    try:
        handle = h5py.File(path, "r")
    except (OSError, RuntimeError) as exc:
        model.close()
        raise ModelFileError(f"cannot read {path}: the file is corrupt or truncated ({first_line(exc)})") from None
    model.close()
    try:
        where = str(config_path)
        if model.format == "legacy-h5-weights":
            root = build_layer(config, LegacyRoot(handle, budget), where, budget)
            refuse_unclaimed(root, legacy_stored(handle), str(path))
            # The Keras that saved the weights trained them: its version decides the definitions.
            version = model.keras_version or attr_text(config.get("keras_version"))
            source = "file" if model.keras_version or not version else "config"
            built = ModelFile(
                str(path), "legacy-h5", version, model.backend or attr_text(config.get("backend")), True, root, version_source=source
            )
        else:  # keras-v3-weights: the layout of a .keras zip's model.weights.h5
            groups = joined_root(handle, budget, str(path))
            root = build_layer(config, Keras3Weights(groups, budget), where, budget)
            refuse_unclaimed(root, keras3_stored(groups), str(path))
            version = attr_text(config.get("keras_version"))
            built = ModelFile(
                str(path), "keras-v3", version, None, True, root, version_source="config" if version else "file", notes=model.notes
            )
    except BaseException:
        handle.close()
        raise
    return dataclasses.replace(built, closer=handle.close, config_path=str(config_path))


def _read_config_file(config_path: Path, budget: Budget) -> Mapping[str, Any]:
    if not config_path.exists():
        raise ModelFileError(f"--config {config_path}: no such file; expected the JSON of model.to_json() or a .keras config.json")
    budget.config(files.regular_file_size(config_path, f"--config {config_path}"), f"--config {config_path}")
    try:
        raw = config_path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read --config {config_path}: {exc.strerror or exc}") from None
    config = parse_json(raw, f"--config {config_path}", budget)
    if not isinstance(config, Mapping) or "class_name" not in config or not isinstance(config.get("config"), (Mapping, list)):
        raise ModelFileError(
            f"--config {config_path} is not a Keras model config; expected an object with class_name and config "
            "(the JSON of model.to_json() or a .keras config.json)"
        )
    return config


def _read_model(path: Path, budget: Budget) -> ModelFile:
    # TensorFlow's formats are imported only for them: most files are .keras or HDF5.
    if path.is_dir() and (path / "saved_model.pb").is_file():
        from grucli.files.savedmodel import read_saved_model

        return read_saved_model(path, budget)
    prefix = files.checkpoint_prefix(path)
    if prefix is not None:
        from grucli.files.savedmodel import read_checkpoint

        return read_checkpoint(path, prefix, budget)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file; expected a Keras model file (.keras, .h5, .hdf5)")
    if path.is_dir():
        raise ModelFileError(
            f"{path} is a directory; expected a Keras model file (.keras, .h5, .hdf5), a SavedModel "
            "folder (saved_model.pb and variables/) or a TensorFlow checkpoint folder"
        )
    size = files.regular_file_size(path, f"{path}")
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise ModelFileError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        if head.startswith(ZIP_SIGNATURE):
            if _is_torch_zip(path):
                return _read_foreign(path, "pytorch", budget)
            return read_keras_zip(path, budget)
        if head.startswith(HDF5_SIGNATURE):
            return _read_hdf5_path(path, budget)
        if is_safetensors(head, size):
            return _read_foreign(path, "safetensors", budget)
        if path.suffix.lower() == ".onnx":
            return _read_foreign(path, "onnx", budget)
        if is_legacy_torch(head):
            raise ModelFileError(
                f"{path} is a PyTorch file in the format before PyTorch 1.6 (a bare pickle), which grucli does not "
                "read; load it in PyTorch and save it again: torch.save(model.state_dict(), PATH)"
            )
    except ModelFileError:
        raise
    except MemoryError:
        raise ModelFileError(f"cannot read {path}: not enough memory for its weights (lower sizes are expected, see --max-mb)") from None
    except (OSError, RuntimeError, struct.error, EOFError) as exc:  # what h5py and zipfile raise on damaged bytes
        raise ModelFileError(f"cannot read {path}: the file is corrupt or truncated ({first_line(exc)})") from None
    if not head:
        raise ModelFileError(f"{path} is empty; expected a Keras model file (.keras zip or HDF5)")
    raise ModelFileError(f"{path} is neither a Keras .keras zip nor an HDF5 file (.h5, .hdf5), nor a PyTorch, .safetensors or .onnx file")


def _is_torch_zip(path: Path) -> bool:
    """A zip torch.save wrote: `<folder>/data.pkl` (TorchScript's `constants.pkl` too, to be refused by name)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False  # damaged: the .keras reader says how
    return "config.json" not in names and any(name.endswith(("/data.pkl", "/constants.pkl")) for name in names)


def _read_foreign(path: Path, form: str, budget: Budget) -> ModelFile:
    """A PyTorch state_dict (.pt zip or .safetensors) or an ONNX graph: weights without a Keras config."""
    if form == "onnx":
        from grucli.files.onnx_file import read_onnx

        root, notes = read_onnx(path, budget)
    else:
        from grucli.files.foreign import state_dict_of, state_dict_tree

        if form == "pytorch":
            from grucli.files.torch_pickle import read_torch_zip

            found = state_dict_of(read_torch_zip(path, budget), str(path), budget)
        else:
            from grucli.files.foreign import FoundStateDict
            from grucli.files.safetensors_file import read_safetensors

            found = FoundStateDict(read_safetensors(path, budget), ())
        root, notes = state_dict_tree(found, str(path), budget)
    return ModelFile(str(path), form, None, None, False, root, notes=notes)


def _read_hdf5_path(path: Path, budget: Budget) -> ModelFile:
    handle = h5py.File(path, "r")
    try:
        model = _read_hdf5(path, handle, budget)
    except BaseException:
        handle.close()
        raise
    return dataclasses.replace(model, closer=handle.close)


def _read_hdf5(path: Path, handle: h5py.File, budget: Budget) -> ModelFile:
    attrs = handle.attrs
    if "model_config" in attrs:
        raw_config = attr_text(attrs["model_config"]) or "null"
        budget.config(len(raw_config), f"{path}: model_config")
        config = parse_json(raw_config, f"{path}: model_config", budget)
        if not isinstance(config, Mapping) or "class_name" not in config:
            raise ModelFileError(f"{path}: model_config has no class_name; expected a Keras model config")
        weights_group = child_group(handle, "model_weights") or handle
        version = attr_text(attrs.get("keras_version")) or attr_text(weights_group.attrs.get("keras_version"))
        backend = attr_text(attrs.get("backend")) or attr_text(weights_group.attrs.get("backend"))
        root = build_layer(config, LegacyRoot(weights_group, budget), "model_config", budget)
        refuse_unclaimed(root, legacy_stored(weights_group), str(path))
        return ModelFile(str(path), "legacy-h5", version, backend, True, root)
    if "layer_names" in attrs or any(key.startswith("layer_names") for key in attrs):
        root = infer_legacy_weights(handle, budget)
        return ModelFile(
            str(path), "legacy-h5-weights", attr_text(attrs.get("keras_version")), attr_text(attrs.get("backend")), False, root
        )
    groups = joined_root(handle, budget, str(path))
    if child_group(groups, "layers") is not None or child_group(groups, "vars") is not None:
        root = infer_keras3_group(groups, "model", budget)
        notes = (WINDOWS_NAMES_NOTE,) if groups is not handle else ()
        return ModelFile(str(path), "keras-v3-weights", None, None, False, root, notes=notes)
    raise ModelFileError(
        f"{path} is an HDF5 file with no Keras model in it; expected a model_config or layer_names "
        "attribute (legacy .h5) or a layers/ group (Keras 3 .weights.h5)"
    )
