"""`grucli verify`: passes on every sample model, fails on a wrong replay, exit codes, inputs, safety."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLES, needs_keras, real, sample

from grucli.cli import cli

FULL_MODELS = sorted(
    p.name for p in SAMPLES.iterdir()
    if p.suffix in (".keras", ".h5") and "weights" not in p.name and "cudnn" not in p.name
)


def framework_for(name: str) -> str:
    return "tf-keras" if name.startswith(("tfk_", "keras1_", "trafficflow", "ethnicolr")) else "keras"


def verify(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = CliRunner().invoke(cli, ["verify", *args, "--json"])
    document = json.loads(result.stdout) if result.exit_code in (0, 1) else None
    return result.exit_code, document, result.stderr


@needs_keras
@pytest.mark.parametrize("name", FULL_MODELS)
def test_every_sample_model_passes_at_the_1e6_level(name: str) -> None:
    code, doc, err = verify(str(sample(name)), "--keras", framework_for(name))
    assert code == 0, err or json.dumps(doc, indent=1)[:3000]
    assert doc is not None and doc["passed"] is True and doc["device"] == "CPU"
    checked = [layer for layer in doc["layers"] if layer["max_abs_err"] is not None]
    errors = [layer["max_abs_err"] for layer in checked]
    end_to_end = doc["comparisons"]["replay_vs_predict"]
    if end_to_end is not None:
        errors.append(end_to_end["max_abs_err"])
    assert checked and end_to_end is not None
    assert max(errors) < 2e-6


@needs_keras
@pytest.mark.parametrize("name", ["trafficflow_gru_keras2.1.4.h5", "trafficflow_lstm_keras2.1.4.h5", "ethnicolr_census2010_lstm_tfkeras2.5.h5"])
def test_real_files_pass_under_tf_keras(name: str) -> None:
    code, doc, err = verify(str(real(name)), "--keras", "tf-keras")
    assert code == 0, err
    assert doc is not None and doc["comparisons"]["replay_vs_predict"]["max_abs_err"] < 2e-6


@needs_keras
def test_keras3_hard_sigmoid_change_is_named_and_fails() -> None:
    code, doc, _ = verify(str(real("trafficflow_gru_keras2.1.4.h5")), "--keras", "keras")
    assert code == 1 and doc is not None and doc["passed"] is False
    assert any("layer gru_1: recurrent_activation hard_sigmoid" in w and "Keras 2.1.4" in w for w in doc["warnings"])
    assert "wrapped the Keras 2.1 list-style Sequential config in a dict" in doc["repairs"]
    assert "GRU gru_1: added reset_after=False (no key in the config; the bias shape decides)" in doc["repairs"]


@needs_keras
def test_keras3_loads_time_major_file_by_repair() -> None:
    code, doc, _ = verify(str(real("ethnicolr_census2010_lstm_tfkeras2.5.h5")), "--keras", "keras")
    assert code == 0 and doc is not None
    assert "dropped time_major from the LSTM configs (Keras 3.15.1 (tensorflow backend) does not know them)" in doc["repairs"]


@needs_keras
def test_swapped_gates_fail_with_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from grucli.model import gates

    original = gates.gate_columns

    def swapped(kind: str, units: int, gate: str) -> slice:
        return original(kind, units, {"z": "r", "r": "z"}.get(gate, gate))

    monkeypatch.setattr(gates, "gate_columns", swapped)
    code, doc, _ = verify(str(sample("k3_gru.keras")))
    assert code == 1 and doc is not None
    assert doc["layers"][0]["passed"] is False and doc["layers"][0]["max_abs_err"] > 1e-3
    assert doc["comparisons"]["replay_vs_predict"]["passed"] is False


@needs_keras
def test_json_schema() -> None:
    code, doc, _ = verify(str(sample("k3_bidir_concat.keras")), "--batch", "2", "--seed", "3")
    assert code == 0 and doc is not None
    assert {"passed", "atol", "rtol", "device", "layers", "comparisons", "warnings"} <= set(doc)
    assert (doc["atol"], doc["rtol"]) == (1e-5, 1e-5)
    [layer] = doc["layers"]
    assert {"path", "class", "max_abs_err", "max_rel_err", "passed", "worst"} <= set(layer)
    assert layer["path"] == "bi" and layer["class"] == "Bidirectional"
    assert set(layer["worst"]) == {"sample", "timestep", "unit", "position"} and layer["worst"]["sample"] in (0, 1)
    assert set(doc["comparisons"]) == {"replay_vs_predict", "replay_vs_expected", "predict_vs_expected"}
    assert doc["comparisons"]["replay_vs_expected"] is None and doc["comparisons"]["predict_vs_expected"] is None
    assert doc["input"].startswith("random, seed 3, (2, 5, 3)")


def test_expected_reference(tmp_path: Path, keras3: Any) -> None:
    model = keras3.saving.load_model(sample("q_gru3_dense30.keras"), compile=False)
    x = np.random.default_rng(0).normal(size=(2, 30, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", model.predict(x, verbose=0))
    code, doc, _ = verify(str(sample("q_gru3_dense30.keras")), "--input", str(tmp_path / "x.npy"), "--expected", str(tmp_path / "ref.npy"))
    assert code == 0 and doc is not None
    assert doc["comparisons"]["predict_vs_expected"]["max_abs_err"] == 0.0
    assert doc["comparisons"]["replay_vs_expected"]["passed"] is True
    bad = np.load(tmp_path / "ref.npy")
    bad[1, 7] += 0.01
    np.save(tmp_path / "bad.npy", bad)
    code, doc, _ = verify(str(sample("q_gru3_dense30.keras")), "--input", str(tmp_path / "x.npy"), "--expected", str(tmp_path / "bad.npy"))
    assert code == 1 and doc is not None
    assert doc["comparisons"]["predict_vs_expected"]["worst"] == {"sample": 1, "timestep": None, "unit": 7, "position": []}


@needs_keras
def test_trace_follows_the_gru_arithmetic() -> None:
    code, doc, _ = verify(str(sample("q_gru2_linear.keras")), "--trace", "--sample", "1", "--unit", "1", "--batch", "2")
    assert code == 0 and doc is not None
    [trace] = doc["traces"]
    assert (trace["path"], trace["sample"], trace["unit"]) == ("gru_7", 1, 1)
    z, hh, h = (np.asarray(trace["values"][k]) for k in ("z", "hh", "h"))
    previous = np.concatenate([[0.0], h[:-1]])
    assert np.allclose(h, z * previous + (1 - z) * hh)
    text = CliRunner().invoke(cli, ["verify", str(sample("q_gru2_linear.keras")), "--trace", "--unit", "1"]).stdout
    assert "trace: gru_7, sample 0, unit 1" in text and "z update" in text and "hh candidate" in text


# --- inputs -------------------------------------------------------------------------------------------------------


@needs_keras
def test_single_sequence_gets_a_batch_axis_and_csv(tmp_path: Path) -> None:
    sequence = np.random.default_rng(1).normal(size=(5, 10))
    np.save(tmp_path / "seq.npy", sequence)
    np.savetxt(tmp_path / "seq.csv", sequence, delimiter=",")
    for name in ("seq.npy", "seq.csv"):
        code, doc, _ = verify(str(sample("q_gru32_dense10.keras")), "--input", str(tmp_path / name))
        assert code == 0 and doc is not None and "(1, 5, 10)" in doc["input"]
    np.save(tmp_path / "series.npy", np.arange(4.0))
    code, doc, _ = verify(str(sample("q_gru1.keras")), "--input", str(tmp_path / "series.npy"))
    assert code == 0 and doc is not None and "(1, 4, 1)" in doc["input"]


def test_wrong_shape_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 9)))
    code, _, err = verify(str(sample("q_gru32_dense10.keras")), "--input", str(tmp_path / "x.npy"))
    assert code == 2
    assert err == f"Error: input {tmp_path / 'x.npy'} has shape (2, 5, 9); the model's input input_layer_24 expects (batch, 5, 10)\n"


def test_pickled_input_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    np.save(tmp_path / "evil.npy", np.array([Exploit()], dtype=object), allow_pickle=True)
    code, _, err = verify(str(sample("k3_gru.keras")), "--input", str(tmp_path / "evil.npy"))
    assert code == 2
    assert err == f"Error: input {tmp_path / 'evil.npy'} holds Python objects (pickle); grucli never unpickles input, expected a numeric array\n"
    assert not marker.exists()


def test_lambda_model_is_refused_and_never_runs(tmp_path: Path, keras3: Any) -> None:
    marker = tmp_path / "ran"
    inputs = keras3.Input((3, 2))
    # The path is a constant inside the lambda's code, so Keras can serialise the function.
    function = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307 - the test's own code
    x = keras3.layers.Lambda(function, name="sneaky")(inputs)
    model = keras3.Model(inputs, keras3.layers.GRU(2)(x))
    model.save(tmp_path / "lambda.keras")
    marker.unlink()  # building the model ran the lambda once; loading must not run it again
    code, _, err = verify(str(tmp_path / "lambda.keras"))
    assert code == 2
    assert err == "Error: layer sneaky is a Lambda: loading it would run Python code stored in the file; pass --unsafe only for a file you trust\n"
    assert not marker.exists()
    # The commands that never import Keras read the file and never run its code either.
    model = str(tmp_path / "lambda.keras")
    for args, expected in ((["inspect", model], 0), (["export", model, "-o", str(tmp_path / "g.npz")], 0), (["check", model], 0),
                           (["replay", model, "-o", str(tmp_path / "y.npy")], 2), (["diff", model, model], 0)):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == expected, (args, result.stderr)
    assert not marker.exists()


def test_weights_only_file_is_an_error() -> None:
    code, _, err = verify(str(sample("k3_gru.weights.h5")))
    assert code == 2
    assert err == f"Error: {sample('k3_gru.weights.h5')} holds weights only; verify needs its architecture: pass --config MODEL.json (the JSON of model.to_json(), or a .keras config.json)\n"


@needs_keras
def test_text_report() -> None:
    result = CliRunner().invoke(cli, ["verify", str(sample("k3_lstm_backwards_bidir.keras"))])
    assert result.exit_code == 0
    assert "predict: Keras 3.15.1 (tensorflow backend) (auto) on CPU" in result.stdout
    assert " back " in result.stdout and " bl " in result.stdout
    assert "PASS: every comparison within atol 1e-05 + rtol 1e-05·|predict| (float32 predict on CPU)" in result.stdout


def test_hard_sigmoid_outside_recurrent_layers_is_named_too(tmp_path: Path, tf_keras: Any) -> None:
    model = tf_keras.Sequential([
        tf_keras.layers.GRU(3, input_shape=(4, 2), name="gru"),
        tf_keras.layers.Dense(2, activation="hard_sigmoid", name="gate_head"),
    ])
    model.set_weights([np.random.default_rng(0).normal(0, 1.5, size=w.shape) for w in model.get_weights()])
    model.save(tmp_path / "m.h5", save_format="h5")
    code, doc, _ = verify(str(tmp_path / "m.h5"), "--keras", "tf-keras")
    assert code == 0 and doc is not None and doc["warnings"] == []
    code, doc, _ = verify(str(tmp_path / "m.h5"), "--keras", "keras")
    assert code == 1 and doc is not None
    assert [w.split(":")[1].strip() for w in doc["warnings"]] == ["layer gate_head"]
    assert doc["layers"][0]["passed"] is True  # the GRU itself computes the same in both


@pytest.mark.parametrize(("name", "framework"), [
    ("trafficflow_gru_keras2.1.4.h5", "tf-keras 2.21.0"),  # a Keras 2 file: the Keras 2 definitions
    ("katakana_seq2seq_lstm_tfkeras2.2.4.h5", "tf-keras 2.21.0"),
])
@needs_keras
def test_auto_picks_the_files_own_generation(name: str, framework: str) -> None:
    code, doc, err = verify(str(real(name)))
    assert code == 0, err or doc
    assert doc is not None and doc["framework"] == f"{framework} (auto)"


@needs_keras
def test_auto_runs_keras3_for_keras3_files() -> None:
    code, doc, _ = verify(str(sample("k3_gru.keras")))
    assert code == 0 and doc is not None and doc["framework"].startswith("Keras 3.")


@needs_keras
def test_trace_of_a_conv_lstm_is_refused_by_name(tmp_path: Path) -> None:
    # A ConvLSTM's units are spatial maps: --trace (one unit per step) says so and points to replay --trace.
    result = CliRunner().invoke(cli, ["verify", str(SAMPLES / "k3_conv_lstm1d.keras"), "--trace"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --trace prints one unit of a GRU, LSTM or SimpleRNN; layer conv_lstm is a ConvLSTM1D")


@needs_keras
def test_keras3_builds_tf_keras_2_2_files_through_repairs() -> None:
    # Without tf-keras a user runs Keras 3; these tf.keras 2.2.4 files need repairs to build.
    # poreplex: a dict-style Sequential whose first layer holds batch_input_shape, and
    # Bidirectional(RNN(LSTMCell)) configs that name no module. Keras 3 computes it as saved.
    code, doc, err = verify(str(real("poreplex_demux_birnn_lstmcell_tfkeras2.2.4.hdf5")), "--keras", "keras")
    assert code == 0, err or doc
    assert doc is not None and doc["comparisons"]["replay_vs_predict"]["passed"] is True
    assert "moved batch_input_shape [None, 300, 1] of the first layer into an InputLayer" in doc["repairs"]
    assert "named the module keras.layers for nested layers: RNN in bidirectional_2, LSTMCell in rnn, LSTMCell in rnn_1" in doc["repairs"]
    # katakana: class "Model", a decoder called on [x, h, c], initializers with a dtype. It
    # builds and runs; it fails only because Keras 3's hard_sigmoid is not the one it was trained with.
    code, doc, err = verify(str(real("katakana_seq2seq_lstm_tfkeras2.2.4.h5")), "--keras", "keras")
    assert code == 1 and doc is not None, err
    assert {
        "model: class Model (tf.keras 2.2's name for a functional model) read as Functional",
        "lstm_1: the Keras 2 call on [x, *states] given as initial_state=",
        "dropped the dtype of 10 initializer configs (tf.keras 2.2 kept one; Keras 3 refuses it)",
    } <= set(doc["repairs"])
    assert [w.split(":")[1].strip() for w in doc["warnings"]] == ["layer lstm", "layer lstm_1"]
    assert all(w.startswith("semantics:") and "hard_sigmoid" in w for w in doc["warnings"])


def test_a_layer_fed_exactly_the_replays_input_reuses_its_run() -> None:
    """verify's per-layer check reuses the end-to-end replay's run of a layer only when the
    framework fed the layer exactly what the replay did: same values, mask and initial states."""
    from grucli.engine.graph import ModelReplay
    from grucli.model.layers import find_layers
    from grucli.files.reader import read_model
    from grucli.model.semantics import KERAS3
    from grucli.commands.verify import _same_call

    with read_model(sample("k3_gru.keras")) as model_file:
        replay = ModelReplay(model_file, find_layers(model_file), KERAS3)
        x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
        replay.run([x])
        call = _same_call(replay.calls, replay.dtype, "gru", x, None, [])
        assert call is not None and call.path == "gru"
        nudged = x.copy()
        nudged[1, 4, 2] = np.nextafter(nudged[1, 4, 2], np.float32(np.inf))
        assert _same_call(replay.calls, replay.dtype, "gru", nudged, None, []) is None
        assert _same_call(replay.calls, replay.dtype, "gru", x, np.ones((2, 5), bool), []) is None
        assert _same_call(replay.calls, replay.dtype, "gru", x, None, [np.zeros((2, 4))]) is None
        assert _same_call(replay.calls, replay.dtype, "other", x, None, []) is None


def test_compare_in_blocks_finds_the_worst_value_anywhere() -> None:
    """verify compares long outputs block by block; the verdict, errors and worst location are
    those of the whole array (checked against a comparison written out here)."""
    from grucli.commands.verify_report import COMPARE_BLOCK, compare

    rng = np.random.default_rng(3)
    replayed = rng.normal(size=(3, COMPARE_BLOCK // 100 + 7, 100))  # more than two blocks
    predicted = (replayed + rng.normal(scale=1e-7, size=replayed.shape)).astype(np.float32)
    predicted[2, 2500, 17] += 3e-4  # the one value out of tolerance, in the last block
    result = compare([replayed], [predicted], 1e-5, 1e-5)
    assert result is not None
    error = np.abs(replayed - predicted.astype(np.float64))
    assert result.max_abs_err == error.max()
    assert result.max_rel_err == (error / (np.abs(predicted.astype(np.float64)) + 1e-5)).max()
    assert not result.passed
    assert (result.worst.sample, result.worst.timestep, result.worst.unit) == (2, 2500, 17)
    predicted[2, 2500, 17] -= 3e-4
    assert compare([replayed], [predicted], 1e-5, 1e-5).passed
