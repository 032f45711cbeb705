"""The data that flows through grucli: a file's layer tree, and the recurrent layers found in it.

`reader` produces a `ModelFile` (a tree of `RawLayer`), `layers` turns it into `RecurrentLayer`s
with canonical weights, and everything downstream (gates, stats, reports) reads those. All
records are frozen: nothing downstream changes what was read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from grucli.model.registry import Family, family_of, reset_after_rule
from grucli.model.sources import SourceWeights


@dataclass(frozen=True)
class NamedArray:
    """One stored weight: the name the file gives it and its values.

    `array` is an ndarray or, straight from a file, a lazy array with `shape`, `dtype`, slicing
    and `np.asarray` that reads only what is asked for.
    """

    name: str
    array: Any


@dataclass(frozen=True)
class ArraySpec:
    """An array to be written, described before any of its values are read."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class RawLayer:
    """A layer as stored: its config (possibly empty) and the weights it owns, in stored order.

    Containers (models, Bidirectional, RNN with cells) own no weights themselves; their weights
    live on `children`, each tagged with its role: `layers`, `forward`, `backward`, `cell`.
    """

    name: str
    class_name: str
    config: Mapping[str, Any]
    weights: tuple[NamedArray, ...] = ()
    children: tuple[tuple[str, RawLayer], ...] = ()
    inferred: bool = False
    # Keras 3 saves `keras.ops` calls in a functional model as entries whose module is
    # `keras.src.ops.*`, with class names that merge layers also use (`Add`, `Multiply`).
    module: str | None = None

    def all_weights(self) -> Iterator[NamedArray]:
        """The weights of this layer and of every layer below it, in tree order."""
        yield from self.weights
        for _, child in self.children:
            yield from child.all_weights()

    @property
    def is_operation(self) -> bool:
        """A Keras 3 operation (`g * 2`, `keras.ops.maximum(g, 0)`), not a layer."""
        return self.module is not None and self.module.startswith(("keras.src.ops", "keras.ops"))


@dataclass(frozen=True)
class ModelFile:
    """What the reader found in a file."""

    path: str
    format: str
    keras_version: str | None
    backend: str | None
    has_config: bool
    root: RawLayer
    closer: Callable[[], object] | None = field(default=None, repr=False, compare=False)
    config_path: str | None = None  # the architecture, when given apart from a weights-only file (--config)
    version_source: str = "file"  # where keras_version was read: "file", or "config" (the --config JSON's, the file records none)
    notes: tuple[str, ...] = ()  # how the file was written, where a reader should know (names repaired on reading)

    @property
    def saved_by(self) -> str:
        """Which Keras saved the file, as reports name it, saying where a version not in the file came from."""
        return saved_by(self.keras_version, self.version_source)

    def close(self) -> None:
        """Close the file; arrays not read by then cannot be read any more."""
        if self.closer is not None:
            self.closer()

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def saved_by(keras_version: str | None, version_source: str = "file") -> str:
    """ "Keras 2.15.0"; where the version is the --config JSON's (a checkpoint records none), it says so."""
    if not keras_version:
        return "an unrecorded Keras version"
    if version_source == "config":
        return f"Keras {keras_version} (the version the --config JSON records; the file records none)"
    return f"Keras {keras_version}"


@dataclass(frozen=True)
class RecurrentLayer:
    """A recurrent layer with canonical Keras weights.

    Canonical means the layout of current Keras's `get_weights()`: `kernel` (input_dim, k*units),
    `recurrent_kernel` (units, k*units), gate blocks side by side in the last axis, and `bias`
    (k*units,) or, for a GRU with reset_after=True, (2, k*units) with row 0 the input bias and
    row 1 the recurrent bias. ConvLSTM kernels carry the kernel window in front of those axes.
    """

    path: str
    class_name: str
    kind: str
    units: int
    input_dim: int
    config: Mapping[str, Any]
    stored_weights: tuple[tuple[str, tuple[int, ...]], ...]
    kernel: Any  # ndarray, or a lazy array read gate by gate (see NamedArray)
    recurrent_kernel: Any
    bias: np.ndarray | None
    source_layout: str = "keras"
    inferred: bool = False
    notes: tuple[str, ...] = field(default=())
    source: SourceWeights | None = None  # a layer read from PyTorch or ONNX: its arrays in that framework's layout
    # The arrays as the file stores them (lazy datasets: a port writes new values into their places).
    stored_arrays: tuple[NamedArray, ...] = field(default=(), repr=False, compare=False)

    @property
    def family(self) -> Family:
        return family_of(self.kind)

    @cached_property
    def settings(self) -> Settings:
        """The config's settings, typed: what every command reads (`config` is what is shown)."""
        return Settings.from_config(self.config, self.family, self.bias)


@dataclass(frozen=True)
class Settings:
    """The settings that decide what a recurrent layer computes, under current Keras names, parsed
    once from its normalised config (`layers.normalize_config`). None: the file does not say."""

    activation: str | None
    recurrent_activation: str | None  # None for SimpleRNN, which has none
    use_bias: bool
    reset_after: bool | None  # GRU only
    return_sequences: bool
    return_state: bool
    go_backwards: bool
    stateful: bool
    zero_output_for_mask: bool
    conv: Mapping[str, Any]  # ConvLSTM: kernel_size, strides, padding, data_format, dilation_rate as stored

    @classmethod
    def from_config(cls, config: Mapping[str, Any], family: Family, bias: Any) -> Settings:
        reset_after = None
        if family.two_row_bias:
            reset_after = reset_after_rule(None if bias is None else bias.ndim, config.get("reset_after"), None)
        return cls(
            # Keras's defaults where a hand-made config leaves a key out; None where a file has no config.
            activation=config.get("activation", "tanh"),
            recurrent_activation=config.get("recurrent_activation", "sigmoid") if family.uses_recurrent_activation else None,
            use_bias=bias is not None,
            reset_after=reset_after,
            return_sequences=bool(config.get("return_sequences")),
            return_state=bool(config.get("return_state")),
            go_backwards=bool(config.get("go_backwards")),
            stateful=bool(config.get("stateful")),
            zero_output_for_mask=bool(config.get("zero_output_for_mask")),
            conv={key: config[key] for key in CONV_KEYS if key in config} if family.convolutional else {},
        )

    @property
    def shown_activation(self) -> str:
        """The activation the equations print: Keras's default where the file has no config."""
        return self.activation or "tanh"

    @property
    def shown_recurrent_activation(self) -> str:
        return self.recurrent_activation or "sigmoid"


CONV_KEYS = ("kernel_size", "strides", "padding", "data_format", "dilation_rate")


@dataclass(frozen=True)
class OtherLayer:
    """A non-recurrent layer, listed so that nothing in the file is silently dropped."""

    path: str
    class_name: str
    weight_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    skipped_reason: str | None = None
    # Holds the weights of a recurrent layer or cell that grucli cannot slice: commands that
    # promise every recurrent layer (export, replay, verify) refuse the file rather than drop it.
    unsliced_recurrent: bool = False
    weights: tuple[NamedArray, ...] = field(default=(), repr=False, compare=False)  # its own arrays, as stored
    config: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ModelLayers:
    """Every layer of a file, sorted into the recurrent ones and the rest."""

    file: ModelFile
    recurrent: tuple[RecurrentLayer, ...]
    others: tuple[OtherLayer, ...]
