"""Config repairs that let a framework build a file it refuses as saved: Keras 1 setting names, the
Keras 2.1 list-style Sequential, GRUs saved before `reset_after` existed, CuDNN layers. Applied to a
copy in memory, never on disk; each repair is described for the report.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator, Sequence

from grucli import paths
from grucli.model import ModelFile, ModelLayers

# Keras 1 config keys and their Keras 2 names (None: no longer a setting).
KERAS1_NAMES = {
    "output_dim": "units", "inner_activation": "recurrent_activation", "dropout_W": "dropout",
    "dropout_U": "recurrent_dropout", "consume_less": None, "input_dim": None, "input_length": None,
}


def raw_config(model: ModelFile) -> dict[str, Any]:
    root = model.root
    config: dict[str, Any] = {"class_name": root.class_name, "config": copy.deepcopy(dict(root.config))}
    return config


def repair_config(config: dict[str, Any], layers: ModelLayers, repairs: list[str]) -> dict[str, Any]:
    reset_after = {paths.last_name(layer.path): layer.config.get("reset_after") for layer in layers.recurrent if layer.kind == "GRU"}
    inner = config["config"]
    if config["class_name"] == "Sequential" and set(inner) == {"layers"}:
        inner["name"] = "sequential"
        repairs.append("wrapped the Keras 2.1 list-style Sequential config in a dict")
        first = inner["layers"][0] if inner["layers"] else {}
        shape = first.get("config", {}).pop("batch_input_shape", None)
        if shape is not None:
            # Keras 3 reads a layer's batch_input_shape as an input shape: give it an InputLayer.
            inner["layers"].insert(0, {"class_name": "InputLayer", "config": {"batch_input_shape": shape, "name": "input"}})
            repairs.append(f"moved batch_input_shape {shape} of the first layer into an InputLayer")
    for layer in _walk_configs(config):
        layer_config = layer.get("config", {})
        keras1_names = KERAS1_NAMES if layer.get("class_name") in ("GRU", "LSTM", "SimpleRNN") else (
            {"output_dim": "units"} if layer.get("class_name") == "Dense" else {})
        renamed = [(old, new) for old, new in keras1_names.items() if old in layer_config and "units" not in layer_config]
        for old, new in renamed:
            value = layer_config.pop(old)
            if new:
                layer_config[new] = value
        if renamed:
            repairs.append(f"{layer_config.get('name')}: Keras 1 settings " + ", ".join(f"{o}→{n or '(dropped)'}" for o, n in renamed))
        if layer.get("class_name") == "GRU" and "reset_after" not in layer_config:
            name = layer_config.get("name")
            value = reset_after.get(name, reset_after.get(f"forward_{name}", False))
            layer_config["reset_after"] = bool(value)
            repairs.append(f"GRU {name}: added reset_after={bool(value)} (no key in the config; the bias shape decides)")
        if layer.get("class_name") in ("CuDNNGRU", "CuDNNLSTM"):
            kind = layer["class_name"][5:]
            layer["class_name"] = kind
            layer_config.update({"activation": "tanh", "recurrent_activation": "sigmoid"})
            if kind == "GRU":
                layer_config["reset_after"] = True
            repairs.append(f"{layer_config.get('name')}: Cu{'DNN'}{kind} became {kind} with the equivalent settings")
    return config


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
