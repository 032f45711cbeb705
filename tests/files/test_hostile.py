"""Every command on every broken or hostile input: exit 2, one `Error:` line, bounded time and memory.

Each run is its own process, so time and peak memory are the operating system's figures for
that command alone (`os.wait4`), not estimates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_keras, sample
from hostile.make_corpus import make_inputs, make_models

MAX_SECONDS = 20.0
MAX_RSS_MIB = 400.0


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("corpus")
    return {"models": make_models(root / "models"), "inputs": make_inputs(root / "inputs", root / "pickle_ran"), "root": {"root": root}}


# The command is started by a small launcher: a process forked from this one (which may hold
# TensorFlow) would count this process's memory as its own until it execs.
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen([sys.executable, "-m", "grucli", *sys.argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
stderr = process.stderr.read().decode()
_, status, usage = os.wait4(process.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), stderr, time.perf_counter() - start, usage.ru_maxrss / 1024]))
"""


def run_measured(args: list[str]) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS in MiB) of `python -m grucli ARGS`, from the OS."""
    import json

    result = subprocess.run([sys.executable, "-c", LAUNCHER, *args], capture_output=True, text=True, check=True)
    code, stderr, seconds, rss = json.loads(result.stdout)
    return code, stderr, seconds, rss


def commands_for_model(model: Path, out: Path) -> list[list[str]]:
    good = str(sample("k3_gru.keras"))
    return [
        ["inspect", str(model)],
        ["export", str(model), "-o", str(out / "x.npz")],
        ["verify", str(model)],
        ["replay", str(model), "-o", str(out / "y.npy")],
        ["diff", str(model), good],
        ["diff", good, str(model)],
        ["check", str(model)],
    ]


def assert_clean_refusal(args: list[str], code: int, stderr: str, seconds: float, rss: float) -> None:
    assert code == 2, (args, code, stderr)
    assert stderr.startswith("Error: ") and stderr.endswith("\n") and stderr.count("\n") == 1, (args, stderr)
    assert "Traceback" not in stderr and "unexpected" not in stderr, (args, stderr)
    assert seconds < MAX_SECONDS, (args, seconds)
    assert rss < MAX_RSS_MIB, (args, rss)


MODEL_ITEMS = [
    "random_bytes.keras", "random_bytes.h5", "empty.h5", "truncated.keras", "truncated.h5", "hdf5_signature_only.h5",
    "no_config.keras", "bad_json.keras", "config_not_a_model.keras", "zip_slip.keras", "absolute_member.keras",
    "zip_bomb.keras", "plain.h5", "shape_contradiction.h5", "huge_shape.h5", "huge_shape.keras", "string_weights.h5",
    "external_link.h5", "config_contradicts_units.h5", "weights_npz.keras", "directory", "missing",
]


@pytest.mark.parametrize("item", MODEL_ITEMS)
def test_every_command_refuses_hostile_models(corpus: dict[str, dict[str, Path]], tmp_path: Path, item: str) -> None:
    model = corpus["models"][item]
    for args in commands_for_model(model, tmp_path):
        assert_clean_refusal(args, *run_measured(args))
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


INPUT_ITEMS = ["pickle.npy", "pickle.npz", "wrong_shape.npy", "strings.npy", "bad.csv", "truncated.npy", "input_directory"]


@pytest.mark.parametrize("item", INPUT_ITEMS)
def test_hostile_inputs_are_refused_and_never_run(corpus: dict[str, dict[str, Path]], tmp_path: Path, item: str) -> None:
    bad_input = corpus["inputs"][item]
    for command in (["verify"], ["replay", "-o", str(tmp_path / "y.npy")]):
        args = [*command, str(sample("k3_gru.keras")), "--input", str(bad_input)]
        assert_clean_refusal(args, *run_measured(args))
    assert not (corpus["root"]["root"] / "pickle_ran").exists()
    assert list(tmp_path.iterdir()) == []


def test_messages_say_what_is_wrong(corpus: dict[str, dict[str, Path]]) -> None:
    expected = {
        "zip_bomb.keras": "zip member model.weights.h5 (5.0 GiB), over the limit of 4.0 GiB per array",
        "huge_shape.h5": "declares shape (1000000, 1000000) (3.6 TiB), over the limit of 4.0 GiB",
        "huge_shape.keras": "declares shape (1000000, 1000000) (3.6 TiB), over the limit of 4.0 GiB",
        "zip_slip.keras": "zip member '../../x' climbs out of the archive's folder",
        "external_link.h5": "links to another file",
        "shape_contradiction.h5": "bias (7,), expected (12,) or (2, 12)",
        "config_contradicts_units.h5": "the config says 9 units but the recurrent kernel (4, 12) holds 4",
        "string_weights.h5": "holds |S7 values; expected numbers",
    }
    for item, fragment in expected.items():
        code, stderr, _, _ = run_measured(["inspect", str(corpus["models"][item])])
        assert code == 2 and fragment in stderr, (item, stderr)


@needs_keras
def test_reading_never_changes_the_file(tmp_path: Path) -> None:
    import hashlib

    files = [sample("k3_gru.keras"), sample("tfk_bidir.h5"), sample("k3_lstm.weights.h5")]
    before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    stamps = {path: path.stat().st_mtime_ns for path in files}
    for path in files:
        for args in (["inspect", str(path), "--values"], ["export", str(path), "-o", str(tmp_path / "g.npz"), "--force"],
                     ["check", str(path)], ["diff", str(path), str(path)]):
            code, stderr, _, _ = run_measured(args)
            assert code == 0, stderr
    code, stderr, _, _ = run_measured(["verify", str(files[0])])
    assert code == 0, stderr
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files} == before
    assert {path: path.stat().st_mtime_ns for path in files} == stamps
