"""TensorFlow checkpoints and SavedModel folders: variables from the checkpoint table, placed on the
layers of the config (stored in the checkpoint, in keras_metadata.pb, or given with --config).

May import: files/checkpoint (the table format), files/hdf5, files/inference, files/tree, model/, errors.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grucli.errors import ModelFileError
from grucli.files import checkpoint
from grucli.files import regular as files
from grucli.files.budget import Budget
from grucli.files.hdf5 import refuse_unclaimed
from grucli.files.inference import infer_legacy_layer, natural_key
from grucli.files.tree import attr_text, build_layer, parse_json, spec_name
from grucli.model import paths
from grucli.model.records import (
    ModelFile,
    NamedArray,
    RawLayer,
)
from grucli.model.registry import (
    LEGACY_FUNCTIONAL_CLASS,
    is_input_layer,
    is_model,
    is_sequential,
)


def read_saved_model(path: Path, budget: Budget) -> ModelFile:
    """A SavedModel folder: the architecture from its Keras metadata, the weights from variables/."""
    prefix = path / "variables" / "variables"
    files.confined(prefix.parent, path)
    # TF 2.5+ keeps the Keras metadata in keras_metadata.pb; TF 2.0-2.4 kept it in saved_model.pb.
    source = path / "keras_metadata.pb" if (path / "keras_metadata.pb").exists() else path / "saved_model.pb"
    files.confined(source, path)
    try:
        if source.name == "keras_metadata.pb":
            metadata = checkpoint.saved_model_layers(path, budget)
        else:
            metadata = checkpoint.saved_model_pb_layers(path, budget)
    except OSError as exc:
        raise ModelFileError(f"cannot read {source}: {exc.strerror or exc}") from None
    root = parse_json(metadata.get("", "{}"), f"{source}: the root object", budget) if "" in metadata else {}
    config = _untupled(root.get("model_config")) if isinstance(root, Mapping) else None
    if not isinstance(config, Mapping) or "class_name" not in config:
        return read_checkpoint(path, prefix, budget, saved_model=True)  # a model without a config (subclassed): weights only
    names = {}
    members = _model_members(config)
    for object_path, text in metadata.items():
        node = parse_json(text, f"{source}: object {object_path}", budget)
        if isinstance(node, Mapping) and isinstance(node.get("name"), str):
            names[object_path] = node["name"]
            _check_member_metadata(node, object_path, members, source)
    variables = _checkpoint_contents(path, prefix, budget).variables
    root_layer = build_layer(config, _CheckpointWeights(variables, "", names), str(source), budget)
    refuse_unclaimed(root_layer, variables, f"{path}/variables")
    return ModelFile(str(path), "tf-savedmodel", attr_text(root.get("keras_version")), attr_text(root.get("backend")), True, root_layer)


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
                found.setdefault(spec_name(layer), []).append(layer)
                stack.append(layer)
    return found


def _check_member_metadata(node: Mapping[str, Any], object_path: str, members: Mapping[str, list[Mapping[str, Any]]], where: Path) -> None:
    """A model member's own metadata must describe the layer the root config has.

    tf-keras revives a SavedModel's layers from these per-layer records (and their saved graphs),
    not from the root config grucli reads: a file whose records disagree with its config (a
    Lambda or a custom class behind a harmless config) is crafted, and refused by name."""
    if not MEMBER_OBJECT.fullmatch(object_path.rsplit("/", 1)[-1]):
        return
    name, class_name = node["name"], node.get("class_name")
    candidates = members.get(name, [])
    if not candidates:
        raise ModelFileError(
            f"{where}: object {object_path} describes a layer {name!r} ({class_name}) that the model config "
            "does not have; expected per-layer metadata that agrees with the model config"
        )
    stored = _without_object_ids(_untupled(node.get("config")))
    for spec in candidates:
        same_config = "config" not in node or _without_object_ids(_untupled(spec.get("config"))) == stored
        if spec.get("class_name") == class_name and same_config:
            return
    found = candidates[0].get("class_name")
    what = f"a {class_name}" if found != class_name else f"a {class_name} with another config"
    raise ModelFileError(
        f"{where}: layer {name!r} is {what} in its own metadata but a {found} in the model config; "
        "expected per-layer metadata that agrees with the model config (a crafted file)"
    )


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
    graph: checkpoint.ObjectGraph | None
    config: bytes | None


def _checkpoint_contents(path: Path, prefix: Path, charge: Budget) -> _CheckpointContents:
    """A checkpoint's contents; the index and the graph are read once."""
    if not Path(f"{prefix}.index").exists():
        raise ModelFileError(f"{path}: no {prefix.name}.index; expected a TensorFlow checkpoint's index beside its data shards")
    folder = path if path.is_dir() else prefix.parent
    for part in (Path(f"{prefix}.index"), *prefix.parent.glob(f"{glob.escape(prefix.name)}.data-*")):
        files.confined(part, folder)
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
        mine = [(name[len(start) :], array) for name, array in self.variables.items() if name.startswith(start)]
        return tuple(array for _, array in sorted(mine, key=lambda item: _checkpoint_order(item[0])))

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list[_CheckpointWeights]:
        return [self._child(role, spec) for role, spec in children]

    def _child(self, role: str, spec: Mapping[str, Any]) -> _CheckpointWeights:
        if role in (paths.FORWARD, paths.BACKWARD):
            return self._at(f"{role}_layer")
        if role == paths.CELL:
            return self._at("cell")
        if paths.is_stacked_cell_role(role):
            return self._at(f"cell/cells/{role[len('cell_') :]}")
        if role == "layer":
            return self._at("layer")
        # A model's member: the object whose metadata carries its name (layers without weights have none).
        name = spec_name(spec)
        prefix = f"{self.path}/" if self.path else ""
        for object_path, object_name in self.names.items():
            if object_name == name and object_path.startswith(prefix) and "/" not in object_path[len(prefix) :]:
                return _CheckpointWeights(self.variables, object_path, self.names)
        return _CheckpointWeights({}, f"{prefix}{name}", self.names)

    def _at(self, relative: str) -> _CheckpointWeights:
        return _CheckpointWeights(self.variables, f"{self.path}/{relative}" if self.path else relative, self.names)


def read_checkpoint(path: Path, prefix: Path, budget: Budget, saved_model: bool = False) -> ModelFile:
    contents = _checkpoint_contents(path, prefix, budget)
    variables = contents.variables
    config = _stored_model_config(contents, prefix, budget)
    if config is not None and contents.graph is not None:
        # Early TF 2 checkpoints stored the model's own config: the architecture, as --config gives it.
        return _placed(
            path,
            contents,
            config,
            f"{prefix}.index: {checkpoint.ROOT_CONFIG_KEY}",
            None,
            "tf-savedmodel" if saved_model else "tf-checkpoint",
            budget,
        )
    if not variables:
        raise ModelFileError(f"{path}: the checkpoint holds no model variables (only optimizer state or counters)")
    groups: dict[str, list[tuple[tuple[int, int, int, str], NamedArray]]] = {}
    for name, array in variables.items():
        group, rest = _checkpoint_owner(name)
        groups.setdefault(group, []).append((_checkpoint_order(rest), array))
    children = tuple(
        ("layers", infer_legacy_layer(group, tuple(weight for _, weight in sorted(weights, key=lambda item: item[0])), budget))
        for group, weights in sorted(groups.items(), key=lambda item: natural_key(item[0]))
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
    cell = next(
        (number for i, s in enumerate(segments[:-1]) if s == "cells" and (number := paths.index_number(segments[i + 1])) is not None), 0
    )
    variable = {"kernel": 0, "recurrent_kernel": 1, "bias": 2}.get(segments[-1], 3)
    return direction, cell, variable, rest


def checkpoint_with_config(
    path: Path, prefix: Path, config: Mapping[str, Any], config_path: Path, budget: Budget, format: str = "tf-checkpoint"
) -> ModelFile:
    """A TensorFlow checkpoint plus its architecture: tf-keras names a model's members `layer-N`
    (N: the position in `model.layers`) in the object graph, which places each config layer."""
    contents = _checkpoint_contents(path, prefix, budget)
    if contents.graph is None:
        raise ModelFileError(
            f"{path} has no object graph, which places each layer of --config {config_path}; "
            "expected a checkpoint written by tf.keras (model.save_weights)"
        )
    return _placed(path, contents, config, str(config_path), str(config_path), format, budget)


def _placed(
    path: Path, contents: _CheckpointContents, config: Mapping[str, Any], where: str, config_path: str | None, format: str, budget: Budget
) -> ModelFile:
    """A checkpoint's variables given to the layers of `config`, placed by the object graph."""
    assert contents.graph is not None
    names: dict[str, str] = {}
    _place_members(contents.graph, 0, config, names, contents.variables)
    root = build_layer(config, _CheckpointWeights(contents.variables, "", names), where, budget)
    refuse_unclaimed(root, contents.variables, str(path))
    # A checkpoint records no Keras version: the config's says which Keras wrote the architecture.
    version = attr_text(config.get("keras_version"))
    return ModelFile(
        str(path),
        format,
        version,
        "tensorflow",
        True,
        root,
        config_path=config_path,
        version_source="config" if config_path is not None and version else "file",
    )


def _stored_model_config(contents: _CheckpointContents, prefix: Path, budget: Budget) -> Mapping[str, Any] | None:
    """The root's stored config when it describes a model (a layer's own is no architecture)."""
    if contents.config is None:
        return None
    config = parse_json(contents.config, f"{prefix}.index: {checkpoint.ROOT_CONFIG_KEY}", budget)
    if isinstance(config, Mapping) and is_model(str(config.get("class_name"))) and isinstance(config.get("config"), (Mapping, list)):
        return config
    return None


def _place_members(
    graph: checkpoint.ObjectGraph, node: int, spec: Mapping[str, Any], names: dict[str, str], variables: Mapping[str, Any]
) -> None:
    """Name the objects of a model's members after the config's layers (nested models too)."""
    inner = spec.get("config")
    layers = inner.get("layers") if isinstance(inner, Mapping) else inner
    if not isinstance(layers, list) or not 0 <= node < len(graph.children):
        return
    members = [layer for layer in layers if isinstance(layer, Mapping)]
    numbered = {paths.index_number(name[len("layer-") :]): child for child, name in graph.children[node] if name.startswith("layer-")}
    if is_sequential(str(spec.get("class_name"))) and not _input_layer_tracked(graph, numbered, members, variables):
        members = [layer for layer in members if not is_input_layer(str(layer.get("class_name")))]
    for index, child in numbered.items():
        if index is None or index >= len(members) or child not in graph.node_paths:
            continue
        member = members[index]
        names[graph.node_paths[child]] = spec_name(member)
        if is_model(str(member.get("class_name"))):
            _place_members(graph, child, member, names, variables)


def _input_layer_tracked(
    graph: checkpoint.ObjectGraph, numbered: Mapping[int | None, int], members: list[Mapping[str, Any]], variables: Mapping[str, Any]
) -> bool:
    """Whether a Sequential's `layer-0` is its InputLayer: tf-keras's Sequential.layers leaves the
    InputLayer out, the early TF 2 releases tracked it, numbering every layer one on. Told apart
    by the count of numbered members and by `layer-0` holding no variable (an InputLayer has none):
    a config that merely lacks a layer must not shift the others onto the InputLayer."""
    if not members or not is_input_layer(str(members[0].get("class_name"))) or len(numbered) != len(members) or 0 not in numbered:
        return False
    first = graph.node_paths.get(numbered[0])
    return first is not None and not any(name == first or name.startswith(first + "/") for name in variables)
