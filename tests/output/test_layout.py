"""Tables that fit: at 60, 80 and 120 columns no line is wider than the terminal and no number
is cut (Rich's `…` would replace its end). Checked piped (COLUMNS) and on a real terminal (tmux,
where grucli reads the width from the tty and colours its output)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rich.text import Text

from tests.conftest import sample

WIDTHS = (60, 80, 120)
# A number, a shape or a name that ends in `…` was cut; a lone `…` is an elision marker of --values.
CUT = re.compile(r"\S…|…\S")

COMMANDS = [
    ["inspect", str(sample("tfk_gru.h5"))],
    ["inspect", str(sample("k3_bidir_concat.keras"))],
    ["inspect", str(sample("tfk_lstm.h5")), "--unit", "1"],
    ["inspect", str(sample("k3_stacked_cells.keras")), "--values"],
    ["inspect", str(sample("k3_nested.keras")), "--unit", "2"],
    ["explain", str(sample("q_gru2_linear.keras")), "--keras", "none"],
    ["diff", str(sample("k3_gru.keras")), str(sample("k3_gru.h5"))],
    ["check", str(sample("tfk_lstm.h5"))],
]


def _problems(text: str, width: int) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines()):
        if len(line.rstrip()) > width:
            found.append(f"line {number} is {len(line.rstrip())} wide: {line!r}")
        if CUT.search(line):
            found.append(f"line {number} cuts a value: {line!r}")
    return found


def _grucli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grucli", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("width", WIDTHS)
def test_piped_output_fits(width: int) -> None:
    env = {**os.environ, "COLUMNS": str(width)}
    for args in COMMANDS:
        result = _grucli(args, env)
        assert result.returncode in (0, 1), result.stderr
        assert result.stdout.strip()
        assert _problems(result.stdout, width) == [], args


def test_wide_terminal_keeps_one_table() -> None:
    """At 120 columns the statistics stay one table; at 60 they are stacked, every column still there."""
    wide = _grucli(["inspect", str(sample("tfk_gru.h5"))], {**os.environ, "COLUMNS": "120"}).stdout
    narrow = _grucli(["inspect", str(sample("tfk_gru.h5"))], {**os.environ, "COLUMNS": "60"}).stdout
    assert sum(line.startswith("gate ") for line in wide.splitlines()) == 1
    assert sum(line.startswith("gate ") for line in narrow.splitlines()) > 1
    for header in ("shape", "mean", "std", "min", "max", "norm", "max|w|", "NaN", "Inf"):
        assert re.search(rf"(^|\s){re.escape(header)}(\s|$)", narrow, re.M), header


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("width", WIDTHS)
def test_terminal_output_fits_in_tmux(width: int, tmp_path: Path) -> None:
    socket = f"grucli-test-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES", "TMUX")}
    done = "__grucli_done__"
    script = tmp_path / "run.sh"
    lines = ["#!/bin/sh", "unset COLUMNS"]
    for args in COMMANDS[:6]:
        lines.append(" ".join([sys.executable, "-m", "grucli", *args]))
    lines.append(f"echo {done}")
    lines.append("sleep 60")
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", "50", str(script)],
                   env=env, check=True, timeout=30)
    try:
        subprocess.run(["tmux", "-L", socket, "set-option", "-g", "history-limit", "50000"], check=False, timeout=10)
        deadline = time.monotonic() + 180
        captured = ""
        while time.monotonic() < deadline:
            # -J joins lines tmux wrapped: a line wider than the pane shows up as one long line.
            captured = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-J", "-S", "-"], capture_output=True,
                                      text=True, timeout=10).stdout
            if done in captured:
                break
            time.sleep(0.5)
        assert done in captured, captured[-2000:]
        assert "Error" not in captured, captured
        assert "gate" in captured and "t = 0" in captured
        assert _problems(captured.replace(done, ""), width) == []
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, timeout=10)


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("width", [45, 60, 120])
def test_statistics_grid_is_what_rich_table_prints(color: bool, width: int) -> None:
    """The statistics are laid out without Rich's Table (a tenth of `inspect`'s time went to it);
    the lines must be Rich's own, colour codes included: the same cells through the Table they
    replace, a NaN count in bold red and blank lines between gates."""
    import dataclasses

    from rich import box
    from rich.table import Table

    from grucli.output import render
    from grucli.model.layers import find_layers
    from grucli.files.reader import read_model
    from grucli.commands.inspect import build_inspect_report

    layer = build_inspect_report(find_layers(read_model(sample("k3_lstm.h5")))).layers[0]
    first = layer.gates[0].arrays[0]
    nan = dataclasses.replace(first, stats=dataclasses.replace(first.stats, nan=3, mean=float("nan")))
    layer = dataclasses.replace(layer, gates=(dataclasses.replace(layer.gates[0], arrays=(nan, *layer.gates[0].arrays[1:])),
                                              *layer.gates[1:]))
    grids = render._stats_tables(layer, width)
    tables = []
    for grid in grids:
        lines = grid.plain.splitlines()
        headers = lines[0].split()
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
        for header in headers:
            table.add_column(header, justify="left" if header in ("gate", "array", "shape") else "right", no_wrap=True)
        for gate in layer.gates:
            for index, array in enumerate(gate.arrays):
                s = array.stats
                everything = {"gate": f"{gate.gate} {gate.meaning.split()[0]}" if index == 0 else "", "array": array.name,
                              "shape": str(array.shape), "mean": f"{s.mean:.3g}", "std": f"{s.std:.3g}", "min": f"{s.min:.3g}",
                              "max": f"{s.max:.3g}", "norm": f"{s.norm:.3g}", "max|w|": f"{s.max_abs:.3g}"}
                warn = "bold red" if s.nan or s.inf else ""
                table.add_row(*(Text(str(s.nan), style=warn) if h == "NaN" else Text(str(s.inf), style=warn) if h == "Inf"
                                else Text(everything[h]) for h in headers))
            table.add_section()
        tables.append(table)
    assert len(grids) == (1 if width == 120 else len(grids)) and (width == 120 or len(grids) > 1)
    assert render.to_text(grids, color, width) == render.to_text(tables, color, width)
    assert ("\x1b[1;31m" in render.to_text(grids, color, width)) == color
