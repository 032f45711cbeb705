"""Keras 3 `.keras` zips (`config.json` and `model.weights.h5`, read from the zip without extracting)
and Keras 3 weights groups, named after each layer's class (`layers/gru_1/cell/vars/0`).

May import: zipfile, h5py, files/hdf5, files/tree, files/budget, model/, errors.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py

from grucli.errors import ModelFileError, first_line
from grucli.files.budget import Budget, size
from grucli.model import paths
from grucli.model.records import (
    ModelFile,
    NamedArray,
)
from grucli.model.registry import (
    is_input_layer,
    is_sequential,
)

if TYPE_CHECKING:
    import zipfile
from grucli.files.hdf5 import (
    Group,
    child_group,
    collect_vars,
    find_by_vars_name,
    refuse_unclaimed,
)
from grucli.files.tree import attr_text, build_layer, parse_json, snake_case, spec_name
from grucli.files.windows_names import NOTE as WINDOWS_NAMES_NOTE
from grucli.files.windows_names import joined_root

ZIP_SIGNATURE = b"PK\x03\x04"


def read_keras_zip(path: Path, budget: Budget) -> ModelFile:
    import zipfile  # only .keras files need it (and its bz2/lzma imports)

    try:
        return _read_zip_archive(path, zipfile, budget)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"cannot read {path}: the file is corrupt or truncated ({first_line(exc)})") from None


def _read_zip_archive(path: Path, zipfile: Any, budget: Budget) -> ModelFile:
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
        config = parse_json(read_member(path, archive, "config.json", budget.config), f"{path}: config.json", budget)
        metadata = (
            parse_json(read_member(path, archive, "metadata.json", budget.config), f"{path}: metadata.json", budget)
            if "metadata.json" in names
            else {}
        )
        member = open_member(path, archive, archive.getinfo("model.weights.h5"), budget)
        weights = h5py.File(member, "r")
        try:
            groups = joined_root(weights, budget, f"{path}: model.weights.h5")
            root = build_layer(config, Keras3Weights(groups, budget), "config.json", budget)
            refuse_unclaimed(root, keras3_stored(groups), f"{path}: model.weights.h5")
        except BaseException:
            weights.close()
            member.close()
            raise
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"{path}: config.json has no class_name; expected a Keras model config")
    return ModelFile(
        path=str(path),
        format="keras-v3",
        keras_version=attr_text(metadata.get("keras_version")) if isinstance(metadata, dict) else None,
        backend=None,
        has_config=True,
        root=root,
        closer=lambda: _close(weights, member),
        notes=(WINDOWS_NAMES_NOTE,) if groups is not weights else (),
    )


def _close(*handles: Any) -> None:
    for handle in handles:
        handle.close()


class MemberView(io.RawIOBase):
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


def read_member(path: Path, archive: zipfile.ZipFile, name: str, charge: Callable[[int, str], None]) -> bytes:
    """A zip member's bytes, charged (`Budget.config` or `Budget.array`) at its declared size, and
    never more read than that: a header that understates a bomb's size does not raise the limit."""
    info = archive.getinfo(name)
    what = f"{path}: zip member {name}"
    charge(info.file_size, what)
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise ModelFileError(f"{what} inflates past the {size(info.file_size)} its header declares; the zip is crafted or corrupt")
    return data


def open_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget) -> io.IOBase:
    if info.compress_type == 0:  # zipfile.ZIP_STORED
        with path.open("rb") as handle:
            handle.seek(info.header_offset)
            header = handle.read(30)
        if len(header) < 30 or not header.startswith(ZIP_SIGNATURE):
            raise ModelFileError(f"{path}: the zip entry for {info.filename} is damaged")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        return MemberView(path, info.header_offset + 30 + name_length + extra_length, info.file_size)
    # A compressed member must be inflated in memory (HDF5 needs random access): bounded.
    return io.BytesIO(read_member(path, archive, info.filename, budget.array))


class Keras3Weights:
    """Finds each layer's weights in a Keras 3 weights file by the saver's naming rules.

    Keras 3 names the members of a layer list by the snake_case of their class, numbering
    repeats (`gru`, `gru_1`); Sequential models leave their InputLayer out of that list.
    Every `vars` group holds the owner's variables as datasets `0`, `1`, ... in creation order.
    """

    def __init__(self, group: Group | None, budget: Budget) -> None:
        self.group = group
        self.budget = budget

    def own(self) -> tuple[NamedArray, ...]:
        return tuple(collect_vars(self.group, self.budget)) if self.group is not None else ()

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Keras3Weights]:
        group = self.group
        if group is None:
            return [Keras3Weights(None, self.budget) for _ in children]
        if children and children[0][0] == "layers":
            return self._split_layer_list(parent_class, children)
        if _is_stacked(children):
            cells = child_group(child_group(group, "cell"), "cells")
            keys = _list_member_keys([spec for _, spec in children], skip_input_layers=False)
            return [Keras3Weights(None if key is None else child_group(cells, key), self.budget) for key in keys]
        attribute = {"forward": "forward_layer", "backward": "backward_layer", "cell": "cell", "layer": "layer"}
        return [Keras3Weights(child_group(group, attribute.get(role, role)), self.budget) for role, _ in children]

    def _split_layer_list(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Keras3Weights]:
        members = child_group(self.group, "layers")
        specs = [spec for _, spec in children]
        keys = _list_member_keys(specs, skip_input_layers=is_sequential(parent_class))
        found = []
        for spec, key in zip(specs, keys):
            group = child_group(members, key) if key is not None else None
            if group is None and members is not None:
                group = find_by_vars_name(members, spec_name(spec))
            found.append(Keras3Weights(group, self.budget))
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


def keras3_stored(handle: Group) -> list[str]:
    """Every dataset under a Keras 3 weights file's `layers` group (its optimizer lives elsewhere)."""
    layers = child_group(handle, "layers")
    found: list[str] = []
    if layers is not None:
        layers.visititems(lambda name, item: found.append(item.name) if isinstance(item, h5py.Dataset) else None)
    return found
