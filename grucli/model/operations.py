"""What the replay and convert both read about a Keras 3 operation saved in a functional model
(`keras.ops` calls: `g * 2 + 1`, `x[:, -1]`, the NotEqual Keras 3 saves for a mask): how its call
is checked against what an implementation takes, and what an indexing key may hold.

May import: model/records, errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from grucli.errors import GrucliError
from grucli.model.records import RawLayer


def operation_settings(
    layer: RawLayer,
    path: str,
    settings: Sequence[str],
    arity: int,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    error: type[GrucliError],
    who: str,
) -> dict[str, Any]:
    """The op's own settings an implementation reads (`settings`), after refusing by name any other
    setting, any call keyword and a wrong count of positional arguments (`who`: the replay or convert)."""
    name = layer.class_name
    unused = sorted(set(layer.config) - {"name", *settings})
    if unused:
        raise error(f"operation {path} ({name}) has the setting {unused[0]}={layer.config[unused[0]]!r}, which {who} does not use")
    if kwargs:
        raise error(f"operation {path} ({name}) is called with {', '.join(sorted(kwargs))}, which {who} does not support")
    if len(args) != arity:
        raise error(f"operation {path} ({name}) is called with {len(args)} arguments; expected {arity}")
    return {key: layer.config[key] for key in settings if key in layer.config}


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _index_item(item: Any) -> bool:
    """An integer, a slice of integer bounds, `...` or None (a new axis)."""
    if isinstance(item, slice):
        return all(bound is None or _integer(bound) for bound in (item.start, item.stop, item.step))
    return item is None or item is Ellipsis or _integer(item)


def index_key(value: Any, where: str, error: type[GrucliError], who: str, is_tensor: Callable[[Any], bool]) -> Any:
    """The key of `x[key]` as NumPy takes it. Keras 3 saves a tuple key as a list of integers,
    slices, `...` and None (new axes); anything else (a tensor: gathering) is refused."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not _index_item(item):
            shown = "a tensor" if is_tensor(item) else repr(item)
            raise error(f"{where} indexes with {shown}; {who} runs integer, slice, ... and None indices")
    return tuple(items) if isinstance(value, (list, tuple)) else value
