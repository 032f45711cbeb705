"""What `verify` found: frozen records of each comparison and the report, plus the comparison itself.

Plain data and NumPy: the renderers (`render`, `formats`) and the CLI read these without importing
Keras; `verify` builds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grucli.files.budget import Limits
from grucli.files.inputs import InputError


@dataclass(frozen=True)
class Location:
    sample: int
    timestep: int | None
    unit: int
    position: tuple[int, ...] = ()  # the spatial cell between time and unit (ConvLSTM, images)


@dataclass(frozen=True)
class Comparison:
    """Errors of one comparison. NaN or Inf on either side fails it, never counts as zero error:
    `nonfinite` then says which side holds them and where they first appear."""

    max_abs_err: float
    max_rel_err: float
    passed: bool
    worst: Location | None
    nonfinite: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerCheck:
    """One recurrent layer in scope: its comparison, or None and the reason it was not compared
    (which fails the run: a layer that was not checked must not pass)."""

    path: str
    class_name: str
    comparison: Comparison | None
    note: str | None = None


@dataclass(frozen=True)
class TraceTable:
    """One direction or cell of one layer, one sample and unit, step by step."""

    path: str
    sample: int
    unit: int
    steps: tuple[int, ...]
    inputs: np.ndarray
    values: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class VerifyOptions:
    input_path: Path | None = None
    expected_path: Path | None = None
    atol: float | None = None
    rtol: float | None = None
    dtype: str = "float64"
    batch: int = 4
    timesteps: int = 10
    seed: int = 0
    trace: bool = False
    sample: int = 0
    unit: int = 0
    layer_paths: tuple[str, ...] = ()
    framework: str = "auto"
    unsafe: bool = False
    limits: Limits = field(default_factory=Limits)
    config_path: Path | None = None  # the architecture of a weights-only file (--config)
    onnx_path: Path | None = None  # an ONNX file of the model, run by ONNX Runtime and compared with predict (--onnx)


@dataclass(frozen=True)
class VerifyReport:
    path: str
    keras_version: str | None
    semantics: str
    framework: str
    device: str
    precision: str
    atol: float
    rtol: float
    dtype: str
    input_description: str
    compute_dtype: str
    layers: tuple[LayerCheck, ...]
    comparisons: Mapping[str, Comparison | None]
    end_to_end_note: str | None
    repairs: tuple[str, ...]
    warnings: tuple[str, ...]
    traces: tuple[TraceTable, ...] = field(default=())
    # Activations the installed framework defines otherwise than the Keras that saved the file:
    # predict does not compute what the model was trained with, so verify fails.
    semantic_failures: tuple[str, ...] = field(default=())
    saved_by: str = "an unrecorded Keras version"  # ModelFile.saved_by
    version_source: str = "file"  # where keras_version was read: the file, or the --config JSON ("config")

    @property
    def passed(self) -> bool:
        if self.semantic_failures or not self.layers:
            return False
        if any(check.comparison is None or not check.comparison.passed for check in self.layers):
            return False
        return all(c is None or c.passed for c in self.comparisons.values())


def compare(
    actual: Sequence[np.ndarray] | None,
    reference: Sequence[np.ndarray] | None,
    atol: float,
    rtol: float,
    names: tuple[str, str] = ("the replay", "predict"),
) -> Comparison | None:
    """Max absolute and relative error over all outputs; passes where |a-b| <= atol + rtol*|b| everywhere.
    A NaN or Inf on either side is an infinite error, even where both sides hold the same one."""
    if actual is None or reference is None:
        return None
    nonfinite: list[str] = []
    if len(actual) != len(reference):
        raise InputError(f"{len(reference)} reference outputs given for a model with {len(actual)} outputs")
    worst_abs, worst_rel, passed, worst = 0.0, 0.0, True, None
    worst_excess = -np.inf
    for a, b in zip(actual, reference):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise InputError(f"reference output has shape {b.shape}; the model's output has shape {a.shape}")
        if a.size == 0:
            continue
        fast = _finite_errors(a, b, atol, rtol)
        if fast is not None:  # every value finite: the common case, in one pass over blocks
            error_max, relative_max, excess_max, index = fast
            worst_abs, worst_rel = max(worst_abs, error_max), max(worst_rel, relative_max)
            passed = passed and excess_max <= 0
            if excess_max > worst_excess:
                worst_excess = excess_max
                worst = _location(np.unravel_index(index, a.shape))
            continue
        nonfinite += _nonfinite_sides(a, b, names)
        a, b = a.astype(np.float64), b.astype(np.float64)
        # inf - inf and inf / inf are NaN here, not warnings: a non-finite value fails the
        # comparison and is named (nonfinite) whatever these arrays hold at its place
        with np.errstate(invalid="ignore"):
            error = np.where(np.isfinite(a) & np.isfinite(b), np.abs(a - b), np.inf)
            allowed = atol + rtol * np.abs(b)
            excess = error - allowed
            relative = error / (np.abs(b) + atol)
        index = int(np.argmax(excess))
        worst_abs = max(worst_abs, float(error.max()))
        worst_rel = max(worst_rel, float(relative.max()))
        passed = passed and bool(np.all(excess <= 0))
        if excess.flat[index] > worst_excess:
            worst_excess = float(excess.flat[index])
            worst = _location(np.unravel_index(index, a.shape))
    if nonfinite:  # never a number that reads like agreement
        worst_abs = worst_rel = math.inf
    return Comparison(worst_abs, worst_rel, passed and not nonfinite, worst, tuple(nonfinite))


COMPARE_BLOCK = 1 << 18  # values per block: a few MiB of float64 temporaries, whatever the output's size


def _finite_errors(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[float, float, float, int] | None:
    """max |a-b|, max |a-b|/(|b|+atol), max excess over atol + rtol*|b| and its flat index, in
    blocks; None as soon as a value on either side is NaN or Inf (|a-b| is finite exactly when
    both are), which the full path then reports."""
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    error_max = relative_max = 0.0
    excess_max, excess_index = -math.inf, 0
    for start in range(0, flat_a.size, COMPARE_BLOCK):
        block_a = np.asarray(flat_a[start : start + COMPARE_BLOCK], np.float64)
        block_b = np.asarray(flat_b[start : start + COMPARE_BLOCK], np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            error = np.abs(np.subtract(block_a, block_b))
        if not np.isfinite(error).all():
            return None
        error_max = max(error_max, float(error.max()))
        scale = np.abs(block_b)
        scale += atol
        relative_max = max(relative_max, float(np.divide(error, scale).max()))
        allowed = np.abs(block_b)
        allowed *= rtol
        allowed += atol
        error -= allowed  # the excess over what the tolerances allow
        index = int(np.argmax(error))
        if error[index] > excess_max:
            excess_max, excess_index = float(error[index]), start + index
    return error_max, relative_max, excess_max, excess_index


def _nonfinite_sides(actual: np.ndarray, reference: np.ndarray, names: tuple[str, str]) -> list[str]:
    found = []
    for values, name in zip((actual, reference), names):
        bad = ~np.isfinite(values)
        if bad.any():
            kinds = "/".join(k for k, present in (("NaN", np.isnan(values).any()), ("Inf", np.isinf(values).any())) if present)
            found.append(f"{name} holds {kinds}, first at {_first_in_time(bad)}")
    return found


def _first_in_time(bad: np.ndarray) -> str:
    """Where a non-finite value first appears: earliest timestep, then sample, then unit."""
    where = np.argwhere(bad)
    if bad.ndim >= 3:
        where = where[np.lexsort((where[:, -1], where[:, 0], where[:, 1]))]
        first = where[0]
        return f"sample {first[0]}, timestep {first[1]}, unit {first[-1]}"
    first = where[0]
    return f"sample {first[0]}" + (f", unit {first[-1]}" if bad.ndim > 1 else "")


def _location(index: tuple[Any, ...]) -> Location:  # np.unravel_index: NumPy integers
    if len(index) >= 3:
        return Location(int(index[0]), int(index[1]), int(index[-1]), tuple(int(i) for i in index[2:-1]))
    return Location(int(index[0]), None, int(index[-1]) if len(index) > 1 else 0)
