"""Reports to text: each report type's formatters, registered once, chosen by the report's type and
an `OutputFormat`.

A formatter imports its module when called, so JSON output never loads Rich and a command loads
only its own renderer. Reports are keyed by their class's module and name, so that this registry need not
import every command to know its report (inspect would otherwise load the replay engine).

May import: output/ (formats, render, heatmaps), and the report records by name only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any


class OutputFormat(enum.Enum):
    TEXT = "text"  # Rich tables and text, for a person
    JSON = "json"  # one JSON document, for scripts (docs/json.md)
    HEATMAP = "heatmap"  # inspect's matrices as colour heatmaps


Formatter = Callable[[Any, bool, int], str]  # (report, color, width) -> text


def _inspect_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.render import render_inspect

    return render_inspect(report, color=color, width=width)


def _inspect_heatmap(report: Any, color: bool, width: int) -> str:
    from grucli.output.heatmap import render_heatmaps

    return render_heatmaps(report, color=color, width=width)


def _inspect_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.formats import inspect_json

    return inspect_json(report) + "\n"


def _verify_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.render_verify import render_verify

    return render_verify(report, color=color, width=width)


def _verify_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.formats import verify_json

    return verify_json(report) + "\n"


def _explain_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.render_explain import render_explain

    return render_explain(report, color=color, width=width)


def _explain_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.formats import explain_json

    return explain_json(report) + "\n"


def _diff_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.render import render_diff

    return render_diff(report, color=color, width=width)


def _diff_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.formats import diff_json

    return diff_json(report) + "\n"


def _check_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.render import render_check

    return render_check(report, color=color, width=width)


def _check_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.formats import check_json

    return check_json(report) + "\n"


def _convert_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.render_verify import render_convert

    return render_convert(report, color=color, width=width)


def _convert_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.formats import convert_json

    return convert_json(report) + "\n"


def _port_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.render_verify import render_port

    return render_port(report, color=color, width=width)


def _port_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.formats import port_json

    return port_json(report) + "\n"


def _activations_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.dynamics import render_activations

    return render_activations(report, color=color, width=width)


def _activations_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.dynamics import activations_json

    return activations_json(report) + "\n"


def _probe_text(report: Any, color: bool, width: int) -> str:
    from grucli.output.dynamics import render_probe

    return render_probe(report, color=color, width=width)


def _probe_json(report: Any, color: bool, width: int) -> str:
    from grucli.output.dynamics import probe_json

    return probe_json(report) + "\n"


# Report type (module.class) → its formatters.
FORMATTERS: Mapping[str, Mapping[OutputFormat, Formatter]] = {
    "grucli.commands.inspect.InspectReport": {
        OutputFormat.TEXT: _inspect_text,
        OutputFormat.JSON: _inspect_json,
        OutputFormat.HEATMAP: _inspect_heatmap,
    },
    "grucli.commands.verify_report.VerifyReport": {OutputFormat.TEXT: _verify_text, OutputFormat.JSON: _verify_json},
    "grucli.commands.explain.Explanation": {OutputFormat.TEXT: _explain_text, OutputFormat.JSON: _explain_json},
    "grucli.commands.diff.DiffReport": {OutputFormat.TEXT: _diff_text, OutputFormat.JSON: _diff_json},
    "grucli.commands.check.CheckReport": {OutputFormat.TEXT: _check_text, OutputFormat.JSON: _check_json},
    "grucli.commands.convert.ConvertReport": {OutputFormat.TEXT: _convert_text, OutputFormat.JSON: _convert_json},
    "grucli.commands.port.PortReport": {OutputFormat.TEXT: _port_text, OutputFormat.JSON: _port_json},
    "grucli.commands.activations.ActivationsReport": {OutputFormat.TEXT: _activations_text, OutputFormat.JSON: _activations_json},
    "grucli.commands.probe.ProbeReport": {OutputFormat.TEXT: _probe_text, OutputFormat.JSON: _probe_json},
}


def report_key(report_type: type) -> str:
    return f"{report_type.__module__}.{report_type.__qualname__}"


def formatted(report: Any, output_format: OutputFormat, color: bool = False, width: int = 120) -> str:
    """The report as text in `output_format` (the text formats drawn for `width` columns)."""
    by_format = FORMATTERS.get(report_key(type(report)))
    if by_format is None or output_format not in by_format:
        raise LookupError(f"no {output_format.value} formatter for {report_key(type(report))}")  # a bug in grucli, not the user's
    return by_format[output_format](report, color, width)
