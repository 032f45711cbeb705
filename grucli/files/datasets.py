"""A dataset read a batch of rows at a time: what `grucli activations --input DATA` streams.

DATA is an `.npy` (memory-mapped: each batch maps the file, copies its rows and unmaps it, so
the pages read never stay in the process), an `.npz` written by `np.savez` (each member mapped
the same way, named after the model input it feeds; `np.savez_compressed` members cannot be read
a batch at a time and are refused), a folder of `.npy` shards (rows in the shards' name order),
or a Zarr array (or a Zarr group with one array per model input), read chunk by chunk by zarr
after its metadata is checked (`zarr_meta`).

`Dataset` is a frozen record of where each input's rows are: it travels to Dask workers, which
read their own batches. Its budget: headers and metadata under the config limit, shards under
the entry limit, one batch of rows under --max-input-mb, the whole dataset under
--max-dataset-gb.

May import: numpy, zarr (on first use), files/, errors.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grucli.errors import GrucliError
from grucli.files.budget import Budget, Limits, size
from grucli.files.inputs import npy_header
from grucli.files.regular import regular_file_size


class DatasetError(GrucliError):
    """A dataset grucli cannot stream (the message says why and what was expected)."""


@dataclass(frozen=True)
class Piece:
    """Rows of one input stored contiguously: an .npy file or an .npz member at `offset` bytes."""

    file: str
    offset: int
    rows: int
    fortran_order: bool


@dataclass(frozen=True)
class DataArray:
    """One model input's rows: `pieces` of an .npy, .npz or shards, or the Zarr array at `zarr`."""

    name: str
    shape: tuple[int, ...]  # rows first
    dtype: str
    pieces: tuple[Piece, ...] = ()
    zarr: str | None = None
    memory: np.ndarray | None = field(default=None, compare=False, repr=False)  # arrays given from Python

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * np.dtype(self.dtype).itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a fresh array."""
        if self.memory is not None:
            return np.array(self.memory[start:stop])
        if self.zarr is not None:
            import zarr

            return np.asarray(zarr.open_array(self.zarr, mode="r")[start:stop])
        out = np.empty((stop - start, *self.shape[1:]), np.dtype(self.dtype))
        first = 0
        for piece in self.pieces:
            low, high = max(start, first), min(stop, first + piece.rows)
            if low < high:
                out[low - start : high - start] = _mapped_rows(piece, self, low - first, high - first)
            first += piece.rows
        return out


def _mapped_rows(piece: Piece, array: DataArray, start: int, stop: int) -> np.ndarray:
    mapped = np.memmap(
        piece.file,
        np.dtype(array.dtype),
        mode="r",
        offset=piece.offset,
        shape=(piece.rows, *array.shape[1:]),
        order="F" if piece.fortran_order else "C",
    )
    # A copy; the mapping goes with its last reference as this returns (CPython frees it at once).
    return np.array(mapped[start:stop])


@dataclass(frozen=True)
class Dataset:
    """Every model input's rows, read together a batch at a time."""

    path: str
    kind: str  # npy, npz, shards, zarr
    arrays: tuple[DataArray, ...]

    @property
    def rows(self) -> int:
        return self.arrays[0].shape[0]

    @property
    def row_bytes(self) -> int:
        return sum(array.row_bytes for array in self.arrays)

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        return [array.read(start, stop) for array in self.arrays]

    def describe(self) -> str:
        shapes = ", ".join(f"{array.shape} {array.dtype}" for array in self.arrays)
        return f"{self.path} ({self.kind}: {shapes})"

    def summary(self) -> dict[str, object]:
        """What a store's attributes say of the data it was computed from."""
        return {
            "path": self.path,
            "kind": self.kind,
            "inputs": [{"name": a.name, "shape": list(a.shape), "dtype": a.dtype} for a in self.arrays],
        }


def digest(arrays: Sequence[np.ndarray]) -> str:
    """A batch's fingerprint: BLAKE2b of its shapes, types and bytes (a resumed store checks that
    the rows it kept came from the same data)."""
    hasher = hashlib.blake2b(digest_size=16)
    for array in arrays:
        hasher.update(f"{array.shape}{array.dtype.str}".encode())
        hasher.update(np.ascontiguousarray(array).data)
    return hasher.hexdigest()


def in_memory(arrays: Sequence[np.ndarray], input_names: Sequence[str]) -> Dataset:
    """Arrays given from Python, one per model input, rows first."""
    if len(arrays) != len(input_names):
        raise DatasetError(f"the model has {len(input_names)} inputs ({', '.join(input_names)}); {len(arrays)} arrays were given")
    found = tuple(DataArray(name, tuple(a.shape), a.dtype.str, memory=a) for name, a in zip(input_names, arrays))
    dataset = Dataset("the arrays given", "memory", found)
    for array in found:
        if array.memory is not None and (array.memory.dtype.kind not in "biuf" or array.memory.ndim < 2):
            raise DatasetError(f"input {array.name} is {array.memory.dtype} of shape {array.shape}; expected numbers, rows first")
    _check_rows(dataset, Limits(max_input_bytes=1 << 62), 1 << 62)
    return dataset


def open_dataset(path: str | Path, input_names: Sequence[str], limits: Limits, max_dataset_bytes: int) -> Dataset:
    """The dataset at `path` for a model with inputs `input_names`, its headers and metadata read
    and checked (nothing of its rows is read)."""
    path = Path(path)
    budget = Budget(limits)
    if path.is_dir():
        from grucli.files.zarr_meta import node_type

        node = node_type(path)
        dataset = _zarr(path, node, input_names, budget, limits) if node is not None else _shards(path, input_names, budget)
    else:
        suffix = path.suffix.lower()
        regular_file_size(path, f"data {path}", DatasetError)
        if suffix == ".npy":
            dataset = Dataset(str(path), "npy", (_npy_array(path, input_names[0], 0, budget),))
        elif suffix == ".npz":
            dataset = Dataset(str(path), "npz", _npz(path, input_names, budget))
        else:
            raise DatasetError(
                f"data {path} has suffix {suffix or '(none)'}; expected .npy, .npz (np.savez), a folder of .npy shards or a Zarr array"
            )
    if len(dataset.arrays) != len(input_names):
        raise DatasetError(
            f"the model has {len(input_names)} inputs ({', '.join(input_names)}); {path} holds {len(dataset.arrays)}: "
            "expected an .npz or Zarr group with one array named after each input"
        )
    _check_rows(dataset, limits, max_dataset_bytes)
    return dataset


def _check_rows(dataset: Dataset, limits: Limits, max_dataset_bytes: int) -> None:
    for array in dataset.arrays:
        if len(array.shape) < 2:
            raise DatasetError(
                f"input {array.name} of {dataset.path} has shape {array.shape}; expected rows first, then each sequence's shape"
            )
    rows = {array.shape[0] for array in dataset.arrays}
    if len(rows) != 1:
        found = ", ".join(f"{a.name} {a.shape[0]}" for a in dataset.arrays)
        raise DatasetError(f"the inputs of {dataset.path} hold different numbers of rows ({found}); expected one row per sequence in each")
    if dataset.rows == 0:
        raise DatasetError(f"{dataset.path} holds no rows; expected at least one sequence")
    total = dataset.rows * dataset.row_bytes
    if total > max_dataset_bytes:
        raise DatasetError(
            f"{dataset.path} declares {size(total)} of rows, over the limit of {size(max_dataset_bytes)} for a dataset; "
            "expected a smaller dataset (raise the limit with --max-dataset-gb)"
        )
    if dataset.row_bytes > limits.max_input_bytes:
        raise DatasetError(
            f"one row of {dataset.path} is {size(dataset.row_bytes)}, over the input limit of {size(limits.max_input_bytes)} "
            "a batch; expected smaller rows (raise the limit with --max-input-mb)"
        )


def _header(handle: Any, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        shape, fortran, dtype = npy_header(handle)
    except (ValueError, EOFError) as exc:
        raise DatasetError(f"{what} is not an .npy array: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
        raise DatasetError(f"{what} holds {dtype}; expected numbers (grucli never unpickles data)")
    if len(shape) < 2:
        raise DatasetError(f"{what} has shape {shape}; expected rows first, then each sequence's shape")
    return shape, fortran, dtype


def _npy_array(path: Path, name: str, offset: int, budget: Budget) -> DataArray:
    what = f"data {path}"
    file_size = regular_file_size(path, what, DatasetError)
    budget.config(min(file_size, 65536), what)
    with path.open("rb") as handle:
        shape, fortran, dtype = _header(handle, what)
        data_offset = handle.tell()
    expected = math.prod(shape) * dtype.itemsize
    if file_size < data_offset + expected:
        raise DatasetError(f"{what} declares shape {shape} of {dtype} ({size(expected)}) but holds {size(file_size - data_offset)}")
    return DataArray(name, shape, dtype.str, (Piece(str(path), offset + data_offset, shape[0], fortran),))


def _npz(path: Path, input_names: Sequence[str], budget: Budget) -> tuple[DataArray, ...]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            budget.entries(len(infos), f"data {path}")
            found = {}
            for info in infos:
                found[info.filename.removesuffix(".npy")] = _npz_member(path, archive, info, budget)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"data {path} is not an .npz: {exc}") from None
    names = list(found)
    if len(input_names) == 1 and len(names) == 1:
        return (DataArray(input_names[0], *_fields(found[names[0]])),)
    missing = [name for name in input_names if name not in found]
    if missing:
        raise DatasetError(
            f"data {path} holds arrays {', '.join(names) or 'none'}; expected one named after each model input: {', '.join(input_names)}"
        )
    return tuple(DataArray(name, *_fields(found[name])) for name in input_names)


def _fields(array: DataArray) -> tuple[tuple[int, ...], str, tuple[Piece, ...]]:
    return array.shape, array.dtype, array.pieces


def _npz_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget) -> DataArray:
    what = f"data {path} member {info.filename}"
    if info.compress_type != zipfile.ZIP_STORED:
        raise DatasetError(
            f"{what} is compressed (np.savez_compressed), so it cannot be read a batch at a time; "
            "expected np.savez or np.save (or a Zarr array, which is compressed by chunks)"
        )
    with archive.open(info) as member:
        shape, fortran, dtype = _header(member, what)
        header_bytes = member.tell()
    budget.config(header_bytes, what)
    # A stored member's bytes follow its local header: its 30 fixed bytes, name and extra field.
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise DatasetError(f"{what}: its zip header is damaged")
    name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    start = info.header_offset + 30 + name_length + extra_length + header_bytes
    expected = math.prod(shape) * dtype.itemsize
    if info.file_size < header_bytes + expected:
        raise DatasetError(f"{what} declares shape {shape} of {dtype} ({size(expected)}) but holds {size(info.file_size - header_bytes)}")
    return DataArray(info.filename, shape, dtype.str, (Piece(str(path), start, shape[0], fortran),))


def _shards(folder: Path, input_names: Sequence[str], budget: Budget) -> Dataset:
    files = sorted(child for child in folder.iterdir() if child.suffix.lower() == ".npy")
    budget.entries(len(files), f"data folder {folder}")
    if not files:
        raise DatasetError(f"data folder {folder} holds no .npy shards and no Zarr metadata; expected .npy files or a Zarr array")
    if len(input_names) != 1:
        raise DatasetError(
            f"data folder {folder} holds .npy shards, which feed a model with one input; this one has {len(input_names)} "
            f"({', '.join(input_names)}): expected an .npz or a Zarr group with one array per input"
        )
    arrays = [_npy_array(file, input_names[0], 0, budget) for file in files]
    first = arrays[0]
    for file, array in zip(files, arrays):
        if array.shape[1:] != first.shape[1:] or array.dtype != first.dtype:
            raise DatasetError(
                f"shard {file} holds rows of shape {array.shape[1:]} {np.dtype(array.dtype)}; expected {first.shape[1:]} "
                f"{np.dtype(first.dtype)} like {files[0].name}"
            )
    rows = sum(array.shape[0] for array in arrays)
    pieces = tuple(piece for array in arrays for piece in array.pieces)
    return Dataset(str(folder), "shards", (DataArray(input_names[0], (rows, *first.shape[1:]), first.dtype, pieces),))


def _zarr(path: Path, node: str | None, input_names: Sequence[str], budget: Budget, limits: Limits) -> Dataset:
    from grucli.files.zarr_meta import StoreError, array_meta

    try:
        if node == "array":
            meta = array_meta(path, budget, limits.max_input_bytes)
            return Dataset(str(path), "zarr", (DataArray(input_names[0], meta.shape, meta.dtype.str, zarr=str(path)),))
        members = sorted(child.name for child in path.iterdir() if child.is_dir())
        budget.entries(len(members), f"Zarr group {path}")
        names = list(input_names) if len(input_names) > 1 or input_names[0] in members else members
        missing = [name for name in names if name not in members]
        if missing or len(names) != len(input_names):
            raise DatasetError(
                f"Zarr group {path} holds {', '.join(members) or 'nothing'}; expected an array named after each model input: "
                f"{', '.join(input_names)}"
            )
        arrays = []
        for input_name, name in zip(input_names, names):
            meta = array_meta(path / name, budget, limits.max_input_bytes)
            arrays.append(DataArray(input_name, meta.shape, meta.dtype.str, zarr=str(path / name)))
        return Dataset(str(path), "zarr", tuple(arrays))
    except StoreError as exc:
        raise DatasetError(str(exc)) from None
