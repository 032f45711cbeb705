"""Untrusted paths, checked before they are opened: regular files only (a FIFO blocks a read forever,
a device never ends), and files of a model folder inside that folder (a symlinked `variables/`
or data shard must not feed another file's bytes to grucli as weights); and where a TensorFlow checkpoint's
files are. Imports only errors.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from grucli.errors import GrucliError, ModelFileError


def regular_file_size(path: Path, what: str | None = None, error: type[GrucliError] = ModelFileError) -> int:
    """The size of the regular file `path`; anything else is refused as `error`, naming `what`
    (default: the path)."""
    what = what or str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} does not exist; expected a file") from None
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} is a directory; expected a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} is not a regular file (a FIFO, device or socket); expected a file")
    return info.st_size


def confined(path: Path, folder: Path) -> Path:
    """`path`, refused when it (through symlinks anywhere on the way) leads outside `folder`."""
    try:
        resolved, root = path.resolve(), folder.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ModelFileError(f"cannot resolve {path}: {exc}") from None
    if resolved != root and root not in resolved.parents:
        raise ModelFileError(
            f"{path} leads outside the model's folder {folder} (to {resolved}); grucli reads a model folder's own files only"
        )
    return path


def checkpoint_prefix(path: Path) -> Path | None:
    """The bundle prefix `path` names (the prefix, its `.index`, or a folder holding a `checkpoint`
    file or one `.index`), or None when `path` is not a checkpoint."""
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            with state.open("rb") as handle:  # a text proto of a few lines: never read past its first 64 KiB
                head = handle.read(65536)
            named = re.search(rb'^model_checkpoint_path:\s*"([^"\n]+)"', head, re.MULTILINE)
            if named:
                prefix = Path(named.group(1).decode("utf-8", "replace"))
                # The state file may name a prefix elsewhere (another machine's absolute path, or a crafted
                # `../`): only the folder's own files are read, so the name is taken within the folder.
                return path / prefix.name
        indexes = sorted(path.glob("*.index"))
        return indexes[0].with_suffix("") if len(indexes) == 1 else None
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    if not path.exists() and Path(f"{path}.index").is_file():
        return path
    return None
