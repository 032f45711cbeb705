"""The facts `inspect` reports, as frozen records that the JSON and Rich formatters both read.

Selection happens here (`--layer`, `--gate`, `--unit`), so every output format shows the same
thing and the formatters only format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grucli.errors import SelectionError
from grucli.model import gates
from grucli.model.equations import DEFINITIONS, Equations, layer_equations
from grucli.model.layers import select_layers
from grucli.model.records import ModelLayers, OtherLayer, RecurrentLayer
from grucli.model.semantics import Semantics, semantics_for
from grucli.model.sources import SourceWeights, correspondence, gate_blocks, source_equations, source_layout_lines
from grucli.model.stats import ArrayStats, array_stats


@dataclass(frozen=True)
class ArrayReport:
    name: str
    shape: tuple[int, ...]
    stats: ArrayStats
    values: np.ndarray | None


@dataclass(frozen=True)
class GateReport:
    gate: str
    meaning: str
    arrays: tuple[ArrayReport, ...]


@dataclass(frozen=True)
class LayerReport:
    layer: RecurrentLayer
    gates: tuple[GateReport, ...]
    unit: int | None
    layout: tuple[str, ...]
    equations: Equations


@dataclass(frozen=True)
class InspectReport:
    path: str
    format: str
    keras_version: str | None
    backend: str | None
    has_config: bool
    layers: tuple[LayerReport, ...]
    others: tuple[OtherLayer, ...]
    with_values: bool
    config_path: str | None = None  # the architecture, when given apart from a weights-only file (--config)
    saved_by: str = "an unrecorded Keras version"  # ModelFile.saved_by: the version, and where it was read
    version_source: str = "file"  # where keras_version was read: the file, or the --config JSON ("config")
    notes: tuple[str, ...] = ()  # how the file was written, where a reader should know


def build_inspect_report(
    model: ModelLayers,
    layer_paths: Sequence[str] = (),
    gate_filter: Sequence[str] = (),
    unit: int | None = None,
    with_values: bool = False,
) -> InspectReport:
    layers = select_layers(model.recurrent, layer_paths)
    _check_gates(layers, gate_filter)
    _check_unit(layers, unit)
    file = model.file
    semantics = semantics_for(file.keras_version, file.format)
    reports = tuple(_layer_report(layer, gate_filter, unit, with_values, semantics) for layer in layers)
    return InspectReport(
        path=file.path,
        format=file.format,
        keras_version=file.keras_version,
        backend=file.backend,
        has_config=file.has_config,
        layers=reports,
        others=model.others if not layer_paths else (),
        with_values=with_values,
        config_path=file.config_path,
        saved_by=file.saved_by,
        version_source=file.version_source,
        notes=file.notes,
    )


def _check_gates(layers: Sequence[RecurrentLayer], gate_filter: Sequence[str]) -> None:
    # A layer read from PyTorch or ONNX names its gates in that framework's letters (nn.GRU: r, z, n).
    known = {gate for layer in layers for gate in (layer.source.letters if layer.source else gates.gate_names(layer.kind))}
    for gate in gate_filter:
        if gate not in known:
            raise SelectionError(f"no gate {gate!r} in the selected layers; expected one of: {', '.join(sorted(known)) or 'none'}")


def _check_unit(layers: Sequence[RecurrentLayer], unit: int | None) -> None:
    if unit is None:
        return
    if unit < 0:
        raise SelectionError(f"--unit {unit} is negative; expected a unit index from 0")
    if layers and not any(unit < layer.units for layer in layers):
        widest = max(layer.units for layer in layers)
        raise SelectionError(f"--unit {unit} is out of range; the selected layers have at most {widest} units (0-{widest - 1})")


def _layer_report(
    layer: RecurrentLayer, gate_filter: Sequence[str], unit: int | None, with_values: bool, semantics: Semantics
) -> LayerReport:
    if layer.source is not None:
        return _source_layer_report(layer, layer.source, gate_filter, unit, with_values)
    shown_unit = unit if unit is not None and unit < layer.units else None
    gate_reports = []
    if unit is None or shown_unit is not None:
        # Without values, statistics stream over the file: no gate block is held in memory.
        streamed = gates.gate_stats(layer) if shown_unit is None and not with_values else {}
        for gate in gates.gate_names(layer.kind):
            if gate_filter and gate not in gate_filter:
                continue
            # One unit's weights are a few short vectors: always shown, --values or not.
            arrays = tuple(
                _array_report(layer, gate, name, shown_unit, with_values or shown_unit is not None, streamed.get((gate, name)))
                for name in gates.gate_array_names(layer)
            )
            gate_reports.append(GateReport(gate, gates.gate_meaning(layer.kind, gate), arrays))
    return LayerReport(
        layer=layer,
        gates=tuple(gate_reports),
        unit=shown_unit,
        layout=tuple(gates.describe_layout(layer)),
        equations=layer_equations(layer, semantics),
    )


def _source_layer_report(
    layer: RecurrentLayer, source: SourceWeights, gate_filter: Sequence[str], unit: int | None, with_values: bool
) -> LayerReport:
    """A layer read from PyTorch or ONNX, in that framework's gate order, letters, array names and
    equations, and what each is in Keras."""
    shown_unit = unit if unit is not None and unit < layer.units else None
    family = layer.family
    gate_reports = []
    if unit is None or shown_unit is not None:
        for letter, keras_gate in zip(source.letters, source.keras_gates):
            if gate_filter and letter not in gate_filter:
                continue
            arrays = tuple(
                ArrayReport(name, tuple(values.shape), array_stats(values), values if with_values or shown_unit is not None else None)
                for name, values in gate_blocks(source, letter, shown_unit)
            )
            gate_reports.append(GateReport(letter, f"{family.meaning(keras_gate)}, Keras {keras_gate}", arrays))
    definitions = tuple(
        DEFINITIONS[name] for name in ("sigmoid", "tanh", "relu") if any(name in line.lower() for line in source_equations(source, family))
    )
    equations = Equations(source_equations(source, family), definitions, correspondence(source, family, layer.settings.reset_after))
    return LayerReport(layer, tuple(gate_reports), shown_unit, source_layout_lines(source, family, layer.units), equations)


def _array_report(
    layer: RecurrentLayer, gate: str, name: str, unit: int | None, with_values: bool, stats: ArrayStats | None
) -> ArrayReport:
    if stats is not None:
        shape = _gate_shape(layer, name)
        return ArrayReport(name, shape, stats, None)
    # A unit's weights are its column: the last axis of every gate slice.
    values = gates.gate_array(layer, gate, name, unit)
    return ArrayReport(name, tuple(values.shape), array_stats(values), values if with_values else None)


def _gate_shape(layer: RecurrentLayer, name: str) -> tuple[int, ...]:
    if name == "kernel":
        return (*layer.kernel.shape[:-1], layer.units)
    if name == "recurrent_kernel":
        return (*layer.recurrent_kernel.shape[:-1], layer.units)
    return (layer.units,)
