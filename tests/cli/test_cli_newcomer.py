"""What a newcomer meets first: help texts uncut, `inspect --unit` with its numbers, CSV inputs
with errors that say how a CSV is read, `-o -` to stdout, and one meaning per option name."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from grucli.cli import cli
from tests.conftest import sample


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_top_level_help_lists_every_summary_uncut() -> None:
    for columns in ("60", "80"):
        result = CliRunner().invoke(cli, ["--help"], terminal_width=int(columns))
        assert result.exit_code == 0
        listed = re.sub(r"\s+", " ", result.stdout.split("Commands:")[1])
        for name, command in cli.commands.items():
            assert f"{name} {command.short_help}" in listed, (columns, name)
            assert "..." not in (command.short_help or "")
        # In the order a newcomer meets them: inspect first, then explain.
        names = re.findall(r"^  (\w+) ", result.stdout.split("Commands:")[1], re.M)
        assert names[:2] == ["inspect", "explain"]


def test_inspect_unit_shows_the_numbers_without_values() -> None:
    code, out, _ = invoke("inspect", str(sample("q_gru2_linear.keras")), "--unit", "1")
    assert code == 0
    table = out.split("weights feeding unit 1")[1]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.strip().startswith(("x0", "h0", "h1", "bias"))}
    assert set(rows) == {"x0", "h0", "h1", "bias"}
    code, exported, _ = invoke("inspect", str(sample("q_gru2_linear.keras")), "--unit", "1", "--json")
    assert '"values"' in exported


def test_csv_with_a_header_row(tmp_path: Path) -> None:
    plain, headed = tmp_path / "plain.csv", tmp_path / "headed.csv"
    plain.write_text("1\n2\n9\n8\n")
    headed.write_text("value\n1\n2\n9\n8\n")
    outputs = []
    for path in (plain, headed):
        target = tmp_path / f"{path.stem}.npy"
        code, _, err = invoke("replay", str(sample("q_gru1.keras")), "--input", str(path), "-o", str(target))
        assert code == 0, err
        outputs.append(np.load(target))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_csv_of_one_row_says_rows_are_timesteps(tmp_path: Path) -> None:
    path = tmp_path / "row.csv"
    path.write_text("1,2,9,8\n")
    code, _, err = invoke("explain", str(sample("q_gru1.keras")), "--input", str(path), "--keras", "none")
    assert code == 2
    assert err == (f"Error: input {path} has 1 row × 4 columns; each row is one timestep and each column one feature, so the "
                   "model's input input_layer_21 expects 4 rows of 1 column (a single row of values is one timestep; put one "
                   "value per line)\n")


def test_csv_with_a_word_in_the_data(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("1\n2\nnine\n8\n")
    code, _, err = invoke("replay", str(sample("q_gru1.keras")), "--input", str(path), "-o", str(tmp_path / "y.npy"))
    assert code == 2
    assert err == f"Error: input {path}: 'nine' in row 3 of the data is not a number; expected numbers only (a header row may come first)\n"


def test_export_to_stdout_is_the_same_npz(tmp_path: Path) -> None:
    code, _, _ = invoke("export", str(sample("k3_gru.keras")), "-o", str(tmp_path / "gates.npz"))
    assert code == 0
    result = CliRunner().invoke(cli, ["export", str(sample("k3_gru.keras")), "-o", "-"])
    assert result.exit_code == 0
    assert result.stderr.endswith("to stdout\n")
    piped = np.load(io.BytesIO(result.stdout_bytes))
    with np.load(tmp_path / "gates.npz") as written:
        assert piped.files == written.files
        for key in written.files:
            np.testing.assert_array_equal(piped[key], written[key])
    assert not Path("-").exists()


def test_replay_to_stdout(tmp_path: Path) -> None:
    (tmp_path / "seq.csv").write_text("1\n2\n9\n8\n")
    result = CliRunner().invoke(cli, ["replay", str(sample("q_gru1.keras")), "--input", str(tmp_path / "seq.csv"), "-o", "-"])
    assert result.exit_code == 0
    assert np.load(io.BytesIO(result.stdout_bytes)).shape == (1, 1)
    both = CliRunner().invoke(cli, ["replay", str(sample("q_gru1.keras")), "-o", "-", "--gates", "-"])
    assert both.exit_code == 2
    assert both.stderr == "Error: -o - and --gates - both ask for stdout; expected one of them to be a file path\n"


def test_replay_trace_was_renamed_gates(tmp_path: Path) -> None:
    code, _, err = invoke("replay", str(sample("q_gru1.keras")), "-o", str(tmp_path / "y.npy"), "--trace", str(tmp_path / "t.npz"))
    assert code == 2
    assert err.startswith(f"Error: replay --trace {tmp_path / 't.npz'} is now --gates {tmp_path / 't.npz'}")
    assert not (tmp_path / "y.npy").exists()
    code, _, err = invoke("replay", str(sample("q_gru1.keras")), "-o", str(tmp_path / "y.npy"), "--gates", str(tmp_path / "g.npz"))
    assert code == 0, err
    with np.load(tmp_path / "g.npz") as gates:
        assert sorted(gates.files) == ["gru_5/h", "gru_5/hh", "gru_5/r", "gru_5/z"]


def test_binary_output_to_a_terminal_is_refused(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    if shutil.which("script") is None:
        import pytest

        pytest.skip("util-linux script is not installed")
    command = f"{sys.executable} -m grucli export {sample('k3_gru.keras')} -o -; echo exit=$?"
    result = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "Error: -o - writes the .npz file to stdout, which is a terminal here" in result.stdout
    assert "exit=2" in result.stdout
    assert list(tmp_path.iterdir()) == []
