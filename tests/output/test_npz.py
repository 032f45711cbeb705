"""The .npz writer against numpy's own `np.savez`, `np.load`, zipfile's CRC check and `unzip -t`.

Members are filled block by block in interleaved order, as `export` fills a layer's gates from
one pass over each matrix; the result must read back exactly like `np.savez` of whole arrays.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grucli.model import gates
from grucli.output import npz
from grucli.output.formats import write_npz, write_npz_pieces
from grucli.model.records import ArraySpec, RecurrentLayer

ARRAYS = {
    "gru/z/kernel": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
    "half": np.array([1.5, -2.25], dtype=np.float16),
    "double": np.linspace(-1, 1, 5),
    "ints": np.arange(-3, 3, dtype=np.int8),
    "flags": np.array([True, False]),
    "scalar": np.array(3.25),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "text": np.array("nn.GRU(input_size=3, hidden_size=4)"),
    "ünïcode/ключ": np.ones((2, 2), dtype=np.float64),
}


def assert_same_as_savez(path: Path, arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    reference = tmp_path / "reference.npz"
    np.savez(reference, **arrays)
    with np.load(reference) as expected, np.load(path) as actual:
        assert list(actual.keys()) == list(expected.keys())
        for key in expected:
            assert actual[key].dtype == expected[key].dtype, key
            assert actual[key].shape == expected[key].shape, key
            assert np.array_equal(actual[key], expected[key]), key
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every member's CRC checked
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())


def test_whole_arrays_read_back_like_savez(tmp_path: Path) -> None:
    path = tmp_path / "out.npz"
    write_npz(path, ARRAYS)
    assert_same_as_savez(path, ARRAYS, tmp_path)


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_unzip_accepts_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "out.npz"
    write_npz(path, ARRAYS)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout


def interleaved(arrays: list[np.ndarray], rows_per_block: int) -> Iterator[tuple[int, np.ndarray]]:
    """Block b of every member before block b + 1 of any: the order export writes gates in."""
    longest = max(len(array) for array in arrays)
    for start in range(0, longest, rows_per_block):
        for index, array in enumerate(arrays):
            if start < len(array):
                yield index, array[start : start + rows_per_block]


def test_interleaved_blocks_fill_each_member_in_place(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {f"m{index}": rng.standard_normal((rows, 5)).astype(np.float32) for index, rows in enumerate((7, 1, 12, 5))}
    specs = [ArraySpec(key, value.shape, value.dtype) for key, value in arrays.items()]
    path = tmp_path / "out.npz"
    write_npz_pieces(path, specs, interleaved(list(arrays.values()), rows_per_block=3))
    assert_same_as_savez(path, arrays, tmp_path)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    shapes=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 4)), min_size=1, max_size=6),
    rows_per_block=st.integers(1, 5),
)
def test_any_blocking_gives_the_savez_arrays(tmp_path_factory: Any, shapes: list[tuple[int, int]], rows_per_block: int) -> None:
    folder = tmp_path_factory.mktemp("npz")
    arrays = {f"a{index}": np.arange(rows * columns, dtype=np.float64).reshape(rows, columns) + index
              for index, (rows, columns) in enumerate(shapes)}
    specs = [ArraySpec(key, value.shape, value.dtype) for key, value in arrays.items()]
    write_npz_pieces(folder / "out.npz", specs, interleaved(list(arrays.values()), rows_per_block))
    assert_same_as_savez(folder / "out.npz", arrays, folder)


def test_zip64_end_records_when_past_zipfiles_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real archives reach these limits at 65536 members or 2 GiB; lowered, the same records are written.
    monkeypatch.setattr(npz, "ZIP64_LIMIT", 100)
    monkeypatch.setattr(npz, "ZIP_FILECOUNT_LIMIT", 2)
    path = tmp_path / "out.npz"
    write_npz(path, ARRAYS)
    assert b"PK\x06\x06" in path.read_bytes() and b"PK\x06\x07" in path.read_bytes()
    assert_same_as_savez(path, ARRAYS, tmp_path)


def test_same_arrays_give_the_same_bytes(tmp_path: Path) -> None:
    write_npz(tmp_path / "a.npz", ARRAYS)
    write_npz(tmp_path / "b.npz", ARRAYS)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_a_member_given_too_much_or_too_little_is_refused(tmp_path: Path) -> None:
    spec = [ArraySpec("a", (2, 2), np.dtype(np.float32))]
    with pytest.raises(ValueError, match="more than its declared"):
        write_npz_pieces(tmp_path / "more.npz", spec, [(0, np.zeros((3, 2), np.float32))])
    with pytest.raises(ValueError, match="got 136 of its 144 bytes"):
        write_npz_pieces(tmp_path / "less.npz", spec, [(0, np.zeros((1, 2), np.float32))])
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # nothing left behind


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="pickle"):
        write_npz(tmp_path / "o.npz", {"o": np.array([{}, None], dtype=object)})


def test_an_interrupted_export_leaves_no_file(tmp_path: Path) -> None:
    def pieces() -> Iterator[tuple[int, np.ndarray]]:
        yield 0, np.zeros((1, 2), np.float32)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_npz_pieces(tmp_path / "out.npz", [ArraySpec("a", (2, 2), np.dtype(np.float32))], pieces())
    assert list(tmp_path.iterdir()) == []


class CountingArray:
    """A stored matrix that records which rows it was asked for."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = values.shape
        self.dtype = values.dtype
        self.rows_read: list[int] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        part = self.values[key]
        rows = range(len(self.values))[key if isinstance(key, slice) else key[0]]
        self.rows_read.extend(rows)
        return part


def test_export_reads_each_matrix_once_and_slices_every_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gates, "row_chunks", lambda array: (array[start : start + 2] for start in range(0, array.shape[0], 2)))
    kernel = np.arange(5 * 9, dtype=np.float32).reshape(5, 9)
    recurrent = -np.arange(3 * 9, dtype=np.float32).reshape(3, 9)
    bias = np.arange(2 * 9, dtype=np.float32).reshape(2, 9) / 2
    stored_kernel, stored_recurrent = CountingArray(kernel), CountingArray(recurrent)
    layer = RecurrentLayer("gru", "GRU", "GRU", 3, 5, {}, (), stored_kernel, stored_recurrent, bias)
    specs, pieces = gates.gate_export([layer])
    write_npz_pieces(tmp_path / "out.npz", specs, pieces)
    assert sorted(stored_kernel.rows_read) == list(range(5))
    assert sorted(stored_recurrent.rows_read) == list(range(3))
    with np.load(tmp_path / "out.npz") as loaded:
        # Columns by hand: z is 0-2, r is 3-5, h is 6-8; bias row 1 is the recurrent bias.
        assert np.array_equal(loaded["gru/r/kernel"], kernel[:, 3:6])
        assert np.array_equal(loaded["gru/h/recurrent_kernel"], recurrent[:, 6:9])
        assert np.array_equal(loaded["gru/z/recurrent_bias"], bias[1, 0:3])
        assert len(loaded.keys()) == 12
