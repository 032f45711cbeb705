"""ConvLSTM1D/2D/3D as an ONNX Scan: ONNX has no convolutional recurrent operator, so the step is
written out, as Keras's ConvLSTMCell computes it. The input's convolutions do not depend on the
state, so they run once for every step outside the loop (time folded into the batch, as the
replay does); the Scan carries h and c and computes, per step,

    z = (x_t ⊛ W + b) + h_tm1 ⊛ U        (U: "same" padding, stride 1)
    i, f, cc, o = rec_act(z_i), rec_act(z_f), act(z_c), rec_act(z_o)
    c = f * c_tm1 + i * cc;   h = o * act(c)

May import: numpy, convert/symbols, model/, errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grucli.convert.builder import GraphBuilder
from grucli.convert.symbols import ConvertError, Symbol
from grucli.model.layers import conv_lstm_settings
from grucli.model.records import RecurrentLayer


def conv_lstm_call(b: GraphBuilder, layer: RecurrentLayer, x: Symbol, states: Sequence[Symbol] | None) -> list[Symbol]:
    settings = layer.settings
    kernel, recurrent_kernel = np.asarray(layer.kernel, np.float32), np.asarray(layer.recurrent_kernel, np.float32)
    rank = kernel.ndim - 2  # spatial axes of a step
    if x.mask is not None:
        raise ConvertError(f"layer {layer.path} ({layer.kind}) is fed a masked sequence; convert writes ConvLSTM unmasked")
    if b.state_io or settings.stateful:
        raise ConvertError(f"layer {layer.path} ({layer.kind}) is stateful or streamed (--state-io); convert does not stream ConvLSTM")
    if x.rank != rank + 3:
        raise ConvertError(
            f"layer {layer.path} ({layer.kind}) is fed a tensor of rank {x.rank}; expected (batch, time, {rank} axes, channels)"
        )
    strides, padding, dilations = conv_lstm_settings(layer, ConvertError, "convert")
    units = layer.units
    order = [layer.family.gates.index(gate) for gate in ("i", "f", "c", "o")]
    columns = np.concatenate([np.arange(units) + index * units for index in order])  # Keras's i, f, c, o, whatever the record's order

    # x_t ⊛ W + b for every step at once: (batch·time, spatial..., channels) → (batch, time, spatial'..., 4·units)
    shape = b.one("Shape", [x.name])
    folded = b.one("Reshape", [x.name, b.one("Concat", [b.int_constant([-1], "batch_time"), _dims(b, shape, 2, rank + 3)], axis=0)])
    bias = np.zeros(4 * units, np.float32) if layer.bias is None else np.asarray(layer.bias, np.float32)[columns]
    projected = _conv(b, folded, kernel[..., columns], bias, rank, strides, dilations, padding)
    projected_shape = b.one("Shape", [projected])
    unfolded = b.one("Reshape", [projected, b.one("Concat", [_dims(b, shape, 0, 2), _dims(b, projected_shape, 1, rank + 2)], axis=0)])

    if states is None:
        state_shape = b.one(
            "Concat", [_dims(b, shape, 0, 1), _dims(b, projected_shape, 1, rank + 1), b.int_constant([units], "units")], axis=0
        )
        zeros = b.one("ConstantOfShape", [state_shape])
        initial = [zeros, zeros]
    else:
        if len(states) != 2:
            raise ConvertError(f"layer {layer.path} ({layer.kind}) is given {len(states)} initial states; expected 2 (h, c)")
        initial = [state.name for state in states]

    body = _step_body(b, layer, recurrent_kernel[..., columns], rank, units)
    h_last, c_last, sequence = b.node(
        "Scan",
        [*initial, unfolded],
        outputs=3,
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_output_axes=[1],
        scan_input_directions=[1 if settings.go_backwards else 0],
    )
    b.recurrent_nodes.append(f"{layer.path}: ONNX Scan (a {layer.kind} step: no ONNX operator computes it)")
    output = Symbol(sequence, rank + 3) if settings.return_sequences else Symbol(h_last, rank + 2)
    return [output, Symbol(h_last, rank + 2), Symbol(c_last, rank + 2)] if settings.return_state else [output]


def _step_body(b: GraphBuilder, layer: RecurrentLayer, recurrent_kernel: np.ndarray, rank: int, units: int) -> Any:
    """The Scan's body: (h_tm1, c_tm1, z_x_t) → (h, c, h)."""
    helper, proto = b.onnx.helper, b.onnx.TensorProto
    settings = layer.settings
    names = [b.name(base) for base in ("h_tm1", "c_tm1", "zx_t")]
    with b.collecting() as nodes:
        z = b.one("Add", [names[2], _conv(b, names[0], recurrent_kernel, None, rank, [1] * rank, [1] * rank, "same")])
        gates = b.node("Split", [z, b.int_constant([units] * 4, "split")], outputs=4, axis=-1)
        i, f, o = (b.activation(settings.recurrent_activation, gates[k], layer.path) for k in (0, 1, 3))
        candidate = b.activation(settings.activation, gates[2], layer.path)
        c = b.one("Add", [b.one("Mul", [f, names[1]]), b.one("Mul", [i, candidate])])
        h = b.one("Mul", [o, b.activation(settings.activation, c, layer.path)])
        outputs = [b.one("Identity", [h]), b.one("Identity", [c]), b.one("Identity", [h])]
    value = [None] * (rank + 2)
    return helper.make_graph(
        nodes,
        b.name("conv_lstm_step"),
        [helper.make_tensor_value_info(name, proto.FLOAT, value) for name in names],
        [helper.make_tensor_value_info(name, proto.FLOAT, value) for name in outputs],
    )


def _conv(
    b: GraphBuilder,
    x: str,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    rank: int,
    strides: Sequence[int],
    dilations: Sequence[int],
    padding: str,
) -> str:
    """A channels-last convolution: ONNX's Conv on channels first, transposed around it."""
    first = b.one("Transpose", [x], perm=[0, rank + 1, *range(1, rank + 1)])
    inputs = [first, b.constant(np.transpose(kernel, (rank + 1, rank, *range(rank))), "kernel")]
    if bias is not None:
        inputs.append(b.constant(bias, "bias"))
    pads: dict[str, Any] = {"auto_pad": "SAME_UPPER"} if padding == "same" else {"pads": [0] * 2 * rank}
    y = b.one("Conv", inputs, kernel_shape=list(kernel.shape[:rank]), strides=list(strides), dilations=list(dilations), **pads)
    return b.one("Transpose", [y], perm=[0, *range(2, rank + 2), 1])


def _dims(b: GraphBuilder, shape: str, start: int, end: int) -> str:
    return b.one("Slice", [shape, b.int_constant([start], "start"), b.int_constant([end], "end")])
