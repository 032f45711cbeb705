"""Keras recurrent weights in the layout of a PyTorch `nn.GRU` / `nn.LSTM` / `nn.RNN` state_dict.

PyTorch stores `weight_ih_l0` (gates*units, input) and `weight_hh_l0` (gates*units, units), the
transpose of Keras, with two biases `bias_ih_l0` and `bias_hh_l0`; `_reverse` marks the backward
direction. Its GRU orders gates r, z, n (Keras: z, r, h) and computes
`n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h' = (1 - z) * n + z * h`: Keras's GRU with
reset_after=True. A reset_after=False GRU applies r before the product and has no exact
PyTorch equivalent. LSTM gates i, f, g, o are Keras's i, f, c, o; its two biases add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grucli.errors import GrucliError
from grucli.model import gates, paths
from grucli.model.records import RecurrentLayer


class TorchLayoutError(GrucliError):
    """A layer PyTorch's recurrent modules cannot reproduce (the message says why)."""


@dataclass(frozen=True)
class TorchModule:
    """One PyTorch module's state_dict, the constructor that reproduces it, and what to mind."""

    path: str
    constructor: str
    arrays: dict[str, np.ndarray]
    notes: tuple[str, ...]


def torch_modules(layers: Sequence[RecurrentLayer], approximate: bool = False) -> list[TorchModule]:
    """One module per layer; the two directions of a Bidirectional layer become one module."""
    modules = []
    by_path = {layer.path: layer for layer in layers}
    done: set[str] = set()
    for layer in layers:
        if layer.path in done:
            continue
        parent, _, direction = layer.path.rpartition(paths.SEPARATOR)
        backward = by_path.get(paths.direction(parent, paths.BACKWARD)) if direction == paths.FORWARD else None
        if backward is not None:
            modules.append(_module(parent, [layer, backward], approximate))
            done |= {layer.path, backward.path}
        else:
            modules.append(_module(layer.path, [layer], approximate))
            done.add(layer.path)
    return modules


def _module(path: str, directions: list[RecurrentLayer], approximate: bool) -> TorchModule:
    first = directions[0]
    family, settings = first.family, first.settings
    if family.torch_module is None:
        raise TorchLayoutError(f"layer {first.path}: {first.kind} has no PyTorch recurrent module; export it with --layout keras")
    notes = list(_check_equivalence(first, approximate))
    arrays: dict[str, np.ndarray] = {}
    for layer, suffix in zip(directions, ("", "_reverse")):
        for name, array in direction_arrays(layer).items():
            arrays[f"{path}/{name}_l0{suffix}"] = array
    options = [f"input_size={first.input_dim}", f"hidden_size={first.units}", "batch_first=True"]
    if first.bias is None:
        options.append("bias=False")
    if not family.uses_recurrent_activation:  # nn.RNN: one activation, its nonlinearity
        options.append(f"nonlinearity='{settings.activation}'")
    if len(directions) == 2:
        options.append("bidirectional=True")
        notes.append(
            "PyTorch concatenates the two directions' outputs (forward first), as Keras's merge_mode='concat'; "
            "for sum/ave/mul, split the last axis in two and merge by hand"
        )
    elif settings.go_backwards:
        notes.append(
            "the Keras layer reads the sequence backwards (go_backwards): give PyTorch the time-reversed input; "
            "the output sequence then matches Keras's, in processing order"
        )
    if not settings.return_sequences:
        notes.append(
            "the Keras layer returns only its last output: take output[:, -1]"
            + (" for the forward half and output[:, 0] for the backward half" if len(directions) == 2 else "")
        )
    return TorchModule(path, f"{family.torch_module}({', '.join(options)})", arrays, tuple(notes))


def _check_equivalence(layer: RecurrentLayer, approximate: bool) -> list[str]:
    family = layer.family
    activation, recurrent_activation = layer.settings.activation, layer.settings.recurrent_activation
    if not family.uses_recurrent_activation:
        if activation not in ("tanh", "relu"):
            raise TorchLayoutError(f"layer {layer.path}: activation {activation!r}; nn.RNN offers only tanh and relu")
        return []
    if activation is None or recurrent_activation is None:
        raise TorchLayoutError(
            f"layer {layer.path}: its activations are unknown (weights-only file); PyTorch's {family.torch_module} needs tanh and sigmoid"
        )
    if (activation, recurrent_activation) != ("tanh", "sigmoid"):
        raise TorchLayoutError(
            f"layer {layer.path}: activation {activation!r} and recurrent_activation {recurrent_activation!r}; "
            f"PyTorch's {family.torch_module} computes only tanh and sigmoid"
        )
    if family.two_row_bias and not layer.settings.reset_after:
        if not approximate:
            raise TorchLayoutError(
                f"layer {layer.path}: a GRU with reset_after=False applies the reset gate before the recurrent product, "
                "(r * h)·U, while nn.GRU applies it after, r * (h·U); no nn.GRU computes the same. "
                "Pass --approximate to export it anyway (outputs will differ)"
            )
        return [
            (
                f"APPROXIMATE: {layer.path} has reset_after=False; nn.GRU applies the reset gate after the recurrent product, "
                "so its outputs differ from Keras's"
            )
        ]
    return []


def direction_arrays(layer: RecurrentLayer) -> dict[str, np.ndarray]:
    """weight_ih, weight_hh, bias_ih, bias_hh of one direction, in PyTorch's gate order and shapes."""
    order = layer.family.torch_gates
    assert order is not None, layer.kind  # _module refuses families without a PyTorch module
    columns = [gates.gate_columns(layer.kind, layer.units, gate) for gate in order]

    def reorder(matrix: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([matrix[..., c] for c in columns], axis=-1).T)

    arrays = {"weight_ih": reorder(layer.kernel), "weight_hh": reorder(layer.recurrent_kernel)}
    if layer.bias is not None:
        if layer.bias.ndim == 2:
            arrays["bias_ih"] = reorder(layer.bias[0])
            arrays["bias_hh"] = reorder(layer.bias[1])
        else:
            # One Keras bias: PyTorch adds its two, so the second is zero.
            arrays["bias_ih"] = reorder(layer.bias)
            arrays["bias_hh"] = np.zeros_like(arrays["bias_ih"])
    return arrays
