"""`grucli explain`: one unit of one recurrent layer, step by step, every number of its arithmetic.

For each timestep, in the order the layer consumes them (from the last for go_backwards and
backward directions): the input vector x, the whole previous state, and for this unit each
gate's pre-activation split into its terms (x·W_g, h_prev·U_g, b_g, rb_g), the activation, the
candidate and the new state (and cell state). The step functions below are a second, deliberately
plain reading of Keras's cells: they compute every unit's terms separately instead of one fused
matrix product, so what they print is what they add up. The layer's real input comes from
grucli's replay of the model up to that layer; the end compares the unit's outputs with
predict's (Keras, when installed) or with the replay's own run of the layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grucli.engine.activations import activation
from grucli.engine.graph import LayerRun, ModelReplay
from grucli.errors import GrucliError
from grucli.files.budget import Limits
from grucli.files.inputs import InputError, model_inputs
from grucli.model import gates, paths
from grucli.model.equations import Equations, layer_equations
from grucli.model.layers import require_recurrent
from grucli.model.records import (
    ModelFile,
    ModelLayers,
    RawLayer,
    RecurrentLayer,
)
from grucli.model.registry import Role, role_of
from grucli.model.semantics import KERAS2, Semantics, semantics_for

# Layers at most this small also get the vector form: every unit's gates, and the products written out.
SMALL_UNITS = 4
SMALL_INPUTS = 8
NO_KERAS = "none"  # --keras none: compare with the replay only, never import Keras


@dataclass(frozen=True)
class Term:
    """One summand of a pre-activation, e.g. ("x·W_z", 0.512); `products` writes a dot product
    out as (left, right) pairs for small layers."""

    label: str
    value: float
    products: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class GateStep:
    """One gate of this unit at one step: its terms, their sum, the activation and its value.

    `scaled` is the GRU reset_after candidate's `r * (h_prev·U_h + rb_h)`: the last two terms
    are multiplied by r before they join the sum."""

    gate: str  # z, r, h (GRU); i, f, c, o (LSTM); h (SimpleRNN)
    name: str  # the quantity's name in the equations: z, r, hh; i, f, cc, o; h
    activation: str
    terms: tuple[Term, ...]
    pre_activation: float
    value: float
    scaled_by: float | None = None


@dataclass(frozen=True)
class Step:
    """One timestep of the unit. `t` indexes the layer's input in time order."""

    t: int
    x: np.ndarray
    h_prev: np.ndarray
    c_prev: np.ndarray | None
    gates: tuple[GateStep, ...]
    h: float  # this unit's new state (the previous one carried over at a masked step)
    c: float | None
    output: float  # what the layer emits at this step for this unit
    masked: bool
    vectors: dict[str, np.ndarray]  # every unit's gates and state (small layers only)


@dataclass(frozen=True)
class OutputCheck:
    """The unit's outputs beside a reference: predict's (Keras) or the replay's run of the layer."""

    reference: str  # "predict" or "replay"
    description: str  # who computed the reference, e.g. "Keras 3.15.1 (tensorflow backend)"
    steps: tuple[int, ...]  # timesteps compared (time order indices)
    explained: tuple[float, ...]
    expected: tuple[float, ...]
    max_abs_diff: float
    note: str | None = None


@dataclass(frozen=True)
class Explanation:
    file: str
    path: str
    kind: str
    units: int
    input_dim: int
    unit: int
    sample: int
    semantics: str
    input_description: str
    equations: Equations
    activation_notes: tuple[str, ...]
    go_backwards: bool
    steps: tuple[Step, ...]
    output: OutputCheck
    other_recurrent: tuple[str, ...]  # the model's other recurrent layers, for --layer


@dataclass(frozen=True)
class ExplainOptions:
    input_path: Path | None
    batch: int
    timesteps: int
    seed: int
    layer_path: str | None
    sample: int
    unit: int
    framework: str  # auto, keras, tf-keras or none
    limits: Limits = field(default_factory=Limits)


# --- choosing the layer -----------------------------------------------------------------------------


def choose_layer(found: ModelLayers, wanted: str | None) -> RecurrentLayer:
    """The layer --layer names (exactly), or the first recurrent layer of the model."""
    require_recurrent(found)
    explainable = [layer for layer in found.recurrent if not layer.family.convolutional]
    if wanted is None:
        if not explainable:
            raise InputError(
                f"explain follows one unit of a GRU, LSTM or SimpleRNN; this model has only "
                f"{', '.join(f'{layer.path} ({layer.kind})' for layer in found.recurrent)}, whose units are spatial maps"
            )
        return explainable[0]
    for layer in found.recurrent:
        if layer.path == wanted.rstrip(paths.SEPARATOR):
            if layer.family.convolutional:
                raise InputError(
                    f"layer {layer.path} is a {layer.kind}, whose units are spatial maps; explain follows one unit "
                    "of a GRU, LSTM or SimpleRNN (grucli replay --gates OUT.npz writes its gate values)"
                )
            return layer
    below = [layer.path for layer in found.recurrent if paths.selects(wanted, layer.path)]
    if below:
        raise InputError(
            f"--layer {wanted} holds {len(below)} recurrent layers ({', '.join(below)}); explain follows one: pass one of those paths"
        )
    raise InputError(f"no recurrent layer {wanted!r} in this model; expected one of: {', '.join(layer.path for layer in found.recurrent)}")


# --- one step, every number -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GateWeights:
    """Every unit's columns of one gate: W (input_dim, units), U (units, units), b, rb (units,)."""

    W: np.ndarray
    U: np.ndarray
    b: np.ndarray | None
    rb: np.ndarray | None


def gate_weights(layer: RecurrentLayer) -> dict[str, GateWeights]:
    """The gate slices `export` writes, as float64."""
    names = gates.gate_array_names(layer)

    def read(gate: str, name: str) -> np.ndarray:
        return gates.gate_array(layer, gate, name).astype(np.float64)

    def read_bias(gate: str, name: str) -> np.ndarray | None:
        return read(gate, name) if name in names else None  # a layer without bias, or a one-row bias

    return {
        gate: GateWeights(read(gate, "kernel"), read(gate, "recurrent_kernel"), read_bias(gate, "bias"), read_bias(gate, "recurrent_bias"))
        for gate in gates.gate_names(layer.kind)
    }


class UnitStepper:
    """Runs a layer step by step for all units, and records one unit's arithmetic."""

    def __init__(self, layer: RecurrentLayer, semantics: Semantics, unit: int, small: bool) -> None:
        self.layer = layer
        self.family = layer.family
        self.unit = unit
        self.small = small
        self.weights = gate_weights(layer)
        self.act_name = layer.settings.shown_activation
        self.rec_act_name = layer.settings.shown_recurrent_activation
        self.act = activation(self.act_name, semantics)
        self.rec_act = activation(self.rec_act_name, semantics)
        self.reset_after = bool(layer.settings.reset_after)
        # Each family's step, by the cell its record names (model/registry.py).
        self._steps: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[list[GateStep], dict[str, np.ndarray]]]] = {
            "gru": lambda x, h_prev, c_prev: self._gru(x, h_prev),
            "lstm": self._lstm,
            "simple_rnn": lambda x, h_prev, c_prev: self._simple(x, h_prev),
        }

    def _input_terms(self, gate: str, x: np.ndarray, h_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x·W_g and h_prev·U_g for every unit."""
        w = self.weights[gate]
        return x @ w.W, h_prev @ w.U

    def _term(self, label: str, values: np.ndarray, left: np.ndarray | None = None, right: np.ndarray | None = None) -> Term:
        u = self.unit
        products = tuple(zip(left.tolist(), right[:, u].tolist())) if self.small and left is not None and right is not None else ()
        return Term(label, float(values[u]), products)

    def step(self, x: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray | None) -> tuple[list[GateStep], dict[str, np.ndarray]]:
        """This unit's gates and every unit's new vectors: z, r, hh, h (GRU); i, f, cc, c, o, h; h."""
        return self._steps[self.family.cell](x, h_prev, c_prev)

    def _gate(
        self,
        gate: str,
        name: str,
        act_name: str,
        act: Callable[[np.ndarray], np.ndarray],
        terms: list[tuple[Term, np.ndarray]],
        scaled: tuple[np.ndarray, list[tuple[Term, np.ndarray]]] | None = None,
    ) -> tuple[GateStep, np.ndarray]:
        """Sum the terms in the equation's order, apply the activation; all units, one recorded."""
        pre = np.zeros_like(terms[0][1])
        for _, values in terms:
            pre = pre + values
        scaled_by = None
        listed = [term for term, _ in terms]
        if scaled is not None:
            factor, inner = scaled
            inner_sum = np.zeros_like(pre)
            for _, values in inner:
                inner_sum = inner_sum + values
            pre = pre + factor * inner_sum
            scaled_by = float(factor[self.unit])
            listed += [term for term, _ in inner]
        value = act(pre)
        u = self.unit
        return GateStep(gate, name, act_name, tuple(listed), float(pre[u]), float(value[u]), scaled_by), value

    def _bias_terms(self, gate: str, which: str) -> list[tuple[Term, np.ndarray]]:
        values = getattr(self.weights[gate], which)
        if values is None:
            return []
        return [(self._term(f"{which}_{gate}", values), values)]

    def _gru(self, x: np.ndarray, h_prev: np.ndarray) -> tuple[list[GateStep], dict[str, np.ndarray]]:
        rec, act = self.rec_act, self.act
        w = self.weights
        recorded = []
        vectors: dict[str, np.ndarray] = {}
        for gate in ("z", "r"):
            x_g, h_g = self._input_terms(gate, x, h_prev)
            x_term = (self._term(f"x·W_{gate}", x_g, x, w[gate].W), x_g)
            h_term = (self._term(f"h_prev·U_{gate}", h_g, h_prev, w[gate].U), h_g)
            if self.reset_after:  # Keras: x·W + b, then h_prev·U + rb
                terms = [x_term, *self._bias_terms(gate, "b"), h_term, *self._bias_terms(gate, "rb")]
            else:
                terms = [x_term, h_term, *self._bias_terms(gate, "b")]
            step, vectors[gate] = self._gate(gate, gate, self.rec_act_name, rec, terms)
            recorded.append(step)
        z, r = vectors["z"], vectors["r"]
        x_h = x @ w["h"].W
        x_term = (self._term("x·W_h", x_h, x, w["h"].W), x_h)
        if self.reset_after:  # hh = act(x·W_h + b_h + r * (h_prev·U_h + rb_h))
            h_h = h_prev @ w["h"].U
            inner = [(self._term("h_prev·U_h", h_h, h_prev, w["h"].U), h_h), *self._bias_terms("h", "rb")]
            candidate, hh = self._gate("h", "hh", self.act_name, act, [x_term, *self._bias_terms("h", "b")], (r, inner))
        else:  # hh = act(x·W_h + (r * h_prev)·U_h + b_h)
            reset_state = r * h_prev
            h_h = reset_state @ w["h"].U
            terms = [x_term, (self._term("(r * h_prev)·U_h", h_h, reset_state, w["h"].U), h_h), *self._bias_terms("h", "b")]
            candidate, hh = self._gate("h", "hh", self.act_name, act, terms)
        recorded.append(candidate)
        h = z * h_prev + (1 - z) * hh  # Keras's order: z keeps the previous state
        return recorded, {"z": z, "r": r, "hh": hh, "h": h}

    def _lstm(self, x: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray | None) -> tuple[list[GateStep], dict[str, np.ndarray]]:
        assert c_prev is not None  # explain_steps carries c for families with a cell state
        w = self.weights
        recorded = []
        vectors: dict[str, np.ndarray] = {}
        for gate, name in (("i", "i"), ("f", "f"), ("c", "cc"), ("o", "o")):
            x_g, h_g = self._input_terms(gate, x, h_prev)
            terms = [
                (self._term(f"x·W_{gate}", x_g, x, w[gate].W), x_g),
                (self._term(f"h_prev·U_{gate}", h_g, h_prev, w[gate].U), h_g),
                *self._bias_terms(gate, "b"),
            ]
            act_name, act = (self.act_name, self.act) if gate == "c" else (self.rec_act_name, self.rec_act)
            step, vectors[name] = self._gate(gate, name, act_name, act, terms)
            recorded.append(step)
        c = vectors["f"] * c_prev + vectors["i"] * vectors["cc"]
        h = vectors["o"] * self.act(c)
        return recorded, {**vectors, "c": c, "h": h}

    def _simple(self, x: np.ndarray, h_prev: np.ndarray) -> tuple[list[GateStep], dict[str, np.ndarray]]:
        w = self.weights["h"]
        x_h, h_h = x @ w.W, h_prev @ w.U
        terms = [(self._term("x·W_h", x_h, x, w.W), x_h), (self._term("h_prev·U_h", h_h, h_prev, w.U), h_h), *self._bias_terms("h", "b")]
        step, h = self._gate("h", "h", self.act_name, self.act, terms)
        return [step], {"h": h}


def explain_steps(layer: RecurrentLayer, fed: LayerRun, sample: int, unit: int, semantics: Semantics, small: bool) -> list[Step]:
    """Every step of `unit` for one sample of what the layer was fed, in processing order."""
    stepper = UnitStepper(layer, semantics, unit, small)
    x_all = np.asarray(fed.inputs[sample], np.float64)
    mask = None if fed.mask is None else np.asarray(fed.mask[sample], bool)
    lstm = stepper.family.has_cell_state
    if fed.initial_state is None:
        h_prev = np.zeros(layer.units)
        c_prev = np.zeros(layer.units) if lstm else None
    else:
        h_prev = np.asarray(fed.initial_state[0][sample], np.float64)
        c_prev = np.asarray(fed.initial_state[1][sample], np.float64) if lstm else None
    order = range(x_all.shape[0] - 1, -1, -1) if fed.go_backwards else range(x_all.shape[0])
    steps = []
    previous_output = np.zeros(layer.units)
    for t in order:
        recorded, vectors = stepper.step(x_all[t], h_prev, c_prev)
        masked = mask is not None and not mask[t]
        new_h = h_prev if masked else vectors["h"]  # a masked step carries every state over
        new_c = (c_prev if masked else vectors["c"]) if lstm else None
        if masked:
            output = np.zeros(layer.units) if fed.zero_output_for_mask else previous_output
        else:
            output = vectors["h"]
        steps.append(
            Step(
                t=t,
                x=x_all[t].copy(),
                h_prev=h_prev.copy(),
                c_prev=None if c_prev is None else c_prev.copy(),
                gates=tuple(recorded),
                h=float(new_h[unit]),
                c=None if new_c is None else float(new_c[unit]),
                output=float(output[unit]),
                masked=masked,
                vectors={name: value.copy() for name, value in vectors.items()} if small else {},
            )
        )
        h_prev, c_prev, previous_output = new_h, new_c, output
    return steps


# --- the whole command ------------------------------------------------------------------------------------


def explain(found: ModelLayers, options: ExplainOptions) -> Explanation:
    """`found`: the file's layers as `grucli.load` found them (they are not found a second time)."""
    model_file = found.file
    if not model_file.has_config:
        raise InputError(
            f"{model_file.path} holds weights only; explain needs its architecture to feed the layer its real input: "
            "pass --config MODEL.json (the JSON of model.to_json(), or a .keras config.json)"
        )
    layer = choose_layer(found, options.layer_path)
    if options.unit < 0 or options.unit >= layer.units:
        raise InputError(
            f"--unit {options.unit} is out of range; layer {layer.path} has {_count(layer.units, 'unit')} (0-{layer.units - 1})"
        )
    from grucli.commands.verify import recurrent_member

    if role_of(recurrent_member(model_file, layer.path)[1].class_name) is Role.TIME_DISTRIBUTED:
        # Its steps run once per outer step, folded into the batch: no one sample to follow.
        raise InputError(
            f"layer {layer.path} is a {layer.kind} inside TimeDistributed; explain follows a recurrent layer that "
            "runs once per sample (verify --trace and replay --gates cover this one)"
        )
    inputs, description = model_inputs(model_file, options.input_path, options.batch, options.timesteps, options.seed, options.limits)
    semantics = semantics_for(model_file.keras_version, model_file.format)
    replay = ModelReplay(model_file, found, semantics, np.float64, keep_layer_runs=True)
    replay.run(inputs)
    fed = replay.layer_runs.get(layer.path)
    if fed is None:
        raise InputError(f"layer {layer.path} is not on the path from the model's inputs to its outputs, so the replay never ran it")
    batch = fed.inputs.shape[0]
    if not 0 <= options.sample < batch:
        raise InputError(f"--sample {options.sample} is out of range; the input has {_count(batch, 'sample')} (0-{batch - 1})")
    small = layer.units <= SMALL_UNITS and layer.input_dim <= SMALL_INPUTS
    steps = explain_steps(layer, fed, options.sample, options.unit, semantics, small)
    output = _output_check(model_file, found, layer, fed, steps, inputs, options)
    return Explanation(
        file=str(model_file.path),
        path=layer.path,
        kind=layer.kind,
        units=layer.units,
        input_dim=layer.input_dim,
        unit=options.unit,
        sample=options.sample,
        semantics=semantics,
        input_description=description,
        equations=layer_equations(layer, semantics),
        activation_notes=tuple(_activation_notes(layer, semantics)),
        go_backwards=fed.go_backwards,
        steps=tuple(steps),
        output=output,
        other_recurrent=tuple(other.path for other in found.recurrent if other.path != layer.path),
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _activation_notes(layer: RecurrentLayer, semantics: Semantics) -> list[str]:
    used = {layer.settings.activation, layer.settings.recurrent_activation}
    if "hard_sigmoid" not in used:
        return []
    if semantics == KERAS2:
        return [
            (
                "hard_sigmoid here is Keras 1/2's clip(0.2 * v + 0.5, 0, 1), as in the Keras that saved this file; "
                "Keras 3 defines it as clip(v / 6 + 0.5, 0, 1), so Keras 3 gives other numbers for this file"
            )
        ]
    return ["hard_sigmoid here is Keras 3's clip(v / 6 + 0.5, 0, 1); Keras 2 and tf.keras 2 defined it as clip(0.2 * v + 0.5, 0, 1)"]


# --- the reference: predict, or the replay ----------------------------------------------------------------


def _output_check(
    model_file: ModelFile,
    found: ModelLayers,
    layer: RecurrentLayer,
    fed: LayerRun,
    steps: Sequence[Step],
    inputs: list[np.ndarray],
    options: ExplainOptions,
) -> OutputCheck:
    note = None
    if options.framework != NO_KERAS:
        try:
            return _predict_check(model_file, found, layer, steps, inputs, options)
        except _NoPredict as reason:
            note = str(reason)
    replayed = fed.run.sequence[options.sample, :, options.unit]  # processing order, like `steps`
    order = [step.t for step in steps]
    explained = [step.output for step in steps]
    return _check("replay", "grucli's replay of the layer (vectorised cell)", order, explained, replayed.tolist(), note)


class _NoPredict(Exception):
    """predict's output cannot be shown (Keras missing, or this direction merged away); the reason says why."""


def _predict_check(
    model_file: ModelFile,
    found: ModelLayers,
    layer: RecurrentLayer,
    steps: Sequence[Step],
    inputs: list[np.ndarray],
    options: ExplainOptions,
) -> OutputCheck:
    from grucli.commands.verify import recurrent_member
    from grucli.frameworks.framework import AUTO, open_framework, resolve_framework

    wanted = options.framework
    if wanted == AUTO and not _keras_installed():
        raise _NoPredict("Keras is not installed, so the unit's outputs are compared with grucli's replay of the layer")
    member_path, raw, chain = recurrent_member(model_file, layer.path)
    place = _place_in_output(raw, member_path, layer)
    if place.reason is not None:
        raise _NoPredict(place.reason)
    try:
        framework = open_framework(resolve_framework(wanted, model_file), command="explain")
        keras_model, _ = framework.load(model_file, found, unsafe=False, inputs=inputs)
    except GrucliError as exc:
        if wanted != AUTO:  # asked for by name: its failure is the answer
            raise
        raise _NoPredict(f"Keras could not load the model ({exc}); compared with grucli's replay instead") from None
    if chain:
        probe = framework.probe(keras_model, chain, raw.name, inputs)
    else:
        probe = framework.predict_with_probes(keras_model, inputs, [raw.name])[1][raw.name]
    value = np.asarray(probe.outputs[place.output_index], np.float64)[options.sample]
    unit_values = value[..., place.column + options.unit]
    order = [step.t for step in steps]
    if not place.return_sequences:
        return _check("predict", framework.describe(), order[-1:], [steps[-1].output], [float(unit_values)], None)
    # A Bidirectional layer turns its backward sequence back into time order; other layers keep processing order.
    expected = [float(unit_values[t]) for t in order] if place.time_order else [float(v) for v in unit_values]
    return _check("predict", framework.describe(), order, [step.output for step in steps], expected, None)


def _keras_installed() -> bool:
    return any(_installed(name) for name in ("keras", "tf_keras"))


def _installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as none
        return False


@dataclass(frozen=True)
class OutputPlace:
    """Where this layer's units sit in predict's output of the layer that holds it."""

    return_sequences: bool
    output_index: int = 0  # Bidirectional with merge_mode None: 0 forward, 1 backward
    column: int = 0  # the first column of this layer's units (concat puts backward after forward)
    time_order: bool = False  # the sequence is in time order (a Bidirectional's backward direction)
    reason: str | None = None  # why predict's output does not show this layer on its own


def _place_in_output(raw: RawLayer, member_path: str, layer: RecurrentLayer) -> OutputPlace:
    relative = layer.path[len(member_path) :].strip(paths.SEPARATOR).split(paths.SEPARATOR) if layer.path != member_path else []
    if role_of(raw.class_name) is Role.TIME_DISTRIBUTED:
        return OutputPlace(False, reason="the layer runs inside TimeDistributed")
    if role_of(raw.class_name) is not Role.BIDIRECTIONAL:
        return _place_in_rnn(raw, member_path, relative, OutputPlace(bool(raw.config.get("return_sequences"))))
    directions = dict(raw.children)
    which = relative[0]
    inner = directions[which]
    return_sequences = bool(inner.config.get("return_sequences"))
    merge_mode = raw.config.get("merge_mode", "concat")
    backward = which == paths.BACKWARD
    if merge_mode == "concat":
        place = OutputPlace(return_sequences, column=_units(directions[paths.FORWARD]) if backward else 0, time_order=backward)
    elif merge_mode is None:
        place = OutputPlace(return_sequences, output_index=1 if backward else 0, time_order=backward)
    else:
        return OutputPlace(
            return_sequences,
            reason=f"predict's output merges both directions of {member_path} (merge_mode "
            f"{merge_mode}), so this direction is compared with grucli's replay of it",
        )
    return _place_in_rnn(inner, member_path, relative[1:], place)


def _place_in_rnn(raw: RawLayer, member_path: str, relative: Sequence[str], place: OutputPlace) -> OutputPlace:
    """An RNN of stacked cells outputs its last cell's sequence: earlier cells are not in predict's output."""
    if role_of(raw.class_name) is Role.RNN and len(raw.children) > 1 and relative and relative[0] != raw.children[-1][0]:
        return OutputPlace(
            place.return_sequences,
            reason=f"predict's output of {member_path} is its last cell's, so cell {relative[0]} is compared with grucli's replay of it",
        )
    return place


def _units(raw: RawLayer) -> int:
    """The width of a recurrent layer's output (an RNN's last cell's units)."""
    if role_of(raw.class_name) is Role.RNN and raw.children:
        return _units(raw.children[-1][1])
    return int(raw.config.get("units", 0))


def _check(
    reference: str, description: str, steps: Sequence[int], explained: Sequence[float], expected: Sequence[float], note: str | None
) -> OutputCheck:
    diff = float(np.max(np.abs(np.subtract(explained, expected)))) if explained else 0.0
    return OutputCheck(reference, description, tuple(steps), tuple(explained), tuple(expected), diff, note)
