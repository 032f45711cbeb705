"""`verify`: the replay against what the framework computes.

The model is loaded by `frameworks` with Keras 3 (any backend, from `KERAS_BACKEND`) or tf-keras;
files that refuse to load are repaired in memory (`repairs`, never on disk) and given grucli's own
weights. Then:
each recurrent layer is replayed on its real input (a probe model returns the layer's input and
output) and compared with its real output; the whole model is replayed end to end and compared
with `predict`; and both with an expected output when one is given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grucli.commands.verify_report import (
    LayerCheck,
    TraceTable,
    VerifyOptions,
    VerifyReport,
    compare,
)
from grucli.engine.graph import ModelReplay, RecurrentCall
from grucli.engine.registry import unsupported_layer
from grucli.errors import ModelFileError, ReplayError, VerifyError, counted
from grucli.files.budget import Limits
from grucli.files.inputs import InputError, input_specs, model_inputs, read_arrays
from grucli.frameworks.framework import (
    AUTO,
    Framework,
    Probe,
    open_framework,
    resolve_framework,
)
from grucli.model import paths
from grucli.model.layers import activation_name, require_recurrent
from grucli.model.records import ModelFile, ModelLayers, RawLayer
from grucli.model.registry import Role, holds_recurrent, is_model, role_of, runs_code
from grucli.model.semantics import KERAS2, KERAS3, VERSION_DEPENDENT, semantics_for

# Default tolerances by where predict ran. Measured: CPU float32 vs a float64 replay 1e-7..4e-7;
# GPUs run float32 products in TF32 (2e-4..5e-4). Both defaults leave room for those and none
# for a real error (a swapped gate, or Keras 3's hard_sigmoid on a Keras 2 model: ~1e-2).
TOLERANCES = {"cpu": (1e-5, 1e-5), "accelerator": (2e-3, 1e-3)}
# Machine epsilon of the half-precision compute dtypes of mixed-precision policies, and how many
# of those a layer's result may be off by (measured: a mixed_float16 GRU(8) over 10 steps, 2e-3).
LOW_PRECISION = {"float16": 2.0**-10, "bfloat16": 2.0**-7}
LOW_PRECISION_ULPS = 8
DEFINITIONS = {
    "hard_sigmoid": {KERAS2: "clip(0.2x + 0.5, 0, 1)", KERAS3: "clip(x/6 + 0.5, 0, 1)"},
    "hard_silu": {KERAS2: "x·clip(0.2x + 0.5, 0, 1)", KERAS3: "x·clip(x/6 + 0.5, 0, 1)"},
    "hard_swish": {KERAS2: "x·clip(0.2x + 0.5, 0, 1)", KERAS3: "x·clip(x/6 + 0.5, 0, 1)"},
}


def verify_model(layers: ModelLayers, path: str | Path, options: VerifyOptions, given: Sequence[np.ndarray] | None = None) -> VerifyReport:
    """Replay each recurrent layer of a file already read on its real input, and the whole model,
    and compare with the framework's predict. `given`: input arrays already fitted to the model's
    inputs (the Python API), instead of options.input_path or a random input. `layers`: the file's
    layers as `grucli.load` found them (they are not found a second time)."""
    model_file = layers.file
    if not model_file.has_config:
        raise ModelFileError(
            f"{path} holds weights only; verify needs its architecture: pass --config MODEL.json "
            "(the JSON of model.to_json(), or a .keras config.json)"
        )
    require_recurrent(layers)
    members = _selected_members(model_file, options.layer_paths)
    if given is not None:
        inputs, input_description = list(given), f"given arrays {', '.join(str(x.shape) for x in given)}"
    else:
        inputs, input_description = model_inputs(
            model_file, options.input_path, options.batch, options.timesteps, options.seed, options.limits
        )
    expected = _load_expected(options.expected_path, options.limits) if options.expected_path else None
    _refuse_code(model_file, options.unsafe)

    framework = open_framework(resolve_framework(options.framework, model_file))
    keras_model, repairs = framework.load(model_file, layers, options.unsafe, inputs)
    device, accelerated = framework.device()
    compute_dtype = _compute_dtype(model_file.root)
    atol, rtol = _tolerances(options, accelerated, compute_dtype)
    semantics = semantics_for(model_file.keras_version, model_file.format)
    dtype = np.float32 if options.dtype == "float32" else np.float64
    semantic_failures = tuple(_semantic_failures(layers, model_file, semantics, framework))
    warnings_: list[str] = list(_nonfinite_weights(model_file.root))

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
    # Each layer is replayed again on its real input (probed from the framework), traced if asked.
    layer_replay = ModelReplay(model_file, layers, semantics, dtype, trace=options.trace)
    checks, traces = _check_layers(framework, keras_model, members, probed, layer_replay, replay.calls, inputs, masks, atol, rtol, options)
    comparisons = {
        "replay_vs_predict": compare(replayed, predicted, atol, rtol) if replayed is not None else None,
        "replay_vs_expected": compare(replayed, expected, atol, rtol, ("the replay", "the expected output"))
        if replayed is not None and expected is not None
        else None,
        "predict_vs_expected": compare(predicted, expected, atol, rtol, ("predict", "the expected output"))
        if expected is not None
        else None,
    }
    if options.onnx_path is not None:
        from grucli.commands.convert import run_onnx_file

        names = [spec.name for spec in input_specs(model_file)]
        ran = run_onnx_file(options.onnx_path, inputs, options.limits.max_total_bytes, names)[: len(predicted)]
        comparisons["onnx_vs_predict"] = compare(ran, predicted, atol, rtol, ("ONNX Runtime", "predict"))
    return VerifyReport(
        path=str(path),
        keras_version=model_file.keras_version,
        semantics=semantics,
        saved_by=model_file.saved_by,
        version_source=model_file.version_source,
        framework=framework.describe() + (" (auto)" if options.framework == AUTO else ""),
        device=device,
        precision=_precision(compute_dtype, device, accelerated),
        atol=atol,
        rtol=rtol,
        dtype=options.dtype,
        input_description=input_description,
        compute_dtype=compute_dtype,
        layers=_all_checks(checks, layers, options.layer_paths),
        comparisons=comparisons,
        end_to_end_note=end_to_end_note,
        repairs=tuple(repairs),
        warnings=tuple(warnings_),
        semantic_failures=semantic_failures,
        traces=tuple(traces),
    )


def _tolerances(options: VerifyOptions, accelerated: bool, compute_dtype: str) -> tuple[float, float]:
    default_atol, default_rtol = TOLERANCES["accelerator" if accelerated else "cpu"]
    if compute_dtype in LOW_PRECISION:
        # A float16/bfloat16 layer rounds every product to its precision: a float64 replay
        # differs from it by a few of its ulps, which no float32 tolerance allows.
        default_atol = default_rtol = max(default_atol, LOW_PRECISION_ULPS * LOW_PRECISION[compute_dtype])
    return (options.atol if options.atol is not None else default_atol, options.rtol if options.rtol is not None else default_rtol)


def _precision(compute_dtype: str, device: str, accelerated: bool) -> str:
    if compute_dtype in LOW_PRECISION:
        return (
            f"{compute_dtype} compute (mixed-precision policy) on {device}; the tolerance allows "
            f"{LOW_PRECISION_ULPS} {compute_dtype} ulps ({LOW_PRECISION[compute_dtype]:.2g} each)"
        )
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


def _all_checks(checks: list[LayerCheck], found: ModelLayers, selected: Sequence[str]) -> tuple[LayerCheck, ...]:
    unsliced = [c for c in _unsliced_checks(found, selected) if c.path not in {x.path for x in checks}]
    return (*checks, *unsliced, *_uncovered_checks(found, selected, [*checks, *unsliced]))


def _unsliced_checks(found: ModelLayers, selected: Sequence[str]) -> Iterator[LayerCheck]:
    """Layers holding recurrent weights grucli cannot slice: in scope, so not compared means failed."""
    for other in found.others:
        if other.unsliced_recurrent and paths.in_scope(other.path, selected):
            yield LayerCheck(other.path, other.class_name, None, other.skipped_reason)


def _load_expected(path: Path, limits: Limits) -> list[np.ndarray]:
    arrays = read_arrays(path, f"expected output {path}", limits)
    for array in arrays:
        if array.dtype.kind not in "biuf":
            raise InputError(f"expected output {path} holds {array.dtype} values; expected a numeric .npy or .npz")
    return arrays


# --- safety and semantics -----------------------------------------------------------------------------------


def _refuse_code(model: ModelFile, unsafe: bool) -> None:
    if unsafe:
        return
    for name, class_name in _code_layers(model.root):
        raise VerifyError(
            f"layer {name} is a {class_name}: loading it would run Python code stored in the file; pass --unsafe only for a file you trust"
        )


def _code_layers(layer: RawLayer, prefix: str = "") -> Iterator[tuple[str, str]]:
    for _, child in layer.children:
        if runs_code(child.class_name) or "__lambda__" in json.dumps(child.config, default=str):
            yield f"{prefix}{child.name}", child.class_name
        yield from _code_layers(child, f"{prefix}{child.name}/")


def _semantic_failures(layers: ModelLayers, model: ModelFile, semantics: str, framework: Framework) -> Iterator[str]:
    """Activations whose definition changed between the Keras that saved the file and the one installed."""
    if semantics == framework.semantics:
        return
    saved = f"Keras {model.keras_version}" if model.keras_version else "Keras 1"
    uses = [(layer.path, key, getattr(layer.settings, key)) for layer in layers.recurrent for key in ("activation", "recurrent_activation")]
    uses += [(path, "activation", activation_name(raw.config.get("activation"))) for path, raw in _plain_layers(model.root)]
    for path, key, name in uses:
        if name in VERSION_DEPENDENT:
            yield (
                f"layer {path}: {key} {name} is {DEFINITIONS[name][KERAS2]} in {saved}, which saved this file, "
                f"but {DEFINITIONS[name][KERAS3]} in the installed {framework.describe()}: predict no longer computes what "
                "the model was trained with (verify with --keras tf-keras to check the file under its own definitions)"
            )


def _plain_layers(layer: RawLayer, prefix: str = "") -> Iterator[tuple[str, RawLayer]]:
    """Non-recurrent layers with an activation setting (Dense, Activation, ...), with their paths."""
    for _, child in layer.children:
        path = f"{prefix}{child.name}"
        if role_of(child.class_name) in (Role.MODEL, Role.TIME_DISTRIBUTED):
            yield from _plain_layers(child, f"{path}/")
        elif not holds_recurrent(child.class_name) and "activation" in child.config:
            yield path, child


# --- per-layer checks ---------------------------------------------------------------------------------------


def _recurrent_members(layer: RawLayer, prefix: str = "") -> Iterator[tuple[str, RawLayer, tuple[str, ...]]]:
    """(path, raw layer, nesting chain) of every recurrent layer a probe can reach."""
    for _, child in layer.children:
        path = f"{prefix}{child.name}"
        if holds_recurrent(child.class_name) or _wraps_recurrent(child):
            yield path, child, paths.enclosing(path)
        elif is_model(child.class_name):
            yield from _recurrent_members(child, f"{path}/")


def recurrent_member(model: ModelFile, path: str) -> tuple[str, RawLayer, tuple[str, ...]]:
    """(path, raw layer, nesting chain) of the layer a probe reaches that holds the recurrent layer
    at `path` (itself, or the Bidirectional or RNN of stacked cells around it)."""
    for member in _recurrent_members(model.root):
        if paths.selects(member[0], path):
            return member
    raise InputError(f"no layer a probe can reach holds recurrent layer {path}")


def _wraps_recurrent(layer: RawLayer) -> bool:
    """TimeDistributed around a recurrent layer: grucli reports (and verify probes) the wrapper."""
    return role_of(layer.class_name) is Role.TIME_DISTRIBUTED and bool(layer.children) and holds_recurrent(layer.children[0][1].class_name)


def _uncovered_checks(found: ModelLayers, selected: Sequence[str], checks: Sequence[LayerCheck]) -> Iterator[LayerCheck]:
    """Recurrent layers in scope that no check covers: not compared, so the run fails, never passes
    without them (a safety net under the probing rules above)."""
    for layer in found.recurrent:
        if paths.in_scope(layer.path, selected) and not any(paths.selects(check.path, layer.path) for check in checks):
            yield LayerCheck(layer.path, layer.kind, None, "verify cannot probe this layer where it sits in the model")


def _selected_members(model: ModelFile, selected: Sequence[str]) -> list[tuple[str, RawLayer, tuple[str, ...]]]:
    members = list(_recurrent_members(model.root))
    if not selected:
        return members
    chosen = [m for m in members if any(paths.overlaps(selector, m[0]) for selector in selected)]
    if not chosen:
        available = ", ".join(m[0] for m in members) or "none"
        raise InputError(f"no recurrent layer {selected[0]!r} in this model; expected one of: {available}")
    return chosen


def _check_layers(
    framework: Framework,
    keras_model: Any,
    members: Sequence[tuple[str, RawLayer, tuple[str, ...]]],
    probed: Mapping[str, Probe],
    replay: ModelReplay,
    end_to_end: Sequence[RecurrentCall],
    inputs: list[np.ndarray],
    masks: Mapping[str, np.ndarray | None],
    atol: float,
    rtol: float,
    options: VerifyOptions,
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
        same_run = None if options.trace else _same_call(end_to_end, replay.dtype, path, real_input, mask, probe.initial_state)
        if same_run is not None:  # the end-to-end replay already ran this layer on exactly this input
            outputs, run_traces = same_run.outputs, same_run.traces
        else:
            outputs, run_traces = replay.recurrent_outputs(raw, path, real_input, mask, probe.initial_state or None)
        checks.append(LayerCheck(path, raw.class_name, compare(outputs, real_outputs, atol, rtol)))
        if options.trace:
            traces.extend(_trace_tables(run_traces, real_input, options, replay))
    return checks, traces


def _same_call(
    end_to_end: Sequence[RecurrentCall],
    dtype: type,
    path: str,
    real_input: np.ndarray,
    mask: np.ndarray | None,
    initial_state: Sequence[np.ndarray],
) -> RecurrentCall | None:
    """The end-to-end replay's call of the layer at `path`, when it was fed exactly what the
    framework fed it (same values in the replay's dtype, same mask, same initial states): its
    outputs are then what a second run would compute, bit for bit, at no second cost (a long
    sequence's replay is most of verify's own time)."""
    calls = [call for call in end_to_end if call.path == path]
    if len(calls) != 1:
        return None  # not run, or called more than once (a shared layer): run it on this input
    call = calls[0]
    if np.shape(call.inputs) != np.shape(real_input) or not np.array_equal(np.asarray(call.inputs, dtype), np.asarray(real_input, dtype)):
        return None
    if (call.mask is None) != (mask is None) or (mask is not None and call.mask is not None and not np.array_equal(call.mask, mask)):
        return None
    called_with = call.initial_state or []
    if len(called_with) != len(initial_state) or not all(
        np.array_equal(np.asarray(a, dtype), np.asarray(b, dtype)) for a, b in zip(called_with, initial_state)
    ):
        return None
    return call


def _trace_tables(
    run_traces: Mapping[str, Mapping[str, np.ndarray]], real_input: np.ndarray, options: VerifyOptions, replay: ModelReplay
) -> Iterator[TraceTable]:
    for path, gates in run_traces.items():
        layer = replay.recurrent.get(path)
        # Steps are in processing order: a go_backwards layer reads its input from the end.
        layer_input = np.asarray(real_input)[:, ::-1] if layer is not None and layer.settings.go_backwards else np.asarray(real_input)
        if not gates:
            continue
        if layer is not None and layer.family.convolutional:
            raise InputError(
                f"--trace prints one unit of a GRU, LSTM or SimpleRNN; layer {path} is a {layer.kind}, whose units are "
                "spatial maps: leave it out with --layer, or write its gate values with grucli replay --gates OUT.npz"
            )
        batch, timesteps, units = next(iter(gates.values())).shape
        if not 0 <= options.sample < batch:
            raise InputError(f"--sample {options.sample} is out of range; the input has {batch} samples (0-{batch - 1})")
        if not 0 <= options.unit < units:
            raise InputError(f"--unit {options.unit} is out of range; layer {path} has {counted(units, 'unit')} (0-{units - 1})")
        yield TraceTable(
            path=path,
            sample=options.sample,
            unit=options.unit,
            steps=tuple(range(timesteps)),
            inputs=layer_input[options.sample],
            values={name: values[options.sample, :, options.unit] for name, values in gates.items()},
        )
