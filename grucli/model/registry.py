"""The family registry: every fact grucli knows about a recurrent family (GRU, LSTM, SimpleRNN,
ConvLSTM), and about the layer classes it treats by name (wrappers, models, cells, inputs).

One `Family` record per family holds its gate letters and meanings, which gates the recurrent
activation squashes, its states, the layouts older files and other frameworks use (Keras 1
per-gate arrays, CuDNN, PyTorch), its step equations and the name of its NumPy cell. Code
elsewhere asks a record (`family_of(layer.kind).gates`) or a predicate here (`role_of`); it never
compares a family or class name itself (tests/model/test_registry.py greps for that).

May import: the standard library only (it is the bottom of the model layer).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Family:
    """What a recurrent family is, independent of any one layer's weights."""

    name: str
    gates: tuple[str, ...]  # canonical column order of kernel, recurrent kernel and bias
    meanings: Mapping[str, str]
    squashed_gates: tuple[str, ...]  # the gates recurrent_activation squashes (check's saturation)
    states: tuple[str, ...]  # what the layer carries from step to step, in Keras's state order
    equations: Callable[[str, str, bool, bool], tuple[str, ...]]  # (activation, recurrent activation, bias, reset_after)
    cell: str  # the NumPy cell that runs one step (engine.steps.CELLS)
    uses_recurrent_activation: bool = True
    two_row_bias: bool = False  # GRU reset_after=True: bias (2, 3u), input and recurrent rows
    keras1_stored_gates: tuple[str, ...] | None = None  # Keras 1 per-gate arrays, in stored order
    cudnn_class: str | None = None  # the CuDNN layer of this family (tf.keras 2 / Keras 2)
    cudnn_bias: str | None = None  # "sum": input + recurrent bias; "rows": the (2, 3u) bias of reset_after
    torch_gates: tuple[str, ...] | None = None  # PyTorch's gate order (in Keras's letters), None: no PyTorch module
    torch_letters: tuple[str, ...] | None = None  # PyTorch's own letters for those gates (GRU r, z, n)
    torch_module: str | None = None
    onnx_op: str | None = None  # the ONNX operator that computes a layer of this family, None: none does
    onnx_gates: tuple[str, ...] | None = None  # ONNX's gate order, in Keras's gate letters
    onnx_letters: tuple[str, ...] | None = None  # ONNX's own letters for those gates (RNN: i)
    convolutional: bool = False  # ConvLSTM: ⊛ instead of ·, kernels with a window in front
    equation_notes: tuple[str, ...] = field(default=())
    # What the cell records at every step (replay --gates, the pictures), after its activation, in
    # the order the step computes it, with what each is: gates, candidates and states.
    traced: Mapping[str, str] = field(default_factory=dict)
    # The traced values that are an activation's output, and which of the layer's settings names
    # it (activation, recurrent_activation): where a value saturates is the activation's bounds.
    # The others (a GRU's or LSTM's h, an LSTM's c) mix several activations' outputs.
    traced_activation: Mapping[str, str] = field(default_factory=dict)

    def meaning(self, gate: str) -> str:
        return self.meanings[gate]

    @property
    def state_count(self) -> int:
        return len(self.states)

    @property
    def has_cell_state(self) -> bool:
        return "c" in self.states


# --- equations, one function per family (read by model/equations.py) ------------------------------


def _sum(*terms: str | None) -> str:
    return " + ".join(term for term in terms if term)


def _gru_equations(act: str, recurrent_act: str, has_bias: bool, reset_after: bool) -> tuple[str, ...]:
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


def _lstm_equations(act: str, recurrent_act: str, has_bias: bool, reset_after: bool) -> tuple[str, ...]:
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


def _conv_lstm_equations(act: str, recurrent_act: str, has_bias: bool, reset_after: bool) -> tuple[str, ...]:
    return tuple(line.replace("·", " ⊛ ") for line in _lstm_equations(act, recurrent_act, has_bias, reset_after))


def _simple_rnn_equations(act: str, recurrent_act: str, has_bias: bool, reset_after: bool) -> tuple[str, ...]:
    return (f"h = {act}({_sum('x·W_h', 'h_prev·U_h', 'b_h' if has_bias else None)})",)


LSTM_MEANINGS = {"i": "input gate", "f": "forget gate", "c": "cell candidate", "o": "output gate"}
LSTM_TRACED = {"i": "input gate", "f": "forget gate", "cc": "cell candidate", "c": "cell state", "o": "output gate", "h": "state"}
LSTM_TRACED_ACTIVATION = {"i": "recurrent_activation", "f": "recurrent_activation", "o": "recurrent_activation", "cc": "activation"}
# Where an activation's output saturates: its (low, high) bounds; a value within SATURATION_MARGIN
# of the range from either bound counts as saturated (a sigmoid below 0.05 or above 0.95, σ(±2.94);
# a tanh beyond ±0.9). Unbounded activations (relu, linear) have none.
SATURATION_BOUNDS: Mapping[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
}
SATURATION_MARGIN = 0.05

GRU = Family(
    name="GRU",
    gates=("z", "r", "h"),
    meanings={"z": "update gate", "r": "reset gate", "h": "candidate state"},
    squashed_gates=("z", "r"),
    states=("h",),
    equations=_gru_equations,
    cell="gru",
    two_row_bias=True,
    keras1_stored_gates=("z", "r", "h"),
    cudnn_class="CuDNNGRU",
    cudnn_bias="rows",
    torch_gates=("r", "z", "h"),
    torch_letters=("r", "z", "n"),
    torch_module="nn.GRU",
    onnx_op="GRU",
    onnx_gates=("z", "r", "h"),
    onnx_letters=("z", "r", "h"),
    equation_notes=("Keras computes h = z * h_prev + (1 - z) * hh: z near 1 keeps the old state (the textbook form swaps z and 1 - z)",),
    traced={"z": "update gate", "r": "reset gate", "hh": "candidate state", "h": "state"},
    traced_activation={"z": "recurrent_activation", "r": "recurrent_activation", "hh": "activation"},
)
LSTM = Family(
    name="LSTM",
    gates=("i", "f", "c", "o"),
    meanings=LSTM_MEANINGS,
    squashed_gates=("i", "f", "o"),
    states=("h", "c"),
    equations=_lstm_equations,
    cell="lstm",
    keras1_stored_gates=("i", "c", "f", "o"),
    cudnn_class="CuDNNLSTM",
    cudnn_bias="sum",
    torch_gates=("i", "f", "c", "o"),
    torch_letters=("i", "f", "g", "o"),
    torch_module="nn.LSTM",
    onnx_op="LSTM",
    onnx_gates=("i", "o", "f", "c"),
    onnx_letters=("i", "o", "f", "c"),
    traced=LSTM_TRACED,
    traced_activation=LSTM_TRACED_ACTIVATION,
)
SIMPLE_RNN = Family(
    name="SimpleRNN",
    gates=("h",),
    meanings={"h": "state"},
    squashed_gates=(),
    states=("h",),
    equations=_simple_rnn_equations,
    cell="simple_rnn",
    uses_recurrent_activation=False,
    torch_gates=("h",),
    torch_letters=("h",),
    torch_module="nn.RNN",
    onnx_op="RNN",
    onnx_gates=("h",),
    onnx_letters=("i",),
    traced={"h": "state"},
    traced_activation={"h": "activation"},
)
CONV_LSTM = Family(
    name="ConvLSTM",
    gates=("i", "f", "c", "o"),
    meanings=LSTM_MEANINGS,
    squashed_gates=("i", "f", "o"),
    states=("h", "c"),
    equations=_conv_lstm_equations,
    cell="conv_lstm",
    convolutional=True,
    traced=LSTM_TRACED,
    traced_activation=LSTM_TRACED_ACTIVATION,
)
FAMILIES = (GRU, LSTM, SIMPLE_RNN, CONV_LSTM)

# A layer's kind (what grucli reports it as) and the family it follows.
KINDS: Mapping[str, Family] = {
    "GRU": GRU,
    "LSTM": LSTM,
    "SimpleRNN": SIMPLE_RNN,
    "ConvLSTM1D": CONV_LSTM,
    "ConvLSTM2D": CONV_LSTM,
    "ConvLSTM3D": CONV_LSTM,
}
# Every class that is a recurrent layer or a standard cell, and its kind. Keras 2's V1/V2 names,
# CuDNN layers and cells read like the layers they name.
CLASS_KINDS: Mapping[str, str] = {
    "GRU": "GRU",
    "GRUV1": "GRU",
    "GRUV2": "GRU",
    "CuDNNGRU": "GRU",
    "GRUCell": "GRU",
    "LSTM": "LSTM",
    "LSTMV1": "LSTM",
    "LSTMV2": "LSTM",
    "CuDNNLSTM": "LSTM",
    "LSTMCell": "LSTM",
    "SimpleRNN": "SimpleRNN",
    "SimpleRNNCell": "SimpleRNN",
    "ConvLSTM1D": "ConvLSTM1D",
    "ConvLSTM2D": "ConvLSTM2D",
    "ConvLSTM3D": "ConvLSTM3D",
}
# The standard cells RNN(cell=...) runs.
CELL_CLASSES = frozenset({"GRUCell", "LSTMCell", "SimpleRNNCell"})
# Cells that may hold a `layers` list in their config but are not models.
LISTING_CELLS = CELL_CLASSES | {"ConvLSTMCell", "PeepholeLSTMCell"}
# A class name that suggests recurrence: a layer that has one but grucli cannot slice is refused, not listed.
RECURRENT_HINTS = ("RNN", "GRU", "LSTM", "Cell")
UNKNOWN_CLASS = "Unknown"  # a layer of a config-less file whose weights fit no recurrent family


def family_of(kind: str) -> Family:
    """The family a kind (`GRU`, `ConvLSTM2D`, ...) follows."""
    return KINDS[kind]


def kind_of(class_name: str) -> str | None:
    """The kind of a recurrent layer or standard cell class grucli slices, None for any other class
    (ConvLSTMCell in a bare RNN is listed, not sliced)."""
    return CLASS_KINDS.get(class_name)


def reset_after_rule(bias_rows: int | None, declared: Any, keras_version: str | None) -> bool:
    """A GRU's reset_after, by one rule: the bias shape says it where there is a bias ((2, 3u):
    True, (3u,): False); without a bias the config's value; without that, the default of the
    Keras that saved the file (False in Keras 2, True in tf.keras 2 and Keras 3; None: unknown,
    taken as True)."""
    if bias_rows is not None:
        return bias_rows == 2
    if declared is not None:
        return bool(declared)
    return keras_version is None or not keras_version.startswith("2.")


def family_named(class_name: str) -> Family | None:
    """The family whose own layer class this is (GRU, LSTM, SimpleRNN), None for any other class."""
    return next((family for family in FAMILIES if family.name == class_name), None)


def class_for_layout(gate_count: int, window_rank: int, doubled_bias: bool) -> str | None:
    """The recurrent class that stores a kernel of `gate_count` gate blocks (with a kernel window of
    `window_rank` axes in front: ConvLSTM) and a bias twice the usual length (CuDNN), or None."""
    for family in FAMILIES:
        if len(family.gates) != gate_count or family.convolutional != (window_rank > 0):
            continue
        if family.convolutional:
            return f"ConvLSTM{window_rank}D" if f"ConvLSTM{window_rank}D" in KINDS else None
        return family.cudnn_class if doubled_bias and family.cudnn_class else family.name
    return None


def keras1_class(array_count: int) -> str | None:
    """The Keras 1 recurrent class that stores `array_count` per-gate arrays (W, U, b per gate)."""
    return next((family.name for family in FAMILIES if family.keras1_stored_gates and array_count == 3 * len(family.gates)), None)


def is_cudnn_class(class_name: str) -> bool:
    return any(family.cudnn_class == class_name for family in FAMILIES)


def looks_recurrent(class_name: str) -> bool:
    return any(hint in class_name for hint in RECURRENT_HINTS)


# --- what other classes are to grucli ------------------------------------------------------------------


class Role(enum.Enum):
    """What a layer class is to grucli's reading of a layer tree."""

    RECURRENT = "recurrent"  # a recurrent layer (GRU, CuDNNLSTM, ConvLSTM2D)
    CELL = "cell"  # a cell that RNN runs (GRUCell, ConvLSTMCell)
    BIDIRECTIONAL = "bidirectional"  # children forward and backward
    TIME_DISTRIBUTED = "time_distributed"  # one child, run on every outer step
    RNN = "rnn"  # one cell, or stacked cells (children cell_0, cell_1, ...)
    MODEL = "model"  # Sequential, Functional, Model: children listed under `layers`
    INPUT = "input"  # InputLayer
    OTHER = "other"


ROLES: Mapping[str, Role] = {
    "Bidirectional": Role.BIDIRECTIONAL,
    "TimeDistributed": Role.TIME_DISTRIBUTED,
    "RNN": Role.RNN,
    "Sequential": Role.MODEL,
    "Functional": Role.MODEL,
    "Model": Role.MODEL,
    "InputLayer": Role.INPUT,
}
MODEL_CLASSES = frozenset(name for name, role in ROLES.items() if role is Role.MODEL)
# The config key under which a wrapper holds the layer it wraps.
WRAPPED_KEY: Mapping[Role, str] = {Role.BIDIRECTIONAL: "layer", Role.TIME_DISTRIBUTED: "layer", Role.RNN: "cell"}
WRAPPER_CLASSES: Mapping[str, str] = {name: WRAPPED_KEY[role] for name, role in ROLES.items() if role in WRAPPED_KEY}
BIDIRECTIONAL_CLASS, TIME_DISTRIBUTED_CLASS, RNN_CLASS = "Bidirectional", "TimeDistributed", "RNN"  # for inferred trees
SEQUENTIAL_CLASS = "Sequential"
# A module of a PyTorch state_dict or an ONNX graph that holds recurrent layers (its layers l0, l0_reverse ...).
SOURCE_MODULE_CLASS = "SourceModule"
# Every class whose call runs recurrent steps: the recurrent layers (not bare cells), RNN and Bidirectional.
RECURRENT_LAYER_CLASSES = frozenset(name for name in CLASS_KINDS if name not in CELL_CLASSES) | {RNN_CLASS, BIDIRECTIONAL_CLASS}
# Layers that run Python code from the file (verify refuses them unless --unsafe).
CODE_CLASSES = frozenset({"Lambda"})
# Keras 3 merges whose values, not only their output mask, follow their inputs' masks (Multiply counts a
# masked step as 1, Maximum and Minimum skip it: `Merge._apply_merge_op_and_or_mask`). Keras 1/2 and
# tf-keras merges compute their values as if unmasked. The replay computes these; convert refuses them.
KERAS3_MASK_AWARE_MERGES = frozenset({"Multiply", "Maximum", "Minimum"})
# Layers whose input is integer ids (inputs are drawn as ids, and checked to be whole numbers).
TOKEN_ID_CLASSES = frozenset({"Embedding"})
# Layers a port fills from another framework's Linear (kernel, bias) and Embedding (table), besides recurrent ones.
DENSE_CLASSES = frozenset({"Dense", "TimeDistributed(Dense)"})
# Keras 1's Convolution1D, whose kernel Keras 2's loader reshapes (rebuilt as a Conv1D).
KERAS1_CONV1D_CLASS = "Convolution1D"


# Keras 1 config keys and their Keras 2 names (None: no longer a setting), per class.
KERAS1_RECURRENT_NAMES: Mapping[str, str | None] = {
    "output_dim": "units",
    "inner_activation": "recurrent_activation",
    "dropout_W": "dropout",
    "dropout_U": "recurrent_dropout",
    "consume_less": None,
    "input_dim": None,
    "input_length": None,
}
KERAS1_CONV_NAMES: Mapping[str, str | None] = {
    "nb_filter": "filters",
    "filter_length": "kernel_size",
    "subsample_length": "strides",
    "border_mode": "padding",
    "bias": "use_bias",
    "init": "kernel_initializer",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
    "input_dim": None,
    "input_length": None,
}
KERAS1_SETTING_NAMES: Mapping[str, Mapping[str, str | None]] = {
    **{family.name: KERAS1_RECURRENT_NAMES for family in FAMILIES if not family.convolutional},
    "Dense": {"output_dim": "units"},
    "Conv1D": KERAS1_CONV_NAMES,
}
KERAS2_CONV1D_CLASS = "Conv1D"  # what Keras 1's Convolution1D is read as
INPUT_CLASS = "InputLayer"
LEGACY_FUNCTIONAL_CLASS, FUNCTIONAL_CLASS = "Model", "Functional"  # tf.keras 2.2 saved functional models as Model


def holds_recurrent(class_name: str) -> bool:
    """A recurrent layer, an RNN or a Bidirectional: a layer whose call runs recurrent steps (not a bare cell)."""
    return role_of(class_name) in (Role.RECURRENT, Role.RNN, Role.BIDIRECTIONAL)


def is_legacy_functional(class_name: str) -> bool:
    return class_name == LEGACY_FUNCTIONAL_CLASS


def role_of(class_name: str) -> Role:
    if class_name in CELL_CLASSES or class_name == "ConvLSTMCell":
        return Role.CELL
    if class_name in CLASS_KINDS:
        return Role.RECURRENT
    return ROLES.get(class_name, Role.OTHER)


def is_model(class_name: str) -> bool:
    return role_of(class_name) is Role.MODEL


def is_sequential(class_name: str) -> bool:
    return class_name == SEQUENTIAL_CLASS


def is_input_layer(class_name: str) -> bool:
    return role_of(class_name) is Role.INPUT


def is_standard_cell(class_name: str) -> bool:
    return class_name in CELL_CLASSES


def runs_code(class_name: str) -> bool:
    return class_name in CODE_CLASSES


def is_dense(class_name: str) -> bool:
    return class_name in DENSE_CLASSES


def takes_token_ids(class_name: str) -> bool:
    return class_name in TOKEN_ID_CLASSES


def merge_values_follow_masks(class_name: str, keras3: bool) -> bool:
    """Whether this merge layer's values (not only its mask) depend on its inputs' masks."""
    return keras3 and class_name in KERAS3_MASK_AWARE_MERGES


def is_keras1_conv1d(class_name: str) -> bool:
    return class_name == KERAS1_CONV1D_CLASS


def is_unknown(class_name: str) -> bool:
    return class_name == UNKNOWN_CLASS
