"""verify's text: per-layer comparisons, the end-to-end verdict, warnings and --trace tables.

May import: rich, output/render (the shared drawing), commands/ records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from grucli.commands.convert import ConvertReport
    from grucli.commands.port import PortReport
    from grucli.commands.verify_report import Comparison, TraceTable, VerifyReport

from grucli.output.render import escaping, fitted, packed, to_text, value_text


@escaping
def render_verify(report: VerifyReport, color: bool = False, width: int = 120) -> str:
    parts: list[RenderableType] = []
    header = Text()
    header.append(report.path, style="bold")
    # No recorded version: a Keras 1 HDF5 file, or a weights file whose --config does not say.
    saved = f"saved by {report.saved_by} ({'Keras 2' if report.semantics == 'keras2' else 'Keras 3'} definitions)"
    header.append("\n")
    header.append_text(packed([Text(saved), Text(f"predict: {report.framework} on {report.device}")], width, lead="  ", indent="    "))
    header.append("\n")
    header.append_text(
        packed(
            [
                Text(f"input: {report.input_description}"),
                Text(f"replay in {report.dtype}"),
                Text(f"atol {report.atol:g}, rtol {report.rtol:g}"),
            ],
            width,
            lead="  ",
            indent="    ",
        )
    )
    parts.append(header)
    parts.extend(Text(f"repair: {repair}", style="cyan") for repair in report.repairs)
    table = Table(
        title="recurrent layers: replay on the layer's real input vs its real output",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
    )
    for column in ("layer", "class", "max abs err", "max rel err", "worst (sample, t, unit)", "result"):
        table.add_column(column, justify="right" if "err" in column else "left", no_wrap=True)
    for check in report.layers:
        c = check.comparison
        if c is None:
            table.add_row(check.path, check.class_name, "—", "—", "—", Text("FAIL: not compared", style="bold red"))
        else:
            table.add_row(check.path, check.class_name, _error(c.max_abs_err), _error(c.max_rel_err), _where(c), _verdict(c.passed))
    parts.append(fitted(table, width))
    for check in report.layers:
        if check.comparison is None:
            parts.append(Text(f"not compared: {check.path}: {check.note or 'no comparison was made'}", style="bold red"))
        else:
            parts.extend(Text(f"non-finite: layer {check.path}: {line}", style="bold red") for line in check.comparison.nonfinite)
    whole = Table(title="whole model", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for column in ("comparison", "max abs err", "max rel err", "worst (sample, t, unit)", "result"):
        whole.add_column(column, justify="right" if "err" in column else "left", no_wrap=True)
    for name, c in report.comparisons.items():
        label = name.replace("_vs_", " vs ").replace("_", " ")
        if c is None:
            continue
        whole.add_row(label, _error(c.max_abs_err), _error(c.max_rel_err), _where(c), _verdict(c.passed))
    if whole.row_count:
        parts.append(fitted(whole, width))
    for name, c in report.comparisons.items():
        if c is not None:
            parts.extend(
                Text(f"non-finite: {name.replace('_vs_', ' vs ').replace('_', ' ')}: {line}", style="bold red") for line in c.nonfinite
            )
    if report.end_to_end_note:
        parts.append(Text(f"note: {report.end_to_end_note}", style="yellow"))
    parts.extend(Text(f"warning: {warning}", style="bold yellow") for warning in (*report.semantic_failures, *report.warnings))
    if not report.layers:
        parts.append(Text("no recurrent layer was compared", style="bold red"))
    parts.extend(fitted(_trace_table(trace), width) for trace in report.traces)
    verdict = Text()
    if report.passed:
        verdict.append("PASS", style="bold green")
        verdict.append(f": every comparison within atol {report.atol:g} + rtol {report.rtol:g}·|predict|")
        detail = f"({report.precision})"
    else:
        verdict.append("FAIL", style="bold red")
        verdict.append(": see above")
        detail = f"({report.precision}; atol {report.atol:g}, rtol {report.rtol:g})"
    parts.append(packed([verdict, Text(detail)], width, separator=" ", indent="  "))
    return to_text(parts, color, width)


def _error(value: float) -> str:
    return f"{value:.2e}" if np.isfinite(value) else "NaN/Inf"


def _where(c: Comparison) -> str:
    if c.worst is None:
        return "—"
    timestep = "—" if c.worst.timestep is None else str(c.worst.timestep)
    if c.worst.position:  # ConvLSTM and image outputs: the spatial cell too
        return f"({c.worst.sample}, {timestep}, {c.worst.unit}) at {list(c.worst.position)}"
    return f"({c.worst.sample}, {timestep}, {c.worst.unit})"


def _verdict(passed: bool) -> Text:
    return Text("pass", style="green") if passed else Text("FAIL", style="bold red")


def _trace_table(trace: TraceTable) -> Table:
    names = {
        "z": "z update",
        "r": "r reset",
        "hh": "hh candidate",
        "h": "h state",
        "i": "i input",
        "f": "f forget",
        "cc": "c̃ candidate",
        "c": "c cell",
        "o": "o output",
    }
    table = Table(
        title=f"trace: {trace.path}, sample {trace.sample}, unit {trace.unit} (steps in processing order)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
    )
    table.add_column("step")
    features = trace.inputs.shape[-1] if trace.inputs.ndim > 1 else 1
    shown = min(features, 4)
    for feature in range(shown):
        table.add_column(f"x{feature}", justify="right")
    if features > shown:
        table.add_column("…")
    for name in trace.values:
        table.add_column(names.get(name, name), justify="right")
    for step in trace.steps:
        row = [str(step)]
        inputs = np.atleast_1d(trace.inputs[step]) if step < len(trace.inputs) else np.array([])
        row += [value_text(float(inputs[f])) if f < inputs.size else "" for f in range(shown)]
        if features > shown:
            row.append("…")
        row += [value_text(float(values[step])) for values in trace.values.values()]
        table.add_row(*row)
    return table


@escaping
def render_convert(report: ConvertReport, color: bool = False, width: int = 120) -> str:
    """convert's result: what was written, and ONNX Runtime against the replay."""
    parts = [Text(f"wrote {report.output}: {report.nodes} ONNX nodes from {report.path}")]
    parts.append(Text(f"  inputs: {', '.join(report.inputs)}"))
    parts.append(Text(f"  outputs: {', '.join(report.outputs)}"))
    if report.state_inputs:
        parts.append(Text(f"  state inputs: {', '.join(report.state_inputs)}; state outputs: {', '.join(report.state_outputs)}"))
    parts += [Text(f"  {line}") for line in report.recurrent_nodes]
    c = report.comparison
    if c is None:
        parts.append(Text(f"not run: {report.not_compared}", style="bold yellow"))
    else:
        parts.append(Text(f"ONNX Runtime against grucli's replay on {report.input_description}:"))
        parts.append(
            Text(f"  max abs err {_error(c.max_abs_err)}, max rel err {_error(c.max_rel_err)} (atol {report.atol:g}, rtol {report.rtol:g})")
        )
        parts.extend(Text(f"non-finite: {line}", style="bold red") for line in c.nonfinite)
        parts.append(_verdict(c.passed))
    return to_text(parts, color, width)


@escaping
def render_port(report: PortReport, color: bool = False, width: int = 120) -> str:
    """convert --into: what went where, and the proof that the written model computes what the source does."""
    parts: list[RenderableType] = [Text(f"wrote {report.output}: {report.target} with the weights of {report.source}", style="bold")]
    parts.extend(Text(f"  {pair.source} → {pair.target}: {pair.detail}") for pair in report.pairs)
    parts.extend(Text(f"  left out (--partial): {item}", style="yellow") for item in report.left_out)
    parts.extend(Text(f"note: {note}", style="dim") for note in report.notes)
    table = Table(
        title="proof: each layer of the written model against the source",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
    )
    for column in ("source", "target", "reference", "max abs err", "max rel err", "result"):
        table.add_column(column, justify="right" if "err" in column else "left")
    for proof in report.proofs:
        c = proof.comparison
        table.add_row(proof.source, proof.target, proof.reference, _error(c.max_abs_err), _error(c.max_rel_err), _verdict(c.passed))
    parts.append(fitted(table, width))
    if report.end_to_end is not None:
        c = report.end_to_end
        parts.append(Text(f"end to end: {report.end_to_end_note}:"))
        parts.append(
            Text(f"  max abs err {_error(c.max_abs_err)}, max rel err {_error(c.max_rel_err)} (atol {report.atol:g}, rtol {report.rtol:g})")
        )
        parts.extend(Text(f"non-finite: {line}", style="bold red") for line in c.nonfinite)
    else:
        parts.append(Text(f"end to end: {report.end_to_end_note}", style="dim"))
    parts.append(
        Text(
            "PASS: the written model computes what the source computes"
            if report.passed
            else f"FAIL: the written model is off from the source (atol {report.atol:g}, rtol {report.rtol:g})",
            style="bold green" if report.passed else "bold red",
        )
    )
    return to_text(parts, color, width)
