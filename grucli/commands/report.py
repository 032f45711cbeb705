"""`report`: everything grucli knows about a model file, as one record the HTML page is drawn from.

The file's format and Keras version; per recurrent layer its settings, its exact equations, its
weights per gate and, given an input, its gates and states over time (pictures.py, one replay);
verify's result against Keras's predict where Keras is installed; check's findings. What could not
be computed is kept with its reason (a model grucli cannot replay still gets its weights).

May import: numpy, engine/, frameworks/ (through verify), files/, model/, errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from grucli.commands.check import CheckReport
from grucli.commands.pictures import (
    ActivityReport,
    LayerActivity,
    WeightMap,
    weight_maps,
)
from grucli.commands.population import PopulationReport
from grucli.commands.probe import ProbeReport
from grucli.commands.verify_report import VerifyReport
from grucli.model.equations import Equations, layer_equations
from grucli.model.records import ModelFile, ModelLayers, RecurrentLayer
from grucli.model.semantics import semantics_for


@dataclass(frozen=True)
class LayerSection:
    path: str
    kind: str
    units: int
    input_dim: int
    settings: tuple[tuple[str, str], ...]  # (name, value) in the order a reader checks them
    equations: Equations
    weights: tuple[WeightMap, ...]
    activity: LayerActivity | None


@dataclass(frozen=True)
class DatasetSection:
    """`report --activations ACTS`: the stored dataset's dynamics, each part with why it is missing."""

    store: str
    rows: int
    layers: tuple[str, ...]
    population: PopulationReport | None
    population_missing: str | None
    probe: ProbeReport | None
    probe_missing: str | None


@dataclass(frozen=True)
class ModelReport:
    path: str
    format: str
    keras_version: str | None
    semantics: str
    layers: tuple[LayerSection, ...]
    input_description: str | None
    activities_missing: str | None  # why there are no activations (no --input asked, cannot replay, ...)
    verify: VerifyReport | None
    verify_missing: str | None
    check: CheckReport
    dataset: DatasetSection | None = None


def layer_settings(layer: RecurrentLayer) -> tuple[tuple[str, str], ...]:
    settings = layer.settings
    rows = [
        ("kind", layer.kind),
        ("units", str(layer.units)),
        ("input features", str(layer.input_dim)),
        ("activation", str(settings.activation)),
    ]
    if layer.family.uses_recurrent_activation:
        rows.append(("recurrent_activation", str(settings.recurrent_activation)))
    if settings.reset_after is not None:
        rows.append(("reset_after", str(settings.reset_after)))
    rows += [
        ("use_bias", str(settings.use_bias)),
        ("return_sequences", str(settings.return_sequences)),
        ("return_state", str(settings.return_state)),
        ("go_backwards", str(settings.go_backwards)),
        ("stateful", str(settings.stateful)),
    ]
    return tuple(rows)


def layer_summaries(found: ModelLayers) -> tuple[LayerSection, ...]:
    """Each recurrent layer's settings and equations, without its weight maps (a notebook's summary)."""
    semantics = semantics_for(found.file.keras_version, found.file.format)
    return tuple(
        LayerSection(
            layer.path, layer.kind, layer.units, layer.input_dim, layer_settings(layer), layer_equations(layer, semantics), (), None
        )
        for layer in found.recurrent
    )


def build_report(
    found: ModelLayers,
    activities: ActivityReport | None,
    activities_missing: str | None,
    verify: VerifyReport | None,
    verify_missing: str | None,
    check: CheckReport,
    input_description: str | None,
    dataset: DatasetSection | None = None,
) -> ModelReport:
    model_file: ModelFile = found.file
    semantics = semantics_for(model_file.keras_version, model_file.format)
    by_path = {activity.path: activity for activity in activities.layers} if activities is not None else {}
    sections = tuple(
        LayerSection(
            layer.path,
            layer.kind,
            layer.units,
            layer.input_dim,
            layer_settings(layer),
            layer_equations(layer, semantics),
            weight_maps(layer),
            by_path.get(layer.path),
        )
        for layer in found.recurrent
    )
    return ModelReport(
        str(model_file.path),
        model_file.format,
        model_file.keras_version,
        semantics,
        sections,
        input_description,
        activities_missing,
        verify,
        verify_missing,
        check,
        dataset,
    )
