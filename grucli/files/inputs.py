"""Model inputs: what shapes a model expects (from its config) and reading or making them.

`--input` takes `.npy` (never with pickles), `.npz` (named arrays, one per model input) and
`.csv` (one sequence, timesteps × features). Without it, a seeded random input is made;
inputs that feed an Embedding get integer ids below its vocabulary size.
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grucli.errors import GrucliError, ModelFileError
from grucli.files.budget import DEFAULT_LIMITS, Limits, size
from grucli.files.regular import regular_file_size
from grucli.model.records import ModelFile, RawLayer
from grucli.model.registry import is_input_layer, takes_token_ids
from grucli.model.spec import graph_spec


class InputError(GrucliError):
    """An input file that cannot be used for this model (the message says why)."""


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape without the batch axis (None = any), and vocabulary."""

    name: str
    shape: tuple[int | None, ...] | None  # None: the config declares none (an --input then gives it)
    vocabulary: int | None = None
    batch: int | None = None  # a fixed batch size: predict runs the input in batches of it
    undeclared: str | None = None  # why the shape is unknown, for the error a random input gets
    dtype: str | None = None  # the element type the input layer declares ("float32", "int32"), None where it declares none
    stateful: bool = False  # the model has stateful layers: they carry each row's state from one batch to the next

    def describe(self) -> str:
        if self.batch is None:
            batch = "batch"
        elif self.stateful:
            batch = f"batch of exactly {self.batch}"
        else:
            batch = f"batch a multiple of {self.batch}"
        if self.shape is None:
            return f"({batch}, ...) of any shape (the config declares none)"
        return f"({batch}, " + ", ".join("any" if d is None else str(d) for d in self.shape) + ")"

    def fits_batch(self, rows: int) -> bool:
        """Whether `rows` samples can be fed: any number; with a fixed batch, whole batches of it
        (predict splits them); with stateful layers too, exactly one batch (Keras would carry the
        state of one batch's rows into the next's, which a run from zero state does not)."""
        if self.batch is None:
            return True
        return rows == self.batch if self.stateful else rows > 0 and rows % self.batch == 0


def input_specs(model: ModelFile) -> list[InputSpec]:
    """The model's inputs as its config declares them (Keras 1, 2 and 3 configs; validated by the reader)."""
    spec = graph_spec(model.root, model.path)
    if spec.inputs:
        declaring = [spec.member(ref.layer) for ref in spec.inputs]
        missing = [ref.layer for ref, layer in zip(spec.inputs, declaring) if layer is None]
        if missing:
            raise ModelFileError(f"{model.path}: the config's input_layers name {missing[0]!r}, which is not among its layers")
        specs = [_spec(layer, next(iter(spec.consumers(layer.name)), None)) for layer in declaring if layer is not None]
    else:
        layers = [m for m in spec.members if not is_input_layer(m.class_name)]
        first_input = next((m for m in spec.members if is_input_layer(m.class_name)), None)
        if not layers:
            raise InputError("the model has no layers to feed")
        specs = [_spec(first_input or layers[0], layers[0])]
    stateful = _has_stateful_layer(model.root)
    return [dataclasses.replace(one, stateful=stateful) for one in specs] if stateful else specs


def _has_stateful_layer(layer: RawLayer) -> bool:
    return bool(layer.config.get("stateful")) or any(_has_stateful_layer(child) for _, child in layer.children)


def _spec(declaring: RawLayer, consumer: RawLayer | None) -> InputSpec:
    config = declaring.config
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    batch = None
    if shape is not None:
        if not shape:
            raise InputError(f"the config of {declaring.name} declares an empty batch shape; expected (batch, ...)")
        batch = shape[0]
        dims = tuple(None if d is None else int(d) for d in list(shape)[1:])
    elif "input_shape" in config:
        dims = tuple(None if d is None else int(d) for d in config["input_shape"])
    elif "input_dim" in config and not takes_token_ids(declaring.class_name):  # Keras 1
        dims = (config.get("input_length"), int(config["input_dim"]))
    else:
        return InputSpec(declaring.name, None, _vocabulary(consumer), None, _undeclared(declaring), _dtype(declaring))
    if any(d is not None and d < 1 for d in (batch, *dims)):
        declared = list(dims) if batch is None else [batch, *dims]
        raise InputError(f"the config of {declaring.name} declares input shape {declared}; expected positive dimensions")
    return InputSpec(declaring.name, dims, _vocabulary(consumer), batch, dtype=_dtype(declaring))


def _dtype(declaring: RawLayer) -> str | None:
    """The element type an input layer declares: a name ("int32"), or Keras 3's DTypePolicy naming one."""
    if not is_input_layer(declaring.class_name):
        return None  # a first layer's dtype is what it computes in, not what its input is
    value = declaring.config.get("dtype")
    if isinstance(value, Mapping):
        inner = value.get("config")
        value = inner.get("name") if isinstance(inner, Mapping) else None
    return value if isinstance(value, str) else None


def _vocabulary(consumer: RawLayer | None) -> int | None:
    if consumer is None or not takes_token_ids(consumer.class_name):
        return None
    vocabulary = consumer.config.get("input_dim")
    if vocabulary is None or vocabulary < 1:
        raise InputError(
            f"the config of Embedding {consumer.name} declares a vocabulary of {vocabulary} ids (input_dim); expected at least 1"
        )
    return int(vocabulary)


SHAPE_KEYS = ("batch_shape", "batch_input_shape", "input_shape")


def _undeclared(declaring: RawLayer) -> str:
    """Why a random input cannot be made: no shape, or one only on the layer a wrapper wraps.

    tf.keras 2 saved `TimeDistributed(Conv2D(..., input_shape=S))` with S on the inner layer, and
    whether S holds the time axis is the user's choice, so grucli does not guess: an --input
    (whose shape is the truth) replays such a model."""
    for _, inner in declaring.children:
        for key in SHAPE_KEYS:
            if key in inner.config:
                return (
                    f"the config of {declaring.name} declares no input shape, only its wrapped layer {inner.name} does "
                    f"({key} {inner.config[key]}), which may or may not include the time axis; pass --input"
                )
    return f"the config of {declaring.name} does not declare an input shape; pass --input"


def load_inputs(path: str | Path, specs: Sequence[InputSpec], limits: Limits = DEFAULT_LIMITS) -> list[np.ndarray]:
    """Read `path` and fit it to `specs`: add a batch axis to a single sequence, and so on."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".csv"):
        raise InputError(f"input {path} has suffix {suffix or '(none)'}; expected .npy, .npz or .csv")
    if suffix == ".csv":
        arrays = [read_csv(path, limits)]
    else:
        arrays = read_arrays(path, f"input {path}", limits)
        if suffix == ".npz":
            arrays = _npz_arrays(dict(zip(npz_names(path), arrays)), specs, path)
    if len(arrays) != len(specs):
        raise InputError(f"the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}); {path} holds {len(arrays)}")
    if suffix == ".csv":
        arrays = [_fit_csv(arrays[0], specs[0], path)]
    return [fit_input(array, spec, path) for array, spec in zip(arrays, specs)]


def regular_file(path: Path, what: str) -> int:
    """The size of an input file about to be read; FIFOs, devices and sockets are refused."""
    return regular_file_size(path, what, InputError)


def read_arrays(path: Path, what: str, limits: Limits) -> list[np.ndarray]:
    """The arrays of a `.npy` (one) or `.npz` (each member, in order), never unpickled, each header's
    declared size checked against --max-input-mb before any array is allocated: a 6 MB .npz can
    declare gigabytes, and NumPy allocates what a header declares before it reads."""
    regular_file(path, what)
    try:
        if path.suffix.lower() == ".npz":
            return _npz_members(path, what, limits)
        with path.open("rb") as handle:
            _charge_header(handle, what, limits.max_input_bytes)
            handle.seek(0)
            return [np.load(handle, allow_pickle=False)]
    except InputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{what} holds Python objects (pickle); grucli never unpickles input, expected a numeric array") from None
        raise InputError(f"{what} cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{what} cannot be read: {exc}") from None


def npz_names(path: Path) -> list[str]:
    """The array names of an .npz, as NumPy names them (member names without `.npy`)."""
    with zipfile.ZipFile(path) as archive:
        return [name.removesuffix(".npy") for name in archive.namelist()]


def _npz_members(path: Path, what: str, limits: Limits) -> list[np.ndarray]:
    left = limits.max_input_bytes
    arrays = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            member_what = f"{what} member {info.filename}"
            if info.file_size > left + NPY_HEADER_ROOM:  # what zipfile will inflate, whatever the header says
                raise InputError(
                    f"{member_what} inflates to {size(info.file_size)}, over what is left of the input limit "
                    f"({size(max(left, 0))}); expected a smaller input (raise the limit with --max-input-mb)"
                )
            with archive.open(info) as member:
                left -= _charge_header(member, member_what, left)
                member.seek(0)
                # Straight from the inflating member into the array: one copy of the input in memory.
                arrays.append(np.load(member, allow_pickle=False))
    return arrays


NPY_HEADER_ROOM = 65536  # an .npy header's own bytes, beside its array's


def npy_header(handle: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """An .npy header as NumPy's own parser reads it (any version; ValueError or EOFError where it
    is not one): shape, Fortran order, element type. Nothing past the header is read."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(shape), bool(fortran), dtype


def _charge_header(handle: Any, what: str, left: int) -> int:
    """The bytes an .npy header declares, refused when over what is `left` of the input budget."""
    shape, _, dtype = npy_header(handle)
    if dtype.hasobject:
        raise InputError(f"{what} holds Python objects (pickle); grucli never unpickles input, expected a numeric array")
    declared = math.prod(shape) * dtype.itemsize
    if declared > left:
        raise InputError(
            f"{what} declares shape {shape} of {dtype} ({size(declared)}), over what is left of the input limit "
            f"({size(max(left, 0))}); expected a smaller input (raise the limit with --max-input-mb)"
        )
    return declared


CSV_EXPANSION = 16  # parsed into lists of Python floats, CSV text takes about 16 times its size


def read_csv(path: Path, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """One sequence: a row per timestep, a column per feature, numbers separated by commas. A first
    row that is not all numbers is a header (feature names) and is skipped."""
    text_size = regular_file(path, f"input {path}")
    if text_size * CSV_EXPANSION > limits.max_input_bytes:
        raise InputError(
            f"input {path} is {size(text_size)} of CSV text, which parses into about {size(text_size * CSV_EXPANSION)}, "
            f"over the input limit of {size(limits.max_input_bytes)}; expected a smaller input, or .npy "
            "(raise the limit with --max-input-mb)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"input {path} is not UTF-8 text; expected a CSV of numbers (a row per timestep, a column per feature)") from None
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    if rows and not all(_is_number(cell) for cell in rows[0]):
        rows = rows[1:]  # a header row: feature names
    if not rows:
        raise InputError(f"input {path} holds no rows of numbers; expected a row per timestep and a column per feature")
    width = len(rows[0])
    values = []
    for number, row in enumerate(rows):
        if len(row) != width:
            raise InputError(
                f"input {path}: a row has {len(row)} values where the first has {width}; expected a row per timestep, "
                "each with one value per feature"
            )
        for cell in row:
            if not _is_number(cell):
                raise InputError(
                    f"input {path}: {cell.strip()!r} in row {number + 1} of the data is not a number; expected numbers only "
                    "(a header row may come first)"
                )
        values.append([float(cell) for cell in row])
    return np.array(values, dtype=np.float64)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _fit_csv(array: np.ndarray, spec: InputSpec, path: Path) -> np.ndarray:
    """A CSV is one sequence: say so when its rows and columns do not fit the model's input."""
    if spec.shape is None:
        raise InputError(
            f"input {path} is a CSV, but the model's input {spec.name} has no declared shape to fit it to; "
            "use .npy with the batch axis first"
        )
    if len(spec.shape) == 1 and array.shape[1] == 1:
        return array[:, 0]  # token ids, one per row, for an Embedding
    if len(spec.shape) != 2:
        raise InputError(
            f"input {path} is a CSV (a table: timesteps × features); the model's input {spec.name} expects "
            f"{spec.describe()}, which a table cannot hold; use .npy"
        )
    timesteps, features = spec.shape
    rows, columns = array.shape
    if (timesteps is None or timesteps == rows) and (features is None or features == columns):
        return array
    wanted_rows = "any number of rows" if timesteps is None else f"{timesteps} rows"
    hint = " (a single row of values is one timestep; put one value per line)" if rows == 1 and columns > 1 else ""
    raise InputError(
        f"input {path} has {rows} row{'s' if rows != 1 else ''} × {columns} column{'s' if columns != 1 else ''}; "
        f"each row is one timestep and each column one feature, so the model's input {spec.name} expects "
        f"{wanted_rows} of {features} column{'s' if features != 1 else ''}{hint}"
    )


def _npz_arrays(archive: Mapping[str, np.ndarray], specs: Sequence[InputSpec], path: Path) -> list[np.ndarray]:
    names = list(archive)
    if len(specs) == 1 and len(names) == 1:
        return [archive[names[0]]]
    if all(spec.name in names for spec in specs):
        return [archive[spec.name] for spec in specs]
    expected = ", ".join(spec.name for spec in specs)
    raise InputError(f"{path} holds arrays {', '.join(names) or 'none'}; expected one named after each model input: {expected}")


def fit_input(array: np.ndarray, spec: InputSpec, source: Path | str) -> np.ndarray:
    """Add the batch axis a single sequence lacks; check every fixed dimension."""
    if array.dtype.kind not in "biuf":
        raise InputError(f"input {source} has dtype {array.dtype}; expected numbers")
    if spec.shape is None:  # nothing declared: the input, batch axis first, is the shape
        if array.ndim < 2:
            raise InputError(
                f"input {source} has shape {array.shape}; the model's input {spec.name} declares no shape, "
                "so grucli expects the batch axis first and at least one more"
            )
        return _ids_or_values(array, spec, source)
    expected_rank = len(spec.shape) + 1
    if array.ndim == expected_rank - 1:
        array = array[None]
    elif array.ndim == 1 and expected_rank == 3 and spec.shape[-1] == 1:
        array = array.reshape(1, -1, 1)  # a bare series for a one-feature model
    if (
        array.ndim != expected_rank
        or any(d is not None and d != g for d, g in zip(spec.shape, array.shape[1:]))
        or not spec.fits_batch(array.shape[0])
    ):
        why = ""
        if array.ndim == expected_rank and spec.batch is not None and not spec.fits_batch(array.shape[0]):
            why = (
                " (its stateful layers carry each row's state from one batch to the next)"
                if spec.stateful
                else f" (the model fixes its batch: predict runs it in batches of {spec.batch})"
            )
        raise InputError(f"input {source} has shape {array.shape}; the model's input {spec.name} expects {spec.describe()}{why}")
    return _ids_or_values(array, spec, source)


def _ids_or_values(array: np.ndarray, spec: InputSpec, source: Path | str) -> np.ndarray:
    if spec.vocabulary is not None:
        if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
            raise InputError(f"input {source} feeds an Embedding and must hold integer ids; it holds fractions")
        if array.size and (array.min() < 0 or array.max() >= spec.vocabulary):
            raise InputError(
                f"input {source} holds ids {int(array.min())}..{int(array.max())}; the Embedding accepts 0..{spec.vocabulary - 1}"
            )
        return array.astype(np.int64)
    return array.astype(np.float32) if array.dtype.kind in "biu" else array


def model_inputs(
    model: ModelFile, path: str | Path | None, batch: int, timesteps: int, seed: int, limits: Limits = DEFAULT_LIMITS
) -> tuple[list[np.ndarray], str]:
    """The model's inputs, from `path` or seeded random ones, and how a report names them."""
    specs = input_specs(model)
    if path is not None:
        inputs = load_inputs(path, specs, limits)
        return inputs, f"{path} {', '.join(str(x.shape) for x in inputs)}"
    inputs = random_inputs(specs, batch, timesteps, seed, limits)
    description = f"random, seed {seed}, {', '.join(str(x.shape) for x in inputs)}"
    if any(spec.batch is not None for spec in specs):
        description += " (the model's fixed batch size)"
    return inputs, description


def random_inputs(specs: Sequence[InputSpec], batch: int, timesteps: int, seed: int, limits: Limits = DEFAULT_LIMITS) -> list[np.ndarray]:
    """Seeded random inputs of the model's shapes, bounded before any is made: a config may declare
    ten million timesteps, which no replay of a random probe needs."""
    for spec in specs:
        if spec.shape is None:
            raise InputError(spec.undeclared or f"the model's input {spec.name} declares no shape; pass --input")
    shapes = [(spec.batch or batch, *(timesteps if d is None else d for d in spec.shape or ())) for spec in specs]
    for spec, shape in zip(specs, shapes):
        if len(shape) > 1 and shape[1] > limits.max_timesteps:
            raise InputError(
                f"a random input for {spec.name} would have {shape[1]} timesteps (shape {shape}), over the limit of "
                f"{limits.max_timesteps}; pass --input, or raise the limit with --max-timesteps"
            )
    total = sum(math.prod(shape) for shape in shapes) * 8  # ids are int64, values float32: 8 bytes bounds both
    if total > limits.max_input_bytes:
        raise InputError(
            f"a random input of shapes {', '.join(map(str, shapes))} takes {size(total)}, over the input limit of "
            f"{size(limits.max_input_bytes)}; pass --input or a smaller --batch (or raise the limit with --max-input-mb)"
        )
    rng = np.random.default_rng(seed)
    arrays = []
    for spec, shape in zip(specs, shapes):
        if spec.vocabulary is not None:
            arrays.append(rng.integers(0, spec.vocabulary, size=shape))
        else:
            arrays.append(rng.normal(size=shape).astype(np.float32))
    return arrays
