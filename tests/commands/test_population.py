"""Trajectories and per-unit views of a stored dataset (plot --trajectories, report --activations),
checked against NumPy and scikit-learn on the stored arrays; the token-type control; a model's
summary in a notebook."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli

zarr = pytest.importorskip("zarr", reason="the store is Zarr (pip install -e '.[test]')")
pytest.importorskip("sklearn", reason="PCA and probes are scikit-learn's (pip install -e '.[test]')")


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def masked_store(keras3: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A masked GRU and a backward LSTM over rows padded at the end: real steps differ by row."""
    folder = tmp_path_factory.mktemp("population")
    keras3.utils.set_random_seed(2)
    inputs = keras3.Input((12, 3))
    masked = keras3.layers.Masking()(inputs)
    gru = keras3.layers.GRU(7, return_sequences=True, name="gru")(masked)
    lstm = keras3.layers.LSTM(4, return_sequences=True, go_backwards=True, name="back")(gru)
    keras3.Model(inputs, lstm).save(folder / "m.keras")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12, 3)).astype(np.float32)
    lengths = rng.integers(3, 13, size=40)
    for row, length in enumerate(lengths):
        x[row, length:] = 0.0
    np.save(folder / "x.npy", x)
    assert run("activations", str(folder / "m.keras"), "--input", str(folder / "x.npy"), "-o", str(folder / "acts.zarr"),
               "--batch-size", "8").exit_code == 0
    return folder, folder / "acts.zarr", lengths


def test_unit_statistics_are_numpy_s_over_real_steps(masked_store: tuple[Path, Path, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    import grucli
    from grucli.commands import population

    folder, store, lengths = masked_store
    monkeypatch.setattr(population, "READ_BYTES", 1)  # a block of one batch at a time: the sums run over 5 blocks
    labels = np.random.default_rng(1).normal(size=(40, 12))
    found = grucli.open_activations(store)
    for path in ("gru", "back"):
        layer = found.layer(path)
        stats = {s.state: s for s in population.unit_statistics(found, layer, labels=labels)}
        real = np.arange(12)[None, :] < lengths[:, None]
        for name in layer.names:
            values = zarr.open_group(str(store), mode="r")[f"{path}/{name}"][:].astype(np.float64)
            if layer.reversed:
                values = values[:, ::-1]  # stored as the layer ran; the mask and labels are in time order
            at_real = values[real]
            np.testing.assert_allclose(stats[name].mean, at_real.mean(axis=0), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(stats[name].std, at_real.std(axis=0), rtol=1e-6, atol=1e-9)
            expected_r = [np.corrcoef(at_real[:, unit], labels[real])[0, 1] for unit in range(at_real.shape[1])]
            np.testing.assert_allclose(stats[name].correlation, expected_r, rtol=1e-6, atol=1e-9)
            activation = layer.activations.get(name)
            if activation in ("sigmoid", "tanh"):
                low, high = (0.0, 1.0) if activation == "sigmoid" else (-1.0, 1.0)
                margin = 0.05 * (high - low)
                saturated = ((at_real <= low + margin) | (at_real >= high - margin)).mean(axis=0)
                np.testing.assert_allclose(stats[name].saturation, saturated)
            else:
                assert stats[name].saturation is None and name in ("h", "c")


def test_trajectories_are_the_pca_of_every_real_step(masked_store: tuple[Path, Path, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.decomposition import PCA

    import grucli
    from grucli.commands import population

    folder, store, lengths = masked_store
    monkeypatch.setattr(population, "READ_BYTES", 1)  # fitted incrementally, a batch of rows at a time
    found = grucli.open_activations(store)
    drawn = population.trajectories(found, found.layer("gru"), "h", sequences=6, seed=3)
    h = zarr.open_group(str(store), mode="r")["gru/h"][:].astype(np.float64)
    real = np.arange(12)[None, :] < lengths[:, None]
    exact = PCA(n_components=2).fit(h[real])
    np.testing.assert_allclose(drawn.explained_variance_ratio, exact.explained_variance_ratio_, rtol=1e-6)
    assert drawn.fitted_steps == drawn.available_steps == int(real.sum())
    for index, row in enumerate(drawn.sequences):
        expected = exact.transform(h[row, : lengths[row]])
        got = drawn.points[index, : lengths[row]]
        np.testing.assert_allclose(np.abs(got), np.abs(expected), atol=1e-6)  # a component's sign is arbitrary
        assert np.isnan(drawn.points[index, lengths[row] :]).all()


def test_plot_trajectories_and_the_report_section(masked_store: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    folder, store, lengths = masked_store
    np.save(tmp_path / "length.npy", lengths.astype(np.float64))
    result = run("plot", str(folder / "m.keras"), "--trajectories", str(store), "--labels", str(tmp_path / "length.npy"),
                 "--layer", "back", "--sequences", "8", "-o", str(tmp_path / "t.png"))
    assert result.exit_code == 0, result.output
    assert "h of back, 8 sequences in the first 2 principal components" in result.output
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page_result = run("report", str(folder / "m.keras"), "--activations", str(store), "--labels", str(tmp_path / "length.npy"),
                      "-o", str(tmp_path / "r.html"))
    assert page_result.exit_code == 0, page_result.output
    page = (tmp_path / "r.html").read_text()
    assert '<section id="dataset">' in page and "diagnostic classifiers" in page and "states across the dataset" in page
    assert page.count('src="data:image/png;base64,') == 2  # the probe's scores and the trajectories, inline
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from the network
    assert "<th>selectivity</th>" in page and "r with label" in page
    refused = run("report", str(folder / "m.keras"), "--labels", str(tmp_path / "length.npy"), "-o", str(tmp_path / "r2.html"))
    assert refused.exit_code == 2 and "expected --activations ACTS with them" in refused.output


def test_the_token_type_control(keras3: Any, tmp_path: Path) -> None:
    """Each input id gets one control label; a label that is the id's own parity is then as easy for
    the control as for the probe (selectivity near 0), while the count of odd ids so far is not."""
    import grucli
    from grucli.commands.probe import _type_control

    keras3.utils.set_random_seed(4)
    model = keras3.Sequential([keras3.Input((15,)), keras3.layers.Embedding(10, 6), keras3.layers.GRU(12, return_sequences=True, name="gru")])
    model.save(tmp_path / "ids.keras")
    ids = np.random.default_rng(0).integers(0, 10, size=(300, 15))
    np.save(tmp_path / "ids.npy", ids)
    assert run("activations", str(tmp_path / "ids.keras"), "--input", str(tmp_path / "ids.npy"), "-o", str(tmp_path / "a.zarr")).exit_code == 0
    parity = ids % 2
    real = np.ones(ids.shape, bool)
    control = _type_control(parity, real, ids, np.random.default_rng(1))
    for token in range(10):  # one label a type
        assert len(np.unique(control[ids == token])) == 1
    report = grucli.probe(tmp_path / "a.zarr", parity, per_step=True, control="type", data=tmp_path / "ids.npy")
    late = [r for r in report.results if r.step >= 5]
    print([round(r.score, 3) for r in late], [round(r.control_score, 3) for r in late])
    assert np.mean([r.score for r in late]) > 0.75  # the current token is in h
    # and so is any labelling of the tokens: the control scores about as well, so the selectivity is small
    assert np.mean([r.control_score for r in late]) > 0.7
    assert abs(np.mean([r.selectivity for r in late])) < 0.1
    result = run("probe", str(tmp_path / "a.zarr"), "--labels", str(tmp_path / "ids.npy"), "--control", "type", "--input",
                 str(tmp_path / "ids.npy"), "--per-step", "--json")
    assert result.exit_code == 0, result.output
    other = np.random.default_rng(5).integers(0, 10, size=(300, 15))
    np.save(tmp_path / "other.npy", other)
    refused = run("probe", str(tmp_path / "a.zarr"), "--labels", str(tmp_path / "ids.npy"), "--control", "type", "--input",
                  str(tmp_path / "other.npy"))
    assert refused.exit_code == 2 and "are not those store" in refused.output


def test_a_model_in_a_notebook_shows_its_layers_and_equations() -> None:
    import grucli
    from tests.conftest import sample

    with grucli.load(sample("k3_bidir_concat.keras")) as model:
        page = model._repr_html_()
    assert page.startswith('<div class="grucli">') and "<style>" in page
    for path in ("bi/forward", "bi/backward"):
        assert f"<h2>{path} <small>GRU(4)</small></h2>" in page
    assert "z * h_prev + (1 - z) * hh" in page  # Keras's form of the update, as the layer computes it
    assert "go_backwards: the steps run from the last timestep to the first" in page
    assert "<script" not in page  # a notebook need run nothing to show it
