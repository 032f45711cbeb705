"""`diff` and `check` on copies of sample models with one planted change, edited with h5py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import real, sample
from grucli.cli import cli

# tfk_gru.h5: GRU(4), reset_after=True; canonical columns z 0-3, r 4-7, h 8-11.
KERNEL = "model_weights/gru/gru/gru_cell/kernel:0"
RECURRENT = "model_weights/gru/gru/gru_cell/recurrent_kernel:0"
BIAS = "model_weights/gru/gru/gru_cell/bias:0"


def planted(tmp_path: Path, edit: object, name: str = "copy.h5") -> Path:
    copy = tmp_path / name
    shutil.copy(sample("tfk_gru.h5"), copy)
    with h5py.File(copy, "r+") as f:
        edit(f)  # type: ignore[operator]
    return copy


def run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def set_values(f: h5py.File, dataset: str, index: tuple, value: float) -> None:
    data = f[dataset][()]
    data[index] = value
    f[dataset][...] = data


def test_check_names_a_planted_nan(tmp_path: Path) -> None:
    copy = planted(tmp_path, lambda f: set_values(f, KERNEL, (1, 6), np.nan))  # r gate, unit 2
    code, doc = run("check", str(copy))
    assert code == 1 and doc["passed"] is False
    assert [(x["check"], x["path"], x["gate"], x["unit"], x["array"]) for x in doc["findings"]] == [("nan", "gru", "r", 2, "kernel")]
    text = CliRunner().invoke(cli, ["check", str(copy)]).stdout
    assert "gru gate r unit 2: 1 NAN value(s) in kernel" in text


def test_check_dead_saturated_and_spectral(tmp_path: Path) -> None:
    def edit(f: h5py.File) -> None:
        for dataset in (KERNEL, RECURRENT):
            data = f[dataset][()]
            data[:, 9] = 0.0  # h gate, unit 1
            f[dataset][...] = data
        bias = f[BIAS][()]
        bias[:, 9] = 0.0
        bias[0, 3] = 40.0  # z gate, unit 3: far beyond what its inputs can move
        f[BIAS][...] = bias
        recurrent = f[RECURRENT][()]
        recurrent[:, 4:8] *= 500.0  # r gate block
        f[RECURRENT][...] = recurrent

    code, doc = run("check", str(planted(tmp_path, edit)))
    assert code == 1
    found = {(x["check"], x["gate"], x["unit"]) for x in doc["findings"]}
    assert found == {("dead", "h", 1), ("saturated", "z", 3), ("spectral_norm", "r", None)}
    saturated = next(x for x in doc["findings"] if x["check"] == "saturated")
    assert "stuck open" in saturated["message"]


@pytest.mark.parametrize("path", ["sample:k3_gru.keras", "sample:k3_lstm.keras", "real:trafficflow_gru_keras2.1.4.h5",
                                  "real:ethnicolr_census2010_lstm_tfkeras2.5.h5", "real:textgenrnn_cudnnlstm_weights_keras2.1.5.hdf5"])
def test_check_passes_healthy_models(path: str) -> None:
    where, name = path.split(":")
    code, doc = run("check", str(sample(name) if where == "sample" else real(name)))
    assert code == 0 and doc["findings"] == [] and doc["layers"]


def test_check_threshold_is_an_option() -> None:
    code, doc = run("check", str(real("trafficflow_gru_keras2.1.4.h5")), "--max-spectral-norm", "10")
    assert code == 1
    # gru_1's z block has spectral norm 13.6 and gru_2's 23.4: above 10; no other check fires.
    assert {(x["check"], x["path"], x["gate"]) for x in doc["findings"]} >= {("spectral_norm", "gru_1", "z"), ("spectral_norm", "gru_2", "z")}
    assert {x["check"] for x in doc["findings"]} == {"spectral_norm"}
    [z_block] = [x for x in doc["findings"] if (x["path"], x["gate"]) == ("gru_1", "z")]
    with h5py.File(real("trafficflow_gru_keras2.1.4.h5"), "r") as f:
        recurrent = f["model_weights/gru_1/gru_1/recurrent_kernel:0"][()]
    assert z_block["value"] == pytest.approx(np.linalg.norm(recurrent[:, :64].astype(np.float64), 2))


def test_diff_with_itself_is_zero() -> None:
    code, doc = run("diff", str(sample("k3_stacked_cells.keras")), str(sample("k3_stacked_cells.keras")))
    assert code == 0 and doc["identical"] is True
    assert doc["changes"] and all(c["max_abs_change"] == 0 and c["top_units"] == [] for c in doc["changes"])
    assert all(c["rel_change"] == 0 for c in doc["changes"])


def test_diff_finds_exactly_the_changed_gate(tmp_path: Path) -> None:
    def edit(f: h5py.File) -> None:
        recurrent = f[RECURRENT][()]
        recurrent[:, 8:12] += 0.25  # the h gate's recurrent block, every unit
        recurrent[0, 10] += 1.0  # unit 2 moves most
        f[RECURRENT][...] = recurrent

    copy = planted(tmp_path, edit)
    _, doc = run("diff", str(sample("tfk_gru.h5")), str(copy))
    changed = [(c["path"], c["gate"], c["array"]) for c in doc["changes"] if c["max_abs_change"] > 0]
    assert changed == [("gru", "h", "recurrent_kernel")]
    [change] = [c for c in doc["changes"] if c["max_abs_change"] > 0]
    assert change["max_abs_change"] == pytest.approx(1.25)
    assert change["top_units"][0]["unit"] == 2
    with h5py.File(sample("tfk_gru.h5"), "r") as f:
        before = f[RECURRENT][()][:, 8:12].astype(np.float64)
    after = before + 0.25
    after[0, 2] += 1.0
    assert change["rel_change"] == pytest.approx(np.linalg.norm(after - before) / np.linalg.norm(before), rel=1e-6)


def test_diff_refuses_different_architectures() -> None:
    result = CliRunner().invoke(cli, ["diff", str(sample("tfk_gru.h5")), str(sample("tfk_gru_reset_before.h5"))])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: the two files have different recurrent layers, expected the same architecture: "
        "gru: GRU(4 units, input 3, bias (2, 12)) vs GRU(4 units, input 3, bias (12,))\n"
    )


def test_spectral_norm_of_large_blocks_by_lanczos() -> None:
    from grucli.commands.check import EXACT_UP_TO, spectral_norm

    rng = np.random.default_rng(0)
    n = EXACT_UP_TO + 88
    left, _ = np.linalg.qr(rng.normal(size=(n, n)))
    right, _ = np.linalg.qr(rng.normal(size=(n, n)))
    singular = np.linspace(0.1, 6.5, n)
    singular[-1] = 7.0  # known by construction
    matrix = left @ np.diag(singular) @ right.T
    assert spectral_norm(matrix) == pytest.approx(7.0, rel=1e-8)
    random_block = rng.normal(size=(n, n)) / np.sqrt(n)  # close top singular values: the hard case
    assert spectral_norm(random_block) == pytest.approx(np.linalg.norm(random_block, 2), rel=1e-8)
    wide = rng.normal(size=(n, n + 300))
    assert spectral_norm(wide) == pytest.approx(np.linalg.norm(wide, 2), rel=1e-8)
    assert spectral_norm(wide.T) == pytest.approx(np.linalg.norm(wide, 2), rel=1e-8)
    # Rank one (the Krylov space ends after one step) and all zeros: exact answers by hand.
    assert spectral_norm(np.outer(np.full(n, 2.0), np.full(n, 3.0))) == pytest.approx(6.0 * n, rel=1e-12)
    assert spectral_norm(np.zeros((n, n))) == 0.0


def test_check_reports_progress_gate_by_gate() -> None:
    from grucli.commands.check import Thresholds, check_layers
    from grucli.model.records import RecurrentLayer

    rng = np.random.default_rng(0)
    layer = RecurrentLayer("gru", "GRU", "GRU", 4, 3, {}, (), rng.normal(size=(3, 12)), rng.normal(size=(4, 12)), rng.normal(size=(2, 12)))
    calls: list[tuple[str, int, int]] = []
    check_layers("m.h5", [layer], Thresholds(), lambda *call: calls.append(call))
    assert calls == [("gru", 0, 3), ("gru", 1, 3), ("gru", 2, 3)]


@pytest.mark.parametrize("delay, shown", [(0.0, True), (60.0, False)])
def test_progress_bar_appears_only_after_its_delay(delay: float, shown: bool) -> None:
    import os
    import subprocess
    import sys

    script = (f"from grucli.output.progress import DelayedProgress\nwith DelayedProgress('checking', 'gates', delay={delay}) as p:\n"
              "    p('gru', 1, 3)\n")
    env = {**os.environ, "FORCE_COLOR": "1", "GRUCLI_PROGRESS": "1"}  # as on a terminal
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (("checking gru" in result.stderr) and ("1/3 gates" in result.stderr)) is shown
