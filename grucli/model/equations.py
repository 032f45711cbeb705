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

from grucli.engine.steps import KERAS2
from grucli.model import gates
from grucli.model.records import RecurrentLayer

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


def layer_equations(layer: RecurrentLayer, semantics: str) -> Equations:
    """The equations of one step of `layer`, exact for its configuration."""
    family = gates.equation_family(layer.kind)
    act = layer.config.get("activation") or "tanh"
    recurrent_act = layer.config.get("recurrent_activation") or "sigmoid"
    has_bias = layer.bias is not None
    if family == "GRU":
        lines = _gru(act, recurrent_act, has_bias, bool(layer.config.get("reset_after")))
        used = (recurrent_act, act)
    elif family == "LSTM":
        lines = _lstm(act, recurrent_act, has_bias)
        used = (recurrent_act, act)
    else:
        lines = (f"h = {act}({_sum('x·W_h', 'h_prev·U_h', 'b_h' if has_bias else None)})",)
        used = (act,)
    if layer.kind.startswith("ConvLSTM"):
        lines = tuple(line.replace("·", " ⊛ ") for line in lines)
    return Equations(lines, tuple(_definitions(used, semantics)), tuple(_notes(layer)))


def _sum(*terms: str | None) -> str:
    return " + ".join(term for term in terms if term)


def _gru(act: str, recurrent_act: str, has_bias: bool, reset_after: bool) -> tuple[str, ...]:
    if reset_after:  # biases on both sides; r scales the recurrent term after its product
        def gate(g: str) -> str:
            return _sum(f"x·W_{g}", f"b_{g}" if has_bias else None, f"h_prev·U_{g}", f"rb_{g}" if has_bias else None)

        candidate = f"hh = {act}({_sum('x·W_h', 'b_h' if has_bias else None)} + r * ({_sum('h_prev·U_h', 'rb_h' if has_bias else None)}))"
    else:  # r scales the previous state before the product

        def gate(g: str) -> str:
            return _sum(f"x·W_{g}", f"h_prev·U_{g}", f"b_{g}" if has_bias else None)

        candidate = f"hh = {act}({_sum('x·W_h', '(r * h_prev)·U_h', 'b_h' if has_bias else None)})"
    return (
        f"z = {recurrent_act}({gate('z')})",
        f"r = {recurrent_act}({gate('r')})",
        candidate,
        "h = z * h_prev + (1 - z) * hh",
    )


def _lstm(act: str, recurrent_act: str, has_bias: bool) -> tuple[str, ...]:
    def pre(g: str) -> str:
        return _sum(f"x·W_{g}", f"h_prev·U_{g}", f"b_{g}" if has_bias else None)

    return (
        f"i = {recurrent_act}({pre('i')})",
        f"f = {recurrent_act}({pre('f')})",
        f"cc = {act}({pre('c')})",
        "c = f * c_prev + i * cc",
        f"o = {recurrent_act}({pre('o')})",
        f"h = o * {act}(c)",
    )


def _definitions(used: tuple[str, ...], semantics: str) -> list[str]:
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
        "x: this timestep's input; h_prev" + (", c_prev" if gates.equation_family(layer.kind) == "LSTM" else "")
        + ": the state after the previous step (zeros at the first)",
    ]
    if layer.kind.startswith("ConvLSTM"):
        notes.append("⊛: a convolution; x ⊛ W_g with the layer's kernel_size, strides, padding and dilation_rate, "
                     "h_prev ⊛ U_g with stride 1 and padding same")
    if layer.config.get("go_backwards"):
        notes.append("go_backwards: the steps run from the last timestep to the first")
    if layer.source_layout == "cudnn":
        if gates.equation_family(layer.kind) == "LSTM":
            notes.append("converted from CuDNNLSTM: b_g is the sum of cuDNN's input and recurrent biases of gate g")
        else:
            notes.append("converted from CuDNNGRU: b_g and rb_g are cuDNN's input and recurrent biases (a reset_after=True GRU)")
    if layer.source_layout == "keras1":
        notes.append("assembled from Keras 1 per-gate arrays: W_g, U_g, b_g are the file's W_g, U_g, b_g")
    return notes
