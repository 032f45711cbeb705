"""Layer paths: how grucli names every layer it reports, and how `--layer` selects them.

A path is a layer's name; `NAME/forward` and `NAME/backward` are a Bidirectional layer's
directions; `OUTER/INNER` is a layer inside a nested model; `NAME/cell_K` is cell K of a stacked
RNN, and an RNN around one cell is reported at the RNN's own path. A `--layer` path selects that
layer and everything below it (`bi` selects `bi/forward` and `bi/backward`). inspect, export,
check, diff, replay and verify all name and select layers through this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SEPARATOR = "/"
FORWARD, BACKWARD = "forward", "backward"
CELL = "cell"  # the role of an RNN's single cell (reported at the RNN's own path)
_STACKED_CELL = "cell_"


def join(parent: str, name: str) -> str:
    """The path of `name` inside `parent` (the root has the empty path)."""
    return f"{parent}{SEPARATOR}{name}" if parent else name


def prefix(path: str) -> str:
    """What the paths of the layers inside `path` start with."""
    return f"{path}{SEPARATOR}" if path else ""


def direction(path: str, which: str) -> str:
    """`NAME/forward` or `NAME/backward` of a Bidirectional layer at `path`."""
    return join(path, which)


def stacked_cell_role(index: int) -> str:
    return f"{_STACKED_CELL}{index}"


def is_stacked_cell_role(role: str) -> bool:
    return role.startswith(_STACKED_CELL)


def enclosing(path: str) -> tuple[str, ...]:
    """The names of the layers `path` sits inside, outermost first (nested models, wrappers)."""
    return tuple(path.split(SEPARATOR)[:-1])


def last_name(path: str) -> str:
    return path.rsplit(SEPARATOR, maxsplit=1)[-1]


def selects(selector: str, path: str) -> bool:
    """Whether `--layer selector` selects the layer at `path`: that layer or one below it."""
    selector = selector.rstrip(SEPARATOR)
    return path == selector or path.startswith(selector + SEPARATOR)


def in_scope(path: str, selectors: Sequence[str]) -> bool:
    """Whether `path` is selected by any of `selectors` (all layers are when there are none)."""
    return not selectors or any(selects(selector, path) for selector in selectors)


def overlaps(selector: str, path: str) -> bool:
    """Whether the layer at `path` is selected or holds something selected (`bi` for `bi/forward`)."""
    return selects(selector, path) or selects(path, selector)


def index_number(text: str) -> int | None:
    """A layer index or cell number as a file writes it (`layer-3`, `cells/1`, `vars/0`): ASCII digits
    only, at most nine ("²".isdigit() is True, and int() of 5,000 digits raises), else None."""
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None
