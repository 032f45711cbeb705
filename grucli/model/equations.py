"""The equations a recurrent layer computes, exactly, written out for a person.

One line per quantity, in the order Keras's cell computes them (`keras/src/layers/rnn/gru.py`,
`lstm.py`, `simple_rnn.py`), with this layer's own activations, bias terms and reset_after
setting. The names are the gate slices `inspect` and `export` show:

    W_g  = kernel columns of gate g          (export key PATH/g/kernel)
    U_g  = recurrent_kernel columns of g     (PATH/g/recurrent_kernel)
    b_g  = bias of g                         (PATH/g/bias)
    rb_g = recurrent bias of g (GRU reset_after=True only; PATH/g/recurrent_bias)

`·` is a matrix product (x_t is a row vector), `*` elementwise. Each activation used is defined
on a line of its own, in the definition of the Keras version that saved the file (Keras 2 and
Keras 3 define hard_sigmoid differently), so following the lines by hand gives predict's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from grucli.model.records import RecurrentLayer
from grucli.model.semantics import KERAS2, Semantics

# How each activation is defined, in the notation of the equations (`clip`, `exp`, `max` elementwise).
DEFINITIONS: dict[str, str] = {
    "sigmoid": "sigmoid(v) = 1 / (1 + exp(-v))",
    "tanh": "tanh(v) = (exp(v) - exp(-v)) / (exp(v) + exp(-v))",
    "linear": "linear(v) = v",
    "relu": "relu(v) = max(v, 0)",
    "relu6": "relu6(v) = clip(v, 0, 6)",
    "softsign": "softsign(v) = v / (1 + abs(v))",
    "softplus": "softplus(v) = log(1 + exp(v))",
    "exponential": "exponential(v) = exp(v)",
    "elu": "elu(v) = v where v > 0, else exp(v) - 1",
    "silu": "silu(v) = v * sigmoid(v)",
    "swish": "swish(v) = v * sigmoid(v)",
}
HARD_SIGMOID = {
    KERAS2: "hard_sigmoid(v) = clip(0.2 * v + 0.5, 0, 1)",  # Keras 1/2, tf.keras 2, tf-keras
    "keras3": "hard_sigmoid(v) = clip(v / 6 + 0.5, 0, 1)",
}


@dataclass(frozen=True)
class Equations:
    """A layer's step equations (`lines`), the definitions of the activations they use, and
    notes on where the weights came from (CuDNN conversions, Keras 1 arrays)."""

    lines: tuple[str, ...]
    definitions: tuple[str, ...]
    notes: tuple[str, ...]


def layer_equations(layer: RecurrentLayer, semantics: Semantics) -> Equations:
    """The equations of one step of `layer`, exact for its configuration."""
    family, settings = layer.family, layer.settings
    act, recurrent_act = settings.shown_activation, settings.shown_recurrent_activation
    lines = family.equations(act, recurrent_act, layer.bias is not None, bool(settings.reset_after))
    used = (recurrent_act, act) if family.uses_recurrent_activation else (act,)
    return Equations(lines, tuple(_definitions(used, semantics)), tuple(_notes(layer)))


def _definitions(used: tuple[str, ...], semantics: Semantics) -> list[str]:
    lines = []
    for name in dict.fromkeys(used):
        if name == "hard_sigmoid":
            version = "Keras 1/2 and tf.keras 2" if semantics == KERAS2 else "Keras 3"
            lines.append(f"{HARD_SIGMOID[semantics]}   ({version}, which saved this file)")
        elif name in DEFINITIONS:
            lines.append(DEFINITIONS[name])
        else:
            lines.append(f"{name}: Keras's `{name}` activation")
    return lines


def _notes(layer: RecurrentLayer) -> list[str]:
    names = "W_g, U_g, b_g" + (", rb_g" if layer.bias is not None and layer.bias.ndim == 2 else "")
    arrays = "kernel, recurrent_kernel, bias" + (", recurrent_bias" if layer.bias is not None and layer.bias.ndim == 2 else "")
    notes = [
        f"{names}: gate g's {arrays} (grucli inspect slices them; export keys {layer.path}/g/...)",
        "x: this timestep's input; h_prev"
        + (", c_prev" if layer.family.has_cell_state else "")
        + ": the state after the previous step (zeros at the first)",
    ]
    if layer.family.convolutional:
        notes.append(
            "⊛: a convolution; x ⊛ W_g with the layer's kernel_size, strides, padding and dilation_rate, "
            "h_prev ⊛ U_g with stride 1 and padding same"
        )
    if layer.settings.go_backwards:
        notes.append("go_backwards: the steps run from the last timestep to the first")
    if layer.source_layout == "cudnn":
        if layer.family.cudnn_bias == "sum":
            notes.append(f"converted from {layer.family.cudnn_class}: b_g is the sum of cuDNN's input and recurrent biases of gate g")
        else:
            notes.append(
                f"converted from {layer.family.cudnn_class}: b_g and rb_g are cuDNN's input and recurrent biases (a reset_after=True GRU)"
            )
    if layer.source_layout == "keras1":
        notes.append("assembled from Keras 1 per-gate arrays: W_g, U_g, b_g are the file's W_g, U_g, b_g")
    return notes
