"""explain's text: the equations, each step's arithmetic for one unit, and the output check.

May import: rich, output/render (the shared drawing), commands/ records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from grucli.commands.explain import Explanation, GateStep, Step

from grucli.errors import counted
from grucli.output.render import equations_text, escaping, fitted, to_text

# --- explain ------------------------------------------------------------------------------------------

EXPLAIN_MAX_STEPS = 40  # more steps are shown as the first and last 20; --json has every one


@escaping
def render_explain(e: Explanation, color: bool = False, width: int = 120) -> str:
    header = Text()
    header.append(e.file, style="bold")
    header.append(
        f"\n  layer {e.path} ({e.kind}, {counted(e.units, 'unit')}, input_dim {e.input_dim})  ·  unit {e.unit}  ·  sample {e.sample}"
    )
    header.append(f"\n  input: {e.input_description}  ·  {'Keras 2' if e.semantics == 'keras2' else 'Keras 3'} definitions")
    if e.other_recurrent:
        header.append(f"\n  other recurrent layers (--layer): {', '.join(e.other_recurrent)}", style="dim")
    parts: list[RenderableType] = [header, equations_text(e.equations)]
    parts.extend(Text(f"note: {note}", style="yellow") for note in e.activation_notes)
    order = "from the last timestep to the first (go_backwards)" if e.go_backwards else "in time order"
    parts.append(
        Text(
            f"each step, {order}: the terms of each line above, in the same order, for unit {e.unit}; h_prev is the whole previous state",
            style="dim",
        )
    )
    steps = list(e.steps)
    shown: list[Step | None] = list(steps)
    if len(steps) > EXPLAIN_MAX_STEPS:
        half = EXPLAIN_MAX_STEPS // 2
        shown = [*steps[:half], None, *steps[-half:]]
    for step in shown:
        if step is None:
            parts.append(Text(f"\n… {len(steps) - EXPLAIN_MAX_STEPS} steps not shown (grucli explain --json has every step)", style="dim"))
        else:
            parts.append(_step_text(step, e))
    parts.append(_output_table(e, width))
    return to_text(parts, color, width)


def _n(value: float) -> str:
    """A number as the arithmetic lines print it: 6 significant digits."""
    return f"{value:.6g}"


def _operand(value: float) -> str:
    """A number inside a sum or product: negative ones in parentheses, as written by hand."""
    return f"({_n(value)})" if value < 0 or str(_n(value)).startswith("-") else _n(value)


def _vector(values: np.ndarray, limit: int = 8) -> str:
    items = [_n(float(v)) for v in values]
    if len(items) > limit:
        items = [*items[: limit // 2], "…", *items[-limit // 2 :]]
    return "[" + ", ".join(items) + "]"


def _step_text(step: Step, e: Explanation) -> Text:
    u = e.unit
    text = Text()
    text.append(f"\nt = {step.t}", style="bold")
    text.append(f"   x = {_vector(step.x)}   h_prev = {_vector(step.h_prev)}")
    if step.c_prev is not None:
        text.append(f"   c_prev = {_vector(step.c_prev)}")
    if step.masked:
        text.append("\n  masked: Keras skips this step; every state is carried over", style="yellow")
        text.append(f"\n  h = h_prev[{u}] = {_n(step.h)}" + (f"   c = c_prev[{u}] = {_n(step.c)}" if step.c is not None else ""))
        text.append(f"\n  output = {_n(step.output)}")
        return text
    by_name = {gate.name: gate for gate in step.gates}
    width = max(len(gate.name) for gate in step.gates)
    for gate in step.gates:
        text.append(f"\n  {gate.name.ljust(width)} = {_gate_arithmetic(gate)}")
        for term in gate.terms:
            if term.products:
                products = " + ".join(f"{_operand(a)}×{_operand(b)}" for a, b in term.products)
                text.append(f"\n  {' ' * width}   {term.label} = {products} = {_n(term.value)}", style="dim")
        if gate.name == "cc" and step.c_prev is not None:
            f, i = by_name["f"].value, by_name["i"].value
            text.append(
                f"\n  {'c'.ljust(width)} = f * c_prev + i * cc = {_operand(f)} * {_operand(float(step.c_prev[u]))} + "
                f"{_operand(i)} * {_operand(gate.value)} = {_n(step.c if step.c is not None else float('nan'))}"
            )
    if "hh" in by_name or "o" in by_name:  # a SimpleRNN's h is its one line above
        text.append(f"\n  {'h'.ljust(width)} = {_state_arithmetic(step, e, by_name)}", style="bold")
    if step.vectors and len(step.h_prev) > 1:  # the vector form: every unit of each line
        for name, value in step.vectors.items():
            text.append(f"\n  {name.ljust(width)} (all units) = {_vector(value)}", style="dim")
    return text


def _gate_arithmetic(gate: GateStep) -> str:
    terms = [_operand(term.value) for term in gate.terms]
    if gate.scaled_by is not None:  # GRU reset_after candidate: the last two terms are r * (h_prev·U_h + rb_h)
        inner_count = sum(1 for term in gate.terms if term.label in ("h_prev·U_h", "rb_h"))
        outer, inner = terms[: len(terms) - inner_count], terms[len(terms) - inner_count :]
        terms = [*outer, f"{_operand(gate.scaled_by)} * ({' + '.join(inner)})"]
    return f"{gate.activation}({' + '.join(terms)}) = {gate.activation}({_n(gate.pre_activation)}) = {_n(gate.value)}"


def _state_arithmetic(step: Step, e: Explanation, by_name: dict[str, GateStep]) -> str:
    h_prev = float(step.h_prev[e.unit])
    if "z" in by_name:
        z, hh = by_name["z"].value, by_name["hh"].value
        return f"z * h_prev + (1 - z) * hh = {_operand(z)} * {_operand(h_prev)} + (1 - {_operand(z)}) * {_operand(hh)} = {_n(step.h)}"
    activation = by_name["cc"].activation  # an LSTM applies its activation to c as to the candidate
    c = step.c if step.c is not None else float("nan")
    return f"o * {activation}(c) = {_operand(by_name['o'].value)} * {activation}({_n(c)}) = {_n(step.h)}"


def _output_table(e: Explanation, width: int) -> RenderableType:
    check = e.output
    label = "predict" if check.reference == "predict" else "replay"
    # A title of its own: as the table's title it would wrap to the width of the narrow table.
    title = Text(f"\noutput of {e.path}, unit {e.unit}, sample {e.sample}: explain beside {label}", style="bold")
    title.append(f"\n{label}: {check.description}", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for column in ("t", "explain", label, "|difference|"):
        table.add_column(column, justify="right", no_wrap=True)
    for t, mine, theirs in zip(check.steps, check.explained, check.expected):
        table.add_row(str(t), _n(mine), _n(theirs), f"{abs(mine - theirs):.2e}")
    parts: list[RenderableType] = [title, fitted(table, width)]
    if check.note:
        parts.append(Text(f"note: {check.note}", style="yellow"))
    parts.append(Text(f"max |explain − {label}| = {check.max_abs_diff:.3g}"))
    return Group(*parts)
