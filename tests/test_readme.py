"""Every `$ grucli ...` example in the README runs from a fresh clone's root, exits as shown (0
unless the command line ends with `# exit code N`) and prints the lines shown, in order.

`...` lines stand for output left out. Numbers in scientific notation (error magnitudes such
as 4.66e-09) depend on the CPU's float32 rounding in `predict`: the rest of their line must
match, and each such figure must be one of float32 rounding (at most 1e-5) in both. The examples run at 100 columns, the width the README's outputs were taken at.
"""

from __future__ import annotations

import importlib.util

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from grucli.cli import cli
from tests.conftest import KERAS_READY, ROOT

ONNX_READY = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
DYNAMICS_READY = all(importlib.util.find_spec(name) is not None for name in ("zarr", "sklearn"))

README = ROOT / "README.md"
SCIENTIFIC = re.compile(r"\d\.?\d*e[-+]\d\d")
EXIT_CODE = re.compile(r"\s+# exit code (\d+)\s*$")


@dataclass(frozen=True)
class Example:
    line: int
    command: str
    exit_code: int
    shown: tuple[str, ...]
    section: str = ""

    def writes(self) -> str | None:
        """The file its -o writes (a later example of the section may read it)."""
        arguments = shlex.split(self.command)
        return arguments[arguments.index("-o") + 1] if "-o" in arguments[:-1] else None


def examples() -> list[Example]:
    found = []
    lines = README.read_text(encoding="utf-8").splitlines()
    index = 0
    section = ""
    while index < len(lines):
        if lines[index].startswith("## "):
            section = lines[index]
        if lines[index].startswith("```") and index + 1 < len(lines) and lines[index + 1].startswith("$ grucli "):
            start = index + 1
            end = start + 1
            while not lines[end].startswith("```"):
                end += 1
            command = lines[start][2:]
            match = EXIT_CODE.search(command)
            exit_code = int(match.group(1)) if match else 0
            command = EXIT_CODE.sub("", command)
            found.append(Example(start + 1, command, exit_code, tuple(lines[start + 1:end]), section))
            index = end
        index += 1
    return found


EXAMPLES = examples()


def test_the_readme_has_its_examples() -> None:
    commands = [example.command.split()[1] for example in EXAMPLES]
    for command in ("inspect", "explain", "verify", "export", "replay", "diff", "check"):
        assert command in commands
    # The newcomer's questions come first and run on shipped models only.
    assert [e.command for e in EXAMPLES[:4]] == [
        "grucli inspect sample_models/q_gru2_linear.keras",
        "grucli inspect sample_models/q_gru2_linear.keras --gate z --values",
        "grucli explain sample_models/q_gru1.keras --input sample_models/seq_1_2_9_8.csv",
        "grucli inspect sample_models/tfk_gru_reset_before.h5 --gate z",
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_readme_example(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not KERAS_READY and (example.command.startswith("grucli verify") or any("predict" in line for line in example.shown)):
        pytest.skip("the example runs or shows Keras's predict (pip install -e '.[test]')")
    if example.command.startswith("grucli convert") and not ONNX_READY:
        pytest.skip("the example runs ONNX Runtime (pip install -e '.[test]')")
    if example.command.startswith("grucli plot") and importlib.util.find_spec("matplotlib") is None:
        pytest.skip("the example draws with matplotlib (pip install -e '.[test]')")
    if example.section == "## Study a dataset" and not DYNAMICS_READY:
        pytest.skip("the example stores and probes a dataset (pip install -e '.[test]')")
    for operator in ("|", ">", "<", "&&", ";"):
        assert operator not in example.command, f"README line {example.line}: examples are plain commands"
    arguments = shlex.split(example.command)
    assert arguments[0] == "grucli"
    for argument in arguments:
        if "/" in argument and not argument.startswith("-"):
            assert argument.startswith("sample_models/"), f"README line {example.line}: {argument} is not in a fresh clone"
    # A fresh clone's root: the shipped models, and room for the files examples write.
    (tmp_path / "sample_models").symlink_to(ROOT / "sample_models")
    monkeypatch.chdir(tmp_path)
    # An example that reads what an earlier one of its section writes (probe reads activations'
    # store) runs after it, as a reader following the section would.
    for earlier in EXAMPLES[: EXAMPLES.index(example)]:
        written = earlier.writes()
        if earlier.section == example.section and written is not None and written in arguments[1:] and written != example.writes():
            setup = CliRunner().invoke(cli, shlex.split(earlier.command)[1:], env={"COLUMNS": "100", "NO_COLOR": "1"})
            assert setup.exit_code == 0, f"README line {earlier.line}: {setup.output}"
    result = CliRunner().invoke(cli, arguments[1:], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == example.exit_code, f"README line {example.line}: {result.output}"
    produced = [line.rstrip() for line in result.output.splitlines()]
    position = 0
    for shown in example.shown:
        if shown.strip() in ("...", "…"):
            continue
        while position < len(produced) and not same_line(produced[position], shown.rstrip()):
            position += 1
        assert position < len(produced), f"README line {example.line}: {shown!r} is not printed (in this order)\n{result.output}"
        position += 1


# The README's error figures (max |replay − predict|, 4.11e-08) come from Keras's float32 predict,
# whose last bits differ between CPUs (AVX2 and AVX-512 kernels): the README marks them, and they
# are checked as figures of float32 rounding, not digit by digit. A real error (a swapped gate,
# another hard_sigmoid) is 1e-2 or more, and verify's own tolerance is 1e-5.
FLOAT32_ROUNDING = 1e-5


def same_line(produced: str, shown: str) -> bool:
    """The same text, and each scientific figure shown is one of float32 rounding in both."""
    if SCIENTIFIC.sub("#", produced) != SCIENTIFIC.sub("#", shown):
        return False
    pairs = zip(SCIENTIFIC.findall(produced), SCIENTIFIC.findall(shown))
    return all(abs(float(a)) <= FLOAT32_ROUNDING and abs(float(b)) <= FLOAT32_ROUNDING for a, b in pairs)


@pytest.mark.skipif(not (ONNX_READY and KERAS_READY), reason="runs ONNX Runtime and Keras's predict (pip install -e '.[test]')")
def test_the_convert_sections_python_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The seq2seq fed to ONNX Runtime by its Keras input names, after the convert example above it;
    what it computes is what Keras's predict computes on the same arrays."""
    import keras
    import numpy as np

    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("## Run it elsewhere"):readme.index("## Pictures")]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    (tmp_path / "sample_models").symlink_to(ROOT / "sample_models")
    monkeypatch.chdir(tmp_path)
    converted = CliRunner().invoke(cli, ["convert", "sample_models/k3_seq2seq.keras", "-o", "seq2seq.onnx"])
    assert converted.exit_code == 0, converted.output
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert capsys.readouterr().out.splitlines() == ["(1, 4, 2)"]
    model = keras.saving.load_model(ROOT / "sample_models" / "k3_seq2seq.keras")
    expected = model.predict({"encoder_inputs": namespace["source"], "decoder_inputs": namespace["target"]}, verbose=0)
    # 4 units over 7 + 4 steps, then a softmax: float32 rounding near 1e-7
    np.testing.assert_allclose(namespace["probabilities"], expected, rtol=1e-5, atol=1e-6)
