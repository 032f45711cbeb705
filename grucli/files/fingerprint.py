"""A model file's fingerprint: SHA-256 of its bytes, so a store of activations names the exact file
it was computed from and a resumed run, a Dask worker or `probe` can tell another file apart.

A folder (a SavedModel) is hashed file by file in name order, each name with its bytes; a
TensorFlow checkpoint prefix with the files that start with it. Reads under the budget: the bytes
of every file together under --max-total-mb and the files under the entry limit.

May import: files/, errors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from grucli.errors import ModelFileError
from grucli.files.budget import Limits, size
from grucli.files.regular import regular_file_size

CHUNK = 1 << 20


def model_fingerprint(path: str | Path, config_path: str | Path | None, limits: Limits) -> str:
    """`sha256:<hex>` of the model's files (and of --config's, where given)."""
    hasher = hashlib.sha256()
    files = _files(Path(path), limits)
    if config_path is not None:
        files.append(("--config", Path(config_path)))
    total = 0
    for label, file in files:
        total += regular_file_size(file, f"model file {file}")
        if total > limits.max_total_bytes:
            raise ModelFileError(
                f"the files of {path} hold over {size(limits.max_total_bytes)}, the limit for a model's bytes; "
                "expected a smaller model (raise the limit with --max-total-mb)"
            )
        hasher.update(f"{label}\0".encode())  # a file's name within the model: a renamed copy hashes alike
        with file.open("rb") as handle:
            while block := handle.read(CHUNK):
                hasher.update(block)
    return f"sha256:{hasher.hexdigest()}"


def _files(path: Path, limits: Limits) -> list[tuple[str, Path]]:
    """The files of the model at `path`, each with its name within the model."""
    if path.is_file():
        return [("", path)]
    if path.is_dir():
        found = []
        for file in sorted(path.rglob("*")):
            if file.is_file() and not file.is_symlink():
                found.append((file.relative_to(path).as_posix(), file))
                if len(found) > limits.max_entries:
                    raise ModelFileError(f"{path} holds more than {limits.max_entries} files; expected a model folder")
        return found
    prefixed = sorted(file for file in path.parent.glob(glob_escape(path.name) + "*") if file.is_file())
    if not prefixed:
        raise ModelFileError(f"{path} does not exist; expected a model file")
    return [(file.name[len(path.name) :], file) for file in prefixed[: limits.max_entries]]


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
