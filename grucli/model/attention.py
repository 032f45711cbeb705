"""Where a MultiHeadAttention layer keeps its weights: the query, key, value and output
projections, found by their sublayer names (Keras 3 `query_dense` ... `output_dense`, tf-keras
`query`, `key`, `value`, `attention_output`) and checked against the shapes its call needs.
Read by the replay and by convert.

May import: numpy, model/records, errors.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from grucli.errors import ModelFileError
from grucli.model.records import RawLayer

PROJECTIONS: Mapping[str, tuple[str, str]] = {"query": ("query_dense", "query"), "key": ("key_dense", "key"),
                                              "value": ("value_dense", "value"), "output": ("output_dense", "attention_output")}


def mha_projections(layer: RawLayer, path: str, shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]],
                    use_bias: bool) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """{role: (kernel, bias or None)} for the roles of `shapes` ({role: (kernel shape, bias shape)})."""
    found: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for role, (kernel_shape, bias_shape) in shapes.items():
        owned = [w for w in layer.weights if any(f"/{sub}/" in f"/{w.name}" for sub in PROJECTIONS[role])]
        kernels = [w for w in owned if w.array.shape == kernel_shape]
        biases = [w for w in owned if w.array.shape == bias_shape] if use_bias else []
        if len(kernels) != 1 or len(owned) != 1 + int(use_bias) or use_bias and len(biases) != 1:
            raise ModelFileError(f"layer {path} (MultiHeadAttention) stores {[(w.name, w.array.shape) for w in owned] or 'no weights'} "
                                 f"for its {role} projection; expected a kernel {kernel_shape}" + (f" and a bias {bias_shape}" if use_bias else ""))
        found[role] = (np.asarray(kernels[0].array), np.asarray(biases[0].array) if use_bias else None)
    if sum(1 + int(use_bias) for _ in shapes) != len(layer.weights):
        raise ModelFileError(f"layer {path} (MultiHeadAttention) stores {len(layer.weights)} weights; expected {4 * (1 + int(use_bias))}")
    return found
