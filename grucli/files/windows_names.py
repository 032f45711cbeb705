"""Keras 3 weights files written by tf.keras 2.x on Windows, whose group names hold `\\` for `/`.

tf.keras 2.13-2.15 joined a layer's weight path with `os.path.join`, which is `\\` on Windows, and
h5py splits paths on `/` only: such a file holds root groups literally named `layers\\lstm\\cell`,
each with its `vars` (keras-team/keras#18528, tensorflow/tensorflow#74439). Keras cannot load it;
with every `\\` read as `/` the groups form the tree any other Keras 3 weights file has.

`joined_root` returns that tree: the file's own root where no name holds `\\` (then nothing
changes), else a `JoinedGroup` whose members are found by their `/`-separated paths; where a real
group holds no renamed member below it, the real h5py group itself is handed out, so datasets are
read lazily as from any file. Two names that would collide once separators are read as `/` are
refused by name: which one Keras meant cannot be known.

May import: h5py, files/tree, files/budget, errors (files/hdf5 imports it, to take its groups for h5py's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import h5py

from grucli.errors import ModelFileError
from grucli.files.budget import Budget
from grucli.files.tree import MAX_CONFIG_DEPTH

WINDOWS_SEPARATOR = "\\"
NOTE = "weight groups are named with '\\' (tf.keras 2.x saving on Windows, keras-team/keras#18528); grucli reads each '\\' as '/'"


def has_windows_names(handle: h5py.Group) -> bool:
    """Whether the file's root names a group with `\\` (the saver created every weight group at the root)."""
    return any(isinstance(name, str) and WINDOWS_SEPARATOR in name for name in handle)


def joined_root(handle: h5py.Group, budget: Budget, where: str) -> h5py.Group | JoinedGroup:
    """The file's groups as a `/`-separated tree (the file itself where no name holds `\\`);
    `where` names the file in errors."""
    if not has_windows_names(handle):
        return handle
    objects: dict[str, h5py.Group | h5py.Dataset] = {}
    renamed_below: set[str] = set()  # paths that have a renamed member somewhere below them
    _index(handle, "", objects, renamed_below, budget, where, 0)
    return JoinedGroup("", objects, renamed_below)


def _index(
    group: h5py.Group,
    real_path: str,
    objects: dict[str, h5py.Group | h5py.Dataset],
    renamed_below: set[str],
    budget: Budget,
    where: str,
    depth: int,
) -> None:
    if depth > MAX_CONFIG_DEPTH:
        raise ModelFileError(f"{group.name[:60]}… nests groups more than {MAX_CONFIG_DEPTH} deep; expected a Keras weights file")
    names = list(group)
    budget.entries(len(objects) + len(names), f"{where}: the weight groups")
    for name in names:
        if not isinstance(name, str):
            raise ModelFileError(f"{group.name} has a member whose name is not text ({name!r}); the file is corrupt")
        if not isinstance(group.get(name, getlink=True), h5py.HardLink):
            raise ModelFileError(f"{group.name}/{name} is a link; grucli follows no links in a file saved on Windows")
        item = group.get(name)
        if not isinstance(item, (h5py.Group, h5py.Dataset)):
            continue
        real = f"{real_path}/{name}" if real_path else name
        path = real.replace(WINDOWS_SEPARATOR, "/")
        if path in objects:
            raise ModelFileError(
                f"{where}: {objects[path].name} and {item.name} name the same weights once '\\' is read as '/' "
                "(a file saved on Windows); refusing to guess which one the model holds"
            )
        objects[path] = item
        if WINDOWS_SEPARATOR in name:
            parts = path.split("/")
            renamed_below.update("/".join(parts[:end]) for end in range(len(parts)))
        if isinstance(item, h5py.Group):
            _index(item, real, objects, renamed_below, budget, where, depth + 1)


class JoinedGroup:
    """A group of the `/`-separated tree: a real group, or one only implied by renamed names.

    It answers what grucli's readers ask of an h5py group: membership, member names, a member by
    name (`get`, with `getlink`), `attrs` and `visititems`; `name` is its `/`-separated path."""

    def __init__(self, path: str, objects: dict[str, h5py.Group | h5py.Dataset], renamed_below: set[str]) -> None:
        self._path = path
        self._objects = objects
        self._renamed_below = renamed_below
        real = objects.get(path)
        self._real = real if isinstance(real, h5py.Group) else None

    @property
    def name(self) -> str:
        return "/" + self._path

    @property
    def attrs(self) -> Any:
        return self._real.attrs if self._real is not None else {}

    def _child_path(self, key: str) -> str:
        return f"{self._path}/{key}" if self._path else key

    def __contains__(self, key: object) -> bool:
        return (isinstance(key, str) and self._child_path(key) in self._objects) or (
            isinstance(key, str) and self._child_path(key) in self._renamed_below
        )

    def __iter__(self) -> Iterator[str]:
        prefix = f"{self._path}/" if self._path else ""
        seen = set()
        for path in [*self._objects, *self._renamed_below]:
            if path.startswith(prefix) and path != self._path:
                head = path[len(prefix) :].split("/", 1)[0]
                if head and head not in seen:
                    seen.add(head)
                    yield head

    def get(self, key: str, getlink: bool = False) -> Any:
        path = self._child_path(key)
        if path not in self._objects and path not in self._renamed_below:
            return None
        if getlink:
            return h5py.HardLink()  # every member was reached by a hard link when the tree was built
        item = self._objects.get(path)
        if isinstance(item, h5py.Dataset) or (item is not None and path not in self._renamed_below):
            return item  # a dataset, or a real group with nothing renamed below it
        return JoinedGroup(path, self._objects, self._renamed_below)

    def visititems(self, visit: Callable[[str, Any], None]) -> None:
        prefix = f"{self._path}/" if self._path else ""
        for path in sorted(self._objects):
            if path.startswith(prefix):
                visit(path[len(prefix) :], self._objects[path])
