"""Property tests of the PyTorch formats: Hypothesis writes `.safetensors` headers and mutates the
pickles and storages of `.pt` zips. Every outcome is a result or one clean `Error:` line with exit 2,
never an internal error (exit 3), never a read beyond the budgets, never a function the file names.

    GRUCLI_FUZZ_EXAMPLES=2000 python -m pytest -n 2 tests/files/test_fuzz_torch_formats.py
"""

from __future__ import annotations

import json
import pickletools
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from tests.files.test_fuzz import FUZZ, JSON_VALUES, assert_clean

DTYPES = ["F32", "F64", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "", "f32"]
NAMES = ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "rnn.weight_ih_l0_reverse", "fc.weight",
         "fc.bias", "cell.weight_ih", "cell.weight_hh", "weight_hr_l0", "__metadata__", "", "a" * 300]
SPECS = st.one_of(
    st.fixed_dictionaries({"dtype": st.sampled_from(DTYPES), "shape": st.lists(st.integers(0, 2**40), max_size=3),
                           "data_offsets": st.lists(st.integers(-5, 2**41), min_size=2, max_size=2)}),
    st.builds(lambda rows, cols, begin: {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, begin + 4 * rows * cols]},
              st.integers(0, 12), st.integers(0, 12), st.integers(0, 64)),
    JSON_VALUES,
)


@FUZZ
@given(entries=st.lists(st.tuples(st.sampled_from(NAMES), SPECS), max_size=8), data=st.binary(max_size=600),
       length=st.one_of(st.none(), st.integers(0, 2**64 - 1)), tail=st.binary(max_size=4))
def test_safetensors_headers(entries: list[tuple[str, Any]], data: bytes, length: int | None, tail: bytes) -> None:
    header = json.dumps(dict(entries)).encode() + tail
    declared = len(header) if length is None else length
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        path.write_bytes(struct.pack("<Q", declared) + header + data)
        assert_clean(path, ("--max-total-mb", "1"))


def _state_dict_zip() -> bytes:
    """A small nn.GRU state_dict as torch.save writes it (bidirectional, so two directions' storages)."""
    import torch

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / "gru.pt"
    torch.save(torch.nn.GRU(3, 2, bidirectional=True).state_dict(), path)
    return path.read_bytes()


try:
    SOURCE = _state_dict_zip()
except ImportError:  # without PyTorch the seed file cannot be written; the safetensors test still runs
    SOURCE = b""

# Opcodes a state_dict's pickle uses and ones it never does (each must be refused by name).
OPCODES = [b"\x80\x02", b"}", b"q\x00", b"h\x00", b"(", b"t", b"\x85", b"\x86", b"R", b"Q", b"b", b"u", b"s", b"N", b"K\x01",
           b"X\x01\x00\x00\x00a", b"ccollections\nOrderedDict\n", b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch\nFloatStorage\n",
           b"cos\nsystem\n", b"cbuiltins\neval\n", b"\x93", b"c__main__\nModel\n", b"]", b"e", b"a", b")", b"0", b"2", b"."]


def _rewritten(source: bytes, pickled: bytes | None, storage: bytes | None) -> bytes:
    with zipfile.ZipFile(__import__("io").BytesIO(source)) as original:
        members = {info.filename: original.read(info) for info in original.infolist()}
    out = __import__("io").BytesIO()
    with zipfile.ZipFile(out, "w") as written:
        for name, content in members.items():
            if name.endswith("data.pkl") and pickled is not None:
                content = pickled
            elif name.endswith("/data/0") and storage is not None:
                content = storage
            written.writestr(name, content)
    return out.getvalue()


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6), cut=st.one_of(st.none(), st.integers(0, 600)),
       inserted=st.lists(st.sampled_from(OPCODES), max_size=6), storage=st.one_of(st.none(), st.binary(max_size=64)))
def test_pt_zips_with_damaged_pickles_and_storages(flips: list[tuple[int, int]], cut: int | None, inserted: list[bytes],
                                                   storage: bytes | None) -> None:
    if not SOURCE:
        return
    with zipfile.ZipFile(__import__("io").BytesIO(SOURCE)) as archive:
        pickled = bytearray(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
    for position, value in flips:
        pickled[position % len(pickled)] = value
    if inserted:
        at = len(pickled) // 2
        pickled[at:at] = b"".join(inserted)
    if cut is not None:
        pickled = pickled[:cut]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.pt"
        path.write_bytes(_rewritten(SOURCE, bytes(pickled), storage))
        assert_clean(path, ("--max-total-mb", "1"))


@FUZZ
@given(program=st.lists(st.sampled_from(OPCODES), min_size=1, max_size=24))
def test_pt_zips_with_made_up_pickles(program: list[bytes]) -> None:
    """Pickles made of opcodes, allowed and not, in any order: never an internal error."""
    if not SOURCE:
        return
    pickled = b"".join(program)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.pt"
        path.write_bytes(_rewritten(SOURCE, pickled, None))
        assert_clean(path)


def test_the_seed_files_are_valid() -> None:
    """The unmutated seeds read (so the fuzz starts from files that reach every stage)."""
    if not SOURCE:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.pt"
        path.write_bytes(SOURCE)
        assert_clean(path)
        from click.testing import CliRunner

        from grucli.cli import cli

        document = json.loads(CliRunner().invoke(cli, ["inspect", str(path), "--json"]).stdout)
        assert len(document["layers"]) == 2
    ops = [op.name for op, _, _ in pickletools.genops(zipfile.ZipFile(__import__("io").BytesIO(SOURCE)).read(
        next(n for n in zipfile.ZipFile(__import__("io").BytesIO(SOURCE)).namelist() if n.endswith("data.pkl"))))]
    assert "GLOBAL" in ops and "BINPERSID" in ops and "REDUCE" in ops
    np.testing.assert_equal(len(ops) > 10, True)
