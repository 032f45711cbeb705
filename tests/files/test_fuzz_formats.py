"""Property tests of the untrusted formats' structures: Hypothesis writes checkpoint tables, object
graphs, keras_metadata.pb records and --config documents, with valid checksums so that every
field reaches the code that reads it. Every outcome is a result or one clean `Error:` line with
exit 2: never an internal error (exit 3), never a hang (the budgets bound every loop).

The suite runs a seeded few dozen examples of each; a long run (2,000 each, see docs/security.md):

    GRUCLI_FUZZ_EXAMPLES=2000 python -m pytest -n 2 tests/files/test_fuzz_formats.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from conftest import sample
from crafted import (
    GRAPH_KEY,
    HEADER,
    VARIABLE,
    block,
    entry,
    field,
    graph_node,
    gru_checkpoint,
    saved_metadata,
    table,
)
from hypothesis import example, given
from hypothesis import strategies as st
from tests.files.test_fuzz import FUZZ, JSON_VALUES, _json_paths, _replace, assert_clean

KEY_PARTS = ["layer_with_weights-0", "layer-1", "cell", "cells", "0", "1", "²", "kernel", "recurrent_kernel", "bias",
             "forward_layer", "backward_layer", "optimizer", "variables", "a/b", "", ".ATTRIBUTES", "VARIABLE_VALUE", "\n"]
KEYS = st.lists(st.sampled_from(KEY_PARTS), min_size=0, max_size=5).map(lambda parts: "/".join(parts) + VARIABLE)
ENTRIES = st.one_of(
    st.builds(entry, st.sampled_from([1, 2, 3, 7, 14, 19, 0, 99]), st.lists(st.integers(0, 2**33), max_size=3),
              st.integers(0, 400), st.integers(0, 400)),
    st.builds(lambda dims: entry(1, dims, 0, 4 * (dims[0] * dims[1] if len(dims) == 2 else 0)),
              st.lists(st.integers(0, 12), min_size=2, max_size=2)),
    st.binary(max_size=24),
)


@FUZZ
@given(items=st.lists(st.tuples(KEYS, ENTRIES), max_size=12), shared=st.lists(st.integers(0, 40), max_size=14),
       header=st.one_of(st.just(HEADER), st.binary(max_size=6), st.none()), sort=st.booleans(),
       handles=st.one_of(st.none(), st.lists(st.integers(0, 1), min_size=1, max_size=4)), shard=st.binary(max_size=400))
def test_checkpoint_tables(items: list[tuple[str, bytes]], shared: list[int], header: bytes | None, sort: bool,
                           handles: list[int] | None, shard: bytes) -> None:
    pairs = [(key.encode(), value) for key, value in items] + ([(b"", header)] if header is not None else [])
    pairs = sorted(pairs) if sort else pairs
    common = [min(shared[i] if i < len(shared) else 0, len(key)) for i, (key, _) in enumerate(pairs)]
    half = len(pairs) // 2
    blocks = [block(pairs[:half], common[:half]), block(pairs[half:], [0] + common[half + 1:])]
    with tempfile.TemporaryDirectory() as folder:
        prefix = Path(folder) / "c"
        Path(f"{prefix}.index").write_bytes(table(blocks, handles))
        Path(f"{prefix}.data-00000-of-00001").write_bytes(shard)
        assert_clean(prefix)


NODE_NAMES = st.sampled_from(["layer_with_weights-0", "layer-0", "cell", "kernel", "recurrent_kernel", "bias", "cells", "0",
                              "optimizer", "variables", "forward_layer", "", "x" * 300, "\x1b", "layer-²"])
GRAPH_KEYS = st.sampled_from([f"layer_with_weights-0/cell/{n}{VARIABLE}" for n in ("kernel", "recurrent_kernel", "bias")]
                             + ["nothing", GRAPH_KEY, f"x{VARIABLE}"])


@FUZZ
@given(nodes=st.lists(st.tuples(st.lists(st.tuples(st.integers(-1, 12), NODE_NAMES), max_size=4), st.lists(GRAPH_KEYS, max_size=3)),
                      max_size=10),
       garbage=st.binary(max_size=8))
def test_object_graphs(nodes: list[tuple[list[tuple[int, str]], list[str]]], garbage: bytes) -> None:
    graph = b"".join(graph_node([(max(child, 0), name) for child, name in children], keys) for children, keys in nodes) + garbage
    with tempfile.TemporaryDirectory() as folder:
        gru_checkpoint(Path(folder) / "c", graph=graph)
        assert_clean(Path(folder) / "c")


BASE_CONFIG = {"class_name": "Sequential", "config": {"name": "s", "layers": [
    {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 5, 3], "name": "x"}},
    {"class_name": "GRU", "config": {"name": "gru", "units": 4, "reset_after": True}}]}}
RECORD_PATHS = st.sampled_from(["root", "root.layer-0", "root.layer_with_weights-0", "root.layer_with_weights-0.cell",
                                "root.layer-1", "other", "root.x", "root.layer-²"])


@FUZZ
@given(pick=st.floats(0, 1, exclude_max=True), value=JSON_VALUES,
       records=st.lists(st.tuples(RECORD_PATHS, st.one_of(JSON_VALUES, st.fixed_dictionaries(
           {"class_name": st.sampled_from(["GRU", "Lambda", "Dense", "Activation"]), "name": st.sampled_from(["gru", "x", "d"]),
            "config": JSON_VALUES}))), max_size=4),
       raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_keras_metadata_records(pick: float, value: Any, records: list[tuple[str, Any]], raw: bytes | None) -> None:
    paths = _json_paths(BASE_CONFIG)
    root = {"model_config": _replace(json.loads(json.dumps(BASE_CONFIG)), paths[int(pick * len(paths))], value),
            "keras_version": "2.21.0"}
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "sm"
        (model / "variables").mkdir(parents=True)
        (model / "saved_model.pb").write_bytes(b"")
        gru_checkpoint(model / "variables" / "variables")
        metadata = saved_metadata([("root", root), *records]) if raw is None else field(1, raw) + raw
        (model / "keras_metadata.pb").write_bytes(metadata)
        assert_clean(model)


def _keras3_config() -> dict[str, Any]:
    with zipfile.ZipFile(sample("k3_gru.keras")) as archive:
        return json.loads(archive.read("config.json"))


@FUZZ
@example(name="tfk_bidir_weights.h5", pick=0.1875, value=None)  # found by a long run: a Bidirectional wrapping null
@given(name=st.sampled_from(["k3_gru.weights.h5", "tfk_bidir_weights.h5"]), pick=st.floats(0, 1, exclude_max=True), value=JSON_VALUES)
def test_config_option_documents(name: str, pick: float, value: Any) -> None:
    if name == "k3_gru.weights.h5":
        config = _keras3_config()
    else:
        with zipfile.ZipFile(sample("k3_bidir_concat.keras")) as archive:  # a Bidirectional config for Keras 2 weights
            config = json.loads(archive.read("config.json"))
    paths = _json_paths(config)
    document = _replace(config, paths[int(pick * len(paths))], value)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(document))
        shutil.copy(sample(name), Path(folder) / name)
        assert_clean(Path(folder) / name, ["--config", str(Path(folder) / "config.json")])
