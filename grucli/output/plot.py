"""PNG figures with matplotlib (an optional extra: `pip install 'grucli[plot]'`).

Weights: one row per gate of each layer, the kernel and the recurrent kernel as diverging heatmaps
(blue negative, red positive, one scale per layer: its 99th percentile of |w|), and a histogram
of the gate's weights and biases. Activations (`--activations`): per layer, its input and every
gate and state over time, from the replay's trace (commands/pictures.py).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grucli.errors import GrucliError, install_hint
from grucli.model.gates import unit_columns
from grucli.output.formats import write_atomic

if TYPE_CHECKING:
    from grucli.commands.inspect import InspectReport, LayerReport
    from grucli.commands.pictures import ActivityReport, LayerActivity


class PlotUnavailable(GrucliError):
    """matplotlib is not installed."""


def write_plot(report: InspectReport, output: str | Path, force: bool = False, dpi: int = 110) -> int:
    """Draw every layer and gate of `report` (built with values) into one PNG; returns the row count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(f"grucli plot needs matplotlib, an optional extra; install it with: {install_hint('plot')}") from None
    rows = [(layer, gate) for layer in report.layers for gate in layer.gates]
    if not rows:
        raise GrucliError("nothing to plot: no recurrent layer or gate selected")
    figure, axes = plt.subplots(
        len(rows), 3, figsize=(13, 2.6 * len(rows) + 0.8), squeeze=False, gridspec_kw={"width_ratios": [1, 1.6, 1.2]}
    )
    scales = {id(layer): _scale(layer) for layer in report.layers}
    for (layer, gate), row in zip(rows, axes):
        scale = scales[id(layer)]
        arrays = {array.name: np.asarray(array.values, dtype=np.float64) for array in gate.arrays}
        title = f"{layer.layer.path} · {gate.gate} ({gate.meaning})"
        # The input weights, then the recurrent ones: Keras's kernel and recurrent_kernel, PyTorch's
        # weight_ih and weight_hh, ONNX's W and R, as the report names them.
        matrices = [name for name, values in arrays.items() if values.ndim >= 2][:2]
        for axis, name, ylabel in zip(row[:2], matrices, ("input feature", "previous state unit")):
            image = _heatmap(axis, arrays[name], scale, f"{title} · {name}", ylabel)
        figure.colorbar(image, ax=row[1], fraction=0.046, pad=0.02)
        _histogram(row[2], arrays, f"{title} · weights")
    saver = f"Keras {report.keras_version}" if report.keras_version else "Keras version not recorded"
    figure.suptitle(f"{report.path} ({report.format}, {saver})", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    write_atomic(output, lambda handle: figure.savefig(handle, format="png", dpi=dpi), force)
    plt.close(figure)
    return len(rows)


def _scale(layer: LayerReport) -> float:
    values = [np.abs(np.asarray(a.values, np.float64)).ravel() for g in layer.gates for a in g.arrays if a.values is not None]
    pooled = np.concatenate(values) if values else np.array([1.0])
    pooled = pooled[np.isfinite(pooled)]
    return float(np.percentile(pooled, 99)) if pooled.size and np.percentile(pooled, 99) > 0 else 1.0


def _heatmap(axis: Any, values: np.ndarray, scale: float, title: str, ylabel: str) -> Any:
    matrix = unit_columns(values)
    image = axis.imshow(matrix, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest")
    axis.set_title(title, fontsize=8)
    axis.set_xlabel("unit", fontsize=8)
    axis.set_ylabel(ylabel, fontsize=8)
    axis.tick_params(labelsize=7)
    if matrix.shape[0] <= 10:
        axis.set_yticks(range(matrix.shape[0]))
    else:
        from matplotlib.ticker import MaxNLocator

        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    return image


def _histogram(axis: Any, arrays: dict[str, np.ndarray], title: str) -> None:
    for name, values in arrays.items():
        finite = values[np.isfinite(values)].ravel()
        if finite.size:
            # Densities, so 64 biases show beside 4096 recurrent weights.
            axis.hist(finite, bins=40, alpha=0.55, density=True, label=f"{name} ({finite.size})")
    axis.set_title(title, fontsize=8)
    axis.set_ylabel("density", fontsize=8)
    axis.legend(fontsize=7)
    axis.tick_params(labelsize=7)


# --- activations over time (plot --activations) --------------------------------------------------------


def activity_figure(report: ActivityReport) -> Any:
    """One column of heatmaps per layer: the layer's input, then each gate and state after its
    activation (units × steps, in the order the layer consumes them), each with its own colour
    scale and range; masked steps grey. Returns the matplotlib Figure (the caller saves or closes it)."""
    plt = _pyplot()
    rows = max(1 + len(layer.quantities) for layer in report.layers)
    figure, axes = plt.subplots(
        rows, len(report.layers), figsize=(max(8.0, 6.5 * len(report.layers)), 1.9 * rows + 1.1), squeeze=False, sharex="col"
    )
    for column, layer in enumerate(report.layers):
        order = "last → first (backward)" if layer.backwards else "first → last"
        _activity_map(figure, axes[0, column], layer.inputs, f"{layer.path} · x (input) · steps {order}", "feature", layer, "RdBu_r")
        for row, quantity in enumerate(layer.quantities, start=1):
            title = f"{layer.path} · {quantity.name} ({quantity.meaning}) · range [{quantity.low:.3g}, {quantity.high:.3g}]"
            _activity_map(figure, axes[row, column], quantity.values, title, "unit", layer, "viridis", (quantity.low, quantity.high))
        for row in range(1 + len(layer.quantities), rows):
            axes[row, column].axis("off")
        axes[len(layer.quantities), column].set_xlabel("step (time index)", fontsize=8)
    notes = sorted({layer.downsampled for layer in report.layers if layer.downsampled})
    subtitle = f"{report.path} · sample {report.layers[0].sample} of {report.input_description} · grey: masked steps"
    width = int(16 * figure.get_figwidth())  # characters that fit across at this size
    figure.suptitle("\n".join(textwrap.wrap(subtitle + ("; " + "; ".join(notes) if notes else ""), width)), fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    return figure


def write_activity_plot(report: ActivityReport, output: str | Path, force: bool = False, dpi: int = 110) -> int:
    """Draw `report` into one PNG; returns the number of heatmaps."""
    figure = activity_figure(report)
    write_atomic(output, lambda handle: figure.savefig(handle, format="png", dpi=dpi), force)
    _pyplot().close(figure)
    return sum(1 + len(layer.quantities) for layer in report.layers)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(f"grucli plot needs matplotlib, an optional extra; install it with: {install_hint('plot')}") from None
    return plt


def _activity_map(
    figure: Any,
    axis: Any,
    values: np.ndarray,
    title: str,
    ylabel: str,
    layer: LayerActivity,
    cmap_name: str,
    limits: tuple[float, float] | None = None,
) -> None:
    import matplotlib

    cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="#c8c8c8")  # NaN: a masked step
    if limits is None:  # the input: a diverging scale around zero
        finite = values[np.isfinite(values)]
        bound = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        limits = (-bound, bound)
    low, high = limits if limits[1] > limits[0] else (limits[0] - 0.5, limits[0] + 0.5)
    image = axis.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=low, vmax=high, aspect="auto", interpolation="nearest")
    axis.set_title(title, fontsize=8)
    axis.set_ylabel(ylabel, fontsize=8)
    axis.tick_params(labelsize=7)
    starts = layer.blocks.column_starts
    ticks = np.unique(np.linspace(0, values.shape[1] - 1, min(values.shape[1], 8)).round().astype(int))
    axis.set_xticks(ticks)
    axis.set_xticklabels([str(layer.steps[starts[k]]) for k in ticks])
    # rows: unit numbers (the first of each block), or the input's features
    row_ids = layer.units if ylabel == "unit" else tuple(range(layer.feature_starts[-1]))
    row_starts = layer.blocks.row_starts if ylabel == "unit" else layer.feature_starts
    rows = np.arange(values.shape[0]) if values.shape[0] <= 16 else np.unique(np.linspace(0, values.shape[0] - 1, 8).round().astype(int))
    axis.set_yticks(rows)
    axis.set_yticklabels([str(row_ids[row_starts[k]]) for k in rows])
    figure.colorbar(image, ax=axis, fraction=0.04, pad=0.01)
