"""PyTorch files (`torch.save`) read without PyTorch, and without running anything they hold.

`torch.save(model.state_dict(), PATH)` writes a zip: `<folder>/data.pkl`, a pickle that rebuilds
the tensors, and `<folder>/data/<key>`, each storage's raw bytes (the folder is `archive` in older
releases, the file's stem in newer ones; the file name can be anything: `.pt`, `.pth`, `.tar`, `.bin`).
A pickle can call any Python function it names, so it is never given to Python's unpickler: a small
interpreter of grucli's own runs the opcodes a state_dict uses (strings, numbers, tuples, dicts,
the memo), each checked, and answers the few names a tensor state_dict needs
(`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and `_rebuild_parameter`, the
storage classes), as `torch.load(weights_only=True)` allows them, with stand-ins that build
NumPy arrays; any other name (`os.system`, `builtins.eval`, a model's class in a pickled module)
or opcode is refused by name, and nothing the file names is imported or called. Persistent ids
name storages, which are read from the zip after their size is charged to the read's budget;
every tensor's view (offset, shape, strides) is checked to lie inside its storage before an
array is made.

TorchScript archives and whole pickled modules (`torch.save(model)`) are refused with the advice to
save `state_dict()`; so is the legacy format of PyTorch before 1.6 (not a zip).

May import: numpy, files/budget, files/regular, errors.
"""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grucli.errors import ModelFileError, first_line
from grucli.files.budget import Budget, check_shape

# torch's typed storage classes, by the NumPy dtype of their elements ("bfloat16": widened to float32).
STORAGE_DTYPES: Mapping[str, str] = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
ADVICE = "save the weights with torch.save(model.state_dict(), PATH), which grucli reads"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of PyTorch's format before 1.6


class TorchFileError(ModelFileError):
    """A PyTorch file grucli refuses or cannot read (the message says why)."""


@dataclass(frozen=True)
class StorageType:
    """A storage class the pickle names (torch.FloatStorage): only its element type matters."""

    name: str
    dtype: str


class Storage:
    """One storage of the archive: its bytes, read once its declared size was charged."""

    def __init__(self, key: str, dtype: np.dtype, numel: int, data: bytes, bfloat16: bool) -> None:
        self.key, self.dtype, self.numel, self.data, self.bfloat16 = key, dtype, numel, data, bfloat16


@dataclass(frozen=True)
class TensorRecord:
    """A tensor the pickle rebuilds: a view (offset, shape, strides) into a storage; `array()` makes it."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def array(self) -> np.ndarray:
        storage = self.storage
        base = np.frombuffer(storage.data, dtype=storage.dtype, count=storage.numel)
        if 0 in self.shape:
            values = np.zeros(self.shape, base.dtype)
        else:  # the view was checked to lie inside the storage (rebuild_tensor)
            values = np.lib.stride_tricks.as_strided(
                base[self.offset :], shape=self.shape, strides=tuple(s * base.itemsize for s in self.strides)
            ).copy()
        if storage.bfloat16:  # the top half of a float32
            return (values.astype(np.uint32) << 16).view(np.float32)
        return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))


class StateDict(dict[Any, Any]):
    """collections.OrderedDict as a state_dict pickles it (its `_metadata`, set by BUILD, is dropped)."""


def rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *rest: Any) -> TensorRecord:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])."""
    if not isinstance(storage, Storage):
        raise TorchFileError(f"the pickle rebuilds a tensor from {type(storage).__name__}; expected a storage of the archive")
    if not (
        _ints((storage_offset,))
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and _ints(size)
        and _ints(stride)
        and len(size) == len(stride)
    ):
        raise TorchFileError(
            f"the pickle rebuilds a tensor with offset {storage_offset!r}, size {size!r}, stride {stride!r}; expected integers"
        )
    if storage_offset < 0 or any(s < 0 for s in (*size, *stride)):
        raise TorchFileError(
            f"a tensor of storage {storage.key} has offset {storage_offset}, size {size}, stride {stride}; expected no negative numbers"
        )
    check_shape(tuple(size), f"a tensor of storage {storage.key}")
    if 0 not in size:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise TorchFileError(
                f"a tensor of storage {storage.key} reaches element {last}, past the {storage.numel} it holds; "
                "the file is crafted or corrupt"
            )
    return TensorRecord(storage, storage_offset, tuple(size), tuple(stride))


def rebuild_parameter(data: Any, *rest: Any) -> TensorRecord:
    """torch._utils._rebuild_parameter(data, requires_grad, hooks): the tensor itself."""
    if not isinstance(data, TensorRecord):
        raise TorchFileError(f"the pickle rebuilds a parameter from {type(data).__name__}; expected a tensor")
    return data


def ordered_dict(*items: Any) -> StateDict:
    if items:
        raise TorchFileError("the pickle builds an OrderedDict from arguments; a state_dict builds it empty, then fills it")
    return StateDict()


def _ints(values: tuple[Any, ...]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


# The only names the pickle may use, each answered by a stand-in of grucli's.
ALLOWED: Mapping[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    **{("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}
CALLABLE = frozenset({ordered_dict, rebuild_tensor, rebuild_parameter})


def resolve_global(module: str, name: str) -> Any:
    allowed = ALLOWED.get((module, name))
    if allowed is not None:
        return allowed
    if module.startswith(("torch.nn", "torch.jit")) or module == "__main__":
        raise TorchFileError(f"the file pickles {module}.{name}: a whole module (torch.save(model)), whose loading runs its code; {ADVICE}")
    raise TorchFileError(
        f"the file's pickle names {module}.{name}, which a tensor state_dict never needs; grucli calls no "
        f"function a file names beyond the tensor rebuilds ({ADVICE})"
    )


class _Mark:
    """The stack's MARK."""


MARK = _Mark()


def unpickle_state(data: bytes, storage: Callable[[Any], Storage]) -> Any:
    """Runs the pickle's opcodes that a state_dict uses, each checked; any other is refused by name.

    Nothing the file names is imported or called but the stand-ins of ALLOWED: this is a small
    interpreter of its own, not Python's Unpickler. Opcodes are decoded by pickletools.genops."""
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, argument, _ in pickletools.genops(data):
            name = opcode.name
            if name == "STOP":
                return _top(stack)
            step = _STEPS.get(name)
            if step is None:
                raise TorchFileError(f"the pickle uses opcode {name}, which a tensor state_dict never needs; {ADVICE}")
            stack = step(stack, marks, memo, argument, storage)
    except ValueError as exc:  # pickletools: truncated or unknown bytes
        raise TorchFileError(f"the pickle is damaged ({first_line(exc)})") from None
    raise TorchFileError("the pickle ends without STOP; the file is truncated")


def _top(stack: list[Any]) -> Any:
    if not stack or stack[-1] is MARK:
        raise TorchFileError("the pickle's stack is empty where an object is expected; the file is crafted or corrupt")
    return stack[-1]


def _pop(stack: list[Any]) -> Any:
    value = _top(stack)
    stack.pop()
    return value


def _pop_mark(stack: list[Any], marks: list[list[Any]]) -> tuple[list[Any], list[Any]]:
    """(the items above the last MARK, the stack below it)."""
    if not marks:
        raise TorchFileError("the pickle closes a MARK it never opened; the file is crafted or corrupt")
    return stack, marks.pop()


def _push(value: Any) -> Callable[..., list[Any]]:
    def step(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
        stack.append(value() if callable(value) else value)
        return stack

    return step


def _push_argument(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    stack.append(argument)
    return stack


def _mark(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    marks.append(stack)
    return []


def _tuple_of(count: int) -> Callable[..., list[Any]]:
    def step(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
        items = [_pop(stack) for _ in range(count)][::-1]
        stack.append(tuple(items))
        return stack

    return step


def _tuple(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    items, below = _pop_mark(stack, marks)
    below.append(tuple(items))
    return below


def _list(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    items, below = _pop_mark(stack, marks)
    below.append(list(items))
    return below


def _dict(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    items, below = _pop_mark(stack, marks)
    below.append(_filled({}, items))
    return below


def _filled(target: Any, items: list[Any]) -> Any:
    if not isinstance(target, dict) or len(items) % 2:
        raise TorchFileError("the pickle sets items on something that is not a dict, or leaves a key without a value")
    for key, value in zip(items[0::2], items[1::2]):
        if not isinstance(key, (str, int, float, bool, tuple, type(None))):
            raise TorchFileError(f"the pickle keys a dict with {type(key).__name__}; a state_dict's keys are names")
        target[key] = value
    return target


def _setitem(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    value, key = _pop(stack), _pop(stack)
    _filled(_top(stack), [key, value])
    return stack


def _setitems(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    items, below = _pop_mark(stack, marks)
    _filled(_top(below), items)
    return below


def _append(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    value = _pop(stack)
    target = _top(stack)
    if not isinstance(target, list):
        raise TorchFileError("the pickle appends to something that is not a list")
    target.append(value)
    return stack


def _appends(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    items, below = _pop_mark(stack, marks)
    target = _top(below)
    if not isinstance(target, list):
        raise TorchFileError("the pickle appends to something that is not a list")
    target.extend(items)
    return below


def _put(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    if not isinstance(argument, int) or argument < 0:
        raise TorchFileError(f"the pickle stores a memo entry under {argument!r}; expected an index")
    memo[argument] = _top(stack)
    return stack


def _memoize(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    memo[len(memo)] = _top(stack)
    return stack


def _get(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    if argument not in memo:
        raise TorchFileError(f"the pickle reads memo entry {argument!r}, which it never stored; the file is crafted or corrupt")
    stack.append(memo[argument])
    return stack


def _global(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    module, _, name = str(argument).partition(" ")
    stack.append(resolve_global(module, name))
    return stack


def _stack_global(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    name, module = _pop(stack), _pop(stack)
    if not (isinstance(module, str) and isinstance(name, str)):
        raise TorchFileError("the pickle names a global with something other than strings")
    stack.append(resolve_global(module, name))
    return stack


def _reduce(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    arguments, function = _pop(stack), _pop(stack)
    if not (isinstance(arguments, tuple) and callable(function) and function in CALLABLE):
        raise TorchFileError(
            f"the pickle calls {getattr(function, '__name__', type(function).__name__)}; grucli calls only the "
            "tensor rebuilds a state_dict uses"
        )
    stack.append(function(*arguments))
    return stack


def _build(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    state = _pop(stack)
    target = _top(stack)
    # A state_dict's OrderedDict gets its _metadata (per-module versions), which grucli does not need.
    if not (isinstance(target, StateDict) and isinstance(state, dict) and set(state) <= {"_metadata"}):
        raise TorchFileError(f"the pickle sets the state of a {type(target).__name__}; a state_dict only sets an OrderedDict's _metadata")
    return stack


def _persistent(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    stack.append(storage(_pop(stack)))
    return stack


def _pop_top(stack: list[Any], marks: list[list[Any]], memo: dict[int, Any], argument: Any, storage: Any) -> list[Any]:
    _pop(stack)
    return stack


_STEPS: Mapping[str, Callable[..., list[Any]]] = {
    "PROTO": lambda stack, *rest: stack,
    "FRAME": lambda stack, *rest: stack,
    **dict.fromkeys(
        (
            "INT",
            "BININT",
            "BININT1",
            "BININT2",
            "LONG",
            "LONG1",
            "LONG4",
            "FLOAT",
            "BINFLOAT",
            "UNICODE",
            "SHORT_BINUNICODE",
            "BINUNICODE",
            "BINUNICODE8",
            "BINBYTES",
            "SHORT_BINBYTES",
            "BINBYTES8",
        ),
        _push_argument,
    ),
    "NONE": _push(None),
    "NEWTRUE": _push(True),
    "NEWFALSE": _push(False),
    "EMPTY_LIST": _push(list),
    "EMPTY_DICT": _push(dict),
    "EMPTY_TUPLE": _push(()),
    "MARK": _mark,
    "TUPLE": _tuple,
    "TUPLE1": _tuple_of(1),
    "TUPLE2": _tuple_of(2),
    "TUPLE3": _tuple_of(3),
    "LIST": _list,
    "DICT": _dict,
    "SETITEM": _setitem,
    "SETITEMS": _setitems,
    "APPEND": _append,
    "APPENDS": _appends,
    "PUT": _put,
    "BINPUT": _put,
    "LONG_BINPUT": _put,
    "MEMOIZE": _memoize,
    "GET": _get,
    "BINGET": _get,
    "LONG_BINGET": _get,
    "GLOBAL": _global,
    "STACK_GLOBAL": _stack_global,
    "REDUCE": _reduce,
    "BUILD": _build,
    "BINPERSID": _persistent,
    "POP": _pop_top,
}


def read_torch_zip(path: Path, budget: Budget) -> Any:
    """The object a PyTorch zip archive pickles, tensors as `TensorRecord`s; raises TorchFileError."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise TorchFileError(f"cannot read {path}: the zip is corrupt or truncated ({first_line(exc)})") from None
    with archive:
        names = archive.namelist()
        budget.entries(len(names), f"{path}: the zip's members")
        folder = _folder(path, names)
        byteorder = _byteorder(path, archive, folder, names)
        info = archive.getinfo(f"{folder}data.pkl")
        budget.config(info.file_size, f"{path}: data.pkl")
        pickled = _member(archive, info, path)
        storages: dict[str, Storage] = {}

        def storage(pid: Any) -> Storage:
            return _storage(pid, archive, folder, byteorder, storages, budget, path)

        return unpickle_state(pickled, storage)


def _folder(path: Path, names: list[str]) -> str:
    pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
    if any(name.endswith("constants.pkl") for name in names) or any("/code/" in f"/{name}" for name in names):
        raise TorchFileError(f"{path} is a TorchScript archive (torch.jit.save), which holds code; {ADVICE}")
    if len(pickles) != 1:
        raise TorchFileError(f"{path} is a zip without one <folder>/data.pkl; expected a PyTorch file written by torch.save")
    return pickles[0][: -len("data.pkl")]


def _byteorder(path: Path, archive: zipfile.ZipFile, folder: str, names: list[str]) -> str:
    if f"{folder}byteorder" not in names:
        return "<"  # written before PyTorch recorded it: little-endian, as every machine it ran on
    value = _member(archive, archive.getinfo(f"{folder}byteorder"), path, limit=16).decode("ascii", "replace").strip()
    if value not in ("little", "big"):
        raise TorchFileError(f"{path}: byteorder says {value!r}; expected little or big")
    return "<" if value == "little" else ">"


def _storage(
    pid: Any, archive: zipfile.ZipFile, folder: str, byteorder: str, storages: dict[str, Storage], budget: Budget, path: Path
) -> Storage:
    """A persistent id ('storage', StorageType, key, location, numel) as the storage it names."""
    if not (
        isinstance(pid, tuple)
        and len(pid) == 5
        and pid[0] == "storage"
        and isinstance(pid[1], StorageType)
        and isinstance(pid[2], str)
        and _ints((pid[4],))
        and pid[4] >= 0
    ):
        raise TorchFileError(f"{path}: the pickle names a persistent object {str(pid)[:80]!r}; expected a storage")
    _, kind, key, _, numel = pid
    if key in storages:
        return storages[key]
    bfloat16 = kind.dtype == "bfloat16"
    dtype = np.dtype(byteorder + ("u2" if bfloat16 else kind.dtype)) if kind.dtype not in ("?", "i1", "u1") else np.dtype(kind.dtype)
    name = f"{folder}data/{key}"
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise TorchFileError(f"{path}: the pickle names storage {key!r}, which the zip does not hold") from None
    declared = numel * dtype.itemsize
    budget.array(declared, f"{path}: storage {key} ({kind.name}, {numel} elements)")
    if info.file_size < declared:
        raise TorchFileError(f"{path}: storage {key} holds {info.file_size} bytes; its {numel} {kind.name} elements need {declared}")
    data = _member(archive, info, path, limit=declared)
    storage = Storage(key, dtype, numel, data[:declared], bfloat16)
    storages[key] = storage
    return storage


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limit: int | None = None) -> bytes:
    """A member's bytes, never more than its header declares (nor `limit`)."""
    most = info.file_size if limit is None else min(info.file_size, limit)
    try:
        with archive.open(info) as member:
            data = member.read(most + 1 if limit is None else most)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise TorchFileError(f"cannot read {path}: member {info.filename} is damaged ({first_line(exc)})") from None
    if limit is None and len(data) > info.file_size:
        raise TorchFileError(f"{path}: member {info.filename} inflates past the size its header declares; the zip is crafted or corrupt")
    return data


def is_legacy_torch(head: bytes) -> bool:
    """PyTorch's format before 1.6: a bare pickle stream that opens with its magic number."""
    return head[:2] == b"\x80\x02" and head[2:3] == b"\x8a"
