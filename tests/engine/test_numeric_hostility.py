"""Numerically hostile weights are reported, not crashed on: bfloat16, float16, 0 units, NaN, Inf, 3e38."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import sample
from grucli.cli import cli

CELL = "model_weights/gru/gru/gru_cell"


def edited(tmp_path: Path, edit: Callable[[h5py.File], None]) -> Path:
    path = tmp_path / "edited.h5"
    shutil.copy(sample("tfk_gru.h5"), path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_bfloat16_weights_decode_like_ml_dtypes(tmp_path: Path) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with zipfile.ZipFile(sample("k3_gru.keras")) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    weights = io.BytesIO(members["model.weights.h5"])
    originals = {}
    with h5py.File(weights, "r+") as f:
        for index in range(3):
            name = f"layers/gru/cell/vars/{index}"
            values = f[name][()]
            originals[index] = values.astype(ml_dtypes.bfloat16)
            del f[name]
            # Keras 3's layout: opaque 2-byte values tagged dtype=bfloat16.
            dataset = f.create_dataset(name, data=originals[index].view("<u2").view("V2"))
            dataset.attrs["dtype"] = "bfloat16"
    members["model.weights.h5"] = weights.getvalue()
    path = tmp_path / "bf16.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    code, out, _ = run("export", str(path), "-o", str(tmp_path / "g.npz"))
    assert code == 0
    with np.load(tmp_path / "g.npz") as data:
        assert np.array_equal(data["gru/r/kernel"], originals[0][:, 4:8].astype(np.float32))
        assert np.array_equal(data["gru/h/recurrent_bias"], originals[2][1, 8:12].astype(np.float32))


def test_float16_weights(tmp_path: Path) -> None:
    def to_float16(f: h5py.File) -> None:
        for name in ("kernel:0", "recurrent_kernel:0", "bias:0"):
            values = f[f"{CELL}/{name}"][()]
            del f[f"{CELL}/{name}"]
            f[f"{CELL}/{name}"] = values.astype("float16")

    path = edited(tmp_path, to_float16)
    assert run("check", str(path))[0] == 0
    code, out, _ = run("inspect", str(path), "--json")
    assert code == 0 and json.loads(out)["layers"][0]["gates"]["z"]["kernel"]["stats"]["nan"] == 0
    assert run("replay", str(path), "-o", str(tmp_path / "y.npy"))[0] == 0
    assert np.all(np.isfinite(np.load(tmp_path / "y.npy")))


def test_zero_units(tmp_path: Path) -> None:
    def empty(f: h5py.File) -> None:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][-1]["config"]["units"] = 0
        f.attrs["model_config"] = json.dumps(config)
        for name, shape in (("kernel:0", (3, 0)), ("recurrent_kernel:0", (0, 0)), ("bias:0", (2, 0))):
            del f[f"{CELL}/{name}"]
            f[f"{CELL}/{name}"] = np.zeros(shape, "float32")

    path = edited(tmp_path, empty)
    code, out, _ = run("inspect", str(path), "--json")
    layer = json.loads(out)["layers"][0]
    assert code == 0 and layer["units"] == 0
    assert "this layer has 0 units: it computes nothing and its output is empty" in layer["notes"]
    assert layer["gates"]["z"]["kernel"]["stats"]["mean"] is None
    for args in (["inspect", str(path), "--heatmap"], ["inspect", str(path), "--values"], ["check", str(path)], ["diff", str(path), str(path)]):
        assert run(*args)[0] == 0, args
    assert run("replay", str(path), "-o", str(tmp_path / "y.npy"))[0] == 0
    assert np.load(tmp_path / "y.npy").shape == (4, 5, 0)


def test_nan_inf_and_huge_values_are_reported(tmp_path: Path) -> None:
    def poison(f: h5py.File) -> None:
        kernel = f[f"{CELL}/kernel:0"][()]
        kernel[0, 0], kernel[1, 1], kernel[2, 2] = np.nan, np.inf, 3e38  # z gate, units 0, 1, 2
        f[f"{CELL}/kernel:0"][...] = kernel

    path = edited(tmp_path, poison)
    code, out, _ = run("inspect", str(path), "--json", "--values")
    stats = json.loads(out)["layers"][0]["gates"]["z"]["kernel"]["stats"]
    assert code == 0 and (stats["nan"], stats["inf"]) == (1, 1)
    assert stats["max"] == pytest.approx(3e38, rel=1e-6)
    values = json.loads(out)["layers"][0]["gates"]["z"]["kernel"]["values"]
    assert values[0][0] == "NaN" and values[1][1] == "Infinity"
    code, _, err = run("replay", str(path), "-o", str(tmp_path / "y.npy"))
    assert code == 0 and "Warning" not in err
    code, out, _ = run("check", str(path), "--json")
    findings = {(x["check"], x["gate"], x["unit"]) for x in json.loads(out)["findings"]}
    assert code == 1 and {("nan", "z", 0), ("inf", "z", 1)} <= findings


def test_enormous_or_negative_declared_input_shapes(tmp_path: Path) -> None:
    for shape, message in (([None, 10**6, 10**6], "over the limit of 100000; pass --input, or raise the limit with --max-timesteps"), ([None, -1, 3], "expected positive dimensions")):
        def declare(f: h5py.File, shape: list = shape) -> None:
            config = json.loads(f.attrs["model_config"])
            config["config"]["layers"][0]["config"]["batch_input_shape"] = shape
            f.attrs["model_config"] = json.dumps(config)

        path = edited(tmp_path, declare)
        code, _, err = run("replay", str(path), "-o", str(tmp_path / "y.npy"))
        assert code == 2 and err.startswith("Error: ") and message in err, err
        assert not (tmp_path / "y.npy").exists()
