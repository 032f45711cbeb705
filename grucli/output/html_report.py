"""The `report` page: one self-contained HTML file (its style, script and numbers inline; it loads
nothing from anywhere, so it opens from disk in any browser and is safe to mail).

Every heatmap is a canvas the page's script draws from the numbers embedded as JSON (each map's
cells as base64 float32); pointing at a cell shows what it is (gate, unit, input row or step) and
its value. Text from the model file
(layer names, paths) is escaped wherever it lands, in the HTML and in the JSON.

May import: numpy, commands/ (records), model/, errors.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grucli.commands.pictures import Blocks, LayerActivity, WeightMap
from grucli.commands.report import DatasetSection, LayerSection, ModelReport
from grucli.output.formats import write_atomic

CELL_WIDTH_RANGE = (2, 22)  # pixels per cell: small layers big enough to point at, big ones still on the page
AREA = (560, 300)  # the most pixels a heatmap takes, width and height


def write_report(report: ModelReport, output: str | Path, force: bool = False) -> int:
    """Write the page; returns its size in bytes."""
    page = render_report(report).encode("utf-8")
    write_atomic(output, lambda handle: handle.write(page), force)
    return len(page)


def render_report(report: ModelReport) -> str:
    maps: list[dict[str, Any]] = []
    body = [_header(report), _verify(report), _check(report)]
    body += [_layer(section, maps) for section in report.layers]
    if report.dataset is not None:
        body.append(dataset_section(report.dataset))
    data = json.dumps({"maps": maps}, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    # Inside <script>: nothing the data holds may close the element or open a comment.
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    title = html.escape(f"grucli report: {Path(report.path).name}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<link rel="icon" href="data:,"><meta name="viewport" content="width=device-width">'
        f'<style>{STYLE}</style></head><body>\n{"".join(body)}\n<div id="tooltip" role="status"></div>\n'
        f'<script type="application/json" id="grucli-data">{data}</script>\n<script>{SCRIPT}</script></body></html>\n'
    )


# --- sections ---------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _header(report: ModelReport) -> str:
    layers = ", ".join(f'<a href="#{_anchor(s.path)}">{_e(s.path)}</a> ({_e(s.kind)})' for s in report.layers) or "none"
    rows = [
        ("file", report.path),
        ("format", report.format),
        ("Keras version", report.keras_version or "not recorded"),
        ("definitions", f"{report.semantics} (hard_sigmoid and defaults as the saving Keras defines them)"),
        ("input", report.input_description or "none"),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    missing = f'<p class="note">Activations: {_e(report.activities_missing)}</p>' if report.activities_missing else ""
    return (
        f'<header><h1>{_e(Path(report.path).name)}</h1><table class="facts">{table}'
        f"<tr><th>recurrent layers</th><td>{layers}</td></tr></table>{missing}</header>\n"
    )


def _verify(report: ModelReport) -> str:
    if report.verify is None:
        return f'<section id="verify"><h2>verify</h2><p class="note">{_e(report.verify_missing)}</p></section>\n'
    verify = report.verify
    verdict = "pass" if verify.passed else "FAIL"
    rows = [_comparison_row(f"layer {check.path}", check.comparison, check.note) for check in verify.layers]
    # Comparisons that are None needed what was not given (--expected).
    rows += [
        _comparison_row(name.replace("_", " "), comparison, None)
        for name, comparison in verify.comparisons.items()
        if comparison is not None
    ]
    failures = "".join(f'<p class="bad">{_e(line)}</p>' for line in verify.semantic_failures)
    return (
        f'<section id="verify"><h2>verify: <span class="{"good" if verify.passed else "bad"}">{verdict}</span></h2>'
        f"<p>{_e(verify.framework)} on {_e(verify.device)}, {_e(verify.input_description)}; tolerance atol {verify.atol:g}, "
        f'rtol {verify.rtol:g}</p>{failures}<table class="grid"><tr><th>compared</th><th>max abs err</th><th>max rel err</th>'
        f"<th>worst place</th><th></th></tr>{''.join(rows)}</table></section>\n"
    )


def _comparison_row(what: str, comparison: Any, note: str | None) -> str:
    if comparison is None:
        return f'<tr><td>{_e(what)}</td><td colspan="4" class="bad">{_e(note or "not compared")}</td></tr>'
    worst = comparison.worst
    place = (
        ""
        if worst is None
        else f"sample {worst.sample}" + ("" if worst.timestep is None else f", step {worst.timestep}") + f", unit {worst.unit}"
    )
    state = '<span class="good">pass</span>' if comparison.passed else '<span class="bad">FAIL</span>'
    return (
        f"<tr><td>{_e(what)}</td><td>{comparison.max_abs_err:.3g}</td><td>{comparison.max_rel_err:.3g}</td>"
        f"<td>{_e(place)}</td><td>{state}</td></tr>"
    )


def _check(report: ModelReport) -> str:
    check = report.check
    if not check.findings:
        return (
            f'<section id="check"><h2>check: <span class="good">no findings</span></h2><p>{len(check.layers_checked)} '
            "layer(s): no NaN or Inf weights, dead units, saturated gates or exploding recurrent blocks.</p></section>\n"
        )
    items = "".join(
        f"<li><b>{_e(f.check)}</b> {_e(f.path)} gate {_e(f.gate)}"
        + ("" if f.unit is None else f" unit {f.unit}")
        + f": {_e(f.message)}</li>"
        for f in check.findings
    )
    return f'<section id="check"><h2>check: <span class="bad">{len(check.findings)} finding(s)</span></h2><ul>{items}</ul></section>\n'


def _anchor(path: str) -> str:
    return "layer-" + "".join(c if c.isalnum() else "-" for c in path)


def _layer(section: LayerSection, maps: list[dict[str, Any]]) -> str:
    weights = "".join(_weight_figure(section, weight, maps) for weight in section.weights)
    activity = _activity(section.activity, maps) if section.activity is not None else ""
    return (
        f'<section class="layer" id="{_anchor(section.path)}" data-path="{_e(section.path)}">{layer_head(section)}'
        f'<h3>weights per gate</h3><div class="maps">{weights}</div>{activity}</section>\n'
    )


def layer_head(section: LayerSection) -> str:
    """A layer's title, settings and exact step equations (the page's layer section, less its maps)."""
    settings = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in section.settings)
    equations = section.equations
    lines = "\n".join(equations.lines)
    extra = "".join(f'<p class="note">{_e(line)}</p>' for line in (*equations.definitions, *equations.notes))
    return (
        f"<h2>{_e(section.path)} <small>{_e(section.kind)}({section.units})</small></h2>"
        f'<div class="row"><table class="facts">{settings}</table><div><h3>one step</h3><pre>{_e(lines)}</pre>{extra}</div></div>'
    )


def model_summary_html(path: str, format_: str, keras_version: str | None, semantics: str, sections: Sequence[LayerSection]) -> str:
    """A model in a notebook (`Model._repr_html_`): the file's facts and each recurrent layer's
    settings and equations, styled like the report page."""
    facts = [("file", path), ("format", format_), ("Keras version", keras_version or "not recorded"), ("definitions", semantics)]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    layers = "".join(f'<section class="layer">{layer_head(section)}</section>' for section in sections) or "<p>no recurrent layer</p>"
    return f'<div class="grucli"><style>{NOTEBOOK_STYLE}</style><table class="facts">{table}</table>{layers}</div>'


def dataset_section(section: DatasetSection) -> str:
    """The dataset's dynamics: probe scores against the control task, state trajectories and per-unit views."""
    from grucli.output.dynamics import dataset_html

    return dataset_html(section)


def _weight_figure(section: LayerSection, weight: WeightMap, maps: list[dict[str, Any]]) -> str:
    bound = float(np.nanmax(np.abs(weight.values))) if np.isfinite(weight.values).any() else 1.0
    rows_label = "input row" if weight.array == "kernel" else "previous-state unit"
    spec = _map_spec(len(maps), "weight", weight.values, -bound or -1.0, bound or 1.0, weight.blocks, section.path)
    spec.update(
        {
            "gate": weight.gate,
            "meaning": weight.meaning,
            "array": weight.array,
            "rowLabel": rows_label,
            "rowIds": list(range(weight.shape[0])),
            "colIds": list(range(weight.shape[1])),
        }
    )
    maps.append(spec)
    title = f"{weight.gate} ({weight.meaning}) · {weight.array} {weight.shape[0]}×{weight.shape[1]}"
    return _figure(spec, title, weight.downsampled, f"{rows_label}s ↓, units →")


def _activity(activity: LayerActivity, maps: list[dict[str, Any]]) -> str:
    order = "steps as consumed: last to first (a backward direction)" if activity.backwards else "steps in time order"
    notes = [f"sample {activity.sample}; {order}; grey: masked steps"]
    if activity.downsampled:
        notes.append(activity.downsampled)
    figures = []
    inputs_spec = _map_spec(
        len(maps),
        "input",
        activity.inputs,
        *_range(activity.inputs),
        Blocks(activity.feature_starts, activity.blocks.column_starts),
        activity.path,
    )
    inputs_spec.update(
        {
            "name": "x",
            "meaning": "input",
            "rowLabel": "feature",
            "rowIds": list(range(activity.feature_starts[-1])),
            "colIds": list(activity.steps),
        }
    )
    maps.append(inputs_spec)
    figures.append(_figure(inputs_spec, "x (the layer's input)", None, "features ↓, steps →"))
    for quantity in activity.quantities:
        spec = _map_spec(len(maps), "activity", quantity.values, quantity.low, quantity.high, activity.blocks, activity.path)
        spec.update(
            {
                "name": quantity.name,
                "meaning": quantity.meaning,
                "rowLabel": "unit",
                "rowIds": list(activity.units),
                "colIds": list(activity.steps),
            }
        )
        maps.append(spec)
        figures.append(_figure(spec, f"{quantity.name} ({quantity.meaning})", None, "units ↓, steps →"))
    return (
        f'<h3>gates and states over time</h3><p class="note">{_e("; ".join(notes))}</p><div class="maps activity">{"".join(figures)}</div>'
    )


def _range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def _map_spec(index: int, kind: str, values: np.ndarray, low: float, high: float, blocks: Blocks, path: str) -> dict[str, Any]:
    rows, cols = values.shape
    width = _cell(AREA[0], cols)
    height = _cell(AREA[1], rows)
    return {
        "id": f"map{index}",
        "kind": kind,
        "layer": path,
        "rows": rows,
        "cols": cols,
        "cellW": width,
        "cellH": height,
        "low": _number(low),
        "high": _number(high),
        "values": encoded_values(values),
        "rowStarts": list(blocks.row_starts),
        "colStarts": list(blocks.column_starts),
    }


def encoded_values(values: np.ndarray) -> str:
    """A heatmap's cells, row by row, as base64 of little-endian float32 (NaN: masked): the page
    decodes them into a Float32Array, a third of the size of decimal text and exact to float32."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def decoded_values(text: str, rows: int, cols: int) -> np.ndarray:
    """The inverse of `encoded_values` (for readers of the page's data, and its tests)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(rows, cols)


def _cell(area: int, count: int) -> int:
    return max(CELL_WIDTH_RANGE[0], min(CELL_WIDTH_RANGE[1], area // max(count, 1)))


def _number(value: float) -> float | None:
    """A colour scale's end: six significant digits, NaN as null."""
    value = float(value)
    return None if not math.isfinite(value) else float(f"{value:.6g}")


def _figure(spec: dict[str, Any], title: str, note: str | None, axes: str) -> str:
    width, height = spec["cols"] * spec["cellW"], spec["rows"] * spec["cellH"]
    scale = f"scale {spec['low']:.3g} … {spec['high']:.3g}" if spec["low"] is not None else ""
    extra = f'<br><span class="note">{_e(note)}</span>' if note else ""
    return (
        f'<figure><figcaption>{_e(title)}<br><span class="axes">{_e(axes)}; {_e(scale)}</span>{extra}</figcaption>'
        f'<canvas id="{spec["id"]}" class="heatmap" width="{width}" height="{height}" '
        f'style="width:{width}px;height:{height}px"></canvas></figure>'
    )


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#1b1f24;background:#fff;max-width:1400px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}h3{font-size:15px;margin:14px 0 6px}
small{color:#57606a;font-weight:normal}table{border-collapse:collapse}th,td{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
table.grid td,table.grid th{border-bottom:1px solid #eaeef2;padding:3px 10px}.facts th{color:#57606a;font-weight:normal}
pre{background:#f6f8fa;padding:8px 10px;border-radius:6px;font-size:13px;overflow:auto}.row{display:flex;gap:32px;flex-wrap:wrap}
.maps{display:flex;flex-wrap:wrap;gap:14px 22px;align-items:flex-start}figure{margin:0}figcaption{font-size:12px;margin-bottom:4px}
.axes,.note{color:#57606a;font-size:12px}canvas.heatmap{image-rendering:pixelated;border:1px solid #d0d7de;cursor:crosshair;display:block}
.good{color:#1a7f37}.bad{color:#cf222e}
#tooltip{position:fixed;pointer-events:none;background:#1b1f24;color:#fff;font-size:12px;padding:4px 7px;border-radius:4px;
display:none;white-space:nowrap;z-index:9}
"""

# In a notebook the rules are scoped to grucli's own block, so the notebook's own look is left alone.
NOTEBOOK_STYLE = (
    ".grucli table{border-collapse:collapse}.grucli th,.grucli td{padding:2px 10px 2px 0;text-align:left;vertical-align:top}"
    ".grucli .facts th{color:#57606a;font-weight:normal}.grucli pre{background:#f6f8fa;padding:8px 10px;border-radius:6px;"
    "font-size:13px;overflow:auto}.grucli .row{display:flex;gap:32px;flex-wrap:wrap}.grucli .note{color:#57606a;font-size:12px}"
    ".grucli h2{font-size:16px;margin:18px 0 6px}.grucli h3{font-size:14px;margin:10px 0 4px}.grucli small{color:#57606a}"
)

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("grucli-data").textContent);
  data.maps.forEach(function (map) {  // base64 of little-endian float32, row by row; NaN: masked
    var bytes = atob(map.values), buffer = new ArrayBuffer(bytes.length), view = new Uint8Array(buffer);
    for (var i = 0; i < bytes.length; i++) { view[i] = bytes.charCodeAt(i); }
    var cells = new Float32Array(buffer), little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    if (!little) {  // a big-endian machine reads the words byte-swapped
      var words = new DataView(buffer);
      cells = Float32Array.from({length: bytes.length / 4}, function (_, k) { return words.getFloat32(4 * k, true); });
    }
    map.values = cells;
  });
  var tip = document.getElementById("tooltip");
  function diverging(t) {  // -1 blue, 0 white, 1 red
    var a = Math.min(1, Math.abs(t));
    return t < 0 ? [Math.round(255 - 200 * a), Math.round(255 - 160 * a), 255]
                 : [255, Math.round(255 - 200 * a), Math.round(255 - 200 * a)];
  }
  function sequential(t) {  // dark blue to yellow
    var stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    var x = Math.max(0, Math.min(1, t)) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    return [0, 1, 2].map(function (k) { return Math.round(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])); });
  }
  function colour(map, v) {
    if (isNaN(v)) { return [200, 200, 200]; }
    if (map.kind === "weight") { return diverging(map.high > 0 ? v / map.high : 0); }
    var span = map.high - map.low;
    return sequential(span > 0 ? (v - map.low) / span : 0.5);
  }
  function span(starts, i, ids) {
    var a = ids[starts[i]], b = ids[starts[i + 1] - 1];
    return starts[i + 1] - starts[i] === 1 ? String(a) : a + "–" + b;
  }
  function describe(map, row, col) {
    var v = map.values[row * map.cols + col];
    var many = map.rowStarts[row + 1] - map.rowStarts[row] > 1 || map.colStarts[col + 1] - map.colStarts[col] > 1;
    var value = isNaN(v) ? "masked" : (many ? "mean " : "value ") + v.toPrecision(6);
    if (map.kind === "weight") {
      return "gate " + map.gate + " (" + map.meaning + ") · " + map.array + " · unit " + span(map.colStarts, col, map.colIds) +
        " · " + map.rowLabel + " " + span(map.rowStarts, row, map.rowIds) + " · " + value;
    }
    return map.name + " (" + map.meaning + ") · " + map.rowLabel + " " + span(map.rowStarts, row, map.rowIds) +
      " · step " + span(map.colStarts, col, map.colIds) + " · " + value;
  }
  data.maps.forEach(function (map) {
    var canvas = document.getElementById(map.id), context = canvas.getContext("2d");
    var image = context.createImageData(canvas.width, canvas.height);
    for (var r = 0; r < map.rows; r++) {
      for (var c = 0; c < map.cols; c++) {
        var rgb = colour(map, map.values[r * map.cols + c]);
        for (var y = r * map.cellH; y < (r + 1) * map.cellH; y++) {
          for (var x = c * map.cellW; x < (c + 1) * map.cellW; x++) {
            var at = 4 * (y * canvas.width + x);
            image.data[at] = rgb[0]; image.data[at + 1] = rgb[1]; image.data[at + 2] = rgb[2]; image.data[at + 3] = 255;
          }
        }
      }
    }
    context.putImageData(image, 0, 0);
    canvas.addEventListener("mousemove", function (event) {
      var box = canvas.getBoundingClientRect();
      var col = Math.floor((event.clientX - box.left) / map.cellW), row = Math.floor((event.clientY - box.top) / map.cellH);
      if (row < 0 || col < 0 || row >= map.rows || col >= map.cols) { tip.style.display = "none"; return; }
      tip.textContent = describe(map, row, col);
      tip.dataset.map = map.id; tip.dataset.row = row; tip.dataset.col = col;
      tip.style.left = (event.clientX + 14) + "px"; tip.style.top = (event.clientY + 12) + "px"; tip.style.display = "block";
    });
    canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  });
})();
"""
