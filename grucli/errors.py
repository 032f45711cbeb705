"""Exceptions a user can cause; the CLI turns each into one `Error: ...` line and exit code 2."""

from __future__ import annotations

import unicodedata


class GrucliError(Exception):
    """Base class: the message says what is wrong and what was expected."""


class ModelFileError(GrucliError):
    """The model file is missing, unreadable, corrupt, or not a Keras model file."""


class SelectionError(GrucliError):
    """A --layer, --gate or --unit option names something the model does not have."""


class OutputError(GrucliError):
    """An output file cannot be written (exists without --force, folder missing, ...)."""


class ReplayError(GrucliError):
    """The model holds something the replay engine cannot run (the message names it)."""


class VerifyError(GrucliError):
    """The model cannot be loaded or run by the framework (the message says why)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message, first line only, for an `Error:` line (its type if it says nothing)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def describe(exc: BaseException) -> str:
    """An exception as a short phrase for an error line: its type and first line."""
    return f"{type(exc).__name__}: {first_line(exc, 160)}" if str(exc).strip() else type(exc).__name__


def printable(text: str) -> str:
    """`text` with control and format characters escaped (`\\x1b`, `\\n`, `\\u202e`), for a terminal.

    Names come from files: a layer named with an escape sequence would otherwise clear the
    screen, retitle the window or split one `Error:` line into two, even in piped output."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(character if character.isprintable() or character == " " else _escape(character) for character in text)


def _escape(character: str) -> str:
    if unicodedata.category(character) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return character  # printable in a terminal though not by str.isprintable (other spaces)
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def install_hint(extra: str) -> str:
    """How to add an optional extra to this grucli. Run from a clone (an editable install, or the
    source tree on the path), `pip install 'grucli[verify]'` would fetch the published release
    beside it, not give this one its extra: then the clone's own path, with -e."""
    from pathlib import Path

    source = Path(__file__).resolve().parent.parent
    if (source / "pyproject.toml").is_file() and (source / "grucli" / "api.py").is_file():
        return f"pip install -e '{source}[{extra}]'"
    return f"pip install 'grucli[{extra}]'"
