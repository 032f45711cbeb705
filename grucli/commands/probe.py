"""Diagnostic classifiers over a store of activations, checked against control tasks.

A diagnostic classifier (Hupkes, Veldhoen & Zuidema 2018) is a linear model trained on a
network's states to predict a feature the network is thought to track; if it predicts the feature
on sequences it was not trained on, the states encode it linearly. A control task (Hewitt & Liang
2019) is the same probe on labels that carry no information about the input: what it scores is
what a probe of this size can fit by itself, and selectivity (score − control score) what the
states add.

Here: scikit-learn's StandardScaler then LogisticRegression (classes: accuracy) or Ridge
(numbers: R²), cross-validated over folds of sequences, so one sequence's steps are never on both
sides of a split (StratifiedKFold for one class label a sequence, else KFold over sequences; the
same folds for every layer, state and step). Labels (N,) are probed at each sequence's final
state (its last real step in the order the layer ran); labels (N, T) at every real step, one
probe a step (`per_step`) or one pooled over all real steps. The permutation control shuffles
the labels across sequences (within each step for (N, T) labels, so each step keeps its
distribution); the token-type control gives each input id a label drawn from the labels'
distribution. The top units are those with the largest standardised weights, averaged over
folds. docs/dynamics.md says what each number means.

Features are read from the store a block at a time (rows, or steps for a per-step probe), at
most `max_rows` rows a probe (sampled with the seed, and said so).

May import: numpy, scikit-learn (on first use), files/, errors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grucli.errors import GrucliError, SelectionError
from grucli.files.activation_store import ActivationStore, StoredLayer
from grucli.files.budget import MIB, Limits

READ_BYTES = 256 * MIB  # features of one read of the store
DEFAULT_STATES = ("h", "c")


class LabelError(GrucliError):
    """Labels that do not fit the store (length, shape, NaN) or the task."""


@dataclass(frozen=True)
class ProbeOptions:
    layer_paths: tuple[str, ...] = ()
    states: tuple[str, ...] = ()  # none: h, and c where stored
    per_step: bool = False
    task: str | None = None  # classification, regression; None: from the labels' dtype
    folds: int = 5
    seed: int = 0
    control: str = "permutation"  # or "type" (needs token ids)
    max_rows: int = 100_000
    top: int = 5
    regularization: float = 1.0  # LogisticRegression's C, Ridge's alpha


@dataclass(frozen=True)
class ProbeResult:
    """One probe: a layer's state (at one step, or at None: final states or pooled steps)."""

    layer: str
    state: str
    step: int | None
    score: float | None  # mean over folds; None where the probe cannot be fitted (`note` says why)
    score_std: float | None
    control_score: float | None
    control_std: float | None
    selectivity: float | None
    top_units: tuple[tuple[int, float], ...]  # (unit, mean |standardised weight|), largest first
    rows: int
    note: str | None = None


@dataclass(frozen=True)
class ProbeReport:
    store: str
    labels: str
    task: str
    metric: str  # accuracy or r2
    folds: int
    seed: int
    control: str
    per_step: bool
    label_shape: tuple[int, ...]
    rows_available: int  # probe rows before sampling (sequences, or real steps when pooled)
    rows_used: int
    sequences_left_out: int  # no real step
    results: tuple[ProbeResult, ...]
    fold_of_sequence: np.ndarray = field(repr=False, compare=False)  # each sequence's test fold (-1: not used)
    notes: tuple[str, ...] = ()

    @property
    def subsampled(self) -> bool:
        return self.rows_used < self.rows_available


ControlLabels = Callable[[np.ndarray, np.ndarray], np.ndarray]
Progress = Callable[[str, int, int], None]


def check_labels(labels: np.ndarray, store: ActivationStore, what: str) -> np.ndarray:
    """Labels (N,) or (N, T) that fit the store: one per sequence, or per sequence and step."""
    rows = store.settings.rows
    if labels.ndim not in (1, 2) or labels.shape[0] != rows:
        raise LabelError(
            f"{what} has shape {labels.shape}; the store holds {rows} sequences: expected ({rows},) (one label a sequence) "
            f"or ({rows}, T) (one a step)"
        )
    if labels.dtype.kind not in "biufU":
        raise LabelError(f"{what} holds {labels.dtype}; expected numbers, booleans or strings (class names)")
    return labels


def probe(
    store: ActivationStore,
    labels: np.ndarray,
    labels_name: str,
    options: ProbeOptions,
    token_ids: np.ndarray | None = None,
    progress: Progress | None = None,
) -> ProbeReport:
    """Every selected layer × state (× step) probed for `labels`; see the module's docstring."""
    from sklearn.model_selection import KFold, StratifiedKFold

    store.require_complete()
    labels = check_labels(labels, store, labels_name)
    task = options.task or ("regression" if labels.dtype.kind == "f" else "classification")
    if task not in ("classification", "regression"):
        raise SelectionError(f"task {task!r}; expected classification or regression")
    if options.per_step and labels.ndim != 2:
        raise LabelError(f"--per-step probes one label a step; {labels_name} has shape {labels.shape}: expected (N, T)")
    if options.control == "type" and token_ids is None:
        raise LabelError("the token-type control needs the input ids: pass the data the store was computed from (--input)")
    if options.control not in ("permutation", "type"):
        raise SelectionError(f"control {options.control!r}; expected permutation or type")
    if options.folds < 2:
        raise SelectionError(f"--folds {options.folds}; expected at least 2")
    targets = _selected(store, options)
    rng = np.random.default_rng(options.seed)
    first = targets[0][0]
    real = _real_steps(store, first)  # (N, T) time order
    if labels.ndim == 2 and labels.shape[1] != first.timesteps:
        raise LabelError(
            f"{labels_name} has {labels.shape[1]} steps; layer {first.path} runs {first.timesteps}: "
            f"expected ({store.settings.rows}, {first.timesteps})"
        )
    for layer in {layer.path: layer for layer, _ in targets[1:] if layer.path != first.path}.values():  # each layer's mask read once
        if layer.timesteps != first.timesteps or not np.array_equal(_real_steps(store, layer), real):
            raise SelectionError(
                f"layers {first.path} and {layer.path} run over different steps (or masks); probe them one at a time with --layer"
            )
    _check_finite(labels, real, labels_name, task)
    kept = real.any(axis=1)
    left_out = int((~kept).sum())
    if not kept.any():
        raise LabelError(f"no sequence of store {store.path} has a real step; nothing to probe")
    folds = np.full(store.settings.rows, -1)
    kept_index = np.flatnonzero(kept)
    if labels.ndim == 1 and task == "classification":
        splitter = StratifiedKFold(n_splits=options.folds, shuffle=True, random_state=options.seed)
        _check_classes(labels[kept_index], options.folds, labels_name)
        split = splitter.split(kept_index, labels[kept_index])
    else:
        if len(kept_index) < options.folds:
            raise LabelError(f"{len(kept_index)} sequences hold real steps; expected at least --folds ({options.folds})")
        split = KFold(n_splits=options.folds, shuffle=True, random_state=options.seed).split(kept_index)
    for fold, (_, test) in enumerate(split):
        folds[kept_index[test]] = fold
    control = _control(labels, real, options.control, token_ids, rng)
    if labels.ndim == 1:
        report_rows = len(kept_index)
        results, used = _final_state_probes(store, targets, labels, control, real, folds, task, options, progress)
    elif options.per_step:
        report_rows = len(kept_index)
        results, used = _per_step_probes(store, targets, labels, control, real, folds, task, options, progress)
    else:
        report_rows = int(real.sum())
        results, used = _pooled_probes(store, targets, labels, control, real, folds, task, options, progress)
    return ProbeReport(
        str(store.path),
        labels_name,
        task,
        "accuracy" if task == "classification" else "r2",
        options.folds,
        options.seed,
        options.control,
        options.per_step,
        tuple(labels.shape),
        report_rows,
        used,
        left_out,
        tuple(results),
        folds,
    )


def _selected(store: ActivationStore, options: ProbeOptions) -> list[tuple[StoredLayer, str]]:
    from grucli.model import paths

    layers = [layer for layer in store.settings.layers if not options.layer_paths or paths.in_scope(layer.path, options.layer_paths)]
    missing = [p for p in options.layer_paths if not any(paths.selects(p, layer.path) for layer in store.settings.layers)]
    if missing:
        available = ", ".join(layer.path for layer in store.settings.layers)
        raise SelectionError(f"store {store.path} holds no layer {missing[0]!r}; expected one of: {available}")
    wanted = options.states or DEFAULT_STATES
    targets = [(layer, name) for layer in layers for name in wanted if name in layer.names]
    stored = sorted({name for layer in layers for name in layer.names})
    unknown = [name for name in options.states if name not in stored]
    if unknown or not targets:
        raise SelectionError(
            f"store {store.path} holds no {', '.join(unknown or wanted)} for the selected layers; expected some of: {', '.join(stored)}"
        )
    return targets


def _real_steps(store: ActivationStore, layer: StoredLayer) -> np.ndarray:
    rows = store.settings.rows
    return np.concatenate([store.mask(layer, slice(start, min(rows, start + 65536))) for start in range(0, rows, 65536)])


def _check_finite(labels: np.ndarray, real: np.ndarray, name: str, task: str) -> None:
    if labels.dtype.kind != "f":
        return
    at_real = labels[real.any(axis=1)] if labels.ndim == 1 else labels[real]
    bad = ~np.isfinite(at_real)
    if bad.any():
        raise LabelError(f"{name} holds {int(bad.sum())} NaN or infinite labels at real steps; expected a number for each")
    if task == "classification" and not np.all(np.mod(at_real, 1) == 0):
        raise LabelError(f"{name} holds fractions, which are not classes; expected --task regression, or whole-number classes")


def _check_classes(labels: np.ndarray, folds: int, name: str) -> None:
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise LabelError(f"{name} holds one class only ({values[0]!r}); expected at least two to classify")
    if counts.min() < folds:
        raise LabelError(
            f"class {values[np.argmin(counts)]!r} of {name} has {counts.min()} sequences; expected at least --folds ({folds}) of each class"
        )


def _last_time_step(real: np.ndarray) -> np.ndarray:
    return real.shape[1] - 1 - np.argmax(real[:, ::-1], axis=1)


def _processing_index(layer: StoredLayer, time_step: np.ndarray | int) -> np.ndarray | int:
    return layer.timesteps - 1 - time_step if layer.reversed else time_step


def _final_index(layer: StoredLayer, real: np.ndarray) -> np.ndarray:
    """Each sequence's final state, as an index in the layer's processing order: its last real step
    in the order the layer ran (for a go_backwards layer, the first real step in time)."""
    processing = real[:, ::-1] if layer.reversed else real
    return processing.shape[1] - 1 - np.argmax(processing[:, ::-1], axis=1)


def token_ids(store: ActivationStore, data: object, limits: Limits) -> np.ndarray:
    """The input ids the store was computed from, (N, T), for the token-type control: `data` is
    the store's data (a path, or an array), each batch checked against the store's fingerprints."""
    from grucli.files.datasets import Dataset, digest, in_memory, open_dataset

    names = [entry.get("name", "input") for entry in store.settings.data.get("inputs", [])] or ["input"]
    dataset: Dataset = (
        open_dataset(data, names, limits, 1 << 62) if isinstance(data, (str, Path)) else in_memory([np.asarray(data)], names[:1])
    )
    if len(dataset.arrays) != 1:
        raise LabelError("the token-type control reads the ids of a model with one input; this data has several")
    if dataset.rows != store.settings.rows:
        raise LabelError(f"{dataset.path} holds {dataset.rows} rows; store {store.path} {store.settings.rows}: expected its data")
    if dataset.rows * dataset.row_bytes > limits.max_input_bytes:
        raise LabelError(
            f"the ids of {dataset.path} take {dataset.rows * dataset.row_bytes} bytes, over the input limit; "
            "expected a smaller dataset (raise the limit with --max-input-mb)"
        )
    parts = []
    for index, expected in enumerate(store.progress.digests):
        start, stop = store.settings.batch_rows(index)
        rows = dataset.read(start, stop)
        if expected is not None and digest(rows) != expected:
            raise LabelError(
                f"rows {start}..{stop - 1} of {dataset.path} are not those store {store.path} was computed from; expected its data"
            )
        parts.append(rows[0])
    return np.concatenate(parts)


# --- control tasks -----------------------------------------------------------------------------


def _control(labels: np.ndarray, real: np.ndarray, method: str, token_ids: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Control labels of the labels' shape: the same values, carrying no information about the input."""
    if method == "type":
        assert token_ids is not None
        return _type_control(labels, real, token_ids, rng)
    control = labels.copy()
    if labels.ndim == 1:
        kept = np.flatnonzero(real.any(axis=1))
        control[kept] = labels[kept][rng.permutation(len(kept))]
        return control
    for t in range(labels.shape[1]):
        rows = np.flatnonzero(real[:, t])
        control[rows, t] = labels[rows, t][rng.permutation(len(rows))]
    return control


def _type_control(labels: np.ndarray, real: np.ndarray, token_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hewitt & Liang's control: each token type (input id) gets one label, drawn from the
    labels' distribution; a step's control label is its token's."""
    ids = token_ids.reshape(token_ids.shape[0], token_ids.shape[1]) if token_ids.ndim == 3 and token_ids.shape[2] == 1 else token_ids
    if ids.ndim != 2 or ids.shape != real.shape:
        raise LabelError(f"the token-type control needs ids of shape {real.shape}; the data holds {token_ids.shape}")
    if ids.dtype.kind == "f" and not np.all(np.mod(ids, 1) == 0):
        raise LabelError("the token-type control needs integer ids; the data holds fractions")
    at_real = labels[real.any(axis=1)] if labels.ndim == 1 else labels[real]
    types = np.unique(ids[real])
    drawn = at_real[rng.integers(0, len(at_real), size=len(types))]
    lookup = dict(zip(types.tolist(), drawn.tolist()))
    if labels.ndim == 1:
        last = _last_time_step(real)
        probed = ids[np.arange(len(ids)), last]
        return np.array([lookup.get(v, labels[0]) for v in probed.tolist()], dtype=labels.dtype)
    control = labels.copy()
    rows, steps = np.nonzero(real)
    control[rows, steps] = np.array([lookup[v] for v in ids[rows, steps].tolist()], dtype=labels.dtype)
    return control


# --- the probes ---------------------------------------------------------------------------------


def probe_pipeline(task: str, regularization: float) -> object:
    """The diagnostic classifier: standardised features, then a linear model."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=regularization, max_iter=1000) if task == "classification" else Ridge(alpha=regularization)
    return make_pipeline(StandardScaler(), model)


def cross_validated(
    features: np.ndarray, labels: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], task: str, options: ProbeOptions
) -> tuple[float | None, float | None, np.ndarray | None, str | None]:
    """Mean and std of the test score over `splits`, each unit's mean |standardised weight|, or a
    note saying why the probe cannot be fitted."""
    from sklearn.model_selection import cross_validate

    if task == "classification":
        for train, _ in splits:
            if len(np.unique(labels[train])) < 2:
                return None, None, None, "a fold's training rows hold one class"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes of a probe on noise (the control) are not the user's concern
        found = cross_validate(
            probe_pipeline(task, options.regularization),
            features,
            labels,
            cv=splits,
            scoring="accuracy" if task == "classification" else "r2",
            return_estimator=True,
        )
    scores = np.asarray(found["test_score"], float)
    weights = np.mean([np.sqrt((np.atleast_2d(est[-1].coef_) ** 2).sum(axis=0)) for est in found["estimator"]], axis=0)
    return float(scores.mean()), float(scores.std()), weights, None


def _splits(groups: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train and test rows of each fold, from each row's fold (its sequence's)."""
    return [(np.flatnonzero(groups != k), np.flatnonzero(groups == k)) for k in range(folds) if (groups == k).any()]


def _result(
    layer: StoredLayer,
    state: str,
    step: int | None,
    features: np.ndarray,
    labels: np.ndarray,
    control: np.ndarray,
    groups: np.ndarray,
    task: str,
    options: ProbeOptions,
) -> ProbeResult:
    splits = _splits(groups, options.folds)
    if len(splits) < 2:
        return ProbeResult(layer.path, state, step, None, None, None, None, None, (), len(labels), "fewer than two folds hold rows")
    # float64 for the fit: StandardScaler and the solvers keep float32 input in float32
    features = features.reshape(len(features), -1).astype(np.float64)
    score, std, weights, note = cross_validated(features, labels, splits, task, options)
    control_score, control_std, _, control_note = cross_validated(features, control, splits, task, options)
    top: tuple[tuple[int, float], ...] = ()
    if weights is not None:
        order = np.argsort(-weights, kind="stable")[: options.top]
        top = tuple((int(unit), float(weights[unit])) for unit in order)
    selectivity = None if score is None or control_score is None else score - control_score
    return ProbeResult(layer.path, state, step, score, std, control_score, control_std, selectivity, top, len(labels), note or control_note)


def _row_blocks(rows: int, row_bytes: int) -> Iterator[slice]:
    step = max(1, READ_BYTES // max(row_bytes, 1))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def _final_state_probes(
    store: ActivationStore,
    targets: Sequence[tuple[StoredLayer, str]],
    labels: np.ndarray,
    control: np.ndarray,
    real: np.ndarray,
    folds: np.ndarray,
    task: str,
    options: ProbeOptions,
    progress: Progress | None,
) -> tuple[list[ProbeResult], int]:
    rows = _sequences(folds, options.max_rows, np.random.default_rng(options.seed + 1))
    results = []
    for index, (layer, state) in enumerate(targets):
        if progress is not None:
            progress("final states", index, len(targets))
        final = _final_index(layer, real)
        features = _gather(store, layer, state, rows, final[rows])
        results.append(_result(layer, state, None, features, labels[rows], control[rows], folds[rows], task, options))
    return results, len(rows)


def _gather(store: ActivationStore, layer: StoredLayer, state: str, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """state[rows[i], steps[i]] for each i (processing-order steps), read a block of rows at a time."""
    key = layer.array_path(state)
    units = math.prod(layer.units)
    out = np.empty((len(rows), units), np.dtype(store.settings.dtype))
    row_bytes = layer.timesteps * units * np.dtype(store.settings.dtype).itemsize
    for block in _row_blocks(store.settings.rows, row_bytes):
        inside = np.flatnonzero((rows >= block.start) & (rows < block.stop))
        if not len(inside):
            continue
        values = store.read(key, block)
        out[inside] = values[rows[inside] - block.start, steps[inside]].reshape(len(inside), units)
    return out


def _sequences(folds: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.flatnonzero(folds >= 0)
    if len(rows) > max_rows:
        rows = np.sort(rng.choice(rows, max_rows, replace=False))
    return rows


def _per_step_probes(
    store: ActivationStore,
    targets: Sequence[tuple[StoredLayer, str]],
    labels: np.ndarray,
    control: np.ndarray,
    real: np.ndarray,
    folds: np.ndarray,
    task: str,
    options: ProbeOptions,
    progress: Progress | None,
) -> tuple[list[ProbeResult], int]:
    rows = _sequences(folds, options.max_rows, np.random.default_rng(options.seed + 1))
    results = []
    timesteps = real.shape[1]
    done = 0
    for layer, state in targets:
        key = layer.array_path(state)
        units = math.prod(layer.units)
        step_bytes = len(rows) * units * np.dtype(store.settings.dtype).itemsize
        block = max(1, READ_BYTES // max(step_bytes, 1))
        for first in range(0, timesteps, block):
            steps = range(first, min(timesteps, first + block))
            # the steps of this block in processing order: a go_backwards layer holds time step t at T-1-t
            low = min(int(_processing_index(layer, t)) for t in steps)
            high = max(int(_processing_index(layer, t)) for t in steps) + 1
            values = _read_rows(store, key, rows, slice(low, high))
            for t in steps:
                if progress is not None:
                    progress(f"{layer.path}/{state}", done, len(targets) * timesteps)
                done += 1
                at = rows[real[rows, t]]
                local = np.searchsorted(rows, at)
                features = values[local, int(_processing_index(layer, t)) - low]
                results.append(_result(layer, state, t, features, labels[at, t], control[at, t], folds[at], task, options))
    return results, len(rows)


def _read_rows(store: ActivationStore, key: str, rows: np.ndarray, steps: slice) -> np.ndarray:
    """array[rows, steps] (rows sorted), read a block of rows at a time."""
    array = store.array(key)
    parts = []
    batch = store.settings.batch_size
    for start in range(0, store.settings.rows, batch):
        inside = rows[(rows >= start) & (rows < start + batch)]
        if len(inside):
            block = np.asarray(array[start : min(store.settings.rows, start + batch), steps])
            parts.append(block[inside - start])
    return np.concatenate(parts) if parts else np.empty((0,))


def _pooled_probes(
    store: ActivationStore,
    targets: Sequence[tuple[StoredLayer, str]],
    labels: np.ndarray,
    control: np.ndarray,
    real: np.ndarray,
    folds: np.ndarray,
    task: str,
    options: ProbeOptions,
    progress: Progress | None,
) -> tuple[list[ProbeResult], int]:
    rows, steps = np.nonzero(real & (folds >= 0)[:, None])
    if len(rows) > options.max_rows:
        chosen = np.sort(np.random.default_rng(options.seed + 1).choice(len(rows), options.max_rows, replace=False))
        rows, steps = rows[chosen], steps[chosen]
    results = []
    for index, (layer, state) in enumerate(targets):
        if progress is not None:
            progress("pooled steps", index, len(targets))
        processing = np.asarray(_processing_index(layer, steps))
        features = _gather(store, layer, state, rows, processing)
        results.append(_result(layer, state, None, features, labels[rows, steps], control[rows, steps], folds[rows], task, options))
    return results, len(rows)
