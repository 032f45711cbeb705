"""Crafted files for the security tests: TensorFlow checkpoint tables written byte by byte (so a
test can break exactly one rule TensorFlow's writer keeps), object graphs, keras_metadata.pb
records and HDF5 files whose config and weights disagree. Written here, as an attacker would;
grucli's own reader never writes them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Sequence

import google_crc32c
import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
VARIABLE = "/.ATTRIBUTES/VARIABLE_VALUE"
GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def entry(dtype: int, shape: Sequence[int], offset: int, size: int, crc: int | None = None) -> bytes:
    """A BundleEntryProto: dtype 1, shape 2, offset 4, size 5, crc32c 6."""
    dims = b"".join(field(2, field(1, d)) for d in shape)
    body = field(1, dtype) + field(2, dims) + field(4, offset) + field(5, size)
    return body + (varint(6 << 3 | 5) + struct.pack("<I", crc) if crc is not None else b"")


def float_entry(values: np.ndarray, offset: int) -> bytes:
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return entry(1, values.shape, offset, len(data), mask(google_crc32c.value(data)))


HEADER = field(1, 1)  # BundleHeaderProto: one shard, little-endian


def block(items: Sequence[tuple[bytes, bytes]], shared: Sequence[int] | None = None) -> bytes:
    """A table block; `shared[i]` bytes of item i's key are taken from the previous key (prefix
    compression), as given: a crafted block may share more than the keys have in common."""
    body = bytearray()
    previous = b""
    for index, (key, value) in enumerate(items):
        common = shared[index] if shared is not None else 0
        body += varint(common) + varint(len(key) - common) + varint(len(value)) + key[common:] + value
        previous = key
    del previous
    return bytes(body) + struct.pack("<I", 0) + struct.pack("<I", 1)


def table(data_blocks: Sequence[bytes], handles: Sequence[int] | None = None) -> bytes:
    """An index file: the data blocks, an index block pointing at them (`handles` picks which block
    each index entry points at, in order; default one each), an empty metaindex and the footer."""
    out = bytearray()

    def append(contents: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(contents + b"\x00" + struct.pack("<I", mask(google_crc32c.value(contents + b"\x00"))))
        return offset, len(contents)

    placed = [append(contents) for contents in data_blocks]
    chosen = [placed[i] for i in (handles if handles is not None else range(len(placed)))]
    index_items = [(f"~{i:09d}".encode(), varint(offset) + varint(size)) for i, (offset, size) in enumerate(chosen)]
    index_offset, index_size = append(block(index_items))
    meta_offset, meta_size = append(block([]))
    footer = varint(meta_offset) + varint(meta_size) + varint(index_offset) + varint(index_size)
    out.extend(footer.ljust(40, b"\x00") + struct.pack("<Q", TABLE_MAGIC))
    return bytes(out)


def write_checkpoint(prefix: Path, items: Sequence[tuple[str, bytes]], shard: bytes, sort: bool = True) -> Path:
    """`PREFIX.index` holding `items` in one data block (sorted unless told not to) and one shard."""
    pairs = [(key.encode(), value) for key, value in items]
    Path(f"{prefix}.index").write_bytes(table([block(sorted(pairs) if sort else pairs)]))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(shard)
    return prefix


def gru_checkpoint(prefix: Path, extra: Sequence[tuple[str, bytes]] = (), graph: bytes | None = None,
                   sort: bool = True) -> Path:
    """A GRU(4) on 3 features (kernel, recurrent kernel, bias) keyed as tf.keras names them."""
    rng = np.random.default_rng(0)
    arrays = {"kernel": rng.normal(size=(3, 12)), "recurrent_kernel": rng.normal(size=(4, 12)), "bias": rng.normal(size=(2, 12))}
    shard = bytearray()
    items: list[tuple[str, bytes]] = [("", HEADER)]
    for name, values in arrays.items():
        items.append((f"layer_with_weights-0/cell/{name}{VARIABLE}", float_entry(values, len(shard))))
        shard += np.asarray(values, "<f4").tobytes()
    if graph is not None:
        length = struct.pack("<I", len(graph))
        checksum = struct.pack("<I", mask(google_crc32c.value(length)))
        stored = varint(len(graph)) + checksum + graph
        items.append((GRAPH_KEY, entry(7, (), len(shard), len(stored), mask(google_crc32c.value(length + checksum + graph)))))
        shard += stored
    return write_checkpoint(prefix, [*items, *extra], bytes(shard), sort)


def graph_node(children: Sequence[tuple[int, str]] = (), keys: Sequence[str] = ()) -> bytes:
    """A TrackableObject: children (node_id 1, local_name 2) and attributes (name 1, checkpoint_key 3)."""
    body = b"".join(field(1, field(1, node) + field(2, name.encode())) for node, name in children)
    body += b"".join(field(2, field(1, b"VARIABLE_VALUE") + field(3, key.encode())) for key in keys)
    return field(1, body)


def gru_graph(bias_key_also_on_kernel: bool = False) -> bytes:
    """root → layer_with_weights-0 → cell → kernel, recurrent_kernel, bias (nodes 0..5)."""
    keys = {name: f"layer_with_weights-0/cell/{name}{VARIABLE}" for name in ("kernel", "recurrent_kernel", "bias")}
    kernel_keys = [keys["kernel"], keys["bias"]] if bias_key_also_on_kernel else [keys["kernel"]]
    return b"".join([
        graph_node([(1, "layer_with_weights-0")]),
        graph_node([(2, "cell")]),
        graph_node([(3, "kernel"), (4, "recurrent_kernel"), (5, "bias")]),
        graph_node(keys=kernel_keys), graph_node(keys=[keys["recurrent_kernel"]]), graph_node(keys=[keys["bias"]]),
    ])


def saved_metadata(records: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """keras_metadata.pb: SavedMetadata{nodes 1: SavedObject{node_path 3, metadata 5}}."""
    return b"".join(field(1, field(3, path.encode()) + field(5, json.dumps(document).encode())) for path, document in records)
