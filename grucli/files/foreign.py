"""PyTorch state_dicts (from `.pt`/`.pth` zips and `.safetensors`) as grucli's layer trees.

A state_dict names each tensor `<module prefix>.<parameter>`: an `nn.GRU`/`nn.LSTM`/`nn.RNN`
stores `weight_ih_l{k}[_reverse]`, `weight_hh_l{k}[_reverse]`, `bias_ih_l{k}[_reverse]`,
`bias_hh_l{k}[_reverse]` per layer k and direction; its cells (`nn.GRUCell` ...) the same names
without `_l{k}`; an `nn.Linear` `weight` (out, in) and `bias`; an `nn.Embedding` `weight`
(vocabulary, dim), which without a bias looks like a bias-less Linear. The family of a recurrent
module is in its shapes: `weight_ih` has 3 (GRU), 4 (LSTM) or 1 (RNN) blocks of `weight_hh`'s
width. An LSTM with `weight_hr` (proj_size) has no Keras equivalent and is listed as such.

The tree: the file's modules under the root, each recurrent module holding one layer per index
and direction (`rnn/l0`, `rnn/l0_reverse`, `rnn/l1`; a cell module is itself the layer), each a
Keras class whose config says `source_layout: pytorch`, so that model/layers.py reads it into
Keras's canonical layout (model/sources.py) with the PyTorch arrays kept beside.

A checkpoint dict holds its state_dict under a key (`{"epoch", "optimizer", "model"}`,
`"state_dict"`) or one per sub-module (`{"encoder": {...}, "decoder": {...}}`): every dict of named
tensors in it is found (optimizer state, keyed by numbers, is not one); a single one keeps its own
names, several are prefixed with their keys.

May import: numpy, files/torch_pickle, files/budget, files/tree, model/, errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from grucli.errors import ModelFileError
from grucli.files.budget import Budget
from grucli.files.torch_pickle import TensorRecord
from grucli.files.tree import MAX_CONFIG_DEPTH
from grucli.model.records import NamedArray, RawLayer
from grucli.model.registry import FAMILIES, LEGACY_FUNCTIONAL_CLASS, SOURCE_MODULE_CLASS, Family, family_of
from grucli.model.sources import PYTORCH

RECURRENT_PARAMETER = re.compile(r"^(weight|bias)_(ih|hh|hr)(?:_l(\d{1,4})(_reverse)?)?$")
ROLES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class FoundStateDict:
    """The tensors of a file, by name, and where in the file they were found."""

    tensors: dict[str, Any]  # name -> array-like (np.ndarray, or TensorRecord read on demand)
    found_under: tuple[str, ...]  # the checkpoint keys holding state_dicts; () for a bare state_dict


def state_dict_of(obj: Any, where: str, budget: Budget) -> FoundStateDict:
    """The state_dict(s) a `torch.save`d object holds, as one name → tensor mapping."""
    if _is_state_dict(obj):
        return FoundStateDict(dict(obj), ())
    found: list[tuple[str, Mapping[str, Any]]] = []
    _collect(obj, "", found, set(), budget, 0)
    if not found:
        raise ModelFileError(
            f"{where} holds no state_dict (a dict of named tensors); expected torch.save(model.state_dict(), PATH) "
            "or a checkpoint dict holding one"
        )
    if len(found) == 1:
        return FoundStateDict(dict(found[0][1]), (found[0][0],))
    tensors: dict[str, Any] = {}
    for key, state in found:
        tensors.update({f"{key}.{name}": value for name, value in state.items()})
    return FoundStateDict(tensors, tuple(key for key, _ in found))


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, TensorRecord) for v in obj.values())
    )


def _collect(obj: Any, prefix: str, found: list[tuple[str, Mapping[str, Any]]], seen: set[int], budget: Budget, depth: int) -> None:
    """Every state_dict below `obj` whose path is made of string keys (a shared or cyclic object is visited once)."""
    if depth > MAX_CONFIG_DEPTH or id(obj) in seen or not isinstance(obj, dict):
        return
    seen.add(id(obj))
    budget.layer(f"checkpoint entry {prefix or '(root)'}")
    for key, value in obj.items():
        if not isinstance(key, str):
            continue  # an optimizer's state, keyed by parameter numbers
        path = f"{prefix}.{key}" if prefix else key
        if _is_state_dict(value):
            found.append((path, value))
        else:
            _collect(value, path, found, seen, budget, depth + 1)


def state_dict_tree(state: FoundStateDict, where: str, budget: Budget) -> tuple[RawLayer, tuple[str, ...]]:
    """The layer tree of a state_dict, and notes on how it was read."""
    modules: dict[str, dict[str, Any]] = {}
    for name, value in state.tensors.items():
        prefix, _, parameter = name.rpartition(".")
        modules.setdefault(prefix, {})[parameter] = value
    budget.variables(len(state.tensors), f"{where}: the state_dict")
    children = []
    for prefix, parameters in modules.items():
        budget.layer(f"{where}: module {prefix or '(unnamed)'}")
        recurrent = {name: value for name, value in parameters.items() if RECURRENT_PARAMETER.match(name)}
        rest = {name: value for name, value in parameters.items() if name not in recurrent}
        if recurrent:
            module = _recurrent_module(prefix, recurrent, where)
            # A bare nn.GRU's state_dict: its layers l0, l0_reverse at the top.
            children += list(module.children) if not prefix and module.class_name == SOURCE_MODULE_CLASS else [("layers", module)]
        if rest:
            children.append(("layers", _module(prefix, rest)))
    notes = []
    if state.found_under:
        notes.append(
            f"the state_dict was found under the checkpoint key(s) {', '.join(state.found_under)}"
            + (" (its names prefixed with them)" if len(state.found_under) > 1 else "")
        )
    root = RawLayer("state_dict", LEGACY_FUNCTIONAL_CLASS, {"name": "state_dict"}, children=tuple(children), inferred=True)
    return root, tuple(notes)


def _module(prefix: str, parameters: Mapping[str, Any]) -> RawLayer:
    """A module holding no recurrent parameters: a Linear, something Linear or Embedding, or another."""
    arrays = {name: _array(value) for name, value in parameters.items()}
    shapes = {name: array.shape for name, array in arrays.items()}
    weights = tuple(NamedArray(_qualified(prefix, name), array) for name, array in arrays.items())
    if set(arrays) == {"weight", "bias"} and len(shapes["weight"]) == 2 and shapes["bias"] == shapes["weight"][:1]:
        return _plain(prefix, "nn.Linear", "linear", weights)
    if set(arrays) == {"weight"} and len(shapes["weight"]) == 2:
        return _plain(prefix, "nn.Linear (no bias) or nn.Embedding", "linear or embedding", weights)
    return _plain(prefix, "module", "other", weights)


def _plain(prefix: str, module: str, kind: str, weights: tuple[NamedArray, ...]) -> RawLayer:
    name = prefix or "module"  # a bare module's state_dict names its tensors without a prefix
    config = {"name": name, "module_path": prefix, "source_layout": PYTORCH, "source_module": module, "source_kind": kind}
    return RawLayer(name, module, config, weights=weights, inferred=True)


def _recurrent_module(prefix: str, parameters: Mapping[str, Any], where: str) -> RawLayer:
    """An nn.GRU / nn.LSTM / nn.RNN (layers l0, l1, ...; directions) or a cell."""
    layers: dict[tuple[int, bool], dict[str, Any]] = {}
    cell = False
    for name, value in parameters.items():
        match = RECURRENT_PARAMETER.match(name)
        assert match is not None  # _module sends only matching names here
        kind, side, index, reverse = match.groups()
        cell = cell or index is None
        layers.setdefault((int(index or 0), bool(reverse)), {})[f"{kind}_{side}"] = (name, value)
    if cell and len(layers) > 1:
        raise ModelFileError(f"{where}: module {prefix} mixes a cell's names (weight_ih) with a layer's (weight_ih_l0)")
    if any("weight_hr" in roles for roles in layers.values()):
        # nn.LSTM(proj_size=...): h is projected after every step, which no Keras LSTM does.
        weights = tuple(NamedArray(_qualified(prefix, name), _array(value)) for roles in layers.values() for name, value in roles.values())
        return RawLayer(
            prefix,
            "nn.LSTM (proj_size)",
            {
                "name": prefix,
                "source_layout": PYTORCH,
                "source_module": "nn.LSTM",
                "source_kind": "recurrent",
                "unsupported": "nn.LSTM with proj_size (weight_hr: the state is projected after each step, which no Keras LSTM does)",
            },
            weights=weights,
            inferred=True,
        )
    children = []
    for (index, reverse), roles in sorted(layers.items()):
        name = (prefix or "cell") if cell else f"l{index}" + ("_reverse" if reverse else "")
        children.append(("layers", _recurrent_layer(prefix, name, roles, cell, reverse, where, index)))
    module = f"{family_of(children[0][1].class_name).torch_module}" + ("Cell" if cell else "")
    if cell:
        return children[0][1]
    config = {
        "name": prefix,
        "source_layout": PYTORCH,
        "source_module": module,
        "source_kind": "recurrent",
        "num_layers": 1 + max(index for index, _ in layers),
        "bidirectional": any(reverse for _, reverse in layers),
    }
    return RawLayer(prefix, SOURCE_MODULE_CLASS, config, children=tuple(children), inferred=True)


def _recurrent_layer(
    prefix: str, name: str, roles: Mapping[str, tuple[str, Any]], cell: bool, reverse: bool, where: str, index: int
) -> RawLayer:
    missing = [role for role in ("weight_ih", "weight_hh") if role not in roles]
    if missing:
        raise ModelFileError(f"{where}: {prefix} layer {name} has no {missing[0]}; expected weight_ih and weight_hh")
    arrays = {role: _array(value) for role, (_, value) in roles.items()}
    w_ih, w_hh = arrays["weight_ih"], arrays["weight_hh"]
    family = _family(prefix, name, w_ih, w_hh, where)
    module = f"{family.torch_module}" + ("Cell" if cell else "")
    present = [role for role in ROLES if role in arrays]
    config: dict[str, Any] = {
        "name": name,
        "units": int(w_hh.shape[1]),
        "source_layout": PYTORCH,
        "source_module": module,
        "source_kind": "recurrent",
        "source_roles": present,
        "use_bias": "bias_ih" in arrays or "bias_hh" in arrays,
        "go_backwards": reverse,
        "return_sequences": not cell,
        # Where the layer sits in its module (a port pairs modules and fills their layers in order).
        "module_path": prefix,
        "layer_index": index,
        "direction": "reverse" if reverse else "forward",
    }
    if family.uses_recurrent_activation:
        config.update(activation="tanh", recurrent_activation="sigmoid")
    else:
        config["activation"] = None  # nn.RNN: tanh or relu, which a state_dict does not record
    if family.two_row_bias:
        config["reset_after"] = True  # nn.GRU applies r after the recurrent product
    weights = tuple(NamedArray(_qualified(prefix, roles[role][0]), arrays[role]) for role in present)
    return RawLayer(name, family.name, config, weights=weights, inferred=True)


def _family(prefix: str, name: str, w_ih: np.ndarray, w_hh: np.ndarray, where: str) -> Family:
    if w_ih.ndim != 2 or w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] != w_ih.shape[0] or w_hh.shape[0] % w_hh.shape[1]:
        raise ModelFileError(
            f"{where}: {prefix} layer {name} has weight_ih {w_ih.shape} and weight_hh {w_hh.shape}; expected "
            "(gates·hidden, input) and (gates·hidden, hidden)"
        )
    blocks = w_hh.shape[0] // w_hh.shape[1]
    family = next((f for f in FAMILIES if f.torch_gates is not None and len(f.torch_gates) == blocks), None)
    if family is None:
        raise ModelFileError(f"{where}: {prefix} layer {name} has {blocks} gate blocks; expected 3 (GRU), 4 (LSTM) or 1 (RNN)")
    return family


def _qualified(prefix: str, name: str) -> str:
    """A tensor's name in the state_dict: `rnn.weight_ih_l0`, or `weight_ih_l0` in a bare module's."""
    return f"{prefix}.{name}" if prefix else name


def _array(value: Any) -> np.ndarray:
    return value.array() if isinstance(value, TensorRecord) else np.asarray(value)
