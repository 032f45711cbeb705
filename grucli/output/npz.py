"""The `.npz` writer: a stored (uncompressed) zip of `.npy` members, laid out before any data.

Every member's size follows from its shape and dtype, so each member's place in the file is
fixed up front. Blocks of different members can then be written as they arrive (each member's
own blocks in order): one pass over a layer's kernel fills its z, r and h members together, so
every source array is read once. The layout is what `np.savez` writes (zip64 sizes in every
member, as numpy forces them), readable by `np.load`, `zipfile` and `unzip`; the timestamps are
fixed, so the same weights always give the same bytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from grucli.errors import OutputError
from grucli.model.records import ArraySpec

# zipfile's thresholds: past these the end records need their zip64 forms.
ZIP64_LIMIT = (1 << 31) - 1
ZIP_FILECOUNT_LIMIT = (1 << 16) - 1
DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest date a zip can hold
EXTERNAL_ATTRIBUTES = 0o600 << 16  # a regular file, rw for its owner (as zipfile writes)
VERSION = 45  # zip64
UTF8_NAME = 0x800

# Copying, CRC and writing release the GIL: two workers keep both cores busy while the
# caller reads the next block. A few blocks in flight bound the memory.
WORKERS = 2
IN_FLIGHT = 4


@dataclass
class _Member:
    name: bytes
    flags: int
    header_offset: int
    data_offset: int
    size: int
    dtype: np.dtype
    written: int
    crc: int


class NpzWriter:
    """Writes the members described by `specs` into the open file `fd`, at fixed offsets."""

    def __init__(self, fd: int, specs: Sequence[ArraySpec]) -> None:
        self._fd = fd
        self._members: list[_Member] = []
        offset = 0
        names = member_names([spec.key for spec in specs])
        for spec, key in zip(specs, names):
            if np.dtype(spec.dtype).hasobject:
                raise TypeError(f"{spec.key}: object arrays cannot be stored without pickle")
            npy_header = _npy_header(spec)
            size = len(npy_header) + int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            name, flags = _encode_name(f"{key}.npy")
            local = _local_header(name, flags, size)
            member = _Member(name, flags, offset, offset + len(local), size, np.dtype(spec.dtype), len(npy_header), zlib.crc32(npy_header))
            _write_all(fd, local + npy_header, offset)
            self._members.append(member)
            offset = member.data_offset + size
        self._end = offset

    def append(self, index: int, block: np.ndarray) -> None:
        """Add `block` (the next rows of member `index`, in its dtype) to that member."""
        member = self._members[index]
        data = np.ascontiguousarray(block, dtype=member.dtype)
        if member.written + data.nbytes > member.size:
            raise ValueError(f"member {member.name!r} is given more than its declared {member.size} bytes")
        view = memoryview(data.reshape(-1).view(np.uint8).data)
        member.crc = zlib.crc32(view, member.crc)
        _write_all(self._fd, view, member.data_offset + member.written)
        member.written += data.nbytes

    def finish(self) -> None:
        """Check every member is complete, stamp the CRCs and write the central directory."""
        directory = bytearray()
        for member in self._members:
            if member.written != member.size:
                raise ValueError(f"member {member.name!r} got {member.written} of its {member.size} bytes")
            _write_all(self._fd, struct.pack("<I", member.crc), member.header_offset + 14)
            directory += _central_header(member)
        directory += _end_records(len(self._members), self._end, len(directory))
        _write_all(self._fd, bytes(directory), self._end)


def write_npz_to(fd: int, specs: Sequence[ArraySpec], pieces: Iterable[tuple[int, np.ndarray]]) -> None:
    """Write an .npz into `fd` from `pieces`: (member index, next block of that member's rows).

    Reading the pieces (the caller's generator) overlaps with copying, checksumming and
    writing the previous ones on worker threads.
    """
    writer = NpzWriter(fd, specs)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        in_flight: deque[Future[None]] = deque()
        last: dict[int, Future[None]] = {}
        try:
            for index, block in pieces:
                if index in last:
                    last[index].result()  # a member's CRC runs through its blocks in order
                while len(in_flight) >= IN_FLIGHT:
                    in_flight.popleft().result()
                last[index] = pool.submit(writer.append, index, block)
                in_flight.append(last[index])
            for future in in_flight:
                future.result()
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
    writer.finish()


def _npy_header(spec: ArraySpec) -> bytes:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(spec.dtype)), "fortran_order": False, "shape": tuple(spec.shape)}
    buffer = _Bytes()
    np.lib.format.write_array_header_2_0(buffer, header)
    return bytes(buffer)


class _Bytes(bytearray):
    def write(self, data: bytes) -> int:
        self.extend(data)
        return len(data)


def member_names(keys: Sequence[str]) -> list[str]:
    """Zip member names for array keys built from a file's layer names, which are data: a key never
    climbs out of the archive's folder nor starts at the root, whatever the file named its layers.

    Each `/`-separated segment is kept as written unless it could steer an extracting tool: `%`,
    backslashes, colons and control characters are percent-encoded, and so is each dot of a
    segment of dots alone (`..` → `%2E%2E`); an empty segment (a leading `/`) becomes `%2F`. Names
    of ordinary layers are unchanged. Two keys that end up as one name are refused."""
    names: dict[str, str] = {}
    for key in keys:
        name = "/".join(_safe_segment(segment) for segment in key.split("/"))
        if name in names:
            raise OutputError(
                f"arrays {names[name]!r} and {key!r} would be stored under one name ({name!r}); expected layers with distinct names"
            )
        names[name] = key
    return list(names)


def _safe_segment(segment: str) -> str:
    if not segment:
        return "%2F"
    if set(segment) == {"."}:
        return "%2E" * len(segment)
    return "".join(f"%{ord(c):02X}" if c in "%\\:" or ord(c) < 32 or ord(c) == 127 else c for c in segment)


def _encode_name(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), UTF8_NAME


def _local_header(name: bytes, flags: int, size: int) -> bytes:
    # CRC 0 for now (stamped by finish); sizes in the zip64 extra field, 0xFFFFFFFF here.
    extra = struct.pack("<HHQQ", 1, 16, size, size)
    fixed = struct.pack(
        "<4s2B4HL2L2H", b"PK\x03\x04", VERSION, 0, flags, 0, 0, DOS_DATE_1980, 0, 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra)
    )
    return fixed + name + extra


def _central_header(member: _Member) -> bytes:
    extra = struct.pack("<HHQQQ", 1, 24, member.size, member.size, member.header_offset)
    fixed = struct.pack(
        "<4s4B4HL2L5H2L",
        b"PK\x01\x02",
        VERSION,
        3,
        VERSION,
        0,
        member.flags,
        0,
        0,
        DOS_DATE_1980,
        member.crc,
        0xFFFFFFFF,
        0xFFFFFFFF,
        len(member.name),
        len(extra),
        0,
        0,
        0,
        EXTERNAL_ATTRIBUTES,
        0xFFFFFFFF,
    )
    return fixed + member.name + extra


def _end_records(count: int, directory_offset: int, directory_size: int) -> bytes:
    records = b""
    if count > ZIP_FILECOUNT_LIMIT or directory_offset > ZIP64_LIMIT or directory_size > ZIP64_LIMIT:
        end64_offset = directory_offset + directory_size
        records += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, VERSION, VERSION, 0, 0, count, count, directory_size, directory_offset)
        records += struct.pack("<4sLQL", b"PK\x06\x07", 0, end64_offset, 1)
        count, directory_size, directory_offset = (min(count, 0xFFFF), min(directory_size, 0xFFFFFFFF), min(directory_offset, 0xFFFFFFFF))
    return records + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, directory_size, directory_offset, 0)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
