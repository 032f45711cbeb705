"""Model files to layer trees: the only module that opens files (h5py, zipfile, json).

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
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence

import h5py
import numpy as np

from grucli.errors import ModelFileError, first_line
from grucli.files import budget, checkpoint
from grucli.files import regular as files
from grucli.files.budget import Limits
from grucli.files.checkpoint import checkpoint_prefix
from grucli.files.schema import validate_inbound_nodes, validate_layer_config
from grucli.model import paths

if TYPE_CHECKING:
    import zipfile
from grucli.model.records import (
    ModelFile,
    NamedArray,
    RawLayer,
)
from grucli.model.registry import (
    BIDIRECTIONAL_CLASS,
    LEGACY_FUNCTIONAL_CLASS,
    LISTING_CELLS,
    RNN_CLASS,
    UNKNOWN_CLASS,
    WRAPPER_CLASSES,
    Role,
    class_for_layout,
    is_input_layer,
    is_model,
    is_sequential,
    keras1_class,
    role_of,
)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
# Cells never hold sub-layers, whatever keys their config has.


def read_model(path: str | Path, limits: Limits | None = None, config_path: str | Path | None = None) -> ModelFile:
    """Read a Keras model or weights file into a `ModelFile`, without importing TensorFlow.

    `config_path` names the architecture of a weights-only file: the JSON of `model.to_json()`
    or a `.keras` zip's config.json. With it the weights get their real layers, names and classes.
    Everything read is charged to one `Budget` of `limits` (see `grucli.files.budget`)."""
    token = budget.charging(budget.Budget(limits or Limits()))
    try:
        if config_path is None:
            return _read_model(Path(path))
        return _read_with_config(Path(path), Path(config_path))
    finally:
        budget.release(token)


# --- TensorFlow checkpoints and SavedModel variables ---------------------------------------------------


def _read_saved_model(path: Path) -> ModelFile:
    """A SavedModel folder: the architecture from its Keras metadata, the weights from variables/."""
    prefix = path / "variables" / "variables"
    files.confined(prefix.parent, path)
    # TF 2.5+ keeps the Keras metadata in keras_metadata.pb; TF 2.0-2.4 kept it in saved_model.pb.
    source = path / "keras_metadata.pb" if (path / "keras_metadata.pb").exists() else path / "saved_model.pb"
    files.confined(source, path)
    try:
        if source.name == "keras_metadata.pb":
            metadata = checkpoint.saved_model_layers(path, budget.current())
        else:
            metadata = checkpoint.saved_model_pb_layers(path, budget.current())
    except OSError as exc:
        raise ModelFileError(f"cannot read {source}: {exc.strerror or exc}") from None
    root = _parse_json(metadata.get("", "{}"), f"{source}: the root object") if "" in metadata else {}
    config = _untupled(root.get("model_config")) if isinstance(root, Mapping) else None
    if not isinstance(config, Mapping) or "class_name" not in config:
        return _read_checkpoint(path, prefix, saved_model=True)  # a model without a config (subclassed): weights only
    names = {}
    members = _model_members(config)
    for object_path, text in metadata.items():
        node = _parse_json(text, f"{source}: object {object_path}")
        if isinstance(node, Mapping) and isinstance(node.get("name"), str):
            names[object_path] = node["name"]
            _check_member_metadata(node, object_path, members, source)
    variables = _checkpoint_contents(path, prefix).variables
    root_layer = _build_layer(config, _CheckpointWeights(variables, "", names), str(source))
    _refuse_unclaimed(root_layer, variables, f"{path}/variables")
    return ModelFile(str(path), "tf-savedmodel", _text(root.get("keras_version")), _text(root.get("backend")), True, root_layer)


MEMBER_OBJECT = re.compile(r"layer(?:_with_weights)?-[0-9]{1,9}")


def _model_members(config: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Every member layer of the model config and of the models nested in it, by name."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    stack = [config]
    while stack:
        spec = stack.pop()
        inner = spec.get("config")
        layers = inner.get("layers") if isinstance(inner, Mapping) else inner
        for layer in layers if isinstance(layers, list) else []:
            if isinstance(layer, Mapping):
                found.setdefault(_spec_name(layer), []).append(layer)
                stack.append(layer)
    return found


def _check_member_metadata(node: Mapping[str, Any], object_path: str, members: Mapping[str, list[Mapping[str, Any]]],
                           where: Path) -> None:
    """A model member's own metadata must describe the layer the root config has.

    tf-keras revives a SavedModel's layers from these per-layer records (and their saved graphs),
    not from the root config grucli reads: a file whose records disagree with its config (a
    Lambda or a custom class behind a harmless config) is crafted, and refused by name."""
    if not MEMBER_OBJECT.fullmatch(object_path.rsplit("/", 1)[-1]):
        return
    name, class_name = node["name"], node.get("class_name")
    candidates = members.get(name, [])
    if not candidates:
        raise ModelFileError(f"{where}: object {object_path} describes a layer {name!r} ({class_name}) that the model config "
                             "does not have; expected per-layer metadata that agrees with the model config")
    stored = _without_object_ids(_untupled(node.get("config")))
    for spec in candidates:
        same_config = "config" not in node or _without_object_ids(_untupled(spec.get("config"))) == stored
        if spec.get("class_name") == class_name and same_config:
            return
    found = candidates[0].get("class_name")
    what = f"a {class_name}" if found != class_name else f"a {class_name} with another config"
    raise ModelFileError(f"{where}: layer {name!r} is {what} in its own metadata but a {found} in the model config; "
                         "expected per-layer metadata that agrees with the model config (a crafted file)")


def _without_object_ids(value: Any) -> Any:
    """A config without the `shared_object_id` tags tf-keras adds to objects in per-layer metadata."""
    if isinstance(value, Mapping):
        return {key: _without_object_ids(item) for key, item in value.items() if key != "shared_object_id"}
    if isinstance(value, list):
        return [_without_object_ids(item) for item in value]
    return value


def _untupled(value: Any) -> Any:
    """tf-keras's SavedModel metadata writes tuples as {"class_name": "__tuple__", "items": [...]}."""
    if isinstance(value, Mapping):
        if value.get("class_name") == "__tuple__" and isinstance(value.get("items"), list):
            return [_untupled(item) for item in value["items"]]
        return {key: _untupled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untupled(item) for item in value]
    return value


@dataclass(frozen=True)
class _CheckpointContents:
    """What a checkpoint holds: its variables (object path such as `layer_with_weights-0/cell/kernel`
    → values, optimizer state skipped), its object graph and the root's stored config (None without)."""

    variables: dict[str, NamedArray]
    graph: "checkpoint.ObjectGraph | None"
    config: bytes | None


def _checkpoint_contents(path: Path, prefix: Path) -> _CheckpointContents:
    """A checkpoint's contents; the index and the graph are read once."""
    if not Path(f"{prefix}.index").exists():
        raise ModelFileError(f"{path}: no {prefix.name}.index; expected a TensorFlow checkpoint's index beside its data shards")
    folder = path if path.is_dir() else prefix.parent
    for part in (Path(f"{prefix}.index"), *prefix.parent.glob(f"{glob.escape(prefix.name)}.data-*")):
        files.confined(part, folder)
    charge = budget.current()
    try:
        entries = checkpoint.read_index(prefix, charge)
        shards = checkpoint.parse_header(entries[""])
        found = checkpoint.object_graph(prefix, shards, entries, charge)
        graph, key_paths = found if found is not None else (None, {})
        variables = {name: NamedArray(name, array) for name, array in checkpoint.read_variables(prefix, shards, entries, key_paths, charge)}
        config = checkpoint.stored_config(prefix, shards, entries, charge)
    except OSError as exc:
        raise ModelFileError(f"cannot read the checkpoint {prefix}: {exc.strerror or exc}") from None
    return _CheckpointContents(variables, graph, config)


class _CheckpointWeights:
    """The variables under one object of a checkpoint, split the way a layer's config nests:
    members of a model by the names the SavedModel metadata gives their objects, Bidirectional
    directions, an RNN's cell or stacked cells, TimeDistributed's layer."""

    def __init__(self, variables: Mapping[str, NamedArray], path: str, names: Mapping[str, str]) -> None:
        self.variables, self.path, self.names = variables, path, names

    def own(self) -> tuple[NamedArray, ...]:
        start = f"{self.path}/" if self.path else ""
        mine = [(name[len(start):], array) for name, array in self.variables.items() if name.startswith(start)]
        return tuple(array for _, array in sorted(mine, key=lambda item: _checkpoint_order(item[0])))

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list["_CheckpointWeights"]:
        return [self._child(role, spec) for role, spec in children]

    def _child(self, role: str, spec: Mapping[str, Any]) -> "_CheckpointWeights":
        if role in (paths.FORWARD, paths.BACKWARD):
            return self._at(f"{role}_layer")
        if role == paths.CELL:
            return self._at("cell")
        if paths.is_stacked_cell_role(role):
            return self._at(f"cell/cells/{role[len('cell_'):]}")
        if role == "layer":
            return self._at("layer")
        # A model's member: the object whose metadata carries its name (layers without weights have none).
        name = _spec_name(spec)
        prefix = f"{self.path}/" if self.path else ""
        for object_path, object_name in self.names.items():
            if object_name == name and object_path.startswith(prefix) and "/" not in object_path[len(prefix):]:
                return _CheckpointWeights(self.variables, object_path, self.names)
        return _CheckpointWeights({}, f"{prefix}{name}", self.names)

    def _at(self, relative: str) -> "_CheckpointWeights":
        return _CheckpointWeights(self.variables, f"{self.path}/{relative}" if self.path else relative, self.names)


def _read_checkpoint(path: Path, prefix: Path, saved_model: bool = False) -> ModelFile:
    contents = _checkpoint_contents(path, prefix)
    variables = contents.variables
    config = _stored_model_config(contents, prefix)
    if config is not None and contents.graph is not None:
        # Early TF 2 checkpoints stored the model's own config: the architecture, as --config gives it.
        return _placed(path, contents, config, f"{prefix}.index: {checkpoint.ROOT_CONFIG_KEY}", None,
                       "tf-savedmodel" if saved_model else "tf-checkpoint")
    if not variables:
        raise ModelFileError(f"{path}: the checkpoint holds no model variables (only optimizer state or counters)")
    groups: dict[str, list[tuple[tuple[int, int, int, str], NamedArray]]] = {}
    for name, array in variables.items():
        group, rest = _checkpoint_owner(name)
        groups.setdefault(group, []).append((_checkpoint_order(rest), array))
    children = tuple(
        ("layers", _infer_legacy_layer(group, tuple(weight for _, weight in sorted(weights, key=lambda item: item[0]))))
        for group, weights in sorted(groups.items(), key=lambda item: _natural_key(item[0]))
    )
    root = RawLayer("model", LEGACY_FUNCTIONAL_CLASS, {"name": "model"}, children=children, inferred=True)
    return ModelFile(str(path), "tf-savedmodel-weights" if saved_model else "tf-checkpoint", None, "tensorflow", False, root)


def _checkpoint_owner(name: str) -> tuple[str, str]:
    """(the layer a variable belongs to, the rest of its path): `layer_with_weights-1/forward_layer/
    cell/kernel` → (`layer_with_weights-1`, `forward_layer/cell/kernel`); nested models keep their chain."""
    segments = name.split("/")
    owners = [index for index, segment in enumerate(segments[:-1]) if segment.startswith(("layer_with_weights-", "layer-"))]
    cut = owners[-1] + 1 if owners else max(len(segments) - 1, 1)
    return "/".join(segments[:cut]), "/".join(segments[cut:])


def _checkpoint_order(rest: str) -> tuple[int, int, int, str]:
    """Keras's creation order inside a layer: forward before backward, cells in order, then
    kernel, recurrent kernel, bias (the index sorts keys alphabetically)."""
    segments = rest.split("/")
    direction = 1 if "backward_layer" in segments else 0
    cell = next((number for i, s in enumerate(segments[:-1]) if s == "cells" and (number := paths.index_number(segments[i + 1])) is not None), 0)
    variable = {"kernel": 0, "recurrent_kernel": 1, "bias": 2}.get(segments[-1], 3)
    return direction, cell, variable, rest


# --- architecture + weights (--config) ----------------------------------------------------------------


def _read_with_config(path: Path, config_path: Path) -> ModelFile:
    config = _read_config_file(config_path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        # A SavedModel's variables are a checkpoint, placed by its object graph like any other.
        if (path / "keras_metadata.pb").exists():
            raise ModelFileError(f"{path} holds its own model config (keras_metadata.pb); --config is for folders and files "
                                 "without one")
        return _checkpoint_with_config(path, path / "variables" / "variables", config, config_path, "tf-savedmodel")
    prefix = checkpoint_prefix(path)
    if prefix is not None:
        return _checkpoint_with_config(path, prefix, config, config_path)
    model = _read_model(path)
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
            root = _build_layer(config, _LegacyRoot(handle), where)
            _refuse_unclaimed(root, _legacy_stored(handle), str(path))
            # The Keras that saved the weights trained them: its version decides the definitions.
            version = model.keras_version or _text(config.get("keras_version"))
            built = ModelFile(str(path), "legacy-h5", version, model.backend or _text(config.get("backend")), True, root)
        else:  # keras-v3-weights: the layout of a .keras zip's model.weights.h5
            root = _build_layer(config, _Keras3Weights(handle), where)
            _refuse_unclaimed(root, _keras3_stored(handle), str(path))
            built = ModelFile(str(path), "keras-v3", _text(config.get("keras_version")), None, True, root)
    except BaseException:
        handle.close()
        raise
    return dataclasses.replace(built, closer=handle.close, config_path=str(config_path))


def _checkpoint_with_config(path: Path, prefix: Path, config: Mapping[str, Any], config_path: Path,
                            format: str = "tf-checkpoint") -> ModelFile:
    """A TensorFlow checkpoint plus its architecture: tf-keras names a model's members `layer-N`
    (N: the position in `model.layers`) in the object graph, which places each config layer."""
    contents = _checkpoint_contents(path, prefix)
    if contents.graph is None:
        raise ModelFileError(f"{path} has no object graph, which places each layer of --config {config_path}; "
                             "expected a checkpoint written by tf.keras (model.save_weights)")
    return _placed(path, contents, config, str(config_path), str(config_path), format)


def _placed(path: Path, contents: _CheckpointContents, config: Mapping[str, Any], where: str, config_path: str | None,
            format: str) -> ModelFile:
    """A checkpoint's variables given to the layers of `config`, placed by the object graph."""
    assert contents.graph is not None
    names: dict[str, str] = {}
    _place_members(contents.graph, 0, config, names, contents.variables)
    root = _build_layer(config, _CheckpointWeights(contents.variables, "", names), where)
    _refuse_unclaimed(root, contents.variables, str(path))
    version = _text(config.get("keras_version"))
    return ModelFile(str(path), format, version, "tensorflow", True, root, config_path=config_path)


def _stored_model_config(contents: _CheckpointContents, prefix: Path) -> Mapping[str, Any] | None:
    """The root's stored config when it describes a model (a layer's own is no architecture)."""
    if contents.config is None:
        return None
    config = _parse_json(contents.config, f"{prefix}.index: {checkpoint.ROOT_CONFIG_KEY}")
    if isinstance(config, Mapping) and is_model(str(config.get("class_name"))) and isinstance(config.get("config"), (Mapping, list)):
        return config
    return None


def _place_members(graph: "checkpoint.ObjectGraph", node: int, spec: Mapping[str, Any], names: dict[str, str],
                   variables: Mapping[str, Any]) -> None:
    """Name the objects of a model's members after the config's layers (nested models too)."""
    inner = spec.get("config")
    layers = inner.get("layers") if isinstance(inner, Mapping) else inner
    if not isinstance(layers, list) or not 0 <= node < len(graph.children):
        return
    members = [layer for layer in layers if isinstance(layer, Mapping)]
    numbered = {paths.index_number(name[len("layer-"):]): child for child, name in graph.children[node] if name.startswith("layer-")}
    if is_sequential(str(spec.get("class_name"))) and not _input_layer_tracked(graph, numbered, members, variables):
        members = [layer for layer in members if not is_input_layer(str(layer.get("class_name")))]
    for index, child in numbered.items():
        if index is None or index >= len(members) or child not in graph.node_paths:
            continue
        member = members[index]
        names[graph.node_paths[child]] = _spec_name(member)
        if is_model(str(member.get("class_name"))):
            _place_members(graph, child, member, names, variables)


def _input_layer_tracked(graph: "checkpoint.ObjectGraph", numbered: Mapping[int | None, int], members: list[Mapping[str, Any]],
                         variables: Mapping[str, Any]) -> bool:
    """Whether a Sequential's `layer-0` is its InputLayer: tf-keras's Sequential.layers leaves the
    InputLayer out, the early TF 2 releases tracked it, numbering every layer one on. Told apart
    by the count of numbered members and by `layer-0` holding no variable (an InputLayer has none):
    a config that merely lacks a layer must not shift the others onto the InputLayer."""
    if not members or not is_input_layer(str(members[0].get("class_name"))) or len(numbered) != len(members) or 0 not in numbered:
        return False
    first = graph.node_paths.get(numbered[0])
    return first is not None and not any(name == first or name.startswith(first + "/") for name in variables)


def _read_config_file(config_path: Path) -> Mapping[str, Any]:
    if not config_path.exists():
        raise ModelFileError(f"--config {config_path}: no such file; expected the JSON of model.to_json() or a .keras config.json")
    budget.current().config(files.regular_file_size(config_path, f"--config {config_path}"), f"--config {config_path}")
    try:
        raw = config_path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read --config {config_path}: {exc.strerror or exc}") from None
    config = _parse_json(raw, f"--config {config_path}")
    if not isinstance(config, Mapping) or "class_name" not in config or not isinstance(config.get("config"), (Mapping, list)):
        raise ModelFileError(f"--config {config_path} is not a Keras model config; expected an object with class_name and config "
                             "(the JSON of model.to_json() or a .keras config.json)")
    return config


def _read_model(path: Path) -> ModelFile:
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _read_saved_model(path)
    prefix = checkpoint_prefix(path)
    if prefix is not None:
        return _read_checkpoint(path, prefix)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file; expected a Keras model file (.keras, .h5, .hdf5)")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; expected a Keras model file (.keras, .h5, .hdf5), a SavedModel "
                             "folder (saved_model.pb and variables/) or a TensorFlow checkpoint folder")
    files.regular_file_size(path, f"{path}")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ModelFileError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        if head.startswith(ZIP_SIGNATURE):
            return _read_keras_zip(path)
        if head == HDF5_SIGNATURE:
            return _read_hdf5_path(path)
    except ModelFileError:
        raise
    except MemoryError:
        raise ModelFileError(f"cannot read {path}: not enough memory for its weights (lower sizes are expected, see --max-mb)") from None
    except (OSError, RuntimeError, struct.error, EOFError) as exc:  # what h5py and zipfile raise on damaged bytes
        raise ModelFileError(f"cannot read {path}: the file is corrupt or truncated ({first_line(exc)})") from None
    if not head:
        raise ModelFileError(f"{path} is empty; expected a Keras model file (.keras zip or HDF5)")
    raise ModelFileError(f"{path} is neither a Keras .keras zip nor an HDF5 file (.h5, .hdf5)")


# --- Keras 3 .keras zips -------------------------------------------------------------------


def _read_keras_zip(path: Path) -> ModelFile:
    import zipfile  # only .keras files need it (and its bz2/lzma imports)

    try:
        return _read_zip_archive(path, zipfile)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"cannot read {path}: the file is corrupt or truncated ({first_line(exc)})") from None


def _read_zip_archive(path: Path, zipfile: Any) -> ModelFile:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for name in sorted(names):
            # Never extracted, but a member named to escape its folder marks a crafted file.
            if name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name) or re.match(r"^[A-Za-z]:", name):
                raise ModelFileError(f"{path}: zip member {name!r} climbs out of the archive's folder; refusing a crafted file")
        if "config.json" not in names:
            raise ModelFileError(f"{path} is a zip without config.json; expected a Keras 3 .keras file")
        if "model.weights.h5" not in names:
            if "model.weights.npz" in names:
                raise ModelFileError(
                    f"{path} stores its weights as model.weights.npz, which needs pickle to read; "
                    "expected model.weights.h5 (re-save the model with the default weights format)"
                )
            raise ModelFileError(f"{path} is a zip without model.weights.h5; expected a Keras 3 .keras file")
        config = _parse_json(_read_member(path, archive, "config.json", budget.current().config), f"{path}: config.json")
        metadata = (
            _parse_json(_read_member(path, archive, "metadata.json", budget.current().config), f"{path}: metadata.json")
            if "metadata.json" in names else {}
        )
        member = _open_member(path, archive, archive.getinfo("model.weights.h5"))
        weights = h5py.File(member, "r")
        try:
            root = _build_layer(config, _Keras3Weights(weights), "config.json")
            _refuse_unclaimed(root, _keras3_stored(weights), f"{path}: model.weights.h5")
        except BaseException:
            weights.close()
            member.close()
            raise
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"{path}: config.json has no class_name; expected a Keras model config")
    return ModelFile(
        path=str(path),
        format="keras-v3",
        keras_version=_text(metadata.get("keras_version")) if isinstance(metadata, dict) else None,
        backend=None,
        has_config=True,
        root=root,
        closer=lambda: (weights.close(), member.close()),
    )


class _MemberView(io.RawIOBase):
    """A read-only window onto a stored (uncompressed) zip member: no copy, no extraction."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._offset = offset
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + position)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self._size - self._position))
        self._file.seek(self._offset + self._position)
        got = self._file.readinto(view[:wanted]) or 0
        self._position += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def _read_member(path: Path, archive: "zipfile.ZipFile", name: str, charge: Callable[[int, str], None]) -> bytes:
    """A zip member's bytes, charged (`Budget.config` or `Budget.array`) at its declared size, and
    never more read than that: a header that understates a bomb's size does not raise the limit."""
    info = archive.getinfo(name)
    what = f"{path}: zip member {name}"
    charge(info.file_size, what)
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise ModelFileError(f"{what} inflates past the {budget.size(info.file_size)} its header declares; the zip is crafted or corrupt")
    return data


def _open_member(path: Path, archive: "zipfile.ZipFile", info: "zipfile.ZipInfo") -> io.IOBase:
    if info.compress_type == 0:  # zipfile.ZIP_STORED
        with path.open("rb") as handle:
            handle.seek(info.header_offset)
            header = handle.read(30)
        if len(header) < 30 or not header.startswith(ZIP_SIGNATURE):
            raise ModelFileError(f"{path}: the zip entry for {info.filename} is damaged")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        return _MemberView(path, info.header_offset + 30 + name_length + extra_length, info.file_size)
    # A compressed member must be inflated in memory (HDF5 needs random access): bounded.
    return io.BytesIO(_read_member(path, archive, info.filename, budget.current().array))


MAX_CONFIG_DEPTH = 200  # real configs nest a few dozen levels; the walkers below recurse per level


def _parse_json(raw: bytes | str, where: str) -> Any:
    budget.current().json(raw, where)
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{where} is not valid JSON ({first_line(exc)})") from None
    except RecursionError:
        raise ModelFileError(f"{where} nests deeper than JSON can be read; expected a Keras config") from None
    if _depth(document) > MAX_CONFIG_DEPTH:
        raise ModelFileError(f"{where} nests more than {MAX_CONFIG_DEPTH} levels deep; expected a Keras config")
    return document


def _depth(document: Any) -> int:
    """How deeply lists and objects nest, counted without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_CONFIG_DEPTH:
                stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


class _Keras3Weights:
    """Finds each layer's weights in a Keras 3 weights file by the saver's naming rules.

    Keras 3 names the members of a layer list by the snake_case of their class, numbering
    repeats (`gru`, `gru_1`); Sequential models leave their InputLayer out of that list.
    Every `vars` group holds the owner's variables as datasets `0`, `1`, ... in creation order.
    """

    def __init__(self, group: h5py.Group | None) -> None:
        self.group = group

    def own(self) -> tuple[NamedArray, ...]:
        return tuple(_collect_vars(self.group)) if self.group is not None else ()

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list["_Keras3Weights"]:
        group = self.group
        if group is None:
            return [_Keras3Weights(None) for _ in children]
        if children and children[0][0] == "layers":
            return self._split_layer_list(parent_class, children)
        if _is_stacked(children):
            cells = _child(_child(group, "cell"), "cells")
            keys = _list_member_keys([spec for _, spec in children], skip_input_layers=False)
            return [_Keras3Weights(_child(cells, key)) for key in keys]
        attribute = {"forward": "forward_layer", "backward": "backward_layer", "cell": "cell", "layer": "layer"}
        return [_Keras3Weights(_child(group, attribute.get(role, role))) for role, _ in children]

    def _split_layer_list(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list["_Keras3Weights"]:
        members = _child(self.group, "layers")
        specs = [spec for _, spec in children]
        keys = _list_member_keys(specs, skip_input_layers=is_sequential(parent_class))
        found = []
        for spec, key in zip(specs, keys):
            group = _child(members, key) if key is not None else None
            if group is None and members is not None:
                group = _find_by_vars_name(members, _spec_name(spec))
            found.append(_Keras3Weights(group))
        return found


def _is_stacked(children: Sequence[tuple[str, Mapping[str, Any]]]) -> bool:
    return bool(children) and all(paths.is_stacked_cell_role(role) for role, _ in children)


def _list_member_keys(specs: Sequence[Mapping[str, Any]], skip_input_layers: bool) -> list[str | None]:
    used: dict[str, int] = {}
    keys: list[str | None] = []
    for spec in specs:
        class_name = str(spec.get("class_name", ""))
        if skip_input_layers and is_input_layer(class_name):
            keys.append(None)
            continue
        base = snake_case(class_name)
        if base in used:
            used[base] += 1
            keys.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            keys.append(base)
    return keys


def snake_case(name: str) -> str:
    """Keras's `to_snake_case`, which names the groups of a Keras 3 weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _get(group: h5py.Group, key: str) -> h5py.Group | h5py.Dataset | None:
    """`group[key]`, refusing links that leave the file (HDF5 external links)."""
    try:
        link = group.get(key, getlink=True)
    except (KeyError, ValueError):
        return None
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise ModelFileError(
            f"{group.name}/{key} links to another file ({link.filename}); grucli never follows links out of the model file"
        )
    return group.get(key)


def _child(group: h5py.Group | None, key: str) -> h5py.Group | None:
    if group is None or key not in group:
        return None
    item = _get(group, key)
    return item if isinstance(item, h5py.Group) else None


def _find_by_vars_name(members: h5py.Group, name: str) -> h5py.Group | None:
    # Since Keras 3.6 each vars group carries the layer's user-visible name.
    for key in _member_names(members):
        candidate = _child(members, key)
        vars_group = _child(candidate, "vars")
        if vars_group is not None and _text(vars_group.attrs.get("name")) == name:
            return candidate
    return None


def _member_names(group: h5py.Group) -> list[str]:
    """A group's member names; h5py hands back bytes for a name that is not UTF-8 (a damaged file)."""
    names = list(group)
    for name in names:
        if not isinstance(name, str):
            raise ModelFileError(f"{group.name} has a member whose name is not text ({name!r}); the file is corrupt")
    return names


def _collect_vars(group: h5py.Group, depth: int = 0) -> Iterable[NamedArray]:
    """The group's own `vars/0..n` in numeric order, then its sub-objects' (alphabetical)."""
    if depth > MAX_CONFIG_DEPTH:
        raise ModelFileError(f"{group.name[:60]}… nests groups more than {MAX_CONFIG_DEPTH} deep; expected a Keras weights file")
    vars_group = _child(group, "vars")
    if vars_group is not None:
        for key in sorted((k for k in _member_names(vars_group) if paths.index_number(k) is not None), key=int):
            item = _get(vars_group, key)
            if isinstance(item, h5py.Dataset):
                yield NamedArray(item.name.lstrip("/"), _read_dataset(item))
    for key in sorted(_member_names(group)):
        sub = _child(group, key)
        if key != "vars" and sub is not None:
            yield from _collect_vars(sub, depth + 1)


class LazyDataset:
    """A weight array still in the file: shape and dtype now, values when sliced or converted.

    Reading waits until a consumer asks, and then only for what it asks (a gate's columns, a
    block of rows), so a big model never needs all its arrays in memory at once. The file
    stays open as long as the `ModelFile` that holds it.
    """

    def __init__(self, dataset: h5py.Dataset, bfloat16: bool) -> None:
        self._dataset = dataset
        self._bfloat16 = bfloat16
        self.shape: tuple[int, ...] = tuple(dataset.shape)
        self.dtype = np.dtype(np.float32) if bfloat16 else dataset.dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize  # as read into memory (bfloat16 as float32)
        self.name = dataset.name

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            values = np.asarray(self._dataset[key])
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise ModelFileError(f"cannot read dataset {self.name}: the file is corrupt or truncated ({first_line(exc)})") from None
        if self._bfloat16:
            # Keras 3 stores bfloat16 as opaque 2-byte values: the top half of a float32.
            return (values.view("<u2").astype(np.uint32) << 16).view(np.float32)
        return values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[()]
        return values if dtype is None else values.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def astype(self, dtype: Any) -> np.ndarray:
        return self[()].astype(dtype)


def _read_dataset(dataset: h5py.Dataset) -> LazyDataset:
    """A weight array, after checking what it declares: size, storage inside the file, numbers."""
    if dataset.is_virtual or dataset.external:
        raise ModelFileError(f"dataset {dataset.name} keeps its data in other files; grucli reads only the model file itself")
    dtype = dataset.dtype
    budget.check_shape(tuple(dataset.shape or ()), f"dataset {dataset.name}")
    declared = int(np.prod(dataset.shape, dtype=np.float64)) * dtype.itemsize if dataset.shape is not None else 0
    budget.current().array(declared, f"dataset {dataset.name} declares shape {dataset.shape}")
    bfloat16 = _text(dataset.attrs.get("dtype")) == "bfloat16" or (dtype.kind == "V" and dtype.itemsize == 2)
    if not bfloat16 and dtype.kind not in "fiub":
        raise ModelFileError(f"dataset {dataset.name} holds {dtype} values; expected numbers")
    return LazyDataset(dataset, bfloat16)


# --- every stored weight taken by a layer ------------------------------------------------------------


def _refuse_unclaimed(root: RawLayer, stored: Iterable[str], where: str) -> None:
    """Weights the config gives to no layer mean config and weights disagree: a config that lacks a
    layer would otherwise hand the following layers' weights along one place (Keras 3 finds them by
    class and position), so such a file is refused, naming the first weight left over."""
    claimed = {_weight_id(weight) for weight in root.all_weights()}
    for name in stored:
        if name not in claimed:
            raise ModelFileError(f"{where}: the weights hold {name}, which no layer of the config takes; expected a config "
                                 "that matches the weights (a layer missing from the config would shift the others' weights)")


def _weight_id(weight: NamedArray) -> str:
    """HDF5 weights by their dataset's path in the file; checkpoint variables by their object path."""
    return weight.array.name if isinstance(weight.array, LazyDataset) else weight.name


def _keras3_stored(handle: h5py.Group) -> list[str]:
    """Every dataset under a Keras 3 weights file's `layers` group (its optimizer lives elsewhere)."""
    layers = _child(handle, "layers")
    found: list[str] = []
    if layers is not None:
        layers.visititems(lambda name, item: found.append(item.name) if isinstance(item, h5py.Dataset) else None)
    return found


def _legacy_stored(group: h5py.Group) -> list[str]:
    """Every weight a legacy file lists, by layer (`layer_names`) and weight (`weight_names`)."""
    found = []
    for name in read_list_attribute(group, "layer_names"):
        layer = _child(group, name)
        if layer is not None:
            found += [f"{layer.name}/{weight}" for weight in read_list_attribute(layer, "weight_names")]
    return found


# --- config trees ----------------------------------------------------------------------------


class _WeightSource(Protocol):
    """What `_build_layer` asks of a weights layout (Keras 3 groups or legacy flat lists)."""

    def own(self) -> tuple[NamedArray, ...]: ...

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> Sequence["_WeightSource"]: ...


def _build_layer(spec: Any, source: _WeightSource, where: str) -> RawLayer:
    """A layer (and its sub-layers) from its config; `where` is its JSON path, named in errors."""
    if not isinstance(spec, Mapping):
        raise ModelFileError(f"{where}: a layer config is a {type(spec).__name__}, expected a JSON object")
    class_name = str(spec.get("class_name", "?"))
    module = spec.get("module")
    config = spec.get("config", {})
    config_map: Mapping[str, Any] = config if isinstance(config, Mapping) else {"layers": config}
    budget.current().layer(where)
    validate_layer_config(config_map, f"{where}.config")
    _validate_graph(config_map, f"{where}.config")
    name = _spec_name(spec)
    children = child_specs(class_name, config)
    if not children and class_name in WRAPPER_CLASSES:
        key = WRAPPER_CLASSES[class_name]
        raise ModelFileError(f"{where}.config.{key}: a {class_name} wraps a layer, and its config holds none there "
                             f"(found {_shown_value(config_map.get(key))}); expected the wrapped {key}'s config, an object")
    common = {"name": name, "class_name": class_name, "config": config_map, "module": module if isinstance(module, str) else None}
    if not children:
        return RawLayer(**common, weights=source.own())
    sources = source.split(class_name, [(role, child) for role, child, _ in children])
    built = tuple(
        (role, _build_layer(child, child_source, f"{where}.{suffix}")) for (role, child, suffix), child_source in zip(children, sources)
    )
    return RawLayer(**common, children=built)


def _shown_value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _validate_graph(config: Mapping[str, Any], where: str) -> None:
    """The wiring of a functional model: each entry's inbound nodes."""
    layers = config.get("layers")
    if not isinstance(layers, list):
        return
    for index, entry in enumerate(layers):
        if isinstance(entry, Mapping) and "inbound_nodes" in entry:
            validate_inbound_nodes(entry["inbound_nodes"], f"{where}.layers[{index}].inbound_nodes")


def _spec_name(spec: Mapping[str, Any]) -> str:
    config = spec.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("name"), str):
        return config["name"]
    return snake_case(str(spec.get("class_name", "layer")))


def child_specs(class_name: str, config: Any) -> list[tuple[str, Mapping[str, Any], str]]:
    """The sub-layer configs of a container layer: (role, config, JSON path below the layer)."""
    if isinstance(config, list):  # Keras 2.1 Sequential: the config is the bare layer list
        return [("layers", layer, f"config[{i}]") for i, layer in enumerate(config) if isinstance(layer, Mapping)]
    if not isinstance(config, Mapping):
        return []
    role = role_of(class_name)
    if role is Role.MODEL or (isinstance(config.get("layers"), list) and class_name not in LISTING_CELLS):
        layers = config.get("layers", [])
        return [("layers", layer, f"config.layers[{i}]") for i, layer in enumerate(layers) if isinstance(layer, Mapping)]
    if role is Role.BIDIRECTIONAL and isinstance(config.get("layer"), Mapping):
        forward = config["layer"]
        backward = config.get("backward_layer")
        if not isinstance(backward, Mapping):
            return [(paths.FORWARD, forward, "config.layer"), (paths.BACKWARD, _mirrored(forward), "config.layer")]
        return [(paths.FORWARD, forward, "config.layer"), (paths.BACKWARD, backward, "config.backward_layer")]
    if role is Role.RNN:
        cell = config.get("cell")
        if isinstance(cell, list):
            cells, where = cell, "config.cell"
        elif isinstance(cell, Mapping) and cell.get("class_name") == "StackedRNNCells":
            inner = cell.get("config")
            cells, where = (inner.get("cells", []) if isinstance(inner, Mapping) else []), "config.cell.config.cells"
        else:
            return [("cell", cell, "config.cell")] if isinstance(cell, Mapping) else []
        if not isinstance(cells, list):
            return []
        return [(paths.stacked_cell_role(index), c, f"{where}[{index}]") for index, c in enumerate(cells) if isinstance(c, Mapping)]
    if role is Role.TIME_DISTRIBUTED and isinstance(config.get("layer"), Mapping):
        return [("layer", config["layer"], "config.layer")]
    return []


def _mirrored(forward: Mapping[str, Any]) -> Mapping[str, Any]:
    """The backward layer Bidirectional makes when none is given: same config, other direction."""
    inner = forward.get("config")
    config = dict(inner) if isinstance(inner, Mapping) else {}
    config["go_backwards"] = not config.get("go_backwards", False)
    config["name"] = "backward_" + str(config.get("name", "layer"))
    return {**forward, "config": config}


# --- legacy HDF5 -------------------------------------------------------------------------------


def _read_hdf5_path(path: Path) -> ModelFile:
    handle = h5py.File(path, "r")
    try:
        model = _read_hdf5(path, handle)
    except BaseException:
        handle.close()
        raise
    return dataclasses.replace(model, closer=handle.close)


def _read_hdf5(path: Path, handle: h5py.File) -> ModelFile:
    attrs = handle.attrs
    if "model_config" in attrs:
        raw_config = _text(attrs["model_config"]) or "null"
        budget.current().config(len(raw_config), f"{path}: model_config")
        config = _parse_json(raw_config, f"{path}: model_config")
        if not isinstance(config, Mapping) or "class_name" not in config:
            raise ModelFileError(f"{path}: model_config has no class_name; expected a Keras model config")
        weights_group = _child(handle, "model_weights") or handle
        version = _text(attrs.get("keras_version")) or _text(weights_group.attrs.get("keras_version"))
        backend = _text(attrs.get("backend")) or _text(weights_group.attrs.get("backend"))
        root = _build_layer(config, _LegacyRoot(weights_group), "model_config")
        _refuse_unclaimed(root, _legacy_stored(weights_group), str(path))
        return ModelFile(str(path), "legacy-h5", version, backend, True, root)
    if "layer_names" in attrs or any(key.startswith("layer_names") for key in attrs):
        root = _infer_legacy_weights(handle)
        return ModelFile(str(path), "legacy-h5-weights", _text(attrs.get("keras_version")), _text(attrs.get("backend")), False, root)
    if _child(handle, "layers") is not None or _child(handle, "vars") is not None:
        root = _infer_keras3_group(handle, "model")
        return ModelFile(str(path), "keras-v3-weights", None, None, False, root)
    raise ModelFileError(
        f"{path} is an HDF5 file with no Keras model in it; expected a model_config or layer_names "
        "attribute (legacy .h5) or a layers/ group (Keras 3 .weights.h5)"
    )


def read_list_attribute(group: h5py.Group, name: str) -> list[str]:
    """A list attribute as strings, joining the `name0`, `name1`, ... chunks of long lists."""
    if name in group.attrs:
        values = group.attrs[name]
    else:
        values = []
        index = 0
        while f"{name}{index}" in group.attrs:
            values.extend(list(group.attrs[f"{name}{index}"]))
            index += 1
    return [str(_text(value)) for value in np.atleast_1d(np.asarray(values, dtype=object)) if _text(value) is not None]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    if isinstance(value, (str, np.str_)):
        # h5py hands invalid UTF-8 back as surrogate escapes, which cannot be printed.
        return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, float) and np.isnan(value):
        return None
    return str(value)


def _legacy_layer_weights(group: h5py.Group | None) -> tuple[NamedArray, ...]:
    if group is None:
        return ()
    arrays = []
    for name in read_list_attribute(group, "weight_names"):
        item = _get(group, name) if name else None
        if not isinstance(item, h5py.Dataset):
            raise ModelFileError(f"weight {name!r} is listed in {group.name} but not stored there")
        arrays.append(NamedArray(name, _read_dataset(item)))
    return tuple(arrays)


class _LegacyRoot:
    """The top-level model of a legacy file: each layer's weights are in its own group."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group

    def own(self) -> tuple[NamedArray, ...]:
        return ()

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list["_LegacyWeights"]:
        return [_LegacyWeights(_legacy_layer_weights(_child(self.group, _spec_name(spec)))) for _, spec in children]


class _LegacyWeights:
    """A flat list of weights handed down a layer's subtree by weight names, shapes and order."""

    def __init__(self, weights: tuple[NamedArray, ...]) -> None:
        self.weights = weights

    def own(self) -> tuple[NamedArray, ...]:
        return self.weights

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list["_LegacyWeights"]:
        if role_of(parent_class) is Role.BIDIRECTIONAL:
            half = len(self.weights) // 2
            return [_LegacyWeights(self.weights[:half]), _LegacyWeights(self.weights[half:])]
        if len(children) == 1:
            return [_LegacyWeights(self.weights)]
        return [_LegacyWeights(part) for part in _split_by_owner(self.weights, [_spec_name(s) for _, s in children], [s for _, s in children])]


def _segments(weight_name: str) -> list[str]:
    return [segment.split(":")[0] for segment in weight_name.split("/")]


def _split_by_owner(
    weights: tuple[NamedArray, ...], names: list[str], specs: list[Mapping[str, Any]]
) -> list[tuple[NamedArray, ...]]:
    """Give each sub-layer the weights whose names mention it, else consume them in order."""
    parts: list[list[NamedArray]] = [[] for _ in names]
    unclaimed = []
    for weight in weights:
        segments = _segments(weight.name)
        owners = [index for index, name in enumerate(names) if name in segments[:-1]]
        if owners:
            parts[owners[0]].append(weight)
        else:
            unclaimed.append(weight)
    if unclaimed and not any(parts):
        # Names without owners (old cell stacks): consume in order, a known count per cell.
        queue = list(unclaimed)
        for index, spec in enumerate(specs):
            count = _expected_weight_count(spec)
            parts[index], queue = queue[:count], queue[count:]
    return [tuple(part) for part in parts]


def _expected_weight_count(spec: Mapping[str, Any]) -> int:
    config = spec.get("config", {})
    if is_input_layer(str(spec.get("class_name"))):
        return 0
    return 3 if not isinstance(config, Mapping) or config.get("use_bias", True) else 2


# --- files without config: infer the tree --------------------------------------------------------


def _infer_keras3_group(group: h5py.Group, key: str) -> RawLayer:
    """Infer a layer subtree from a Keras 3 weights group (no config to go by)."""
    budget.current().layer(f"{group.name}")
    vars_group = _child(group, "vars")
    name = _text(vars_group.attrs.get("name")) if vars_group is not None else None
    name = name or key
    layers = _child(group, "layers")
    if layers is not None:
        members = [(k, _child(layers, k)) for k in sorted(_member_names(layers))]
        children = tuple(("layers", _infer_keras3_group(member, k)) for k, member in members if member is not None)
        return RawLayer(name, LEGACY_FUNCTIONAL_CLASS, {"name": name}, children=children, inferred=True)
    forward, backward = _child(group, "forward_layer"), _child(group, "backward_layer")
    if forward is not None and backward is not None:
        children = ((paths.FORWARD, _infer_keras3_group(forward, "forward_layer")), (paths.BACKWARD, _infer_keras3_group(backward, "backward_layer")))
        return RawLayer(name, BIDIRECTIONAL_CLASS, {"name": name}, children=children, inferred=True)
    cells = _child(_child(group, "cell"), "cells")
    if cells is not None:
        members = [(k, _child(cells, k)) for k in sorted(_member_names(cells), key=_natural_key)]
        children = tuple((paths.stacked_cell_role(index), _infer_keras3_group(member, k)) for index, (k, member) in enumerate(members) if member is not None)
        return RawLayer(name, RNN_CLASS, {"name": name}, children=children, inferred=True)
    weights = tuple(_collect_vars(group))
    return RawLayer(name, infer_class(weights) or UNKNOWN_CLASS, {"name": name}, weights=weights, inferred=True)


def _natural_key(key: str) -> tuple[str, int]:
    # `gru_cell`, `gru_cell_1`, `gru_cell_2`: creation order, which is the stacking order.
    match = re.fullmatch(r"(.*?)(?:_([0-9]{1,9}))?", key)
    assert match is not None
    return (match.group(1), int(match.group(2) or -1))


def _infer_legacy_weights(handle: h5py.File) -> RawLayer:
    children = []
    for name in read_list_attribute(handle, "layer_names"):
        weights = _legacy_layer_weights(_child(handle, name))
        children.append(("layers", _infer_legacy_layer(name, weights)))
    return RawLayer("model", LEGACY_FUNCTIONAL_CLASS, {"name": "model"}, children=tuple(children), inferred=True)


def _infer_legacy_layer(name: str, weights: tuple[NamedArray, ...]) -> RawLayer:
    budget.current().layer(f"layer {name}")
    directions = [_direction(w.name) for w in weights]
    if weights and "forward" in directions and "backward" in directions and len(weights) % 2 == 0:
        half = len(weights) // 2
        children = (
            (paths.FORWARD, _infer_legacy_layer(f"forward_{name}", weights[:half])),
            (paths.BACKWARD, _infer_legacy_layer(f"backward_{name}", weights[half:])),
        )
        return RawLayer(name, BIDIRECTIONAL_CLASS, {"name": name}, children=children, inferred=True)
    return RawLayer(name, infer_class(weights) or UNKNOWN_CLASS, {"name": name}, weights=weights, inferred=True)


def _direction(weight_name: str) -> str | None:
    for segment in _segments(weight_name):
        if segment.startswith("forward_"):
            return "forward"
        if segment.startswith("backward_"):
            return "backward"
    return None


def infer_class(weights: Sequence[NamedArray]) -> str | None:
    """The recurrent layer class that stores weights of these shapes, or None.

    kernel (..., in, k*u), recurrent kernel (..., u, k*u): k gate blocks give the family; a kernel
    window in front makes it ConvLSTM; 9 or 12 per-gate arrays are Keras 1; a bias twice the usual
    length is a CuDNN layer (model/registry.py knows which family is which).
    """
    shapes = [tuple(w.array.shape) for w in weights]
    keras1 = keras1_class(len(shapes))
    if keras1 is not None and all(len(s) in (1, 2) for s in shapes):
        return keras1
    if len(shapes) not in (2, 3):
        return None
    kernel, recurrent = shapes[0], shapes[1]
    if len(kernel) < 2 or len(recurrent) != len(kernel) or recurrent[-1] != kernel[-1]:
        return None
    units = recurrent[-2]
    if units == 0 or recurrent[-1] % units:
        return None
    gate_count = recurrent[-1] // units
    bias = shapes[2] if len(shapes) == 3 else None
    return class_for_layout(gate_count, len(kernel) - 2, bias == (2 * gate_count * units,))
