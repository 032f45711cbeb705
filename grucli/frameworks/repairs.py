"""Config repairs that let a framework build a file it refuses as saved: Keras 1 setting names, the
Keras 2.1 list-style Sequential, GRUs saved before `reset_after` existed, CuDNN layers. Applied to a
copy in memory, never on disk; each repair is described for the report.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

from grucli.model import paths
from grucli.model.records import ModelFile, ModelLayers
from grucli.model.registry import (
    FUNCTIONAL_CLASS,
    INPUT_CLASS,
    KERAS1_SETTING_NAMES,
    KERAS2_CONV1D_CLASS,
    family_named,
    family_of,
    holds_recurrent,
    is_cudnn_class,
    is_input_layer,
    is_keras1_conv1d,
    is_legacy_functional,
    is_sequential,
    kind_of,
)


def raw_config(model: ModelFile) -> dict[str, Any]:
    root = model.root
    config: dict[str, Any] = {"class_name": root.class_name, "config": copy.deepcopy(dict(root.config))}
    if root.module is not None:  # Keras 3 finds its classes by module (keras.src.models.functional)
        config["module"] = root.module
    return config


# Where a layer config nests another layer's (Bidirectional, TimeDistributed, RNN and its cells).
NESTING_KEYS = ("layer", "backward_layer", "cell", "cells")


def repair_config(config: dict[str, Any], layers: ModelLayers, repairs: list[str], keras3: bool = False) -> dict[str, Any]:
    reset_after = {paths.last_name(layer.path): layer.config.get("reset_after") for layer in layers.recurrent if layer.family.two_row_bias}
    inner = config["config"]
    if is_sequential(config["class_name"]) and set(inner) == {"layers"}:
        inner["name"] = "sequential"
        repairs.append("wrapped the Keras 2.1 list-style Sequential config in a dict")
    if is_sequential(config["class_name"]) and isinstance(inner.get("layers"), list) and inner["layers"]:
        first = inner["layers"][0]
        shape = first.get("config", {}).pop("batch_input_shape", None) if not is_input_layer(str(first.get("class_name"))) else None
        if shape is not None:
            # Keras 3 reads a first layer's batch_input_shape as an input shape (one axis too
            # many: (None, None, 300, 1)): give the model an InputLayer of that batch shape.
            inner["layers"].insert(0, {"class_name": INPUT_CLASS, "config": {"batch_input_shape": shape, "name": "input"}})
            repairs.append(f"moved batch_input_shape {shape} of the first layer into an InputLayer")
    for layer in _walk_configs(config):
        layer_config = layer.get("config", {})
        if is_keras1_conv1d(str(layer.get("class_name"))):
            layer["class_name"] = KERAS2_CONV1D_CLASS
            repairs.append(f"{layer_config.get('name')}: Keras 1 Convolution1D read as Conv1D")
        class_name = str(layer.get("class_name"))
        keras1_names = KERAS1_SETTING_NAMES.get(class_name, {})
        renamed = [(old, new) for old, new in keras1_names.items() if old in layer_config and "units" not in layer_config]
        for old, new in renamed:
            value = layer_config.pop(old)
            if new:
                layer_config[new] = value
        if renamed:
            repairs.append(f"{layer_config.get('name')}: Keras 1 settings " + ", ".join(f"{o}→{n or '(dropped)'}" for o, n in renamed))
        family = family_named(class_name)
        if family is not None and family.two_row_bias and "reset_after" not in layer_config:
            name = layer_config.get("name")
            value = reset_after.get(name, reset_after.get(f"forward_{name}", False))
            layer_config["reset_after"] = bool(value)
            repairs.append(f"{class_name} {name}: added reset_after={bool(value)} (no key in the config; the bias shape decides)")
        if is_cudnn_class(class_name):
            kind = str(kind_of(class_name))
            layer["class_name"] = kind
            layer_config.update({"activation": "tanh", "recurrent_activation": "sigmoid"})
            if family_of(kind).two_row_bias:
                layer_config["reset_after"] = True
            repairs.append(f"{layer_config.get('name')}: {class_name} became {kind} with the equivalent settings")
    if keras3:
        _functional_class_names(config, repairs)
        _initial_states_as_keywords(config, repairs)
        _name_nested_modules(config, repairs)
        _drop_initializer_dtypes(config, repairs)
    return config


def declare_input_shape(config: dict[str, Any], shapes: Sequence[tuple[int, ...]], repairs: list[str]) -> None:
    """A Sequential whose config declares no input shape (tf.keras 2 kept `TimeDistributed(Conv2D(...,
    input_shape=S))`'s S on the inner layer) is built by the framework only when first called, so
    it has no graph to probe: given the input it is verified on, it gets an InputLayer of that shape."""
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not is_sequential(str(config.get("class_name"))) or not layers or len(shapes) != 1 or not isinstance(layers[0], dict):
        return
    first = layers[0].get("config", {})
    if is_input_layer(str(layers[0].get("class_name"))) or any(key in first for key in ("batch_shape", "batch_input_shape", "input_shape")):
        return
    batch_shape = [None, *shapes[0][1:]]
    layers.insert(0, {"class_name": INPUT_CLASS, "config": {"batch_input_shape": batch_shape, "name": "input"}})
    repairs.append(f"the config declares no input shape: built with an InputLayer of the input's shape {batch_shape}")


def _functional_class_names(config: dict[str, Any], repairs: list[str]) -> None:
    """tf.keras 2.2 saved functional models as class "Model", which Keras 3 builds as an empty
    subclassed Model (no inputs, no outputs); Keras 3 calls them "Functional"."""
    for layer in _walk_configs(config):
        inner = layer["config"]
        if is_legacy_functional(str(layer.get("class_name"))) and "input_layers" in inner and "output_layers" in inner:
            layer["class_name"] = FUNCTIONAL_CLASS
            repairs.append(f"{inner.get('name', 'the model')}: class Model (tf.keras 2.2's name for a functional model) read as Functional")


def _initial_states_as_keywords(config: dict[str, Any], repairs: list[str]) -> None:
    """Keras 2 saved `decoder(x, initial_state=[h, c])` as one call on the list [x, h, c], which a
    Keras 3 recurrent layer refuses: rewrite such a call in Keras 3's form, x as the argument and
    the states as `initial_state=` (tensors placed by name, node and index, as saved)."""
    for layer in _walk_configs(config):
        nodes = layer.get("inbound_nodes")
        if not holds_recurrent(str(layer.get("class_name"))) or not isinstance(nodes, list):
            continue
        for index, node in enumerate(nodes):
            if not (isinstance(node, list) and len(node) > 1 and all(isinstance(item, list) and len(item) >= 3 for item in node)):
                continue
            kwargs = dict(node[0][3]) if len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
            kwargs["initial_state"] = [_keras_tensor(item) for item in node[1:]]
            nodes[index] = {"args": [_keras_tensor(node[0])], "kwargs": kwargs}
            repairs.append(f"{layer['config'].get('name')}: the Keras 2 call on [x, *states] given as initial_state=")


def _keras_tensor(item: list[Any]) -> dict[str, Any]:
    # Keras 3 swaps this placeholder's shape and dtype for the tensor its history names.
    return {"class_name": "__keras_tensor__", "config": {"shape": [], "dtype": "float32", "keras_history": list(item[:3])}}


def _drop_initializer_dtypes(config: dict[str, Any], repairs: list[str]) -> None:
    """tf.keras 2.2 recorded a dtype in each initializer's config, which Keras 3's initializers
    refuse. Initializers only draw the starting weights, which the file's weights replace."""
    dropped = 0
    for layer in _walk_configs(config):
        for key, value in layer.get("config", {}).items():
            if key.endswith("_initializer") and isinstance(value, dict) and isinstance(value.get("config"), dict):
                dropped += value["config"].pop("dtype", None) is not None
    if dropped:
        repairs.append(f"dropped the dtype of {dropped} initializer configs (tf.keras 2.2 kept one; Keras 3 refuses it)")


def _name_nested_modules(config: dict[str, Any], repairs: list[str]) -> None:
    """Keras 3 looks up a layer nested in another (Bidirectional(RNN(LSTMCell)) of tf.keras 2) by its
    module, which Keras 2 configs do not record: name keras.layers for those that lack one."""
    named = []
    for layer in _walk_configs(config):
        for key in NESTING_KEYS:
            nested = layer.get("config", {}).get(key)
            for inner in nested if isinstance(nested, list) else [nested]:
                if isinstance(inner, dict) and "class_name" in inner and "module" not in inner:
                    inner["module"] = "keras.layers"
                    named.append(f"{inner['class_name']} in {layer['config'].get('name', layer['class_name'])}")
    if named:
        repairs.append(f"named the module keras.layers for nested layers: {', '.join(named)}")


def layer_classes(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(name, class) of every layer in a model config: members of models, wrapped layers and cells
    (StackedRNNCells too: its `cells` are one of the nesting keys)."""
    stack = [config]
    while stack:
        spec = stack.pop()
        inner = spec.get("config")
        yield str(inner.get("name", "?") if isinstance(inner, dict) else "?"), str(spec.get("class_name"))
        if not isinstance(inner, dict):
            continue
        for key in ("layers", *NESTING_KEYS):
            nested = inner.get(key)
            stack.extend(
                item for item in (nested if isinstance(nested, list) else [nested]) if isinstance(item, dict) and "class_name" in item
            )


def _walk_configs(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if "class_name" in value and isinstance(value.get("config"), dict):
            yield value
        for item in value.values():
            yield from _walk_configs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_configs(item)


def drop_keys(config: dict[str, Any], class_name: str, keys: Sequence[str]) -> None:
    for layer in _walk_configs(config):
        if layer.get("class_name") == class_name:
            for key in keys:
                layer["config"].pop(key, None)
