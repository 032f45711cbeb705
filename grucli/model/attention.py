"""What the replay and convert both read about a MultiHeadAttention layer: where it keeps its
weights (the query, key, value and output projections, found by their sublayer names: Keras 3
`query_dense` ... `output_dense`, tf-keras `query`, `key`, `value`, `attention_output`, checked
against the shapes its call needs) and how a saved call binds to its parameters.

May import: numpy, model/records, errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from grucli.errors import GrucliError, ModelFileError
from grucli.model.records import RawLayer

PROJECTIONS: Mapping[str, tuple[str, str]] = {
    "query": ("query_dense", "query"),
    "key": ("key_dense", "key"),
    "value": ("value_dense", "value"),
    "output": ("output_dense", "attention_output"),
}


@dataclass(frozen=True)
class MhaSettings:
    """A MultiHeadAttention's sizes, validated: heads, key and value sizes per head, the output's
    features (None: the query's), and whether its projections have biases."""

    heads: int
    key_dim: int
    value_dim: int
    output_dim: int | None
    use_bias: bool


def mha_settings(layer: RawLayer, path: str, error: type[GrucliError], who: str) -> MhaSettings:
    """The settings both the replay and convert run: attention over time (axis 1), one output
    dimension, no gate or sliding window; anything else is refused by `error`, naming `who`."""
    config = layer.config
    heads, key_dim = config.get("num_heads"), config.get("key_dim")
    if not (_positive(heads) and _positive(key_dim)):
        raise ModelFileError(f"layer {path} (MultiHeadAttention) has num_heads={heads!r}, key_dim={key_dim!r}; expected positive integers")
    value_dim = config.get("value_dim") or key_dim
    if not _positive(value_dim):
        raise ModelFileError(f"layer {path} (MultiHeadAttention) has value_dim={value_dim!r}; expected a positive integer")
    axes = config.get("attention_axes")
    if axes not in (None, [1], 1, [-2]):
        raise error(f"layer {path} (MultiHeadAttention) has attention_axes={axes!r}; {who} runs attention over time (axis 1)")
    output_shape = config.get("output_shape")
    output_dim = output_shape[0] if isinstance(output_shape, list) and len(output_shape) == 1 else output_shape
    if output_dim is not None and not _positive(output_dim):
        raise error(f"layer {path} (MultiHeadAttention) has output_shape={output_shape!r}; {who} runs one output dimension")
    for setting, default in (("use_gate", False), ("sliding_window", None)):
        if config.get(setting, default) != default:
            raise error(f"layer {path} (MultiHeadAttention) has {setting}={config[setting]!r}, which {who} does not run")
    return MhaSettings(heads, key_dim, value_dim, output_dim, bool(config.get("use_bias", True)))


def _positive(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def mha_projections(
    layer: RawLayer, path: str, shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]], use_bias: bool
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """{role: (kernel, bias or None)} for the roles of `shapes` ({role: (kernel shape, bias shape)})."""
    found: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for role, (kernel_shape, bias_shape) in shapes.items():
        owned = [w for w in layer.weights if any(f"/{sub}/" in f"/{w.name}" for sub in PROJECTIONS[role])]
        kernels = [w for w in owned if w.array.shape == kernel_shape]
        biases = [w for w in owned if w.array.shape == bias_shape] if use_bias else []
        if len(kernels) != 1 or len(owned) != 1 + int(use_bias) or (use_bias and len(biases) != 1):
            raise ModelFileError(
                f"layer {path} (MultiHeadAttention) stores {[(w.name, w.array.shape) for w in owned] or 'no weights'} "
                f"for its {role} projection; expected a kernel {kernel_shape}" + (f" and a bias {bias_shape}" if use_bias else "")
            )
        found[role] = (np.asarray(kernels[0].array), np.asarray(biases[0].array) if use_bias else None)
    if sum(1 + int(use_bias) for _ in shapes) != len(layer.weights):
        raise ModelFileError(f"layer {path} (MultiHeadAttention) stores {len(layer.weights)} weights; expected {4 * (1 + int(use_bias))}")
    return found


# MultiHeadAttention's call parameters in Keras's order (`mha(query, value, key=None, ...)`).
MHA_PARAMETERS = (
    "query",
    "value",
    "key",
    "query_mask",
    "value_mask",
    "key_mask",
    "attention_mask",
    "return_attention_scores",
    "training",
    "use_causal_mask",
)


def bind_mha_call(path: str, args: Sequence[Any], kwargs: Mapping[str, Any], error: type[GrucliError], who: str) -> dict[str, Any]:
    """A saved MultiHeadAttention call by parameter; `error` names what does not bind (`who`: the
    replay or convert, in its words)."""
    if not 1 <= len(args) <= len(MHA_PARAMETERS):
        raise error(f"layer {path} (MultiHeadAttention) is called with {len(args)} positional arguments; expected query, value[, key]")
    call = dict(zip(MHA_PARAMETERS, args))
    for name, item in kwargs.items():
        if name not in MHA_PARAMETERS or name in call:
            raise error(f"layer {path} (MultiHeadAttention) is called with {name}=, which {who} does not support")
        call[name] = item
    if call.get("training") not in (None, False):
        raise error(f"layer {path} (MultiHeadAttention) is called with training={call['training']!r}; {who} runs inference")
    if "value" not in call:
        raise error(f"layer {path} (MultiHeadAttention) is called without a value; expected mha(query, value)")
    return call
