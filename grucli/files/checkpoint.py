"""TensorFlow checkpoints (`model.save_weights("ckpt")`, `ModelCheckpoint` without `.h5`), read
without TensorFlow.

A checkpoint is a tensor bundle: `PREFIX.index` is a table in LevelDB's format (blocks of
prefix-compressed keys with restart points, each block followed by its compression type and a
masked crc32c; a 48-byte footer pointing at the index block) whose values are
`BundleEntryProto` records (dtype, shape, shard, offset, size, crc32c), and
`PREFIX.data-0000K-of-0000N` shards hold the tensors' little-endian bytes. These are untrusted
files: every size, offset and count is checked before anything is allocated, every block and
tensor checksum is verified, and a file that breaks any of it is refused with one line.

The protobuf messages are decoded by the small wire-format reader here rather than the
`protobuf` package: four messages, a handful of fields, and no generated code to ship.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from grucli.errors import ModelFileError
from grucli.files.budget import Budget, check_shape
from grucli.files.regular import regular_file_size

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)
MAX_RANK = 32

# TensorFlow DataType values and the NumPy dtypes they are stored as (bfloat16 as raw uint16).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    14: np.dtype("<u2"),
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
BFLOAT16 = 14
STRING = 7


class CheckpointError(ModelFileError):
    """A checkpoint whose bytes break the format (the message says where)."""


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor of the bundle lies and what it should hold."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None


# --- the table (LevelDB format) --------------------------------------------------------------------------


MAX_KEY_BYTES = 65536  # TensorFlow's keys are object paths, a few hundred bytes at most


def read_index(prefix: Path, budget: Budget) -> dict[str, bytes]:
    """Every key and value of `PREFIX.index`, checksums verified, read as TensorFlow's reader reads
    it: keys strictly increasing (a repeated or out-of-order key is a corrupt table, not a second
    value to pick from), data blocks in file order, and the header entry (key "") present."""
    index_path = Path(f"{prefix}.index")
    where = str(index_path)
    budget.config(regular_file_size(index_path), where)
    data = index_path.read_bytes()
    if len(data) < FOOTER_SIZE:
        raise CheckpointError(f"{where} is {len(data)} bytes, shorter than a table footer ({FOOTER_SIZE}); the file is truncated")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack("<Q", footer[-8:])
    if magic != TABLE_MAGIC:
        raise CheckpointError(f"{where} does not end with a table's magic number; expected a TensorFlow checkpoint index")
    reader = _Bytes(footer[:-8], f"{where} footer")
    reader.varint()  # the metaindex block: empty in tensor bundles
    reader.varint()
    index_offset, index_size = reader.varint(), reader.varint()
    entries: dict[str, bytes] = {}
    previous_key: bytes | None = None
    next_block = 0  # data blocks lie one after another, before the index block
    for _, handle in _block_entries(data, index_offset, index_size, where):
        handle_reader = _Bytes(handle, f"{where} block handle")
        offset, size = handle_reader.varint(), handle_reader.varint()
        if offset < next_block:
            raise CheckpointError(
                f"{where}: the index points at a data block at offset {offset}, inside or before the one "
                "it listed earlier; the table is corrupt"
            )
        next_block = offset + size + BLOCK_TRAILER
        for key, value in _block_entries(data, offset, size, where):
            if previous_key is not None and key <= previous_key:
                order = "repeats" if key == previous_key else "comes before"
                raise CheckpointError(
                    f"{where}: key {_shown(key)} {order} the key before it ({_shown(previous_key)}); "
                    "TensorFlow writes each key once, in order: the table is corrupt"
                )
            previous_key = key
            entries[_decoded_key(key, where)] = value
            budget.entries(len(entries), where)
    if "" not in entries:
        raise CheckpointError(f"{where} has no header entry (the empty key); expected a TensorFlow checkpoint index")
    return entries


def _decoded_key(key: bytes, where: str) -> str:
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{where}: key {_shown(key)} is not UTF-8; TensorFlow's keys are text, the table is corrupt") from None
    if any(ord(character) < 32 or ord(character) == 127 for character in text):
        raise CheckpointError(f"{where}: key {_shown(key)} holds control characters; TensorFlow's keys are object paths")
    return text


def _shown(key: bytes) -> str:
    """A key for an error message: escaped, and cut short."""
    text = repr(key[:80])[1:]
    return text + ("…" if len(key) > 80 else "")


def _block_entries(data: bytes, offset: int, size: int, where: str) -> Iterator[tuple[bytes, bytes]]:
    if offset < 0 or size < 4 or offset + size + BLOCK_TRAILER > len(data):
        raise CheckpointError(f"{where}: a block at offset {offset} of {size} bytes lies past the end of the file ({len(data)} bytes)")
    contents = data[offset : offset + size]
    compression, stored_crc = data[offset + size], struct.unpack("<I", data[offset + size + 1 : offset + size + 5])[0]
    if _unmask(stored_crc) != google_crc32c.value(contents + bytes([compression])):
        raise CheckpointError(f"{where}: the block at offset {offset} fails its crc32c check; the file is corrupt")
    if compression != 0:
        raise CheckpointError(
            f"{where}: the block at offset {offset} is compressed (type {compression}); "
            "TensorFlow writes checkpoint indexes uncompressed, expected type 0"
        )
    (restarts,) = struct.unpack("<I", contents[-4:])
    end = size - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise CheckpointError(
            f"{where}: the block at offset {offset} declares {restarts} restart points, which do not fit its {size} bytes"
        )
    reader = _Bytes(contents[:end], f"{where} block at {offset}")
    key = b""
    while not reader.done():
        shared, unshared, value_size = reader.varint(), reader.varint(), reader.varint()
        if shared > len(key):
            raise CheckpointError(f"{where}: a key in the block at offset {offset} shares {shared} bytes with a {len(key)}-byte key")
        if shared + unshared > MAX_KEY_BYTES:
            raise CheckpointError(
                f"{where}: a key in the block at offset {offset} is {shared + unshared} bytes long, over "
                f"{MAX_KEY_BYTES}; TensorFlow's keys are object paths, the table is crafted or corrupt"
            )
        key = key[:shared] + reader.take(unshared)
        yield key, reader.take(value_size)


CRC_CHUNK = 16 * 2**20


def _crc32c(data: memoryview) -> int:
    """crc32c of a buffer, a bounded chunk at a time (the C extension takes only read-only bytes)."""
    crc = 0
    for start in range(0, len(data), CRC_CHUNK):
        crc = google_crc32c.extend(crc, bytes(data[start : start + CRC_CHUNK]))
    return crc


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _unmask(masked: int) -> int:
    """LevelDB's and TensorFlow's crc32c masking, undone."""
    rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# --- protobuf wire format ------------------------------------------------------------------------------------


class _Bytes:
    """A cursor over untrusted bytes: varints, lengths and fields, each bounded."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.position, self.where = data, 0, where

    def done(self) -> bool:
        return self.position >= len(self.data)

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.position >= len(self.data):
                raise CheckpointError(f"{self.where}: a number runs past the end of its bytes; the file is truncated or corrupt")
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CheckpointError(f"{self.where}: a number is longer than 10 bytes; the file is corrupt")

    def take(self, count: int) -> bytes:
        if count < 0 or self.position + count > len(self.data):
            raise CheckpointError(
                f"{self.where}: {count} bytes are declared where {len(self.data) - self.position} remain; the file is truncated or corrupt"
            )
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def fields(self) -> Iterator[tuple[int, int | bytes]]:
        """(field number, value) of a message: varints and fixed numbers as int, the rest as bytes."""
        while not self.done():
            tag = self.varint()
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                yield number, self.varint()
            elif wire == 1:
                yield number, struct.unpack("<Q", self.take(8))[0]
            elif wire == 2:
                yield number, self.take(self.varint())
            elif wire == 5:
                yield number, struct.unpack("<I", self.take(4))[0]
            else:
                raise CheckpointError(f"{self.where}: protobuf wire type {wire} (field {number}) is not one TensorFlow writes here")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_entry(value: bytes, name: str) -> BundleEntry:
    """A `BundleEntryProto`: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    where = f"checkpoint entry {name!r}"
    dtype, shard, offset, size, crc = 0, 0, 0, 0, None
    shape: tuple[int, ...] = ()
    for number, field in _Bytes(value, where).fields():
        if number == 1 and isinstance(field, int):
            dtype = field
        elif number == 2 and isinstance(field, bytes):
            shape = _shape(field, where)
        elif number == 3 and isinstance(field, int):
            shard = field
        elif number == 4 and isinstance(field, int):
            offset = _signed(field)
        elif number == 5 and isinstance(field, int):
            size = _signed(field)
        elif number == 6 and isinstance(field, int):
            crc = field
        elif number == 7:
            raise CheckpointError(f"{where} is a partitioned variable (slices); grucli reads whole tensors only")
    if offset < 0 or size < 0:
        raise CheckpointError(f"{where} declares offset {offset} and size {size}; expected non-negative numbers")
    return BundleEntry(dtype, shape, shard, offset, size, crc)


def _shape(value: bytes, where: str) -> tuple[int, ...]:
    """A `TensorShapeProto`: dim 2 (each: size 1), unknown_rank 3."""
    dims: list[int] = []
    for number, field in _Bytes(value, where).fields():
        if number == 2 and isinstance(field, bytes):
            size = 0
            for dim_number, dim_field in _Bytes(field, where).fields():
                if dim_number == 1 and isinstance(dim_field, int):
                    size = _signed(dim_field)
            if size < 0:
                raise CheckpointError(f"{where} has a dimension of size {size}; expected a known size")
            dims.append(size)
            if len(dims) > MAX_RANK:
                raise CheckpointError(f"{where} has more than {MAX_RANK} dimensions")
        elif number == 3 and field:
            raise CheckpointError(f"{where} has an unknown rank; expected a known shape")
    return tuple(dims)


def parse_header(value: bytes) -> int:
    """The shard count of a `BundleHeaderProto` (num_shards 1, endianness 2), little-endian only."""
    shards, endianness = 1, 0
    for number, field in _Bytes(value, "checkpoint header").fields():
        if number == 1 and isinstance(field, int):
            shards = field
        elif number == 2 and isinstance(field, int):
            endianness = field
    if endianness != 0:
        raise CheckpointError("the checkpoint was written big-endian; grucli reads little-endian checkpoints")
    if not 1 <= shards <= 100_000:
        raise CheckpointError(f"the checkpoint header declares {shards} data shards; expected 1 to 100000")
    return shards


# --- tensors -------------------------------------------------------------------------------------------------


def read_variables(
    prefix: Path, shards: int, entries: dict[str, bytes], key_paths: Mapping[str, str], budget: Budget
) -> list[tuple[str, np.ndarray]]:
    """The model's variables (object path → values), every one charged and placed before any is read:
    their count, each size and their total against the budget, and their byte ranges, which in a
    bundle TensorFlow wrote never overlap (a file whose variables all point at the same bytes
    would otherwise cost its declared size many times over)."""
    found = list(model_variables(entries, key_paths))
    budget.variables(len(found), f"{prefix}.index")
    for name, entry in found:
        budget.array(_checked_size(entry, name), f"checkpoint variable {name!r}")
    _refuse_overlaps(found)
    return [(name, read_tensor(prefix, shards, entry, name)) for name, entry in found]


def _checked_size(entry: BundleEntry, name: str) -> int:
    """The bytes an entry's shape and dtype need, which must be the bytes it says it stores."""
    check_shape(entry.shape, f"checkpoint variable {name!r}")
    if entry.dtype not in DTYPES:
        kind = "a string tensor" if entry.dtype == STRING else f"dtype {entry.dtype}"
        raise CheckpointError(f"checkpoint variable {name!r} is {kind}; expected a numeric weight")
    needed = math.prod(entry.shape) * DTYPES[entry.dtype].itemsize
    if needed != entry.size:
        raise CheckpointError(
            f"checkpoint variable {name!r} declares shape {entry.shape} ({needed} bytes) but {entry.size} bytes; the file is inconsistent"
        )
    return needed * (2 if entry.dtype == BFLOAT16 else 1)  # bfloat16 is widened to float32


def _refuse_overlaps(found: list[tuple[str, BundleEntry]]) -> None:
    placed = sorted((entry.shard, entry.offset, entry.offset + entry.size, name) for name, entry in found if entry.size)
    for (shard, _, end, name), (next_shard, start, _, next_name) in itertools.pairwise(placed):
        if shard == next_shard and start < end:
            raise CheckpointError(
                f"checkpoint variables {name!r} and {next_name!r} share bytes of data shard {shard}; "
                "TensorFlow stores each variable in its own bytes, the file is crafted or corrupt"
            )


def read_tensor(prefix: Path, shards: int, entry: BundleEntry, name: str) -> np.ndarray:
    """One numeric tensor's values, bounds and checksum verified; bfloat16 widened to float32. The
    bytes are read straight into the array (no second copy of a big variable)."""
    _checked_size(entry, name)
    dtype = DTYPES[entry.dtype]
    values = np.empty(entry.shape, dtype=dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype)
    _read_shard_into(prefix, shards, entry, name, memoryview(values.reshape(-1).view(np.uint8).data))
    if entry.dtype == BFLOAT16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values if values.dtype.isnative else values.astype(dtype.newbyteorder("="))


def _shard_path(prefix: Path, shards: int, entry: BundleEntry, name: str) -> Path:
    if not 0 <= entry.shard < shards:
        raise CheckpointError(f"checkpoint variable {name!r} is in shard {entry.shard} of a {shards}-shard checkpoint")
    shard = Path(f"{prefix}.data-{entry.shard:05d}-of-{shards:05d}")
    if not shard.exists():
        raise CheckpointError(f"{shard} is missing; a checkpoint needs every data shard beside its .index")
    stored = regular_file_size(shard)
    if entry.offset + entry.size > stored:
        raise CheckpointError(
            f"checkpoint variable {name!r} lies at bytes {entry.offset}..{entry.offset + entry.size} of {shard}, "
            f"which has {stored}; the file is truncated"
        )
    return shard


def _read_shard_into(prefix: Path, shards: int, entry: BundleEntry, name: str, target: memoryview) -> None:
    """A tensor's bytes from its data shard into `target`, bounds and crc32c checked."""
    shard = _shard_path(prefix, shards, entry, name)
    with shard.open("rb", buffering=0) as handle:
        handle.seek(entry.offset)
        got = 0
        while got < entry.size:
            count = handle.readinto(target[got:])
            if not count:
                raise CheckpointError(f"{shard} ended before the bytes of checkpoint variable {name!r}; the file is truncated")
            got += count
    if entry.crc32c is not None and _unmask(entry.crc32c) != _crc32c(target):
        raise CheckpointError(f"checkpoint variable {name!r} fails its crc32c check; {shard} is corrupt")


VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# Object-graph children that are not the model's layers: lists of the same variables, the
# optimizer, saving machinery. A variable is named by its path through the layers.
NOT_LAYERS = {
    "variables",
    "trainable_variables",
    "non_trainable_variables",
    "optimizer",
    "keras_api",
    "save_counter",
    "_default_save_signature",
    "signatures",
    "_self_saveable_object_factories",
    "_trackable_saved_model_saver",
}
MAX_GRAPH_NODES = 1_000_000


def model_variables(entries: dict[str, bytes], key_paths: Mapping[str, str]) -> Iterator[tuple[str, BundleEntry]]:
    """The model's own variables, each named by its object path (`layer_with_weights-0/cell/kernel`);
    optimizer state, slots and counters are skipped. The names come from the object graph's
    `key_paths` (a SavedModel keys its variables `variables/N`); without a graph, from the keys."""
    for key in sorted(entries):
        if not key.endswith(VARIABLE_SUFFIX) or ".OPTIMIZER_SLOT" in key:
            continue
        path = key_paths.get(key, key[: -len(VARIABLE_SUFFIX)])
        if path.split("/")[0] in NOT_LAYERS or (key_paths and key not in key_paths):
            continue
        yield path, parse_entry(entries[key], key)


@dataclass(frozen=True)
class ObjectGraph:
    """The checkpoint's object graph: each node's children (node, local name), and the path every
    reachable node is named by (the shortest through layers)."""

    children: list[list[tuple[int, str]]]
    node_paths: dict[int, str]


MAX_GRAPH_DEPTH = 1000  # nesting of objects: model → layer → cell → variable, a few dozen at most in real files
MAX_PATH_BYTES = 4096  # an object path built from local names; real ones are a few hundred bytes


def object_graph(prefix: Path, shards: int, entries: dict[str, bytes], budget: Budget) -> tuple[ObjectGraph, dict[str, str]] | None:
    """The object graph and, for each checkpoint key, the path of its variable; None without a graph.

    Bounded before the walk: the graph's bytes (as metadata), its nodes (as entries), and the
    depth and length of every path (a 40,000-deep chain would otherwise build quadratic strings)."""
    if OBJECT_GRAPH_KEY not in entries:
        return None
    graph = _string_scalar(prefix, shards, parse_entry(entries[OBJECT_GRAPH_KEY], OBJECT_GRAPH_KEY), budget)
    nodes: list[tuple[list[tuple[int, str]], list[str]]] = []  # (children, checkpoint keys) per node
    for number, field in _Bytes(graph, "checkpoint object graph").fields():
        if number == 1 and isinstance(field, bytes):
            nodes.append(_trackable_object(field))
            budget.entries(len(nodes), "the checkpoint object graph")
    if not nodes:
        return ObjectGraph([], {}), {}
    # Breadth first, so a cyclic graph ends and each object gets its shortest path; lists of
    # variables and the optimizer are not followed.
    key_paths: dict[str, str] = {}
    node_paths = {0: ""}
    frontier, depth = [0], 0
    while frontier:
        depth += 1
        following = []
        for node in frontier:
            for key in nodes[node][1]:
                key_paths.setdefault(key, node_paths[node])
            for child, name in nodes[node][0]:
                if name in NOT_LAYERS or child in node_paths:
                    continue
                if not 0 <= child < len(nodes):
                    raise CheckpointError(f"the checkpoint object graph refers to node {child} of {len(nodes)}")
                path = f"{node_paths[node]}/{name}" if node_paths[node] else name
                if depth > MAX_GRAPH_DEPTH or len(path) > MAX_PATH_BYTES:
                    raise CheckpointError(
                        f"the checkpoint object graph nests objects more than {MAX_GRAPH_DEPTH} deep or names one "
                        f"by a path over {MAX_PATH_BYTES} bytes; the file is crafted or corrupt"
                    )
                node_paths[child] = path
                following.append(child)
        frontier = following
    variables = {key: path for key, path in key_paths.items() if key.endswith(VARIABLE_SUFFIX)}
    _refuse_shared_paths(variables)
    return ObjectGraph([children for children, _ in nodes], node_paths), variables


def _refuse_shared_paths(variables: Mapping[str, str]) -> None:
    """Each variable object holds one value: two keys at one path would leave one of them unread."""
    seen: dict[str, str] = {}
    for key, path in sorted(variables.items()):
        if path in seen:
            raise CheckpointError(
                f"the checkpoint object graph gives keys {seen[path]!r} and {key!r} the same object "
                f"({path or 'the root'}); each variable object holds one value, the file is corrupt"
            )
        seen[path] = key


ROOT_CONFIG_KEY = ".ATTRIBUTES/OBJECT_CONFIG_JSON"


def stored_config(prefix: Path, shards: int, entries: dict[str, bytes], budget: Budget) -> bytes | None:
    """The root object's own config, which early TF 2 checkpoints stored beside its variables
    (`Trackable._gather_saveables_for_checkpoint`: json.dumps of {"class_name", "config"}), or None."""
    if ROOT_CONFIG_KEY not in entries:
        return None
    return _string_scalar(prefix, shards, parse_entry(entries[ROOT_CONFIG_KEY], ROOT_CONFIG_KEY), budget, ROOT_CONFIG_KEY)


def _object_reference(value: bytes, where: str) -> tuple[int, str]:
    """An `ObjectReference` (a checkpoint's and a SavedModel's alike): node_id 1, local_name 2."""
    node, name = 0, ""  # proto3 leaves node_id 0 unwritten
    for number, item in _Bytes(value, where).fields():
        if number == 1 and isinstance(item, int):
            node = item
        elif number == 2 and isinstance(item, bytes):
            name = item.decode("utf-8", "replace")
    return node, name


def _trackable_object(value: bytes) -> tuple[list[tuple[int, str]], list[str]]:
    """A `TrackableObject`: children 1 (node_id 1, local_name 2), attributes 2 (checkpoint_key 3)."""
    children, keys = [], []
    for number, field in _Bytes(value, "checkpoint object graph node").fields():
        if number == 1 and isinstance(field, bytes):
            children.append(_object_reference(field, "checkpoint object reference"))
        elif number == 2 and isinstance(field, bytes):
            for inner, item in _Bytes(field, "checkpoint object attribute").fields():
                if inner == 3 and isinstance(item, bytes):
                    keys.append(item.decode("utf-8", "replace"))
    return children, keys


def _string_scalar(prefix: Path, shards: int, entry: BundleEntry, budget: Budget, key: str = OBJECT_GRAPH_KEY) -> bytes:
    """A scalar string tensor: its length (varint), the masked crc32c of that length as a uint32,
    then the bytes. The entry's checksum covers the length as a uint32, that checksum and the bytes."""
    if entry.dtype != STRING or entry.shape != ():
        raise CheckpointError(f"the checkpoint's {key} is not a string scalar; the file is inconsistent")
    budget.config(entry.size, f"the checkpoint's {key}")
    buffer = bytearray(entry.size)
    _read_shard_into(prefix, shards, dataclasses.replace(entry, crc32c=None), key, memoryview(buffer))
    raw = bytes(buffer)
    where = f"the checkpoint's {key}"
    reader = _Bytes(raw, where)
    length = reader.varint()
    length_checksum = reader.take(4)
    value = reader.take(length)
    if not reader.done() or length > 0xFFFFFFFF:
        raise CheckpointError(f"{where} holds {len(raw)} bytes for a {length}-byte string; the file is inconsistent")
    as_uint32 = struct.pack("<I", length)
    if struct.unpack("<I", length_checksum)[0] != _mask(google_crc32c.value(as_uint32)) or (
        entry.crc32c is not None and _unmask(entry.crc32c) != google_crc32c.value(as_uint32 + length_checksum + value)
    ):
        raise CheckpointError(f"{where} fails its crc32c check; the data shard is corrupt")
    return value


# --- SavedModel metadata -------------------------------------------------------------------------------------


def saved_model_layers(folder: Path, budget: Budget) -> dict[str, str]:
    """`keras_metadata.pb` of a SavedModel folder: object path (`layer_with_weights-0/forward_layer`)
    → that object's JSON metadata (name, class, config). The root's path is ""."""
    metadata = folder / "keras_metadata.pb"
    budget.config(regular_file_size(metadata), str(metadata))
    found: dict[str, str] = {}
    for number, field in _Bytes(metadata.read_bytes(), str(metadata)).fields():
        if number != 1 or not isinstance(field, bytes):
            continue
        node_path, json_text = None, None
        for inner, item in _Bytes(field, f"{metadata} node").fields():  # SavedObject: node_path 3, metadata 5
            if inner == 3 and isinstance(item, bytes):
                node_path = item.decode("utf-8", "replace")
            elif inner == 5 and isinstance(item, bytes):
                json_text = item.decode("utf-8", "replace")
        if node_path is not None and json_text is not None and (node_path == "root" or node_path.startswith("root.")):
            found[node_path[5:].replace(".", "/")] = json_text
    return found


def saved_model_pb_layers(folder: Path, budget: Budget) -> dict[str, str]:
    """The Keras metadata TF 2.0-2.4 kept in saved_model.pb, before keras_metadata.pb existed: each
    Keras object's JSON in its `SavedUserObject.metadata`, found by the object's path (children's
    local names from the root, shortest first). The same mapping `saved_model_layers` returns.

    SavedModel: meta_graphs 2 → MetaGraphDef: object_graph_def 7 → SavedObjectGraph: nodes 1 →
    SavedObject: children 1 (node_id 1, local_name 2), user_object 4 (identifier 1, metadata 3)."""
    pb = folder / "saved_model.pb"
    budget.config(regular_file_size(pb), str(pb))
    nodes: list[tuple[list[tuple[int, str]], str | None]] = []
    for number, meta_graph in _Bytes(pb.read_bytes(), str(pb)).fields():
        if number != 2 or not isinstance(meta_graph, bytes):
            continue
        for inner, graph in _Bytes(meta_graph, f"{pb} meta graph").fields():
            if inner == 7 and isinstance(graph, bytes):
                nodes = [
                    _saved_object(node)
                    for field_number, node in _Bytes(graph, f"{pb} object graph").fields()
                    if field_number == 1 and isinstance(node, bytes)
                ]
                budget.entries(len(nodes), f"{pb} object graph")
        break  # the first meta graph is the one Keras saved (tag "serve")
    found: dict[str, str] = {}
    paths = {0: ""} if nodes else {}
    frontier = [0] if nodes else []
    while frontier:
        following = []
        for node in frontier:
            metadata = nodes[node][1]
            if metadata:
                found[paths[node]] = metadata
            for child, name in nodes[node][0]:
                if 0 <= child < len(nodes) and child not in paths and len(paths[node]) + len(name) < MAX_PATH_BYTES:
                    paths[child] = f"{paths[node]}/{name}" if paths[node] else name
                    following.append(child)
        frontier = following
    return found


def _saved_object(value: bytes) -> tuple[list[tuple[int, str]], str | None]:
    children, metadata = [], None
    for number, field in _Bytes(value, "saved_model.pb object").fields():
        if number == 1 and isinstance(field, bytes):
            children.append(_object_reference(field, "saved_model.pb object reference"))
        elif number == 4 and isinstance(field, bytes):
            for inner, item in _Bytes(field, "saved_model.pb user object").fields():
                if inner == 3 and isinstance(item, bytes) and item:
                    metadata = item.decode("utf-8", "replace")
    return children, metadata
