"""grucli from Python: `load` a model file, read each recurrent layer's gates, `replay` the model in
NumPy and `verify` it against Keras. The results are frozen records; errors are grucli's own
exceptions (`grucli.errors.GrucliError` and its subclasses), never a printed line.

    import grucli
    m = grucli.load("model.h5")                 # config="model.json" for weights-only files
    layer = m.recurrent_layers[0]                # file order; Bidirectional: NAME/forward, NAME/backward
    layer.gate("z").kernel                       # (input_dim, units)
    grucli.replay(m, x).output                   # as model.predict(x), computed in NumPy
    grucli.verify(m, x).passed                   # needs the verify extra (Keras)

Imports no TensorFlow or Keras until `verify` is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from grucli.errors import SelectionError
from grucli.files.budget import Limits
from grucli.model.records import ModelFile, ModelLayers, RecurrentLayer


@dataclass(frozen=True)
class Gate:
    """One gate of one recurrent layer: its columns of the canonical kernel, recurrent kernel and
    biases (`recurrent_bias` only for a GRU with reset_after=True; None where the layer has none)."""

    name: str
    meaning: str
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    recurrent_bias: np.ndarray | None


@dataclass(frozen=True)
class Layer:
    """A recurrent layer as grucli reads it: `path` (NAME, NAME/forward, OUTER/INNER, NAME/cell_K),
    Keras `kind` (GRU, LSTM, SimpleRNN, ConvLSTM2D, ...), units and the gate letters in Keras order."""

    path: str
    kind: str
    units: int
    input_dim: int
    gates: tuple[str, ...]
    config: Mapping[str, Any]
    source: RecurrentLayer = field(repr=False, compare=False)

    def gate(self, name: str) -> Gate:
        """The gate `name` (one of `gates`): z, r, h for a GRU; i, f, c, o for an LSTM; h for SimpleRNN."""
        from grucli.model.gates import gate_array, gate_array_names, gate_meaning

        if name not in self.gates:
            raise SelectionError(f"layer {self.path} ({self.kind}) has no gate {name!r}; expected one of: {', '.join(self.gates)}")
        arrays = {array: gate_array(self.source, name, array) for array in gate_array_names(self.source)}
        return Gate(name, gate_meaning(self.kind, name), arrays["kernel"], arrays["recurrent_kernel"], arrays.get("bias"),
                    arrays.get("recurrent_bias"))


@dataclass(frozen=True)
class Model:
    """A model file read by grucli. Arrays are read from the file when asked for: close it (or use
    `with grucli.load(...) as m:`) when done."""

    path: str
    format: str
    keras_version: str | None
    recurrent_layers: tuple[Layer, ...]
    layers: ModelLayers = field(repr=False, compare=False)

    @property
    def file(self) -> ModelFile:
        return self.layers.file

    def layer(self, path: str) -> Layer:
        for layer in self.recurrent_layers:
            if layer.path == path:
                return layer
        available = ", ".join(layer.path for layer in self.recurrent_layers) or "none"
        raise SelectionError(f"no recurrent layer {path!r} in this model; expected one of: {available}")

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(path: str | Path, config: str | Path | None = None, limits: Limits | None = None) -> Model:
    """Read a Keras model file (.keras, .h5, a SavedModel folder, a TensorFlow checkpoint), without
    TensorFlow. `config`: the architecture of a weights-only file (model.to_json(), or config.json)."""
    from grucli.files.reader import read_model
    from grucli.model.gates import gate_names
    from grucli.model.layers import find_layers

    model_file = read_model(path, limits, config)
    try:
        found = find_layers(model_file)
    except BaseException:
        model_file.close()
        raise
    layers = tuple(Layer(layer.path, layer.kind, layer.units, layer.input_dim, gate_names(layer.kind), layer.config, layer)
                   for layer in found.recurrent)
    return Model(str(path), model_file.format, model_file.keras_version, layers, found)


@dataclass(frozen=True)
class ReplayResult:
    """The model's output as `model.predict` returns it (an array, or a list for several outputs),
    and per recurrent layer path its state `h` and its gates over time, (batch, timesteps, units)
    each, timesteps in the order the layer consumed them (reversed for go_backwards layers)."""

    output: np.ndarray | list[np.ndarray]
    states: Mapping[str, np.ndarray]
    gates: Mapping[str, Mapping[str, np.ndarray]]


def replay(model: Model, inputs: np.ndarray | Sequence[np.ndarray], dtype: Any = np.float64) -> ReplayResult:
    """Run the whole model in NumPy with the definitions of the Keras that saved it."""
    from grucli.engine.graph import ModelReplay, trace_arrays
    from grucli.errors import ModelFileError
    from grucli.files.inputs import fit_input, input_specs
    from grucli.model.semantics import semantics_for

    if not model.file.has_config:
        raise ModelFileError(f"{model.path} holds weights only; replay needs its architecture: load it with config=")
    arrays = _fitted(inputs, input_specs(model.file), fit_input)
    engine = ModelReplay(model.file, model.layers, semantics_for(model.keras_version, model.format), np.dtype(dtype).type, trace=True)
    outputs = engine.run(arrays)
    states: dict[str, np.ndarray] = {}
    gates: dict[str, dict[str, np.ndarray]] = {}
    for key, values in trace_arrays(engine.calls).items():
        path, _, name = key.rpartition("/")
        if name == "h":
            states[path] = values
        else:
            gates.setdefault(path, {})[name] = values
    return ReplayResult(outputs[0] if len(outputs) == 1 else list(outputs), states, gates)


def verify(model: Model, inputs: np.ndarray | Sequence[np.ndarray] | None = None, **options: Any) -> Any:
    """Replay each recurrent layer on its real input and the whole model, and compare with Keras's
    predict (needs the verify extra). `inputs`: arrays, or None for a seeded random input; options
    as `grucli.commands.verify_report.VerifyOptions` (atol, rtol, framework, layer_paths, ...). Returns the
    frozen `VerifyReport`: `.passed`, `.layers`, `.comparisons`, ..."""
    from grucli.commands.verify import verify_model
    from grucli.commands.verify_report import VerifyOptions
    from grucli.files.inputs import fit_input, input_specs

    given = None if inputs is None else tuple(_fitted(inputs, input_specs(model.file), fit_input))
    return verify_model(model.file, model.path, VerifyOptions(**options), given)


def _fitted(inputs: np.ndarray | Sequence[np.ndarray], specs: Sequence[Any], fit: Any) -> list[np.ndarray]:
    from grucli.files.inputs import InputError

    arrays = [np.asarray(inputs)] if isinstance(inputs, np.ndarray) else [np.asarray(x) for x in inputs]
    if len(arrays) != len(specs):
        raise InputError(f"the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}); {len(arrays)} arrays were given")
    return [fit(array, spec, "the input") for array, spec in zip(arrays, specs)]
