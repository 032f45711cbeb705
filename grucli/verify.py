"""`verify`: the replay against what the framework computes. The only module that imports Keras.

The model is loaded with Keras 3 (any backend, from `KERAS_BACKEND`) or tf-keras; files that
refuse to load are repaired in memory (never on disk) and given grucli's own weights. Then:
each recurrent layer is replayed on its real input (a probe model returns the layer's input and
output) and compared with its real output; the whole model is replayed end to end and compared
with `predict`; and both with an expected output when one is given.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from grucli.errors import GrucliError, ModelFileError, first_line
from grucli.graph import RECURRENT, ModelReplay, unsupported_layer
from grucli.inputs import InputError, input_specs, load_inputs, random_inputs
from grucli.layers import activation_name, find_layers, require_recurrent
from grucli.model import MODEL_CLASSES, ModelFile, ModelLayers, RawLayer
from grucli.reader import Limits, read_model
from grucli.replay import KERAS2, KERAS3, VERSION_DEPENDENT, ReplayError, semantics_for

# Default tolerances by where predict ran. Measured: CPU float32 vs a float64 replay 1e-7..4e-7;
# GPUs run float32 products in TF32 (2e-4..5e-4). Both defaults leave room for those and none
# for a real error (a swapped gate, or Keras 3's hard_sigmoid on a Keras 2 model: ~1e-2).
TOLERANCES = {"cpu": (1e-5, 1e-5), "accelerator": (2e-3, 1e-3)}
# Machine epsilon of the half-precision compute dtypes of mixed-precision policies, and how many
# of those a layer's result may be off by (measured: a mixed_float16 GRU(8) over 10 steps, 2e-3).
LOW_PRECISION = {"float16": 2.0**-10, "bfloat16": 2.0**-7}
LOW_PRECISION_ULPS = 8
FRAMEWORKS = ("keras", "tf-keras")
AUTO = "auto"  # the framework of the file's own generation: tf-keras for Keras 1/2 files when installed
DEFINITIONS = {
    "hard_sigmoid": {KERAS2: "clip(0.2x + 0.5, 0, 1)", KERAS3: "clip(x/6 + 0.5, 0, 1)"},
    "hard_silu": {KERAS2: "x·clip(0.2x + 0.5, 0, 1)", KERAS3: "x·clip(x/6 + 0.5, 0, 1)"},
    "hard_swish": {KERAS2: "x·clip(0.2x + 0.5, 0, 1)", KERAS3: "x·clip(x/6 + 0.5, 0, 1)"},
}
# Keras 1 config keys and their Keras 2 names (None: no longer a setting).
KERAS1_NAMES = {
    "output_dim": "units", "inner_activation": "recurrent_activation", "dropout_W": "dropout",
    "dropout_U": "recurrent_dropout", "consume_less": None, "input_dim": None, "input_length": None,
}


class VerifyError(GrucliError):
    """The model cannot be loaded or run by the framework (the message says why)."""


@dataclass(frozen=True)
class Location:
    sample: int
    timestep: int | None
    unit: int
    position: tuple[int, ...] = ()  # the spatial cell between time and unit (ConvLSTM, images)


@dataclass(frozen=True)
class Comparison:
    """Errors of one comparison. NaN or Inf on either side fails it, never counts as zero error:
    `nonfinite` then says which side holds them and where they first appear."""

    max_abs_err: float
    max_rel_err: float
    passed: bool
    worst: Location | None
    nonfinite: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerCheck:
    """One recurrent layer in scope: its comparison, or None and the reason it was not compared
    (which fails the run: a layer that was not checked must not pass)."""

    path: str
    class_name: str
    comparison: Comparison | None
    note: str | None = None


@dataclass(frozen=True)
class Probe:
    """What the framework computed around one layer: its real input, mask and outputs."""

    layer_input: np.ndarray
    mask: np.ndarray | None
    outputs: list[np.ndarray]
    initial_state: list[np.ndarray]  # the states the layer was called with (empty: zeros)


@dataclass(frozen=True)
class TraceTable:
    """One direction or cell of one layer, one sample and unit, step by step."""

    path: str
    sample: int
    unit: int
    steps: tuple[int, ...]
    inputs: np.ndarray
    values: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class VerifyOptions:
    input_path: Path | None = None
    expected_path: Path | None = None
    atol: float | None = None
    rtol: float | None = None
    dtype: str = "float64"
    batch: int = 4
    timesteps: int = 10
    seed: int = 0
    trace: bool = False
    sample: int = 0
    unit: int = 0
    layer_paths: tuple[str, ...] = ()
    framework: str = "auto"
    unsafe: bool = False
    max_bytes: int = 4096 * 2**20


@dataclass(frozen=True)
class VerifyReport:
    path: str
    keras_version: str | None
    semantics: str
    framework: str
    device: str
    precision: str
    atol: float
    rtol: float
    dtype: str
    input_description: str
    compute_dtype: str
    layers: tuple[LayerCheck, ...]
    comparisons: Mapping[str, Comparison | None]
    end_to_end_note: str | None
    repairs: tuple[str, ...]
    warnings: tuple[str, ...]
    traces: tuple[TraceTable, ...] = field(default=())

    @property
    def passed(self) -> bool:
        if self.semantic_failures or not self.layers:
            return False
        if any(check.comparison is None or not check.comparison.passed for check in self.layers):
            return False
        return all(c is None or c.passed for c in self.comparisons.values())

    @property
    def semantic_failures(self) -> tuple[str, ...]:
        return tuple(w for w in self.warnings if w.startswith("semantics:"))


def verify(path: str | Path, options: VerifyOptions) -> VerifyReport:
    with read_model(path, Limits(max_bytes=options.max_bytes)) as model_file:
        return _verify(model_file, path, options)


def _verify(model_file: ModelFile, path: str | Path, options: VerifyOptions) -> VerifyReport:
    if not model_file.has_config:
        raise ModelFileError(f"{path} holds weights only; verify needs a full model file (config and weights) to load it with Keras")
    layers = find_layers(model_file)
    require_recurrent(layers)
    members = _selected_members(model_file, options.layer_paths)
    specs = input_specs(model_file)
    if options.input_path is not None:
        inputs = load_inputs(options.input_path, specs)
        input_description = f"{options.input_path} {', '.join(str(x.shape) for x in inputs)}"
    else:
        inputs = random_inputs(specs, options.batch, options.timesteps, options.seed)
        input_description = f"random, seed {options.seed}, {', '.join(str(x.shape) for x in inputs)}"
        if any(spec.batch is not None for spec in specs):
            input_description += " (the model's fixed batch size)"
    expected = _load_expected(options.expected_path) if options.expected_path else None
    _refuse_code(model_file, options.unsafe)

    framework = _Framework(resolve_framework(options.framework, model_file))
    keras_model, repairs = framework.load(model_file, layers, options.unsafe)
    device, accelerated = framework.device()
    compute_dtype = _compute_dtype(model_file.root)
    atol, rtol = _tolerances(options, accelerated, compute_dtype)
    semantics = semantics_for(model_file.keras_version, model_file.format)
    dtype = np.float32 if options.dtype == "float32" else np.float64
    warnings_: list[str] = [*_semantic_warnings(layers, model_file, semantics, framework), *_nonfinite_weights(model_file.root)]

    top_level = [raw.name for _, raw, chain in members if not chain]
    predicted, probed = framework.predict_with_probes(keras_model, inputs, top_level)
    # The end-to-end run is not traced: --trace shows the per-layer runs on real inputs.
    replay = ModelReplay(model_file, layers, semantics, dtype, trace=False)
    blocker = unsupported_layer(model_file.root)
    replayed = None
    end_to_end_note = None
    if blocker is None:
        try:
            replayed = replay.run(inputs)
        except ReplayError as exc:  # the per-layer checks still run; the report says why this one did not
            end_to_end_note = f"end-to-end replay stopped: {exc}"
    else:
        end_to_end_note = f"end-to-end replay stopped at layer {blocker[0]} ({blocker[1]})"
    masks = {call.path: call.mask for call in replay.calls}
    replay.trace = options.trace

    checks, traces = _check_layers(framework, keras_model, members, probed, replay, inputs, masks, atol, rtol, options)
    comparisons = {
        "replay_vs_predict": compare(replayed, predicted, atol, rtol) if replayed is not None else None,
        "replay_vs_expected": compare(replayed, expected, atol, rtol, ("the replay", "the expected output"))
        if replayed is not None and expected is not None else None,
        "predict_vs_expected": compare(predicted, expected, atol, rtol, ("predict", "the expected output")) if expected is not None else None,
    }
    return VerifyReport(
        path=str(path), keras_version=model_file.keras_version, semantics=semantics,
        framework=framework.describe() + (" (auto)" if options.framework == AUTO else ""),
        device=device, precision=_precision(compute_dtype, device, accelerated),
        atol=atol, rtol=rtol, dtype=options.dtype, input_description=input_description, compute_dtype=compute_dtype,
        layers=tuple(checks) + tuple(c for c in _unsliced_checks(layers, options.layer_paths) if c.path not in {x.path for x in checks}),
        comparisons=comparisons, end_to_end_note=end_to_end_note, repairs=tuple(repairs), warnings=tuple(warnings_),
        traces=tuple(traces),
    )


def resolve_framework(requested: str, model: ModelFile) -> str:
    """`auto`: tf-keras (Keras 2 definitions, and it loads most Keras 1/2 configs) for a file saved by
    Keras 1/2 or tf.keras 2 when tf-keras is installed; Keras 3 (with config repairs) otherwise."""
    if requested != AUTO:
        return requested
    import importlib.util

    if semantics_for(model.keras_version, model.format) == KERAS2 and importlib.util.find_spec("tf_keras") is not None:
        return "tf-keras"
    return "keras"


def _tolerances(options: VerifyOptions, accelerated: bool, compute_dtype: str) -> tuple[float, float]:
    default_atol, default_rtol = TOLERANCES["accelerator" if accelerated else "cpu"]
    if compute_dtype in LOW_PRECISION:
        # A float16/bfloat16 layer rounds every product to its precision: a float64 replay
        # differs from it by a few of its ulps, which no float32 tolerance allows.
        default_atol = default_rtol = max(default_atol, LOW_PRECISION_ULPS * LOW_PRECISION[compute_dtype])
    return (options.atol if options.atol is not None else default_atol, options.rtol if options.rtol is not None else default_rtol)


def _precision(compute_dtype: str, device: str, accelerated: bool) -> str:
    if compute_dtype in LOW_PRECISION:
        return (f"{compute_dtype} compute (mixed-precision policy) on {device}; the tolerance allows "
                f"{LOW_PRECISION_ULPS} {compute_dtype} ulps ({LOW_PRECISION[compute_dtype]:.2g} each)")
    return f"{compute_dtype} predict on {device}" + (" (matrix products may use TF32)" if accelerated else "")


def _compute_dtype(root: RawLayer) -> str:
    """The lowest precision any layer computes in, from the dtype policies in the config."""
    found = {_policy_compute_dtype(layer.config.get("dtype")) for layer in _all_layers(root)}
    for dtype in (*LOW_PRECISION, "float32", "float64"):
        if dtype in found:
            return dtype
    return "float32"


def _policy_compute_dtype(value: Any) -> str | None:
    name = value if isinstance(value, str) else (value.get("config", {}).get("name") if isinstance(value, Mapping) else None)
    if not isinstance(name, str):
        return None
    return name.removeprefix("mixed_")  # mixed_float16: variables float32, computations float16


def _all_layers(layer: RawLayer) -> Iterator[RawLayer]:
    yield layer
    for _, child in layer.children:
        yield from _all_layers(child)


def _nonfinite_weights(root: RawLayer, prefix: str = "") -> Iterator[str]:
    """A line for each stored weight holding NaN or Inf: predict and replay then both go non-finite."""
    for _, child in root.children:
        path = f"{prefix}{child.name}"
        for weight in child.weights:
            values = np.asarray(weight.array)
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                index = np.unravel_index(int(np.argmax(~np.isfinite(values))), values.shape)
                kinds = "NaN" if np.isnan(values).any() else "Inf"
                yield f"weights: layer {path}: {weight.name} {values.shape} holds {kinds}, first at index {tuple(int(i) for i in index)}"
        yield from _nonfinite_weights(child, f"{path}/")


def _unsliced_checks(found: ModelLayers, selected: Sequence[str]) -> Iterator[LayerCheck]:
    """Layers holding recurrent weights grucli cannot slice: in scope, so not compared means failed."""
    for other in found.others:
        if other.unsliced_recurrent and (not selected or any(other.path == p or other.path.startswith(p + "/") for p in selected)):
            yield LayerCheck(other.path, other.class_name, None, other.skipped_reason)


def _load_expected(path: Path) -> list[np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return [archive[name] for name in archive.files]
        return [np.load(path, allow_pickle=False)]
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"expected output {path} cannot be read ({str(exc).splitlines()[0]}); expected a numeric .npy or .npz") from None


# --- comparisons ------------------------------------------------------------------------------------------


def compare(
    actual: Sequence[np.ndarray] | None, reference: Sequence[np.ndarray] | None, atol: float, rtol: float,
    names: tuple[str, str] = ("the replay", "predict"),
) -> Comparison | None:
    """Max absolute and relative error over all outputs; passes where |a-b| <= atol + rtol*|b| everywhere.
    A NaN or Inf on either side is an infinite error, even where both sides hold the same one."""
    if actual is None or reference is None:
        return None
    nonfinite: list[str] = []
    if len(actual) != len(reference):
        raise InputError(f"{len(reference)} reference outputs given for a model with {len(actual)} outputs")
    worst_abs, worst_rel, passed, worst = 0.0, 0.0, True, None
    worst_excess = -np.inf
    for a, b in zip(actual, reference):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise InputError(f"reference output has shape {b.shape}; the model's output has shape {a.shape}")
        if a.size == 0:
            continue
        nonfinite += _nonfinite_sides(a, b, names)
        with np.errstate(invalid="ignore"):
            error = np.abs(a - b)
        error = np.where(np.isfinite(a) & np.isfinite(b), error, np.inf)
        allowed = atol + rtol * np.abs(b)
        excess = error - allowed
        index = int(np.argmax(excess))
        worst_abs = max(worst_abs, float(error.max()))
        worst_rel = max(worst_rel, float((error / (np.abs(b) + atol)).max()))
        passed = passed and bool(np.all(excess <= 0))
        if excess.flat[index] > worst_excess:
            worst_excess = float(excess.flat[index])
            worst = _location(np.unravel_index(index, a.shape))
    if nonfinite:  # never a number that reads like agreement
        worst_abs = worst_rel = math.inf
    return Comparison(worst_abs, worst_rel, passed and not nonfinite, worst, tuple(nonfinite))


def _nonfinite_sides(actual: np.ndarray, reference: np.ndarray, names: tuple[str, str]) -> list[str]:
    found = []
    for values, name in zip((actual, reference), names):
        bad = ~np.isfinite(values)
        if bad.any():
            kinds = "/".join(k for k, present in (("NaN", np.isnan(values).any()), ("Inf", np.isinf(values).any())) if present)
            found.append(f"{name} holds {kinds}, first at {_first_in_time(bad)}")
    return found


def _first_in_time(bad: np.ndarray) -> str:
    """Where a non-finite value first appears: earliest timestep, then sample, then unit."""
    where = np.argwhere(bad)
    if bad.ndim >= 3:
        where = where[np.lexsort((where[:, -1], where[:, 0], where[:, 1]))]
        first = where[0]
        return f"sample {first[0]}, timestep {first[1]}, unit {first[-1]}"
    first = where[0]
    return f"sample {first[0]}" + (f", unit {first[-1]}" if bad.ndim > 1 else "")


def _location(index: tuple[int, ...]) -> Location:
    if len(index) >= 3:
        return Location(int(index[0]), int(index[1]), int(index[-1]), tuple(int(i) for i in index[2:-1]))
    return Location(int(index[0]), None, int(index[-1]) if len(index) > 1 else 0)


# --- safety and semantics -----------------------------------------------------------------------------------


def _refuse_code(model: ModelFile, unsafe: bool) -> None:
    if unsafe:
        return
    for name, class_name in _code_layers(model.root):
        raise VerifyError(
            f"layer {name} is a {class_name}: loading it would run Python code stored in the file; "
            "pass --unsafe only for a file you trust"
        )


def _code_layers(layer: RawLayer, prefix: str = "") -> Iterator[tuple[str, str]]:
    for _, child in layer.children:
        if child.class_name == "Lambda" or "__lambda__" in json.dumps(child.config, default=str):
            yield f"{prefix}{child.name}", child.class_name
        yield from _code_layers(child, f"{prefix}{child.name}/")


def _semantic_warnings(layers: ModelLayers, model: ModelFile, semantics: str, framework: "_Framework") -> Iterator[str]:
    """Activations whose definition changed between the Keras that saved the file and the one installed."""
    if semantics == framework.semantics:
        return
    saved = f"Keras {model.keras_version}" if model.keras_version else "Keras 1"
    uses = [(layer.path, key, layer.config.get(key)) for layer in layers.recurrent for key in ("activation", "recurrent_activation")]
    uses += [(path, "activation", activation_name(raw.config.get("activation"))) for path, raw in _plain_layers(model.root)]
    for path, key, name in uses:
        if name in VERSION_DEPENDENT:
            yield (
                f"semantics: layer {path}: {key} {name} is {DEFINITIONS[name][KERAS2]} in {saved}, which saved this file, "
                f"but {DEFINITIONS[name][KERAS3]} in the installed {framework.describe()}: predict no longer computes what "
                "the model was trained with (verify with --keras tf-keras to check the file under its own definitions)"
            )


def _plain_layers(layer: RawLayer, prefix: str = "") -> Iterator[tuple[str, RawLayer]]:
    """Non-recurrent layers with an activation setting (Dense, Activation, ...), with their paths."""
    for _, child in layer.children:
        path = f"{prefix}{child.name}"
        if child.class_name in MODEL_CLASSES | {"TimeDistributed"}:
            yield from _plain_layers(child, f"{path}/")
        elif child.class_name not in RECURRENT and "activation" in child.config:
            yield path, child


# --- per-layer checks ---------------------------------------------------------------------------------------


def _recurrent_members(layer: RawLayer, prefix: str = "") -> Iterator[tuple[str, RawLayer, tuple[str, ...]]]:
    """(path, raw layer, nesting chain) of every recurrent layer a probe can reach."""
    for _, child in layer.children:
        path = f"{prefix}{child.name}"
        if child.class_name in RECURRENT:
            yield path, child, tuple(path.split("/")[:-1])
        elif child.class_name in MODEL_CLASSES:
            yield from _recurrent_members(child, f"{path}/")


def _selected_members(model: ModelFile, selected: Sequence[str]) -> list[tuple[str, RawLayer, tuple[str, ...]]]:
    members = list(_recurrent_members(model.root))
    if not selected:
        return members
    chosen = [m for m in members if any(m[0] == p or m[0].startswith(p + "/") or p.startswith(m[0] + "/") for p in selected)]
    if not chosen:
        available = ", ".join(m[0] for m in members) or "none"
        raise InputError(f"no recurrent layer {selected[0]!r} in this model; expected one of: {available}")
    return chosen


def _check_layers(
    framework: "_Framework", keras_model: Any, members: Sequence[tuple[str, RawLayer, tuple[str, ...]]],
    probed: Mapping[str, "Probe"], replay: ModelReplay,
    inputs: list[np.ndarray], masks: Mapping[str, np.ndarray | None], atol: float, rtol: float, options: VerifyOptions,
) -> tuple[list[LayerCheck], list[TraceTable]]:
    checks: list[LayerCheck] = []
    traces: list[TraceTable] = []
    for path, raw, chain in members:
        blocker = unsupported_layer(RawLayer("probe", "Model", {}, children=(("layers", raw),)))
        if blocker is not None:
            checks.append(LayerCheck(path, raw.class_name, None, f"the replay engine cannot run {blocker[1]}"))
            continue
        probe = framework.probe(keras_model, chain, raw.name, inputs) if chain else probed[raw.name]
        real_input, keras_mask, real_outputs = probe.layer_input, probe.mask, probe.outputs
        mask = keras_mask if keras_mask is not None else masks.get(path)
        outputs, run_traces = replay.recurrent_outputs(raw, path, real_input, mask, probe.initial_state or None)
        checks.append(LayerCheck(path, raw.class_name, compare(outputs, real_outputs, atol, rtol)))
        if options.trace:
            traces.extend(_trace_tables(run_traces, real_input, options, replay))
    return checks, traces


def _trace_tables(
    run_traces: Mapping[str, Mapping[str, np.ndarray]], real_input: np.ndarray, options: VerifyOptions, replay: ModelReplay
) -> Iterator[TraceTable]:
    for path, gates in run_traces.items():
        layer = replay.recurrent.get(path)
        # Steps are in processing order: a go_backwards layer reads its input from the end.
        layer_input = np.asarray(real_input)[:, ::-1] if layer is not None and layer.config.get("go_backwards") else np.asarray(real_input)
        if not gates:
            continue
        if layer is not None and layer.kind.startswith("ConvLSTM"):
            raise InputError(f"--trace prints one unit of a GRU, LSTM or SimpleRNN; layer {path} is a {layer.kind}, whose units are "
                             "spatial maps: leave it out with --layer, or write its gate values with grucli replay --trace OUT.npz")
        batch, timesteps, units = next(iter(gates.values())).shape
        if not 0 <= options.sample < batch:
            raise InputError(f"--sample {options.sample} is out of range; the input has {batch} samples (0-{batch - 1})")
        if not 0 <= options.unit < units:
            raise InputError(f"--unit {options.unit} is out of range; layer {path} has {units} units (0-{units - 1})")
        yield TraceTable(
            path=path, sample=options.sample, unit=options.unit, steps=tuple(range(timesteps)),
            inputs=layer_input[options.sample],
            values={name: values[options.sample, :, options.unit] for name, values in gates.items()},
        )


# --- the framework ------------------------------------------------------------------------------------------


class _Framework:
    """Keras 3 (any backend) or tf-keras: loading, predict, probes and the device, behind one face."""

    def __init__(self, name: str) -> None:
        if name not in FRAMEWORKS:
            raise InputError(f"--keras {name!r} is not one of: {', '.join((*FRAMEWORKS, AUTO))}")
        self.name = name
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            module = _quiet_import("tf_keras" if name == "tf-keras" else "keras")
        except ImportError as exc:
            package = "tf-keras" if name == "tf-keras" else "keras (and a backend: tensorflow, jax or torch)"
            raise VerifyError(f"verify needs {package}: {first_line(exc, 300)}; install it with pip install 'grucli[verify]'") from None
        self.module = module
        self.backend = "tensorflow" if name == "tf-keras" else module.backend.backend()
        self.semantics = KERAS2 if name == "tf-keras" else KERAS3

    def describe(self) -> str:
        if self.name == "tf-keras":
            return f"tf-keras {self.module.__version__}"
        return f"Keras {self.module.__version__} ({self.backend} backend)"

    def device(self) -> tuple[str, bool]:
        if self.backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_logical_devices("GPU")
            return (f"GPU ({gpus[0].name})", True) if gpus else ("CPU", False)
        if self.backend == "jax":
            import jax

            device = jax.devices()[0]
            return (f"{device.platform.upper()} ({device.device_kind})", device.platform != "cpu")
        if self.backend == "torch":
            import torch

            if torch.cuda.is_available():
                return (f"GPU ({torch.cuda.get_device_name(0)})", True)
            return ("CPU", False)
        return (self.backend, False)

    # loading

    def load(self, model: ModelFile, layers: ModelLayers, unsafe: bool) -> tuple[Any, list[str]]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self._load_native(model.path, unsafe), []
        except Exception as exc:  # noqa: BLE001 - any refusal sends us to the repair path
            first_error = first_line(exc, 300)
            if "lambda" in first_error.lower() or "unsafe" in first_error.lower():
                raise VerifyError(f"{model.path}: {first_error}") from None
        if model.format not in ("legacy-h5", "keras-v3"):
            raise VerifyError(f"{self.describe()} cannot load {model.path}: {first_error}")
        repairs = [f"{self.describe()} refused the file as saved ({first_error}); repaired its config in memory"]
        keras_model = self._load_repaired(model, layers, repairs, unsafe)
        repairs.append("weights set from grucli's reader (the same arrays `grucli export` writes)")
        return keras_model, repairs

    def _load_native(self, path: str, unsafe: bool) -> Any:
        if self.name == "tf-keras":
            return self.module.models.load_model(path, compile=False)
        return self.module.saving.load_model(path, compile=False, safe_mode=not unsafe)

    def _load_repaired(self, model: ModelFile, layers: ModelLayers, repairs: list[str], unsafe: bool) -> Any:
        config = _raw_config(model)
        config = _repair_config(config, layers, repairs)
        for _ in range(20):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    keras_model = self._from_config(config, unsafe)
                break
            except Exception as exc:  # noqa: BLE001
                message = first_line(exc, 300)
                unknown = re.search(r"Unrecognized keyword arguments passed to (\w+): \{(.*)\}", message)
                if not unknown:
                    raise VerifyError(f"{self.describe()} cannot build {model.path} even after repairs: {message}") from None
                class_name, keys = unknown.group(1), re.findall(r"'(\w+)'", unknown.group(2))
                _drop_keys(config, class_name, keys)
                repairs.append(f"dropped {', '.join(keys)} from the {class_name} configs ({self.describe()} does not know them)")
        else:
            raise VerifyError(f"{self.describe()} cannot build {model.path}: too many unknown settings")
        _set_weights(keras_model, model.root, layers, "")
        return keras_model

    def _from_config(self, config: dict[str, Any], unsafe: bool) -> Any:
        if self.name == "tf-keras":
            return self.module.models.model_from_config(config)
        from keras.src.legacy.saving import saving_options, saving_utils
        from keras.src.saving import serialization_lib

        with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(not unsafe):
            return saving_utils.model_from_config(config)

    # running

    def predict(self, keras_model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _reset_states(keras_model)
                output = keras_model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
        except Exception as exc:  # noqa: BLE001
            raise VerifyError(f"{self.describe()} predict failed: {first_line(exc, 300)}") from None
        return [np.asarray(o) for o in (output if isinstance(output, (list, tuple)) else [output])]

    def predict_with_probes(
        self, keras_model: Any, inputs: list[np.ndarray], names: Sequence[str]
    ) -> tuple[list[np.ndarray], dict[str, "Probe"]]:
        """predict, plus the real input, mask and outputs of each named top-level layer, in one run.

        One model with the original outputs and the probed tensors is traced once, so verify
        pays for a single predict; its outputs are the model's own graph, computed as predict does.
        """
        outputs = list(keras_model.outputs)
        layouts = {name: self._probe_layout(keras_model.get_layer(name)) for name in names}
        for layout in layouts.values():
            outputs += layout.tensors
        if not names:
            return self.predict(keras_model, inputs), {}
        try:
            values = self._run_probe(keras_model, outputs, inputs)
        except VerifyError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise VerifyError(f"{self.describe()} predict failed: {first_line(exc, 300)}") from None
        predicted, rest = values[: len(keras_model.outputs)], values[len(keras_model.outputs):]
        probed = {}
        for name, layout in layouts.items():
            probed[name] = layout.read(rest[: len(layout.tensors)])
            rest = rest[len(layout.tensors):]
        return predicted, probed

    def probe(self, keras_model: Any, chain: tuple[str, ...], name: str, inputs: list[np.ndarray]) -> "Probe":
        """The real input, mask (None if unmasked) and outputs of layer `name` inside nested models `chain`."""
        owner, owner_inputs = keras_model, inputs
        for nested in chain:
            inner = owner.get_layer(nested)
            feeding = _feeding_tensor(owner, nested)
            owner_inputs = [self._run_probe(owner, [feeding], owner_inputs)[0]]
            owner = inner
        layout = self._probe_layout(owner.get_layer(name))
        return layout.read(self._run_probe(owner, layout.tensors, owner_inputs))

    def _probe_layout(self, layer: Any) -> "_ProbeLayout":
        """The tensors a probe model outputs for one layer: its input, outputs, initial states, mask."""
        symbolic_input, symbolic_mask, states = self._input_and_mask(layer.input)
        outputs = list(layer.output) if isinstance(layer.output, (list, tuple)) else [layer.output]
        mask = [symbolic_mask] if symbolic_mask is not None else []
        return _ProbeLayout([symbolic_input, *outputs, *states, *mask], len(outputs), len(states))

    def _run_probe(self, owner: Any, tensors: list[Any], inputs: list[np.ndarray]) -> list[np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = self.module.Model(owner.inputs, tensors)
            # Every run starts from zero state: a stateful layer would otherwise carry on from
            # the state the previous run (predict, another probe) left behind.
            _reset_states(owner)
            values = probe.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
        return [np.asarray(v) for v in (values if isinstance(values, (list, tuple)) else [values])]

    def _input_and_mask(self, symbolic: Any) -> tuple[Any, Any, list[Any]]:
        """A layer's input tensor, a tensor a probe model can output for its mask, and the other
        tensors the layer is called on (its initial state).

        Keras 3 lists the mask beside the input. tf-keras hangs it on the tensor as
        `_keras_mask`, which a Functional model cannot output (it is no layer's output): a
        small layer of grucli's own, called on the tensor, receives that mask and returns it.
        """
        tensors = list(symbolic) if isinstance(symbolic, (list, tuple)) else [symbolic]
        tensor, rest = tensors[0], tensors[1:]
        masks = [t for t in rest if "bool" in str(getattr(t, "dtype", ""))]
        states = [t for t in rest if not any(t is m for m in masks)]  # more inputs than x: the initial state
        if masks:
            return tensor, masks[0], states
        if getattr(tensor, "_keras_mask", None) is None:
            return tensor, None, states
        return tensor, _mask_output_layer(self.module)(tensor), states


@dataclass(frozen=True)
class _ProbeLayout:
    """Where one layer's values sit among a probe model's outputs: input, outputs, states, then the mask."""

    tensors: list[Any]
    n_outputs: int
    n_states: int

    def read(self, values: list[np.ndarray]) -> Probe:
        after_states = 1 + self.n_outputs + self.n_states
        mask = values[after_states].astype(bool) if len(values) > after_states else None
        return Probe(values[0], mask, values[1 : 1 + self.n_outputs], values[1 + self.n_outputs : after_states])


def _mask_output_layer(module: Any) -> Any:
    """A tf-keras layer that outputs the mask its input carries (as float32: 1 kept, 0 masked)."""
    import tensorflow as tf

    class MaskOutput(module.layers.Layer):  # type: ignore[name-defined, misc]
        def call(self, inputs: Any, mask: Any = None) -> Any:
            return tf.cast(mask, tf.float32)

        def compute_mask(self, inputs: Any, mask: Any = None) -> None:
            return None

    return MaskOutput(name=f"grucli_mask_probe_{next(_PROBE_IDS)}")


_PROBE_IDS = itertools.count()


def _reset_states(model: Any) -> None:
    """Zero the state of every stateful recurrent layer, inside nested models and wrappers too."""
    for layer in _keras_layers(model):
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_states"):
            layer.reset_states()


def _keras_layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        for attribute in ("forward_layer", "backward_layer", "layer"):
            inner = getattr(layer, attribute, None)
            if inner is not None and inner is not layer:
                yield inner
        if hasattr(layer, "layers") and layer is not model:
            yield from _keras_layers(layer)


def _quiet_import(name: str) -> Any:
    """Import a framework with its C++ start-up chatter (oneDNN, CUDA probes) kept off stderr.

    TensorFlow prints those lines before its logging is set up, so no setting silences them;
    the file descriptor is redirected for the import only, and the text is kept for errors.
    """
    import importlib
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            os.dup2(saved, 2)
            sink.seek(0)
            chatter = sink.read().decode(errors="replace").strip().splitlines()
            raise ImportError(f"{exc}" + (f" ({chatter[-1]})" if chatter else "")) from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _feeding_tensor(owner: Any, nested_name: str) -> Any:
    """The tensor of `owner`'s graph that is fed into its nested model `nested_name`."""
    layers = owner.layers
    for index, layer in enumerate(layers):
        if layer.name != nested_name:
            continue
        if type(owner).__name__ == "Sequential":
            return layers[index - 1].output if index > 0 else owner.inputs[0]
        node = layer._inbound_nodes[-1]  # noqa: SLF001 - no public API gives a nested model's fed tensor
        tensors = node.input_tensors if hasattr(node, "input_tensors") else node.arguments.keras_tensors
        return tensors[0] if isinstance(tensors, (list, tuple)) else tensors
    raise VerifyError(f"nested model {nested_name} not found in {owner.name}")


def _raw_config(model: ModelFile) -> dict[str, Any]:
    root = model.root
    config: dict[str, Any] = {"class_name": root.class_name, "config": copy.deepcopy(dict(root.config))}
    return config


def _repair_config(config: dict[str, Any], layers: ModelLayers, repairs: list[str]) -> dict[str, Any]:
    reset_after = {layer.path.split("/")[-1]: layer.config.get("reset_after") for layer in layers.recurrent if layer.kind == "GRU"}
    inner = config["config"]
    if config["class_name"] == "Sequential" and set(inner) == {"layers"}:
        inner["name"] = "sequential"
        repairs.append("wrapped the Keras 2.1 list-style Sequential config in a dict")
        first = inner["layers"][0] if inner["layers"] else {}
        shape = first.get("config", {}).pop("batch_input_shape", None)
        if shape is not None:
            # Keras 3 reads a layer's batch_input_shape as an input shape: give it an InputLayer.
            inner["layers"].insert(0, {"class_name": "InputLayer", "config": {"batch_input_shape": shape, "name": "input"}})
            repairs.append(f"moved batch_input_shape {shape} of the first layer into an InputLayer")
    for layer in _walk_configs(config):
        layer_config = layer.get("config", {})
        keras1_names = KERAS1_NAMES if layer.get("class_name") in ("GRU", "LSTM", "SimpleRNN") else (
            {"output_dim": "units"} if layer.get("class_name") == "Dense" else {})
        renamed = [(old, new) for old, new in keras1_names.items() if old in layer_config and "units" not in layer_config]
        for old, new in renamed:
            value = layer_config.pop(old)
            if new:
                layer_config[new] = value
        if renamed:
            repairs.append(f"{layer_config.get('name')}: Keras 1 settings " + ", ".join(f"{o}→{n or '(dropped)'}" for o, n in renamed))
        if layer.get("class_name") == "GRU" and "reset_after" not in layer_config:
            name = layer_config.get("name")
            value = reset_after.get(name, reset_after.get(f"forward_{name}", False))
            layer_config["reset_after"] = bool(value)
            repairs.append(f"GRU {name}: added reset_after={bool(value)} (no key in the config; the bias shape decides)")
        if layer.get("class_name") in ("CuDNNGRU", "CuDNNLSTM"):
            kind = layer["class_name"][5:]
            layer["class_name"] = kind
            layer_config.update({"activation": "tanh", "recurrent_activation": "sigmoid"})
            if kind == "GRU":
                layer_config["reset_after"] = True
            repairs.append(f"{layer_config.get('name')}: Cu{'DNN'}{kind} became {kind} with the equivalent settings")
    return config


def _walk_configs(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if "class_name" in value and isinstance(value.get("config"), dict):
            yield value
        for item in value.values():
            yield from _walk_configs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_configs(item)


def _drop_keys(config: dict[str, Any], class_name: str, keys: Sequence[str]) -> None:
    for layer in _walk_configs(config):
        if layer.get("class_name") == class_name:
            for key in keys:
                layer["config"].pop(key, None)


def _set_weights(keras_model: Any, root: RawLayer, layers: ModelLayers, prefix: str) -> None:
    """Give each Keras layer grucli's weights: canonical for recurrent layers, as stored otherwise."""
    canonical = {layer.path: layer for layer in layers.recurrent}
    by_name = {child.name: child for _, child in root.children}
    for keras_layer in keras_model.layers:
        raw = by_name.get(keras_layer.name)
        if raw is None or not keras_layer.weights:
            continue
        path = f"{prefix}{raw.name}"
        if raw.class_name in MODEL_CLASSES:
            _set_weights(keras_layer, raw, layers, f"{path}/")
            continue
        arrays = list(_weights_for(raw, path, canonical))
        try:
            keras_layer.set_weights(arrays)
        except ValueError as exc:
            raise VerifyError(f"layer {path}: the file's weights do not fit the rebuilt layer ({first_line(exc, 300)})") from None


def _weights_for(raw: RawLayer, path: str, canonical: Mapping[str, Any]) -> Iterator[np.ndarray]:
    if path in canonical:
        layer = canonical[path]
        yield np.asarray(layer.kernel)
        yield np.asarray(layer.recurrent_kernel)
        if layer.bias is not None:
            yield layer.bias
        return
    if raw.children:
        for role, child in raw.children:
            child_path = f"{path}/{role}" if raw.class_name in ("Bidirectional", "RNN") else f"{path}/{child.name}"
            yield from _weights_for(child, path if raw.class_name == "RNN" and role == "cell" else child_path, canonical)
        return
    for weight in raw.weights:
        yield np.asarray(weight.array)
