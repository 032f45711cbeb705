"""The Python API (`grucli.load`, `grucli.replay`, `grucli.verify`): gates against Keras's own
`get_weights()` slices, replay against `predict`, and the README's "Use from Python" example run
as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import grucli
from conftest import ROOT, expected_gate_slices, keras_recurrent_weights, needs_keras, sample
from grucli.errors import ModelFileError, SelectionError


def _models(keras3: Any) -> dict[str, Any]:
    layers = keras3.layers
    inputs = keras3.Input((6, 3))
    gru = keras3.Model(inputs, layers.Dense(2)(layers.GRU(4, name="gru")(inputs)))
    lstm = keras3.Model(inputs, layers.LSTM(5, name="lstm", return_sequences=True)(inputs))
    bidirectional = keras3.Model(inputs, layers.Bidirectional(layers.GRU(3, reset_after=False), name="bi")(inputs))
    return {"gru": gru, "lstm": lstm, "bidirectional": bidirectional}


@pytest.mark.parametrize("name", ["gru", "lstm", "bidirectional"])
def test_gates_are_keras_get_weights_slices_and_replay_is_predict(name: str, keras3: Any, tmp_path: Path) -> None:
    model = _models(keras3)[name]
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()])
    model.save(tmp_path / "m.keras")
    with grucli.load(tmp_path / "m.keras") as m:
        truth = list(keras_recurrent_weights(model))
        assert [layer.path for layer in m.recurrent_layers] == [path for path, _, _ in truth]
        for layer, (path, kind, weights) in zip(m.recurrent_layers, truth):
            assert (layer.kind, layer.units) == (kind, weights[1].shape[0])
            expected = expected_gate_slices(kind, weights)
            for gate_name in layer.gates:
                gate = layer.gate(gate_name)
                for array in ("kernel", "recurrent_kernel", "bias", "recurrent_bias"):
                    key = f"{gate_name}/{array}"
                    if key in expected:
                        assert np.array_equal(getattr(gate, array), expected[key]), (path, key)
                    else:
                        assert getattr(gate, array) is None, (path, key)
        x = rng.normal(size=(3, 6, 3)).astype(np.float32)
        result = grucli.replay(m, x)
        # Small layers over 6 steps: float32 predict's rounding is ~1e-7 here, on any CPU.
        assert np.allclose(result.output, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        for layer in m.recurrent_layers:
            states, gates = result.states[layer.path], result.gates[layer.path]
            assert states.shape == (3, 6, layer.units)
            assert all(values.shape == (3, 6, layer.units) for values in gates.values())
        if name == "lstm":  # return_sequences: the output is the state over time
            assert np.allclose(result.states["lstm"], result.output)


@needs_keras
def test_verify_from_python(tmp_path: Path) -> None:
    with grucli.load(sample("k3_lstm.keras")) as m:
        x = np.random.default_rng(2).normal(size=(2, 5, 3)).astype(np.float32)
        report = grucli.verify(m, x, atol=1e-5)
        assert report.passed and [check.path for check in report.layers] == [layer.path for layer in m.recurrent_layers]
        assert report.input_description == "given arrays (2, 5, 3)"


def test_errors_are_grucli_exceptions() -> None:
    with grucli.load(sample("k3_gru.keras")) as m:
        with pytest.raises(SelectionError, match="has no gate 'q'; expected one of: z, r, h"):
            m.recurrent_layers[0].gate("q")
        with pytest.raises(SelectionError, match="no recurrent layer 'nope'"):
            m.layer("nope")
    with grucli.load(sample("k3_gru.weights.h5")) as weights_only:
        with pytest.raises(ModelFileError, match="holds weights only"):
            grucli.replay(weights_only, np.zeros((1, 5, 3)))


@needs_keras
def test_the_readme_python_example_runs_as_written(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use from Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    monkeypatch.chdir(ROOT)
    exec(compile(code.group(1), "README.md", "exec"), {})  # noqa: S102 - the README's own example
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["bi/forward GRU 4 ('z', 'r', 'h')", "bi/backward GRU 4 ('z', 'r', 'h')", "(2, 5, 8) (2, 5, 4)", "True"]
