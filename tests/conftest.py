"""Shared test helpers: where the models are, and ground truth from Keras's own objects.

Truth comes from Keras and tf-keras (`get_weights()` on the loaded layers, walked through
Keras's object model: `model.layers`, `Bidirectional.forward_layer`, `RNN.cell.cells`), never
from grucli's reader.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# pytest-xdist's workers set COLUMNS=80 and LINES=24; grucli sizes its tables by COLUMNS, and the
# tests expect the width a plain run has (120, grucli's default off a terminal) unless they set one.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
REAL = ROOT.parent / "shared" / "real_models"

# Gate order of each Keras layer family, from the Keras documentation and sources.
KERAS_GATE_ORDER = {"GRU": ("z", "r", "h"), "LSTM": ("i", "f", "c", "o"), "SimpleRNN": ("h",)}


def sample(name: str) -> Path:
    return SAMPLES / name


def real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/real_models beside the checkout)")
    return path


def family(layer_or_cell: Any) -> str:
    name = type(layer_or_cell).__name__
    for kind in ("SimpleRNN", "GRU", "LSTM"):
        if name.startswith(kind) or name.startswith("ConvLSTM") and kind == "LSTM":
            return kind
    raise AssertionError(f"not a recurrent layer: {name}")


def keras_recurrent_weights(model: Any, prefix: str = "") -> Iterator[tuple[str, str, list[np.ndarray]]]:
    """(grucli path, family, get_weights()) of every recurrent layer, via Keras's object model."""
    for layer in model.layers:
        name = type(layer).__name__
        path = f"{prefix}{layer.name}"
        if hasattr(layer, "layers") and name in ("Sequential", "Functional", "Model"):
            yield from keras_recurrent_weights(layer, prefix=f"{path}/")
        elif name == "Bidirectional":
            yield f"{path}/forward", family(layer.forward_layer), layer.forward_layer.get_weights()
            yield f"{path}/backward", family(layer.backward_layer), layer.backward_layer.get_weights()
        elif name == "RNN":
            cells = getattr(layer.cell, "cells", None)
            if cells is None:
                yield path, family(layer.cell), layer.get_weights()
            else:
                for index, cell in enumerate(cells):
                    yield f"{path}/cell_{index}", family(cell), [np.asarray(w) for w in cell.weights]
        elif any(name.startswith(kind) for kind in ("GRU", "LSTM", "SimpleRNN", "ConvLSTM")):
            yield path, family(layer), layer.get_weights()


def expected_gate_slices(kind: str, weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Split Keras weights by gate along the last axis: the documented Keras layout."""
    gates = KERAS_GATE_ORDER[kind]
    expected: dict[str, np.ndarray] = {}
    kernel, recurrent = weights[0], weights[1]
    for gate, block in zip(gates, np.split(kernel, len(gates), axis=-1)):
        expected[f"{gate}/kernel"] = block
    for gate, block in zip(gates, np.split(recurrent, len(gates), axis=-1)):
        expected[f"{gate}/recurrent_kernel"] = block
    if len(weights) == 3:
        bias = weights[2]
        if bias.ndim == 2:
            for gate, block in zip(gates, np.split(bias[0], len(gates))):
                expected[f"{gate}/bias"] = block
            for gate, block in zip(gates, np.split(bias[1], len(gates))):
                expected[f"{gate}/recurrent_bias"] = block
        else:
            for gate, block in zip(gates, np.split(bias, len(gates))):
                expected[f"{gate}/bias"] = block
    return expected


# Keras 3, tf-keras and TensorFlow make the ground truth (the `test` extra). Without them the tests
# that need them are skipped, so the TensorFlow-free half of the suite runs on its own.
KERAS_READY = all(importlib.util.find_spec(name) is not None for name in ("keras", "tf_keras", "tensorflow"))
needs_keras = pytest.mark.skipif(not KERAS_READY, reason="needs Keras 3, tf-keras and TensorFlow (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def keras3() -> Any:
    return pytest.importorskip("keras", reason="Keras 3 makes this test's ground truth (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def tf_keras() -> Any:
    return pytest.importorskip("tf_keras", reason="tf-keras makes this test's ground truth (pip install -e '.[test]')")
