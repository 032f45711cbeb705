"""PNG figures of recurrent weights with matplotlib (an optional extra: `pip install 'grucli[plot]'`).

One row per gate of each layer: the kernel and the recurrent kernel as diverging heatmaps
(blue negative, red positive, one scale per layer: its 99th percentile of |w|), and a histogram
of the gate's weights and biases.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grucli.errors import GrucliError, install_hint
from grucli.model.gates import unit_columns
from grucli.output.formats import write_atomic

if TYPE_CHECKING:
    from grucli.commands.inspect import InspectReport, LayerReport


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
    figure, axes = plt.subplots(len(rows), 3, figsize=(13, 2.6 * len(rows) + 0.8), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1.6, 1.2]})
    scales = {id(layer): _scale(layer) for layer in report.layers}
    for (layer, gate), row in zip(rows, axes):
        scale = scales[id(layer)]
        arrays = {array.name: np.asarray(array.values, dtype=np.float64) for array in gate.arrays}
        title = f"{layer.layer.path} · {gate.gate} ({gate.meaning})"
        for axis, name, ylabel in ((row[0], "kernel", "input feature"), (row[1], "recurrent_kernel", "previous state unit")):
            image = _heatmap(axis, arrays[name], scale, f"{title} · {name}", ylabel)
        figure.colorbar(image, ax=row[1], fraction=0.046, pad=0.02)
        _histogram(row[2], arrays, f"{title} · weights")
    figure.suptitle(f"{report.path} ({report.format}, Keras {report.keras_version or '?'})", fontsize=11)
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
