"""The settings grucli reads from a layer config, checked once, where the reader parses them.

Every key that any part of grucli reads (`units`, `return_sequences`, `batch_shape`,
`inbound_nodes`, ...) is checked here for the type it must have; a wrong one is refused with the
JSON path that holds it (`config.layers[2].config.units: expected an integer ≥ 0, found "abc"`).
Downstream code can then read a validated config without guarding against strings where
numbers belong, so an exception there is a bug in grucli, not a malformed file.
Keys grucli does not read are left alone: a file may hold settings of newer Keras versions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from grucli.errors import ModelFileError


class ConfigError(ModelFileError):
    """A config value of the wrong type or shape; the message names its JSON path."""


Check = Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _int_or_ints(value: Any) -> bool:
    return _is_int(value) or _list_of(_is_int)(value)


def _padding(value: Any) -> bool:
    """ "same"/"valid"/"causal", or ZeroPadding's amounts: 2, [1, 2], [[1, 1], [2, 2]]."""
    return isinstance(value, str) or _is_int(value) or _list_of(_int_or_ints)(value)


def _activation(value: Any) -> bool:
    """A name, or Keras 3's {"class_name": ..., "config": name or {"name": ...}}."""
    if value is None or isinstance(value, str):
        return True
    if not isinstance(value, Mapping):
        return False
    inner = value.get("config")
    if isinstance(inner, str):
        return True
    if isinstance(inner, Mapping) and isinstance(inner.get("name"), str):
        return True
    return isinstance(value.get("class_name"), str)


NUMERIC_DTYPES = frozenset(
    {
        "float16",
        "float32",
        "float64",
        "bfloat16",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
        "float8_e4m3fn",
        "float8_e5m2",
        "int4",
        "uint4",
    }
)


def _dtype(value: Any) -> bool:
    """A numeric dtype name, or a dtype policy {"class_name": "DTypePolicy"/"Policy", "config": {"name": ...}}
    naming one (`mixed_float16`: float16 compute, float32 variables). A layer computing in strings or
    complex numbers is nothing grucli (or a recurrent layer) computes."""
    if value is None:
        return True
    if isinstance(value, Mapping):
        inner = value.get("config")
        value = inner.get("name") if isinstance(inner, Mapping) else None
    return isinstance(value, str) and value.removeprefix("mixed_") in NUMERIC_DTYPES


def _tensor_ref(value: Any) -> bool:
    """input_layers / output_layers entry: [layer name, node index, tensor index]."""
    return isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str) and _count(value[1]) and _count(value[2])


def _tensor_refs(value: Any) -> bool:
    if value is None or value == []:
        return True
    if _tensor_ref(value):
        return True
    return isinstance(value, list) and all(_tensor_ref(item) for item in value)


_BOOL: Check = lambda value: isinstance(value, bool)  # noqa: E731
_NAMES = {
    "an integer ≥ 0": _count,
    "true or false": _BOOL,
    "a number": _is_number,
    "an activation name": _activation,
    "a list of dimensions (integers or null)": _list_of(_optional(_is_int)),
    "a list of integers": _list_of(_is_int),
    "an integer or a list of integers": _int_or_ints,
    "an integer, a list of integers or null": _optional(_int_or_ints),
    "a padding mode or amounts": _padding,
    "a string": lambda value: isinstance(value, str),
    "a string or null": _optional(lambda value: isinstance(value, str)),
    "a numeric dtype name or policy": _dtype,
    "an integer ≥ 0 or null": _optional(_count),
    "[layer name, node index, tensor index] or a list of them": _tensor_refs,
    "a list of layer configs (objects)": _list_of(lambda value: isinstance(value, Mapping)),
}
_KEY_EXPECTATIONS: Mapping[str, str] = {
    **dict.fromkeys(("units", "output_dim", "filters", "n", "rank"), "an integer ≥ 0"),
    "input_dim": "an integer ≥ 0",
    "input_length": "an integer ≥ 0 or null",
    **dict.fromkeys(
        (
            "use_bias",
            "reset_after",
            "return_sequences",
            "return_state",
            "go_backwards",
            "stateful",
            "unroll",
            "time_major",
            "zero_output_for_mask",
            "unit_forget_bias",
            "mask_zero",
            "center",
            "scale",
        ),
        "true or false",
    ),
    **dict.fromkeys(("dropout", "recurrent_dropout", "dropout_W", "dropout_U", "mask_value", "epsilon"), "a number"),
    **dict.fromkeys(("activation", "recurrent_activation", "inner_activation"), "an activation name"),
    **dict.fromkeys(("batch_shape", "batch_input_shape", "input_shape"), "a list of dimensions (integers or null)"),
    "target_shape": "a list of integers",
    "axis": "an integer or a list of integers",
    **dict.fromkeys(("kernel_size", "dilation_rate"), "an integer or a list of integers"),
    "strides": "an integer, a list of integers or null",  # pooling layers default strides to pool_size
    "padding": "a padding mode or amounts",
    "data_format": "a string or null",
    "merge_mode": "a string or null",
    "name": "a string",
    "dtype": "a numeric dtype name or policy",
    "layers": "a list of layer configs (objects)",
    **dict.fromkeys(("input_layers", "output_layers"), "[layer name, node index, tensor index] or a list of them"),
}
_CHECKS: Mapping[str, tuple[str, Check]] = {key: (expected, _NAMES[expected]) for key, expected in _KEY_EXPECTATIONS.items()}


def validate_layer_config(config: Mapping[str, Any], where: str) -> None:
    """Check every setting grucli reads in one layer's config; `where` is its JSON path."""
    for key, (expected, check) in _CHECKS.items():
        if key in config and not check(config[key]):
            raise ConfigError(f"{where}.{key}: expected {expected}, found {_shown(config[key])}")


def validate_inbound_nodes(nodes: Any, where: str) -> None:
    """A layer entry's `inbound_nodes`: Keras 3 {"args": [...], "kwargs": {...}} or Keras 2 lists."""
    if nodes is None:
        return
    if not isinstance(nodes, list):
        raise ConfigError(f"{where}: expected a list of nodes, found {_shown(nodes)}")
    for index, node in enumerate(nodes):
        node_where = f"{where}[{index}]"
        if isinstance(node, Mapping):
            if not isinstance(node.get("args", []), list):
                raise ConfigError(f"{node_where}.args: expected a list, found {_shown(node.get('args'))}")
            if not isinstance(node.get("kwargs", {}), Mapping):
                raise ConfigError(f"{node_where}.kwargs: expected an object, found {_shown(node.get('kwargs'))}")
            _validate_keras_tensors(node, node_where)
        elif isinstance(node, list) and (_tensor_ref(node) or _keras2_constant(node)):
            # tf.keras 2 saves a TFOpLambda's single-tensor call as the item itself.
            if len(node) > 3 and not isinstance(node[3], Mapping):
                raise ConfigError(f"{node_where}[3]: expected the call's keyword arguments (an object), found {_shown(node[3])}")
        elif isinstance(node, list):
            if not node:
                raise ConfigError(f"{node_where}: an empty node; expected [[layer name, node index, tensor index, kwargs], ...]")
            for position, item in enumerate(node):
                item_where = f"{node_where}[{position}]"
                if not (_tensor_ref(item) or _keras2_constant(item)):
                    raise ConfigError(f"{item_where}: expected [layer name, node index, tensor index, kwargs], found {_shown(item)}")
                if len(item) > 3 and not isinstance(item[3], Mapping):
                    raise ConfigError(f"{item_where}[3]: expected the call's keyword arguments (an object), found {_shown(item[3])}")
        else:
            raise ConfigError(f"{node_where}: expected a node (an object or a list), found {_shown(node)}")


def _keras2_constant(item: Any) -> bool:
    """tf.keras 2's constant first argument (`1.0 - g`): ["_CONSTANT_VALUE", -1, value, kwargs]."""
    return (
        isinstance(item, list)
        and len(item) >= 3
        and item[0] == "_CONSTANT_VALUE"
        and isinstance(item[2], (int, float))
        and not isinstance(item[2], bool)
    )


def _validate_keras_tensors(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            config = value.get("config")
            history = config.get("keras_history") if isinstance(config, Mapping) else None
            if not _tensor_ref(history):
                raise ConfigError(f"{where}.config.keras_history: expected [layer name, node index, tensor index], found {_shown(history)}")
            return
        if value.get("class_name") == "__slice__":  # Keras 3's `x[1:4]` in a GetItem call
            config = value.get("config")
            for bound in ("start", "stop", "step"):
                found = config.get(bound) if isinstance(config, Mapping) else config
                if not (found is None or (isinstance(found, int) and not isinstance(found, bool))):
                    raise ConfigError(f"{where}.config.{bound}: expected an integer or null, found {_shown(found)}")
            return
        for key, item in value.items():
            _validate_keras_tensors(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _validate_keras_tensors(item, f"{where}[{index}]")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
