"""At 80 columns every command's main output and every --help fit: no line over 80 characters,
and where a table stacks into records its continuation lines are indented under the record, never
at column 0 with a label cut in two (`worst (sample, ` / `t, unit)`)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from conftest import sample
from grucli.cli import cli

WIDTH = 80
COMMANDS = ["inspect", "explain", "export", "verify", "replay", "diff", "check", "plot"]


def run80(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": str(WIDTH), "NO_COLOR": "1"})


def assert_fits(text: str) -> None:
    long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not long, long


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_fits_80_columns(command: str) -> None:
    result = run80(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert_fits(result.output)


def column_zero_starts(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line[0].isspace()]


def test_verify_at_80_columns(keras3: Any) -> None:
    result = run80("verify", str(sample("k3_bidir_concat.keras")))
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    starts = column_zero_starts(result.stdout)
    allowed = (str(sample("k3_bidir_concat.keras")), "recurrent layers:", "bi ", "whole model", "replay vs predict ", "PASS:")
    assert all(line.startswith(allowed) for line in starts), starts
    # Each record's labels are whole: the worst place's label never split across lines.
    assert result.stdout.count("worst (sample, t, unit): ") == 2
    assert all(line.startswith(" ") for line in result.stdout.splitlines() if "worst (sample, t, unit)" in line)


def test_diff_at_80_columns() -> None:
    result = run80("diff", str(sample("k3_gru.keras")), str(sample("k3_gru.h5")))
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    starts = column_zero_starts(result.stdout)
    assert all(line.startswith(("A: ", "B: ", "gru ", "identical")) for line in starts), starts
    assert result.stdout.count("units that moved most (‖Δ column‖): ") == 12


def test_explain_at_80_columns() -> None:
    result = run80("explain", str(sample("k3_lstm.keras")), "--keras", "none")
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    # Wrapped arithmetic continues indented under its line: every column-0 line opens a section.
    starts = column_zero_starts(result.stdout)
    assert all(line.startswith((str(sample("k3_lstm.keras")), "equations", "each step", "t = ", "output of", "predict", "replay",
                                " t ", "─", "max |")) for line in starts), starts


@pytest.mark.parametrize("args", [["inspect", "k3_bidir_concat.keras"], ["inspect", "k3_lstm.keras", "--values"],
                                  ["check", "k3_nested.keras"]])
def test_inspect_and_check_at_80_columns(args: list[str]) -> None:
    result = run80(args[0], str(sample(args[1])), *args[2:])
    assert result.exit_code in (0, 1), result.output
    assert_fits(result.stdout)
