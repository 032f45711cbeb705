"""Exceptions a user can cause; the CLI turns each into one `Error: ...` line and exit code 2."""

from __future__ import annotations


class GrucliError(Exception):
    """Base class: the message says what is wrong and what was expected."""


class ModelFileError(GrucliError):
    """The model file is missing, unreadable, corrupt, or not a Keras model file."""


class SelectionError(GrucliError):
    """A --layer, --gate or --unit option names something the model does not have."""


class OutputError(GrucliError):
    """An output file cannot be written (exists without --force, folder missing, ...)."""


class VerifyError(GrucliError):
    """The model cannot be loaded or run by the framework (the message says why)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message, first line only, for an `Error:` line (its type if it says nothing)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def describe(exc: BaseException) -> str:
    """An exception as a short phrase for an error line: its type and first line."""
    return f"{type(exc).__name__}: {first_line(exc, 160)}" if str(exc).strip() else type(exc).__name__
