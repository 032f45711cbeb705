"""Gate-by-gate comparison of two files of one architecture (say, two checkpoints of a run)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from grucli.errors import GrucliError, counted
from grucli.model import gates
from grucli.model.records import ModelLayers, RecurrentLayer


class ArchitectureError(GrucliError):
    """The two files do not hold the same recurrent layers (the message lists the differences)."""


@dataclass(frozen=True)
class GateChange:
    path: str
    gate: str
    array: str
    max_abs_change: float
    rel_change: float | None  # ‖B − A‖ / ‖A‖; None where ‖A‖ = 0
    top_units: tuple[tuple[int, float], ...]  # (unit, ‖change of its column‖), largest first


@dataclass(frozen=True)
class DiffReport:
    a: str
    b: str
    changes: tuple[GateChange, ...]

    atol: float = 0.0  # changes up to this size count as no change (--atol)

    @property
    def identical(self) -> bool:
        return all(change.max_abs_change == 0 for change in self.changes)

    @property
    def changed_beyond_tolerance(self) -> tuple[GateChange, ...]:
        """The arrays that moved by more than `atol` somewhere (NaN changes count as moves)."""
        return tuple(c for c in self.changes if not c.max_abs_change <= self.atol)


def diff_layers(a: ModelLayers, b: ModelLayers, layer_paths: Sequence[str] = (), top: int = 3, atol: float = 0.0) -> DiffReport:
    _check_same_architecture(a, b)
    from grucli.model.layers import select_layers

    pairs = zip(select_layers(a.recurrent, layer_paths), select_layers(b.recurrent, layer_paths), strict=True)
    changes = tuple(change for left, right in pairs for change in _layer_changes(left, right, top))
    return DiffReport(a.file.path, b.file.path, changes, atol)


class _Signature(NamedTuple):
    """What must match for two layers' arrays to be compared gate by gate."""

    kind: str
    units: int
    input_dim: int
    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...] | None


def _signature(layer: RecurrentLayer) -> _Signature:
    bias = None if layer.bias is None else tuple(layer.bias.shape)
    return _Signature(layer.kind, layer.units, layer.input_dim, tuple(layer.kernel.shape), bias)


def _described(signature: _Signature) -> str:
    units = counted(signature.units, "unit")
    return f"{signature.kind}({units}, input {signature.input_dim}, bias {signature.bias_shape})"


def _check_same_architecture(a: ModelLayers, b: ModelLayers) -> None:
    left = {layer.path: _signature(layer) for layer in a.recurrent}
    right = {layer.path: _signature(layer) for layer in b.recurrent}
    problems = [f"{path} only in {a.file.path}" for path in left if path not in right]
    problems += [f"{path} only in {b.file.path}" for path in right if path not in left]
    problems += [
        f"{path}: {_described(left[path])} vs {_described(right[path])}" for path in left if path in right and left[path] != right[path]
    ]
    if problems:
        raise ArchitectureError("the two files have different recurrent layers, expected the same architecture: " + "; ".join(problems))


def _layer_changes(a: RecurrentLayer, b: RecurrentLayer, top: int) -> list[GateChange]:
    changes = []
    for gate in gates.gate_names(a.kind):
        for name in gates.gate_array_names(a):
            # One gate array of each file at a time: a large layer is never all in memory.
            before = gates.gate_array(a, gate, name).astype(np.float64)
            after = gates.gate_array(b, gate, name).astype(np.float64)
            with np.errstate(invalid="ignore"):
                # The same NaN or infinity in both files is no change; a new one is (NaN).
                delta = np.where((before == after) | (np.isnan(before) & np.isnan(after)), 0.0, after - before)
            base = float(np.linalg.norm(before))
            per_unit = np.sqrt((gates.unit_columns(delta) ** 2).sum(axis=0))
            order = np.argsort(-per_unit, kind="stable")[:top]
            changes.append(
                GateChange(
                    path=a.path,
                    gate=gate,
                    array=name,
                    max_abs_change=float(np.abs(delta).max()) if delta.size else 0.0,
                    rel_change=float(np.linalg.norm(delta)) / base if base > 0 else None,
                    top_units=tuple((int(unit), float(per_unit[unit])) for unit in order if per_unit[unit] > 0),
                )
            )
    return changes
