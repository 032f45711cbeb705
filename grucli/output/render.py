"""Rich text for people: inspect, verify, diff and check reports as labelled tables, and the drawing
the other renderers share (fitting tables to the width, hanging indents, escaping names from files).

Formatters return strings; the CLI decides where they go and whether colour is on.

May import: rich, numpy, commands/ records (only output/ imports Rich).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from grucli.errors import counted, printable
from grucli.model.records import OtherLayer

if TYPE_CHECKING:
    from grucli.commands.check import CheckReport
    from grucli.commands.diff import DiffReport
    from grucli.commands.inspect import ArrayReport, InspectReport, LayerReport
    from grucli.model.equations import Equations

FORMAT_NAMES = {
    "keras-v3": "Keras 3 .keras zip",
    "keras-v3-weights": "Keras 3 weights-only .weights.h5 (no config)",
    "legacy-h5": "legacy HDF5 full model",
    "legacy-h5-weights": "legacy HDF5 save_weights file (no config)",
    "tf-checkpoint": "TensorFlow checkpoint (no config)",
    "tf-savedmodel": "TensorFlow SavedModel folder (keras_metadata.pb + variables/)",
    "tf-savedmodel-weights": "TensorFlow SavedModel variables (no Keras metadata: no config)",
    "pytorch": "PyTorch state_dict (torch.save zip; weights only)",
    "safetensors": "safetensors state_dict (weights only)",
    "onnx": "ONNX graph (its recurrent nodes' weights)",
}
# Formats of other frameworks: no Keras saved them, so no Keras version is missing.
FOREIGN_FORMATS = frozenset({"pytorch", "safetensors", "onnx"})
# Matrices larger than this are elided to their corners; --json --values has every number.
MAX_ROWS = 12
MAX_COLUMNS = 10
CORNER = 4


R = TypeVar("R")


def escaping(render: Callable[..., R]) -> Callable[..., R]:
    """A formatter that prints its report with every string escaped (`errors.printable`): names,
    paths and messages from files never reach the terminal as control characters."""

    @functools.wraps(render)
    def escaped_render(report: Any, *args: Any, **kwargs: Any) -> R:
        return render(_escaped(report), *args, **kwargs)

    return escaped_render


def _escaped(value: Any) -> Any:
    """A copy of a report whose strings are printable; numbers and arrays untouched."""
    if isinstance(value, str):
        return printable(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {field.name: _escaped(getattr(value, field.name)) for field in dataclasses.fields(value) if field.init}
        return dataclasses.replace(value, **{name: new for name, new in changes.items() if new is not getattr(value, name)})
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        items = tuple(_escaped(item) for item in value)
        return value if all(a is b for a, b in zip(items, value)) else items
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    if isinstance(value, Mapping):
        return {_escaped(key): _escaped(item) for key, item in value.items()}
    return value


def to_text(renderables: Iterable[RenderableType], color: bool, width: int) -> str:
    buffer = io.StringIO()
    # Heatmap gradients need more than 16 colours; every current terminal has 256.
    truecolor = os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit")
    # No markup or emoji codes in plain strings: layer names come from the file, and Keras allows
    # "enc[red]:smile:", which Rich would print as "enc😄" (or refuse, for a "[/x]").
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        color_system=("truecolor" if truecolor else "256") if color else None,
        width=width,
        highlight=False,
        soft_wrap=False,
        emoji=False,
        markup=False,
    )
    for renderable in renderables:
        console.print(_hung(renderable, width))
    return buffer.getvalue()


def _hung(renderable: RenderableType, width: int) -> RenderableType:
    """Text lines longer than `width` wrapped between words with a hanging indent (Rich would
    continue them at column 0, splitting a label from its line); tables are laid out by Rich."""
    if isinstance(renderable, Text):
        lines = renderable.split("\n", allow_blank=True)
        if all(cell_len(line.plain) <= width for line in lines):
            return renderable
        return Text("\n").join(_hanging(line, width) for line in lines)
    if isinstance(renderable, Group):
        return Group(*(_hung(inner, width) for inner in renderable.renderables))
    return renderable


def _hanging(line: Text, width: int, extra: int = 4) -> Text:
    """One line broken at spaces to fit `width`; continuation lines indented `extra` more than the
    line's own indent (a word longer than the room left is cut where the room ends)."""
    plain = line.plain
    if cell_len(plain) <= width:
        return line
    indent = min(len(plain) - len(plain.lstrip(" ")) + extra, width // 2)
    cuts, resume, start, room = [], [], 0, width
    while cell_len(plain[start:]) > room:
        cut = plain.rfind(" ", start + 1, start + room + 1)
        cut = cut if cut > start else start + room
        cuts.append(cut)
        start = cut + 1 if plain[cut : cut + 1] == " " else cut
        resume.append(start)
        room = width - indent
    pieces = line.divide(sorted({*cuts, *resume}))
    out = Text()
    out.append_text(pieces[0])
    for piece in pieces[1:]:
        if not piece.plain.strip(" ") and piece.plain:  # the space a line was broken at
            continue
        out.append("\n" + " " * indent)
        out.append_text(piece)
    return out


def fitted(table: Table, width: int) -> RenderableType:
    """`table` when it fits `width`; otherwise the same cells as one record per row ("header value,
    ..."), laid out between values with continuation lines indented under the row's first value,
    so no label or value is ever cut. The title stays above either."""
    console = Console(width=100_000, file=io.StringIO(), emoji=False, markup=False)
    if console.measure(table).maximum <= width:
        return table
    headers = [str(column.header) for column in table.columns]
    cells = [list(column.cells) for column in table.columns]
    records = Text()
    if table.title:
        records.append(str(table.title), style="italic")
    for row in range(table.row_count):
        values = [cells[column][row] for column in range(len(headers))]
        first = values[0] if isinstance(values[0], Text) else Text(str(values[0]))
        first = first.copy()
        first.stylize("bold")
        pieces = [first]
        for header, value in zip(headers[1:], values[1:]):
            text = value if isinstance(value, Text) else Text(str(value))
            if not text.plain.strip():
                continue
            piece = Text(f"{header}: ", style="dim")
            piece.append_text(text.copy())
            pieces.append(piece)
        records.append("\n")
        records.append_text(packed(pieces, width, separator="  ", indent="    "))
    return records


def packed(pieces: Sequence[Text], width: int, separator: str = "  ·  ", indent: str = "  ", lead: str = "") -> Text:
    """`pieces` on as few lines as `width` allows, broken only between pieces: the first line starts
    with `lead`, each continuation line with `indent` (never at column 0 inside a record)."""
    line = Text(lead)
    for index, piece in enumerate(pieces):
        if index and cell_len(line.plain.rsplit("\n", 1)[-1]) + len(separator) + cell_len(piece.plain) > width:
            line.append("\n" + indent)
        elif index:
            line.append(separator)
        line.append_text(piece)
    return line


@escaping
def render_inspect(report: InspectReport, color: bool = False, width: int = 120) -> str:
    parts: list[RenderableType] = [file_header(report)]
    if not report.layers:
        parts.append(Text("No recurrent layers (GRU, LSTM, SimpleRNN, ConvLSTM) found in this file.", style="yellow"))
    parts.extend(_layer_panel(layer, report.with_values, width) for layer in report.layers)
    if report.others:
        parts.append(_others_table(report.others, width))
    return to_text(parts, color, width)


def file_header(report: InspectReport) -> Text:
    text = Text()
    text.append(report.path, style="bold")
    text.append("\n  format: ")
    text.append(
        FORMAT_NAMES.get(report.format, report.format)
        if report.config_path is None
        else f"{FORMAT_NAMES.get(report.format + '-weights', report.format).removesuffix(' (no config)')} "
        f"+ architecture from --config {report.config_path}"
    )
    if report.format not in FOREIGN_FORMATS:
        text.append(f"  ·  saved by {report.saved_by}" if report.keras_version else "  ·  Keras version: not recorded")
    if report.backend:
        text.append(f"  ·  backend: {report.backend}")
    for note in report.notes:
        text.append(f"\n  note: {note}", style="yellow")
    text.append(f"\n  recurrent layers: {len(report.layers)}")
    return text


def _layer_panel(report: LayerReport, with_values: bool, width: int) -> Group:
    layer = report.layer
    about = f"  {layer.class_name}  ·  {counted(layer.units, 'unit')}  ·  input_dim {layer.input_dim}"
    if report.unit is not None:
        about += f"  ·  unit {report.unit}"
    body: list[RenderableType] = [heading(layer.path, about, width), _config_text(report), _weights_text(report)]
    body.append(Text("\n".join(f"• {line}" for line in report.layout), style="dim"))
    body.append(equations_text(report.equations))
    if report.unit is not None and report.gates:
        # One unit's weights are short vectors: the numbers say more than statistics of them.
        body.extend(_unit_values(report))
    elif report.gates:
        body.extend(_stats_tables(report, width))
        if with_values:
            body.extend(_matrix_values(report, width))
    elif report.unit is None:
        body.append(Text("no gate selected in this layer", style="yellow"))
    else:
        body.append(Text(f"this layer has {counted(layer.units, 'unit')}; the selected unit is not among them", style="yellow"))
    body.append(Text(""))
    return Group(*body)


def heading(path: str, about: str, width: int) -> RenderableType:
    """A layer's title, its path in bold, as a rule across the width, or as wrapped text where a
    rule would cut it."""
    text = Text.assemble((path, "bold"), about)
    return Rule(text, align="left") if text.cell_len + 4 <= width else text


def equations_text(equations: Equations) -> Text:
    """Each timestep's equations, exact for this layer, with the activations' definitions."""
    text = Text("equations, each timestep:", style="bold")
    for line in equations.lines:
        text.append(f"\n  {line}")
    for line in (*equations.definitions, *equations.notes):
        text.append(f"\n  {line}", style="dim")
    return text


def _config_text(report: LayerReport) -> Text:
    layer = report.layer
    text = Text("config: ", style="bold")
    text.append(", ".join(f"{key}={_plain(value)}" for key, value in layer.config.items()))
    for note in layer.notes:
        text.append("\nnote: ", style="bold yellow")
        text.append(note)
    return text


def _plain(value: Any) -> str:
    return "?" if value is None else str(value)


def _weights_text(report: LayerReport) -> Text:
    layer = report.layer
    n_gates = len({gate.gate for gate in report.gates}) or None
    text = Text("stored weights: ", style="bold")
    text.append(", ".join(f"{name} {tuple(shape)}" for name, shape in layer.stored_weights))
    canonical = [("kernel", layer.kernel.shape), ("recurrent_kernel", layer.recurrent_kernel.shape)]
    if layer.bias is not None:
        canonical.append(("bias", layer.bias.shape))
    text.append("\ncanonical: ", style="bold")
    text.append(", ".join(f"{name} {tuple(shape)}" for name, shape in canonical))
    text.append(f" → gates of {layer.units} columns each" if n_gates is not None else "")
    return text


STAT_COLUMNS = ("shape", "mean", "std", "min", "max", "norm", "max|w|", "NaN", "Inf")


def _stats_tables(report: LayerReport, width: int) -> list[RenderableType]:
    """The statistics of every gate array, in as many stacked tables as the width needs: each
    repeats the gate and array columns and takes the next statistics that fit. No cell is cut."""
    keys: list[list[_Cell] | None] = []
    stats: list[list[_Cell] | None] = []
    for gate in report.gates:
        for index, array in enumerate(gate.arrays):
            label = f"{gate.gate} {gate.meaning.split()[0]}" if index == 0 else ""
            s = array.stats
            warn = "bold red" if s.nan or s.inf else ""
            keys.append([_Cell(label), _Cell(array.name)])
            cells = [str(array.shape), _num(s.mean), _num(s.std), _num(s.min), _num(s.max), _num(s.norm), _num(s.max_abs)]
            stats.append([_Cell(cell) for cell in cells] + [_Cell(str(s.nan), warn), _Cell(str(s.inf), warn)])
        keys.append(None)  # a blank line between gates
        stats.append(None)

    def column_width(header: str, rows: list[list[_Cell] | None], position: int) -> int:
        return max([len(header)] + [cell_len(row[position].text) for row in rows if row is not None])

    key_widths = [column_width(h, keys, i) for i, h in enumerate(("gate", "array"))]
    stat_widths = [column_width(h, stats, i) for i, h in enumerate(STAT_COLUMNS)]
    # A column costs its width plus 2 between columns (padding and the blank divider), none at the edges.
    groups: list[list[int]] = [[]]
    keys_width = sum(key_widths) + 2 * (len(key_widths) - 1)
    used = keys_width
    for position, stat_width in enumerate(stat_widths):
        if groups[-1] and used + 2 + stat_width > width:
            groups.append([])
            used = keys_width
        groups[-1].append(position)
        used += 2 + stat_width
    tables: list[RenderableType] = []
    for group in groups:
        columns = [_Column("gate", "left", key_widths[0]), _Column("array", "left", key_widths[1])]
        columns += [_Column(STAT_COLUMNS[p], "left" if p == 0 else "right", stat_widths[p]) for p in group]
        rows = [
            None if key_row is None or stat_row is None else [*key_row, *(stat_row[p] for p in group)]
            for key_row, stat_row in zip(keys, stats)
        ]
        tables.append(_grid(columns, rows))
    return tables


@dataclass(frozen=True)
class _Cell:
    text: str
    style: str = ""


@dataclass(frozen=True)
class _Column:
    header: str
    justify: str  # "left" or "right"
    width: int  # at least the header's and every cell's width


def _grid(columns: Sequence[_Column], rows: Sequence[Sequence[_Cell] | None]) -> Text:
    """Rows of cells in columns of known widths, a blank line where a row is None, laid out as a
    Rich Table(box=SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
    header_style="bold") lays out the same cells, byte for byte, colour codes included, where it
    fits the width (narrower, its lines fold: no cell is cut with `…` as Rich's would be). One Text
    because Rich's Table takes about 80 µs a cell to lay out what the widths already decide: the
    statistics of a two-layer LSTM took 21 of the 26 ms `inspect` spent rendering, a tenth of
    its whole run (measured on the 2-core VM)."""
    total = sum(column.width for column in columns) + 2 * (len(columns) - 1)
    lines = [_grid_line(columns, [_Cell(column.header, "bold") for column in columns], "bold"), Text("─" * total)]
    gap = False  # a None since the last row: a blank line before the next one (none at either end)
    for row in rows:
        if row is None:
            gap = len(lines) > 2
            continue
        if gap:
            lines.append(Text(" " * total))
            gap = False
        lines.append(_grid_line(columns, row, ""))
    return Text("\n").join(lines)


def _grid_line(columns: Sequence[_Column], cells: Sequence[_Cell], padding_style: str) -> Text:
    line = Text()
    for index, (column, cell) in enumerate(zip(columns, cells)):
        if index:
            line.append(" ", style=padding_style)  # the previous column's right padding
            line.append(" ")  # the divider between columns
        blank = " " * (column.width - cell_len(cell.text))
        line.append(cell.text + blank if column.justify == "left" else blank + cell.text, style=cell.style or None)
    return line


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}"


def _matrix_values(report: LayerReport, width: int) -> list[RenderableType]:
    return [_values_table(f"{gate.gate} ({gate.meaning}) · {array.name}", array, width) for gate in report.gates for array in gate.arrays]


def _values_table(title: str, array: ArrayReport, width: int) -> RenderableType:
    assert array.values is not None
    values = array.values
    if values.ndim == 1:
        values = values.reshape(1, -1)
        row_labels = ["b"]
    elif values.ndim == 2:
        prefix = _row_prefix(array.name)
        row_labels = [f"{prefix}{i}" for i in range(values.shape[0])]
    else:
        # ConvLSTM: fold the kernel window into the rows, labelled by window position and input.
        window = values.shape[:-2]
        prefix = _row_prefix(array.name)
        row_labels = [
            f"{[int(k) for k in np.unravel_index(i // values.shape[-2], window)]}{prefix}{i % values.shape[-2]}"
            for i in range(int(np.prod(values.shape[:-1])))
        ]
        values = values.reshape(-1, values.shape[-1])
    rows = _elide(list(range(values.shape[0])), MAX_ROWS)
    cells = [value_text(float(v)) for v in values.ravel()] or [""]
    cell_width = max(max(len(c) for c in cells), len(f"u{values.shape[1] - 1}")) + 2  # two of padding
    label_width = max(len(label) for label in row_labels) + 2 if row_labels else 3
    # As many columns as the width holds (an even count: the corners either side of the `…`).
    fitting = max(2, (width - label_width) // cell_width)
    limit = min(MAX_COLUMNS, fitting)
    columns = _elide(list(range(values.shape[1])), limit, corner=min(CORNER, (limit - 1) // 2 or 1))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    for column in columns:
        table.add_column("…" if column is None else f"u{column}", justify="right", no_wrap=True)
    for row in rows:
        cells = ["…" if column is None or row is None else value_text(values[row, column]) for column in columns]
        table.add_row("…" if row is None else row_labels[row], *cells)
    note = _elision_note(values.shape, rows, columns)
    # A title of its own: as the table's title it would wrap to the width of a narrow table.
    parts: list[RenderableType] = [Text(title, style="bold"), table]
    return Group(*parts, Text(note, style="dim")) if note else Group(*parts)


# The arrays whose rows are previous states (h), Keras's and other frameworks' names for them.
RECURRENT_ARRAYS = frozenset({"recurrent_kernel", "weight_hh", "R"})


def _row_prefix(name: str) -> str:
    return "h" if name in RECURRENT_ARRAYS else "x"


def _elide(indices: list[int], limit: int, corner: int = CORNER) -> list[int | None]:
    if len(indices) <= limit:
        return list(indices)
    return [*indices[:corner], None, *indices[-corner:]]


def _elision_note(shape: Sequence[int], rows: Sequence[int | None], columns: Sequence[int | None]) -> str:
    if None not in rows and None not in columns:
        return ""
    return f"showing the corners of a {shape[0]}×{shape[1]} matrix; `grucli inspect --json --values` prints every number"


def value_text(value: float) -> str:
    return f"{value: .4f}" if np.isfinite(value) else str(value)


def _unit_values(report: LayerReport) -> list[RenderableType]:
    """One table for one unit: rows are the inputs and previous states feeding it, columns its gates."""
    table = Table(
        title=f"weights feeding unit {report.unit} (x = input feature, h = previous state)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
    )
    # Labels and numbers never wrap; the gate headers wrap between words when the width is short.
    table.add_column("", no_wrap=True, min_width=len("recurrent_bias"))
    for gate in report.gates:
        header = f"{gate.gate} ({gate.meaning})"
        table.add_column(header, justify="right", min_width=max(8, *(len(word) for word in header.split())))
    by_gate = [{array.name: array.values for array in gate.arrays} for gate in report.gates]
    names = list(dict.fromkeys(array.name for gate in report.gates for array in gate.arrays))
    # The weights (a vector per gate: the unit's column) first, then the biases (a value per gate).
    matrices = [name for name in names if any(np.ndim(value) >= 1 for arrays in by_gate if (value := arrays.get(name)) is not None)]
    for name in matrices:
        vectors = [arrays.get(name) for arrays in by_gate]
        length = max((v.size for v in vectors if v is not None), default=0)
        for row in _elide(list(range(length)), MAX_ROWS * 2):
            label = "…" if row is None else f"{_row_prefix(name)}{row}"
            table.add_row(label, *["…" if row is None or v is None else value_text(v.ravel()[row]) for v in vectors])
    for name in (name for name in names if name not in matrices):
        vectors = [arrays.get(name) for arrays in by_gate]
        table.add_row(name, *["" if v is None else value_text(float(v)) for v in vectors])
    return [table]


def _others_table(others: Sequence[OtherLayer], width: int) -> Group:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for column in ("path", "class", "weights", "note"):
        table.add_column(column, overflow="fold")
    for other in others:
        weights = ", ".join(f"{tuple(shape)}" for _, shape in other.weight_shapes) or "—"
        table.add_row(other.path, other.class_name, weights, Text(other.skipped_reason or "", style="yellow"))
    # A title of its own: as the table's title it would wrap to the width of a narrow table.
    return Group(Text("other layers (not recurrent; weights not sliced)", style="italic"), fitted(table, width))


@escaping
def render_diff(report: DiffReport, color: bool = False, width: int = 120) -> str:
    header = Text()
    header.append(f"A: {report.a}\nB: {report.b}", style="bold")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", padding=(0, 1, 0, 0))
    for column in ("layer", "gate", "array", "max |B−A|", "‖B−A‖/‖A‖", "units that moved most (‖Δ column‖)"):
        table.add_column(column, justify="right" if column.startswith(("max", "‖")) else "left", no_wrap=True)
    previous = None
    for change in report.changes:
        name = change.path if change.other_path is None else f"{change.path} ↔ {change.other_path}"
        layer = name if name != previous else ""
        previous = name
        relative = "—" if change.rel_change is None else f"{change.rel_change:.3g}"
        moved = ", ".join(f"u{unit} ({value:.3g})" for unit, value in change.top_units) or "—"
        style = "" if change.max_abs_change == 0 else "bold"
        table.add_row(layer, change.gate, change.array, Text(f"{change.max_abs_change:.3g}", style=style), relative, moved)
    changed = report.changed_beyond_tolerance
    if report.identical:
        verdict = Text("identical: no weight changed", style="green")
    elif not changed:
        verdict = Text(f"changed, but no array by more than {report.atol:g} (--atol)", style="green")
    else:
        beyond = f" by more than {report.atol:g}" if report.atol else ""
        verdict = Text(f"changed: {len(changed)} of {len(report.changes)} arrays beyond{beyond}", style="yellow")
    if report.paired_by_order:
        header.append("\n  layers of different frameworks, paired in file order (as convert --into pairs them)", style="dim")
    parts: list[RenderableType] = [header, fitted(table, width)]
    for finding in report.findings:
        parts.append(Text(f"{finding.kind}: {finding.layer} ↔ {finding.other}: {finding.detail}", style="bold red"))
        parts.append(Text(f"  fix: {finding.fix}"))
    if report.findings:
        verdict = Text(f"B holds A's numbers in the wrong places: {len(report.findings)} mistake(s) named above", style="bold red")
    return to_text([*parts, verdict], color, width)


@escaping
def render_check(report: CheckReport, color: bool = False, width: int = 120, limit: int = 50) -> str:
    t = report.thresholds
    header = Text()
    header.append(report.path, style="bold")
    header.append(f"\n  layers: {', '.join(report.layers_checked) or 'none'}")
    header.append(
        f"\n  thresholds: saturation |bias| − {t.saturation_spread:g}·spread > {t.saturation_logit:g}; "
        f"spectral norm > {t.max_spectral_norm:g}"
    )
    parts: list[RenderableType] = [header]
    if report.findings:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
        for column in ("check", "layer", "gate", "unit", "finding"):
            table.add_column(column, no_wrap=column != "finding")
        for finding in report.findings[:limit]:
            table.add_row(
                Text(finding.check, style="bold red"),
                finding.path,
                finding.gate,
                "—" if finding.unit is None else str(finding.unit),
                finding.message,
            )
        parts.append(fitted(table, width))
        if len(report.findings) > limit:
            parts.append(Text(f"… and {len(report.findings) - limit} more findings (--json lists them all)", style="dim"))
        parts.append(Text(f"FAIL: {len(report.findings)} finding(s)", style="bold red"))
    else:
        parts.append(Text("PASS: no NaN/Inf, dead units, saturated gates or oversized recurrent blocks", style="bold green"))
    return to_text(parts, color, width)
