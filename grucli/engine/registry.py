"""The replay's layer registry: every layer class the replay runs, one entry each.

An entry says which call keywords its implementation reads (any other keyword that would change
the result is refused by name), whether it checks its own call (operations, tf.keras's TensorFlow
calls, MultiHeadAttention), what about a particular layer it cannot run, and how it runs one
call. Adding a layer to the replay is adding an entry here (and, for a plain one-tensor layer,
a function in `feedforward.SIMPLE_LAYERS`).

May import: numpy, engine/ (the layer implementations), model/, errors. The runner it calls back
(`Runner`) is graph.ModelReplay, which imports this module, not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from grucli.engine.attention import ATTENTION, attention, multi_head_attention
from grucli.engine.feedforward import MERGES, SIMPLE_LAYERS, dot
from grucli.engine.operations import (
    OPERATIONS,
    TF_FUNCTIONS,
    run_operation,
    run_tf_function,
)
from grucli.engine.tensor import Tensor
from grucli.errors import ReplayError
from grucli.model import paths
from grucli.model.records import RawLayer
from grucli.model.registry import (
    MODEL_CLASSES,
    RECURRENT_LAYER_CLASSES,
    TIME_DISTRIBUTED_CLASS,
    Role,
    holds_recurrent,
    is_model,
    is_standard_cell,
    role_of,
)
from grucli.model.semantics import KERAS3, Semantics

TF_OP_LAMBDAS = ("TFOpLambda", "SlicingOpLambda")  # tf.keras 2's saved TensorFlow calls
MULTI_HEAD_ATTENTION = "MultiHeadAttention"
DOT = "Dot"


class Runner(Protocol):
    """What an entry may ask of the replay running it (graph.ModelReplay)."""

    semantics: Semantics
    dtype: type

    def run_model(self, model: RawLayer, prefix: str, inputs: list[Tensor]) -> list[Tensor]: ...

    def call_recurrent(
        self, layer: RawLayer, path: str, x: Tensor, initial_state: list[np.ndarray] | None, output_mask: np.ndarray | None = None
    ) -> list[Tensor]: ...

    def call_time_distributed_recurrent(self, layer: RawLayer, path: str, x: Tensor) -> list[Tensor]: ...


Run = Callable[[Runner, RawLayer, str, Sequence[Any], Mapping[str, Any]], list[Tensor]]


def _runs_any(layer: RawLayer) -> str | None:
    return None


@dataclass(frozen=True)
class Entry:
    """How the replay runs one kind of layer."""

    run: Run
    keywords: tuple[str, ...] = ("mask",)  # the call keywords `run` reads
    own_call: bool = False  # `run` checks its positional arguments and keywords itself
    refusal: Callable[[RawLayer], str | None] = _runs_any  # what it cannot run about this layer, or None

    def call(self, runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
        """Run one call on its whole saved call: every positional argument and keyword is used or refused by name."""
        if not self.own_call:
            _check_keywords(layer, path, kwargs, self.keywords)
            if len(args) != 1:
                raise ReplayError(
                    f"layer {path} ({layer.class_name}) is called with {len(args)} positional arguments; "
                    "the replay runs layers called on one input"
                )
        return self.run(runner, layer, path, args, kwargs)


# --- the entries' runs ---------------------------------------------------------------------------------


def _simple(function: Callable[[RawLayer, Tensor, Any], Tensor]) -> Run:
    def run(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
        return [function(layer, _one_tensor(layer, path, args[0], kwargs), runner)]

    return run


def _merge(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    return [MERGES[layer.class_name](layer, path, tensor_list(args[0], path, layer.class_name), runner.semantics)]


def _dot(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    return [dot(layer, path, tensor_list(args[0], path, layer.class_name))]


def _attention(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    return attention(layer, path, tensor_list(args[0], path, layer.class_name), kwargs, runner.dtype)


def _multi_head_attention(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    return multi_head_attention(layer, path, args, kwargs, runner.semantics, runner.dtype)


def _model(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    return runner.run_model(layer, paths.prefix(path), tensor_list(args[0], path, layer.class_name))


def _operation(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    return [run_operation(layer, path, args, kwargs)]


def _tf_function(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    return [run_tf_function(layer, path, args, kwargs)]


def _recurrent(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    x, initial_state = _recurrent_inputs(layer, path, args[0], kwargs.get("initial_state"))
    if runner.semantics == KERAS3 and kwargs.get("initial_state") is not None and kwargs.get("mask") is None:
        # Keras 3 fills in `mask` from the input only when the input is the call's one tensor
        # argument (Layer.__call__, "Populate mask argument(s)"): given initial_state=, the
        # layer runs unmasked, and its output sequence still carries the input's mask on.
        return runner.call_recurrent(layer, path, Tensor(x.value), initial_state, output_mask=x.mask)
    return runner.call_recurrent(layer, path, with_explicit_mask(layer, path, x, kwargs.get("mask")), initial_state)


def _time_distributed(runner: Runner, layer: RawLayer, path: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Tensor]:
    x = _one_tensor(layer, path, args[0], kwargs)
    inner = layer.children[0][1]
    if holds_recurrent(inner.class_name):
        return runner.call_time_distributed_recurrent(layer, path, x)
    if x.value.ndim < 3:
        raise ReplayError(f"layer {path} (TimeDistributed) is fed shape {x.value.shape}; expected (batch, steps, ...)")
    batch, timesteps = x.value.shape[:2]
    flat = Tensor(x.value.reshape((batch * timesteps, *x.value.shape[2:])))
    if is_model(inner.class_name):  # a nested model on every step: its outputs, each unfolded
        outputs = [t.value for t in runner.run_model(inner, paths.prefix(path), [flat])]
    else:
        outputs = [SIMPLE_LAYERS[inner.class_name](inner, flat, runner).value]
    return [Tensor(out.reshape((batch, timesteps, *out.shape[1:])), x.mask) for out in outputs]


# --- what an entry cannot run ----------------------------------------------------------------------------


def _custom_cells(layer: RawLayer) -> str | None:
    """RNN and Bidirectional run the standard cells only."""
    if role_of(layer.class_name) is Role.RNN and any(not is_standard_cell(cell.class_name) for _, cell in layer.children):
        return "RNN with a custom cell"
    if role_of(layer.class_name) is Role.BIDIRECTIONAL and any(_custom_cells(inner) for _, inner in layer.children):
        return "Bidirectional around an RNN with a custom cell"
    return None


def _time_distributed_refusal(layer: RawLayer) -> str | None:
    if not layer.children:
        return None
    inner = layer.children[0][1]
    if inner.class_name in SIMPLE_LAYERS or role_of(inner.class_name) is Role.RECURRENT:
        return None
    if is_model(inner.class_name):
        found = unsupported_layer(inner)
        return None if found is None else f"TimeDistributed({inner.class_name}) holding {found[0]} ({found[1]})"
    return f"TimeDistributed({inner.class_name})"


def _unknown_tf_function(layer: RawLayer) -> str | None:
    function = layer.config.get("function")
    return None if function in TF_FUNCTIONS else f"{layer.class_name} calling tf.{function}"


def _unknown_operation(layer: RawLayer) -> str | None:
    return None if layer.class_name in OPERATIONS else f"operation {layer.module}.{layer.class_name}"


RECURRENT_KEYWORDS = ("initial_state", "mask")
ATTENTION_KEYWORDS = ("mask", "use_causal_mask", "return_attention_scores")

ENTRIES: Mapping[str, Entry] = {
    **{name: Entry(_simple(function)) for name, function in SIMPLE_LAYERS.items()},
    **{name: Entry(_merge, keywords=()) for name in MERGES},
    DOT: Entry(_dot, keywords=()),
    **{name: Entry(_attention, keywords=ATTENTION_KEYWORDS) for name in ATTENTION},
    MULTI_HEAD_ATTENTION: Entry(_multi_head_attention, own_call=True),
    **{name: Entry(_model, keywords=()) for name in MODEL_CLASSES},
    **{name: Entry(_recurrent, keywords=RECURRENT_KEYWORDS, refusal=_custom_cells) for name in RECURRENT_LAYER_CLASSES},
    TIME_DISTRIBUTED_CLASS: Entry(_time_distributed, refusal=_time_distributed_refusal),
    **{name: Entry(_tf_function, own_call=True, refusal=_unknown_tf_function) for name in TF_OP_LAMBDAS},
}
OPERATION = Entry(_operation, own_call=True, refusal=_unknown_operation)  # Keras 3 keras.ops calls, by module
SUPPORTED = frozenset(ENTRIES)


def entry_for(layer: RawLayer) -> Entry | None:
    """The entry that runs `layer`, None when the replay cannot run its class."""
    return OPERATION if layer.is_operation else ENTRIES.get(layer.class_name)


def unsupported_layer(root: RawLayer, prefix: str = "") -> tuple[str, str] | None:
    """(path, what) of the first layer the replay cannot run, or None when it can run them all."""
    for _, child in root.children:
        path = f"{prefix}{child.name}"
        entry = entry_for(child)
        if entry is None:
            return path, child.class_name
        refusal = entry.refusal(child)
        if refusal is not None:
            return path, refusal
        if not child.is_operation and role_of(child.class_name) is Role.MODEL:
            found = unsupported_layer(child, paths.prefix(path))
            if found:
                return found
    return None


# --- arguments ------------------------------------------------------------------------------------------


def tensor_list(value: Any, path: str, name: str) -> list[Tensor]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, Tensor) for v in values):
        raise ReplayError(f"layer {path} ({name}) is called on {value!r}; the replay expects tensors only")
    return values


def _one_tensor(layer: RawLayer, path: str, x: Any, kwargs: Mapping[str, Any]) -> Tensor:
    if not isinstance(x, Tensor):
        what = f"{len(x)} tensors" if isinstance(x, list) else f"the constant {x!r}"
        raise ReplayError(f"layer {path} ({layer.class_name}) is called on {what}; the replay expects one tensor")
    return with_explicit_mask(layer, path, x, kwargs.get("mask"))


def with_explicit_mask(layer: RawLayer, path: str, x: Tensor, mask: Any) -> Tensor:
    """Keras 3 saves the mask a layer was called with (`mask=`: recurrent layers, global average
    pooling, ...) as a tensor of the graph; it replaces the one the input carries."""
    if mask is None:
        return x
    if not isinstance(mask, Tensor) or np.shape(mask.value) != x.value.shape[:2]:
        shown = np.shape(mask.value) if isinstance(mask, Tensor) else repr(mask)
        raise ReplayError(f"layer {path} ({layer.class_name}) is called with mask {shown}; expected a tensor of shape {x.value.shape[:2]}")
    return Tensor(x.value, np.asarray(mask.value, dtype=bool))


def _recurrent_inputs(layer: RawLayer, path: str, first: Any, initial_state: Any) -> tuple[Tensor, list[np.ndarray] | None]:
    """A recurrent layer's input and initial states: Keras 3 passes `initial_state=[...]`; Keras 2
    saves a call with initial_state as one list of tensors, the input first."""
    if isinstance(first, list) and first and initial_state is None:
        first, initial_state = first[0], first[1:] or None
    if not isinstance(first, Tensor):
        raise ReplayError(f"layer {path} ({layer.class_name}) is called on {first!r}; the replay expects a tensor")
    if initial_state is None:
        return first, None
    states = list(_flattened(initial_state))  # stacked cells take one list per cell: [[h0], [h1, c1]]
    if not states or not all(isinstance(state, Tensor) for state in states):
        raise ReplayError(f"layer {path} ({layer.class_name}) is given the initial state {initial_state!r}; expected tensors")
    return first, [state.value for state in states]


def _flattened(value: Any) -> Any:
    if isinstance(value, list):
        for item in value:
            yield from _flattened(item)
    else:
        yield value


# Keywords a saved layer call may carry that change nothing at inference, with the values that do so.
_HARMLESS_KEYWORDS: Mapping[str, tuple[Any, ...]] = {"training": (None, False), "mask": (None,)}


def _check_keywords(layer: RawLayer, path: str, kwargs: Mapping[str, Any], used: Sequence[str] = ()) -> None:
    """Refuse, by name, any keyword the layer's implementation does not use (`used`) and that
    would change what it computes."""
    for key, value in kwargs.items():
        if key in used:
            continue
        if key in _HARMLESS_KEYWORDS and any(value is allowed for allowed in _HARMLESS_KEYWORDS[key]):
            continue
        shown = "a tensor" if isinstance(value, Tensor) else repr(value)
        raise ReplayError(f"layer {path} ({layer.class_name}) is called with {key}={shown}, which the replay does not support")
