"""`.safetensors` files (`safetensors.torch.save_file(model.state_dict(), PATH)`): named tensors, no code.

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the bytes. The header's length and every tensor it declares are
charged to the read's budget and checked (known dtype, a byte range that fits the shape and the
file) before anything is read; the tensors are then read with the safetensors package's NumPy
API (memory-mapped, one at a time), except bfloat16, which NumPy has no type for: its bytes are
widened to float32 here.

May import: numpy, safetensors, files/budget, files/regular, files/tree, errors.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from grucli.errors import ModelFileError, first_line
from grucli.files.budget import Budget, check_shape
from grucli.files.regular import regular_file_size
from grucli.files.tree import parse_json

DTYPES: Mapping[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "bfloat16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def is_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte header length that fits the file, followed by a JSON object."""
    if len(head) < 9:
        return False
    length = struct.unpack("<Q", head[:8])[0]
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def read_safetensors(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """Every tensor of the file by name, in the header's order, each checked before it is read."""
    size = regular_file_size(path, str(path))
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path} is too short for a .safetensors file; expected a header length and a header")
        length = struct.unpack("<Q", head)[0]
        if length > size - 8:
            raise ModelFileError(f"{path}: the header declares {length} bytes, more than the file holds; the file is crafted or truncated")
        budget.config(length, f"{path}: the safetensors header")
        header = parse_json(handle.read(length), f"{path}: the safetensors header", budget)
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is not a JSON object")
    entries = {name: spec for name, spec in header.items() if name != "__metadata__"}
    budget.variables(len(entries), f"{path}: the safetensors header")
    checked = {name: _checked(path, name, spec, size - 8 - length, budget) for name, spec in entries.items()}
    return _arrays(path, checked, 8 + length)


def _checked(path: Path, name: str, spec: Any, data_size: int, budget: Budget) -> tuple[str, tuple[int, ...], int, int]:
    where = f"{path}: tensor {name!r}"
    if not isinstance(spec, dict) or set(spec) - {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(f"{where} is declared as {str(spec)[:80]}; expected dtype, shape and data_offsets")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ModelFileError(f"{where} has dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise ModelFileError(f"{where} has shape {shape!r}; expected a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise ModelFileError(f"{where} has data_offsets {offsets!r}; expected [begin, end]")
    check_shape(tuple(shape), where)
    begin, end = offsets
    itemsize = 2 if dtype == "BF16" else np.dtype(DTYPES[dtype]).itemsize
    declared = math.prod(shape) * itemsize
    if not 0 <= begin <= end <= data_size or end - begin != declared:
        raise ModelFileError(f"{where} spans bytes {begin}..{end} of {data_size}; its shape {tuple(shape)} of {dtype} needs {declared}")
    budget.array(declared, where)
    return str(dtype), tuple(shape), int(begin), int(end)


def _arrays(path: Path, checked: Mapping[str, tuple[str, tuple[int, ...], int, int]], data_start: int) -> dict[str, np.ndarray]:
    try:
        from safetensors import safe_open
    except ImportError as exc:  # a core dependency: its absence is a broken installation, said as such
        raise ModelFileError(f"reading {path} needs the safetensors package ({first_line(exc)}); pip install safetensors") from None
    arrays: dict[str, np.ndarray] = {}
    plain = [name for name, (dtype, _, _, _) in checked.items() if dtype != "BF16"]
    if plain:
        try:
            with safe_open(str(path), framework="numpy") as opened:
                for name in plain:
                    arrays[name] = np.asarray(opened.get_tensor(name))
        except (OSError, RuntimeError, ValueError) as exc:  # the package's own refusal of the bytes
            raise ModelFileError(f"cannot read {path}: {first_line(exc)}") from None
    with path.open("rb") as handle:
        for name, (dtype, shape, begin, end) in checked.items():
            if dtype == "BF16":
                handle.seek(data_start + begin)
                raw = np.frombuffer(handle.read(end - begin), "<u2")
                arrays[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return {name: arrays[name] for name in checked}
