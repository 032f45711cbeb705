"""HDF5 files as Keras writes them: lazy datasets, group lookups, and the legacy (Keras 1/2, tf.keras)
layout of `layer_names` / `weight_names` attributes, with each weight given to the layer that owns it.

May import: h5py, numpy, files/tree, files/budget, model/, errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import h5py
import numpy as np

from grucli.errors import ModelFileError, first_line
from grucli.files.budget import Budget, check_shape
from grucli.files.tree import MAX_CONFIG_DEPTH, attr_text, spec_name
from grucli.files.windows_names import JoinedGroup
from grucli.model import paths
from grucli.model.records import (
    NamedArray,
    RawLayer,
)
from grucli.model.registry import (
    Role,
    is_input_layer,
    role_of,
)

Group: TypeAlias = "h5py.Group | JoinedGroup"  # a group of a file, or of a file saved on Windows read with '/' (windows_names)


def get_member(group: Group, key: str) -> h5py.Group | h5py.Dataset | None:
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


def child_group(group: Group | None, key: str) -> Group | None:
    if group is None or key not in group:
        return None
    item = get_member(group, key)
    return item if isinstance(item, (h5py.Group, JoinedGroup)) else None


def find_by_vars_name(members: Group, name: str) -> Group | None:
    # Since Keras 3.6 each vars group carries the layer's user-visible name.
    for key in member_names(members):
        candidate = child_group(members, key)
        vars_group = child_group(candidate, "vars")
        if vars_group is not None and attr_text(vars_group.attrs.get("name")) == name:
            return candidate
    return None


def member_names(group: Group) -> list[str]:
    """A group's member names; h5py hands back bytes for a name that is not UTF-8 (a damaged file)."""
    names: list[str] = list(group)
    for name in names:
        if not isinstance(name, str):
            raise ModelFileError(f"{group.name} has a member whose name is not text ({name!r}); the file is corrupt")
    return names


def collect_vars(group: Group, budget: Budget, depth: int = 0) -> Iterable[NamedArray]:
    """The group's own `vars/0..n` in numeric order, then its sub-objects' (alphabetical)."""
    if depth > MAX_CONFIG_DEPTH:
        raise ModelFileError(f"{group.name[:60]}… nests groups more than {MAX_CONFIG_DEPTH} deep; expected a Keras weights file")
    vars_group = child_group(group, "vars")
    if vars_group is not None:
        for key in sorted((k for k in member_names(vars_group) if paths.index_number(k) is not None), key=int):
            item = get_member(vars_group, key)
            if isinstance(item, h5py.Dataset):
                yield NamedArray(item.name.lstrip("/"), read_dataset(item, budget))
    for key in sorted(member_names(group)):
        sub = child_group(group, key)
        if key != "vars" and sub is not None:
            yield from collect_vars(sub, budget, depth + 1)


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


def read_dataset(dataset: h5py.Dataset, budget: Budget) -> LazyDataset:
    """A weight array, after checking what it declares: size, storage inside the file, numbers."""
    if dataset.is_virtual or dataset.external:
        raise ModelFileError(f"dataset {dataset.name} keeps its data in other files; grucli reads only the model file itself")
    dtype = dataset.dtype
    check_shape(tuple(dataset.shape or ()), f"dataset {dataset.name}")
    declared = int(np.prod(dataset.shape, dtype=np.float64)) * dtype.itemsize if dataset.shape is not None else 0
    budget.array(declared, f"dataset {dataset.name} declares shape {dataset.shape}")
    bfloat16 = attr_text(dataset.attrs.get("dtype")) == "bfloat16" or (dtype.kind == "V" and dtype.itemsize == 2)
    if not bfloat16 and dtype.kind not in "fiub":
        raise ModelFileError(f"dataset {dataset.name} holds {dtype} values; expected numbers")
    return LazyDataset(dataset, bfloat16)


def refuse_unclaimed(root: RawLayer, stored: Iterable[str], where: str) -> None:
    """Weights the config gives to no layer mean config and weights disagree: a config that lacks a
    layer would otherwise hand the following layers' weights along one place (Keras 3 finds them by
    class and position), so such a file is refused, naming the first weight left over."""
    claimed = {_weight_id(weight) for weight in root.all_weights()}
    for name in stored:
        if name not in claimed:
            raise ModelFileError(
                f"{where}: the weights hold {name}, which no layer of the config takes; expected a config "
                "that matches the weights (a layer missing from the config would shift the others' weights)"
            )


def _weight_id(weight: NamedArray) -> str:
    """HDF5 weights by their dataset's path in the file; checkpoint variables by their object path."""
    return weight.array.name if isinstance(weight.array, LazyDataset) else weight.name


def legacy_stored(group: h5py.Group) -> list[str]:
    """Every weight a legacy file lists, by layer (`layer_names`) and weight (`weight_names`)."""
    found: list[str] = []
    for name in read_list_attribute(group, "layer_names"):
        layer = child_group(group, name)
        if layer is not None:
            found += [f"{layer.name}/{weight}" for weight in read_list_attribute(layer, "weight_names")]
    return found


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
    return [str(attr_text(value)) for value in np.atleast_1d(np.asarray(values, dtype=object)) if attr_text(value) is not None]


def legacy_layer_weights(group: h5py.Group | None, budget: Budget) -> tuple[NamedArray, ...]:
    if group is None:
        return ()
    arrays = []
    for name in read_list_attribute(group, "weight_names"):
        item = get_member(group, name) if name else None
        if not isinstance(item, h5py.Dataset):
            raise ModelFileError(f"weight {name!r} is listed in {group.name} but not stored there")
        arrays.append(NamedArray(name, read_dataset(item, budget)))
    return tuple(arrays)


class LegacyRoot:
    """The top-level model of a legacy file: each layer's weights are in its own group."""

    def __init__(self, group: h5py.Group, budget: Budget) -> None:
        self.group = group
        self.budget = budget

    def own(self) -> tuple[NamedArray, ...]:
        return ()

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list[_LegacyWeights]:
        return [_LegacyWeights(legacy_layer_weights(child_group(self.group, spec_name(spec)), self.budget)) for _, spec in children]


class _LegacyWeights:
    """A flat list of weights handed down a layer's subtree by weight names, shapes and order."""

    def __init__(self, weights: tuple[NamedArray, ...]) -> None:
        self.weights = weights

    def own(self) -> tuple[NamedArray, ...]:
        return self.weights

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> list[_LegacyWeights]:
        if role_of(parent_class) is Role.BIDIRECTIONAL:
            half = len(self.weights) // 2
            return [_LegacyWeights(self.weights[:half]), _LegacyWeights(self.weights[half:])]
        if len(children) == 1:
            return [_LegacyWeights(self.weights)]
        return [
            _LegacyWeights(part) for part in _split_by_owner(self.weights, [spec_name(s) for _, s in children], [s for _, s in children])
        ]


def weight_segments(weight_name: str) -> list[str]:
    return [segment.split(":")[0] for segment in weight_name.split("/")]


def _split_by_owner(weights: tuple[NamedArray, ...], names: list[str], specs: list[Mapping[str, Any]]) -> list[tuple[NamedArray, ...]]:
    """Give each sub-layer the weights whose names mention it, else consume them in order."""
    parts: list[list[NamedArray]] = [[] for _ in names]
    unclaimed = []
    for weight in weights:
        segments = weight_segments(weight.name)
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
