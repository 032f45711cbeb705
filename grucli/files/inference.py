"""Files without a config: a layer tree inferred from group names and weight shapes (which recurrent
class stores weights of these shapes is the family registry's to say).

May import: files/hdf5, files/tree, files/budget, model/, errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import h5py

from grucli.files.budget import Budget
from grucli.files.hdf5 import (
    Group,
    child_group,
    collect_vars,
    legacy_layer_weights,
    member_names,
    read_list_attribute,
    weight_segments,
)
from grucli.files.tree import attr_text
from grucli.model import paths
from grucli.model.records import (
    NamedArray,
    RawLayer,
)
from grucli.model.registry import (
    BIDIRECTIONAL_CLASS,
    LEGACY_FUNCTIONAL_CLASS,
    RNN_CLASS,
    UNKNOWN_CLASS,
    class_for_layout,
    keras1_class,
)


def infer_keras3_group(group: Group, key: str, budget: Budget) -> RawLayer:
    """Infer a layer subtree from a Keras 3 weights group (no config to go by)."""
    budget.layer(f"{group.name}")
    vars_group = child_group(group, "vars")
    name = attr_text(vars_group.attrs.get("name")) if vars_group is not None else None
    name = name or key
    layers = child_group(group, "layers")
    if layers is not None:
        members = [(k, child_group(layers, k)) for k in sorted(member_names(layers))]
        children = tuple(("layers", infer_keras3_group(member, k, budget)) for k, member in members if member is not None)
        return RawLayer(name, LEGACY_FUNCTIONAL_CLASS, {"name": name}, children=children, inferred=True)
    forward, backward = child_group(group, "forward_layer"), child_group(group, "backward_layer")
    if forward is not None and backward is not None:
        children = (
            (paths.FORWARD, infer_keras3_group(forward, "forward_layer", budget)),
            (paths.BACKWARD, infer_keras3_group(backward, "backward_layer", budget)),
        )
        return RawLayer(name, BIDIRECTIONAL_CLASS, {"name": name}, children=children, inferred=True)
    cells = child_group(child_group(group, "cell"), "cells")
    if cells is not None:
        members = [(k, child_group(cells, k)) for k in sorted(member_names(cells), key=natural_key)]
        children = tuple(
            (paths.stacked_cell_role(index), infer_keras3_group(member, k, budget))
            for index, (k, member) in enumerate(members)
            if member is not None
        )
        return RawLayer(name, RNN_CLASS, {"name": name}, children=children, inferred=True)
    weights = tuple(collect_vars(group, budget))
    return RawLayer(name, infer_class(weights) or UNKNOWN_CLASS, {"name": name}, weights=weights, inferred=True)


def natural_key(key: str) -> tuple[str, int]:
    # `gru_cell`, `gru_cell_1`, `gru_cell_2`: creation order, which is the stacking order.
    match = re.fullmatch(r"(.*?)(?:_([0-9]{1,9}))?", key)
    assert match is not None
    return (match.group(1), int(match.group(2) or -1))


def infer_legacy_weights(handle: h5py.File, budget: Budget) -> RawLayer:
    children = []
    for name in read_list_attribute(handle, "layer_names"):
        weights = legacy_layer_weights(child_group(handle, name), budget)
        children.append(("layers", infer_legacy_layer(name, weights, budget)))
    return RawLayer("model", LEGACY_FUNCTIONAL_CLASS, {"name": "model"}, children=tuple(children), inferred=True)


def infer_legacy_layer(name: str, weights: tuple[NamedArray, ...], budget: Budget) -> RawLayer:
    budget.layer(f"layer {name}")
    directions = [_direction(w.name) for w in weights]
    if weights and "forward" in directions and "backward" in directions and len(weights) % 2 == 0:
        half = len(weights) // 2
        children = (
            (paths.FORWARD, infer_legacy_layer(f"forward_{name}", weights[:half], budget)),
            (paths.BACKWARD, infer_legacy_layer(f"backward_{name}", weights[half:], budget)),
        )
        return RawLayer(name, BIDIRECTIONAL_CLASS, {"name": name}, children=children, inferred=True)
    return RawLayer(name, infer_class(weights) or UNKNOWN_CLASS, {"name": name}, weights=weights, inferred=True)


def _direction(weight_name: str) -> str | None:
    for segment in weight_segments(weight_name):
        if segment.startswith("forward_"):
            return "forward"
        if segment.startswith("backward_"):
            return "backward"
    return None


def infer_class(weights: Sequence[NamedArray]) -> str | None:
    """The recurrent layer class that stores weights of these shapes, or None.

    kernel (..., in, k*u), recurrent kernel (..., u, k*u): k gate blocks give the family; a kernel
    window in front makes it ConvLSTM; 9 or 12 per-gate arrays are Keras 1; a bias twice the usual
    length is a CuDNN layer (model/registry.py knows which family is which).
    """
    shapes = [tuple(w.array.shape) for w in weights]
    keras1 = keras1_class(len(shapes))
    if keras1 is not None and all(len(s) in (1, 2) for s in shapes):
        return keras1
    if len(shapes) not in (2, 3):
        return None
    kernel, recurrent = shapes[0], shapes[1]
    if len(kernel) < 2 or len(recurrent) != len(kernel) or recurrent[-1] != kernel[-1]:
        return None
    units = recurrent[-2]
    if units == 0 or recurrent[-1] % units:
        return None
    gate_count = recurrent[-1] // units
    bias = shapes[2] if len(shapes) == 3 else None
    return class_for_layout(gate_count, len(kernel) - 2, bias == (2 * gate_count * units,))
