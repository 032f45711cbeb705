"""Zarr metadata read and checked by grucli before the zarr library opens an array: stores are
untrusted files too.

Zarr decodes chunks with the codecs an array's metadata names, and numcodecs ships codecs that
unpickle (`pickle`, and object arrays' `vlen-*`, `json2`, `msgpack2` encode Python objects): an
array whose metadata names one would run code from the store when read. So each array's
`zarr.json` (Zarr 3) or `.zarray` (Zarr 2) is parsed here, under the budget, and only numeric
arrays with the codecs below are handed to zarr; consolidated metadata is never used (it would
describe arrays whose own metadata was not checked).

May import: zarr (never here: this module only reads JSON), numpy, files/, errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grucli.errors import GrucliError
from grucli.files.budget import Budget, check_shape, size
from grucli.files.regular import regular_file_size

# Codecs that turn bytes into numbers and back, nothing else (Zarr 3 names; Zarr 2 compressor and filter ids).
ZARR3_CODECS = frozenset({"bytes", "blosc", "zstd", "gzip", "transpose", "crc32c", "sharding_indexed"})
ZARR2_CODECS = frozenset({"blosc", "zstd", "zlib", "gzip", "bz2", "lzma", "lz4", "delta", "shuffle"})
NUMERIC_KINDS = "biuf"
MAX_CODEC_DEPTH = 3  # sharding nests a codec list; a store may nest no deeper than this


class StoreError(GrucliError):
    """A Zarr store or array that grucli will not open (the message says what is wrong)."""


@dataclass(frozen=True)
class ZarrArrayMeta:
    """What an array's metadata declares, once checked: its shape, element type and chunk shape."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    attributes: Mapping[str, Any]
    zarr_format: int

    @property
    def chunk_bytes(self) -> int:
        return math.prod(self.chunks) * self.dtype.itemsize


def node_type(path: Path) -> str | None:
    """ "array", "group" or None (no Zarr metadata here), from the files the folder holds."""
    if (path / "zarr.json").is_file():
        meta = _json(path / "zarr.json", None)
        kind = meta.get("node_type") if isinstance(meta, dict) else None
        return kind if kind in ("array", "group") else None
    if (path / ".zarray").is_file():
        return "array"
    if (path / ".zgroup").is_file():
        return "group"
    return None


def group_attributes(path: Path, budget: Budget) -> Mapping[str, Any]:
    """The attributes of the group at `path` (Zarr 3 zarr.json, or Zarr 2 .zgroup with .zattrs)."""
    if (path / "zarr.json").is_file():
        meta = _json(path / "zarr.json", budget)
        if not isinstance(meta, dict) or meta.get("node_type") != "group":
            raise StoreError(f"{path} is not a Zarr group; expected a folder whose zarr.json says node_type group")
        attributes = meta.get("attributes", {})
    elif (path / ".zgroup").is_file():
        attributes = _json(path / ".zattrs", budget) if (path / ".zattrs").is_file() else {}
    else:
        raise StoreError(f"{path} is not a Zarr group; expected a folder with zarr.json (Zarr 3) or .zgroup (Zarr 2)")
    if not isinstance(attributes, dict):
        raise StoreError(f"{path}: the group's attributes are not a JSON object")
    return attributes


def array_meta(path: Path, budget: Budget, max_chunk_bytes: int) -> ZarrArrayMeta:
    """The checked metadata of the array at `path`; refused unless it holds numbers (or booleans)
    behind codecs that only compress, with chunks of at most `max_chunk_bytes`."""
    if (path / "zarr.json").is_file():
        meta = _json(path / "zarr.json", budget)
        found = _zarr3(path, meta)
    elif (path / ".zarray").is_file():
        meta = _json(path / ".zarray", budget)
        attributes = _json(path / ".zattrs", budget) if (path / ".zattrs").is_file() else {}
        found = _zarr2(path, meta, attributes)
    else:
        raise StoreError(f"{path} is not a Zarr array; expected a folder with zarr.json (Zarr 3) or .zarray (Zarr 2)")
    check_shape(found.shape, f"Zarr array {path}")
    if found.chunk_bytes > max_chunk_bytes:
        raise StoreError(
            f"Zarr array {path} has chunks {found.chunks} of {found.dtype} ({size(found.chunk_bytes)} each), over the limit "
            f"of {size(max_chunk_bytes)} a chunk; expected smaller chunks (raise the limit with --max-input-mb)"
        )
    return found


def _json(path: Path, budget: Budget | None) -> Any:
    nbytes = regular_file_size(path, f"Zarr metadata {path}", StoreError)
    if budget is not None:
        budget.config(nbytes, f"Zarr metadata {path}")
    raw = path.read_bytes()
    if budget is not None:
        budget.json(raw, f"Zarr metadata {path}")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"Zarr metadata {path} is not JSON: {exc}") from None


def _zarr3(path: Path, meta: Any) -> ZarrArrayMeta:
    if not isinstance(meta, dict) or meta.get("node_type") != "array" or meta.get("zarr_format") != 3:
        raise StoreError(f"{path}/zarr.json does not describe a Zarr 3 array")
    dtype = _numeric(path, meta.get("data_type"))
    shape = _ints(path, meta.get("shape"), "shape")
    grid = meta.get("chunk_grid")
    if not (isinstance(grid, dict) and grid.get("name") == "regular" and isinstance(grid.get("configuration"), dict)):
        raise StoreError(f"Zarr array {path} has chunk grid {_short(grid)}; expected a regular grid")
    chunks = _ints(path, grid["configuration"].get("chunk_shape"), "chunk shape")
    if len(chunks) != len(shape):
        raise StoreError(f"Zarr array {path} has shape {shape} and chunk shape {chunks} of another rank")
    if meta.get("storage_transformers"):
        raise StoreError(f"Zarr array {path} uses storage transformers; grucli reads plain chunked arrays")
    _codecs(path, meta.get("codecs"), 0)
    attributes = meta.get("attributes", {})
    if not isinstance(attributes, dict):
        raise StoreError(f"Zarr array {path}: its attributes are not a JSON object")
    return ZarrArrayMeta(path, shape, dtype, chunks, attributes, 3)


def _codecs(path: Path, codecs: Any, depth: int) -> None:
    if depth > MAX_CODEC_DEPTH or not isinstance(codecs, list) or not codecs:
        raise StoreError(f"Zarr array {path} has codecs {_short(codecs)}; expected a list of codecs")
    for codec in codecs:
        name = codec.get("name") if isinstance(codec, dict) else None
        if name not in ZARR3_CODECS:
            raise StoreError(
                f"Zarr array {path} uses codec {_short(name)}; grucli opens arrays whose codecs only store numbers "
                f"({', '.join(sorted(ZARR3_CODECS))}), never ones that decode Python objects"
            )
        if name == "sharding_indexed":
            configuration = codec.get("configuration")
            if not isinstance(configuration, dict):
                raise StoreError(f"Zarr array {path}: its sharding codec has no configuration")
            _codecs(path, configuration.get("codecs"), depth + 1)
            _codecs(path, configuration.get("index_codecs"), depth + 1)


def _zarr2(path: Path, meta: Any, attributes: Any) -> ZarrArrayMeta:
    if not isinstance(meta, dict) or meta.get("zarr_format") != 2:
        raise StoreError(f"{path}/.zarray does not describe a Zarr 2 array")
    raw_dtype = meta.get("dtype")
    if not isinstance(raw_dtype, str):
        raise StoreError(f"Zarr array {path} has dtype {_short(raw_dtype)}; expected a NumPy type string such as '<f4'")
    dtype = _numeric(path, raw_dtype)
    shape = _ints(path, meta.get("shape"), "shape")
    chunks = _ints(path, meta.get("chunks"), "chunks")
    if len(chunks) != len(shape):
        raise StoreError(f"Zarr array {path} has shape {shape} and chunks {chunks} of another rank")
    if meta.get("order", "C") not in ("C", "F"):
        raise StoreError(f"Zarr array {path} has order {_short(meta.get('order'))}; expected C or F")
    compressor = meta.get("compressor")
    filters = meta.get("filters") or []
    if not isinstance(filters, list):
        raise StoreError(f"Zarr array {path} has filters {_short(filters)}; expected a list")
    for codec in ([compressor] if compressor is not None else []) + filters:
        name = codec.get("id") if isinstance(codec, dict) else None
        if name not in ZARR2_CODECS:
            raise StoreError(
                f"Zarr array {path} uses codec {_short(name)}; grucli opens arrays whose codecs only store numbers "
                f"({', '.join(sorted(ZARR2_CODECS))}), never ones that decode Python objects"
            )
    if not isinstance(attributes, dict):
        raise StoreError(f"Zarr array {path}: its .zattrs is not a JSON object")
    return ZarrArrayMeta(path, shape, dtype, chunks, attributes, 2)


def _numeric(path: Path, declared: Any) -> np.dtype:
    try:
        dtype = np.dtype(declared) if isinstance(declared, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
        raise StoreError(f"Zarr array {path} holds {_short(declared)}; expected numbers (bool, int, uint or float)")
    return dtype


def _ints(path: Path, values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str) or not all(type(v) is int and v >= 0 for v in values):
        raise StoreError(f"Zarr array {path} declares {what} {_short(values)}; expected a list of counts")
    return tuple(values)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
