"""An exit 0 means grucli computed the result and checked it (issue "never silently wrong").

Each test builds its model with Keras 3 or tf-keras the way users do (or uses a shared real
file), and checks grucli against Keras's own predict, or checks that grucli refuses by name.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import needs_keras, real, sample

from grucli.cli import INTERNAL_ERROR, cli

RNG = np.random.default_rng(7)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, [*args])


def replay_output(path: Path, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "x.npy", x)
    result = run("replay", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--force")
    assert result.exit_code == 0, result.stderr
    return np.load(tmp_path / "y.npy")


def _edited_copy(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a .keras file whose config.json `edit` changed in place."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _edited_h5(source: Path, target: Path, edit: Callable[[dict[str, Any]], None], text: Callable[[str], str] = str) -> Path:
    """A copy of a full-model .h5 whose model_config `edit` changed (and `text` rewrote as JSON text)."""
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = text(json.dumps(config))
    return target


def randomize(model: Any, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])


# --- 1. operations with constants ------------------------------------------------------------------


@pytest.mark.parametrize("expression", [
    lambda g, ops: g * 2 + 1,
    lambda g, ops: ops.maximum(g, 0),
    lambda g, ops: 1 - g,
    lambda g, ops: g / 4 - ops.minimum(g, 0.1),
    lambda g, ops: (g + g) * 0.5,
])
def test_operations_with_constants_match_predict(keras3: Any, tmp_path: Path, expression: Callable[..., Any]) -> None:
    inputs = keras3.Input((6, 3))
    gru = keras3.layers.GRU(4, return_sequences=True)(inputs)
    model = keras3.Model(inputs, expression(gru, keras3.ops))
    randomize(model)
    model.save(tmp_path / "m.keras")
    x = RNG.normal(size=(3, 6, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    assert np.allclose(replay_output(tmp_path / "m.keras", x, tmp_path), expected, rtol=1e-6, atol=1e-6)


def test_an_operation_the_replay_cannot_run_is_refused_by_name(keras3: Any, tmp_path: Path) -> None:
    inputs = keras3.Input((6, 3))
    model = keras3.Model(inputs, keras3.ops.cumsum(keras3.layers.GRU(4, return_sequences=True)(inputs), axis=1))
    model.save(tmp_path / "m.keras")
    result = run("replay", str(tmp_path / "m.keras"), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 2
    # cumsum, or cumsum_1 when another test made one first
    assert re.match(r"Error: layer cumsum(_\d+)? \(operation keras\.src\.ops\.numpy\.Cumsum\) is not one the replay engine can run",
                    result.stderr)


def test_an_operation_setting_the_replay_does_not_use_is_refused_by_name(keras3: Any, tmp_path: Path) -> None:
    inputs = keras3.Input((6, 3))
    keras3.Model(inputs, keras3.ops.mean(keras3.layers.GRU(4, return_sequences=True)(inputs), axis=1)).save(tmp_path / "m.keras")

    names = []

    def add_setting(config: dict[str, Any]) -> None:
        mean = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Mean")
        mean["config"]["where"] = [True]  # a setting a future Keras might add: never ignored
        names.append(mean["config"]["name"])  # mean, mean_1, ...: Keras numbers repeated names

    path = _edited_copy(tmp_path / "m.keras", tmp_path / "edited.keras", add_setting)
    result = run("replay", str(path), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 2
    assert result.stderr == f"Error: operation {names[0]} (Mean) has the setting where=[True], which the replay does not use\n"


def test_unused_call_arguments_are_refused_by_name(keras3: Any, tmp_path: Path) -> None:
    # Dropout called with training=True runs at inference too: the replay must not drop that.
    inputs = keras3.Input((6, 3))
    x = keras3.layers.Dropout(0.5, name="dropout")(inputs, training=True)
    model = keras3.Model(inputs, keras3.layers.GRU(4)(x))
    model.save(tmp_path / "m.keras")
    result = run("replay", str(tmp_path / "m.keras"), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 2
    assert "layer dropout (Dropout) is called with training=True, which the replay does not support" in result.stderr


# --- 2, 3. nothing compared is not a pass ----------------------------------------------------------------


def time_distributed_bidirectional(keras3: Any, path: Path) -> None:
    """TimeDistributed(Bidirectional(GRU)), which grucli does not slice or replay, then an LSTM."""
    inputs = keras3.Input((4, 6, 3))
    per_step = keras3.layers.TimeDistributed(keras3.layers.Bidirectional(keras3.layers.GRU(3)), name="td")(inputs)
    keras3.Model(inputs, keras3.layers.LSTM(2, name="lstm")(per_step)).save(path)


def test_a_layer_that_was_not_compared_fails_verify(keras3: Any, tmp_path: Path) -> None:
    time_distributed_bidirectional(keras3, tmp_path / "s.keras")
    result = run("verify", str(tmp_path / "s.keras"), "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 1 and document["passed"] is False
    assert document["layers"][0] == {
        "path": "td", "class": "TimeDistributed", "max_abs_err": None, "max_rel_err": None, "passed": False,
        "worst": None, "nonfinite": [], "note": "the replay engine cannot run TimeDistributed(Bidirectional)",
    }
    assert document["layers"][1]["path"] == "lstm" and document["layers"][1]["passed"] is True
    text = run("verify", str(tmp_path / "s.keras"))
    assert "not compared: td: the replay engine cannot run TimeDistributed(Bidirectional)" in text.stdout
    assert "FAIL" in text.stdout and "PASS" not in text.stdout


@needs_keras
def test_a_recurrent_layer_verify_could_not_probe_is_not_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    # The safety net under the probing rules: a recurrent layer grucli found but verify did not
    # reach (here: probing made to miss every layer) fails the run by name.
    import grucli.commands.verify

    monkeypatch.setattr(grucli.commands.verify, "_recurrent_members", lambda layer, prefix="": iter(()))
    result = run("verify", str(sample("k3_gru.keras")), "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 1 and document["passed"] is False
    assert [(c["path"], c["passed"], c["note"]) for c in document["layers"]] == [
        ("gru", False, "verify cannot probe this layer where it sits in the model")]


def test_a_model_without_recurrent_layers_is_an_error(keras3: Any, tmp_path: Path) -> None:
    inputs = keras3.Input((5,), name="features")
    keras3.Model(inputs, keras3.layers.Dense(2, name="head")(keras3.layers.Dense(3, name="hidden")(inputs))).save(tmp_path / "d.keras")
    for command in ("verify", "check"):
        result = run(command, str(tmp_path / "d.keras"))
        assert result.exit_code == 2, (command, result.stdout)
        assert result.stderr == (
            f"Error: {tmp_path / 'd.keras'} has no recurrent layer (expected a GRU, LSTM, SimpleRNN or ConvLSTM layer); "
            "found: features (InputLayer), hidden (Dense), head (Dense)\n"
        )


def test_layer_names_are_printed_as_the_file_writes_them(keras3: Any, tmp_path: Path) -> None:
    """Keras allows "[red]" and ":smile:" in a layer's name; Rich would read them as a style and an
    emoji code and print "encx😄". Every text report prints the name as written."""
    gru, dense = "enc[red]x[bold]:smile:", "head[blue]:thumbs_up:"
    inputs = keras3.Input((5, 3))
    keras3.Model(inputs, keras3.layers.Dense(2, name=dense)(keras3.layers.GRU(4, name=gru)(inputs))).save(tmp_path / "n.keras")
    path = str(tmp_path / "n.keras")
    for args in (["inspect", path], ["inspect", path, "--heatmap"], ["check", path], ["diff", path, path],
                 ["explain", path, "--keras", "none"]):
        result = CliRunner().invoke(cli, args, env={"COLUMNS": "120", "NO_COLOR": "1"})
        assert result.exit_code == 0, (args, result.stderr)
        assert gru in result.stdout, args
        assert "😄" not in result.stdout and "encx" not in result.stdout, args
    inspected = run("inspect", path).stdout
    assert inspected.splitlines()[3].startswith(f"{gru}  GRU  ·  4 units")
    assert dense in inspected  # the table of other layers


# --- 4. stateful layers ---------------------------------------------------------------------------------


def test_stateful_layers_start_from_zero_state_in_every_run(keras3: Any, tmp_path: Path) -> None:
    inputs = keras3.Input(batch_shape=(3, 7, 2))
    hidden = keras3.layers.GRU(5, stateful=True, return_sequences=True, name="g1")(inputs)
    model = keras3.Model(inputs, keras3.layers.GRU(4, stateful=True, name="g2")(hidden))
    randomize(model, 3)
    model.save(tmp_path / "s.keras")
    # --batch 2 asks for what a stateful model cannot take: its own batch size wins.
    result = run("verify", str(tmp_path / "s.keras"), "--batch", "2", "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0, result.stdout
    assert document["input"] == "random, seed 0, (3, 7, 2) (the model's fixed batch size)"
    assert [layer["path"] for layer in document["layers"]] == ["g1", "g2"]
    assert max(layer["max_abs_err"] for layer in document["layers"]) < 1e-6
    np.save(tmp_path / "x.npy", RNG.normal(size=(2, 7, 2)))
    wrong = run("verify", str(tmp_path / "s.keras"), "--input", str(tmp_path / "x.npy"))
    assert wrong.exit_code == 2
    assert "expects (batch of exactly 3, 7, 2)" in wrong.stderr


# --- 5. NaN and Inf -----------------------------------------------------------------------------------


def test_nan_in_a_recurrent_kernel_fails_and_says_where(keras3: Any, tmp_path: Path) -> None:
    model = keras3.Sequential([keras3.Input((6, 2)), keras3.layers.GRU(3, return_sequences=True, name="gru")])
    kernel, recurrent, bias = model.get_weights()
    recurrent[1, 4] = np.nan  # feeds gate r of unit 1 from state unit 1
    model.set_weights([kernel, recurrent, bias])
    model.save(tmp_path / "nan.keras")
    result = run("verify", str(tmp_path / "nan.keras"), "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 1 and document["passed"] is False
    layer = document["layers"][0]
    assert layer["max_abs_err"] is None and layer["passed"] is False
    # Hand-checked: at timestep 0, h_prev = 0 but 0 · NaN is NaN, so column 4 (gate r of unit 1)
    # of h_prev·U is NaN; r_1, then hh_1, then h_1 go NaN: unit 1 first, the others a step later.
    assert layer["nonfinite"] == [
        "the replay holds NaN, first at sample 0, timestep 0, unit 1",
        "predict holds NaN, first at sample 0, timestep 0, unit 1",
    ]
    assert any(w.startswith("weights: layer gru: ") and "holds NaN, first at index (1, 4)" in w for w in document["warnings"])
    text = run("verify", str(tmp_path / "nan.keras")).stdout
    assert "0.00e+00" not in text and "NaN/Inf" in text and "non-finite: layer gru: predict holds NaN" in text


def test_nan_only_in_predict_is_named_as_predict() -> None:
    from grucli.commands.verify_report import compare

    replayed = np.zeros((2, 4, 3))
    predicted = np.zeros((2, 4, 3))
    predicted[1, 2, 0] = np.inf
    predicted[0, 3, 2] = np.nan
    result = compare([replayed], [predicted], 1e-5, 1e-5)
    assert result is not None and not result.passed and result.max_abs_err == np.inf
    assert result.nonfinite == ("predict holds NaN/Inf, first at sample 1, timestep 2, unit 0",)


def test_comparing_against_inf_says_so_without_numpy_warnings() -> None:
    # An Inf in predict's output (or the replay's) is reported by name; NumPy's "invalid value"
    # warnings from inf - inf on the way were printed on verify's stderr beside the report.
    from grucli.commands.verify_report import compare

    replayed = np.ones((1, 3, 2))
    predicted = np.ones((1, 3, 2))
    predicted[0, 1, 1] = np.inf
    replayed[0, 2, 0] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare([replayed], [predicted], 1e-5, 1e-5)
    assert result is not None and not result.passed and result.max_abs_err == np.inf
    assert result.nonfinite == ("the replay holds Inf, first at sample 0, timestep 2, unit 0",
                                "predict holds Inf, first at sample 0, timestep 1, unit 1")


# --- 6. diff --exit-code --------------------------------------------------------------------------------


def test_diff_exit_code_gates_ci(tmp_path: Path) -> None:
    changed = tmp_path / "changed.h5"
    changed.write_bytes(sample("tfk_gru.h5").read_bytes())
    with h5py.File(changed, "r+") as f:
        dataset = f["model_weights/gru/gru/gru_cell/bias:0"] if "model_weights/gru/gru/gru_cell/bias:0" in f else None
        if dataset is None:
            names: list[str] = []
            f["model_weights/gru"].visititems(lambda key, item: names.append(key) if isinstance(item, h5py.Dataset) else None)
            dataset = f["model_weights/gru"][[n for n in names if "bias" in n][0]]
        values = dataset[()]
        values.flat[0] += 1e-3
        dataset[...] = values
    same = run("diff", str(sample("tfk_gru.h5")), str(sample("tfk_gru.h5")), "--exit-code")
    assert same.exit_code == 0 and "identical: no weight changed" in same.stdout
    moved = run("diff", str(sample("tfk_gru.h5")), str(changed), "--exit-code", "--json")
    assert moved.exit_code == 1 and json.loads(moved.stdout)["changed_beyond_atol"] == ["gru/z/bias"]
    within = run("diff", str(sample("tfk_gru.h5")), str(changed), "--exit-code", "--atol", "1e-2")
    assert within.exit_code == 0 and "changed, but no array by more than 0.01 (--atol)" in within.stdout
    assert run("diff", str(sample("tfk_gru.h5")), str(changed)).exit_code == 0  # without --exit-code: a report


# --- 7. the printed equations are the ones Keras computes --------------------------------------------------

NUMPY_NAMES = {"clip": np.clip, "exp": np.exp, "max": np.maximum, "abs": np.abs, "log": np.log}


def evaluate_printed_equations(equations: dict[str, list[str]], gates: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Follow the printed lines step by step, as a person would: `·` is a matrix product."""
    namespace: dict[str, Any] = dict(NUMPY_NAMES)
    for definition in equations["definitions"]:
        name, expression = re.fullmatch(r"(\w+)\(v\) = (.*?)(?:\s{3}\(.*\))?", definition).groups()  # type: ignore[union-attr]
        namespace[name] = eval(f"lambda v: {expression}", namespace)  # noqa: S307 - our own printed text
    namespace.update(gates)
    units = next(v for k, v in gates.items() if k.startswith("U_")).shape[0]
    state = {"h": np.zeros((x.shape[0], units)), "c": np.zeros((x.shape[0], units))}
    outputs = []
    for t in range(x.shape[1]):
        step = {**namespace, "x": x[:, t], "h_prev": state["h"], "c_prev": state["c"]}
        for line in equations["lines"]:
            target, expression = line.split(" = ", 1)
            step[target] = eval(expression.replace("·", " @ "), step)  # noqa: S307
        state = {"h": step["h"], "c": step.get("c", state["c"])}
        outputs.append(step["h"])
    return np.stack(outputs, axis=1)


def printed_form(path: Path, tmp_path: Path, layer: str) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    document = json.loads(run("inspect", str(path), "--json", "--layer", layer).stdout)
    equations = document["layers"][0]["equations"]
    assert run("export", str(path), "-o", str(tmp_path / "g.npz"), "--layer", layer, "--force").exit_code == 0
    names = {"kernel": "W", "recurrent_kernel": "U", "bias": "b", "recurrent_bias": "rb"}
    with np.load(tmp_path / "g.npz") as archive:
        gates = {f"{names[key.split('/')[-1]]}_{key.split('/')[-2]}": archive[key].astype(np.float64) for key in archive.files}
    return equations, gates


KERAS3_LAYERS: dict[str, Callable[[Any], Any]] = {
    "gru_reset_after": lambda k: k.layers.GRU(3, return_sequences=True, name="rnn"),
    "gru_reset_before": lambda k: k.layers.GRU(3, reset_after=False, return_sequences=True, name="rnn"),
    "gru_without_bias": lambda k: k.layers.GRU(3, use_bias=False, return_sequences=True, name="rnn"),
    "gru_keras3_hard_sigmoid": lambda k: k.layers.GRU(3, recurrent_activation="hard_sigmoid", return_sequences=True, name="rnn"),
    "lstm": lambda k: k.layers.LSTM(3, return_sequences=True, name="rnn"),
    "lstm_without_bias": lambda k: k.layers.LSTM(3, use_bias=False, return_sequences=True, name="rnn"),
    "simple_rnn_relu": lambda k: k.layers.SimpleRNN(3, activation="relu", return_sequences=True, name="rnn"),
}


@pytest.mark.parametrize("name", sorted(KERAS3_LAYERS))
def test_printed_equations_reproduce_keras3_predict(keras3: Any, tmp_path: Path, name: str) -> None:
    model = keras3.Sequential([keras3.Input((5, 2)), KERAS3_LAYERS[name](keras3)])
    randomize(model, 11)
    model.save(tmp_path / "m.keras")
    x = RNG.normal(size=(2, 5, 2))
    equations, gates = printed_form(tmp_path / "m.keras", tmp_path, "rnn")
    expected = model.predict(x.astype(np.float32), verbose=0)
    assert np.allclose(evaluate_printed_equations(equations, gates, x), expected, atol=2e-6, rtol=1e-5)


def test_printed_equations_reproduce_keras2_hard_sigmoid(tf_keras: Any, tmp_path: Path) -> None:
    model = tf_keras.Sequential([tf_keras.layers.GRU(3, recurrent_activation="hard_sigmoid", reset_after=False,
                                                     return_sequences=True, input_shape=(5, 2), name="rnn")])
    randomize(model, 5)
    model.save(tmp_path / "m.h5")
    x = RNG.normal(size=(2, 5, 2))
    equations, gates = printed_form(tmp_path / "m.h5", tmp_path, "rnn")
    assert equations["definitions"][0].startswith("hard_sigmoid(v) = clip(0.2 * v + 0.5, 0, 1)")
    expected = model.predict(x.astype(np.float32), verbose=0)
    assert np.allclose(evaluate_printed_equations(equations, gates, x), expected, atol=2e-6, rtol=1e-5)


def test_printed_equations_of_a_converted_cudnn_gru(tf_keras: Any, tmp_path: Path) -> None:
    model = tf_keras.Sequential([tf_keras.layers.GRU(4, reset_after=True, return_sequences=True, input_shape=(5, 3), name="cu_dnngru_1")])
    model.load_weights(sample("cudnn_gru_weights.h5"), by_name=True)  # tf-keras's own CuDNN conversion
    x = RNG.normal(size=(2, 5, 3))
    equations, gates = printed_form(sample("cudnn_gru_weights.h5"), tmp_path, "cu_dnngru_1")
    assert any("converted from CuDNNGRU" in note for note in equations["notes"])
    expected = model.predict(x.astype(np.float32), verbose=0)
    assert np.allclose(evaluate_printed_equations(equations, gates, x), expected, atol=2e-6, rtol=1e-5)


def test_printed_equations_of_the_real_keras2_gru(tf_keras: Any, tmp_path: Path) -> None:
    path = real("trafficflow_gru_keras2.1.4.h5")
    equations, gates = printed_form(path, tmp_path, "gru_1")
    assert equations["lines"][0] == "z = hard_sigmoid(x·W_z + h_prev·U_z + b_z)"
    reference = tf_keras.Sequential([tf_keras.layers.GRU(64, recurrent_activation="hard_sigmoid", reset_after=False,
                                                         return_sequences=True, input_shape=(12, 1))])
    with h5py.File(path) as f:
        group = f["model_weights/gru_1"]
        reference.set_weights([group[name][()] for name in group.attrs["weight_names"]])
    x = RNG.normal(size=(2, 12, 1))
    expected = reference.predict(x.astype(np.float32), verbose=0)
    assert np.allclose(evaluate_printed_equations(equations, gates, x), expected, atol=2e-6, rtol=1e-5)


# --- 8. nothing dropped silently -------------------------------------------------------------------------


def test_bidirectional_rnn_of_lstm_cells_is_read_like_bidirectional_lstm(tmp_path: Path, tf_keras: Any) -> None:
    path = real("poreplex_demux_birnn_lstmcell_tfkeras2.2.4.hdf5")
    result = run("export", str(path), "-o", str(tmp_path / "g.npz"))
    assert result.exit_code == 0, result.stderr
    with np.load(tmp_path / "g.npz") as archive:
        keys = set(archive.files)
    assert len(keys) == 36
    assert {"bidirectional_2/forward/i/kernel", "bidirectional_2/backward/o/bias", "rnn_1/f/recurrent_kernel"} <= keys
    model = tf_keras.models.load_model(path, compile=False)
    x = RNG.normal(size=(2, 300, 1)).astype(np.float32)
    assert np.allclose(replay_output(path, x, tmp_path), model.predict(x, verbose=0), atol=1e-6, rtol=1e-6)


def custom_cell_model(tf_keras: Any, path: Path) -> None:
    """A GRU, then RNN(a user's own cell): weights of a recurrent shape grucli cannot slice."""
    import tensorflow as tf

    class MinimalRNNCell(tf_keras.layers.Layer):
        def __init__(self, units: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.units, self.state_size = units, units

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(self.units, self.units), name="recurrent_kernel")

        def call(self, inputs: Any, states: Any) -> Any:
            h = tf.matmul(inputs, self.kernel) + tf.matmul(states[0], self.recurrent_kernel)
            return h, [h]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "units": self.units}

    model = tf_keras.Sequential([tf_keras.layers.GRU(3, return_sequences=True, input_shape=(5, 2), name="gru"),
                                 tf_keras.layers.RNN(MinimalRNNCell(2), name="minimal")])
    model.save(path)


def test_recurrent_weights_grucli_cannot_slice_are_never_dropped(tf_keras: Any, tmp_path: Path) -> None:
    path = tmp_path / "custom.h5"
    custom_cell_model(tf_keras, path)
    refused = run("export", str(path), "-o", str(tmp_path / "g.npz"))
    assert refused.exit_code == 2 and not (tmp_path / "g.npz").exists()
    assert refused.stderr == (
        f"Error: {path} holds recurrent weights grucli cannot slice: minimal (MinimalRNNCell): MinimalRNNCell is not a "
        "recurrent layer or cell grucli can slice; pass --skip-unsliced to leave them out\n"
    )
    skipped = run("export", str(path), "-o", str(tmp_path / "g.npz"), "--skip-unsliced")
    assert skipped.exit_code == 0
    assert skipped.stderr.startswith("skipped minimal (MinimalRNNCell): ")
    with np.load(tmp_path / "g.npz") as archive:
        assert sorted({key.split("/")[0] for key in archive.files}) == ["gru"]
    replay = run("replay", str(path), "-o", str(tmp_path / "y.npy"))
    assert replay.exit_code == 2 and "layer minimal (RNN with a custom cell)" in replay.stderr
    listed = json.loads(run("inspect", str(path), "--json").stdout)["other_layers"]
    assert [(o["path"], o["unsliced_recurrent"]) for o in listed if o["weights"]] == [("minimal", True)]
    # The CI gates too: a clean check or an unchanged diff must not mean "the custom cell was never looked at".
    for command in (["check", str(path)], ["diff", str(path), str(path), "--exit-code"]):
        refused_gate = run(*command)
        assert refused_gate.exit_code == 2 and "holds recurrent weights grucli cannot slice: minimal" in refused_gate.stderr, command
        assert run(*command, "--skip-unsliced").exit_code == 0, command


def test_layer_narrows_what_verify_must_compare(keras3: Any, tmp_path: Path) -> None:
    time_distributed_bidirectional(keras3, tmp_path / "c.keras")
    whole = run("verify", str(tmp_path / "c.keras"), "--json")
    assert whole.exit_code == 1
    assert [(layer["path"], layer["passed"]) for layer in json.loads(whole.stdout)["layers"]] == [("td", False), ("lstm", True)]
    narrowed = run("verify", str(tmp_path / "c.keras"), "--layer", "lstm", "--json")
    assert narrowed.exit_code == 0, narrowed.stdout
    assert [layer["path"] for layer in json.loads(narrowed.stdout)["layers"]] == ["lstm"]


# --- 9. a masked seq2seq under tf-keras ----------------------------------------------------------------


@needs_keras
def test_masked_seq2seq_verifies_under_tf_keras() -> None:
    result = run("verify", str(real("katakana_seq2seq_lstm_tfkeras2.2.4.h5")), "--keras", "tf-keras", "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0, result.stdout
    encoder, decoder = document["layers"]
    assert encoder["path"] == "lstm" and encoder["passed"] is True and encoder["max_abs_err"] < 2e-6
    # The decoder starts from the encoder's state: the probe hands that state to the replay too.
    assert decoder["path"] == "lstm_1" and decoder["passed"] is True and decoder["max_abs_err"] < 2e-6
    assert document["comparisons"]["replay_vs_predict"]["max_abs_err"] < 2e-6


# --- 10. mixed precision -------------------------------------------------------------------------------


def test_mixed_precision_is_read_from_the_config(keras3: Any, tmp_path: Path) -> None:
    keras3.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras3.Sequential([keras3.Input((10, 3)), keras3.layers.GRU(8, return_sequences=True, name="gru"),
                                   keras3.layers.Dense(2, dtype="float32")])
    finally:
        keras3.mixed_precision.set_global_policy("float32")
    randomize(model, 2)
    model.save(tmp_path / "mp.keras")
    result = run("verify", str(tmp_path / "mp.keras"), "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0, result.stdout
    assert document["compute_dtype"] == "float16"
    assert document["precision"].startswith("float16 compute (mixed-precision policy)")
    assert document["atol"] == 8 * 2.0**-10
    assert document["layers"][0]["max_abs_err"] > 1e-5  # float16 really differs from a float64 replay


# --- 11. bugs are not bad files ------------------------------------------------------------------------


def test_a_wrong_config_value_names_its_json_path(tmp_path: Path) -> None:
    path = _edited_h5(sample("tfk_gru.h5"), tmp_path / "bad.h5", lambda c: c["config"]["layers"][1]["config"].update(units="four"))
    result = run("inspect", str(path))
    assert result.exit_code == 2
    assert result.stderr == 'Error: model_config.config.layers[1].config.units: expected an integer ≥ 0, found "four"\n'


def test_a_bug_is_an_internal_error_not_a_bad_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from grucli.model import layers

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("units")

    monkeypatch.setattr(layers, "canonical_layer", broken)
    result = run("inspect", str(sample("k3_gru.keras")))
    assert result.exit_code == INTERNAL_ERROR == 3
    assert result.stderr == (
        "Error: internal error in grucli (please report it): KeyError: 'units' (GRUCLI_DEBUG=1 shows the traceback)\n"
    )
    monkeypatch.setenv("GRUCLI_DEBUG", "1")
    debug = run("inspect", str(sample("k3_gru.keras")))
    assert debug.exit_code == 3 and "Traceback (most recent call last)" in debug.stderr


def test_a_config_nested_too_deeply_is_a_bad_file_not_a_crash(tmp_path: Path) -> None:
    # 5000 levels: past json's own recursion limit (written as text: json.dumps cannot either)
    path = _edited_h5(sample("tfk_gru.h5"), tmp_path / "deep.h5", lambda c: c["config"]["layers"][1]["config"].update(extra="NESTED"),
                      lambda text: text.replace('"NESTED"', "[" * 5000 + "1" + "]" * 5000))
    result = run("inspect", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {path}: model_config nests")


def test_weights_that_do_not_fit_a_layer_are_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "dense.h5"
    path.write_bytes(sample("k3_gru.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        kernel = "model_weights/dense/sequential_2/dense/kernel"
        del f[kernel]
        f[kernel] = np.ones((7, 3), np.float32)
    result = run("replay", str(path), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: layer dense (Dense) stores weights of shapes [(7, 3), (2,)]; expected a kernel for 4 input features "
        "and a bias: (4, 2), (2,)\n"
    )


# --- masks: what each Keras passes on through merges and operations ---------------------------------------

MASK_WIRINGS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "add": lambda k, a, b: k.layers.Add()([a, b]),
    "multiply": lambda k, a, b: k.layers.Multiply()([a, b]),
    "maximum": lambda k, a, b: k.layers.Maximum()([a, b]),
    "minimum_of_three": lambda k, a, b: k.layers.Minimum()([a, b, k.layers.Dense(3)(a)]),
    "concatenate_features": lambda k, a, b: k.layers.Concatenate()([a, b]),
    "concatenate_with_unmasked": lambda k, a, b: k.layers.Concatenate()([a, k.layers.Dense(3)(b) * 1.0 if hasattr(k, "ops") else b]),
    "concatenate_time": lambda k, a, b: k.layers.Concatenate(axis=1)([a, b]),
    "operation": lambda k, a, b: a * 2.0 + b if hasattr(k, "ops") else k.layers.Add()([a, b]),
}
MASKED_IDS = np.array([[1, 2, 0, 0, 3, 0], [4, 0, 5, 6, 0, 0], [0, 0, 0, 7, 8, 9]])
OTHER_IDS = np.array([[0, 2, 2, 0, 3, 1], [4, 4, 0, 6, 0, 0], [1, 0, 0, 0, 8, 0]])


@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
@pytest.mark.parametrize("wiring", sorted(MASK_WIRINGS))
def test_masks_through_merges_and_operations(framework: str, wiring: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Keras 3 merges keep a step where any mask does (and drop the mask if an input has none),
    # tf-keras where every mask does; Keras 3 operations pass no mask on at all.
    k = request.getfixturevalue(framework)
    first, second = k.Input((6,), dtype="int32", name="first"), k.Input((6,), dtype="int32", name="second")
    a = k.layers.Embedding(10, 3, mask_zero=True)(first)
    b = k.layers.Embedding(10, 3, mask_zero=True)(second)
    model = k.Model([first, second], k.layers.GRU(4, return_sequences=True)(MASK_WIRINGS[wiring](k, a, b)))
    randomize(model, 4)
    path = tmp_path / ("m.keras" if framework == "keras3" else "m.h5")
    model.save(path)
    np.savez(tmp_path / "x.npz", first=MASKED_IDS, second=OTHER_IDS)
    result = run("replay", str(path), "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npy"))
    assert result.exit_code == 0, result.stderr
    expected = model.predict([MASKED_IDS, OTHER_IDS], verbose=0)
    assert np.allclose(np.load(tmp_path / "y.npy"), expected, atol=2e-6, rtol=1e-6)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["config"]["layers"][1]["config"].update(input_dim=0),
     "Error: the config of Embedding embedding declares a vocabulary of 0 ids (input_dim); expected at least 1\n"),
    (lambda c: c["config"]["layers"][2]["inbound_nodes"][0]["args"].__setitem__(0, []),
     "Error: layer gru (GRU) is called on []; the replay expects a tensor\n"),
    (lambda c: c["config"]["layers"][2].update(inbound_nodes=[[]]),
     "Error: config.json.config.layers[2].inbound_nodes[0]: an empty node; expected [[layer name, node index, tensor index, kwargs], ...]\n"),
])
def test_edited_graphs_found_by_fuzzing_are_bad_files(keras3: Any, tmp_path: Path, edit: Callable[..., None], message: str) -> None:
    inputs = keras3.Input((6,), dtype="int32", name="ids")
    outputs = keras3.layers.GRU(3, name="gru")(keras3.layers.Embedding(9, 2, name="embedding")(inputs))
    keras3.Model(inputs, outputs).save(tmp_path / "m.keras")
    path = _edited_copy(tmp_path / "m.keras", tmp_path / "edited.keras", edit)
    result = run("replay", str(path), "-o", str(tmp_path / "y.npy"))
    assert (result.exit_code, result.stderr) == (2, message)
