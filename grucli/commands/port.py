"""`convert SOURCE --into TARGET -o OUT`: PyTorch or ONNX weights placed into a Keras model, exactly,
and the proof that the Keras model computes what the source computes.

The source's modules and the target's layers are paired by kind (recurrent, dense, embedding), in
order, or as `--map SRC=DST` says: a module of several layers (nn.GRU(num_layers=2), bidirectional)
fills consecutive target layers, a Bidirectional target taking a layer's forward and reverse
directions. Each pair is checked before anything is written (same family, units and inputs; a
PyTorch GRU only into reset_after=True; the activations the target computes; biases), and refused
by name where the target would compute something else; the arrays are put in the target's layout
(model/sources.py: gate orders, transposes, bias rows) and written into a copy of the target
(files/port_writer.py). Then the written file is read back and proved:

- each paired recurrent layer on a seeded input: the source's own equations (PyTorch where it is
  installed, else grucli's NumPy reading of PyTorch's or ONNX's equations, engine/foreign_steps.py)
  against grucli's replay of the written layer;
- an ONNX source also end to end: the whole graph in ONNX Runtime against grucli's replay of the
  written model, where the graph's input axes can be matched to the model's.

May import: engine/, frameworks/ (PyTorch for the proof), files/, model/, errors, onnxruntime.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grucli.commands.verify_report import Comparison, compare
from grucli.engine.foreign_steps import run_source
from grucli.engine.steps import run_layer
from grucli.errors import GrucliError
from grucli.files.onnx_file import KERAS_ACTIVATIONS
from grucli.model import paths
from grucli.model.layers import activation_name
from grucli.model.records import ModelLayers, NamedArray, OtherLayer, RecurrentLayer
from grucli.model.registry import is_dense, takes_token_ids
from grucli.model.semantics import KERAS2, Semantics, semantics_for
from grucli.model.sources import ONNX, PYTORCH

DEFAULT_ATOL = 1e-5  # the source in float32 (PyTorch, ONNX Runtime) or float64, against the float64 replay
DEFAULT_RTOL = 1e-5
PROBE_BATCH, PROBE_STEPS = 3, 7  # distinct sizes: a batch axis and a time axis never mistaken for each other


class PortError(GrucliError):
    """A port that would not compute what the source computes, or that cannot be paired (named)."""


@dataclass(frozen=True)
class Pair:
    """One source unit placed into one target layer."""

    category: str  # "recurrent", "dense", "embedding"
    source: str  # the source's path: rnn/l0, rnn/l0 + rnn/l0_reverse, head
    target: str  # the Keras layer: gru, bi (both directions), dense
    detail: str  # how the arrays were mapped


@dataclass(frozen=True)
class LayerProof:
    source: str
    target: str
    reference: str  # who computed the source's side: PyTorch 2.x, grucli's NumPy PyTorch equations, ...
    comparison: Comparison


@dataclass(frozen=True)
class PortReport:
    source: str
    target: str
    output: str
    pairs: tuple[Pair, ...]
    left_out: tuple[str, ...]  # --partial: source modules and target layers not ported
    notes: tuple[str, ...]
    proofs: tuple[LayerProof, ...]
    end_to_end: Comparison | None
    end_to_end_note: str  # what the end-to-end proof compared, or why there is none
    atol: float
    rtol: float

    @property
    def passed(self) -> bool:
        return all(proof.comparison.passed for proof in self.proofs) and (self.end_to_end is None or self.end_to_end.passed)


# --- the units on each side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SourceModule:
    path: str  # the module's prefix (encoder.rnn; "" for a bare nn.GRU's state_dict)
    category: str  # recurrent, linear, embedding, linear or embedding, other
    module: str  # nn.GRU, ONNX Gemm, ...
    slots: tuple[tuple[RecurrentLayer, ...], ...] = ()  # recurrent: per layer index, its directions (forward first)
    weights: tuple[NamedArray, ...] = ()  # dense and embedding
    orientation: str = "torch"  # "torch": Linear weight (out, in); "keras": (in, out)
    unsupported: str | None = None

    @property
    def shown(self) -> str:
        return self.path or "the file's module"


@dataclass(frozen=True)
class _TargetSlot:
    path: str  # a layer, or a Bidirectional wrapper
    category: str  # recurrent, dense, embedding, other
    directions: tuple[RecurrentLayer, ...] = ()  # recurrent: the layer, or forward and backward
    other: OtherLayer | None = None


def source_modules(found: ModelLayers) -> list[_SourceModule]:
    """The source file's modules in file order: recurrent ones with their layers and directions."""
    modules: dict[str, _SourceModule] = {}
    layers_of: dict[str, dict[int, list[RecurrentLayer]]] = {}
    for layer in found.recurrent:
        if layer.source is None:
            raise PortError(f"{found.file.path} is a Keras file; convert --into reads PyTorch (.pt, .safetensors) or ONNX sources")
        settings = layer.source.settings
        module_path = str(settings.get("module_path", ""))
        layers_of.setdefault(module_path, {}).setdefault(int(settings.get("layer_index", 0)), []).append(layer)
        modules.setdefault(module_path, _SourceModule(module_path, "recurrent", layer.source.module))
    for other in found.others:
        config = other.config
        module_path = str(config.get("module_path", other.path))
        category = "other" if other.unsliced_recurrent else str(config.get("source_kind", "other"))
        modules[module_path] = _SourceModule(
            module_path,
            category,
            str(config.get("source_module", other.class_name)),
            weights=other.weights,
            orientation=str(config.get("orientation", "torch")),
            unsupported=other.skipped_reason if other.unsliced_recurrent else None,
        )
    for module_path, by_index in layers_of.items():
        slots = tuple(tuple(sorted(layers, key=lambda layer: layer.settings.go_backwards)) for _, layers in sorted(by_index.items()))
        modules[module_path] = _SourceModule(module_path, "recurrent", modules[module_path].module, slots=slots)
    return list(modules.values())


def target_slots(found: ModelLayers) -> list[_TargetSlot]:
    """The target's layers that hold weights, in the file's order, Bidirectional directions together."""
    slots: list[_TargetSlot] = []
    seen: set[str] = set()
    by_path = {layer.path: layer for layer in found.recurrent}
    for layer in found.recurrent:
        if layer.path in seen:
            continue
        parent, _, role = layer.path.rpartition(paths.SEPARATOR)
        backward = by_path.get(paths.direction(parent, paths.BACKWARD)) if role == paths.FORWARD else None
        directions = (layer, backward) if backward is not None else (layer,)
        seen.update(direction.path for direction in directions)
        slots.append(_TargetSlot(parent if backward is not None else layer.path, "recurrent", directions))
    for other in found.others:
        if not other.weights:
            continue
        category = "dense" if is_dense(other.class_name) else "embedding" if takes_token_ids(other.class_name) else "other"
        slots.append(_TargetSlot(other.path, category, other=other))
    return slots


# --- pairing ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    recurrent: list[tuple[str, tuple[RecurrentLayer, ...], _TargetSlot]] = field(default_factory=list)
    plain: list[tuple[_SourceModule, _TargetSlot]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def pair(sources: list[_SourceModule], targets: list[_TargetSlot], maps: Sequence[str], partial: bool) -> _Plan:
    """Source units to target layers: `--map` first, then by kind in order where that is unambiguous."""
    plan = _Plan()
    free = list(targets)
    pending = list(sources)
    for entry in maps:
        source_name, _, target_name = entry.partition("=")
        if not source_name or not target_name:
            raise PortError(f"--map {entry!r} is not SRC=DST; expected a source module and a Keras layer, such as encoder.rnn=encoder_gru")
        module = _find_source(pending, source_name, sources)
        start = next((index for index, slot in enumerate(free) if slot.path == target_name), None)
        if start is None:
            names = ", ".join(slot.path for slot in targets) or "none"
            raise PortError(f"--map {entry}: the target has no free layer {target_name!r} that holds weights; its layers: {names}")
        pending.remove(module)
        _place(plan, module, free, start)
    for category in ("recurrent", "linear", "embedding", "linear or embedding"):
        of_kind = [module for module in pending if module.category == category]
        if len(of_kind) > 1:
            if partial:
                continue  # which would go where is not known: left out, and listed
            listed = ", ".join(f"{module.shown} ({module.module})" for module in of_kind)
            raise PortError(f"the source holds several modules of one kind: {listed}; say which goes where with --map SRC=DST")
        for module in of_kind:
            wanted = _wanted_kinds(module)
            start = next((index for index, slot in enumerate(free) if slot.category in wanted), None)
            if start is None:
                if not partial:
                    raise PortError(
                        f"the source's {module.shown} ({module.module}) has no {' or '.join(wanted)} layer left in the "
                        "target to go into; a source tensor left unused is refused (--partial ports a part)"
                    )
                continue
            pending.remove(module)
            _place(plan, module, free, start)
    unused = [f"source {module.shown} ({module.module})" for module in pending]
    unfilled = [f"target {slot.path}" for slot in free]
    if (unused or unfilled) and not partial:
        what = "; ".join(
            ([f"source modules left unused: {', '.join(unused)}"] if unused else [])
            + ([f"target layers left without weights: {', '.join(slot.path for slot in free)}"] if unfilled else [])
        )
        blocked = [module.unsupported for module in pending if module.unsupported]
        reason = f" ({blocked[0]})" if blocked else ""
        raise PortError(f"{what}{reason}; pair them with --map SRC=DST, or pass --partial to port the rest")
    plan.left_out = unused + unfilled
    return plan


def _find_source(pending: list[_SourceModule], name: str, every: list[_SourceModule]) -> _SourceModule:
    from grucli.files.onnx_file import module_path

    wanted = {name, module_path(name, "", 0)}  # an ONNX node's name as written (/rnn/GRU) or as grucli's path (rnn.GRU)
    found = next((module for module in pending if module.path in wanted), None)
    if found is None:
        names = ", ".join(module.shown for module in every) or "none"
        raise PortError(f"--map {name}=...: the source has no module {name!r} left to map; its modules: {names}")
    return found


def _wanted_kinds(module: _SourceModule) -> tuple[str, ...]:
    return {
        "recurrent": ("recurrent",),
        "linear": ("dense",),
        "embedding": ("embedding",),
        "linear or embedding": ("embedding", "dense"),
    }.get(module.category, ())


def _place(plan: _Plan, module: _SourceModule, free: list[_TargetSlot], start: int) -> None:
    if module.category == "recurrent":
        candidates = [slot for slot in free[start:] if slot.category == "recurrent"]
        if len(candidates) < len(module.slots):
            raise PortError(
                f"the source's {module.shown} ({module.module}) holds {len(module.slots)} layers; the target has "
                f"{len(candidates)} recurrent layers from {free[start].path} on"
            )
        for directions, slot in zip(module.slots, candidates):
            source = " + ".join(layer.path for layer in directions)
            plan.recurrent.append((source, directions, slot))
            free.remove(slot)
        return
    if module.category not in ("linear", "embedding", "linear or embedding"):
        raise PortError(
            f"the source's {module.shown} ({module.module}) is not a recurrent, linear or embedding module; convert --into ports those"
        )
    slot = free[start]
    plan.plain.append((module, slot))
    free.remove(slot)


# --- the arrays, checked ------------------------------------------------------------------------------------


def recurrent_values(
    source: str, directions: tuple[RecurrentLayer, ...], slot: _TargetSlot, semantics: Semantics
) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """The target's datasets and their new values for one recurrent pair; refuses what would differ."""
    if len(directions) != len(slot.directions):
        want = "a Bidirectional layer" if len(directions) == 2 else "a layer of one direction"
        raise PortError(
            f"source {source} has {len(directions)} direction(s): it goes into {want}, and target {slot.path} has {len(slot.directions)}"
        )
    values: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for origin, target in zip(directions, slot.directions):
        values.update(_direction_values(origin, target, semantics, notes))
    first = directions[0]
    assert first.source is not None
    letters = ", ".join(first.source.letters)
    detail = (
        f"{first.source.module} → {slot.directions[0].kind}"
        + (f" (reset_after={slot.directions[0].settings.reset_after})" if first.family.two_row_bias else "")
        + f": gates {letters} → {', '.join(first.family.gates)}"
    )
    return values, detail, notes


def _direction_values(origin: RecurrentLayer, target: RecurrentLayer, semantics: Semantics, notes: list[str]) -> dict[str, np.ndarray]:
    source = origin.source
    assert source is not None
    where = f"{origin.path} into {target.path}"
    if origin.family is not target.family:
        raise PortError(f"{where}: a {source.module} is not a Keras {target.kind}; expected a target of the same family")
    if target.source_layout != "keras" or target.source is not None:
        raise PortError(f"{where}: the target stores this layer in the {target.source_layout} layout; re-save it with current Keras")
    if (origin.units, origin.input_dim) != (target.units, target.input_dim):
        raise PortError(
            f"{where}: the source has {origin.units} units and {origin.input_dim} inputs, the target "
            f"{target.units} and {target.input_dim}; shapes that differ are not ported"
        )
    if origin.settings.go_backwards != target.settings.go_backwards:
        raise PortError(
            f"{where}: the source reads its sequence {'backwards' if origin.settings.go_backwards else 'forwards'}, the target "
            f"{'backwards' if target.settings.go_backwards else 'forwards'}"
        )
    _check_reset_after(origin, target, where)
    _check_activations(origin, target, semantics, where, notes)
    kernel, recurrent, bias = np.asarray(origin.kernel), np.asarray(origin.recurrent_kernel), origin.bias
    stored = _stored_roles(target, where)
    if target.bias is None and bias is not None and np.any(bias != 0):
        raise PortError(f"{where}: the source has biases and the target use_bias=False; expected a target with biases")
    if target.bias is not None and bias is None:
        bias = np.zeros(target.bias.shape, kernel.dtype)
        notes.append(f"{where}: the source has no biases; the target's are set to zeros, which is what the source computes")
    values = {stored["kernel"]: kernel, stored["recurrent_kernel"]: recurrent}
    if "bias" in stored and bias is not None:
        values[stored["bias"]] = bias
    return values


def _check_reset_after(origin: RecurrentLayer, target: RecurrentLayer, where: str) -> None:
    if not origin.family.two_row_bias:
        return
    wanted, found = bool(origin.settings.reset_after), bool(target.settings.reset_after)
    if wanted != found:
        source = (
            "a PyTorch GRU (it applies r after the recurrent product)"
            if origin.source_layout == PYTORCH
            else (f"an ONNX GRU with linear_before_reset={int(wanted)}")
        )
        raise PortError(
            f"{where}: {source} goes into a Keras GRU with reset_after={wanted}; the target has reset_after={found}, "
            "which computes something else"
        )


def _check_activations(origin: RecurrentLayer, target: RecurrentLayer, semantics: Semantics, where: str, notes: list[str]) -> None:
    family, source = origin.family, origin.source
    assert source is not None
    wanted_activation = activation_name(target.settings.activation) or "tanh"
    wanted_recurrent = activation_name(target.settings.recurrent_activation) if family.uses_recurrent_activation else None
    if source.framework == PYTORCH and not family.uses_recurrent_activation:
        if wanted_activation not in ("tanh", "relu"):
            raise PortError(f"{where}: the target's activation is {wanted_activation}; nn.RNN computes tanh or relu only")
        notes.append(
            f"{where}: a state_dict does not record nn.RNN's nonlinearity; the port takes the target's, {wanted_activation}, "
            "and the proof runs nn.RNN(nonlinearity='" + wanted_activation + "')"
        )
        return
    if source.framework == ONNX:
        _check_onnx_activations(origin, wanted_activation, wanted_recurrent, semantics, where)
        return
    expected = ("sigmoid", "tanh")
    found = (wanted_recurrent, wanted_activation)
    if found != expected:
        raise PortError(
            f"{where}: {source.module} computes sigmoid gates and a tanh candidate; the target computes "
            f"recurrent_activation={found[0]}, activation={found[1]}: "
            "an activation the target does not compute like the source"
        )


def _check_onnx_activations(origin: RecurrentLayer, activation: str, recurrent: str | None, semantics: Semantics, where: str) -> None:
    source = origin.source
    assert source is not None
    names = list(source.settings.get("onnx_activations") or [])
    alphas = list(source.settings.get("onnx_activation_alpha") or [])
    betas = list(source.settings.get("onnx_activation_beta") or [])
    # ONNX's f (gates), g (candidate) and, for an LSTM, h (cell output): Keras's recurrent_activation, then activation.
    family = origin.family
    wanted = [recurrent, activation] + ([activation] if family.has_cell_state else []) if family.uses_recurrent_activation else [activation]
    if len(names) != len(wanted):
        raise PortError(f"{where}: the ONNX node lists activations {names}; expected {len(wanted)} for one direction")
    hard = (0.2, 0.5) if semantics == KERAS2 else (1.0 / 6.0, 0.5)
    cursor = 0
    for name, keras in zip(names, wanted):
        if name == "HardSigmoid":
            alpha = alphas[cursor] if cursor < len(alphas) else 0.2
            beta = betas[cursor] if cursor < len(betas) else 0.5
            cursor += 1
            if keras == "hard_sigmoid" and abs(alpha - hard[0]) < 1e-7 and abs(beta - hard[1]) < 1e-7:
                continue
            raise PortError(
                f"{where}: the ONNX node computes HardSigmoid(alpha={alpha:g}, beta={beta:g}); the target computes {keras}, "
                f"which is clip({hard[0]:g}·x + {hard[1]:g}) in its Keras: an activation the target does not compute"
            )
        if KERAS_ACTIVATIONS.get(name) != keras:
            raise PortError(
                f"{where}: the ONNX node computes {name}; the target computes {keras}: an activation the target does not "
                "compute like the source"
            )


def _stored_roles(target: RecurrentLayer, where: str) -> dict[str, str]:
    """The HDF5 dataset holding the target's kernel, recurrent kernel and bias."""
    datasets = [getattr(weight.array, "name", None) for weight in target.stored_arrays]
    if not datasets or any(name is None for name in datasets):
        raise PortError(
            f"{where}: the target keeps this layer's weights outside an HDF5 file (a checkpoint); expected a .keras, .h5 "
            "or .weights.h5 target"
        )
    roles = ["kernel", "recurrent_kernel", "bias"][: len(datasets)]
    by_name = {_role(weight.name): str(name) for weight, name in zip(target.stored_arrays, datasets)}
    if {"kernel", "recurrent_kernel"} <= by_name.keys():
        return by_name
    return {role: str(name) for role, name in zip(roles, datasets)}


def _role(name: str) -> str:
    return name.rsplit("/", maxsplit=1)[-1].split(":", maxsplit=1)[0]


def plain_values(module: _SourceModule, slot: _TargetSlot) -> tuple[dict[str, np.ndarray], str]:
    """A Linear into a Dense (its weight transposed), an Embedding's table into an Embedding."""
    other = slot.other
    assert other is not None
    datasets = [getattr(weight.array, "name", None) for weight in other.weights]
    if any(name is None for name in datasets):
        raise PortError(f"{module.shown} into {slot.path}: the target keeps its weights outside an HDF5 file; expected .keras or .h5")
    source = {weight.name.rsplit(".", 1)[-1]: np.asarray(weight.array) for weight in module.weights}
    shapes = [tuple(weight.array.shape) for weight in other.weights]
    where = f"{module.shown} ({module.module}) into {slot.path} ({other.class_name})"
    if slot.category == "embedding":
        table = source.get("weight", source.get("embeddings"))
        if table is None or len(shapes) != 1 or table.shape != shapes[0]:
            raise PortError(f"{where}: the table {None if table is None else table.shape} does not fit the target's {shapes}")
        return {str(datasets[0]): table}, f"{module.module} → Embedding: the table as it is"
    kernel = source.get("kernel") if module.orientation == "keras" else (source["weight"].T if "weight" in source else None)
    bias = source.get("bias")
    if kernel is None or not shapes or kernel.shape != shapes[0]:
        raise PortError(f"{where}: the kernel {None if kernel is None else kernel.shape} does not fit the target's {shapes[:1]}")
    values = {str(datasets[0]): kernel}
    if len(shapes) == 2:
        if bias is None:
            bias = np.zeros(shapes[1], kernel.dtype)
        if bias.shape != shapes[1]:
            raise PortError(f"{where}: the bias {bias.shape} does not fit the target's {shapes[1]}")
        values[str(datasets[1])] = bias
    elif bias is not None and np.any(bias != 0):
        raise PortError(f"{where}: the source has a bias and the target use_bias=False")
    how = "weight transposed (PyTorch stores (out, in))" if module.orientation == "torch" else "kernel as it is"
    return values, f"{module.module} → Dense: {how}"


# --- the proof ----------------------------------------------------------------------------------------------


def prove_layers(plan: _Plan, written: ModelLayers, atol: float, rtol: float, seed: int) -> list[LayerProof]:
    """Each paired recurrent layer: the source's own equations against the replay of the written layer."""
    from grucli.frameworks.torch_proof import run_with_torch, torch_available, torch_version

    by_path = {layer.path: layer for layer in written.recurrent}
    semantics = semantics_for(written.file.keras_version, written.file.format)
    proofs = []
    rng = np.random.default_rng(seed)
    for _, directions, slot in plan.recurrent:
        for origin, target in zip(directions, slot.directions):
            source = origin.source
            assert source is not None
            x = rng.normal(scale=1.0, size=(PROBE_BATCH, PROBE_STEPS, origin.input_dim))
            nonlinearity = activation_name(target.settings.activation) if not origin.family.uses_recurrent_activation else None
            reverse = bool(origin.settings.go_backwards)
            if source.framework == PYTORCH and torch_available():
                reference, by = run_with_torch(source, origin.family, x, reverse, nonlinearity), torch_version()
            else:
                reference = run_source(source, origin.family, x, reverse, nonlinearity)
                by = "grucli's NumPy " + ("PyTorch" if source.framework == PYTORCH else "ONNX") + " equations"
            replayed = run_layer(by_path[target.path], x, semantics=semantics, dtype=np.float64).sequence
            comparison = _compared([replayed], [reference], atol, rtol, ("the written Keras layer", by))
            proofs.append(LayerProof(origin.path, target.path, by, comparison))
    return proofs


def prove_plain(plan: _Plan, written: ModelLayers, atol: float, rtol: float, seed: int) -> list[LayerProof]:
    """Dense layers on a seeded input (x·Wᵀ + b against x·kernel + bias); embeddings, table for table."""
    rng = np.random.default_rng(seed + 1)
    by_path = {other.path: other for other in written.others}
    proofs = []
    for module, slot in plan.plain:
        written_arrays = [np.asarray(weight.array, np.float64) for weight in by_path[slot.path].weights]
        source = {weight.name.rsplit(".", 1)[-1]: np.asarray(weight.array, np.float64) for weight in module.weights}
        if slot.category == "embedding":
            table = source["weight"] if "weight" in source else source["embeddings"]
            reference, result = table, written_arrays[0]
        else:
            weight = source["kernel"] if module.orientation == "keras" else source["weight"].T
            x = rng.normal(size=(PROBE_BATCH, weight.shape[0]))
            reference = x @ weight + source.get("bias", 0.0)
            result = x @ written_arrays[0] + (written_arrays[1] if len(written_arrays) > 1 else 0.0)
        comparison = _compared([result], [reference], 1e-12, 1e-12, ("the written Keras layer", "the source"))
        proofs.append(LayerProof(module.shown, slot.path, "the source's arrays", comparison))
    return proofs


def _compared(actual: list[np.ndarray], reference: list[np.ndarray], atol: float, rtol: float, names: tuple[str, str]) -> Comparison:
    comparison = compare(actual, reference, atol, rtol, names)
    assert comparison is not None  # compare answers None only when a side is missing
    return comparison


def onnx_end_to_end(
    source_path: Path, written: ModelLayers, inputs: Sequence[np.ndarray], atol: float, rtol: float
) -> tuple[Comparison | None, str]:
    """The whole ONNX graph in ONNX Runtime against grucli's replay of the written Keras model."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None, "ONNX Runtime is not installed (pip install 'grucli[onnx]'): the graph was proved layer by layer only"
    if not written.file.has_config:
        return None, "the target has no architecture of its own: the graph was proved layer by layer only"
    import onnxruntime

    from grucli.engine.graph import ModelReplay
    from grucli.files.onnx_file import input_time_axes

    time_axes = input_time_axes(source_path)
    session = onnxruntime.InferenceSession(str(source_path), providers=["CPUExecutionProvider"])
    declared = session.get_inputs()
    if len(declared) != len(inputs):
        return None, f"the ONNX graph takes {len(declared)} inputs and the Keras model {len(inputs)}: proved layer by layer only"
    feeds: dict[str, np.ndarray] = {}
    time_first = False
    for spec, x in zip(declared, inputs):
        axis = time_axes.get(spec.name)
        if axis is None:
            return None, (f"which axis of the ONNX input {spec.name} is time cannot be told from the graph: proved layer by layer only")
        time_first = time_first or axis == 0
        value = np.swapaxes(x, 0, 1) if axis == 0 and x.ndim >= 2 else x
        feeds[spec.name] = value.astype(np.int64 if "int64" in spec.type else np.int32 if "int32" in spec.type else np.float32)
    ran = session.run(None, feeds)
    semantics = semantics_for(written.file.keras_version, written.file.format)
    replayed = ModelReplay(written.file, written, semantics, np.float64).run(list(inputs))
    if len(ran) != len(replayed):
        return None, f"the ONNX graph gives {len(ran)} outputs and the Keras model {len(replayed)}: proved layer by layer only"
    aligned = []
    for got, want in zip(ran, replayed):
        got = np.asarray(got)
        if got.shape != want.shape and time_first and got.ndim >= 2 and np.swapaxes(got, 0, 1).shape == want.shape:
            got = np.swapaxes(got, 0, 1)
        if got.shape != want.shape:
            return None, f"an ONNX output of shape {got.shape} has no Keras output of its shape ({want.shape}): proved layer by layer only"
        aligned.append(got)
    description = ", ".join(str(x.shape) for x in inputs)
    return compare(aligned, replayed, atol, rtol, ("ONNX Runtime", "the written Keras model")), (
        f"ONNX Runtime on the whole graph against grucli's replay of the written model on {description}"
    )


# --- the whole port ---------------------------------------------------------------------------------------------


def port_model(
    source: ModelLayers,
    target: ModelLayers,
    output: Path,
    maps: Sequence[str] = (),
    partial: bool = False,
    inputs: Sequence[np.ndarray] | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    force: bool = False,
    seed: int = 0,
    config_path: Path | None = None,
) -> PortReport:
    """Pair, check, write OUT in the target's format, read it back and prove it (see the module's docstring)."""
    from grucli.files.port_writer import write_with_weights
    from grucli.files.reader import read_model
    from grucli.model.layers import find_layers

    target_semantics = semantics_for(target.file.keras_version, target.file.format)
    plan = pair(source_modules(source), target_slots(target), maps, partial)
    if not plan.recurrent and not plan.plain:
        raise PortError("nothing to port: no source module pairs with a target layer")
    values: dict[str, np.ndarray] = {}
    pairs: list[Pair] = []
    notes: list[str] = list(source.file.notes)
    for source_path, directions, slot in plan.recurrent:
        found, detail, layer_notes = recurrent_values(source_path, directions, slot, target_semantics)
        values.update(found)
        notes += layer_notes
        pairs.append(Pair("recurrent", source_path, slot.path, detail))
    for module, slot in plan.plain:
        found, detail = plain_values(module, slot)
        values.update(found)
        pairs.append(Pair(slot.category, module.shown, slot.path, detail))
    write_with_weights(Path(target.file.path), output, values, force)
    written_file = read_model(output, config_path=config_path)
    try:
        written = find_layers(written_file)
        proofs = prove_layers(plan, written, atol, rtol, seed) + prove_plain(plan, written, atol, rtol, seed)
        end_to_end, note = None, "the source is a state_dict (no graph): each paired layer was proved on its own input"
        if source.file.format == ONNX:
            if inputs is None:
                from grucli.files.inputs import model_inputs

                inputs, _ = model_inputs(written_file, None, PROBE_BATCH, PROBE_STEPS, seed)
            end_to_end, note = onnx_end_to_end(Path(source.file.path), written, inputs, atol, rtol)
    finally:
        written_file.close()
    return PortReport(
        str(source.file.path),
        str(target.file.path),
        str(output),
        tuple(pairs),
        tuple(plan.left_out),
        tuple(notes),
        tuple(proofs),
        end_to_end,
        note,
        atol,
        rtol,
    )
