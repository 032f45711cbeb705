"""Machine-readable outputs: the `inspect --json` document and atomically written `.npz` files.

The JSON schemas are documented in docs/json.md and versioned by `schema_version`; add keys, never
rename or remove them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from grucli.errors import OutputError
from grucli.model.records import ArraySpec, OtherLayer
from grucli.version import __version__

if TYPE_CHECKING:
    from grucli.commands.check import CheckReport
    from grucli.commands.convert import ConvertReport
    from grucli.commands.diff import DiffReport
    from grucli.commands.explain import Explanation, Step
    from grucli.commands.inspect import ArrayReport, InspectReport, LayerReport
    from grucli.commands.port import PortReport
    from grucli.commands.verify_report import Comparison, VerifyReport

SCHEMA_VERSION = 1


def inspect_json(report: InspectReport) -> str:
    """The `inspect --json` document."""
    document = {
        "schema_version": SCHEMA_VERSION,
        "grucli_version": __version__,
        "file": report.path,
        "format": report.format,
        "keras_version": report.keras_version,
        "keras_version_source": report.version_source,
        "backend": report.backend,
        "has_config": report.has_config,
        "config_path": report.config_path,
        "notes": list(report.notes),
        "layers": [_layer_json(layer) for layer in report.layers],
        "other_layers": [_other_json(other) for other in report.others],
    }
    return _dumps(document)


def _dumps(document: dict[str, Any]) -> str:
    # allow_nan=False: a NaN that slipped past the formatters raises here instead of printing invalid JSON.
    return json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False)


def _layer_json(report: LayerReport) -> dict[str, Any]:
    layer = report.layer
    return {
        "path": layer.path,
        "class": layer.class_name,
        "kind": layer.kind,
        "units": layer.units,
        "input_dim": layer.input_dim,
        "config": dict(layer.config),
        "source_layout": layer.source_layout,
        "inferred": layer.inferred,
        "notes": list(layer.notes),
        "layout": list(report.layout),
        "equations": {
            "lines": list(report.equations.lines),
            "definitions": list(report.equations.definitions),
            "notes": list(report.equations.notes),
        },
        "stored_weights": [{"name": name, "shape": list(shape)} for name, shape in layer.stored_weights],
        "source": None
        if layer.source is None
        else {
            "framework": layer.source.framework,
            "module": layer.source.module,
            "gates": list(layer.source.letters),
            "keras_gates": list(layer.source.keras_gates),
            "arrays": [name for name, _ in layer.source.arrays],
            "settings": {key: value for key, value in layer.source.settings.items() if value is not None},
        },
        "canonical_shapes": {
            "kernel": list(layer.kernel.shape),
            "recurrent_kernel": list(layer.recurrent_kernel.shape),
            "bias": list(layer.bias.shape) if layer.bias is not None else None,
        },
        "unit": report.unit,
        "gates": {gate.gate: {array.name: _array_json(array) for array in gate.arrays} for gate in report.gates},
    }


def _array_json(array: ArrayReport) -> dict[str, Any]:
    entry: dict[str, Any] = {"shape": list(array.shape), "stats": asdict(array.stats)}
    if array.values is not None:
        entry["values"] = _json_values(array.values)
    return entry


def _json_values(values: np.ndarray) -> Any:
    # JSON has no NaN or Infinity: write them as the strings Python and JavaScript parse back.
    as_list = np.asarray(values, dtype=np.float64).tolist()
    return _replace_non_finite(as_list)


def _replace_non_finite(value: Any) -> Any:
    if isinstance(value, list):
        return [_replace_non_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _other_json(other: OtherLayer) -> dict[str, Any]:
    return {
        "path": other.path,
        "class": other.class_name,
        "weights": [{"name": name, "shape": list(shape)} for name, shape in other.weight_shapes],
        "skipped": other.skipped_reason,
        "unsliced_recurrent": other.unsliced_recurrent,
    }


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray], force: bool = False) -> None:
    """Write `arrays` to an .npz at `path` atomically, refusing to overwrite without `force`."""
    values = [np.asarray(value) for value in arrays.values()]
    specs = [ArraySpec(key, value.shape, value.dtype) for key, value in zip(arrays, values, strict=True)]
    write_npz_pieces(path, specs, enumerate(values), force)


def write_npz_pieces(path: str | Path, specs: Sequence[ArraySpec], pieces: Iterable[tuple[int, np.ndarray]], force: bool = False) -> None:
    """An .npz of the arrays `specs` describes, filled from `pieces` (index, next block of rows).

    Readable by `np.load` like any `np.savez` file; memory stays at a few blocks.
    """
    from grucli.output.npz import write_npz_to

    write_atomic(path, lambda handle: write_npz_to(handle.fileno(), specs, pieces), force)


def write_npy(path: str | Path, array: np.ndarray, force: bool = False) -> None:
    write_atomic(path, lambda handle: np.save(handle, array, allow_pickle=False), force)


STDOUT = "-"  # `-o -`: the file's bytes go to standard output


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], force: bool = False) -> None:
    """Write through `write` to a temporary file beside `path`, then rename it into place.

    A reader never sees a half-written file, and an interrupted run leaves nothing behind.
    `path` "-" writes the bytes to standard output instead (complete, once they are all made).
    """
    if str(path) == STDOUT:
        _write_stdout(write)
        return
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target} is a directory; expected a file path for the output")
    if target.exists() and not target.is_file():
        # --force replaces files only: renamed over a device node (as root, /dev/null) or a FIFO it would replace it
        raise OutputError(
            f"{target} is not a regular file (a device, FIFO or socket); expected a file path for the output "
            "(use -o - to write to standard output)"
        )
    if target.exists() and not force:
        raise OutputError(f"{target} already exists; pass --force to overwrite it")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist; expected an existing folder for {target.name}")
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            # mkstemp makes the file private (0600); an output gets what the umask gives, as any tool's
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: set it straight back
    os.umask(mask)
    return mask


def _write_stdout(write: Callable[[BinaryIO], object]) -> None:
    """The whole file made first in a temporary file (.npz writing seeks), then copied to stdout,
    so a failure half-way sends nothing."""
    import shutil
    import sys

    with tempfile.TemporaryFile() as spool:
        write(spool)
        spool.seek(0)
        try:
            shutil.copyfileobj(spool, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            pass  # the reader went away; what it read was a prefix of a complete file


def verify_json(report: VerifyReport) -> str:
    def comparison(c: Comparison | None) -> dict[str, Any] | None:
        if c is None:
            return None
        worst = (
            None
            if c.worst is None
            else {"sample": c.worst.sample, "timestep": c.worst.timestep, "unit": c.worst.unit, "position": list(c.worst.position)}
        )
        # JSON has no Inf: a comparison with NaN/Inf gives null errors and says why in `nonfinite`.
        return {
            "max_abs_err": _finite_or_none(c.max_abs_err),
            "max_rel_err": _finite_or_none(c.max_rel_err),
            "passed": c.passed,
            "worst": worst,
            "nonfinite": list(c.nonfinite),
        }

    document = {
        "schema_version": SCHEMA_VERSION,
        "grucli_version": __version__,
        "file": report.path,
        "passed": report.passed,
        "atol": report.atol,
        "rtol": report.rtol,
        "device": report.device,
        "precision": report.precision,
        "framework": report.framework,
        "keras_version": report.keras_version,
        "keras_version_source": report.version_source,
        "semantics": report.semantics,
        "replay_dtype": report.dtype,
        "compute_dtype": report.compute_dtype,
        "input": report.input_description,
        "layers": [
            {
                "path": check.path,
                "class": check.class_name,
                **(
                    comparison(check.comparison)
                    or {"max_abs_err": None, "max_rel_err": None, "passed": False, "worst": None, "nonfinite": []}
                ),
                "note": check.note,
            }
            for check in report.layers
        ],
        "comparisons": {name: comparison(value) for name, value in report.comparisons.items()},
        "end_to_end": report.end_to_end_note,
        "repairs": list(report.repairs),
        "warnings": [f"semantics: {failure}" for failure in report.semantic_failures] + list(report.warnings),
        "traces": [
            {
                "path": t.path,
                "sample": t.sample,
                "unit": t.unit,
                "inputs": _json_values(t.inputs),
                "values": {name: _json_values(v) for name, v in t.values.items()},
            }
            for t in report.traces
        ],
    }
    return _dumps(document)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def diff_json(report: DiffReport) -> str:
    document = {
        "schema_version": SCHEMA_VERSION,
        "a": report.a,
        "b": report.b,
        "identical": report.identical,
        "atol": report.atol,
        "changed_beyond_atol": [f"{c.path}/{c.gate}/{c.array}" for c in report.changed_beyond_tolerance],
        "changes": [
            {
                "path": c.path,
                "gate": c.gate,
                "array": c.array,
                "max_abs_change": c.max_abs_change,
                "rel_change": c.rel_change,
                "top_units": [{"unit": unit, "change": change} for unit, change in c.top_units],
                "other_path": c.other_path,
            }
            for c in report.changes
        ],
        "paired_by_order": report.paired_by_order,
        "findings": [{"kind": f.kind, "layer": f.layer, "other": f.other, "detail": f.detail, "fix": f.fix} for f in report.findings],
    }
    return _dumps(document)


def check_json(report: CheckReport) -> str:
    document = {
        "schema_version": SCHEMA_VERSION,
        "file": report.path,
        "passed": report.passed,
        "thresholds": asdict(report.thresholds),
        "layers": list(report.layers_checked),
        "findings": [
            {
                "check": f.check,
                "path": f.path,
                "gate": f.gate,
                "unit": f.unit,
                "array": f.array,
                "value": f.value if math.isfinite(f.value) else str(f.value),
                "message": f.message,
            }
            for f in report.findings
        ],
    }
    return _dumps(document)


def explain_json(explanation: Explanation) -> str:
    """The `explain --json` document: the equations, then every step of one unit."""
    e = explanation
    document = {
        "schema_version": SCHEMA_VERSION,
        "grucli_version": __version__,
        "file": e.file,
        "layer": e.path,
        "kind": e.kind,
        "units": e.units,
        "input_dim": e.input_dim,
        "unit": e.unit,
        "sample": e.sample,
        "semantics": e.semantics,
        "input": e.input_description,
        "go_backwards": e.go_backwards,
        "equations": {
            "lines": list(e.equations.lines),
            "definitions": list(e.equations.definitions),
            "notes": [*e.equations.notes, *e.activation_notes],
        },
        "steps": [_step_json(step) for step in e.steps],
        "output": {
            "reference": e.output.reference,
            "reference_by": e.output.description,
            "steps": list(e.output.steps),
            "explain": _json_values(np.array(e.output.explained)),
            "expected": _json_values(np.array(e.output.expected)),
            "max_abs_diff": _finite_or_none(e.output.max_abs_diff),
            "note": e.output.note,
        },
    }
    return _dumps(document)


def _step_json(step: Step) -> dict[str, Any]:
    entry: dict[str, Any] = {"t": step.t, "x": _json_values(step.x), "h_prev": _json_values(step.h_prev)}
    if step.c_prev is not None:
        entry["c_prev"] = _json_values(step.c_prev)
    entry["gates"] = {gate.gate: _replace_non_finite(gate.value) for gate in step.gates}
    entry["pre_activations"] = {gate.gate: _replace_non_finite(gate.pre_activation) for gate in step.gates}
    entry["terms"] = {gate.gate: {term.label: _replace_non_finite(term.value) for term in gate.terms} for gate in step.gates}
    entry["h"] = _replace_non_finite(step.h)
    if step.c is not None:
        entry["c"] = _replace_non_finite(step.c)
    entry["output"] = _replace_non_finite(step.output)
    entry["masked"] = step.masked
    return entry


def convert_json(report: ConvertReport) -> str:
    compared = report.comparison
    return _dumps(
        {
            "file": report.path,
            "output": report.output,
            "nodes": report.nodes,
            "recurrent_nodes": list(report.recurrent_nodes),
            "graph_inputs": list(report.inputs),
            "graph_outputs": list(report.outputs),
            "state_inputs": list(report.state_inputs),
            "state_outputs": list(report.state_outputs),
            "input": report.input_description,
            "atol": report.atol,
            "rtol": report.rtol,
            "onnxruntime_vs_replay": None
            if compared is None
            else {
                "max_abs_err": _finite_or_none(compared.max_abs_err),
                "max_rel_err": _finite_or_none(compared.max_rel_err),
                "passed": compared.passed,
            },
            "not_compared": report.not_compared,
            "passed": report.passed,
        }
    )


def port_json(report: PortReport) -> str:
    """The `convert --into --json` document."""

    def comparison(c: Comparison) -> dict[str, Any]:
        return {
            "max_abs_err": _finite_or_none(c.max_abs_err),
            "max_rel_err": _finite_or_none(c.max_rel_err),
            "passed": c.passed,
            "nonfinite": list(c.nonfinite),
        }

    return _dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "grucli_version": __version__,
            "source": report.source,
            "target": report.target,
            "output": report.output,
            "pairs": [{"kind": p.category, "source": p.source, "target": p.target, "detail": p.detail} for p in report.pairs],
            "left_out": list(report.left_out),
            "notes": list(report.notes),
            "proofs": [
                {"source": p.source, "target": p.target, "reference": p.reference, **comparison(p.comparison)} for p in report.proofs
            ],
            "end_to_end": None if report.end_to_end is None else comparison(report.end_to_end),
            "end_to_end_note": report.end_to_end_note,
            "atol": report.atol,
            "rtol": report.rtol,
            "passed": report.passed,
        }
    )
