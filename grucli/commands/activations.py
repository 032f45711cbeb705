"""Every recurrent layer's gates and states over a whole dataset, streamed into a Zarr store.

The replay (engine/graph.py, the saving Keras's definitions) runs one batch of rows at a time
with its trace on; each batch's traced arrays (a GRU's z, r, hh, h; an LSTM's i, f, cc, c, o,
h; SimpleRNN's h) and masks are written to the store's chunks of those rows
(files/activation_store.py). Peak memory is one batch's, whatever the number of rows.

One batch is one task, `run_batch(job, index)`: the single-process loop runs them in order, and
with `--workers N` or `--scheduler ADDRESS` a Dask distributed cluster runs them, each worker
loading the model once and writing its own chunks. Both run the same function on the same
rows, so both write the same bytes (a test compares the stores).

A run stopped part way (Ctrl-C, a lost worker) leaves the store with the batches it finished
and, in its attributes, their data's fingerprints and `rows_complete`; `resume` runs the rest,
after checking the settings, the model's hash and the kept rows' data are the same.

May import: numpy, dask and distributed (on first use), engine/, files/, model/, errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from grucli.engine.graph import ModelReplay
from grucli.engine.steps import TraceBuffers
from grucli.errors import GrucliError, OutputError, ReplayError, SelectionError, counted
from grucli.files.activation_store import (
    ActivationStore,
    Progress,
    StoredLayer,
    StoreSettings,
    create_store,
    is_store,
    open_store,
    write_batch,
    write_progress,
)
from grucli.files.budget import MIB, Limits, size
from grucli.files.datasets import Dataset, digest
from grucli.files.fingerprint import model_fingerprint
from grucli.files.inputs import InputError, InputSpec, fit_input, input_specs
from grucli.files.zarr_meta import StoreError
from grucli.model.layers import select_layers
from grucli.model.records import ModelFile, ModelLayers
from grucli.model.registry import Role, role_of
from grucli.model.semantics import semantics_for

BATCH_MEMORY = 256 * MIB  # the traced values of one batch, when --batch-size is not given
MOST_ROWS_A_BATCH = 256  # more rows a step gain little (the step's Python costs are spread already)
CHECKPOINT_SECONDS = 1.0  # the store's progress attributes are rewritten at most this often (and at the end)


class ResumeError(GrucliError):
    """`--resume` on a store another model, other data or other settings wrote."""


@dataclass(frozen=True)
class ExtractOptions:
    """What to trace: `layer_paths` (none: every recurrent layer), `names` (none: everything each
    traces), the replay's `dtype`, and rows a batch (None: as many as BATCH_MEMORY holds, at most
    MOST_ROWS_A_BATCH)."""

    layer_paths: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    dtype: str = "float32"
    batch_size: int | None = None


@dataclass(frozen=True)
class ModelSource:
    """How a process (this one, or a Dask worker) reads the model: the file, --config and limits,
    and the fingerprint it must have."""

    path: str
    config_path: str | None
    limits: Limits
    fingerprint: str


@dataclass(frozen=True)
class Job:
    """Everything one batch's task needs, small enough to send to a worker."""

    model: ModelSource
    dataset: Dataset
    store: str
    settings: StoreSettings


@dataclass(frozen=True)
class ActivationsReport:
    """What a run wrote: the store, its settings, the rows it holds, and how it ran."""

    store: str
    settings: StoreSettings
    rows_complete: int
    batches_run: int
    batches_kept: int  # already in the store (--resume)
    seconds: float
    engine: str  # "this process" or the Dask scheduler's address

    @property
    def complete(self) -> bool:
        return self.rows_complete == self.settings.rows

    @property
    def rows_per_second(self) -> float:
        run_rows = min(self.settings.rows, self.batches_run * self.settings.batch_size)
        return run_rows / self.seconds if self.seconds > 0 else float("inf")


Progressed = Callable[[int, int], None]  # (rows complete, rows in all)


def plan(
    model: ModelFile, layers: ModelLayers, dataset: Dataset, options: ExtractOptions, fingerprint: str, limits: Limits
) -> StoreSettings:
    """The store's settings: which layers and names, their steps and units, found by replaying the
    dataset's first row; everything checked before anything is written."""
    if not model.has_config:
        raise ReplayError(
            f"{model.path} holds weights only; activations needs its architecture: pass --config MODEL.json "
            "(the JSON of model.to_json(), or a .keras config.json)"
        )
    if options.dtype not in ("float32", "float64"):
        raise SelectionError(f"dtype {options.dtype!r}; expected float32 or float64")
    specs = input_specs(model)
    _check_dataset_shape(dataset, specs)
    chosen = {layer.path for layer in select_layers(layers.recurrent, options.layer_paths)}
    if not chosen:
        raise SelectionError(f"{model.path} has no recurrent layer; activations traces recurrent layers")
    semantics = semantics_for(model.keras_version, model.format)
    engine = ModelReplay(model, layers, semantics, np.dtype(options.dtype).type, trace=True, trace_only=frozenset(chosen))
    first = [fit_input(x, spec, f"row 0 of {dataset.path}") for x, spec in zip(dataset.read(0, 1), specs)]
    engine.run(first)
    stored = _stored_layers(engine, chosen, options.names, layers)
    units_bytes = sum(layer.timesteps * math.prod(layer.units) * len(layer.names) for layer in stored) * np.dtype(options.dtype).itemsize
    batch_size = options.batch_size or max(1, min(MOST_ROWS_A_BATCH, BATCH_MEMORY // max(units_bytes, 1)))
    batch_size = min(batch_size, dataset.rows)
    if batch_size * dataset.row_bytes > limits.max_input_bytes:
        raise InputError(
            f"a batch of {batch_size} rows of {dataset.path} is {size(batch_size * dataset.row_bytes)}, over the input limit of "
            f"{size(limits.max_input_bytes)}; expected a smaller --batch-size (or raise the limit with --max-input-mb)"
        )
    return StoreSettings(
        model={"path": model.path, "sha256": fingerprint, "keras_version": model.keras_version, "format": model.format},
        keras_definitions=str(semantics),
        dtype=options.dtype,
        data=dataset.summary(),
        rows=dataset.rows,
        batch_size=batch_size,
        layers=tuple(stored),
    )


def _check_dataset_shape(dataset: Dataset, specs: Sequence[InputSpec]) -> None:
    """Each input's rows against what the model declares, from the headers alone (nothing is
    written for data of the wrong shape)."""
    for array, spec in zip(dataset.arrays, specs):
        if np.dtype(array.dtype).kind not in "biuf":
            raise InputError(f"input {spec.name} of {dataset.path} holds {array.dtype}; expected numbers")
        if spec.shape is None:
            continue
        row = array.shape[1:]
        if len(row) != len(spec.shape) or any(d is not None and d != g for d, g in zip(spec.shape, row)):
            raise InputError(
                f"{dataset.path}: input {spec.name} has shape {array.shape}; the model expects {spec.describe()} "
                "(a dataset holds rows: one sequence a row)"
            )
        if spec.stateful:
            raise InputError(
                "the model's layers are stateful (each row's state carries from one batch to the next), so its states over "
                "a dataset depend on how the rows are batched; activations runs each row from a zero state"
            )


def _stored_layers(engine: ModelReplay, chosen: set[str], names: Sequence[str], layers: ModelLayers) -> list[StoredLayer]:
    by_path = {layer.path: layer for layer in layers.recurrent}
    seen: dict[str, int] = {}
    stored: list[StoredLayer] = []
    masks: dict[str, bool] = {}
    for call in engine.calls:
        for path, traced in call.traces.items():
            if path not in chosen or not traced:
                continue
            seen[path] = seen.get(path, 0) + 1
            if seen[path] > 1:
                raise ReplayError(
                    f"layer {path} is called more than once in the model (a shared layer): its states differ by call; "
                    "expected each traced layer to run once (leave it out with --layer)"
                )
            if role_of(call.class_name) is Role.TIME_DISTRIBUTED:
                raise ReplayError(
                    f"layer {path} runs inside TimeDistributed: its states are per outer step, not per row; "
                    "activations traces layers that run once over each row (leave it out with --layer)"
                )
            masks[path] = call.mask is not None
            kept = [name for name in traced if not names or name in names]
            if not kept:
                continue
            shape = next(iter(traced.values())).shape
            layer = by_path[path]
            activations = {
                name: str(getattr(layer.settings, setting))
                for name, setting in layer.family.traced_activation.items()
                if name in kept and getattr(layer.settings, setting, None)
            }
            stored.append(
                StoredLayer(
                    path, layer.kind, tuple(kept), shape[1], tuple(shape[2:]), engine.reversed.get(path, False), masks[path], activations
                )
            )
    traced_names = {name for call in engine.calls for path, traced in call.traces.items() if path in chosen for name in traced}
    unknown = [name for name in names if name not in traced_names]
    if unknown:
        raise SelectionError(
            f"no selected layer traces {unknown[0]!r}; expected some of: {', '.join(sorted(traced_names)) or 'none'} "
            "(GRU z, r, hh, h; LSTM i, f, cc, c, o, h; SimpleRNN h)"
        )
    _check_paths(stored)
    return stored


def _check_paths(stored: Sequence[StoredLayer]) -> None:
    """Each array's key is a folder of the store: a layer's names must not be another's path."""
    keys = {layer.array_path(name) for layer in stored for name in layer.names}
    for layer in stored:
        for key in keys:
            if key != layer.path and layer.path.startswith(key + "/"):
                raise ReplayError(f"layer {layer.path} lies under {key}, an array of another layer; the store cannot hold both")


# --- the task: one batch --------------------------------------------------------------------------


class BatchEngine:
    """A model read once and replayed on batch after batch (one per process: a Dask worker keeps it)."""

    def __init__(self, model: ModelFile, layers: ModelLayers, settings: StoreSettings) -> None:
        self.specs = input_specs(model)
        self.settings = settings
        chosen = frozenset(layer.path for layer in settings.layers)
        semantics = semantics_for(model.keras_version, model.format)
        self.replay = ModelReplay(model, layers, semantics, np.dtype(settings.dtype).type, trace=True, trace_only=chosen)
        # Two sets of trace arrays, used in turn: one batch is written from one while the next is traced into the other.
        self.buffers = (TraceBuffers(), TraceBuffers())

    def run(self, raw: Sequence[np.ndarray], where: str, index: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Batch `index`'s traced values (in the arrays of the set index % 2, valid until batch index + 2
        is run) and masks."""
        inputs = [fit_input(x, spec, where) for x, spec in zip(raw, self.specs)]
        self.replay.trace_buffers = self.buffers[index % 2]
        self.replay.run(inputs)
        values: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        wanted = {layer.path: layer for layer in self.settings.layers}
        for call in self.replay.calls:
            for path, traced in call.traces.items():
                layer = wanted.get(path)
                if layer is None:
                    continue
                for name in layer.names:
                    values[layer.array_path(name)] = traced[name]
                if layer.masked:
                    masks[path] = np.asarray(call.mask, bool)
        return values, masks


_ENGINES: dict[tuple[str, str | None, str, str], BatchEngine] = {}  # per process: a worker reads the model once


def _engine_for(job: Job) -> BatchEngine:
    from grucli.files.reader import read_model
    from grucli.model.layers import find_layers

    key = (job.model.path, job.model.config_path, job.model.fingerprint, job.store)
    if key not in _ENGINES:
        found = model_fingerprint(job.model.path, job.model.config_path, job.model.limits)
        if found != job.model.fingerprint:
            raise StoreError(f"{job.model.path} changed since the run began ({found}, not {job.model.fingerprint}); expected the same file")
        model = read_model(job.model.path, job.model.limits, job.model.config_path)
        _ENGINES.clear()  # one model a process: a worker serving another run lets the last one go
        _ENGINES[key] = BatchEngine(model, find_layers(model), job.settings)
    return _ENGINES[key]


@dataclass(frozen=True)
class ComputedBatch:
    """One batch's traced values and masks, not yet written."""

    index: int
    start: int
    stop: int
    values: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    fingerprint: str  # of the rows it was computed from


def compute_batch(job: Job, index: int, engine: BatchEngine) -> ComputedBatch:
    start, stop = job.settings.batch_rows(index)
    raw = job.dataset.read(start, stop)
    values, masks = engine.run(raw, f"rows {start}..{stop - 1} of {job.dataset.path}", index)
    return ComputedBatch(index, start, stop, values, masks, digest(raw))


def write_computed(job: Job, batch: ComputedBatch) -> str:
    write_batch(Path(job.store), job.settings, batch.start, batch.stop, batch.values, batch.masks)
    return batch.fingerprint


def run_batch(job: Job, index: int, engine: BatchEngine | None = None) -> str:
    """Computes and writes batch `index`; returns its data's fingerprint. The task a Dask worker runs."""
    return write_computed(job, compute_batch(job, index, engine or _engine_for(job)))


def run_batch_on_worker(job: Job, index: int) -> str:
    """`run_batch` on a Dask worker: BLAS and the compressor on one thread each, since the worker
    shares the machine's cores with the others (each worker is a process of its own)."""
    from grucli.engine.parallel import one_blas_thread
    from grucli.files.activation_store import one_compression_thread

    with one_blas_thread(), one_compression_thread():
        return run_batch(job, index)


# --- a run ------------------------------------------------------------------------------------------


def extract(
    model: ModelFile,
    layers: ModelLayers,
    dataset: Dataset,
    store: Path,
    options: ExtractOptions,
    limits: Limits,
    resume: bool = False,
    force: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Progressed | None = None,
) -> ActivationsReport:
    """Writes (or, with `resume`, completes) the store of `dataset`'s activations."""
    fingerprint = model_fingerprint(model.path, model.config_path, limits)
    _check_destination(store, dataset, model)
    if resume:
        kept = open_store(store, limits)
        if options.batch_size is not None and options.batch_size != kept.settings.batch_size:
            raise ResumeError(
                f"store {store} was written in batches of {kept.settings.batch_size} rows; --batch-size {options.batch_size} "
                "would chunk it otherwise: expected the same (or no) --batch-size"
            )
        settings = plan(model, layers, dataset, replace(options, batch_size=kept.settings.batch_size), fingerprint, limits)
        _check_resumable(kept, settings, dataset)
        state = list(kept.progress.digests)
    else:
        if store.exists() and not force:
            raise OutputError(f"{store} already exists; pass --force to replace it, or --resume to complete it")
        settings = plan(model, layers, dataset, options, fingerprint, limits)
        if store.is_dir() and not is_store(store):
            raise OutputError(
                f"{store} is a folder that is not a grucli store; expected a new path (--force replaces only a store or a file)"
            )
        create_store(store, settings, force)
        state = [None] * settings.batches
    source = ModelSource(model.path, model.config_path, limits, fingerprint)
    job = Job(source, dataset, str(store), settings)
    todo = [index for index, done in enumerate(state) if done is None]
    kept_count = settings.batches - len(todo)
    began = time.perf_counter()
    tracker = _Tracker(store, settings, state, progress)
    try:
        if scheduler is None and workers is None:
            _run_here(job, BatchEngine(model, layers, settings), todo, tracker)
            where = "this process"
        else:
            where = _run_on_dask(job, todo, tracker, scheduler, workers)
    finally:
        tracker.save()
    return ActivationsReport(str(store), settings, tracker.rows_complete, len(todo), kept_count, time.perf_counter() - began, where)


def _run_here(job: Job, engine: BatchEngine, todo: Sequence[int], tracker: _Tracker) -> None:
    """The batches in this process, each written on a thread while the next is computed: writing
    (compressing and storing four arrays of a GRU(256)) takes most of what computing takes, and the
    compressor and the file writes release the GIL. One batch is written at a time, in order.

    Meanwhile BLAS runs on one thread: the replay on one core and the writer on the other. With
    two BLAS threads the writer takes a core from them mid-product; on the 2-core VM a GRU(256)
    over 2,000 rows took 2.9 s so, 2.0 s with one (benchmarks/bench_activations.py)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from grucli.engine.parallel import one_blas_thread

    writing: tuple[int, Future[str]] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grucli-store-writer") as writer, one_blas_thread():
        try:
            for index in todo:
                computed = compute_batch(job, index, engine)
                if writing is not None:
                    tracker.done(writing[0], writing[1].result())
                writing = (index, writer.submit(write_computed, job, computed))
            if writing is not None:
                tracker.done(writing[0], writing[1].result())
                writing = None
        finally:
            # Stopped part way (Ctrl-C, an error): a batch whose write finished is kept, one still
            # being written is waited for and kept if it completed; nothing else is claimed.
            if writing is not None and writing[1].exception() is None:  # waits for the write; a failed one keeps nothing
                tracker.done(writing[0], writing[1].result())


def _check_destination(store: Path, dataset: Dataset, model: ModelFile) -> None:
    """The store must not be, or hold, the data or the model it is computed from."""
    target = store.resolve()
    for what, source in (("data", dataset.path), ("model", model.path)):
        resolved = Path(source).resolve()
        if resolved == target or target in resolved.parents:
            raise OutputError(f"the store {store} would replace the {what} {source}; expected another path for -o")


class _Tracker:
    """The run's progress: each finished batch's fingerprint, saved to the store now and then."""

    def __init__(self, store: Path, settings: StoreSettings, state: list[str | None], progress: Progressed | None) -> None:
        self.store, self.settings, self.state, self.progress = store, settings, state, progress
        self.saved_at = time.monotonic()
        # counted as batches finish, not summed over every batch each time (a run may have 10^5)
        self.rows_complete = sum(self._rows(index) for index, done in enumerate(state) if done is not None)

    def _rows(self, index: int) -> int:
        start, stop = self.settings.batch_rows(index)
        return stop - start

    def done(self, index: int, fingerprint: str) -> None:
        if self.state[index] is None:
            self.rows_complete += self._rows(index)
        self.state[index] = fingerprint
        if time.monotonic() - self.saved_at >= CHECKPOINT_SECONDS:
            self.save()
        if self.progress is not None:
            self.progress(self.rows_complete, self.settings.rows)

    def save(self) -> None:
        write_progress(self.store, Progress(tuple(self.state), self.rows_complete))
        self.saved_at = time.monotonic()


def _run_on_dask(job: Job, todo: Sequence[int], tracker: _Tracker, scheduler: str | None, workers: int | None) -> str:
    """The batches as tasks on a Dask distributed cluster: the one at `scheduler`, or a local one of
    `workers` processes (one thread each) started for this run and closed after it."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    try:
        if scheduler is not None:
            client = Client(scheduler, timeout="30s")
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    except OSError as exc:
        raise GrucliError(f"cannot reach the Dask scheduler {scheduler}: {exc}; expected the address of a running scheduler") from None
    try:
        # pure=False: a task whose job and index repeat must still run (after a resumed run, say).
        futures = [
            client.submit(run_batch_on_worker, job, index, pure=False, key=f"grucli-batch-{index}-{time.time_ns()}") for index in todo
        ]
        index_of = {future.key: index for future, index in zip(futures, todo)}
        try:
            for future in as_completed(futures):
                tracker.done(index_of[future.key], future.result())
        except BaseException:
            client.cancel(futures)
            raise
        return scheduler or f"a local Dask cluster of {counted(workers or 0, 'worker')}"
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def require_same_model(store: ActivationStore, model: ModelFile, limits: Limits) -> None:
    """A store is read with the model it was computed from (plot --trajectories, report)."""
    found = model_fingerprint(model.path, model.config_path, limits)
    expected = store.settings.model.get("sha256")
    if found != expected:
        raise ResumeError(
            f"store {store.path} was computed from {store.settings.model.get('path')} ({expected}); {model.path} is another "
            f"model ({found}): expected the model the store was computed from"
        )


def _check_resumable(kept: ActivationStore, settings: StoreSettings, dataset: Dataset) -> None:
    """A store is completed only by the run that began it: same model bytes, settings and data."""
    before, now = kept.settings.to_json(), settings.to_json()
    if before["model"]["sha256"] != now["model"]["sha256"]:
        raise ResumeError(
            f"store {kept.path} was written from a model with {before['model']['sha256']}; {settings.model['path']} has "
            f"{now['model']['sha256']}: expected the same model file"
        )
    # The data may have moved (its path is not compared): its rows' fingerprints are, below.
    before["data"], now["data"] = ({k: v for k, v in d.items() if k != "path"} for d in (before["data"], now["data"]))
    for key in ("keras_definitions", "dtype", "data", "rows", "batch_size", "layers"):
        if _comparable(before[key]) != _comparable(now[key]):
            raise ResumeError(
                f"store {kept.path} was written with {key} {_brief(before[key])}; this run has {_brief(now[key])}: "
                "expected the same settings (or start a new store)"
            )
    for index, expected in enumerate(kept.progress.digests):
        if expected is None:
            continue
        start, stop = settings.batch_rows(index)
        if digest(dataset.read(start, stop)) != expected:
            raise ResumeError(
                f"rows {start}..{stop - 1} of {dataset.path} differ from the rows store {kept.path} was computed from; "
                "expected the same data"
            )


def _comparable(value: Any) -> Any:
    """JSON as read back (lists, not tuples) and as written, compared alike."""
    import json

    return json.loads(json.dumps(value))


def _brief(value: Any) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
