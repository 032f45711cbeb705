"""What reading one model file may cost in total, checked before the work: model files are untrusted.

A per-array limit alone lets a file declare ten thousand arrays of the largest allowed size, a
config just under its byte limit that parses into gigabytes of Python objects, or half a million
empty variables. `Limits` holds every bound (each with the option that raises it) and `Budget`
charges one read against them: bytes of arrays, bytes and values of configs and metadata,
layers and checkpoint entries. Imports nothing of grucli's but its errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from grucli.errors import ModelFileError

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    """The most one read of a model file loads; each bound is raised by the option named beside it."""

    max_bytes: int = 4096 * MIB  # --max-mb: each weight array, and each compressed zip member inflated
    max_total_bytes: int = 16384 * MIB  # --max-total-mb: every weight array of the file together
    max_config_bytes: int = 64 * MIB  # --max-config-mb: each config, metadata record and checkpoint index
    max_layers: int = 10_000  # --max-layers: layers in the config or inferred, and checkpoint variables
    max_input_bytes: int = 1024 * MIB  # --max-input-mb: input and expected-output arrays (declared sizes), random input
    max_timesteps: int = 100_000  # --max-timesteps: timesteps of a random input (a config may declare millions)

    @property
    def max_json_values(self) -> int:
        """JSON values in all configs and metadata of a file: ~60 a layer in real configs. A parsed
        value costs 50-200 bytes of Python objects, so a 64 MiB config of `[[],[],…]` (20 million
        values, gigabytes once parsed) is refused before it is parsed."""
        return 100 * self.max_layers

    @property
    def max_entries(self) -> int:
        """Keys of a checkpoint index: a variable, its optimizer slots and the object graph's records."""
        return 50 * self.max_layers


DEFAULT_LIMITS = Limits()  # frozen: one instance serves every default


class Budget:
    """One read's running costs, charged before each piece is read; over a limit is a refused file."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.array_bytes = 0
        self.arrays = 0
        self.json_values = 0
        self.layers = 0

    def array(self, nbytes: int, what: str) -> None:
        """A weight array of `nbytes` (as read into memory) is about to be read or described."""
        self.arrays += 1
        if self.arrays > 10 * self.limits.max_layers:
            raise _over(
                f"{what}: the file holds more than {10 * self.limits.max_layers} weight arrays",
                "the limit (10 per layer of --max-layers)",
                "--max-layers",
            )
        if nbytes > self.limits.max_bytes:
            raise _over(f"{what} ({size(nbytes)})", f"the limit of {size(self.limits.max_bytes)} per array", "--max-mb")
        self.array_bytes += nbytes
        if self.array_bytes > self.limits.max_total_bytes:
            raise _over(
                f"{what} brings the file's arrays to {size(self.array_bytes)}",
                f"the limit of {size(self.limits.max_total_bytes)} for all arrays together",
                "--max-total-mb",
            )

    def config(self, nbytes: int, what: str) -> None:
        """A config, metadata record or checkpoint index of `nbytes` is about to be read."""
        if nbytes > self.limits.max_config_bytes:
            raise _over(f"{what} holds {size(nbytes)}", f"the limit of {size(self.limits.max_config_bytes)}", "--max-config-mb")

    def json(self, raw: bytes | str, what: str) -> None:
        """A JSON text is about to be parsed: its values (counted by their separators, an upper
        bound) are charged first, so no text parses into more objects than the budget allows."""
        text = raw.decode("latin-1") if isinstance(raw, bytes) else raw  # one byte, one character: the same counts
        separators = sum(text.count(mark) for mark in (",", "[", "{"))
        self.json_values += separators + 1
        if self.json_values > self.limits.max_json_values:
            raise _over(
                f"{what} brings the file's configs to {self.json_values} JSON values or more",
                f"the limit of {self.limits.max_json_values} (100 per layer of --max-layers)",
                "--max-layers",
            )

    def layer(self, what: str) -> None:
        """One more layer (from a config or inferred from stored weights)."""
        self.layers += 1
        if self.layers > self.limits.max_layers:
            raise _over(f"{what}: the file has more than {self.limits.max_layers} layers", "the limit", "--max-layers")

    def entries(self, count: int, what: str) -> None:
        if count > self.limits.max_entries:
            raise _over(
                f"{what} holds more than {self.limits.max_entries} keys", "the limit (50 per layer of --max-layers)", "--max-layers"
            )

    def variables(self, count: int, what: str) -> None:
        """Model variables of a checkpoint (a layer holds a handful: kernel, recurrent kernel, bias, ...)."""
        most = 10 * self.limits.max_layers
        if count > most:
            raise _over(f"{what} holds {count} model variables", f"the limit of {most} (10 per layer of --max-layers)", "--max-layers")


MAX_DIMENSION = 2**32  # no axis of a weight is longer (TensorFlow's kernels index in int32 or int64)
MAX_ELEMENTS = 2**48  # the product of an array's nonzero axes: NumPy cannot even describe (0, 2**62)


def check_shape(shape: tuple[int, ...], what: str) -> None:
    """A declared shape NumPy can hold: a file may declare (0, 2**62), empty yet beyond any array."""
    nonzero = 1
    for dimension in shape:
        if dimension > MAX_DIMENSION:
            raise ModelFileError(f"{what} declares shape {shape}, an axis of more than 2**32; the file is crafted or corrupt")
        nonzero *= max(dimension, 1)
    if nonzero > MAX_ELEMENTS:
        raise ModelFileError(f"{what} declares shape {shape}, over 2**48 elements; the file is crafted or corrupt")


def _over(what: str, limit: str, option: str) -> ModelFileError:
    return ModelFileError(f"{what}, over {limit}; expected a smaller file (raise the limit with {option})")


def size(count: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
