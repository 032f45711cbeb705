"""inspect --heatmap: each gate's matrices as colour heatmaps in the terminal (blocks of a large
matrix shown by their peak).

May import: rich, numpy, output/render (the shared drawing), commands/ records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from rich.console import RenderableType
from rich.text import Text

from grucli.errors import counted
from grucli.model.gates import unit_columns

if TYPE_CHECKING:
    from grucli.commands.inspect import ArrayReport, InspectReport

from grucli.output.render import escaping, file_header, heading, to_text

# --- heatmaps ----------------------------------------------------------------------------------------

HEATMAP_MAX = 64  # cells per side; larger matrices are shown by the peak of each block
NO_COLOR_RAMP = ("#", "=", "-", "·", "+", "*", "@")  # strong negative … strong positive


@escaping
def render_heatmaps(report: InspectReport, color: bool = True, width: int = 120) -> str:
    """Each gate's matrices as a diverging heatmap (blue negative, white zero, red positive).

    One colour scale per layer, its 99th percentile of |w| (larger values show at full colour),
    so gates of a layer compare at a glance and a few outliers do not wash the rest out.
    """
    parts: list[RenderableType] = [file_header(report)]
    for layer_report in report.layers:
        layer = layer_report.layer
        arrays = [a for gate in layer_report.gates for a in gate.arrays if a.values is not None]
        scale = _scale(arrays)
        about = f"  {layer.class_name}  ·  {counted(layer.units, 'unit')}  ·  colour scale ±{scale:.3g} (99th percentile of |w|)"
        parts.append(heading(layer.path, about, width))
        parts.append(_legend(scale, color))
        for gate in layer_report.gates:
            ordered = sorted(gate.arrays, key=lambda a: ARRAY_ORDER.index(a.name))
            parts.extend(
                _heatmap(f"{gate.gate} ({gate.meaning}) · {array.name}", array, scale, color, width)
                for array in ordered
                if array.values is not None
            )
    return to_text(parts, color, width)


ARRAY_ORDER = ("kernel", "recurrent_kernel", "bias", "recurrent_bias")


def _scale(arrays: Sequence[ArrayReport]) -> float:
    magnitudes = [np.abs(a.values[np.isfinite(a.values)]).ravel() for a in arrays if a.values is not None]
    pooled = np.concatenate(magnitudes) if magnitudes else np.array([])
    return float(np.percentile(pooled, 99)) if pooled.size and np.percentile(pooled, 99) > 0 else 1.0


def _legend(scale: float, color: bool) -> Text:
    text = Text("legend: ")
    for level in np.linspace(-1, 1, 7):
        text.append_text(_cell(level * scale, scale, color, 2))
        text.append(f" {level * scale:+.2g}  ")
    return text


def _heatmap(title: str, array: ArrayReport, scale: float, color: bool, width: int) -> RenderableType:
    assert array.values is not None
    values = unit_columns(np.asarray(array.values, dtype=np.float64))
    prefix = {"kernel": "x", "recurrent_kernel": "h"}.get(array.name, "b")
    label_width = max(len(f"{prefix}{values.shape[0] - 1}"), 3) + 1
    max_columns = min(HEATMAP_MAX, width - label_width - 1)
    rows, row_step = _blocks(values.shape[0], HEATMAP_MAX)
    columns, column_step = _blocks(values.shape[1], max_columns)
    # Two characters make a square cell; one where two would not fit.
    cell_width = 2 if 2 * len(columns) <= width - label_width - 1 else 1
    block = _block_peaks(values, rows, columns)
    text = Text(title, style="bold")
    if row_step > 1 or column_step > 1:
        text.append(f"  ({values.shape[0]}×{values.shape[1]} shown as {len(rows)}×{len(columns)} block peaks)", style="dim")
    text.append("\n" + " " * label_width + _column_labels(columns, cell_width), style="dim")
    for r, start in enumerate(rows):
        text.append(f"\n{prefix}{start}".ljust(label_width + 1), style="dim")
        for c in range(len(columns)):
            text.append_text(_cell(block[r, c], scale, color, cell_width))
    return text


def _column_labels(columns: list[int], cell_width: int) -> str:
    """`u0`, `u10`, ... over every tenth cell (every fifth for wide cells), free to run on."""
    every = 5 if cell_width == 2 else 10
    line = [" "] * (cell_width * len(columns) + 6)
    for index in range(0, len(columns), every):
        label = f"u{columns[index]}"
        line[cell_width * index : cell_width * index + len(label)] = label
    return "".join(line).rstrip()


def _blocks(size: int, limit: int) -> tuple[list[int], int]:
    step = int(np.ceil(size / limit)) if size > limit else 1
    return list(range(0, size, step)), step


def _block_peaks(values: np.ndarray, rows: list[int], columns: list[int]) -> np.ndarray:
    """Each block's value of largest magnitude, sign kept: averages would wash weights out."""
    row_edges = [*rows, values.shape[0]]
    column_edges = [*columns, values.shape[1]]
    out = np.empty((len(rows), len(columns)))
    for i in range(len(rows)):
        for j in range(len(columns)):
            block = values[row_edges[i] : row_edges[i + 1], column_edges[j] : column_edges[j + 1]].ravel()
            if not np.all(np.isfinite(block)):
                out[i, j] = np.nan
            else:
                out[i, j] = block[np.argmax(np.abs(block))]
    return out


def _cell(value: float, scale: float, color: bool, width: int) -> Text:
    if not np.isfinite(value):
        return Text("!" * width, style="bold yellow on black" if color else "")
    level = float(np.clip(value / scale, -1, 1))
    if not color:
        return Text(NO_COLOR_RAMP[round((level + 1) / 2 * (len(NO_COLOR_RAMP) - 1))] * width)
    # Diverging: white at zero, towards blue (negative) or red (positive).
    fade = round(255 * (1 - abs(level)))
    red, green, blue = (255, fade, fade) if level > 0 else (fade, fade, 255)
    return Text(" " * width, style=f"on rgb({red},{green},{blue})")
