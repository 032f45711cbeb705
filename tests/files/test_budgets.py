"""Every reader has a total budget: crafted files that would cost minutes or gigabytes are refused
before the work, each within 10 s and 500 MiB (the operating system's figures for the command's
own process), with one `Error:` line naming the limit and the option that raises it.

Also: non-regular files (FIFOs) are refused as model, input, --expected and --config instead of
blocking; the files are built here, by the tests (tests/crafted.py writes checkpoint tables byte
by byte).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import sample
from crafted import (
    HEADER,
    VARIABLE,
    block,
    entry,
    field,
    graph_node,
    gru_checkpoint,
    saved_metadata,
    table,
    write_checkpoint,
)
from tests.files.test_hostile import run_measured

MAX_SECONDS = 10.0
MAX_RSS_MIB = 500.0


def refused(args: list[str], *fragments: str) -> str:
    """Run grucli ARGS as its own process: exit 2, one Error line holding every fragment, in budget."""
    code, stderr, seconds, rss = run_measured(args)
    assert code == 2, (args, code, stderr)
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1, (args, stderr)
    for fragment in fragments:
        assert fragment in stderr, (args, fragment, stderr)
    assert seconds < MAX_SECONDS, (args, seconds)
    assert rss < MAX_RSS_MIB, (args, rss)
    return stderr


# --- checkpoints ----------------------------------------------------------------------------------------


def test_index_handles_that_all_point_at_one_data_block(tmp_path: Path) -> None:
    items = [(b"", HEADER)] + [(f"v{i:05d}{VARIABLE}".encode(), entry(1, (0,), 0, 0)) for i in range(2000)]
    Path(f"{tmp_path / 'c'}.index").write_bytes(table([block(items)], handles=[0] * 20_000))
    Path(f"{tmp_path / 'c'}.data-00000-of-00001").write_bytes(b"")
    refused(["inspect", str(tmp_path / "c")], "points at a data block at offset 0, inside or before the one it listed earlier")


def test_keys_that_share_an_ever_longer_prefix(tmp_path: Path) -> None:
    # Each key repeats the whole previous key and adds 1000 bytes: 1.2 MB describing ~1.4 GiB of keys.
    items, key = [(b"", HEADER)], b""
    for index in range(1200):
        key = key + bytes([97 + index % 26]) * 1000
        items.append((key, b""))
    shared = [0] + [len(k) - 1000 if i > 1 else 0 for i, (k, _) in enumerate(items[1:], start=1)]
    Path(f"{tmp_path / 'c'}.index").write_bytes(table([block(items, shared)]))
    refused(["inspect", str(tmp_path / "c")], "bytes long, over 65536")


def test_many_variables_on_the_same_shard_bytes(tmp_path: Path) -> None:
    megabyte = 2**18  # float32 values
    items = [("", HEADER)] + [(f"layer_with_weights-{i}/kernel{VARIABLE}", entry(1, (512, 512), 0, 4 * megabyte)) for i in range(4000)]
    write_checkpoint(tmp_path / "c", items, bytes(4 * megabyte))
    refused(["inspect", str(tmp_path / "c")], "share bytes of data shard 0")


def test_all_arrays_together_are_bounded(tmp_path: Path) -> None:
    # 40 variables of 1 MiB each, in their own bytes: within --max-mb each, over --max-total-mb together.
    size = 2**20
    items = [("", HEADER)] + [(f"layer_with_weights-{i}/kernel{VARIABLE}", entry(1, (512, 512), i * size, size)) for i in range(40)]
    write_checkpoint(tmp_path / "c", items, bytes(40 * size))
    refused(["inspect", str(tmp_path / "c"), "--max-total-mb", "16"], "over the limit of 16.0 MiB for all arrays together",
            "raise the limit with --max-total-mb")
    code, stderr, _, _ = run_measured(["inspect", str(tmp_path / "c"), "--max-total-mb", "64"])
    assert code == 0, stderr


def test_a_40000_deep_object_graph(tmp_path: Path) -> None:
    depth = 40_000
    graph = b"".join(graph_node([(i + 1, "a")]) for i in range(depth)) + graph_node()
    gru_checkpoint(tmp_path / "c", graph=graph)
    refused(["inspect", str(tmp_path / "c")], "nests objects more than 1000 deep")


def test_a_sparse_3_gib_index_and_state_file(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with open(folder / "weights.index", "wb") as handle:
        handle.truncate(3 * 2**30)
    Path(folder / "weights.data-00000-of-00001").write_bytes(b"")
    refused(["inspect", str(folder / "weights")], "weights.index holds 3.0 GiB, over the limit of 64.0 MiB",
            "raise the limit with --max-config-mb")
    # A 3 GiB `checkpoint` state file beside a good bundle: only its first 64 KiB are read.
    good = tmp_path / "good"
    good.mkdir()
    gru_checkpoint(good / "weights")
    with open(good / "checkpoint", "wb") as handle:
        handle.write(b'model_checkpoint_path: "weights"\n')
        handle.truncate(3 * 2**30)
    code, stderr, seconds, rss = run_measured(["inspect", str(good)])
    assert code == 0 and seconds < MAX_SECONDS and rss < MAX_RSS_MIB, (stderr, seconds, rss)


def test_a_big_variable_is_held_once(tmp_path: Path) -> None:
    """A 384 MiB variable read straight into its array: the command's peak stays under twice its size
    (reading the bytes and then converting them would hold two copies)."""
    values = np.ones((96, 2**20), dtype="<f4")
    data = values.tobytes()
    import google_crc32c
    from crafted import mask

    items = [("", HEADER), (f"layer_with_weights-0/kernel{VARIABLE}", entry(1, values.shape, 0, len(data), mask(google_crc32c.value(data))))]
    write_checkpoint(tmp_path / "c", items, data)
    del data, values
    code, stderr, seconds, rss = run_measured(["inspect", str(tmp_path / "c")])
    assert code == 0, stderr
    assert rss < 384 + 250, rss  # the array once, plus the interpreter, NumPy and h5py (~100 MiB)


def test_half_a_million_empty_variables(tmp_path: Path) -> None:
    items = [("", HEADER)] + [(f"v{i:07d}{VARIABLE}", entry(1, (0,), 0, 0)) for i in range(500_000)]
    write_checkpoint(tmp_path / "c", items, b"")
    refused(["inspect", str(tmp_path / "c")], "holds more than 500000 keys", "raise the limit with --max-layers")
    items = [("", HEADER)] + [(f"v{i:07d}{VARIABLE}", entry(1, (0,), 0, 0)) for i in range(150_000)]
    write_checkpoint(tmp_path / "d", items, b"")
    refused(["inspect", str(tmp_path / "d")], "holds 150000 model variables, over the limit of 100000")


# --- configs and metadata -------------------------------------------------------------------------------------


def _with_config(tmp_path: Path, config: object, name: str = "m.h5") -> Path:
    path = tmp_path / name
    shutil.copy(sample("tfk_gru.h5"), path)
    with h5py.File(path, "a") as handle:
        handle.attrs["model_config"] = json.dumps(config)
    return path


def test_thirty_thousand_layers(tmp_path: Path) -> None:
    layers = [{"class_name": "Dense", "config": {"name": f"d{i}", "units": 1}} for i in range(30_000)]
    path = _with_config(tmp_path, {"class_name": "Sequential", "config": {"name": "s", "layers": layers}})
    refused(["inspect", str(path)], "more than 10000 layers", "raise the limit with --max-layers")


@pytest.mark.parametrize("where", ["model_config", "config.json", "--config", "keras_metadata.pb"])
def test_a_config_that_explodes_once_parsed(where: str, tmp_path: Path) -> None:
    # 48 MiB of `[[],[],...]` parses into 16 million lists (~1.5 GiB of Python objects).
    bomb = '{"class_name": "Sequential", "config": {"name": "s", "layers": [' + ",".join(["[]"] * (16 * 2**20)) + "]}}"
    if where == "model_config":
        path = tmp_path / "m.h5"
        shutil.copy(sample("tfk_gru.h5"), path)
        with h5py.File(path, "a") as handle:
            handle.attrs["model_config"] = bomb
        args = ["inspect", str(path)]
    elif where == "config.json":
        path = tmp_path / "m.keras"
        with zipfile.ZipFile(sample("k3_gru.keras")) as source, zipfile.ZipFile(path, "w") as target:
            for name in source.namelist():
                target.writestr(name, bomb if name == "config.json" else source.read(name))
        args = ["inspect", str(path)]
    elif where == "--config":
        (tmp_path / "config.json").write_text(bomb)
        args = ["inspect", str(sample("k3_gru.weights.h5")), "--config", str(tmp_path / "config.json")]
    else:
        folder = tmp_path / "sm"
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"")
        gru_checkpoint(folder / "variables" / "variables")
        (folder / "keras_metadata.pb").write_bytes(field(1, field(3, b"root") + field(5, bomb.encode())))
        args = ["inspect", str(folder)]
    refused(args, "JSON values or more, over the limit of 1000000", "raise the limit with --max-layers")


def test_savedmodel_metadata_of_many_records(tmp_path: Path) -> None:
    folder = tmp_path / "sm"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    gru_checkpoint(folder / "variables" / "variables")
    root = {"model_config": {"class_name": "Sequential", "config": {"name": "s", "layers": []}}}
    record = {"class_name": "Dense", "name": "d", "config": {"name": "d", "values": list(range(100))}}
    records = [("root", root), *((f"root.other-{i}", record) for i in range(20_000))]
    (folder / "keras_metadata.pb").write_bytes(saved_metadata(records))
    refused(["inspect", str(folder)], "JSON values or more", "--max-layers")


# --- inputs ---------------------------------------------------------------------------------------------------


def test_a_config_declaring_ten_million_timesteps(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    shutil.copy(sample("tfk_gru.h5"), path)
    with h5py.File(path, "a") as handle:
        config = json.loads(handle.attrs["model_config"])
        config["config"]["layers"][0]["config"]["batch_input_shape"] = [None, 10_000_000, 3]
        handle.attrs["model_config"] = json.dumps(config)
    for command in ("replay", "verify", "explain"):
        args = [command, str(path)] + (["-o", str(tmp_path / "y.npy")] if command == "replay" else [])
        refused(args, "would have 10000000 timesteps", "raise the limit with --max-timesteps")


def _npz_bomb(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose one member's header declares `shape` (float64) over a few bytes of data,
    deflated: a small file that NumPy would allocate the declared size for."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = shape
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", buffer.getvalue() + bytes(6 * 2**20))
    return path


def test_input_and_expected_bombs(tmp_path: Path) -> None:
    model = str(sample("tfk_gru.h5"))  # input (batch, 5, 3)
    bomb = _npz_bomb(tmp_path / "bomb.npz", (25_000, 10_000, 3))  # 5.6 GiB declared in a file of a few KiB
    assert bomb.stat().st_size < 100_000
    refused(["replay", model, "--input", str(bomb), "-o", str(tmp_path / "y.npy")], "declares shape (25000, 10000, 3)",
            "raise the limit with --max-input-mb")
    refused(["verify", model, "--expected", str(bomb)], "declares shape (25000, 10000, 3)", "--max-input-mb")
    npy = tmp_path / "big.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (25_000, 10_000, 3)
    with open(npy, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + 6 * 2**30)  # sparse: the declared bytes are there, 6 GiB of zeros
    refused(["replay", model, "--input", str(npy), "-o", str(tmp_path / "y.npy")], "declares shape", "--max-input-mb")
    csv = tmp_path / "big.csv"
    with open(csv, "w") as handle:
        handle.write("1,2,3\n" * (20 * 2**20 // 6))
    refused(["replay", model, "--input", str(csv), "-o", str(tmp_path / "y.npy"), "--max-input-mb", "64"], "of CSV text",
            "--max-input-mb")
    # The limit is a limit, not a ban: a declared size under it is read as before.
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 3), np.float32))
    code, stderr, _, _ = run_measured(["replay", model, "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")])
    assert code == 0, stderr


# --- non-regular files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["model", "input", "expected", "config", "csv input"])
def test_a_fifo_is_refused_not_waited_on(role: str, tmp_path: Path) -> None:
    fifo = tmp_path / ("fifo.csv" if role == "csv input" else "fifo.npy" if role in ("input", "expected") else "fifo")
    os.mkfifo(fifo)
    model = str(sample("tfk_gru.h5"))
    args = {
        "model": ["inspect", str(fifo)],
        "input": ["replay", model, "--input", str(fifo), "-o", str(tmp_path / "y.npy")],
        "csv input": ["replay", model, "--input", str(fifo), "-o", str(tmp_path / "y.npy")],
        "expected": ["verify", model, "--expected", str(fifo)],
        "config": ["inspect", str(sample("k3_gru.weights.h5")), "--config", str(fifo)],
    }[role]
    result = subprocess.run([sys.executable, "-m", "grucli", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "is not a regular file (a FIFO, device or socket)" in result.stderr and result.stderr.count("\n") == 1


def test_shapes_numpy_cannot_describe_are_refused(tmp_path: Path) -> None:
    size = 0
    items = [("", HEADER), (f"layer_with_weights-0/kernel{VARIABLE}", entry(1, (0, 2**62), 0, size))]
    write_checkpoint(tmp_path / "c", items, b"")
    for command in (["inspect", str(tmp_path / "c")], ["diff", str(tmp_path / "c"), str(tmp_path / "c")]):
        refused(command, "declares shape (0, 4611686018427387904), an axis of more than 2**32")
    path = tmp_path / "m.h5"
    shutil.copy(sample("tfk_gru.h5"), path)
    with h5py.File(path, "a") as handle:
        name = next(n for n in _datasets(handle) if n.endswith("bias:0"))
        del handle[name]
        handle.create_dataset(name, shape=(0, 2**40), dtype="f4")
    refused(["inspect", str(path)], "an axis of more than 2**32")


def _datasets(handle: h5py.File) -> list[str]:
    found: list[str] = []
    handle.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None)
    return found


def test_struct_packing_helper_is_little_endian() -> None:
    """The crafted tables above depend on it: a 4-byte restart count written little-endian."""
    assert struct.pack("<I", 1) == b"\x01\x00\x00\x00"


def test_groups_nested_thousands_deep(tmp_path: Path) -> None:
    path = tmp_path / "deep.weights.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("layers").create_group("gru")
        for _ in range(3000):
            group = group.create_group("a")
        group.create_group("vars")["0"] = np.zeros(3)
    refused(["inspect", str(path)], "nests groups more than 200 deep")


def test_many_weight_arrays(tmp_path: Path) -> None:
    # 150 arrays in one layer: over 10 per layer once --max-layers is 10 (the default allows 100,000).
    path = tmp_path / "many.weights.h5"
    with h5py.File(path, "w") as handle:
        variables = handle.create_group("layers").create_group("dense").create_group("vars")
        for index in range(150):
            variables[str(index)] = np.zeros(2)
    refused(["inspect", str(path), "--max-layers", "10"], "more than 100 weight arrays", "raise the limit with --max-layers")
    code, stderr, _, _ = run_measured(["inspect", str(path), "--json"])
    assert code in (0, 2) and "weight arrays" not in stderr
