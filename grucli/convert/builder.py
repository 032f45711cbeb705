"""The ONNX graph under construction: its nodes and initializers, fresh tensor names, constants,
Keras activations as ONNX operators, and what the recurrent converters record (the nodes they
wrote, the state inputs and outputs of --state-io and stateful layers).

Every converter writes through a `GraphBuilder`; the walk of the model (onnx_graph.py) owns one.
The builder knows nothing of layers or of the walk, so the converters and the walk import it, and
it imports none of them: convert/'s modules import one way (symbols ← builder ← converters ←
layers ← onnx_graph).

May import: onnx, numpy, convert/symbols, model/, errors.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from grucli.convert.symbols import ELEMENTWISE_OPS, HARD_SIGMOID, ConvertError
from grucli.model.records import RecurrentLayer
from grucli.model.semantics import Semantics


class GraphBuilder:
    """Nodes and initializers of one ONNX graph, and the facts the recurrent converters record."""

    def __init__(self, recurrent: Mapping[str, RecurrentLayer], semantics: Semantics, state_io: bool = False) -> None:
        import onnx  # imported here: reading files never needs it

        self.onnx = onnx
        self.semantics = semantics
        self.recurrent: Mapping[str, RecurrentLayer] = recurrent
        self.state_io = state_io
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.recurrent_nodes: list[str] = []  # "path: ONNX GRU" for every recurrent layer written
        self.state_inputs: list[tuple[str, int]] = []  # (graph input, units)
        self.state_outputs: list[tuple[str, str]] = []  # (graph output, the tensor it shows)
        self._names = itertools.count()
        self.used: set[str] = set()  # every name given out or reserved: no two tensors share one

    def reserve(self, names: Sequence[str]) -> None:
        """Names the graph's inputs take (the Keras model's): never given to an inner tensor."""
        self.used.update(names)

    def name(self, base: str) -> str:
        name = f"{base}_{next(self._names)}"
        while name in self.used:
            name = f"{base}_{next(self._names)}"
        self.used.add(name)
        return name

    def constant(self, array: np.ndarray | np.floating[Any] | float, base: str) -> str:
        """A float32 constant (weights, scales)."""
        return self.constant_of(np.asarray(array, dtype=np.float32), base)

    def constant_of(self, array: np.ndarray, base: str) -> str:
        """A constant of the array's own element type (float32, int64 or bool)."""
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def int_constant(self, values: Sequence[int] | int, base: str) -> str:
        """An int64 constant (axes, shapes, indices)."""
        return self.constant_of(np.asarray(values, dtype=np.int64), base)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[Any]]:
        """Nodes made inside the block go to the list it yields (a Scan's body), not the graph."""
        outer, self.nodes = self.nodes, []
        try:
            yield self.nodes
        finally:
            self.nodes = outer

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attributes: Any) -> list[str]:
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), names, **attributes))
        return names

    def one(self, op: str, inputs: Sequence[str], **attributes: Any) -> str:
        return self.node(op, inputs, **attributes)[0]

    def activation(self, name: str | None, x: str, path: str) -> str:
        """An activation applied elementwise (or softmax on the last axis), exactly as Keras defines it."""
        if name in (None, "linear"):
            return x
        if name in ELEMENTWISE_OPS:
            op, attributes = ELEMENTWISE_OPS[name]
            return self.one(op, [x], **attributes)
        if name == "hard_sigmoid":
            alpha, beta = HARD_SIGMOID[self.semantics]
            return self.one("HardSigmoid", [x], alpha=alpha, beta=beta)
        if name in ("swish", "silu"):
            return self.one("Mul", [x, self.one("Sigmoid", [x])])
        if name == "relu6":
            return self.one("Clip", [x, self.constant(np.float32(0), "zero"), self.constant(np.float32(6), "six")])
        raise ConvertError(f"layer {path}: activation {name!r} is not one convert writes exactly")
