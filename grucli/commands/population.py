"""A layer's states across a whole dataset: trajectories in state space and each unit's statistics.

- Trajectories: PCA of the layer's state (h by default) fitted on every real step of the store
  (scikit-learn's IncrementalPCA, a block of rows at a time, at most `max_rows` steps sampled
  with the seed), then K sequences projected step by step (time order; NaN at masked steps).
- Per unit: mean and standard deviation over real steps; for values that are an activation's
  output (gates, candidates; model/registry.py), the share of real steps within 5% of the
  activation's range from a bound (saturated); and, given labels, the Pearson correlation of the
  unit with the label: with (N,) labels at each sequence's final state, with (N, T) labels over
  real steps.

Everything is streamed from the store: memory is one block of rows.

May import: numpy, scikit-learn (on first use), files/, model/, errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grucli.errors import SelectionError
from grucli.files.activation_store import ActivationStore, StoredLayer
from grucli.files.budget import MIB
from grucli.model.registry import SATURATION_BOUNDS, SATURATION_MARGIN

READ_BYTES = 128 * MIB
KEPT_COMPONENTS = 256  # beyond this many units, the incremental PCA is an approximation (docs/dynamics.md)


@dataclass(frozen=True)
class Trajectories:
    layer: str
    state: str
    sequences: tuple[int, ...]  # the rows drawn
    points: np.ndarray = field(repr=False, compare=False)  # (K, T, components), time order, NaN at masked steps
    explained_variance_ratio: tuple[float, ...] = ()
    fitted_steps: int = 0  # real steps the PCA was fitted on
    available_steps: int = 0
    labels: np.ndarray | None = field(default=None, repr=False, compare=False)  # each drawn sequence's label ((N,) labels)


@dataclass(frozen=True)
class UnitStatistics:
    layer: str
    state: str
    activation: str | None  # whose output the value is, where saturation is defined
    mean: np.ndarray = field(repr=False, compare=False)  # (units,)
    std: np.ndarray = field(repr=False, compare=False)
    saturation: np.ndarray | None = field(repr=False, compare=False)  # share of real steps saturated, per unit
    correlation: np.ndarray | None = field(repr=False, compare=False)  # Pearson r with the label, per unit
    steps: int = 0  # real steps counted


@dataclass(frozen=True)
class PopulationReport:
    store: str
    layer: str
    trajectories: Trajectories
    units: tuple[UnitStatistics, ...]
    labels: str | None


def _row_blocks(store: ActivationStore, layer: StoredLayer) -> list[slice]:
    row_bytes = layer.timesteps * math.prod(layer.units) * np.dtype(store.settings.dtype).itemsize * max(1, len(layer.names))
    rows = store.settings.rows
    step = max(store.settings.batch_size, (READ_BYTES // max(row_bytes, 1)) // store.settings.batch_size * store.settings.batch_size)
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)]


def _time_order(layer: StoredLayer, values: np.ndarray) -> np.ndarray:
    return values[:, ::-1] if layer.reversed else values


def choose_layer(store: ActivationStore, path: str | None) -> StoredLayer:
    if path is None:
        return store.settings.layers[0]
    return store.layer(path)


def trajectories(
    store: ActivationStore,
    layer: StoredLayer,
    state: str = "h",
    sequences: int = 20,
    components: int = 2,
    seed: int = 0,
    max_rows: int = 200_000,
    labels: np.ndarray | None = None,
) -> Trajectories:
    """PCA of `state` fitted on the store's real steps, and `sequences` rows projected on it."""
    if state not in layer.names:
        raise SelectionError(f"layer {layer.path} of store {store.path} holds no {state!r}; expected one of: {', '.join(layer.names)}")
    units = math.prod(layer.units)
    if units < components:
        raise SelectionError(f"layer {layer.path} has {units} units; a PCA of {components} components needs at least as many")
    rng = np.random.default_rng(seed)
    key = layer.array_path(state)
    blocks = _row_blocks(store, layer)
    masks = [store.mask(layer, block) for block in blocks]
    available = int(sum(mask.sum() for mask in masks))
    share = min(1.0, max_rows / max(available, 1))
    # IncrementalPCA keeps only its n_components between blocks: kept at every unit (up to KEPT_COMPONENTS),
    # the fit is the exact PCA of all the steps, and the first `components` are drawn.
    kept_components = min(units, KEPT_COMPONENTS)
    pca, fitted = _fit(store, layer, key, blocks, masks, share, kept_components, components, rng)
    kept = np.flatnonzero(np.concatenate(masks).any(axis=1))
    drawn = np.sort(rng.choice(kept, min(sequences, len(kept)), replace=False))
    points = np.full((len(drawn), layer.timesteps, components), np.nan)
    for index, row in enumerate(drawn):
        values = _time_order(layer, store.read(key, slice(int(row), int(row) + 1)))[0].reshape(layer.timesteps, units)
        real = store.mask(layer, slice(int(row), int(row) + 1))[0]
        points[index, real] = (values[real].astype(np.float64) - pca.mean_) @ pca.components_[:components].T
    chosen_labels = None if labels is None or labels.ndim != 1 else labels[drawn]
    return Trajectories(
        layer.path,
        state,
        tuple(int(r) for r in drawn),
        points,
        tuple(float(v) for v in pca.explained_variance_ratio_[:components]),
        fitted,
        available,
        chosen_labels,
    )


def _fit(
    store: ActivationStore,
    layer: StoredLayer,
    key: str,
    blocks: Sequence[slice],
    masks: Sequence[np.ndarray],
    share: float,
    kept_components: int,
    components: int,
    rng: np.random.Generator,
) -> tuple[Any, int]:
    """The incremental PCA of the real steps, block by block. Each partial fit needs at least as
    many rows as components: rows wait in `pending` until there are twice that many, and all but
    the last `kept_components` are fitted, so that what is left at the end can always be fitted."""
    from sklearn.decomposition import IncrementalPCA

    units = math.prod(layer.units)
    pca = IncrementalPCA(n_components=kept_components)
    fitted = 0
    pending = np.empty((0, units))
    for block, mask in zip(blocks, masks):
        values = _time_order(layer, store.read(key, block)).reshape(block.stop - block.start, layer.timesteps, units)
        real = values[mask].astype(np.float64)
        if share < 1.0:
            real = real[rng.random(len(real)) < share]
        pending = np.concatenate([pending, real])
        if len(pending) >= 2 * kept_components:
            pca.partial_fit(pending[:-kept_components])
            fitted += len(pending) - kept_components
            pending = pending[-kept_components:]
    if fitted == 0:  # fewer steps than twice the units in all: one fit of what there is
        if len(pending) < components:
            raise SelectionError(f"store {store.path} holds fewer than {components} real steps of {layer.path}; nothing to fit")
        pca = IncrementalPCA(n_components=min(len(pending), kept_components))
    if len(pending):
        pca.partial_fit(pending)
        fitted += len(pending)
    return pca, fitted


def unit_statistics(
    store: ActivationStore, layer: StoredLayer, names: Sequence[str] = (), labels: np.ndarray | None = None
) -> tuple[UnitStatistics, ...]:
    """Per unit of each traced value of `layer` (all of them by default): mean, std, saturation
    where defined, and correlation with `labels` where given (numbers or booleans)."""
    names = tuple(names) or layer.names
    if labels is not None and labels.dtype.kind not in "biuf":
        labels = None  # class names: no correlation to compute
    units = math.prod(layer.units)
    sums = {name: _Sums(units) for name in names}
    for block in _row_blocks(store, layer):
        mask = store.mask(layer, block)
        final = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1) if not layer.reversed else np.argmax(mask, axis=1)
        for name in names:
            values = _time_order(layer, store.read(layer.array_path(name), block)).reshape(block.stop - block.start, layer.timesteps, units)
            bounds = SATURATION_BOUNDS.get(layer.activations.get(name, ""))
            sums[name].add(values, mask, bounds, labels, block, final)
    return tuple(
        sums[name].result(layer.path, name, layer.activations.get(name) if SATURATION_BOUNDS.get(layer.activations.get(name, "")) else None)
        for name in names
    )


class _Sums:
    """Running sums over real steps, in float64."""

    def __init__(self, units: int) -> None:
        self.count = 0
        self.total = np.zeros(units)
        self.squares = np.zeros(units)
        self.saturated = np.zeros(units)
        self.has_bounds = False
        self.pairs = 0
        self.x = np.zeros(units)
        self.xx = np.zeros(units)
        self.y = 0.0
        self.yy = 0.0
        self.xy = np.zeros(units)
        self.has_labels = False

    def add(
        self,
        values: np.ndarray,
        mask: np.ndarray,
        bounds: tuple[float, float] | None,
        labels: np.ndarray | None,
        block: slice,
        final: np.ndarray,
    ) -> None:
        real = values[mask].astype(np.float64)
        self.count += len(real)
        self.total += real.sum(axis=0)
        self.squares += (real**2).sum(axis=0)
        if bounds is not None:
            low, high = bounds
            margin = SATURATION_MARGIN * (high - low)
            self.saturated += ((real <= low + margin) | (real >= high - margin)).sum(axis=0)
            self.has_bounds = True
        if labels is None:
            return
        self.has_labels = True
        if labels.ndim == 1:
            kept = mask.any(axis=1)
            x = values[np.arange(len(values)), final][kept].astype(np.float64)
            y = labels[block][kept].astype(np.float64)
        else:
            x, y = real, labels[block][mask].astype(np.float64)
        self.pairs += len(y)
        self.x += x.sum(axis=0)
        self.xx += (x**2).sum(axis=0)
        self.y += float(y.sum())
        self.yy += float((y**2).sum())
        self.xy += (x * y[:, None]).sum(axis=0)

    def result(self, path: str, name: str, activation: str | None) -> UnitStatistics:
        n = max(self.count, 1)
        mean = self.total / n
        std = np.sqrt(np.maximum(self.squares / n - mean**2, 0.0))
        saturation = self.saturated / n if self.has_bounds else None
        correlation = None
        if self.has_labels and self.pairs > 1:
            p = self.pairs
            cov = self.xy / p - (self.x / p) * (self.y / p)
            var_x = np.maximum(self.xx / p - (self.x / p) ** 2, 0.0)
            var_y = max(self.yy / p - (self.y / p) ** 2, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                correlation = np.where((var_x > 0) & (var_y > 0), cov / np.sqrt(var_x * var_y), np.nan)
        return UnitStatistics(path, name, activation, mean, std, saturation, correlation, self.count)


def population(
    store: ActivationStore,
    layer_path: str | None = None,
    state: str = "h",
    sequences: int = 20,
    seed: int = 0,
    labels: np.ndarray | None = None,
    labels_name: str | None = None,
) -> PopulationReport:
    store.require_complete()
    layer = choose_layer(store, layer_path)
    found = trajectories(store, layer, state, sequences, seed=seed, labels=labels)
    return PopulationReport(str(store.path), layer.path, found, unit_statistics(store, layer, labels=labels), labels_name)
