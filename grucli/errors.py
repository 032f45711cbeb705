"""Exceptions a user can cause; the CLI turns each into one `Error: ...` line and exit code 2."""

from __future__ import annotations

import re
import unicodedata


class GrucliError(Exception):
    """Base class: the message says what is wrong and what was expected."""


class StoppedPartWay(BaseException):
    """Ctrl-C or SIGTERM ended a run that leaves resumable work behind (activations): the message
    says what it left, the CLI prints it and exits with `code` (130, 143)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Keras 3 sets its messages in bold
_TRACEBACK_FRAME = re.compile(r'^File ".*", line \d+')
_NOISE = ("in user code:", "Traceback (most recent call last):")
_ARGUMENT_LISTS = ("Call arguments received by", "Arguments received by")


def framework_cause(exc: BaseException, limit: int = 400) -> str:
    """A framework's error as one line that keeps its cause: TensorFlow wraps a failed predict in
    "in user code:", a traceback of its own functions and the call's arguments, with the reason
    last ("Input 0 of layer "gru" is incompatible ...: expected shape=(512, None, 26), found
    shape=(32, 25, 26)"). The traceback and the argument list are dropped; the reason block Keras
    heads with "Exception encountered when calling ..." is kept whole, else the last two lines."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines()]
    kept: list[str] = []
    skip_code = False
    for line in lines:
        if line.startswith(_ARGUMENT_LISTS):
            break  # what follows lists the call's arguments (• inputs=..., • mask=None), not the cause
        if skip_code:
            skip_code = False
            continue
        if _TRACEBACK_FRAME.match(line):
            skip_code = True  # the frame's line of code follows it
            continue
        if line and line not in _NOISE and not line.startswith("raise "):
            kept.append(line)
    if not kept:
        return first_line(exc, limit)
    # Keras's "Exception encountered when calling ..." heads the reason block that follows it.
    headers = [index for index, line in enumerate(kept) if "Exception encountered" in line]
    cause = " ".join(kept[headers[-1] :] if headers else kept[-2:])
    return cause if len(cause) <= limit else "…" + cause[-(limit - 1) :]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """ "1 unit", "4 units" ("2 batches" with `plural`): a count and its noun, in the singular where there is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"


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


class MissingExtra(GrucliError):
    """A command needs a package of an optional extra that is not installed."""


def require_extra(modules: tuple[str, ...], extra: str, who: str) -> None:
    """Refuse, naming the extra to install, when any of `modules` cannot be imported."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(f"{who} needs {', '.join(missing)}, of the optional extra {extra!r}; install it with: {install_hint(extra)}")
