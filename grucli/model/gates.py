"""Gate layouts of Keras recurrent layers: which columns belong to which gate, and conversions
from the layouts older files use (CuDNN layers, Keras 1 per-gate arrays) to the canonical one.

Canonical (current Keras `get_weights()`): gate blocks of width `units` side by side in the last
axis, GRU `[z | r | h]`, LSTM and ConvLSTM `[i | f | c | o]`, SimpleRNN a single block `h`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from grucli.errors import ModelFileError
from grucli.model.records import ArraySpec, NamedArray, RecurrentLayer
from grucli.model.registry import family_of
from grucli.model.stats import CHUNK_BYTES, ArrayStats, StatsAccumulator, row_chunks

ARRAY_NAMES = ("kernel", "recurrent_kernel", "bias", "recurrent_bias")


def gate_names(kind: str) -> tuple[str, ...]:
    return family_of(kind).gates


def gate_meaning(kind: str, gate: str) -> str:
    return family_of(kind).meaning(gate)


def gate_columns(kind: str, units: int, gate: str) -> slice:
    """The columns of the canonical kernel, recurrent kernel and bias that hold `gate`."""
    index = gate_names(kind).index(gate)
    return slice(index * units, (index + 1) * units)


def columns_of_units(kind: str, units: int, part: slice, order: Sequence[str] | None = None) -> np.ndarray:
    """The columns that hold the units `part` (a range of 0..units), gate after gate in `order`
    (the canonical one by default): for an LSTM's units 0..1 of 4, [0, 1, 4, 5, 8, 9, 12, 13]
    (i, f, c, o); in the order "ifoc", [0, 1, 4, 5, 12, 13, 8, 9]."""
    return np.concatenate([np.arange(units)[part] + gate_columns(kind, units, gate).start for gate in order or gate_names(kind)])


def slice_gates(layer: RecurrentLayer) -> dict[str, dict[str, np.ndarray]]:
    """Per gate, the arrays `kernel`, `recurrent_kernel`, `bias` and (GRU reset_after) `recurrent_bias`."""
    return {gate: {name: gate_array(layer, gate, name) for name in gate_array_names(layer)} for gate in gate_names(layer.kind)}


# A layer whose arrays hold less than this is read whole once, then sliced by gate: many small
# reads of column slices cost more than one read (a zip-stored .keras reads in small pieces).
READ_WHOLE_BELOW = 64 * 2**20


def gate_arrays_by_gate(layer: RecurrentLayer) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(gate, its arrays) for each gate in turn: a small layer read once, a big one a gate's
    columns at a time (never all its gates in memory)."""
    names = gate_array_names(layer)
    size = sum(int(np.prod(np.shape(array))) * 8 for array in (layer.kernel, layer.recurrent_kernel))
    if size >= READ_WHOLE_BELOW:
        for gate in gate_names(layer.kind):
            yield gate, {name: gate_array(layer, gate, name) for name in names}
        return
    whole = {"kernel": np.asarray(layer.kernel), "recurrent_kernel": np.asarray(layer.recurrent_kernel)}
    bias = None if layer.bias is None else np.asarray(layer.bias)
    for gate in gate_names(layer.kind):
        columns = gate_columns(layer.kind, layer.units, gate)
        arrays = {name: whole[name][..., columns] for name in ("kernel", "recurrent_kernel")}
        if bias is not None:
            arrays["bias"] = bias[0, columns] if bias.ndim == 2 else bias[columns]
            if "recurrent_bias" in names:
                arrays["recurrent_bias"] = bias[1, columns]
        yield gate, arrays


def gate_array_names(layer: RecurrentLayer) -> tuple[str, ...]:
    if layer.bias is None:
        return ("kernel", "recurrent_kernel")
    return ARRAY_NAMES if layer.bias.ndim == 2 else ARRAY_NAMES[:3]


def gate_array(layer: RecurrentLayer, gate: str, name: str, unit: int | None = None) -> np.ndarray:
    """One gate's array (or one unit's column of it), reading from the file only that part."""
    columns = gate_columns(layer.kind, layer.units, gate)
    index: slice | int = columns if unit is None else columns.start + unit
    if name == "kernel":
        return np.asarray(layer.kernel[..., index])
    if name == "recurrent_kernel":
        return np.asarray(layer.recurrent_kernel[..., index])
    if layer.bias is None:
        raise KeyError(name)
    if name == "recurrent_bias":
        return np.asarray(layer.bias[1, index])
    return np.asarray(layer.bias[0, index] if layer.bias.ndim == 2 else layer.bias[index])


def gate_stats(layer: RecurrentLayer) -> dict[tuple[str, str], ArrayStats]:
    """Statistics of every gate's arrays in one pass over each matrix, a block of rows at a time.

    Two workers reduce the two halves of each block while the next block is read (NumPy's
    copies and reductions release the GIL); each keeps its own accumulators, merged at the end.
    """
    names = gate_names(layer.kind)
    columns = {gate: gate_columns(layer.kind, layer.units, gate) for gate in names}
    keys = [(gate, name) for gate in names for name in gate_array_names(layer)]
    workers = [{key: StatsAccumulator() for key in keys} for _ in range(STATS_WORKERS)]

    def reduce_rows(accumulators: dict[tuple[str, str], StatsAccumulator], rows: np.ndarray, name: str) -> None:
        for gate in names:
            accumulators[(gate, name)].update(rows[..., columns[gate]])

    matrices = (("kernel", layer.kernel), ("recurrent_kernel", layer.recurrent_kernel))
    if all(matrix.nbytes <= CHUNK_BYTES for _, matrix in matrices):
        # One block each: starting threads would cost more than the reduction.
        for name, matrix in matrices:
            reduce_rows(workers[0], np.asarray(matrix), name)
        return _merged_stats(layer, workers)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=STATS_WORKERS) as pool:
        for name, matrix in matrices:
            pending: list = []
            for chunk in row_chunks(matrix):
                for future in pending:
                    future.result()
                halves = np.array_split(chunk, STATS_WORKERS) if len(chunk) >= STATS_WORKERS else [chunk]
                pending = [pool.submit(reduce_rows, workers[i], half, name) for i, half in enumerate(halves)]
            for future in pending:
                future.result()
    return _merged_stats(layer, workers)


def _merged_stats(layer: RecurrentLayer, workers: Sequence[dict[tuple[str, str], StatsAccumulator]]) -> dict[tuple[str, str], ArrayStats]:
    names = gate_names(layer.kind)
    merged = workers[0]
    for other in workers[1:]:
        for key, accumulator in other.items():
            merged[key].merge(accumulator)
    for gate in names:
        for name in gate_array_names(layer)[2:]:
            merged[(gate, name)].update(gate_array(layer, gate, name))
    return {key: accumulator.result() for key, accumulator in merged.items()}


STATS_WORKERS = 2


def from_cudnn(kind: str, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CuDNNGRU / CuDNNLSTM weights to the canonical layout (tf-keras's `_convert_rnn_weights`).

    Per gate block, cuDNN stores the input kernel transposed in Fortran order and the recurrent
    kernel transposed. CuDNNLSTM keeps separate input and recurrent biases (8u,) whose sum is
    the LSTM bias; CuDNNGRU's (6u,) bias is the (2, 3u) bias of a reset_after=True GRU.
    """
    family = family_of(kind)
    n_gates = len(family.gates)
    canonical_kernel = np.hstack([block.T.reshape(block.shape, order="F") for block in np.hsplit(kernel, n_gates)])
    canonical_recurrent = np.hstack([block.T for block in np.hsplit(recurrent, n_gates)])
    if family.cudnn_bias == "sum":
        canonical_bias = np.sum(np.split(bias, 2, axis=0), axis=0)
    else:
        canonical_bias = np.asarray(bias).reshape((2, -1))
    return canonical_kernel, canonical_recurrent, canonical_bias


def from_keras1(kind: str, arrays: Sequence[NamedArray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keras 1 per-gate arrays (`W_z, U_z, b_z, ...`) to the canonical kernel, recurrent kernel, bias.

    Arrays are matched by their `W_<gate>` / `U_<gate>` / `b_<gate>` name suffixes when every
    one has them, else taken in Keras 1's stored order (W, U, b per gate).
    """
    stored_gates = family_of(kind).keras1_stored_gates
    assert stored_gates is not None, kind  # canonical_layer reads Keras 1 arrays only for such families
    by_role = _keras1_by_suffix(arrays, stored_gates) or _keras1_by_order(arrays, stored_gates)
    canonical = gate_names(kind)
    return tuple(  # type: ignore[return-value]
        np.concatenate([by_role[(role, gate)] for gate in canonical], axis=-1) for role in ("W", "U", "b")
    )


def _keras1_by_suffix(arrays: Sequence[NamedArray], gates: Sequence[str]) -> dict[tuple[str, str], np.ndarray] | None:
    found: dict[tuple[str, str], np.ndarray] = {}
    for weight in arrays:
        stem = weight.name.split(":")[0]
        for role in ("W", "U", "b"):
            for gate in gates:
                if stem.endswith(f"_{role}_{gate}") or stem == f"{role}_{gate}":
                    found[(role, gate)] = weight.array
    return found if len(found) == 3 * len(gates) else None


def _keras1_by_order(arrays: Sequence[NamedArray], gates: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
    found = {}
    for index, gate in enumerate(gates):
        for offset, role in enumerate(("W", "U", "b")):
            found[(role, gate)] = arrays[3 * index + offset].array
    return found


def describe_layout(layer: RecurrentLayer) -> list[str]:
    """The layout and equations of a layer in words, for the places people get them wrong."""
    units = layer.units
    names = gate_names(layer.kind)
    blocks = ", ".join(f"[{i * units}:{(i + 1) * units}] {g} ({gate_meaning(layer.kind, g)})" for i, g in enumerate(names))
    lines = [f"columns of kernel, recurrent_kernel and bias: {blocks}"]
    if layer.family.two_row_bias and layer.bias is not None and layer.bias.ndim == 2:
        lines.append(
            f"bias {tuple(layer.bias.shape)} (reset_after=True): row 0 is the input bias (added to x·W), "
            "row 1 the recurrent bias (added to h_prev·U); listed per gate as bias and recurrent_bias"
        )
    return lines + list(layer.family.equation_notes)


def gate_export(layers: Sequence[RecurrentLayer]) -> tuple[list[ArraySpec], Iterator[tuple[int, np.ndarray]]]:
    """Every gate slice as an array to write, and the pieces that fill them.

    Keys are `{layer path}/{gate}/{array}`. Pieces are (index into the specs, next rows of that
    slice): each weight matrix is read once, a block of rows at a time, and every block is cut
    into its gates' columns, so memory stays at one block however large the layer.
    """
    specs: list[ArraySpec] = []
    indices: list[dict[tuple[str, str], int]] = []
    for layer in layers:
        indices.append({})
        matrices = {"kernel": layer.kernel, "recurrent_kernel": layer.recurrent_kernel}
        for gate in gate_names(layer.kind):
            for name in gate_array_names(layer):
                if name in matrices:  # a gate's columns of every row
                    shape, dtype = (*matrices[name].shape[:-1], layer.units), matrices[name].dtype
                else:  # one row of the bias (gate_array_names lists bias arrays only for a layer that has one)
                    assert layer.bias is not None
                    shape, dtype = (layer.units,), layer.bias.dtype
                indices[-1][(gate, name)] = len(specs)
                specs.append(ArraySpec(f"{layer.path}/{gate}/{name}", tuple(shape), np.dtype(dtype)))
    return specs, _gate_pieces(layers, indices)


def _gate_pieces(layers: Sequence[RecurrentLayer], indices: Sequence[Mapping[tuple[str, str], int]]) -> Iterator[tuple[int, np.ndarray]]:
    for layer, index in zip(layers, indices, strict=True):
        names = gate_names(layer.kind)
        columns = {gate: gate_columns(layer.kind, layer.units, gate) for gate in names}
        for name, matrix in (("kernel", layer.kernel), ("recurrent_kernel", layer.recurrent_kernel)):
            for rows in row_chunks(matrix):
                for gate in names:
                    yield index[(gate, name)], rows[..., columns[gate]]
        for gate in names:
            for name in gate_array_names(layer)[2:]:
                yield index[(gate, name)], gate_array(layer, gate, name)


def unit_columns(array: np.ndarray) -> np.ndarray:
    """A gate array as (rows, units): each unit's weights are one column (also for 0 units)."""
    array = np.asarray(array)
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(1, -1) if array.size else array.reshape(1, 0)
    return array.reshape(int(np.prod(array.shape[:-1])), array.shape[-1])


def keras1_conv1d_sizes(config: Mapping[str, Any], where: str) -> tuple[int, int]:
    """A Keras 1 Convolution1D's nb_filter and filter_length, positive integers."""
    filters, window = config.get("nb_filter"), config.get("filter_length")
    if (
        not (isinstance(filters, int) and isinstance(window, int))
        or isinstance(filters, bool)
        or isinstance(window, bool)
        or min(filters, window) < 1
    ):
        raise ModelFileError(
            f"layer {where} (Convolution1D) has nb_filter={filters!r}, filter_length={window!r}; expected positive integers"
        )
    return filters, window


def keras1_conv1d_kernel(kernel: np.ndarray, filters: int, window: int) -> np.ndarray:
    """A Keras 1 Convolution1D kernel as Conv1D's (window, input_dim, filters), as Keras 2's loader
    converts it (any other shape is returned as stored, for the shape check to name)."""
    if kernel.ndim == 4 and kernel.shape[:2] == (window, 1) and kernel.shape[3] == filters:  # Keras 1.2
        return kernel[:, 0]
    if kernel.ndim == 4 and kernel.shape[0] == filters and kernel.shape[2:] == (window, 1):  # Keras 1.1
        return np.transpose(kernel, (2, 3, 1, 0))[:, 0]
    return kernel
