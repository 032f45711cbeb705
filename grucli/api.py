"""grucli from Python: `load` a model file, read each recurrent layer's gates, `replay` the model in
NumPy and `verify` it against Keras. The results are frozen records; errors are grucli's own
exceptions (`grucli.errors.GrucliError` and its subclasses), never a printed line.

The command line stands on this module: every command reads through `load` and computes through
`inspect`, `explain`, `export_gates`, `export_torch`, `convert`, `replay`, `verify`, `diff`, `check`,
`activities` (plot --activations) or `report`.

    import grucli
    m = grucli.load("model.h5")                 # config="model.json" for weights-only files
    layer = m.recurrent_layers[0]                # file order; Bidirectional: NAME/forward, NAME/backward
    layer.gate("z").kernel                       # (input_dim, units)
    grucli.replay(m, x).output                   # as model.predict(x), computed in NumPy
    grucli.verify(m, x).passed                   # needs the verify extra (Keras)

Imports no TensorFlow or Keras until `verify` (or `explain` with a Keras reference) is called.

May import: every package of grucli but output/ and the CLI (each command's module only when called).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grucli.errors import SelectionError
from grucli.files.budget import Limits
from grucli.model.records import ModelFile, ModelLayers, RecurrentLayer

if TYPE_CHECKING:
    from grucli.commands.activations import ActivationsReport
    from grucli.commands.check import CheckReport, Thresholds
    from grucli.commands.convert import ConvertReport
    from grucli.commands.diff import DiffReport
    from grucli.commands.explain import ExplainOptions, Explanation
    from grucli.commands.inspect import InspectReport
    from grucli.commands.pictures import ActivityReport
    from grucli.commands.population import PopulationReport
    from grucli.commands.port import PortReport
    from grucli.commands.probe import ProbeReport
    from grucli.commands.report import ModelReport
    from grucli.commands.torch_layout import TorchModule
    from grucli.commands.verify_report import VerifyReport
    from grucli.files.activation_store import ActivationStore


@dataclass(frozen=True)
class Gate:
    """One gate of one recurrent layer: its columns of the canonical kernel, recurrent kernel and
    biases (`recurrent_bias` only for a GRU with reset_after=True; None where the layer has none)."""

    name: str
    meaning: str
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    recurrent_bias: np.ndarray | None


@dataclass(frozen=True)
class Layer:
    """A recurrent layer as grucli reads it: `path` (NAME, NAME/forward, OUTER/INNER, NAME/cell_K),
    Keras `kind` (GRU, LSTM, SimpleRNN, ConvLSTM2D, ...), units and the gate letters in Keras order."""

    path: str
    kind: str
    units: int
    input_dim: int
    gates: tuple[str, ...]
    config: Mapping[str, Any]
    source: RecurrentLayer = field(repr=False, compare=False)

    def gate(self, name: str) -> Gate:
        """The gate `name` (one of `gates`): z, r, h for a GRU; i, f, c, o for an LSTM; h for SimpleRNN."""
        from grucli.model.gates import gate_array, gate_array_names, gate_meaning

        if name not in self.gates:
            raise SelectionError(f"layer {self.path} ({self.kind}) has no gate {name!r}; expected one of: {', '.join(self.gates)}")
        arrays = {array: gate_array(self.source, name, array) for array in gate_array_names(self.source)}
        return Gate(
            name,
            gate_meaning(self.kind, name),
            arrays["kernel"],
            arrays["recurrent_kernel"],
            arrays.get("bias"),
            arrays.get("recurrent_bias"),
        )


@dataclass(frozen=True)
class Model:
    """A model file read by grucli. Arrays are read from the file when asked for: close it (or use
    `with grucli.load(...) as m:`) when done."""

    path: str
    format: str
    keras_version: str | None
    recurrent_layers: tuple[Layer, ...]
    layers: ModelLayers = field(repr=False, compare=False)

    @property
    def file(self) -> ModelFile:
        return self.layers.file

    def layer(self, path: str) -> Layer:
        for layer in self.recurrent_layers:
            if layer.path == path:
                return layer
        available = ", ".join(layer.path for layer in self.recurrent_layers) or "none"
        raise SelectionError(f"no recurrent layer {path!r} in this model; expected one of: {available}")

    def close(self) -> None:
        self.file.close()

    def _repr_html_(self) -> str:
        """In Jupyter: the file's facts and each recurrent layer's settings and exact step equations,
        as the report page shows them."""
        from grucli.commands.report import layer_summaries
        from grucli.model.semantics import semantics_for
        from grucli.output.html_report import model_summary_html

        semantics = semantics_for(self.keras_version, self.format)
        return model_summary_html(self.path, self.format, self.keras_version, str(semantics), layer_summaries(self.layers))

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(path: str | Path, config: str | Path | None = None, limits: Limits | None = None) -> Model:
    """Read a Keras model file (.keras, .h5, a SavedModel folder, a TensorFlow checkpoint), without
    TensorFlow. `config`: the architecture of a weights-only file (model.to_json(), or config.json)."""
    from grucli.files.reader import read_model
    from grucli.model.gates import gate_names
    from grucli.model.layers import find_layers

    model_file = read_model(path, limits, config)
    try:
        found = find_layers(model_file)
    except BaseException:
        model_file.close()
        raise
    layers = tuple(
        Layer(layer.path, layer.kind, layer.units, layer.input_dim, gate_names(layer.kind), layer.config, layer)
        for layer in found.recurrent
    )
    return Model(str(path), model_file.format, model_file.keras_version, layers, found)


@dataclass(frozen=True)
class ReplayResult:
    """The model's output as `model.predict` returns it (an array, or a list for several outputs),
    and per recurrent layer path its state `h` and its gates over time, (batch, timesteps, units)
    each, timesteps in the order the layer consumed them (reversed for go_backwards layers).
    `states` and `gates` are empty when the replay was asked not to keep them (gates=False)."""

    output: np.ndarray | list[np.ndarray]
    states: Mapping[str, np.ndarray]
    gates: Mapping[str, Mapping[str, np.ndarray]]
    outputs: tuple[np.ndarray, ...] = field(default=(), repr=False)  # every output, as a tuple
    layer_outputs: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)  # each recurrent layer's main output
    trace: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)  # `{layer path}/{name}`, in the order they ran

    def gate_arrays(self) -> dict[str, np.ndarray]:
        """Every gate and state as `{layer path}/{name}`: what `grucli replay --gates` writes."""
        return dict(self.trace)

    def layer_output(self, path: str) -> np.ndarray:
        """The main output of the recurrent layer at `path`."""
        from grucli.errors import ReplayError

        if path not in self.layer_outputs:
            available = ", ".join(self.layer_outputs) or "none"
            raise ReplayError(f"no recurrent layer {path!r} ran in this model; expected one of: {available}")
        return self.layer_outputs[path]


def replay(
    model: Model,
    inputs: np.ndarray | Sequence[np.ndarray],
    dtype: Any = np.float64,
    gates: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> ReplayResult:
    """Run the whole model in NumPy with the definitions of the Keras that saved it. `gates=False`
    keeps no gate values (less memory on long sequences); `progress(path, steps done, steps)`."""
    from grucli.engine.graph import ModelReplay, trace_arrays
    from grucli.errors import ModelFileError
    from grucli.files.inputs import fit_input, input_specs
    from grucli.model.semantics import semantics_for

    if not model.file.has_config:
        raise ModelFileError(
            f"{model.path} holds weights only; replay needs its architecture: pass --config MODEL.json "
            "(the JSON of model.to_json(), or a .keras config.json)"
        )
    arrays = _fitted(inputs, input_specs(model.file), fit_input)
    engine = ModelReplay(
        model.file, model.layers, semantics_for(model.keras_version, model.format), np.dtype(dtype).type, trace=gates, progress=progress
    )
    outputs = engine.run(arrays)
    states: dict[str, np.ndarray] = {}
    traced: dict[str, dict[str, np.ndarray]] = {}
    flat = trace_arrays(engine.calls)
    for key, values in flat.items():
        path, _, name = key.rpartition("/")
        if name == "h":
            states[path] = values
        else:
            traced.setdefault(path, {})[name] = values
    layer_outputs: dict[str, np.ndarray] = {}
    for call in engine.calls:  # a layer called twice (shared): its first call, as `--layer` has always given
        layer_outputs.setdefault(call.path, call.outputs[0])
    return ReplayResult(outputs[0] if len(outputs) == 1 else list(outputs), states, traced, tuple(outputs), layer_outputs, flat)


def model_inputs(
    model: Model, input_path: str | Path | None, batch: int = 4, timesteps: int = 10, seed: int = 0, limits: Limits | None = None
) -> tuple[list[np.ndarray], str]:
    """The model's inputs from a file (.npy, .npz, .csv), or seeded random ones of its input shape,
    with a description of where they came from."""
    from grucli.files.inputs import model_inputs as read_inputs

    return read_inputs(model.file, None if input_path is None else Path(input_path), batch, timesteps, seed, limits or Limits())


def verify(model: Model, inputs: np.ndarray | Sequence[np.ndarray] | None = None, **options: Any) -> VerifyReport:
    """Replay each recurrent layer on its real input and the whole model, and compare with Keras's
    predict (needs the verify extra). `inputs`: arrays, or None for a seeded random input; options
    as `grucli.commands.verify_report.VerifyOptions` (atol, rtol, framework, layer_paths, ...). Returns the
    frozen `VerifyReport`: `.passed`, `.layers`, `.comparisons`, ..."""
    from grucli.commands.verify import verify_model
    from grucli.commands.verify_report import VerifyOptions
    from grucli.files.inputs import fit_input, input_specs

    given = None if inputs is None else tuple(_fitted(inputs, input_specs(model.file), fit_input))
    return verify_model(model.layers, model.path, VerifyOptions(**options), given)


def inspect(
    model: Model, layer_paths: Sequence[str] = (), gates: Sequence[str] = (), unit: int | None = None, with_values: bool = False
) -> InspectReport:
    """Every recurrent layer (or those under `layer_paths`), sliced by gate and unit, with statistics."""
    from grucli.commands.inspect import build_inspect_report

    return build_inspect_report(model.layers, layer_paths, gates, unit, with_values)


def explain(model: Model, options: ExplainOptions) -> Explanation:
    """One unit of one layer, step by step, with every number, and its reference output."""
    from grucli.commands.explain import explain as run_explain

    return run_explain(model.layers, options)


def refuse_unsliced(model: Model, skip: bool = False) -> list[Any]:
    """Refuse a model whose recurrent weights grucli cannot all slice (a custom cell), unless `skip`:
    then the layers left out are returned, for the caller to name."""
    from grucli.model.layers import refuse_unsliced as refuse

    return refuse(model.layers, skip=skip)


def require_recurrent(model: Model) -> None:
    """Refuse a model with no recurrent layer: a check over nothing must not pass."""
    from grucli.model.layers import require_recurrent as require

    require(model.layers)


def selected_layers(model: Model, layer_paths: Sequence[str] = ()) -> list[RecurrentLayer]:
    """The recurrent layers under `layer_paths` (all of them when none is given), in file order."""
    from grucli.model.layers import select_layers

    return select_layers(model.layers.recurrent, layer_paths)


def export_gates(model: Model, output: str | Path, layer_paths: Sequence[str] = (), force: bool = False) -> int:
    """Write every gate slice to an .npz as `{path}/{gate}/{array}`, a block of rows at a time; the
    number of arrays written."""
    from grucli.model.gates import gate_export
    from grucli.output.formats import write_npz_pieces

    specs, pieces = gate_export(selected_layers(model, layer_paths))
    write_npz_pieces(output, specs, pieces, force=force)
    return len(specs)


def export_torch(model: Model, layer_paths: Sequence[str] = (), approximate: bool = False) -> list[TorchModule]:
    """PyTorch state_dicts (nn.GRU, nn.LSTM, nn.RNN) of the recurrent layers, with their constructors."""
    from grucli.commands.torch_layout import torch_modules

    return torch_modules(selected_layers(model, layer_paths), approximate=approximate)


def diff(a: Model, b: Model, layer_paths: Sequence[str] = (), top: int = 3, atol: float = 0.0) -> DiffReport:
    """Two files of one architecture compared gate by gate."""
    from grucli.commands.diff import diff_layers

    return diff_layers(a.layers, b.layers, layer_paths, top, atol)


def check(
    model: Model,
    thresholds: Thresholds | None = None,
    layer_paths: Sequence[str] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> CheckReport:
    """Health checks: NaN/Inf weights, dead units, saturated gates, exploding recurrent blocks."""
    from grucli.commands.check import Thresholds, check_layers

    return check_layers(model.path, selected_layers(model, layer_paths), thresholds or Thresholds(), progress)


def convert(
    model: Model,
    output: str | Path,
    inputs: np.ndarray | Sequence[np.ndarray] | None = None,
    input_path: str | Path | None = None,
    batch: int = 4,
    timesteps: int = 10,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    force: bool = False,
    limits: Limits | None = None,
    state_io: bool = False,
) -> ConvertReport:
    """Write the model as ONNX (recurrent layers as native GRU, LSTM and RNN nodes) and, with ONNX
    Runtime installed, run it on the probe input (given, from `input_path`, or seeded random) and
    compare with the float64 replay; `.passed`, `.comparison`. `state_io`: each recurrent layer's
    initial states are inputs `{path}/h_in` (`c_in`) and its final states outputs `{path}/h_out`,
    to run a long sequence in chunks. Imports no TensorFlow."""
    from grucli.commands.convert import DEFAULT_ATOL, DEFAULT_RTOL, prove, report
    from grucli.convert.onnx_graph import convert as to_onnx
    from grucli.files.inputs import fit_input, input_specs
    from grucli.output.formats import write_atomic

    if inputs is not None:
        arrays = _fitted(inputs, input_specs(model.file), fit_input)
        description = f"the given input {', '.join(str(x.shape) for x in arrays)}"
    else:
        arrays, description = model_inputs(model, input_path, batch, timesteps, seed, limits)
    # An input the config declares no shape for takes its rank from the probe input, as the replay does.
    result = to_onnx(model.file, model.layers, state_io, given_inputs=arrays)
    data = result.model.SerializeToString()
    write_atomic(output, lambda handle: handle.write(data), force=force)
    atol = DEFAULT_ATOL if atol is None else atol
    rtol = DEFAULT_RTOL if rtol is None else rtol
    comparison, not_compared = prove(result, model.file, model.layers, arrays, atol, rtol)
    return report(model.path, output, result, description, comparison, not_compared, atol, rtol)


def port(
    source: Model,
    target: Model,
    output: str | Path,
    maps: Sequence[str] = (),
    partial: bool = False,
    inputs: np.ndarray | Sequence[np.ndarray] | None = None,
    input_path: str | Path | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    force: bool = False,
    limits: Limits | None = None,
) -> PortReport:
    """Port `source` (a PyTorch state_dict, .safetensors or ONNX file read by `load`) into the Keras
    model `target`, written to `output` in the target's format, and prove it: `.passed`, `.pairs`,
    `.proofs` (each paired layer against the source's own equations), `.end_to_end` (an ONNX
    source's whole graph in ONNX Runtime against the replay of the written model). `grucli.load(output)`
    reads the ported model; `grucli.verify` compares it with Keras's predict. Imports no TensorFlow."""
    from grucli.commands.port import DEFAULT_ATOL, DEFAULT_RTOL, port_model
    from grucli.files.inputs import fit_input, input_specs

    given = None
    if inputs is not None:
        given = _fitted(inputs, input_specs(target.file), fit_input)
    elif input_path is not None:
        given, _ = model_inputs(target, input_path, limits=limits)
    return port_model(
        source.layers,
        target.layers,
        Path(output),
        maps,
        partial,
        given,
        DEFAULT_ATOL if atol is None else atol,
        DEFAULT_RTOL if rtol is None else rtol,
        force,
        seed,
        None if target.file.config_path is None else Path(target.file.config_path),
    )


def activities(
    model: Model,
    inputs: np.ndarray | Sequence[np.ndarray],
    layer_paths: Sequence[str] = (),
    sample: int = 0,
    units: Sequence[int] | None = None,
    description: str = "given",
    allow_none: bool = False,
) -> ActivityReport:
    """Each recurrent layer's gates and states over time for one sample (plot --activations, report):
    one replay with its trace, the arrays replay --gates writes, in the order each layer consumes
    its steps, masked steps NaN, averaged over blocks beyond a picture's size (the record says so)."""
    from grucli.commands.pictures import layer_activities
    from grucli.files.inputs import fit_input, input_specs

    return layer_activities(
        model.layers, _fitted(inputs, input_specs(model.file), fit_input), description, layer_paths, sample, units, allow_none
    )


def report(
    model: Model,
    inputs: np.ndarray | Sequence[np.ndarray] | None = None,
    description: str = "given",
    sample: int = 0,
    with_verify: bool | None = None,
    thresholds: Thresholds | None = None,
    activations_store: str | Path | None = None,
    labels: str | Path | np.ndarray | None = None,
    limits: Limits | None = None,
) -> ModelReport:
    """Everything the HTML report shows: settings, equations and weights per layer; with `inputs`,
    the activations over time and (with_verify; None: where Keras is installed) verify's result;
    check's findings; with `activations_store` (computed from this model), the dataset's
    trajectories and per-unit views and, with `labels`, the probe's scores against the control
    task. What cannot be computed (a model the replay cannot run, no Keras) is kept with its
    reason, never dropped silently."""
    import importlib.util

    from grucli.commands.report import build_report
    from grucli.errors import ReplayError, VerifyError

    found_activities: ActivityReport | None = None
    activities_missing: str | None = "no input was given (--input, or --random for a seeded one)"
    verified: VerifyReport | None = None
    verify_missing: str | None = "no input was given, so verify did not run"
    if inputs is not None and not model.file.has_config:
        activities_missing = verify_missing = f"{model.path} holds weights only: the replay needs its architecture (--config MODEL.json)"
    elif inputs is not None:
        try:
            found_activities = activities(model, inputs, sample=sample, description=description, allow_none=True)
            activities_missing = "; ".join(f"{path}: {why}" for path, why in found_activities.skipped) or None
        except ReplayError as exc:  # a layer the replay cannot run: the weights are still shown
            activities_missing = f"grucli cannot replay this model: {exc}"
        keras_here = any(importlib.util.find_spec(name) is not None for name in ("keras", "tf_keras"))
        if with_verify is False:
            verify_missing = "verify was not asked for (--no-verify)"
        elif not keras_here and with_verify:
            raise VerifyError(
                "report --verify needs Keras (keras or tf-keras), which is not installed; install it with "
                "pip install 'grucli[verify]', or leave --verify out"
            )
        elif not keras_here:
            verify_missing = "Keras is not installed (pip install 'grucli[verify]'), so predict was not compared"
        else:
            try:
                verified, verify_missing = verify(model, inputs), None
            except (VerifyError, ReplayError) as exc:
                verify_missing = f"verify could not run: {exc}"
    dataset = None if activations_store is None else _dataset_section(model, activations_store, labels, limits or Limits())
    return build_report(
        model.layers,
        found_activities,
        activities_missing,
        verified,
        verify_missing,
        check(model, thresholds),
        description if inputs is not None else None,
        dataset,
    )


def _dataset_section(model: Model, store_path: str | Path, labels: str | Path | np.ndarray | None, limits: Limits) -> Any:
    """The report's dataset section: the store must be this model's and complete; the probe runs
    per step for (N, T) labels."""
    from grucli.commands.report import DatasetSection

    store = open_activations(store_path, limits)
    require_store_of(store, model, limits)
    store.require_complete()
    values = None if labels is None else _labels(labels, limits)
    found_probe: ProbeReport | None = None
    probe_missing: str | None = "no labels were given (--labels Y.npy)"
    if values is not None:
        import dataclasses

        found_probe = dataclasses.replace(probe(store, values[0], per_step=values[0].ndim == 2, limits=limits), labels=values[1])
        probe_missing = None
    found_population = population(store, labels=None if values is None else values[0], limits=limits)
    return DatasetSection(
        str(store.path),
        store.settings.rows,
        tuple(layer.path for layer in store.settings.layers),
        found_population,
        None,
        found_probe,
        probe_missing,
    )


DEFAULT_MAX_DATASET_BYTES = 1 << 40  # --max-dataset-gb: what one dataset may declare, 1 TiB


def activations(
    model: Model,
    data: str | Path | np.ndarray | Sequence[np.ndarray],
    store: str | Path,
    layer_paths: Sequence[str] = (),
    names: Sequence[str] = (),
    batch_size: int | None = None,
    dtype: str = "float32",
    resume: bool = False,
    force: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    limits: Limits | None = None,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> ActivationsReport:
    """Every recurrent layer's traced gates and states (or those of `layer_paths`, only `names`) for
    every row of `data`, written to the Zarr store `store`: `{layer path}/{name}` arrays of shape
    (rows, steps, units), masks, and attributes (docs/dynamics.md). `data`: an .npy, an .npz
    (np.savez), a folder of .npy shards, a Zarr array, or arrays in memory. Streamed a batch at a
    time; `workers` (a local Dask cluster) or `scheduler` (an address) runs the batches on Dask
    and writes the same bytes. `resume` completes a store an interrupted run left. Returns the
    frozen `ActivationsReport`; `progress(rows done, rows)`."""
    from grucli.commands.activations import ExtractOptions, extract
    from grucli.errors import require_extra

    require_extra(("zarr",), "dynamics", "activations")
    if workers is not None or scheduler is not None:
        require_extra(("dask", "distributed"), "dynamics", "activations on Dask (--workers, --scheduler)")
    limits = limits or Limits()
    dataset = _dataset(model, data, limits, max_dataset_bytes)
    options = ExtractOptions(tuple(layer_paths), tuple(names), dtype, batch_size)
    return extract(model.file, model.layers, dataset, Path(store), options, limits, resume, force, scheduler, workers, progress)


def _dataset(model: Model, data: str | Path | np.ndarray | Sequence[np.ndarray], limits: Limits, max_dataset_bytes: int) -> Any:
    from grucli.files.datasets import in_memory, open_dataset
    from grucli.files.inputs import input_specs

    names = [spec.name for spec in input_specs(model.file)]
    if isinstance(data, (str, Path)):
        return open_dataset(data, names, limits, max_dataset_bytes)
    arrays = [np.asarray(data)] if isinstance(data, np.ndarray) else [np.asarray(x) for x in data]
    return in_memory(arrays, names)


def open_activations(store: str | Path, limits: Limits | None = None) -> ActivationStore:
    """A store `activations` wrote, its attributes and arrays checked: `.settings` (layers, rows,
    model), `.progress`, `.read("gru/h", slice(0, 10))`, `.mask(layer, rows)`."""
    from grucli.errors import require_extra
    from grucli.files.activation_store import open_store

    require_extra(("zarr",), "dynamics", "reading a store of activations")
    return open_store(store, limits or Limits())


def probe(
    store: str | Path | ActivationStore,
    labels: str | Path | np.ndarray,
    layer_paths: Sequence[str] = (),
    states: Sequence[str] = (),
    per_step: bool = False,
    task: str | None = None,
    folds: int = 5,
    seed: int = 0,
    control: str = "permutation",
    data: str | Path | np.ndarray | None = None,
    max_rows: int = 100_000,
    top: int = 5,
    regularization: float = 1.0,
    limits: Limits | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ProbeReport:
    """Diagnostic classifiers on the stored states for `labels` ((N,): one a sequence, probed at its
    final state; (N, T): one a step, pooled or `per_step`), each against a control task
    (`control`: permutation, or type, which needs the token ids in `data`): scikit-learn,
    cross-validated by sequence. Returns the frozen `ProbeReport` (`.results`, each with score,
    score_std, control_score, selectivity and top_units)."""
    from grucli.commands.probe import ProbeOptions, token_ids
    from grucli.commands.probe import probe as run_probe
    from grucli.errors import require_extra

    require_extra(("sklearn",), "dynamics", "probe")
    limits = limits or Limits()
    found = _store(store, limits)
    values, name = _labels(labels, limits)
    ids = None
    if control == "type":
        if data is None:
            from grucli.commands.probe import LabelError

            raise LabelError("the token-type control needs the input ids: pass the data the store was computed from (--input)")
        ids = token_ids(found, data, limits)
    options = ProbeOptions(tuple(layer_paths), tuple(states), per_step, task, folds, seed, control, max_rows, top, regularization)
    return run_probe(found, values, name, options, ids, progress)


def _store(store: str | Path | ActivationStore, limits: Limits) -> ActivationStore:
    """A store given as a path, opened and checked; one already open, as it is."""
    return open_activations(store, limits) if isinstance(store, (str, Path)) else store


def _labels(labels: str | Path | np.ndarray, limits: Limits) -> tuple[np.ndarray, str]:
    from grucli.files.inputs import InputError, read_arrays

    if not isinstance(labels, (str, Path)):
        return np.asarray(labels), "the labels given"
    path = Path(labels)
    if path.suffix.lower() not in (".npy", ".npz"):
        raise InputError(f"labels {path} has suffix {path.suffix or '(none)'}; expected .npy (or an .npz of one array)")
    arrays = read_arrays(path, f"labels {path}", limits)
    if len(arrays) != 1:
        raise InputError(f"labels {path} holds {len(arrays)} arrays; expected one")
    return arrays[0], str(path)


def population(
    store: str | Path | ActivationStore,
    layer_path: str | None = None,
    state: str = "h",
    sequences: int = 20,
    seed: int = 0,
    labels: str | Path | np.ndarray | None = None,
    model: Model | None = None,
    limits: Limits | None = None,
) -> PopulationReport:
    """A layer's states across the stored dataset: PCA trajectories of `sequences` rows (fitted on
    every real step, incrementally) and each unit's mean, saturation and correlation with
    `labels`. With `model`, the store must have been computed from it."""
    from grucli.commands.population import population as views
    from grucli.commands.probe import check_labels
    from grucli.errors import require_extra

    require_extra(("sklearn",), "dynamics", "trajectories (PCA)")
    limits = limits or Limits()
    found = _store(store, limits)
    if model is not None:
        require_store_of(found, model, limits)
    values, name = (None, None) if labels is None else _labels(labels, limits)
    if values is not None:
        values = check_labels(values, found, name or "labels")
    return views(found, layer_path, state, sequences, seed, values, name)


def require_store_of(store: ActivationStore, model: Model, limits: Limits | None = None) -> None:
    """Refuse a store computed from another model file."""
    from grucli.commands.activations import require_same_model

    require_same_model(store, model.file, limits or Limits())


def _fitted(inputs: np.ndarray | Sequence[np.ndarray], specs: Sequence[Any], fit: Any) -> list[np.ndarray]:
    from grucli.files.inputs import InputError

    arrays = [np.asarray(inputs)] if isinstance(inputs, np.ndarray) else [np.asarray(x) for x in inputs]
    if len(arrays) != len(specs):
        raise InputError(f"the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}); {len(arrays)} arrays were given")
    return [fit(array, spec, "the input") for array, spec in zip(arrays, specs)]
