"""The activations `plot --activations` draws and `report` embeds are the replay's numbers and
Keras's: each layer's states over time equal what a Keras sub-model returns for that layer
(return_sequences), and every gate equals what `replay --gates` writes, for a GRU, an LSTM read
backwards, a Bidirectional layer and a masked model; the plotted image arrays and the JSON in the
page hold the same numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

import grucli
from grucli.cli import cli

pytest.importorskip("matplotlib", reason="plot draws with matplotlib (pip install -e '.[test]')")

FEATURES, STEPS, BATCH, SAMPLE = 3, 9, 4, 2


def _gru(keras: Any) -> Any:
    x = keras.Input((None, FEATURES))
    return keras.Model(x, keras.layers.Dense(2)(keras.layers.GRU(5, return_sequences=True, name="gru")(x)))


def _lstm_backwards(keras: Any) -> Any:
    x = keras.Input((None, FEATURES))
    return keras.Model(x, keras.layers.LSTM(4, return_sequences=True, go_backwards=True, name="lstm")(x))


def _bidirectional(keras: Any) -> Any:
    x = keras.Input((None, FEATURES))
    return keras.Model(x, keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True), merge_mode=None, name="bi")(x))


def _masked(keras: Any) -> Any:
    x = keras.Input((None, FEATURES))
    masked = keras.layers.Masking(0.0)(x)
    return keras.Model(x, keras.layers.SimpleRNN(4, return_sequences=True, name="rnn")(keras.layers.GRU(3, return_sequences=True,
                                                                                                      name="gru")(masked)))


# model, and for each layer path: how to get its h over time (batch, steps in consumption order, units) from Keras
MODELS: dict[str, tuple[Callable[[Any], Any], dict[str, Callable[[Any, Any, np.ndarray], np.ndarray]]]] = {
    "gru": (_gru, {"gru": lambda keras, model, x: _submodel(keras, model, "gru", x)}),
    # go_backwards: Keras returns the sequence in the order it consumed the steps, as the picture shows it
    "lstm_backwards": (_lstm_backwards, {"lstm": lambda keras, model, x: np.asarray(model.predict(x, verbose=0))}),
    # merge_mode=None: [forward, backward], the backward one flipped back to time order by Keras
    "bidirectional": (_bidirectional, {"bi/forward": lambda keras, model, x: np.asarray(model.predict(x, verbose=0)[0]),
                                       "bi/backward": lambda keras, model, x: np.asarray(model.predict(x, verbose=0)[1])[:, ::-1]}),
    "masked": (_masked, {"gru": lambda keras, model, x: _submodel(keras, model, "gru", x),
                         "rnn": lambda keras, model, x: np.asarray(model.predict(x, verbose=0))}),
}


def _submodel(keras: Any, model: Any, name: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.inputs, model.get_layer(name).output).predict(x, verbose=0))


def _input() -> np.ndarray:
    x = np.random.default_rng(7).normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    x[SAMPLE, :3] = 0.0  # pre-padded: the first three steps of the drawn sample are masked (where a Masking layer reads them)
    x[SAMPLE, 6] = 0.0  # and a hole
    return x


@pytest.mark.parametrize("name", list(MODELS))
def test_activities_are_the_replays_gates_and_keras_states(keras3: Any, tmp_path: Path, name: str) -> None:
    build, references = MODELS[name]
    model = build(keras3)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.6, size=w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "m.keras")
    x = _input()
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(cli, ["replay", str(tmp_path / "m.keras"), "--input", str(tmp_path / "x.npy"), "-o",
                                      str(tmp_path / "y.npz"), "--gates", str(tmp_path / "gates.npz")])
    assert result.exit_code == 0, result.stderr
    gates = np.load(tmp_path / "gates.npz")
    masked_model = name == "masked"
    real = np.ones(STEPS, bool) if not masked_model else np.any(x[SAMPLE] != 0, axis=-1)
    with grucli.load(tmp_path / "m.keras") as loaded:
        activities = grucli.api.activities(loaded, x, sample=SAMPLE)
        assert [layer.path for layer in activities.layers] == list(references)
        for layer in activities.layers:
            consumed = real[list(layer.steps)]  # the mask in the order the layer consumed the steps
            assert list(layer.masked) == list(~consumed)
            assert layer.downsampled is None
            for quantity in layer.quantities:
                traced = gates[f"{layer.path}/{quantity.name}"][SAMPLE].T  # (units, steps), processing order
                np.testing.assert_array_equal(np.isnan(quantity.values), np.broadcast_to(~consumed, quantity.values.shape))
                np.testing.assert_allclose(quantity.values[:, consumed], traced[:, consumed], rtol=0, atol=0)
            keras_states = references[layer.path](keras3, model, x)[SAMPLE].T  # (units, steps)
            # float32 Keras against the float64 replay, a few steps of 3-5 units
            np.testing.assert_allclose(layer.quantity("h").values[:, consumed], keras_states[:, consumed], rtol=1e-5, atol=1e-6)
            inputs = x[SAMPLE][list(layer.steps)].T if layer.path in ("gru", "lstm", "bi/forward", "bi/backward") else None
            if inputs is not None:
                np.testing.assert_allclose(layer.inputs[:, consumed], inputs[:, consumed], rtol=1e-6)
        _plotted_numbers_are_the_records(activities)
        _embedded_numbers_are_the_records(loaded, x, activities, tmp_path)


def _plotted_numbers_are_the_records(activities: Any) -> None:
    from grucli.output.plot import activity_figure

    figure = activity_figure(activities)
    images = {axis.get_title(): np.ma.filled(axis.images[0].get_array().astype(float), np.nan) for axis in figure.axes if axis.images}
    for layer in activities.layers:
        for quantity in layer.quantities:
            title = next(t for t in images if t.startswith(f"{layer.path} · {quantity.name} ({quantity.meaning})"))
            np.testing.assert_array_equal(images[title], quantity.values)
            assert f"range [{quantity.low:.3g}, {quantity.high:.3g}]" in title
        backward_title = next(t for t in images if t.startswith(f"{layer.path} · x (input)"))
        assert ("last → first (backward)" in backward_title) == layer.backwards
    import matplotlib.pyplot as plt

    plt.close(figure)


def _embedded_numbers_are_the_records(loaded: Any, x: np.ndarray, activities: Any, folder: Path) -> None:
    report = grucli.api.report(loaded, x, "the test's input", SAMPLE, with_verify=False)
    from grucli.output.html_report import decoded_values, render_report

    page = render_report(report)
    data = json.loads(re.search(r'<script type="application/json" id="grucli-data">(.*?)</script>', page, re.S).group(1))
    for layer in activities.layers:
        for quantity in layer.quantities:
            spec = next(m for m in data["maps"] if m["layer"] == layer.path and m.get("name") == quantity.name)
            embedded = decoded_values(spec["values"], spec["rows"], spec["cols"])
            np.testing.assert_allclose(embedded, quantity.values, rtol=1e-7, equal_nan=True)  # float32 of the float64 replay
            assert spec["colIds"] == list(layer.steps) and spec["rowIds"] == list(layer.units)


def test_big_layers_are_averaged_over_blocks_and_say_so(keras3: Any, tmp_path: Path) -> None:
    """A GRU(300) over 900 steps: 128 unit blocks × 400 step blocks, each the mean of its cells."""
    model = keras3.Sequential([keras3.Input((None, 2)), keras3.layers.GRU(300, return_sequences=True, name="gru")])
    model.save(tmp_path / "big.keras")
    x = np.random.default_rng(3).normal(size=(1, 900, 2)).astype("float32")
    with grucli.load(tmp_path / "big.keras") as loaded:
        layer = grucli.api.activities(loaded, x).layers[0]
        h = grucli.replay(loaded, x).states["gru"][0].T  # (300, 900)
    assert layer.quantity("h").values.shape == (128, 400)
    assert layer.downsampled == "averaged over blocks: 300 units shown as 128, 900 steps as 400"
    rows, columns = layer.blocks.row_starts, layer.blocks.column_starts
    for i, j in ((0, 0), (57, 311), (127, 399)):
        block = h[rows[i]:rows[i + 1], columns[j]:columns[j + 1]]
        assert layer.quantity("h").values[i, j] == pytest.approx(block.mean(), rel=1e-12)


def test_plot_activations_command(tmp_path: Path) -> None:
    from conftest import sample

    target = tmp_path / "gates.png"
    result = CliRunner().invoke(cli, ["plot", str(sample("k3_bidir_concat.keras")), "--activations", "--units", "0-1", "-o", str(target)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"wrote 10 heatmap(s) of 2 layer(s), sample 0 of random, seed 0, (4, 5, 3), to {target}\n"
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(cli, ["plot", str(sample("k3_bidir_concat.keras")), "--activations", "--layer", "bi/backward",
                                      "--sample", "3", "-o", str(tmp_path / "back.png")])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("wrote 5 heatmap(s) of 1 layer(s), sample 3 of random")


@pytest.mark.parametrize("arguments, message", [
    (["--activations", "--units", "0-9"], "Error: --units 0,1,2,3,4,5,6,7,8,9 is out of range for layer bi/forward, which has 4 units (0-3)\n"),
    (["--activations", "--units", "3-1"], "Error: Invalid value for '--units': the range 3-1 runs backwards; expected FIRST-LAST with FIRST ≤ LAST\n"),
    (["--activations", "--gate", "z"], "Error: --gate chooses weight heatmaps; --activations draws every gate and state of a layer "
                                       "(choose layers with --layer)\n"),
    (["--units", "0"], "Error: --input, --sample and --units choose what --activations draws; expected --activations with them\n"),
    (["--activations", "--sample", "9"], "Error: --sample 9 is out of range; the input has 4 sample(s) (0-3)\n"),
])
def test_plot_activations_refuses_what_it_cannot_draw(tmp_path: Path, arguments: list[str], message: str) -> None:
    from conftest import sample

    result = CliRunner().invoke(cli, ["plot", str(sample("k3_bidir_concat.keras")), *arguments, "-o", str(tmp_path / "p.png")])
    assert result.exit_code == 2
    assert result.stderr.endswith(message), result.stderr
    assert not (tmp_path / "p.png").exists()
