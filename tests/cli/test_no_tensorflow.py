"""inspect, export, check, diff, replay and explain never import TensorFlow or Keras: run them where those imports fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REAL, SAMPLES

BLOCKER = """
import importlib.abc, sys
BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "torch")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked import of " + name)
sys.meta_path.insert(0, Block())
"""

RUNNER = """
from grucli.cli import cli
code = 0
for args in RUNS:
    try:
        cli.main(args=args, prog_name="grucli", standalone_mode=False)
    except SystemExit as exc:
        code = code or exc.code
leaked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
print("LEAKED", leaked, file=sys.stderr)
sys.exit(code or (3 if leaked else 0))
"""


def model_files() -> list[Path]:
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".keras", ".h5"))
    files += sorted(p for p in REAL.glob("*") if p.suffix in (".h5", ".hdf5")) if REAL.exists() else []
    return files


def test_blocker_works() -> None:
    script = BLOCKER + "\nimport tensorflow"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "blocked import of tensorflow" in result.stderr


def test_inspect_export_check_diff_without_tensorflow(tmp_path: Path) -> None:
    runs = []
    for index, path in enumerate(model_files()):
        runs.append(["inspect", str(path), "--values"])
        runs.append(["inspect", str(path), "--json"])
        runs.append(["export", str(path), "-o", str(tmp_path / f"{index}.npz")])
        runs.append(["check", str(path)])
        runs.append(["diff", str(path), str(path)])
    runs.append(["export", str(SAMPLES / "k3_bidir_concat.keras"), "--layout", "torch", "-o", str(tmp_path / "torch.npz")])
    assert len(runs) > 200
    result = subprocess.run([sys.executable, "-c", f"RUNS = {runs!r}\n" + BLOCKER + RUNNER], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED []" in result.stderr
    assert len(list(tmp_path.glob("*.npz"))) == len(model_files()) + 1


def test_replay_matches_keras_without_tensorflow(tmp_path: Path, keras3: object, tf_keras: object) -> None:
    """Truth from Keras 3 / tf-keras here; the replays run in a process where those imports fail."""
    import numpy as np
    from tests.engine.test_replay import model_input, model_inputs, predict, tf_keras_real_model

    cases = []
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix not in (".keras", ".h5") or "weights" in path.name or "cudnn" in path.name:
            continue
        if path.name.startswith("keras1_"):
            continue  # no Keras loads Keras 1 files as saved; verify's tests cover them through repairs
        loader = keras3.saving.load_model if path.name.startswith(("k3_", "q_")) else tf_keras.models.load_model  # type: ignore[attr-defined]
        cases.append((path, loader(path, compile=False)))
    if REAL.exists():
        for name in ("trafficflow_gru_keras2.1.4.h5", "trafficflow_lstm_keras2.1.4.h5", "ethnicolr_census2010_lstm_tfkeras2.5.h5",
                     "katakana_seq2seq_lstm_tfkeras2.2.4.h5", "poreplex_demux_birnn_lstmcell_tfkeras2.2.4.hdf5"):
            cases.append((REAL / name, tf_keras_real_model(tf_keras, name)))
    runs = []
    expected = {}
    for index, (path, model) in enumerate(cases):
        if len(model.inputs) > 1:  # the seq2seq models: one array per named input
            xs = model_inputs(model, seed=index)
            source = tmp_path / f"x{index}.npz"
            names = [entry[0] for entry in model.get_config()["input_layers"]]  # the Keras inputs' names
            np.savez(source, **dict(zip(names, xs)))
            outputs = predict(model, xs)
        else:
            x = model_input(model, seed=index)
            source = tmp_path / f"x{index}.npy"
            np.save(source, x)
            outputs = predict(model, x)
        expected[index] = outputs
        out = tmp_path / (f"y{index}.npz" if len(outputs) > 1 else f"y{index}.npy")
        runs.append(["replay", str(path), "--input", str(source), "-o", str(out)])
    result = subprocess.run([sys.executable, "-c", f"RUNS = {runs!r}\n" + BLOCKER + RUNNER], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED []" in result.stderr
    for index, outputs in expected.items():
        if len(outputs) > 1:
            with np.load(tmp_path / f"y{index}.npz") as data:
                replayed = [data[f"output_{k}"] for k in range(len(outputs))]
        else:
            replayed = [np.load(tmp_path / f"y{index}.npy")]
        # "To 1e-6": predict computes in float32, so its rounding grows with the output's size.
        for a, b in zip(replayed, outputs):
            assert np.allclose(a, b, rtol=1e-6, atol=1e-6), (cases[index][0].name, float(np.abs(a - b).max()))
    assert len(expected) == len(cases) >= 38  # every sample model Keras can load, and the 5 real full models


def test_weights_with_config_without_tensorflow(tmp_path: Path, tf_keras: object) -> None:
    """A weights-only file plus --config: read, replayed and checked where TensorFlow cannot load;
    the replay matches tf-keras's predict computed here."""
    import numpy as np
    from tests.files.test_config_option import REACTIONRNN, reactionrnn_model

    model = reactionrnn_model(tf_keras)
    (tmp_path / "model.json").write_text(model.to_json())
    ids = np.random.default_rng(3).integers(1, 401, (2, 40))
    np.save(tmp_path / "ids.npy", ids)
    weights, config = str(REAL / REACTIONRNN), str(tmp_path / "model.json")
    runs = [["inspect", weights, "--config", config, "--json"], ["check", weights, "--config", config],
            ["export", weights, "--config", config, "-o", str(tmp_path / "g.npz")],
            ["replay", weights, "--config", config, "--input", str(tmp_path / "ids.npy"), "-o", str(tmp_path / "y.npy")]]
    result = subprocess.run([sys.executable, "-c", f"RUNS = {runs!r}\n" + BLOCKER + RUNNER], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED []" in result.stderr
    # float64 against float64: holds on any CPU (float32 predict moves by ~1e-5 between kernels).
    reference = reactionrnn_model(tf_keras, "float64").predict(ids, verbose=0)
    assert np.allclose(np.load(tmp_path / "y.npy"), reference, rtol=1e-9, atol=1e-12)


def test_explain_without_tensorflow_compares_with_the_replay(tmp_path: Path) -> None:
    csv = tmp_path / "seq.csv"
    csv.write_text("1\n2\n9\n8\n")
    runs = [["explain", str(SAMPLES / "q_gru1.keras"), "--input", str(csv)],
            ["explain", str(SAMPLES / "k3_bidir_concat.keras"), "--layer", "bi/backward", "--unit", "1"],
            ["explain", str(SAMPLES / "tfk_lstm.h5"), "--json"]]
    result = subprocess.run([sys.executable, "-c", f"RUNS = {runs!r}\n" + BLOCKER + RUNNER], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LEAKED []" in result.stderr
    assert result.stdout.count("explain beside replay") == 2
    assert "note: Keras is not installed, so the unit's outputs are compared with grucli's replay of the layer" in result.stdout
    assert '"reference": "replay"' in result.stdout


def test_convert_without_onnx_says_how_to_install(tmp_path: Path) -> None:
    """Without the onnx package, convert is a clear error (exit 2) naming the extra, never a traceback."""
    blocker = BLOCKER.replace('BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "torch")',
                              'BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "torch", "onnx", "onnxruntime")')
    assert blocker != BLOCKER
    args = ["grucli", "convert", str(SAMPLES / "k3_gru.keras"), "-o", str(tmp_path / "m.onnx")]
    script = blocker + f"sys.argv = {args!r}\nfrom grucli.cli import main\nmain()\n"  # the command line as users run it
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Error: convert needs the onnx package, which cannot be imported (blocked import of onnx); install it with pip install" \
        in result.stderr
    assert "[onnx]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.onnx").exists()
