"""What `activations`, `probe` and `plot --trajectories` print and draw: tables, JSON (schemas in
docs/json.md) and PNGs.

May import: numpy, rich, matplotlib (on first use), commands/ (records), errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.table import Table
from rich.text import Text

from grucli.commands.activations import ActivationsReport
from grucli.commands.population import PopulationReport, Trajectories
from grucli.commands.probe import ProbeReport, ProbeResult
from grucli.errors import counted
from grucli.output.formats import write_atomic
from grucli.output.render import escaping, fitted, to_text

SCHEMA_VERSION = 1
STEP_ROWS = 12  # a per-step probe's table shows this many steps a state; --json has them all


# --- activations ----------------------------------------------------------------------------------------


@escaping
def render_activations(report: ActivationsReport, color: bool = False, width: int = 120) -> str:
    settings = report.settings
    head = Text()
    state = "complete" if report.complete else f"{report.rows_complete} of {settings.rows} rows complete"
    head.append(f"{report.store}", style="bold")
    head.append(f"  ({state}; {settings.dtype}, {settings.keras_definitions} definitions)")
    head.append(f"\n  model {settings.model['path']} ({settings.model['sha256'][:19]}…)")
    head.append(f"\n  data {settings.data['path']}: {settings.rows} rows, batches of {settings.batch_size}")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for column in ("layer", "kind", "arrays", "shape", "steps", "mask"):
        table.add_column(column, no_wrap=column != "arrays")
    for layer in settings.layers:
        shape = f"({settings.rows}, {layer.timesteps}, {', '.join(str(u) for u in layer.units)})"
        table.add_row(
            layer.path,
            layer.kind,
            ", ".join(layer.names),
            shape,
            "last → first" if layer.reversed else "first → last",
            layer.mask_path or "—",
        )
    rate = report.rows_per_second
    kept = f"; {counted(report.batches_kept, 'batch', 'batches')} kept from before" if report.batches_kept else ""
    tail = Text(
        f"{counted(report.batches_run, 'batch', 'batches')} of {settings.batch_size} rows in {report.seconds:.1f} s"
        f" ({rate:,.0f} rows/s) on {report.engine}{kept}",
        style="dim",
    )
    return to_text([head, fitted(table, width), tail], color, width)


def activations_json(report: ActivationsReport) -> str:
    document = {
        "schema_version": SCHEMA_VERSION,
        "store": report.store,
        "complete": report.complete,
        "rows_complete": report.rows_complete,
        "batches_run": report.batches_run,
        "batches_kept": report.batches_kept,
        "seconds": round(report.seconds, 3),
        "engine": report.engine,
        **report.settings.to_json(),
    }
    return json.dumps(document, indent=2, allow_nan=False)


# --- probe ------------------------------------------------------------------------------------------------


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _metric(report: ProbeReport) -> str:
    return "accuracy" if report.metric == "accuracy" else "R²"


@escaping
def render_probe(report: ProbeReport, color: bool = False, width: int = 120) -> str:
    head = Text()
    head.append(f"{report.store}", style="bold")
    head.append(f"  labels {report.labels} {report.label_shape}")
    model = "LogisticRegression" if report.task == "classification" else "Ridge"
    where = "one probe a step" if report.per_step else ("pooled over real steps" if len(report.label_shape) == 2 else "final states")
    head.append(f"\n  {report.task}: StandardScaler + {model}, {_metric(report)}, {report.folds}-fold by sequence (seed {report.seed})")
    control = "labels shuffled across sequences" + (" within each step" if len(report.label_shape) == 2 else "")
    if report.control == "type":
        control = "a random label for each input id"
    head.append(f"\n  probed at: {where}; control task: {control}")
    rows_note = f"\n  rows: {report.rows_used:,}"
    if report.subsampled:
        rows_note += f" sampled of {report.rows_available:,} (--max-rows)"
    if report.sequences_left_out:
        rows_note += f"; {counted(report.sequences_left_out, 'sequence')} with no real step left out"
    head.append(rows_note)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for column in ("layer", "state", "step", _metric(report), "± std", "control", "selectivity", "top units"):
        table.add_column(
            column, no_wrap=column != "top units", justify="right" if column in ("step", "± std", "control", "selectivity") else "left"
        )
    shown, stride = _shown(report.results)
    for result in shown:
        top = ", ".join(str(unit) for unit, _ in result.top_units) or (result.note or "—")
        table.add_row(
            result.layer,
            result.state,
            "—" if result.step is None else str(result.step),
            _score(result.score),
            _score(result.score_std),
            _score(result.control_score),
            _score(result.selectivity),
            top,
        )
    parts: list[Any] = [head, fitted(table, width)]
    if stride > 1:
        parts.append(Text(f"every {_ordinal(stride)} step shown, and the last; --json lists all {len(report.results)} probes", style="dim"))
    return to_text(parts, color, width)


def _ordinal(n: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _shown(results: Sequence[ProbeResult]) -> tuple[list[ProbeResult], int]:
    """Per-step results thinned to about STEP_ROWS steps a layer and state: every k-th step and the
    last; and k."""
    groups: dict[tuple[str, str], list[ProbeResult]] = {}
    for result in results:
        groups.setdefault((result.layer, result.state), []).append(result)
    longest = max((len(group) for group in groups.values()), default=0)
    stride = max(1, math.ceil(longest / STEP_ROWS))
    shown: list[ProbeResult] = []
    for group in groups.values():
        picks = sorted({*range(0, len(group), stride), len(group) - 1})
        shown += [group[pick] for pick in picks]
    return shown, stride


def probe_json(report: ProbeReport) -> str:
    document = {
        "schema_version": SCHEMA_VERSION,
        "store": report.store,
        "labels": report.labels,
        "label_shape": list(report.label_shape),
        "task": report.task,
        "metric": report.metric,
        "folds": report.folds,
        "seed": report.seed,
        "control": report.control,
        "per_step": report.per_step,
        "rows_available": report.rows_available,
        "rows_used": report.rows_used,
        "subsampled": report.subsampled,
        "sequences_left_out": report.sequences_left_out,
        "results": [
            {
                "layer": r.layer,
                "state": r.state,
                "step": r.step,
                "score": _finite(r.score),
                "score_std": _finite(r.score_std),
                "control_score": _finite(r.control_score),
                "control_std": _finite(r.control_std),
                "selectivity": _finite(r.selectivity),
                "top_units": [{"unit": unit, "weight": weight} for unit, weight in r.top_units],
                "rows": r.rows,
                "note": r.note,
            }
            for r in report.results
        ],
    }
    return json.dumps(document, indent=2, allow_nan=False)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def probe_figure(report: ProbeReport) -> Any:
    """Per-step probes: score and control score against the step, one panel per layer and state;
    final-state or pooled probes: score and control as bars."""
    plt = _pyplot()
    groups: dict[tuple[str, str], list[ProbeResult]] = {}
    for result in report.results:
        groups.setdefault((result.layer, result.state), []).append(result)
    metric = _metric(report)
    if report.per_step:
        figure, axes = plt.subplots(len(groups), 1, figsize=(8, 2.6 * len(groups) + 0.8), squeeze=False)
        for axis, ((layer, state), results) in zip(axes[:, 0], groups.items()):
            steps = [r.step for r in results]
            axis.plot(steps, [np.nan if r.score is None else r.score for r in results], label=f"{metric} (probe)", color="#1f77b4")
            axis.plot(
                steps,
                [np.nan if r.control_score is None else r.control_score for r in results],
                label="control task",
                color="#888888",
                linestyle="--",
            )
            axis.plot(
                steps,
                [np.nan if r.selectivity is None else r.selectivity for r in results],
                label="selectivity",
                color="#d62728",
                linewidth=0.9,
            )
            axis.set_title(f"{layer} · {state}", fontsize=9)
            axis.xaxis.get_major_locator().set_params(integer=True)
            axis.set_xlabel("step (time index)", fontsize=8)
            axis.set_ylabel(metric, fontsize=8)
            axis.axhline(0, color="black", linewidth=0.5)
            axis.legend(fontsize=7, loc="lower right")
    else:
        figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) + 2), 3.4))
        names = [f"{layer}\n{state}" for layer, state in groups]
        positions = np.arange(len(names))
        scores = [np.nan if g[0].score is None else g[0].score for g in groups.values()]
        controls = [np.nan if g[0].control_score is None else g[0].control_score for g in groups.values()]
        axis.bar(positions - 0.2, scores, 0.4, label=f"{metric} (probe)", color="#1f77b4")
        axis.bar(positions + 0.2, controls, 0.4, label="control task", color="#aaaaaa")
        axis.set_xticks(positions, names, fontsize=8)
        axis.set_ylabel(metric, fontsize=8)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.legend(fontsize=7)
    figure.suptitle(f"probe of {report.labels} on {report.store} ({report.folds}-fold by sequence, control: {report.control})", fontsize=9)
    figure.tight_layout()
    return figure


def write_probe_curves(report: ProbeReport, output: str | Path, force: bool = False, dpi: int = 110) -> None:
    figure = probe_figure(report)
    write_atomic(output, lambda handle: figure.savefig(handle, format="png", dpi=dpi), force)
    _pyplot().close(figure)


# --- trajectories and units ------------------------------------------------------------------------------


def trajectories_figure(report: PopulationReport) -> Any:
    """Left: the K sequences' paths in the first two principal components (a dot at the first
    step, a cross at the last; coloured by label where one label a sequence is given). Right: each
    unit's mean and saturation, and its correlation with the label."""
    plt = _pyplot()
    found = report.trajectories
    figure = plt.figure(figsize=(12, 5.2))
    grid = figure.add_gridspec(2, 2, width_ratios=[1.1, 1])
    _draw_paths(figure.add_subplot(grid[:, 0]), found)
    _draw_units(figure.add_subplot(grid[0, 1]), figure.add_subplot(grid[1, 1]), report)
    figure.suptitle(f"{report.store} · {report.layer}", fontsize=9)
    figure.tight_layout()
    return figure


def _draw_paths(axis: Any, found: Trajectories) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    labels = found.labels
    numeric = labels is not None and labels.dtype.kind in "biuf"
    low, high = (float(np.min(labels)), float(np.max(labels))) if numeric and labels is not None and len(labels) else (0.0, 1.0)
    for index, path in enumerate(found.points):
        real = ~np.isnan(path[:, 0])
        if not real.any():
            continue
        xy = path[real]
        if numeric and labels is not None:
            color = cmap((float(labels[index]) - low) / (high - low) if high > low else 0.5)
        else:
            color = cmap(index / max(1, len(found.points) - 1))
        axis.plot(xy[:, 0], xy[:, 1], color=color, linewidth=0.9, alpha=0.85)
        axis.plot(xy[0, 0], xy[0, 1], "o", color=color, markersize=3)
        axis.plot(xy[-1, 0], xy[-1, 1], "x", color=color, markersize=4)
    ratio = ", ".join(f"{v:.0%}" for v in found.explained_variance_ratio)
    axis.set_xlabel("PC 1", fontsize=8)
    axis.set_ylabel("PC 2", fontsize=8)
    what = "colour: label" if numeric else "colour: sequence"
    axis.set_title(
        f"{found.state} of {len(found.sequences)} sequences, first two principal components ({ratio} of the variance)\n"
        f"PCA of {found.fitted_steps:,} of {found.available_steps:,} real steps; {what}; o first step, x last",
        fontsize=8,
    )
    if numeric and high > low:
        mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(low, high), cmap=cmap)
        axis.figure.colorbar(mappable, ax=axis, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)


def _draw_units(top: Any, bottom: Any, report: PopulationReport) -> None:
    """Top: each unit's mean state (± std) and its correlation with the label. Bottom: the share of
    real steps each gate (and candidate) of the unit spends saturated."""
    stats = {s.state: s for s in report.units}
    state = stats.get(report.trajectories.state) or report.units[0]
    units = np.arange(len(state.mean))
    top.bar(units, state.mean, color="#1f77b4", label=f"mean {state.state} (± std)", width=0.8)
    top.errorbar(units, state.mean, yerr=state.std, fmt="none", ecolor="#999999", linewidth=0.6)
    if state.correlation is not None:
        top.plot(units, state.correlation, "D", color="#d62728", markersize=3, label="correlation with the label")
    top.axhline(0, color="black", linewidth=0.5)
    top.set_title(f"per unit over {state.steps:,} real steps", fontsize=8)
    top.legend(fontsize=7, loc="best")
    top.tick_params(labelsize=7)
    saturating = [s for s in report.units if s.saturation is not None]
    width = 0.8 / max(1, len(saturating))
    for index, s in enumerate(saturating):
        offsets = units - 0.4 + width * (index + 0.5)
        assert s.saturation is not None
        bottom.bar(offsets, s.saturation, width, label=f"{s.state} ({s.activation})")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("saturated share", fontsize=7)
    bottom.set_xlabel("unit", fontsize=8)
    bottom.tick_params(labelsize=7)
    if saturating:
        bottom.legend(fontsize=7, loc="upper right", ncols=len(saturating))
    else:
        bottom.text(0.5, 0.5, "no stored value is a bounded activation's output", ha="center", transform=bottom.transAxes, fontsize=8)


def write_trajectories(report: PopulationReport, output: str | Path, force: bool = False, dpi: int = 110) -> None:
    figure = trajectories_figure(report)
    write_atomic(output, lambda handle: figure.savefig(handle, format="png", dpi=dpi), force)
    _pyplot().close(figure)


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A figure as PNG bytes (the report page embeds them)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    _pyplot().close(figure)
    return buffer.getvalue()


def _pyplot() -> Any:
    from grucli.output.plot import _pyplot as pyplot

    return pyplot()


# --- the report page's section ------------------------------------------------------------------------------


def dataset_html(section: Any) -> str:
    """`report --activations`: the store, the probe's scores and curves, the trajectories and the
    per-unit views; each picture a PNG inline (data: URL), each missing part with its reason."""
    import base64
    import html

    def e(value: Any) -> str:
        return html.escape(str(value))

    def picture(figure_of: Any, record: Any, alt: str) -> str:
        from grucli.output.plot import PlotUnavailable

        try:
            png = figure_png(figure_of(record))
        except PlotUnavailable as exc:  # matplotlib is an optional extra: the page says so and keeps the tables
            return f'<p class="note">{e(alt)} not drawn: {e(exc)}</p>'
        return f'<img alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}" style="max-width:100%">'

    parts = [f'<section id="dataset"><h2>dataset dynamics <small>{e(section.store)}</small></h2>']
    parts.append(f"<p>{section.rows:,} sequences; layers {e(', '.join(section.layers))}</p>")
    parts.append("<h3>diagnostic classifiers</h3>")
    if section.probe is None:
        parts.append(f'<p class="note">{e(section.probe_missing)}</p>')
    else:
        report = section.probe
        metric = _metric(report)
        rows = "".join(
            f"<tr><td>{e(r.layer)}</td><td>{e(r.state)}</td><td>{'—' if r.step is None else r.step}</td><td>{_score(r.score)}</td>"
            f"<td>{_score(r.score_std)}</td><td>{_score(r.control_score)}</td><td>{_score(r.selectivity)}</td>"
            f"<td>{e(', '.join(str(u) for u, _ in r.top_units))}</td></tr>"
            for r in _shown(report.results)[0]
        )
        parts.append(
            f"<p>labels {e(report.labels)} {e(report.label_shape)}; {e(report.task)}, {report.folds}-fold by sequence, control: "
            f"{e(report.control)}; {report.rows_used:,} rows{' (sampled)' if report.subsampled else ''}</p>"
            f'<table class="grid"><tr><th>layer</th><th>state</th><th>step</th><th>{metric}</th><th>± std</th><th>control</th>'
            f"<th>selectivity</th><th>top units</th></tr>{rows}</table>"
        )
        parts.append(picture(probe_figure, report, "probe scores"))
    parts.append("<h3>states across the dataset</h3>")
    if section.population is None:
        parts.append(f'<p class="note">{e(section.population_missing)}</p>')
    else:
        parts.append(picture(trajectories_figure, section.population, "state trajectories and per-unit views"))
        parts.append(_units_table(section.population, e))
    parts.append("</section>\n")
    return "".join(parts)


def _units_table(report: PopulationReport, e: Any) -> str:
    """Per unit: mean ± std of each stored value, saturation where defined, correlation with the label."""
    stats = report.units
    units = len(stats[0].mean) if stats else 0
    shown = list(range(min(units, 64)))
    header = "".join(
        f"<th>{e(s.state)} mean ± std</th>"
        + ("<th>saturated</th>" if s.saturation is not None else "")
        + ("<th>r with label</th>" if s.correlation is not None else "")
        for s in stats
    )
    body = []
    for unit in shown:
        cells = []
        for s in stats:
            cells.append(f"<td>{s.mean[unit]:.3f} ± {s.std[unit]:.3f}</td>")
            if s.saturation is not None:
                cells.append(f"<td>{s.saturation[unit]:.0%}</td>")
            if s.correlation is not None:
                value = s.correlation[unit]
                cells.append(f"<td>{'—' if not np.isfinite(value) else f'{value:+.2f}'}</td>")
        body.append(f"<tr><td>{unit}</td>{''.join(cells)}</tr>")
    more = f'<p class="note">the first {len(shown)} of {units} units</p>' if units > len(shown) else ""
    return f'<table class="grid"><tr><th>unit</th>{header}</tr>{"".join(body)}</table>{more}'
