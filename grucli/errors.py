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
