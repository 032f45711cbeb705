"""ONNX files as grucli's layer trees: each GRU, LSTM and RNN node a recurrent module (one layer per
direction), Gemm and MatMul + Add of constant weights dense layers, Gather from a constant table an
embedding; read with the `onnx` package (the optional extra), never run.

A node's W (directions, G·u, input), R (directions, G·u, u) and B (directions, 2·G·u) must be
constants of the graph (initializers, or Constant nodes): weights computed at run time, recurrent
nodes inside an If, Loop or Scan body, LSTM peepholes, `input_forget` and `clip` are refused by
name. A graph with no recurrent node is refused too, saying so (tf2onnx writes Keras's GRUs as a
Loop of their step). The file's size, its nodes and every constant are charged to the read's
budget before they are decoded; tensors stored outside the file (external data) are refused.

May import: onnx, numpy, files/budget, files/regular, model/, errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grucli.errors import ModelFileError, first_line, install_hint
from grucli.files.budget import Budget
from grucli.files.regular import regular_file_size
from grucli.model.records import NamedArray, RawLayer
from grucli.model.registry import FAMILIES, LEGACY_FUNCTIONAL_CLASS, SOURCE_MODULE_CLASS, Family
from grucli.model.sources import ONNX

RECURRENT_OPS: Mapping[str, Family] = {family.onnx_op: family for family in FAMILIES if family.onnx_op is not None}
LOOPS = ("Loop", "Scan", "If")
# ONNX activations Keras computes exactly, by name (HardSigmoid's alpha and beta are checked where it is ported).
KERAS_ACTIVATIONS: Mapping[str, str] = {
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Relu": "relu",
    "Softsign": "softsign",
    "Softplus": "softplus",
}
DEFAULT_ACTIVATIONS: Mapping[str, tuple[str, ...]] = {"GRU": ("Sigmoid", "Tanh"), "LSTM": ("Sigmoid", "Tanh", "Tanh"), "RNN": ("Tanh",)}


def read_onnx(path: Path, budget: Budget) -> tuple[RawLayer, tuple[str, ...]]:
    """The layer tree of an ONNX file, and notes on how it was read."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ModelFileError(
            f"reading {path} needs the onnx package, which cannot be imported ({first_line(exc)}); install it with {install_hint('onnx')}"
        ) from None
    size = regular_file_size(path, str(path))
    budget.array(size, f"{path}: the ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own: the bytes are not a model
        raise ModelFileError(f"cannot read {path} as ONNX: {type(exc).__name__}: {first_line(exc)}") from None
    graph = model.graph
    budget.entries(len(graph.node) + len(graph.initializer), f"{path}: the ONNX graph")
    constants = _constants(graph, path, budget, numpy_helper)
    _refuse_nested_recurrence(graph, path, onnx)
    children: list[tuple[str, RawLayer]] = []
    scopes = _module_scopes(graph)
    for index, node in enumerate(graph.node):
        name = module_path(node.name, node.op_type, index)
        if node.op_type in RECURRENT_OPS:
            budget.layer(f"{path}: node {name}")
            children.append(("layers", _recurrent(node, name, constants, path, onnx, scopes[index])))
        elif node.op_type in ("Gemm", "MatMul", "Gather"):
            found = _plain(node, name, index, graph.node, constants)
            if found is not None:
                children.append(("layers", found))
    if not any(layer.class_name == SOURCE_MODULE_CLASS or layer.config.get("source_kind") == "recurrent" for _, layer in children):
        loops = sorted({node.op_type for node in graph.node if node.op_type in LOOPS})
        lowered = (
            (
                f"; the graph has {', '.join(loops)} nodes: its recurrent layers were lowered to a loop of their steps "
                "(tf2onnx does this to Keras GRUs), whose weights no recurrent node names"
            )
            if loops
            else ""
        )
        raise ModelFileError(f"{path}: no ONNX GRU, LSTM or RNN node was found{lowered}")
    root = RawLayer(
        graph.name or "model", LEGACY_FUNCTIONAL_CLASS, {"name": graph.name or "model"}, children=tuple(children), inferred=True
    )
    notes = (f"read from an ONNX graph (opset {_opset(model)}, producer {model.producer_name or 'not recorded'})",)
    return root, notes


def module_path(node_name: str, op_type: str, index: int) -> str:
    """A node's name as a grucli path: `/rnn/GRU` (torch.onnx's names) is `rnn.GRU`; unnamed nodes get `GRU_3`."""
    cleaned = ".".join(part for part in node_name.split("/") if part)
    return cleaned or f"{op_type}_{index}"


def _module_scopes(graph: Any) -> dict[int, tuple[str, int]]:
    """Each recurrent node's module and its place in it: torch.onnx.export names a module's nodes after
    it (`/rnn/GRU`, `/rnn/GRU_1`: the two layers of nn.GRU(num_layers=2) named rnn), so nodes that
    share a scope are one module's layers, in graph order; a node without a scope is a module of its own."""
    scopes: dict[int, tuple[str, int]] = {}
    counts: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        if node.op_type not in RECURRENT_OPS:
            continue
        parts = [part for part in node.name.split("/") if part]
        scope = ".".join(parts[:-1]) if len(parts) > 1 else module_path(node.name, node.op_type, index)
        scopes[index] = (scope, counts.get(scope, 0))
        counts[scope] = counts.get(scope, 0) + 1
    return scopes


def _opset(model: Any) -> str:
    return ", ".join(str(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")) or "?"


def _constants(graph: Any, path: Path, budget: Budget, numpy_helper: Any) -> dict[str, np.ndarray]:
    """The graph's initializers and Constant nodes' values, by tensor name, each charged first."""
    constants: dict[str, np.ndarray] = {}
    tensors = [(tensor.name, tensor) for tensor in graph.initializer]
    tensors += [
        (node.output[0], attribute.t)
        for node in graph.node
        if node.op_type == "Constant"
        for attribute in node.attribute
        if attribute.name == "value" and node.output
    ]
    for name, tensor in tensors:
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            raise ModelFileError(
                f"{path}: tensor {name!r} keeps its data in another file (external data); grucli reads only the file it is given"
            )
        budget.array(int(np.prod(tensor.dims, dtype=np.float64)) * 8, f"{path}: tensor {name!r} of shape {tuple(tensor.dims)}")
        try:
            constants[name] = numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as exc:  # onnx's own refusal of a tensor's bytes
            raise ModelFileError(f"{path}: tensor {name!r} cannot be read ({first_line(exc)})") from None
    return constants


def _refuse_nested_recurrence(graph: Any, path: Path, onnx: Any) -> None:
    for outer, inner in _subgraphs(graph, onnx, 0):
        for node in inner.node:
            if node.op_type in RECURRENT_OPS:
                raise ModelFileError(
                    f"{path}: the {node.op_type} node {node.name or '(unnamed)'} sits inside the body of "
                    f"{outer.op_type} node {outer.name or '(unnamed)'}; grucli reads recurrent nodes of the main graph"
                )


def _subgraphs(graph: Any, onnx: Any, depth: int) -> Iterator[tuple[Any, Any]]:
    if depth > 32:
        raise ModelFileError("the ONNX graph nests subgraphs more than 32 deep; expected a model graph")
    for node in graph.node:
        for attribute in node.attribute:
            bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for body in bodies:
                yield node, body
                yield from _subgraphs(body, onnx, depth + 1)


def _attributes(node: Any, onnx: Any) -> dict[str, Any]:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


def _weight(node: Any, position: int, constants: Mapping[str, np.ndarray], name: str, role: str, path: Path) -> np.ndarray | None:
    if position >= len(node.input) or not node.input[position]:
        return None
    tensor = node.input[position]
    if tensor not in constants:
        raise ModelFileError(
            f"{path}: node {name} takes its {role} from {tensor!r}, which the graph computes; grucli reads "
            "recurrent weights that are constants of the graph (initializers)"
        )
    return constants[tensor]


def _recurrent(node: Any, name: str, constants: Mapping[str, np.ndarray], path: Path, onnx: Any, scope: tuple[str, int]) -> RawLayer:
    family = RECURRENT_OPS[node.op_type]
    attributes = _attributes(node, onnx)
    where = f"{path}: {node.op_type} node {name}"
    if attributes.get("clip") is not None:
        raise ModelFileError(f"{where} clips its pre-activations (clip={attributes['clip']}), which no Keras layer does")
    if attributes.get("input_forget"):
        raise ModelFileError(f"{where} couples its input and forget gates (input_forget=1), which no Keras LSTM does")
    if family.has_cell_state and _weight(node, 7, constants, name, "peepholes (P)", path) is not None:
        raise ModelFileError(f"{where} has peephole weights (P), which no Keras LSTM has")
    w = _weight(node, 1, constants, name, "W", path)
    r = _weight(node, 2, constants, name, "R", path)
    b = _weight(node, 3, constants, name, "B", path)
    assert w is not None and r is not None  # ONNX requires W and R; onnx.checker-valid graphs have them
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    if (
        w.ndim != 3
        or r.ndim != 3
        or w.shape[0] != len(directions)
        or r.shape[0] != len(directions)
        or (b is not None and (b.ndim != 2 or b.shape[0] != len(directions)))
    ):
        raise ModelFileError(f"{where}: W {w.shape}, R {r.shape}, B {None if b is None else b.shape} do not fit {direction}")
    onnx_activations = [a.decode() if isinstance(a, bytes) else str(a) for a in attributes.get("activations", [])]
    per_direction = len(DEFAULT_ACTIVATIONS[node.op_type])
    if not onnx_activations:
        onnx_activations = list(DEFAULT_ACTIVATIONS[node.op_type]) * len(directions)
    alphas, betas = list(attributes.get("activation_alpha", [])), list(attributes.get("activation_beta", []))
    layers = []
    for index, which in enumerate(directions):
        own = onnx_activations[index * per_direction : (index + 1) * per_direction]
        layer_name = which if len(directions) > 1 else name
        layers.append(_direction(family, node, layer_name, which, index, w, r, b, own, alphas, betas, attributes, name, scope))
    if len(layers) == 1:
        return layers[0]
    config = {
        "name": name,
        "source_layout": ONNX,
        "source_module": f"ONNX {node.op_type}",
        "source_kind": "recurrent",
        "onnx_node": node.name,
        "bidirectional": True,
    }
    return RawLayer(name, SOURCE_MODULE_CLASS, config, children=tuple(("layers", layer) for layer in layers), inferred=True)


def _direction(
    family: Family,
    node: Any,
    name: str,
    which: str,
    index: int,
    w: np.ndarray,
    r: np.ndarray,
    b: np.ndarray | None,
    activations: Sequence[str],
    alphas: Sequence[float],
    betas: Sequence[float],
    attributes: Mapping[str, Any],
    module: str,
    scope: tuple[str, int],
) -> RawLayer:
    keras = [KERAS_ACTIVATIONS.get(a) for a in activations]
    config: dict[str, Any] = {
        "name": name,
        "units": int(attributes.get("hidden_size", r.shape[-1])),
        "source_layout": ONNX,
        "source_module": f"ONNX {node.op_type}",
        "source_kind": "recurrent",
        "onnx_node": node.name,
        "source_roles": ["W", "R"] + (["B"] if b is not None else []),
        "use_bias": b is not None,
        "go_backwards": which == "reverse",
        "return_sequences": True,
        "onnx_activations": list(activations),
        "onnx_activation_alpha": list(alphas),
        "onnx_activation_beta": list(betas),
        "layout": int(attributes.get("layout", 0)),
        "module_path": scope[0],
        "layer_index": scope[1],
        "direction": which,
    }
    if family.uses_recurrent_activation:
        # Keras's candidate and (LSTM) cell output share one activation: ONNX's g and h must agree.
        same = len(set(keras[1:])) == 1
        config.update(recurrent_activation=keras[0], activation=keras[1] if same else None)
    else:
        config["activation"] = keras[0]
    if family.two_row_bias:
        config["linear_before_reset"] = int(attributes.get("linear_before_reset", 0))
        config["reset_after"] = bool(config["linear_before_reset"])
    weights = [NamedArray(f"{module}.W[{index}]", w[index]), NamedArray(f"{module}.R[{index}]", r[index])]
    if b is not None:
        weights.append(NamedArray(f"{module}.B[{index}]", b[index]))
    return RawLayer(name, family.name, config, weights=tuple(weights), inferred=True)


def _plain(node: Any, name: str, index: int, nodes: Sequence[Any], constants: Mapping[str, np.ndarray]) -> RawLayer | None:
    """Dense layers (Gemm, MatMul + Add of constants) and embeddings (Gather from a constant table), in Keras's orientation."""
    if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in constants and constants[node.input[0]].ndim == 2:
        return _dense_like(name, "ONNX Gather", "embedding", [NamedArray(f"{name}.embeddings", constants[node.input[0]])])
    if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in constants:
        attributes = {a.name: a for a in node.attribute}
        if "transA" in attributes and attributes["transA"].i:
            return None
        kernel = constants[node.input[1]]
        kernel = kernel.T if "transB" in attributes and attributes["transB"].i else kernel
        weights = [NamedArray(f"{name}.kernel", kernel)]
        if len(node.input) > 2 and node.input[2] in constants:
            weights.append(NamedArray(f"{name}.bias", constants[node.input[2]]))
        return _dense_like(name, "ONNX Gemm", "linear", weights)
    if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in constants and constants[node.input[1]].ndim == 2:
        weights = [NamedArray(f"{name}.kernel", constants[node.input[1]])]
        follower = next((n for n in nodes[index + 1 :] if node.output[0] in n.input), None)
        if follower is not None and follower.op_type == "Add":
            other = [t for t in follower.input if t != node.output[0]]
            if other and other[0] in constants and constants[other[0]].ndim == 1:
                weights.append(NamedArray(f"{name}.bias", constants[other[0]]))
        return _dense_like(name, "ONNX MatMul", "linear", weights)
    return None


def _dense_like(name: str, module: str, kind: str, weights: list[NamedArray]) -> RawLayer:
    config = {
        "name": name,
        "module_path": name,
        "source_layout": ONNX,
        "source_module": module,
        "source_kind": kind,
        "orientation": "keras",
    }
    return RawLayer(name, module, config, weights=tuple(weights), inferred=True)


def input_time_axes(path: Path) -> dict[str, int | None]:
    """Which axis of each graph input is time (None where the graph does not say): convert --into's
    end-to-end proof feeds ONNX Runtime the Keras model's (batch, time, ...) input in the graph's order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {tensor.name: _time_axis(graph, tensor.name) for tensor in graph.input}


# Operators that keep an input's axes where they are (elementwise), or move them as their attributes say.
_PASSING = frozenset({"Cast", "Identity", "Dropout", "Relu", "Tanh", "Sigmoid", "Add", "Mul", "Sub", "Div"})


def _time_axis(graph: Any, name: str, depth: int = 0) -> int | None:
    """Which axis of graph tensor `name` is time, by following it to the first recurrent node it feeds
    (its `layout` says where time is: axis 0 by default) through Transpose (axes permuted), embedding
    lookups (Gather on a constant table: the ids' axes lead) and elementwise operators."""
    if depth > 64:
        return None
    constants = {tensor.name for tensor in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    for node in graph.node:
        if name not in node.input:
            continue
        if node.op_type in RECURRENT_OPS and node.input[0] == name:
            layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
            return 1 if layout else 0
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            inner = _time_axis(graph, node.output[0], depth + 1)
            return None if inner is None or perm is None or inner >= len(perm) else perm[inner]
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == name and node.input[0] in constants:
            inner = _time_axis(graph, node.output[0], depth + 1)
            return inner  # the ids' axes lead the looked-up vectors
        if node.op_type in _PASSING:
            found = _time_axis(graph, node.output[0], depth + 1)
            if found is not None:
                return found
    return None
