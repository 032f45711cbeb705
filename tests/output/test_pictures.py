"""`inspect --heatmap` and `plot`: cells that match the weights, a real PNG, a clear missing-extra error."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import sample
from grucli.cli import cli


def test_heatmap_cells_follow_the_weights() -> None:
    # Without colour (not a terminal) cells are glyphs from '#' (most negative) to '@' (most positive).
    result = CliRunner().invoke(cli, ["inspect", str(sample("tfk_gru.h5")), "--gate", "z", "--heatmap"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    with h5py.File(sample("tfk_gru.h5"), "r") as f:
        kernel = f["model_weights/gru/gru/gru_cell/kernel:0"][()][:, 0:4]  # z gate: columns 0-3
    start = lines.index("z (update gate) · kernel") + 2
    for row in range(3):
        label, cells = lines[start + row][:4], lines[start + row][4:]
        assert label.strip() == f"x{row}"
        glyphs = [cells[2 * unit] for unit in range(4)]
        for unit, glyph in enumerate(glyphs):
            value = kernel[row, unit]
            # Signs always show: '#', '=', '-' negative; '+', '*', '@' positive; '·' near zero.
            assert glyph in ("#=-·" if value < 0 else "·+*@"), (row, unit, value, glyph)
    strongest = np.unravel_index(np.argmax(np.abs(kernel)), kernel.shape)
    row_text = lines[start + strongest[0]][4:]
    assert row_text[2 * strongest[1]] == ("@" if kernel[strongest] > 0 else "#")


def test_heatmap_in_colour_uses_a_diverging_scale() -> None:
    from grucli.model.layers import find_layers
    from grucli.files.reader import read_model
    from grucli.output.heatmap import render_heatmaps
    from grucli.commands.inspect import build_inspect_report

    report = build_inspect_report(find_layers(read_model(sample("k3_gru.keras"))), (), ("r",), None, True)
    text = render_heatmaps(report, color=True, width=100)
    assert "\x1b[48;5;" in text or "\x1b[48;2;" in text  # background colours, 256 or true colour
    assert "colour scale ±" in text and "99th percentile" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "gates.png"
    result = CliRunner().invoke(cli, ["plot", str(sample("k3_lstm.keras")), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"wrote 8 gate row(s) from 2 layer(s) to {out}\n"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 8 * 200  # one row per gate: 2 LSTM layers × 4 gates
    again = CliRunner().invoke(cli, ["plot", str(sample("k3_lstm.keras")), "-o", str(out)])
    assert again.exit_code == 2 and again.stderr == f"Error: {out} already exists; pass --force to overwrite it\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = CliRunner().invoke(cli, ["plot", str(sample("k3_gru.keras")), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    # Run from this clone: the hint installs the clone's own extra, not the release on PyPI.
    from conftest import ROOT

    assert result.stderr == f"Error: grucli plot needs matplotlib, an optional extra; install it with: pip install -e '{ROOT}[plot]'\n"
    assert not (tmp_path / "x.png").exists()


def test_install_hints_fit_how_grucli_was_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From a clone, the clone's own extra; from an installed package, the one on PyPI."""
    import grucli.errors as errors

    assert errors.install_hint("verify") == f"pip install -e '{Path(errors.__file__).resolve().parent.parent}[verify]'"
    installed = tmp_path / "site-packages" / "grucli"
    installed.mkdir(parents=True)
    monkeypatch.setattr(errors, "__file__", str(installed / "errors.py"))
    assert errors.install_hint("verify") == "pip install 'grucli[verify]'"


def test_explain_without_its_framework_names_explain(monkeypatch: pytest.MonkeyPatch) -> None:
    """explain asked for a framework by name that is not installed says explain needs it, with the
    install hint of this grucli (not verify's name)."""
    import grucli.frameworks.framework as frameworks

    def missing(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(frameworks, "_quiet_import", missing)
    result = CliRunner().invoke(cli, ["explain", str(sample("tfk_gru.h5")), "--keras", "tf-keras"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: explain needs tf-keras: No module named 'tf_keras'; install it with pip install -e ")
