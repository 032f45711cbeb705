"""`grucli probe` on networks trained here on a counting task: the count is read from h (R² ≥ 0.9),
the control task and a label without information score near 0, and every score is the one
scikit-learn computes on the same arrays and folds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli

pytest.importorskip("zarr", reason="probe reads Zarr (pip install -e '.[test]')")
pytest.importorskip("sklearn", reason="probe fits scikit-learn models (pip install -e '.[test]')")

STEPS = 20


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def counting_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 0s and 1s; the label at each step is how many 1s so far."""
    rng = np.random.default_rng(seed)
    x = (rng.random((rows, STEPS, 1)) < 0.5).astype(np.float32)
    return x, np.cumsum(x[..., 0], axis=1)


@pytest.fixture(scope="module", params=["GRU", "LSTM"])
def counter(request: pytest.FixtureRequest, keras3: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path, np.ndarray]:
    """A GRU or LSTM trained to output the running count at every step (as a fraction of the steps)."""
    kind = request.param
    keras3.utils.set_random_seed(11)
    layer = getattr(keras3.layers, kind)(16, return_sequences=True, name="counter")
    inputs = keras3.Input((STEPS, 1))
    model = keras3.Model(inputs, keras3.layers.Dense(1)(layer(inputs)))
    model.compile(optimizer=keras3.optimizers.Adam(0.01), loss="mse")
    x_train, y_train = counting_data(1024, 0)
    model.fit(x_train, y_train[..., None] / STEPS, epochs=25, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp(kind)
    model.save(folder / "counter.keras")
    x, counts = counting_data(600, 1)
    np.save(folder / "x.npy", x)
    result = run("activations", str(folder / "counter.keras"), "--input", str(folder / "x.npy"), "-o", str(folder / "acts.zarr"))
    assert result.exit_code == 0, result.output
    return kind, folder, folder / "acts.zarr", counts


def sklearn_scores(features: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """What the probe should say, computed here with scikit-learn's own objects: StandardScaler and
    Ridge(alpha=1), R² on each held-out fold of sequences."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for k in range(folds.max() + 1):
        train, test = folds != k, folds == k
        fitted = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(features[train], labels[train])
        scores.append(r2_score(labels[test], fitted.predict(features[test])))
    return float(np.mean(scores)), float(np.std(scores))


def test_the_final_count_is_read_from_h(counter: tuple[str, Path, Path, np.ndarray]) -> None:
    import zarr

    import grucli

    kind, folder, store, counts = counter
    np.save(folder / "total.npy", counts[:, -1])
    result = run("probe", str(store), "--labels", str(folder / "total.npy"), "--state", "h", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (found,) = document["results"]
    assert found["layer"] == "counter" and found["state"] == "h" and found["step"] is None
    assert document["task"] == "regression" and document["metric"] == "r2"
    assert found["score"] >= 0.9, (kind, found)
    assert abs(found["control_score"]) < 0.1, (kind, found)
    assert found["selectivity"] == pytest.approx(found["score"] - found["control_score"])
    assert len(found["top_units"]) == 5
    # scikit-learn on the same arrays (h at the last step, read here with zarr) and the same folds
    report = grucli.probe(store, folder / "total.npy", states=["h"])
    h_last = zarr.open_group(str(store), mode="r")["counter/h"][:, -1]
    score, std = sklearn_scores(h_last.astype(np.float64), counts[:, -1], report.fold_of_sequence)
    assert report.results[0].score == pytest.approx(score, abs=1e-12) and report.results[0].score_std == pytest.approx(std, abs=1e-12)
    # the folds are of sequences: 5 of 120
    assert sorted(np.bincount(report.fold_of_sequence)) == [120] * 5


def test_the_count_is_read_at_every_step_from_step_10(counter: tuple[str, Path, Path, np.ndarray]) -> None:
    import zarr

    import grucli

    kind, folder, store, counts = counter
    np.save(folder / "counts.npy", counts)
    result = run("probe", str(store), "--labels", str(folder / "counts.npy"), "--per-step", "--state", "h", "-o",
                 str(folder / "curves.png"))
    assert result.exit_code == 0, result.output
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = grucli.probe(store, counts, states=["h"], per_step=True)
    steps = {r.step: r for r in report.results}
    assert sorted(steps) == list(range(STEPS))
    for step in range(10, STEPS):
        assert steps[step].score >= 0.9, (kind, step, steps[step])
        assert abs(steps[step].control_score) < 0.15, (kind, step, steps[step])
    h = zarr.open_group(str(store), mode="r")["counter/h"][:]
    for step in (0, 10, STEPS - 1):
        score, std = sklearn_scores(h[:, step].astype(np.float64), counts[:, step], report.fold_of_sequence)
        assert steps[step].score == pytest.approx(score, abs=1e-12) and steps[step].score_std == pytest.approx(std, abs=1e-12)


def test_a_label_without_information_scores_near_zero(counter: tuple[str, Path, Path, np.ndarray]) -> None:
    import grucli

    kind, folder, store, counts = counter
    noise = np.random.default_rng(5).normal(size=len(counts))
    report = grucli.probe(store, noise, states=["h"])
    assert abs(report.results[0].score) < 0.1, (kind, report.results[0])
    pooled = grucli.probe(store, np.random.default_rng(6).normal(size=counts.shape))  # h and, for the LSTM, c
    assert {r.state for r in pooled.results} == ({"h", "c"} if kind == "LSTM" else {"h"})
    for result in pooled.results:
        assert abs(result.score) < 0.1, (kind, result)


def test_classes_are_probed_with_logistic_regression_and_accuracy(counter: tuple[str, Path, Path, np.ndarray]) -> None:
    """More 1s than 0s by the end: a class a sequence, StratifiedKFold, accuracy as scikit-learn scores it."""
    import zarr
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import grucli

    kind, folder, store, counts = counter
    majority = (counts[:, -1] > STEPS / 2).astype(np.int64)
    report = grucli.probe(store, majority, states=["h"])
    assert report.task == "classification" and report.metric == "accuracy"
    assert report.results[0].score >= 0.85, (kind, report.results[0])
    assert report.results[0].control_score < 0.7  # the two classes are about balanced: chance is near 0.5
    h_last = zarr.open_group(str(store), mode="r")["counter/h"][:, -1].astype(np.float64)
    folds = report.fold_of_sequence
    accuracies = []
    for k in range(5):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(h_last[folds != k], majority[folds != k])
        accuracies.append(model.score(h_last[folds == k], majority[folds == k]))
    assert report.results[0].score == pytest.approx(np.mean(accuracies), abs=1e-12)
    # stratified: each fold holds the classes in about their overall shares
    for k in range(5):
        assert abs(majority[folds == k].mean() - majority.mean()) < 0.02


def test_max_rows_samples_and_says_so(counter: tuple[str, Path, Path, np.ndarray]) -> None:
    kind, folder, store, counts = counter
    np.save(folder / "counts.npy", counts)
    result = run("probe", str(store), "--labels", str(folder / "counts.npy"), "--max-rows", "2000", "--state", "h")
    assert result.exit_code == 0, result.output
    assert "rows: 2,000 sampled of 12,000 (--max-rows)" in result.output
    assert "pooled over real steps" in result.output
