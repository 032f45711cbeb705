"""Gate-by-gate comparison of two files of one architecture (say, two checkpoints of a run)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from grucli.commands.mistakes import BlockNorms, Finding, PairScreen, directions_swapped, layer_mistakes
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
    other_path: str | None = None  # B's layer where the files are of different frameworks (paired by order)


@dataclass(frozen=True)
class DiffReport:
    a: str
    b: str
    changes: tuple[GateChange, ...]

    atol: float = 0.0  # changes up to this size count as no change (--atol)
    findings: tuple[Finding, ...] = ()  # the mistakes of a port B holds (commands/mistakes.py)
    paired_by_order: bool = False  # files of different frameworks: layers paired in file order, as convert --into pairs them

    @property
    def identical(self) -> bool:
        return not self.findings and all(change.max_abs_change == 0 for change in self.changes)

    @property
    def changed_beyond_tolerance(self) -> tuple[GateChange, ...]:
        """The arrays that moved by more than `atol` somewhere (NaN changes count as moves)."""
        return tuple(c for c in self.changes if not c.max_abs_change <= self.atol)

    @property
    def differs(self) -> bool:
        """What --exit-code reports: an array moved beyond --atol, or a mistake was found."""
        return bool(self.findings or self.changed_beyond_tolerance)


def diff_layers(a: ModelLayers, b: ModelLayers, layer_paths: Sequence[str] = (), top: int = 3, atol: float = 0.0) -> DiffReport:
    from grucli.model.layers import select_layers

    across = _framework(a) != _framework(b)
    if across:
        # Other frameworks name their layers otherwise: pair them in file order, directions in order
        # (PyTorch l0, l0_reverse; Keras bi/forward, bi/backward), as convert --into pairs them.
        pairs = _ordered_pairs(a, b, layer_paths)
    else:
        _check_same_architecture(a, b)
        pairs = list(zip(select_layers(a.recurrent, layer_paths), select_layers(b.recurrent, layer_paths), strict=True))
    compared = [_layer_changes(left, right, top, right.path if across else None) for left, right in pairs]
    changes = tuple(change for layer_changes, _ in compared for change in layer_changes)
    screens = [screen for _, screen in compared]
    findings = [finding for (left, right), screen in zip(pairs, screens) for finding in layer_mistakes(left, right, screen)]
    findings += directions_swapped(pairs, screens)
    return DiffReport(a.file.path, b.file.path, changes, atol, tuple(findings), across)


def _framework(found: ModelLayers) -> str:
    return "keras" if not any(layer.source is not None for layer in found.recurrent) else found.recurrent[0].source_layout


def _ordered_pairs(a: ModelLayers, b: ModelLayers, layer_paths: Sequence[str]) -> list[tuple[RecurrentLayer, RecurrentLayer]]:
    if layer_paths:
        raise ArchitectureError(
            "--layer selects by path, and files of different frameworks name their layers differently; compare them whole"
        )
    left, right = list(a.recurrent), list(b.recurrent)
    problems = []
    if len(left) != len(right):
        problems.append(
            f"{a.file.path} holds {counted(len(left), 'recurrent layer')} ({', '.join(x.path for x in left)}), "
            f"{b.file.path} {len(right)} ({', '.join(x.path for x in right)})"
        )
    for x, y in zip(left, right):
        if (x.family, x.units, x.input_dim) != (y.family, y.units, y.input_dim):
            problems.append(
                f"{x.path} ({x.kind}, {counted(x.units, 'unit')}, input {x.input_dim}) vs {y.path} ({y.kind}, "
                f"{counted(y.units, 'unit')}, input {y.input_dim})"
            )
    if problems:
        raise ArchitectureError("the two files' recurrent layers do not pair in order: " + "; ".join(problems))
    return list(zip(left, right))


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


def _layer_changes(a: RecurrentLayer, b: RecurrentLayer, top: int, other_path: str | None = None) -> tuple[list[GateChange], PairScreen]:
    """Each gate array's change, and what the mistake checks need to know of the pair without
    reading its kernels again (`mistakes.PairScreen`)."""
    changes = []
    norms: dict[str, tuple[list[float], list[float]]] = {"kernel": ([], []), "recurrent_kernel": ([], [])}
    # A reset_after mismatch leaves one bias row on one side: those arrays are compared where both have them.
    common = [name for name in gates.gate_array_names(a) if name in gates.gate_array_names(b)]
    for gate in gates.gate_names(a.kind):
        for name in common:
            # One gate array of each file at a time: a large layer is never all in memory.
            before = gates.gate_array(a, gate, name).astype(np.float64)
            after = gates.gate_array(b, gate, name).astype(np.float64)
            with np.errstate(invalid="ignore"):
                # The same NaN or infinity in both files is no change; a new one is (NaN).
                delta = np.where((before == after) | (np.isnan(before) & np.isnan(after)), 0.0, after - before)
            base = float(np.linalg.norm(before))
            if name in norms:
                norms[name][0].append(base)
                norms[name][1].append(float(np.linalg.norm(after)))
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
                    other_path=other_path,
                )
            )
    unchanged = all(c.max_abs_change == 0 for c in changes if c.array in norms)
    screen = PairScreen(
        BlockNorms(tuple(norms["kernel"][0]), tuple(norms["recurrent_kernel"][0])),
        BlockNorms(tuple(norms["kernel"][1]), tuple(norms["recurrent_kernel"][1])),
        unchanged,
    )
    return changes, screen
