"""The Zarr store `grucli activations` writes and `probe`, `plot --trajectories` and `report` read.

Layout (docs/dynamics.md): one array per recurrent layer and traced name at
`<store>/<layer path>/<name>`, shape (rows, timesteps, units), chunked by the batches that wrote
them (rows) and by blocks of steps (a per-step probe reads one block of steps at a time);
`<store>/<layer path>/mask` (rows, timesteps) where the layer is masked, True at real steps, in
time order; `<store>/mask`, the first masked layer's mask. The group's attributes say which
model (its SHA-256), data, Keras definitions and dtype, each layer's names and step order, and
how far the run got: `rows_complete`, `complete`, and a fingerprint of each batch's data (a
resumed run checks the rows it keeps came from the same data).

Every array is created before the first batch is computed, and each batch writes whole chunks of
its own rows, so batches can be written in any order by any process (Dask workers) and a run
stopped part way leaves a store that says which rows it holds.

May import: numpy, zarr (on first use), files/, errors.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grucli.files.budget import Budget, Limits
from grucli.files.zarr_meta import StoreError, array_meta, group_attributes

FORMAT = "grucli-activations"
FORMAT_VERSION = 1
CHUNK_TARGET_BYTES = 8 << 20  # a chunk of about this size: few enough to write fast, small enough to read a few steps
MASKED_STEPS = (
    "mask[n, t] is False where step t of sequence n is masked, in time order. At a masked step a layer's gates hold what "
    "the cell computed from that step's input and its h (and c) the state carried over from the step before, as Keras "
    "carries it; the arrays of a go_backwards layer are in the order it consumed the steps (index p is time step T-1-p)."
)


@dataclass(frozen=True)
class StoredLayer:
    """One recurrent layer (or direction, or cell) in a store: what it traced, per step."""

    path: str
    kind: str
    names: tuple[str, ...]  # traced arrays kept: a GRU's z, r, hh, h; an LSTM's i, f, cc, c, o, h
    timesteps: int
    units: tuple[int, ...]  # the trailing shape of each traced value (units,), or (rows, cols, filters) for ConvLSTM2D
    reversed: bool  # go_backwards: its arrays run from the last step to the first
    masked: bool
    activations: Mapping[str, str] = field(default_factory=dict)  # traced name → the activation whose output it is

    def array_path(self, name: str) -> str:
        return f"{self.path}/{name}"

    @property
    def mask_path(self) -> str | None:
        return f"{self.path}/mask" if self.masked else None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "names": list(self.names),
            "timesteps": self.timesteps,
            "units": list(self.units),
            "order": "reversed" if self.reversed else "time",
            "mask": self.mask_path,
            "activations": dict(self.activations),
        }


@dataclass(frozen=True)
class StoreSettings:
    """Everything that decides a store's bytes: a resumed run must match it exactly."""

    model: Mapping[str, Any]  # path, sha256, keras_version, format
    keras_definitions: str
    dtype: str
    data: Mapping[str, Any]
    rows: int
    batch_size: int
    layers: tuple[StoredLayer, ...]

    @property
    def batches(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def batch_rows(self, index: int) -> tuple[int, int]:
        start = index * self.batch_size
        return start, min(self.rows, start + self.batch_size)

    def to_json(self) -> dict[str, Any]:
        masked = [layer for layer in self.layers if layer.masked]
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": dict(self.model),
            "keras_definitions": self.keras_definitions,
            "dtype": self.dtype,
            "data": dict(self.data),
            "rows": self.rows,
            "batch_size": self.batch_size,
            "layers": [layer.to_json() for layer in self.layers],
            "mask": f"the mask of {masked[0].path}" if masked else None,
            "masked_steps": MASKED_STEPS if masked else "no layer is masked: every step is real",
        }


@dataclass(frozen=True)
class Progress:
    """How far a run got: each batch's data fingerprint, None where the batch is not written."""

    digests: tuple[str | None, ...]
    rows_complete: int

    @property
    def complete(self) -> bool:
        return all(digest is not None for digest in self.digests)

    def to_json(self) -> dict[str, Any]:
        return {"rows_complete": self.rows_complete, "complete": self.complete, "batch_digests": list(self.digests)}


def time_chunk(batch_size: int, units: Sequence[int], itemsize: int, timesteps: int) -> int:
    """Steps per chunk: at most CHUNK_TARGET_BYTES a chunk of `batch_size` rows, the steps split
    into chunks of equal size (a last chunk of a few steps would be stored, and read, whole)."""
    per_step = batch_size * math.prod(units) * itemsize
    most = max(1, min(timesteps, CHUNK_TARGET_BYTES // max(per_step, 1)))
    return math.ceil(timesteps / math.ceil(timesteps / most))


def create_store(path: Path, settings: StoreSettings, force: bool) -> None:
    """A new store at `path` with every array of `settings` (filled with NaN, masks False) and
    no batch written; `force` replaces what is there (a store, or a file)."""
    import zarr
    from zarr.codecs import BloscCodec

    if path.exists() and force:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    root = zarr.open_group(str(path), mode="w-")
    # lz4 at level 1 with byte shuffle: float32 activations compress little whatever the codec
    # (1.06x for tanh values; 1.09x at lz4 level 5 for 1.25x its time, zstd 1.09x for 2.2x), and the
    # masked steps, repeats of one state, much; it keeps up with the replay (bench_activations.py).
    compressor = BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")
    dtype = np.dtype(settings.dtype)
    for layer in settings.layers:
        steps = time_chunk(settings.batch_size, layer.units, dtype.itemsize, layer.timesteps)
        for name in layer.names:
            root.create_array(
                layer.array_path(name),
                shape=(settings.rows, layer.timesteps, *layer.units),
                chunks=(settings.batch_size, steps, *layer.units),
                dtype=dtype,
                compressors=compressor,
                fill_value=np.nan,
                dimension_names=("sequence", "step", *("unit" if len(layer.units) == 1 else f"axis{k}" for k in range(len(layer.units)))),
            )
        if layer.masked:
            _mask_array(root, layer.mask_path or "", settings, layer.timesteps, compressor)
    masked = [layer for layer in settings.layers if layer.masked]
    if masked:
        _mask_array(root, "mask", settings, masked[0].timesteps, compressor)
    empty = Progress(tuple(None for _ in range(settings.batches)), 0)
    root.attrs.update({**settings.to_json(), **empty.to_json()})


def _mask_array(root: Any, name: str, settings: StoreSettings, timesteps: int, compressor: Any) -> None:
    root.create_array(
        name,
        shape=(settings.rows, timesteps),
        chunks=(settings.batch_size, timesteps),
        dtype=bool,
        compressors=compressor,
        fill_value=False,
        dimension_names=("sequence", "step"),
    )


def write_batch(
    path: Path,
    settings: StoreSettings,
    start: int,
    stop: int,
    values: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
) -> None:
    """Rows [start, stop) of each traced array (`{layer path}/{name}`) and of each layer's mask
    (time order, keyed by layer path)."""
    import zarr

    root: Any = zarr.open_group(str(path), mode="r+", use_consolidated=False)  # typed: its members are arrays here
    dtype = np.dtype(settings.dtype)
    first_masked = next((layer.path for layer in settings.layers if layer.masked), None)
    for layer in settings.layers:
        for name in layer.names:
            root[layer.array_path(name)][start:stop] = np.asarray(values[layer.array_path(name)], dtype)
        if layer.masked:
            root[layer.mask_path or ""][start:stop] = masks[layer.path]
            if layer.path == first_masked:
                root["mask"][start:stop] = masks[layer.path]


@contextmanager
def one_compression_thread() -> Iterator[None]:
    """Blosc on one thread for the duration (a Dask worker shares the cores with the others)."""
    from numcodecs import blosc

    previous = blosc.set_nthreads(1)
    try:
        yield
    finally:
        blosc.set_nthreads(previous)


def is_store(path: Path) -> bool:
    """Whether `path` is a folder holding a store of grucli's (what --force may replace)."""
    try:
        return group_attributes(path, Budget(Limits())).get("format") == FORMAT
    except StoreError:
        return False


def write_progress(path: Path, progress: Progress) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    root.attrs.update(progress.to_json())


@dataclass(frozen=True)
class ActivationStore:
    """A store read back: its settings, its progress and its arrays' checked metadata."""

    path: Path
    settings: StoreSettings
    progress: Progress
    attributes: Mapping[str, Any] = field(repr=False)

    def require_complete(self) -> None:
        """Refuse a store an interrupted run left: its missing rows hold NaN, not activations."""
        if not self.progress.complete:
            raise StoreError(
                f"store {self.path} holds {self.progress.rows_complete} of {self.settings.rows} rows (its run was interrupted); "
                "expected a complete store: run the same activations command with --resume"
            )

    def layer(self, path: str) -> StoredLayer:
        for layer in self.settings.layers:
            if layer.path == path:
                return layer
        available = ", ".join(layer.path for layer in self.settings.layers)
        raise StoreError(f"store {self.path} holds no layer {path!r}; expected one of: {available}")

    def array(self, key: str) -> Any:
        """The zarr array at `key` (`{layer path}/{name}`, `{layer path}/mask`), checked first."""
        import zarr

        return zarr.open_array(str(self.path / key), mode="r")

    def read(self, key: str, rows: slice, steps: slice | None = None) -> np.ndarray:
        array = self.array(key)
        return np.asarray(array[rows] if steps is None else array[rows, steps])

    def mask(self, layer: StoredLayer, rows: slice) -> np.ndarray:
        """Real steps of `layer` for `rows`, in time order (all True where the layer is not masked)."""
        if layer.mask_path is None:
            return np.ones((rows.stop - rows.start, layer.timesteps), bool)
        return self.read(layer.mask_path, rows)


def open_store(path: str | Path, limits: Limits) -> ActivationStore:
    """The store at `path`, its attributes and every array's metadata checked: a store from
    elsewhere is untrusted, and zarr opens only arrays whose codecs store numbers (`zarr_meta`)."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise StoreError(f"store {path} {what}; expected the Zarr store `grucli activations` wrote")
    budget = Budget(limits)
    attributes = group_attributes(path, budget)
    if attributes.get("format") != FORMAT:
        raise StoreError(f"{path} is a Zarr group but not one grucli wrote; expected a store of `grucli activations`")
    if attributes.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"store {path} has format version {attributes.get('format_version')!r}; this grucli reads version {FORMAT_VERSION}"
        )
    settings = _settings(path, attributes)
    progress = _progress(path, attributes, settings)
    budget.entries(sum(len(layer.names) + 1 for layer in settings.layers), f"store {path}")
    for layer in settings.layers:
        for key in (*(layer.array_path(name) for name in layer.names), *([layer.mask_path] if layer.mask_path else [])):
            _check_array(path, key, settings, layer, budget, limits)
    return ActivationStore(path, settings, progress, attributes)


def _check_array(path: Path, key: str, settings: StoreSettings, layer: StoredLayer, budget: Budget, limits: Limits) -> None:
    meta = array_meta(path / key, budget, limits.max_input_bytes)
    is_mask = key.endswith("/mask") and key == layer.mask_path
    expected_shape = (settings.rows, layer.timesteps) if is_mask else (settings.rows, layer.timesteps, *layer.units)
    expected_dtype = np.dtype(bool) if is_mask else np.dtype(settings.dtype)
    if meta.shape != expected_shape or meta.dtype != expected_dtype:
        raise StoreError(f"store {path}: array {key} is {meta.shape} {meta.dtype}; its attributes say {expected_shape} {expected_dtype}")


def _settings(path: Path, attributes: Mapping[str, Any]) -> StoreSettings:
    try:
        layers = tuple(_layer(entry) for entry in _list(attributes, "layers"))
        settings = StoreSettings(
            model=_mapping(attributes, "model"),
            keras_definitions=_text(attributes, "keras_definitions"),
            dtype=_text(attributes, "dtype"),
            data=_mapping(attributes, "data"),
            rows=_count(attributes, "rows"),
            batch_size=_count(attributes, "batch_size"),
            layers=layers,
        )
    except _Malformed as exc:
        raise StoreError(f"store {path}: its attributes are damaged ({exc}); expected what `grucli activations` writes") from None
    if settings.dtype not in ("float32", "float64") or settings.batch_size < 1 or not layers:
        raise StoreError(
            f"store {path}: its attributes are damaged (dtype, batch_size or layers); expected what `grucli activations` writes"
        )
    return settings


def _progress(path: Path, attributes: Mapping[str, Any], settings: StoreSettings) -> Progress:
    digests = attributes.get("batch_digests")
    rows = attributes.get("rows_complete")
    if (
        not isinstance(digests, list)
        or len(digests) != settings.batches
        or not all(d is None or (isinstance(d, str) and len(d) == 32) for d in digests)
        or type(rows) is not int
    ):
        raise StoreError(f"store {path}: its progress attributes are damaged; expected what `grucli activations` writes")
    return Progress(tuple(digests), rows)


class _Malformed(Exception):
    """An attribute of the wrong kind (caught in _settings, reported as a damaged store)."""


def _layer(entry: Any) -> StoredLayer:
    if not isinstance(entry, dict):
        raise _Malformed("a layer entry is not an object")
    names = _list(entry, "names")
    units = _list(entry, "units")
    if not all(isinstance(n, str) and n and "/" not in n and n != "mask" for n in names) or not names:
        raise _Malformed("layer names")
    if not all(type(u) is int and u > 0 for u in units) or not units:
        raise _Malformed("layer units")
    order = entry.get("order")
    if order not in ("time", "reversed"):
        raise _Malformed("layer order")
    path = _text(entry, "path")
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise _Malformed(f"layer path {path!r}")
    activations = entry.get("activations", {})
    if not isinstance(activations, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in activations.items()):
        raise _Malformed("layer activations")
    return StoredLayer(
        path,
        _text(entry, "kind"),
        tuple(names),
        _count(entry, "timesteps"),
        tuple(units),
        order == "reversed",
        entry.get("mask") is not None,
        activations,
    )


def _list(source: Mapping[str, Any], key: str) -> list[Any]:
    value = source.get(key)
    if not isinstance(value, list):
        raise _Malformed(f"{key} is not a list")
    return value


def _mapping(source: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = source.get(key)
    if not isinstance(value, dict):
        raise _Malformed(f"{key} is not an object")
    return value


def _text(source: Mapping[str, Any], key: str) -> str:
    value = source.get(key)
    if not isinstance(value, str):
        raise _Malformed(f"{key} is not text")
    return value


def _count(source: Mapping[str, Any], key: str) -> int:
    value = source.get(key)
    if type(value) is not int or value < 0:
        raise _Malformed(f"{key} is not a count")
    return value
