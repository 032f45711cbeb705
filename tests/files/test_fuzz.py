"""Property tests: mutated sample files give a correct result or a clean `Error:` and exit 2.

Hypothesis flips bytes, cuts files, rewrites config values, attributes and weight shapes.
"Clean" means one line, no traceback, and not the catch-all "unexpected" error (which would
mean an exception no check foresaw). The normal suite runs a seeded few hundred cases; a
long run:

    GRUCLI_FUZZ_EXAMPLES=5000 python -m pytest tests/files/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import sample
from grucli.cli import cli

EXAMPLES = int(os.environ.get("GRUCLI_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FILES = ["k3_gru.keras", "k3_bidir_concat.keras", "k3_stacked_cells.weights.h5", "tfk_nested.h5", "keras1_lstm.h5",
         "cudnn_gru_weights.h5", "k3_masking.keras", "tfk_bidir_weights.h5"]
NO_NUL = st.characters(blacklist_characters="\x00")  # HDF5 strings cannot hold NUL
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**9) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def assert_clean(path: Path, extra: Sequence[str] = ()) -> None:
    """Every command on `path` (with `extra` options) gives a result or one clean `Error:` line."""
    out = Path(tempfile.mkdtemp())
    try:
        for args, ok in (
            (["inspect", str(path), "--json"], (0,)),
            (["inspect", str(path), "--values"], (0,)),
            (["export", str(path), "-o", str(out / "g.npz")], (0,)),
            (["export", str(path), "--layout", "torch", "--approximate", "-o", str(out / "t.npz")], (0,)),
            (["check", str(path)], (0, 1)),
            (["replay", str(path), "-o", str(out / "y.npy"), "--timesteps", "3", "--batch", "2"], (0,)),
        ):
            result = CliRunner().invoke(cli, [*args, *extra])
            if result.exit_code in ok:
                if args[-1] == "--json":
                    json.loads(result.stdout)
                continue
            assert result.exit_code == 2, (args, result.exit_code, result.stderr, result.exception)
            assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, (args, result.stderr)
            assert "unexpected" not in result.stderr, (args, result.stderr)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@FUZZ
@example(name="k3_stacked_cells.weights.h5", flips=[(0.5, 128)])  # a group member named with invalid UTF-8 (bytes)
@given(name=st.sampled_from(FILES), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes(name: str, flips: list[tuple[float, int]]) -> None:
    data = bytearray(sample(name).read_bytes())
    for where, value in flips:
        data[int(where * len(data))] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(bytes(data))
        assert_clean(path)


@FUZZ
@given(name=st.sampled_from(FILES), cut=st.floats(0, 1, exclude_max=True))
def test_truncated(name: str, cut: float) -> None:
    data = sample(name).read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data[: int(cut * len(data))])
        assert_clean(path)


def _json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _json_paths(item, prefix + (index,))
    return paths


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = value.copy() if isinstance(value, (dict, list)) else value
    copy[path[0]] = _replace(copy[path[0]], path[1:], new)
    return copy


@FUZZ
@example(name="keras1_gru.h5", pick=0.5, value=-1.0)  # found by a long run: a negative input dimension
@given(name=st.sampled_from(["k3_gru.keras", "k3_nested.keras", "k3_bidir_sum.keras", "tfk_nested.h5", "keras1_gru.h5", "tfk_stacked_cells.h5"]),
       pick=st.floats(0, 1, exclude_max=True), value=JSON_VALUES)
def test_config_values_rewritten(name: str, pick: float, value: Any) -> None:
    source = sample(name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        if name.endswith(".keras"):
            with zipfile.ZipFile(source) as archive:
                members = {n: archive.read(n) for n in archive.namelist()}
            config = json.loads(members["config.json"])
            paths = _json_paths(config)
            members["config.json"] = json.dumps(_replace(config, paths[int(pick * len(paths))], value)).encode()
            with zipfile.ZipFile(path, "w") as archive:
                for member, data in members.items():
                    archive.writestr(member, data)
        else:
            shutil.copy(source, path)
            with h5py.File(path, "r+") as f:
                config = json.loads(f.attrs["model_config"])
                paths = _json_paths(config)
                f.attrs["model_config"] = json.dumps(_replace(config, paths[int(pick * len(paths))], value))
        assert_clean(path)


@FUZZ
@example(name="k3_gru.h5", pick=0.3, shape=[7, 3], dtype="float32", special=None)  # a Dense kernel that fits no input
@given(name=st.sampled_from(["tfk_gru.h5", "tfk_bidir.h5", "k3_lstm.h5", "tfk_bidir_weights.h5", "k3_gru.weights.h5", "keras1_lstm.h5",
                             "k3_gru.h5", "tfk_nested.h5"]),
       pick=st.floats(0, 1, exclude_max=True),
       shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
       dtype=st.sampled_from(["float32", "float16", "float64", "int8", "bool"]),
       special=st.sampled_from([None, np.nan, np.inf, -np.inf, 1e30]))
def test_weight_shapes_and_dtypes_rewritten(name: str, pick: float, shape: list[int], dtype: str, special: float | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        shutil.copy(sample(name), path)
        with h5py.File(path, "r+") as f:
            datasets: list[str] = []
            f.visititems(lambda key, item: datasets.append(key) if isinstance(item, h5py.Dataset) else None)
            target = datasets[int(pick * len(datasets))]
            values = np.ones(shape, dtype=np.float64) * 0.5
            if special is not None and values.size:
                values.flat[0] = special
            del f[target]
            with np.errstate(invalid="ignore", over="ignore"):  # NaN, Inf or 1e30 cast to a narrower dtype: any value will do
                f[target] = values.astype(dtype) if dtype != "bool" else values > 0
        assert_clean(path)


@FUZZ
@example(name="tfk_gru.h5", attribute="keras_version", value="²")  # found by a long run: "²".isdigit() is True
@example(name="tfk_gru.h5", attribute="keras_version", value=b"\x80")  # invalid UTF-8
@given(name=st.sampled_from(["tfk_gru.h5", "keras1_gru.h5", "tfk_bidir_weights.h5"]),
       attribute=st.sampled_from(["weight_names", "layer_names", "keras_version", "backend"]),
       value=st.one_of(st.lists(st.text(NO_NUL, max_size=12), max_size=4), st.text(NO_NUL, max_size=12), st.integers(), st.binary(max_size=12)))
def test_attributes_rewritten(name: str, attribute: str, value: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        shutil.copy(sample(name), path)
        with h5py.File(path, "r+") as f:
            groups: list[h5py.Group] = [f]
            f.visititems(lambda key, item: groups.append(item) if isinstance(item, h5py.Group) and attribute in item.attrs else None)
            for group in groups:
                if attribute in group.attrs:
                    try:
                        group.attrs[attribute] = value
                    except (TypeError, ValueError):
                        group.attrs[attribute] = str(value)
        assert_clean(path)


@FUZZ
@given(
    dtype=st.integers(0, 30), shape=st.lists(st.integers(0, 2**40), max_size=4), offset=st.integers(0, 2**62),
    size=st.integers(0, 2**62), garbage=st.binary(max_size=12), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=3),
)
def test_checkpoint_entries_rewritten(dtype: int, shape: list[int], offset: int, size: int, garbage: bytes,
                                      flips: list[tuple[float, int]]) -> None:
    """A crafted TensorFlow checkpoint whose kernel entry claims anything (checksums kept valid, so
    every field is read), then a few bytes of its index flipped (checksums then fail)."""
    from tests.files.test_checkpoint import _entry, _gru_items, write_bundle

    folder = Path(tempfile.mkdtemp())
    try:
        items, shard = _gru_items(_entry(dtype, tuple(shape), offset, size) + garbage)
        write_bundle(folder / "c", items, shard)
        assert_clean(folder / "c")
        index = folder / "c.index"
        data = bytearray(index.read_bytes())
        for where, value in flips:
            data[min(int(where * len(data)), len(data) - 1)] ^= value
        index.write_bytes(bytes(data))
        assert_clean(folder / "c")
    finally:
        shutil.rmtree(folder)
