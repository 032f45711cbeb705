"""What the pictures show, as records: each recurrent layer's gates and states over time for one
sample (`plot --activations`, `report`), and its weights per gate (`report`).

The activities come from one replay of the model (`ModelReplay` with its trace), the same run and
the same arrays `replay --gates` writes and `explain` follows: gates after their activation,
candidates and states, in the order the layer consumes its steps (last to first for a backward
direction), masked steps NaN. Matrices bigger than a picture shows are averaged over blocks of
units and steps (weights: of rows and units), and the record says so.

May import: numpy, engine/, files/, model/, errors.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grucli.engine.graph import LayerRun, ModelReplay
from grucli.errors import counted
from grucli.files.inputs import InputError
from grucli.model.gates import gate_arrays_by_gate, gate_meaning
from grucli.model.records import ModelLayers, RecurrentLayer
from grucli.model.semantics import semantics_for

# Beyond these a matrix is averaged over blocks: what a picture can show one cell per pixel.
MAX_UNITS = 128
MAX_STEPS = 400
MAX_WEIGHT_ROWS = 128
MAX_WEIGHT_UNITS = 128


@dataclass(frozen=True)
class Blocks:
    """How a matrix was reduced: row r of the picture averages rows starts[r] to starts[r+1]-1 (columns likewise)."""

    row_starts: tuple[int, ...]  # len = shown rows + 1
    column_starts: tuple[int, ...]

    @functools.cached_property
    def whole(self) -> bool:
        return all(b - a == 1 for a, b in zip(self.row_starts, self.row_starts[1:])) and all(
            b - a == 1 for a, b in zip(self.column_starts, self.column_starts[1:])
        )

    def note(self, rows: str, columns: str) -> str | None:
        if self.whole:
            return None
        return (
            f"averaged over blocks: {self.row_starts[-1]} {rows} shown as {len(self.row_starts) - 1}, "
            f"{self.column_starts[-1]} {columns} as {len(self.column_starts) - 1}"
        )


@dataclass(frozen=True)
class Quantity:
    """One gate or state of a layer over time: (units shown, steps shown), NaN at masked steps."""

    name: str  # the trace's name: z, r, hh, h; i, f, cc, c, o, h
    meaning: str
    values: np.ndarray
    low: float  # its colour scale: the range of its finite values
    high: float


@dataclass(frozen=True)
class LayerActivity:
    path: str
    kind: str
    sample: int
    steps: tuple[int, ...]  # the time index of each step in consumption order (reversed for backward directions)
    backwards: bool
    units: tuple[int, ...]  # the units shown (all, or --units)
    inputs: np.ndarray  # (features shown, steps shown): what the layer read, in the same order, NaN where masked
    feature_starts: tuple[int, ...]  # the input's feature blocks (one feature each up to MAX_UNITS)
    masked: np.ndarray  # (steps shown,) bool: the step (or its whole block) is masked
    quantities: tuple[Quantity, ...]
    blocks: Blocks
    downsampled: str | None

    def quantity(self, name: str) -> Quantity:
        for quantity in self.quantities:
            if quantity.name == name:
                return quantity
        raise KeyError(name)


@dataclass(frozen=True)
class ActivityReport:
    path: str
    input_description: str
    layers: tuple[LayerActivity, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (layer path, why it is not drawn), for layers not asked for by name


def layer_activities(
    found: ModelLayers,
    inputs: Sequence[np.ndarray],
    description: str,
    layer_paths: Sequence[str] = (),
    sample: int = 0,
    units: Sequence[int] | None = None,
    allow_none: bool = False,
) -> ActivityReport:
    """Replay the model once on `inputs`, keeping every recurrent layer's trace, and lay out the
    chosen sample's gates and states per layer (`allow_none`: no layer to draw is no error, the
    report says why in `skipped`)."""
    model_file = found.file
    if not model_file.has_config:
        raise InputError(
            f"{model_file.path} holds weights only; the activations need its architecture to feed each layer its "
            "input: pass --config MODEL.json (the JSON of model.to_json(), or a .keras config.json)"
        )
    semantics = semantics_for(model_file.keras_version, model_file.format)
    replay = ModelReplay(model_file, found, semantics, np.float64, trace=True, keep_layer_runs=True)
    replay.run(list(inputs))
    chosen = _chosen_layers(found, replay, layer_paths)
    skipped = [(layer.path, _not_drawn(layer)) for layer in found.recurrent if layer not in chosen]
    if not layer_paths:  # every layer: those that cannot be drawn are left out, with the reason
        skipped += [(layer.path, _not_drawn(layer)) for layer in chosen if layer.family.convolutional]
        chosen = [layer for layer in chosen if not layer.family.convolutional]
    if not chosen and not allow_none:
        raise InputError(
            f"{model_file.path}: no recurrent layer whose activations can be drawn ran in the replay: "
            + "; ".join(f"{path}: {why}" for path, why in skipped)
        )
    layers = tuple(_activity(layer, replay.layer_runs[layer.path], sample, units) for layer in chosen)
    return ActivityReport(str(model_file.path), description, layers, tuple(skipped) if not layer_paths else ())


def _not_drawn(layer: RecurrentLayer) -> str:
    if layer.family.convolutional:
        return f"a {layer.kind}'s gates are maps over space at every step; the activations are drawn for GRU, LSTM and SimpleRNN layers"
    return "the replay never ran it: it is not on the path from the model's inputs to its outputs"


def _chosen_layers(found: ModelLayers, replay: ModelReplay, layer_paths: Sequence[str]) -> list[RecurrentLayer]:
    known = [layer for layer in found.recurrent if layer.path in replay.layer_runs]
    if not layer_paths:
        return known
    chosen = []
    for wanted in layer_paths:
        matches = [layer for layer in known if layer.path == wanted or layer.path.startswith(f"{wanted}/")]
        if not matches:
            raise InputError(
                f"--layer {wanted} is not a recurrent layer the replay ran; expected one of: {', '.join(layer.path for layer in known)}"
            )
        chosen += [layer for layer in matches if layer not in chosen]
    return chosen


def _activity(layer: RecurrentLayer, fed: LayerRun, sample: int, units: Sequence[int] | None) -> LayerActivity:
    if layer.family.convolutional:
        raise InputError(
            f"layer {layer.path} is a {layer.kind}, whose gates are maps over space at every step; the activations "
            "are drawn for GRU, LSTM and SimpleRNN layers (pass --layer to choose them)"
        )
    batch, timesteps = fed.inputs.shape[:2]
    if not 0 <= sample < batch:
        raise InputError(f"--sample {sample} is out of range; the input has {batch} sample(s) (0-{batch - 1})")
    shown_units = tuple(range(layer.units)) if units is None else tuple(units)
    if any(not 0 <= unit < layer.units for unit in shown_units) or not shown_units:
        raise InputError(
            f"--units {_listed(units)} is out of range for layer {layer.path}, which has {counted(layer.units, 'unit')} "
            f"(0-{layer.units - 1})"
        )
    order = np.arange(timesteps)[::-1] if fed.go_backwards else np.arange(timesteps)  # consumption order
    mask = np.ones(timesteps, bool) if fed.mask is None else np.asarray(fed.mask[sample], bool)[order]
    blocks = Blocks(_starts(len(shown_units), MAX_UNITS), _starts(timesteps, MAX_STEPS))
    quantities = []
    for name in layer.family.traced:
        # (steps, units) in processing order, as the trace holds it; the picture is units × steps
        values = np.asarray(fed.run.trace[name][sample], np.float64)[:, list(shown_units)].T
        values = np.where(mask[None, :], values, np.nan)
        shown = _block_means(values, blocks)
        finite = shown[np.isfinite(shown)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        quantities.append(Quantity(name, layer.family.traced[name], shown, low, high))
    inputs = np.asarray(fed.inputs[sample], np.float64)[order].reshape(timesteps, -1).T
    inputs = np.where(mask[None, :], inputs, np.nan)
    feature_blocks = Blocks(_starts(inputs.shape[0], MAX_UNITS), blocks.column_starts)
    masked_blocks = _block_means(np.where(mask, 0.0, np.nan)[None, :], Blocks((0, 1), blocks.column_starts))[0]
    return LayerActivity(
        path=layer.path,
        kind=layer.kind,
        sample=sample,
        steps=tuple(int(t) for t in order),
        backwards=fed.go_backwards,
        units=shown_units,
        inputs=_block_means(inputs, feature_blocks),
        feature_starts=feature_blocks.row_starts,
        masked=~np.isfinite(masked_blocks),
        quantities=tuple(quantities),
        blocks=blocks,
        downsampled=blocks.note("units", "steps"),
    )


def _listed(units: Sequence[int] | None) -> str:
    return ",".join(str(unit) for unit in units or ())


def _starts(size: int, most: int) -> tuple[int, ...]:
    """Block boundaries: one block per row up to `most` rows, else `most` blocks as even as can be."""
    count = min(size, most)
    return tuple(round(k * size / count) for k in range(count + 1)) if count else (0,)


def _block_means(matrix: np.ndarray, blocks: Blocks) -> np.ndarray:
    """The mean of each block's finite values (NaN where a block has none): masked steps stay masked."""
    if blocks.whole:
        return matrix
    rows, columns = blocks.row_starts, blocks.column_starts
    out = np.full((len(rows) - 1, len(columns) - 1), np.nan)
    with np.errstate(invalid="ignore"):
        for i, (r0, r1) in enumerate(itertools.pairwise(rows)):
            band = matrix[r0:r1]
            finite = np.isfinite(band)
            sums = np.add.reduceat(np.where(finite, band, 0.0).sum(axis=0), list(columns[:-1]))
            counts = np.add.reduceat(finite.sum(axis=0), list(columns[:-1]))
            out[i] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


# --- weights ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightMap:
    """One gate's kernel or recurrent kernel as (rows, units): input feature or previous-state unit × unit."""

    gate: str
    meaning: str
    array: str  # kernel, recurrent_kernel
    values: np.ndarray
    shape: tuple[int, int]  # before any averaging
    blocks: Blocks
    downsampled: str | None


def weight_maps(layer: RecurrentLayer) -> tuple[WeightMap, ...]:
    """Every gate's kernel and recurrent kernel of a dense recurrent layer (ConvLSTM: flattened window × channels rows)."""
    maps = []
    for gate, arrays in gate_arrays_by_gate(layer):
        for array in ("kernel", "recurrent_kernel"):
            values = np.asarray(arrays[array], np.float64)
            values = values.reshape(-1, values.shape[-1])  # a ConvLSTM window's cells and channels as rows
            blocks = Blocks(_starts(values.shape[0], MAX_WEIGHT_ROWS), _starts(values.shape[1], MAX_WEIGHT_UNITS))
            rows = "input features" if array == "kernel" else "previous-state units"
            maps.append(
                WeightMap(
                    gate,
                    gate_meaning(layer.kind, gate),
                    array,
                    _block_means(values, blocks),
                    (values.shape[0], values.shape[1]),
                    blocks,
                    blocks.note(rows, "units"),
                )
            )
    return tuple(maps)
