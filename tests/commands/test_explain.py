"""`grucli explain`: every step it prints is recomputed here from `export`'s gate slices, by
equations written in this file from Keras's documentation (not grucli's replay), to 1e-9 in
float64; the last state is checked against Keras's own predict.

Models are built the way users build them (functional, Bidirectional, a masked sequence) with
Keras 3 and saved to .keras files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli
from tests.conftest import sample

keras = pytest.importorskip("keras")
L = keras.layers


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


ACTIVATIONS: dict[str, Callable[[float], float]] = {
    "sigmoid": _sigmoid,
    "tanh": math.tanh,
    "hard_sigmoid": lambda v: min(max(v / 6.0 + 0.5, 0.0), 1.0),  # Keras 3's definition
    "relu": lambda v: max(v, 0.0),
    "linear": lambda v: v,
}


def _model(builder: Callable[[], Any], tmp: Path, name: str, seed: int) -> Path:
    keras.utils.set_random_seed(seed)
    model = builder()
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.6, w.shape).astype("float32") for w in model.get_weights()])
    path = tmp / f"{name}.keras"
    model.save(path)
    return path


def _functional(layer: Any, timesteps: int = 6, features: int = 3) -> Any:
    inputs = keras.Input((timesteps, features), name="sequence")
    return keras.Model(inputs, layer(inputs))


CASES = {
    # name: (builder, layer path, family, activation, recurrent activation, unit)
    "gru_reset_after": (lambda: _functional(L.GRU(4, name="gru")), "gru", "GRU", "tanh", "sigmoid", 2),
    "gru_reset_before": (lambda: _functional(L.GRU(3, reset_after=False, recurrent_activation="hard_sigmoid", name="gru")),
                         "gru", "GRU", "tanh", "hard_sigmoid", 1),
    "lstm": (lambda: _functional(L.LSTM(5, name="lstm")), "lstm", "LSTM", "tanh", "sigmoid", 4),
    "simple_rnn": (lambda: _functional(L.SimpleRNN(4, activation="relu", name="rnn")), "rnn", "SimpleRNN", "relu", None, 0),
    "backward": (lambda: _functional(L.Bidirectional(L.GRU(3, name="gru"), name="bi")), "bi/backward", "GRU", "tanh", "sigmoid", 1),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """name -> (model file, input, predict's output)."""
    tmp = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    out = {}
    for seed, (name, (builder, *_)) in enumerate(CASES.items()):
        path = _model(builder, tmp, name, seed)
        np.save(tmp / f"{name}_x.npy", x)
        predicted = keras.saving.load_model(path).predict(x, verbose=0)
        out[name] = (path, tmp / f"{name}_x.npy", predicted)
    return out


def _run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def _export(path: Path, tmp: Path) -> dict[str, np.ndarray]:
    target = tmp / "gates.npz"
    _run("export", str(path), "-o", str(target), "--force")
    with np.load(target) as archive:
        return {key: archive[key].astype(np.float64) for key in archive.files}


def _pre(weights: dict[str, np.ndarray], prefix: str, gate: str, unit: int, x: np.ndarray, h_prev: np.ndarray) -> tuple[float, float, float, float]:
    """x·W_g, h_prev·U_g, b_g, rb_g of one unit, from export's slices."""
    kernel = weights[f"{prefix}/{gate}/kernel"][:, unit]
    recurrent = weights[f"{prefix}/{gate}/recurrent_kernel"][:, unit]
    b = float(weights[f"{prefix}/{gate}/bias"][unit]) if f"{prefix}/{gate}/bias" in weights else 0.0
    rb = float(weights[f"{prefix}/{gate}/recurrent_bias"][unit]) if f"{prefix}/{gate}/recurrent_bias" in weights else 0.0
    return float(x @ kernel), float(h_prev @ recurrent), b, rb


def _expected_step(family: str, weights: dict[str, np.ndarray], prefix: str, unit: int, step: dict[str, Any], act: str,
                   rec_act: str | None) -> tuple[dict[str, float], float, float | None]:
    """This unit's gates (keyed as inspect names them), new h and c, from Keras's documented equations."""
    x, h_prev = np.array(step["x"]), np.array(step["h_prev"])
    f_act = ACTIVATIONS[act]
    if family == "SimpleRNN":
        xw, hu, b, _ = _pre(weights, prefix, "h", unit, x, h_prev)
        h = f_act(xw + hu + b)
        return {"h": h}, h, None
    f_rec = ACTIVATIONS[rec_act or "sigmoid"]
    if family == "LSTM":
        gates = {}
        for gate in "ifco":
            xw, hu, b, _ = _pre(weights, prefix, gate, unit, x, h_prev)
            gates[gate] = (f_act if gate == "c" else f_rec)(xw + hu + b)
        c = gates["f"] * step["c_prev"][unit] + gates["i"] * gates["c"]
        return gates, gates["o"] * f_act(c), c
    reset_after = f"{prefix}/z/recurrent_bias" in weights
    z_terms = _pre(weights, prefix, "z", unit, x, h_prev)
    r_terms = _pre(weights, prefix, "r", unit, x, h_prev)
    z, r = f_rec(sum(z_terms)), f_rec(sum(r_terms))
    if reset_after:
        xw, hu, b, rb = _pre(weights, prefix, "h", unit, x, h_prev)
        hh = f_act(xw + b + r * (hu + rb))
    else:
        # (r * h_prev)·U_h needs every unit's r: recompute the whole r vector from the slices.
        units = len(h_prev)
        r_all = np.array([f_rec(sum(_pre(weights, prefix, "r", k, x, h_prev))) for k in range(units)])
        xw, _, b, _ = _pre(weights, prefix, "h", unit, x, h_prev)
        hh = f_act(xw + float((r_all * h_prev) @ weights[f"{prefix}/h/recurrent_kernel"][:, unit]) + b)
    h = z * h_prev[unit] + (1 - z) * hh
    return {"z": z, "r": r, "h": hh}, h, None


@pytest.mark.parametrize("name", list(CASES))
def test_every_step_recomputes_from_export_and_ends_at_predict(name: str, built: dict, tmp_path: Path) -> None:
    _, path_in_model, family, act, rec_act, unit = CASES[name]
    model, x_path, predicted = built[name]
    sample_index = 1
    document = json.loads(_run("explain", str(model), "--input", str(x_path), "--layer", path_in_model, "--unit", str(unit),
                               "--sample", str(sample_index), "--keras", "none", "--json").output)
    weights = _export(model, tmp_path)
    steps = document["steps"]
    x = np.load(x_path).astype(np.float64)[sample_index]
    backward = path_in_model.endswith("backward")
    assert [s["t"] for s in steps] == (list(range(5, -1, -1)) if backward else list(range(6)))
    h_state = np.zeros(len(steps[0]["h_prev"]))
    assert len(h_state) == document["units"]
    for index, step in enumerate(steps):
        np.testing.assert_array_equal(step["x"], x[step["t"]])  # the layer's input is the model's here
        if index == 0:
            assert step["h_prev"] == [0.0] * document["units"]
        else:  # this unit's state carries from the previous step's h
            assert step["h_prev"][unit] == pytest.approx(steps[index - 1]["h"], abs=1e-12)
        gates, h, c = _expected_step(family, weights, path_in_model, unit, step, act, rec_act)
        assert set(step["gates"]) == set(gates)
        for gate, value in gates.items():
            assert step["gates"][gate] == pytest.approx(value, abs=1e-9), (name, index, gate)
        assert step["h"] == pytest.approx(h, abs=1e-9)
        if c is not None:
            assert step["c"] == pytest.approx(c, abs=1e-9)
    # The last state is predict's (Keras 3, float32): this unit's column of the layer's output.
    column = unit + (3 if backward else 0)
    assert steps[-1]["h"] == pytest.approx(float(predicted[sample_index, column]), abs=2e-6)


def test_explain_output_beside_predict_for_a_backward_sequence(tmp_path: Path) -> None:
    """predict's backward sequence comes in time order; explain's steps run from the last timestep."""
    model = _model(lambda: _functional(L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")), tmp_path, "bi_seq", 3)
    x = np.random.default_rng(0).normal(size=(1, 6, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    document = json.loads(_run("explain", str(model), "--input", str(tmp_path / "x.npy"), "--layer", "bi/backward", "--unit", "2",
                               "--keras", "keras", "--json").output)
    predicted = keras.saving.load_model(model).predict(x, verbose=0)[0, :, 3 + 2]
    output = document["output"]
    assert output["reference"] == "predict"
    assert output["steps"] == list(range(5, -1, -1))
    np.testing.assert_allclose(output["expected"], predicted[::-1], atol=0)
    np.testing.assert_allclose(output["explain"], predicted[::-1], atol=2e-6)
    assert output["max_abs_diff"] < 2e-6


def test_masked_steps_carry_the_state(tmp_path: Path) -> None:
    inputs = keras.Input((5, 2))
    masked = L.Masking(0.0)(inputs)
    model = _model(lambda: keras.Model(inputs, L.GRU(2, return_sequences=True, name="gru")(masked)), tmp_path, "masked", 4)
    x = np.random.default_rng(1).normal(size=(1, 5, 2)).astype("float32")
    x[0, 2] = 0.0
    np.save(tmp_path / "x.npy", x)
    document = json.loads(_run("explain", str(model), "--input", str(tmp_path / "x.npy"), "--unit", "1", "--keras", "keras",
                               "--json").output)
    steps = document["steps"]
    assert [s["masked"] for s in steps] == [False, False, True, False, False]
    assert steps[2]["h"] == steps[1]["h"] and steps[2]["output"] == steps[1]["output"]
    assert document["output"]["max_abs_diff"] < 2e-6


def test_gru1_on_four_values_text(tmp_path: Path) -> None:
    """The README's question: a GRU(1) fed [1, 2, 9, 8] one value per timestep, every product shown."""
    (tmp_path / "seq.csv").write_text("1\n2\n9\n8\n")
    result = _run("explain", str(sample("q_gru1.keras")), "--input", str(tmp_path / "seq.csv"), "--keras", "none")
    text = result.output
    document = json.loads(_run("explain", str(sample("q_gru1.keras")), "--input", str(tmp_path / "seq.csv"), "--keras", "none",
                               "--json").output)
    assert [s["x"] for s in document["steps"]] == [[1.0], [2.0], [9.0], [8.0]]
    weights = _export(sample("q_gru1.keras"), tmp_path)
    w_z = float(weights["gru_5/z/kernel"][0, 0])
    # Each timestep multiplies one value by the kernel: x·W_z = 9 × W_z at t = 2.
    assert f"x·W_z = 9×{_paren(w_z)} = {9 * w_z:.6g}" in text
    assert "h  = z * h_prev + (1 - z) * hh = " in text
    assert "max |explain − replay| = " in text


def _paren(value: float) -> str:
    return f"({value:.6g})" if value < 0 else f"{value:.6g}"


@pytest.mark.parametrize(("args", "message"), [
    (["--unit", "9"], "Error: --unit 9 is out of range; layer gru_5 has 1 unit (0-0)"),
    (["--layer", "nope"], "Error: no recurrent layer 'nope' in this model; expected one of: gru_5"),
    (["--sample", "3"], "Error: --sample 3 is out of range; the input has 1 sample (0-0)"),
])
def test_explain_errors(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "seq.csv").write_text("1\n2\n9\n8\n")
    result = CliRunner().invoke(cli, ["explain", str(sample("q_gru1.keras")), "--input", str(tmp_path / "seq.csv"), "--keras", "none", *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == message


def test_explain_refuses_a_bidirectional_as_a_whole(built: dict) -> None:
    model, x_path, _ = built["backward"]
    result = CliRunner().invoke(cli, ["explain", str(model), "--input", str(x_path), "--layer", "bi", "--keras", "none"])
    assert result.exit_code == 2
    assert "Error: --layer bi holds 2 recurrent layers (bi/forward, bi/backward); explain follows one: pass one of those paths" in result.output


def test_explain_refuses_a_layer_inside_time_distributed(tmp_path: Path) -> None:
    inputs = keras.Input((2, 5, 3))
    model = _model(lambda: keras.Model(inputs, L.TimeDistributed(L.GRU(2), name="td")(inputs)), tmp_path, "td", 5)
    result = CliRunner().invoke(cli, ["explain", str(model), "--keras", "none"])
    assert result.exit_code == 2, result.output
    assert "inside TimeDistributed; explain follows a recurrent layer that runs once per sample" in result.stderr


def test_explain_refuses_a_conv_lstm() -> None:
    result = CliRunner().invoke(cli, ["explain", str(sample("k3_conv_lstm1d.keras")), "--keras", "none"])
    assert result.exit_code == 2
    assert "whose units are spatial maps" in result.stderr
