"""A Keras file written with new weights in the places of its old ones (`convert SOURCE --into TARGET`).

The output is the target file itself, copied, with the values of the named datasets replaced:
a `.keras` zip keeps its config.json and metadata.json byte for byte and gets a new
model.weights.h5; a legacy `.h5` (full model or save_weights) or a `.weights.h5` is copied and its
datasets overwritten. Shapes must be the stored ones; values are cast to the stored dtype. Nothing
is written outside the output's folder: the new file is made beside the output under a temporary
name and renamed into place, so an interrupted run leaves nothing behind.

May import: h5py, numpy, files/regular, errors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from grucli.errors import ModelFileError, OutputError


def write_with_weights(target: Path, output: Path, values: Mapping[str, np.ndarray], force: bool = False) -> None:
    """`target` copied to `output` with each HDF5 dataset named in `values` (its path inside the
    weights file, `/layers/gru/cell/vars/0` or `/model_weights/gru/gru/kernel:0`) set to its array."""
    if output.exists() and not force:
        raise OutputError(f"{output} already exists; pass --force to overwrite it")
    if output.resolve() == target.resolve():
        raise OutputError(f"{output} is the target file itself; write the port to a new file")
    if not output.parent.is_dir():
        raise OutputError(f"cannot write {output}: folder {output.parent} does not exist")
    with _temporary_beside(output) as scratch:
        if zipfile.is_zipfile(target):
            _write_keras_zip(target, scratch, values)
        else:
            shutil.copyfile(target, scratch)
            _overwrite(scratch, values, str(target))
        os.replace(scratch, output)


@contextlib.contextmanager
def _temporary_beside(output: Path) -> Iterator[Path]:
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _write_keras_zip(target: Path, scratch: Path, values: Mapping[str, np.ndarray]) -> None:
    with zipfile.ZipFile(target) as archive, _temporary_beside(scratch) as weights:
        weights.write_bytes(archive.read("model.weights.h5"))
        _overwrite(weights, values, f"{target}: model.weights.h5")
        with zipfile.ZipFile(scratch, "w") as written:
            for info in archive.infolist():
                data = weights.read_bytes() if info.filename == "model.weights.h5" else archive.read(info)
                written.writestr(info, data, compress_type=info.compress_type)


def _overwrite(path: Path, values: Mapping[str, np.ndarray], where: str) -> None:
    with h5py.File(path, "r+") as handle:
        for name, array in values.items():
            dataset = handle.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise ModelFileError(f"{where} has no dataset {name}; the target changed while it was read")
            value = np.asarray(array)
            if tuple(dataset.shape) != value.shape:
                raise ModelFileError(f"{where}: dataset {name} holds {tuple(dataset.shape)}; the ported array is {value.shape}")
            dataset[...] = value.astype(dataset.dtype)
