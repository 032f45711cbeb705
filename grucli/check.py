"""Health checks of recurrent weights for CI: each finding names the layer, gate and unit.

- `nan` / `inf`: non-finite weights feeding a unit's gate;
- `dead`: a unit whose gate receives only zeros (its kernel column, recurrent column and bias);
- `saturated`: a sigmoid gate whose bias outweighs what its inputs can move, so it is stuck open
  or shut: |bias| − spread_factor·spread > logit, where spread = sqrt(‖kernel column‖² +
  ‖recurrent column‖²) is the pre-activation's standard deviation for unit-variance inputs
  and states (σ(5) = 0.993);
- `spectral_norm`: a gate's recurrent block whose largest singular value exceeds the limit, a
  risk of exploding state. Trained models measured here: 4.6 to 50 per gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from grucli import gates
from grucli.model import RecurrentLayer


@dataclass(frozen=True)
class Thresholds:
    saturation_logit: float = 5.0
    saturation_spread: float = 2.0
    max_spectral_norm: float = 100.0


@dataclass(frozen=True)
class Finding:
    check: str
    path: str
    gate: str
    unit: int | None
    array: str | None
    value: float
    message: str


@dataclass(frozen=True)
class CheckReport:
    path: str
    thresholds: Thresholds
    layers_checked: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return not self.findings


SIGMOID_GATES = {"GRU": ("z", "r"), "LSTM": ("i", "f", "o"), "SimpleRNN": ()}


def check_layers(path: str, layers: Sequence[RecurrentLayer], thresholds: Thresholds) -> CheckReport:
    findings = tuple(finding for layer in layers for finding in _layer_findings(layer, thresholds))
    return CheckReport(path, thresholds, tuple(layer.path for layer in layers), findings)


def _layer_findings(layer: RecurrentLayer, thresholds: Thresholds) -> Iterator[Finding]:
    for gate, arrays in gates.slice_gates(layer).items():
        yield from _non_finite(layer.path, gate, arrays)
        yield from _dead_units(layer.path, gate, arrays)
        if gate in SIGMOID_GATES[gates.equation_family(layer.kind)] and "bias" in arrays:
            yield from _saturated(layer.path, gate, arrays, thresholds)
        yield from _spectral_norm(layer.path, gate, arrays["recurrent_kernel"], thresholds)


def _non_finite(path: str, gate: str, arrays: dict[str, np.ndarray]) -> Iterator[Finding]:
    for name, array in arrays.items():
        columns = gates.unit_columns(np.asarray(array, np.float64))
        for check, test in (("nan", np.isnan), ("inf", np.isinf)):
            counts = test(columns).sum(axis=0)
            for unit in np.flatnonzero(counts):
                yield Finding(check, path, gate, int(unit), name, float(counts[unit]),
                              f"{path} gate {gate} unit {unit}: {int(counts[unit])} {check.upper()} value(s) in {name}")


def _dead_units(path: str, gate: str, arrays: dict[str, np.ndarray]) -> Iterator[Finding]:
    magnitude = sum(np.abs(gates.unit_columns(np.asarray(a, np.float64))).sum(axis=0) for a in arrays.values())
    for unit in np.flatnonzero(magnitude == 0):
        yield Finding("dead", path, gate, int(unit), None, 0.0,
                      f"{path} gate {gate} unit {unit}: every weight and bias feeding it is zero")


def _saturated(path: str, gate: str, arrays: dict[str, np.ndarray], thresholds: Thresholds) -> Iterator[Finding]:
    bias = np.asarray(arrays["bias"], np.float64) + np.asarray(arrays.get("recurrent_bias", 0.0), np.float64)
    spread = np.sqrt(
        (gates.unit_columns(np.asarray(arrays["kernel"], np.float64)) ** 2).sum(axis=0)
        + (gates.unit_columns(np.asarray(arrays["recurrent_kernel"], np.float64)) ** 2).sum(axis=0)
    )
    margin = np.abs(bias) - thresholds.saturation_spread * spread
    for unit in np.flatnonzero(margin > thresholds.saturation_logit):
        state = "open" if bias[unit] > 0 else "shut"
        yield Finding("saturated", path, gate, int(unit), "bias", float(bias[unit]),
                      f"{path} gate {gate} unit {unit}: bias {bias[unit]:.3g} against input spread {spread[unit]:.3g}; "
                      f"the gate is stuck {state} for typical inputs")


def _spectral_norm(path: str, gate: str, recurrent: np.ndarray, thresholds: Thresholds) -> Iterator[Finding]:
    matrix = np.asarray(recurrent, np.float64)
    if matrix.ndim != 2 or not np.all(np.isfinite(matrix)) or matrix.size == 0:
        return  # non-finite weights are reported above; ConvLSTM kernels are not matrices
    norm = spectral_norm(matrix)
    if norm > thresholds.max_spectral_norm:
        yield Finding("spectral_norm", path, gate, None, "recurrent_kernel", norm,
                      f"{path} gate {gate}: recurrent block spectral norm {norm:.3g} exceeds {thresholds.max_spectral_norm:g}; "
                      "the state may explode")


EXACT_UP_TO = 512  # larger blocks: power iteration instead of a full SVD (O(n³): minutes at 4096)


def spectral_norm(matrix: np.ndarray, tolerance: float = 1e-6, max_iterations: int = 1000) -> float:
    """The largest singular value: exact for small matrices, power iteration on MᵀM for large ones.

    Power iteration approaches σ_max from below; it stops when an iteration changes the estimate
    by less than `tolerance` (relative), accurate to well under 1% even when the top singular
    values are close, plenty for a threshold.
    """
    if min(matrix.shape) <= EXACT_UP_TO:
        return float(np.linalg.norm(matrix, 2))
    vector = np.random.default_rng(0).normal(size=matrix.shape[1])
    vector /= np.linalg.norm(vector)
    estimate = 0.0
    for _ in range(max_iterations):
        image = matrix @ vector
        vector = matrix.T @ image
        length = float(np.linalg.norm(vector))
        if length == 0.0:
            return 0.0
        vector /= length
        previous, estimate = estimate, float(np.sqrt(length))
        if abs(estimate - previous) <= tolerance * estimate:
            break
    return estimate
