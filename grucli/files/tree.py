"""Config trees: a layer config and its weights to a `RawLayer` subtree, and the JSON reading every
format shares (bounded depth and size).

May import: h5py-free helpers only: model/, files/budget and files/schema, errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from grucli.errors import ModelFileError, first_line
from grucli.files.budget import Budget
from grucli.files.schema import validate_inbound_nodes, validate_layer_config
from grucli.model import paths
from grucli.model.records import (
    NamedArray,
    RawLayer,
)
from grucli.model.registry import (
    LISTING_CELLS,
    WRAPPER_CLASSES,
    Role,
    role_of,
)

MAX_CONFIG_DEPTH = 200  # real configs nest a few dozen levels; the walkers below recurse per level


def parse_json(raw: bytes | str, where: str, budget: Budget) -> Any:
    """A JSON text of a file, its values charged to the read's `budget` before it is parsed."""
    budget.json(raw, where)
    try:
        document = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise ModelFileError(
            f"{where} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at position {exc.start}); expected JSON"
        ) from None
    except ValueError as exc:
        raise ModelFileError(f"{where} is not valid JSON ({first_line(exc)})") from None
    except RecursionError:
        raise ModelFileError(f"{where} nests deeper than JSON can be read; expected a Keras config") from None
    if _depth(document) > MAX_CONFIG_DEPTH:
        raise ModelFileError(f"{where} nests more than {MAX_CONFIG_DEPTH} levels deep; expected a Keras config")
    return document


def _depth(document: Any) -> int:
    """How deeply lists and objects nest, counted without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_CONFIG_DEPTH:
                stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def snake_case(name: str) -> str:
    """Keras's `to_snake_case`, which names the groups of a Keras 3 weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class WeightSource(Protocol):
    """What `build_layer` asks of a weights layout (Keras 3 groups or legacy flat lists)."""

    def own(self) -> tuple[NamedArray, ...]: ...

    def split(self, parent_class: str, children: Sequence[tuple[str, Mapping[str, Any]]]) -> Sequence[WeightSource]: ...


def build_layer(spec: Any, source: WeightSource, where: str, budget: Budget) -> RawLayer:
    """A layer (and its sub-layers) from its config; `where` is its JSON path, named in errors; each
    layer charged to the read's `budget`."""
    if not isinstance(spec, Mapping):
        raise ModelFileError(f"{where}: a layer config is a {type(spec).__name__}, expected a JSON object")
    class_name = str(spec.get("class_name", "?"))
    module = spec.get("module")
    config = spec.get("config", {})
    config_map: Mapping[str, Any] = config if isinstance(config, Mapping) else {"layers": config}
    budget.layer(where)
    validate_layer_config(config_map, f"{where}.config")
    _validate_graph(config_map, f"{where}.config")
    name = spec_name(spec)
    children = child_specs(class_name, config)
    if not children and class_name in WRAPPER_CLASSES:
        key = WRAPPER_CLASSES[class_name]
        raise ModelFileError(
            f"{where}.config.{key}: a {class_name} wraps a layer, and its config holds none there "
            f"(found {_shown_value(config_map.get(key))}); expected the wrapped {key}'s config, an object"
        )
    module_name = module if isinstance(module, str) else None
    if not children:
        return RawLayer(name, class_name, config_map, weights=source.own(), module=module_name)
    sources = source.split(class_name, [(role, child) for role, child, _ in children])
    built = tuple(
        (role, build_layer(child, child_source, f"{where}.{suffix}", budget))
        for (role, child, suffix), child_source in zip(children, sources)
    )
    return RawLayer(name, class_name, config_map, children=built, module=module_name)


def _shown_value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _validate_graph(config: Mapping[str, Any], where: str) -> None:
    """The wiring of a functional model: each entry's inbound nodes."""
    layers = config.get("layers")
    if not isinstance(layers, list):
        return
    for index, entry in enumerate(layers):
        if isinstance(entry, Mapping) and "inbound_nodes" in entry:
            validate_inbound_nodes(entry["inbound_nodes"], f"{where}.layers[{index}].inbound_nodes")


def spec_name(spec: Mapping[str, Any]) -> str:
    config = spec.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("name"), str):
        return config["name"]
    return snake_case(str(spec.get("class_name", "layer")))


def child_specs(class_name: str, config: Any) -> list[tuple[str, Mapping[str, Any], str]]:
    """The sub-layer configs of a container layer: (role, config, JSON path below the layer)."""
    if isinstance(config, list):  # Keras 2.1 Sequential: the config is the bare layer list
        return [("layers", layer, f"config[{i}]") for i, layer in enumerate(config) if isinstance(layer, Mapping)]
    if not isinstance(config, Mapping):
        return []
    role = role_of(class_name)
    if role is Role.MODEL or (isinstance(config.get("layers"), list) and class_name not in LISTING_CELLS):
        layers = config.get("layers", [])
        return [("layers", layer, f"config.layers[{i}]") for i, layer in enumerate(layers) if isinstance(layer, Mapping)]
    if role is Role.BIDIRECTIONAL and isinstance(config.get("layer"), Mapping):
        forward = config["layer"]
        backward = config.get("backward_layer")
        if not isinstance(backward, Mapping):
            return [(paths.FORWARD, forward, "config.layer"), (paths.BACKWARD, _mirrored(forward), "config.layer")]
        return [(paths.FORWARD, forward, "config.layer"), (paths.BACKWARD, backward, "config.backward_layer")]
    if role is Role.RNN:
        cell = config.get("cell")
        if isinstance(cell, list):
            cells, where = cell, "config.cell"
        elif isinstance(cell, Mapping) and cell.get("class_name") == "StackedRNNCells":
            inner = cell.get("config")
            cells, where = (inner.get("cells", []) if isinstance(inner, Mapping) else []), "config.cell.config.cells"
        else:
            return [("cell", cell, "config.cell")] if isinstance(cell, Mapping) else []
        if not isinstance(cells, list):
            return []
        return [(paths.stacked_cell_role(index), c, f"{where}[{index}]") for index, c in enumerate(cells) if isinstance(c, Mapping)]
    if role is Role.TIME_DISTRIBUTED and isinstance(config.get("layer"), Mapping):
        return [("layer", config["layer"], "config.layer")]
    return []


def _mirrored(forward: Mapping[str, Any]) -> Mapping[str, Any]:
    """The backward layer Bidirectional makes when none is given: same config, other direction."""
    inner = forward.get("config")
    config = dict(inner) if isinstance(inner, Mapping) else {}
    config["go_backwards"] = not config.get("go_backwards", False)
    config["name"] = "backward_" + str(config.get("name", "layer"))
    return {**forward, "config": config}


def attr_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return attr_text(value.item())
    if isinstance(value, (str, np.str_)):
        # h5py hands invalid UTF-8 back as surrogate escapes, which cannot be printed.
        return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, float) and np.isnan(value):
        return None
    return str(value)
