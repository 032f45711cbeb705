"""The Keras frameworks verify runs (Keras 3 on any backend, or tf-keras) behind one small interface:
loading a file (natively, or from a repaired config with grucli's weights), predict, and probe
models that return one layer's real input, mask, initial state and outputs. With `repairs`, the
only modules that import Keras or TensorFlow.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from grucli.errors import VerifyError, first_line, framework_cause, install_hint
from grucli.files.inputs import InputError
from grucli.frameworks.repairs import (
    declare_input_shape,
    drop_keys,
    layer_classes,
    raw_config,
    repair_config,
)
from grucli.model import paths
from grucli.model.gates import keras1_conv1d_kernel, keras1_conv1d_sizes
from grucli.model.records import ModelFile, ModelLayers, RawLayer
from grucli.model.registry import (
    Role,
    is_keras1_conv1d,
    is_model,
    is_sequential,
    role_of,
)
from grucli.model.semantics import KERAS2, KERAS3, Semantics, semantics_for

AUTO = "auto"  # the framework of the file's own generation: tf-keras for Keras 1/2 files when installed


def resolve_framework(requested: str, model: ModelFile) -> str:
    """`auto`: tf-keras (Keras 2 definitions, and it loads most Keras 1/2 configs) for a file saved by
    Keras 1/2 or tf.keras 2 when tf-keras is installed; Keras 3 (with config repairs) otherwise."""
    if requested != AUTO:
        return requested
    import importlib.util

    if semantics_for(model.keras_version, model.format) == KERAS2 and importlib.util.find_spec("tf_keras") is not None:
        return TfKeras.name
    return Keras3.name


@dataclass(frozen=True)
class Probe:
    """What the framework computed around one layer: its real input, mask and outputs."""

    layer_input: np.ndarray
    mask: np.ndarray | None
    outputs: list[np.ndarray]
    initial_state: list[np.ndarray]  # the states the layer was called with (empty: zeros)


def open_framework(name: str, command: str = "verify") -> Framework:
    """The framework `--keras NAME` names (keras, tf-keras), imported."""
    if name not in FRAMEWORKS:
        raise InputError(f"--keras {name!r} is not one of: {', '.join((*FRAMEWORKS, AUTO))}")
    return FRAMEWORKS[name](command)


class Framework:
    """Keras 3 (any backend) or tf-keras: loading, predict, probes and the device, behind one face.

    The two differ in a few places, each a class attribute or a method the subclasses define:
    which package, which definitions (semantics), how a config is built, how weights are set, and
    whether a mask reaches a layer called with initial states."""

    name: ClassVar[str]
    package: ClassVar[str]  # the module to import
    package_hint: ClassVar[str]  # what to install, in words
    semantics: ClassVar[Semantics]
    keras3_repairs: ClassVar[bool]  # repair the config for Keras 3 (functional class names, nested modules, ...)
    # Keras 3 fills in `mask` from the input only when the input is the call's one tensor argument:
    # a layer also given initial_state ran unmasked, whatever the input carries.
    unmasked_with_states: ClassVar[bool]

    def __init__(self, command: str = "verify") -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            self.module = _quiet_import(self.package)
        except ImportError as exc:
            raise VerifyError(
                f"{command} needs {self.package_hint}: {first_line(exc, 300)}; install it with {install_hint('verify')}"
            ) from None
        self.backend = self._backend()

    def _backend(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def device(self) -> tuple[str, bool]:
        if self.backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_logical_devices("GPU")
            return (f"GPU ({gpus[0].name})", True) if gpus else ("CPU", False)
        if self.backend == "jax":
            import jax

            device = jax.devices()[0]
            return (f"{device.platform.upper()} ({device.device_kind})", device.platform != "cpu")
        if self.backend == "torch":
            import torch

            if torch.cuda.is_available():
                return (f"GPU ({torch.cuda.get_device_name(0)})", True)
            return ("CPU", False)
        return (self.backend, False)

    # loading

    def load(self, model: ModelFile, layers: ModelLayers, unsafe: bool, inputs: Sequence[np.ndarray] = ()) -> tuple[Any, list[str]]:
        """The Keras model built from the config grucli read and validated, given grucli's weights.

        No framework ever opens the file: `load_model` would revive a SavedModel from its own
        per-layer metadata and saved graph (code grucli never checked), and a tf-keras HDF5 load
        unpickles Lambda bytecode without a safe mode. Building from the validated config, in
        the framework's safe mode, and setting the arrays grucli's reader read, runs nothing
        from the file; a class the framework does not know is refused by the framework, by name.
        """
        repairs: list[str] = []
        if model.config_path is not None:  # a weights-only file: built from --config, given the file's weights
            repairs.append(f"built from --config {model.config_path} with the weights of {model.path}")
        keras_model = self._load_repaired(model, layers, repairs, unsafe, inputs)
        if model.config_path is not None:
            repairs.append("weights set from grucli's reader (the same arrays `grucli export` writes)")
        return keras_model, repairs

    def _load_repaired(self, model: ModelFile, layers: ModelLayers, repairs: list[str], unsafe: bool, inputs: Sequence[np.ndarray]) -> Any:
        config = raw_config(model)
        config = repair_config(config, layers, repairs, keras3=self.keras3_repairs)
        declare_input_shape(config, [x.shape for x in inputs], repairs)
        self._refuse_unknown_classes(config)
        for _ in range(20):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    keras_model = self._from_config(
                        copy.deepcopy(config), model.format == "keras-v3", unsafe
                    )  # Keras pops keys from what it reads
                break
            except Exception as exc:  # noqa: BLE001
                # Keras 3 wraps the cause ("Error when deserializing class 'Embedding' ... Exception
                # encountered: Unrecognized keyword arguments ..."): search the whole text.
                unknown = re.search(r"Unrecognized keyword arguments passed to (\w+): \{([^}]*)\}", _chain_text(exc))
                if not unknown:
                    raise VerifyError(f"{self.describe()} cannot build {model.path} from its config: {_innermost(exc)}") from None
                class_name, keys = unknown.group(1), re.findall(r"'(\w+)'", unknown.group(2))
                drop_keys(config, class_name, keys)
                repairs.append(f"dropped {', '.join(keys)} from the {class_name} configs ({self.describe()} does not know them)")
        else:
            raise VerifyError(f"{self.describe()} cannot build {model.path}: too many unknown settings")
        self._set_weights(keras_model, model, layers)
        return keras_model

    def _set_weights(self, keras_model: Any, model: ModelFile, layers: ModelLayers) -> None:
        _set_weights(keras_model, model.root, layers, "")

    def _refuse_unknown_classes(self, config: dict[str, Any]) -> None:
        """A layer class the framework does not know is custom code: never loaded from a file.
        Keras 3 names such a class itself ("Could not locate class")."""

    def _from_config(self, config: dict[str, Any], keras_v3: bool, unsafe: bool) -> Any:
        raise NotImplementedError

    def _refuse_unknown_tf_keras_classes(self, config: dict[str, Any]) -> None:
        from tf_keras.src.layers import serialization as tf_keras_layers

        tf_keras_layers.populate_deserializable_objects()
        known = tf_keras_layers.LOCAL.ALL_OBJECTS
        for name, class_name in layer_classes(config):
            if class_name not in known:
                raise VerifyError(
                    f"layer {name} is a {class_name}, a class {self.describe()} does not have (a custom layer, "
                    "whose code grucli never loads from a file, or a layer of another Keras generation); "
                    "expected Keras's own layers"
                )

    def _keras3_from_config(self, config: dict[str, Any], keras_v3: bool, unsafe: bool) -> Any:
        from keras.src.saving import serialization_lib

        if keras_v3:  # a .keras config.json, read as Keras 3's own loader reads it
            return serialization_lib.deserialize_keras_object(config, safe_mode=not unsafe)
        from keras.src.legacy.saving import json_utils as keras_json
        from keras.src.legacy.saving import saving_options, saving_utils

        with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(not unsafe):
            return saving_utils.model_from_config(_legacy_decoded(config, keras_json))

    # running

    def predict(self, keras_model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _reset_states(keras_model)
                output = _predict(keras_model, keras_model, inputs)
        except Exception as exc:  # noqa: BLE001
            raise VerifyError(f"{self.describe()} predict failed: {framework_cause(exc)}") from None
        return [np.asarray(o) for o in (output if isinstance(output, (list, tuple)) else [output])]

    def predict_with_probes(
        self, keras_model: Any, inputs: list[np.ndarray], names: Sequence[str]
    ) -> tuple[list[np.ndarray], dict[str, Probe]]:
        """predict, plus the real input, mask and outputs of each named top-level layer, in one run.

        One model with the original outputs and the probed tensors is traced once, so verify
        pays for a single predict; its outputs are the model's own graph, computed as predict does.
        """
        outputs = list(keras_model.outputs)
        layouts = {name: self._probe_layout(keras_model.get_layer(name)) for name in names}
        for layout in layouts.values():
            outputs += layout.tensors
        if not names:
            return self.predict(keras_model, inputs), {}
        try:
            values = self._run_probe(keras_model, outputs, inputs)
        except VerifyError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise VerifyError(f"{self.describe()} predict failed: {framework_cause(exc)}") from None
        predicted, rest = values[: len(keras_model.outputs)], values[len(keras_model.outputs) :]
        probed = {}
        for name, layout in layouts.items():
            probed[name] = layout.read(rest[: len(layout.tensors)])
            rest = rest[len(layout.tensors) :]
        return predicted, probed

    def probe(self, keras_model: Any, chain: tuple[str, ...], name: str, inputs: list[np.ndarray]) -> Probe:
        """The real input, mask (None if unmasked) and outputs of layer `name` inside nested models `chain`."""
        owner, owner_inputs = keras_model, inputs
        for nested in chain:
            inner = owner.get_layer(nested)
            feeding = _feeding_tensor(owner, nested)
            owner_inputs = [self._run_probe(owner, [feeding], owner_inputs)[0]]
            owner = inner
        layout = self._probe_layout(owner.get_layer(name))
        return layout.read(self._run_probe(owner, layout.tensors, owner_inputs))

    def _probe_layout(self, layer: Any) -> _ProbeLayout:
        """The tensors a probe model outputs for one layer: its input, outputs, initial states, mask."""
        symbolic_input, symbolic_mask, states = self._input_and_mask(layer.input)
        outputs = list(layer.output) if isinstance(layer.output, (list, tuple)) else [layer.output]
        mask = [symbolic_mask] if symbolic_mask is not None else []
        return _ProbeLayout([symbolic_input, *outputs, *states, *mask], len(outputs), len(states))

    def _run_probe(self, owner: Any, tensors: list[Any], inputs: list[np.ndarray]) -> list[np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = self.module.Model(owner.inputs, tensors)
            # Every run starts from zero state: a stateful layer would otherwise carry on from
            # the state the previous run (predict, another probe) left behind.
            _reset_states(owner)
            values = _predict(probe, owner, inputs)
        return [np.asarray(v) for v in (values if isinstance(values, (list, tuple)) else [values])]

    def _input_and_mask(self, symbolic: Any) -> tuple[Any, Any, list[Any]]:
        """A layer's input tensor, a tensor a probe model can output for its mask, and the other
        tensors the layer is called on (its initial state).

        Keras 3 lists the mask beside the input where the call names it (mask=). tf-keras hangs
        it on the tensor as `_keras_mask`, which a Functional model cannot output (it is no
        layer's output): a small layer of grucli's own, called on the tensor, receives that mask
        and returns it.
        """
        tensors = list(symbolic) if isinstance(symbolic, (list, tuple)) else [symbolic]
        tensor, rest = tensors[0], tensors[1:]
        masks = [t for t in rest if "bool" in str(getattr(t, "dtype", ""))]
        states = [t for t in rest if not any(t is m for m in masks)]  # more inputs than x: the initial state
        if masks:
            return tensor, masks[0], states
        if states and self.unmasked_with_states:
            return tensor, None, states
        if getattr(tensor, "_keras_mask", None) is None:
            return tensor, None, states
        return tensor, _mask_output_layer(self.module)(tensor), states


class Keras3(Framework):
    """Keras 3, on whichever backend is installed (tensorflow, jax, torch)."""

    name = "keras"
    package = "keras"
    package_hint = "keras (and a backend: tensorflow, jax or torch)"
    semantics = KERAS3
    keras3_repairs = True
    unmasked_with_states = True

    def _backend(self) -> str:
        return str(self.module.backend.backend())

    def describe(self) -> str:
        return f"Keras {self.module.__version__} ({self.backend} backend)"

    def _from_config(self, config: dict[str, Any], keras_v3: bool, unsafe: bool) -> Any:
        return self._keras3_from_config(config, keras_v3, unsafe)

    def _set_weights(self, keras_model: Any, model: ModelFile, layers: ModelLayers) -> None:
        if model.format == "keras-v3":  # through Keras's own attribute walk, as its loader sets them
            _set_keras3_weights(keras_model, model.root)
        else:
            super()._set_weights(keras_model, model, layers)


class TfKeras(Framework):
    """tf-keras (Keras 2 on TensorFlow): the definitions Keras 1/2 and tf.keras 2 files were made with."""

    name = "tf-keras"
    package = "tf_keras"
    package_hint = "tf-keras"
    semantics = KERAS2
    keras3_repairs = False
    unmasked_with_states = False

    def _backend(self) -> str:
        return "tensorflow"

    def describe(self) -> str:
        return f"tf-keras {self.module.__version__}"

    def _refuse_unknown_classes(self, config: dict[str, Any]) -> None:
        """tf-keras's functional rebuild fails on an unknown class with an unrelated TypeError, so
        it is named here first."""
        self._refuse_unknown_tf_keras_classes(config)

    def _from_config(self, config: dict[str, Any], keras_v3: bool, unsafe: bool) -> Any:
        from tf_keras.src.saving import serialization_lib as tf_keras_serialization
        from tf_keras.src.saving.legacy.saved_model import json_utils as tf_keras_json

        # tf-keras's safe mode is off unless a scope sets it (in_safe_mode() is None by default).
        with tf_keras_serialization.SafeModeScope(not unsafe):
            return self.module.models.model_from_config(_legacy_decoded(config, tf_keras_json))


FRAMEWORKS: Mapping[str, type[Framework]] = {framework.name: framework for framework in (Keras3, TfKeras)}


@dataclass(frozen=True)
class _ProbeLayout:
    """Where one layer's values sit among a probe model's outputs: input, outputs, states, then the mask."""

    tensors: list[Any]
    n_outputs: int
    n_states: int

    def read(self, values: list[np.ndarray]) -> Probe:
        after_states = 1 + self.n_outputs + self.n_states
        mask = values[after_states].astype(bool) if len(values) > after_states else None
        return Probe(values[0], mask, values[1 : 1 + self.n_outputs], values[1 + self.n_outputs : after_states])


def _mask_output_layer(module: Any) -> Any:
    """A tf-keras layer that outputs the mask its input carries (as float32: 1 kept, 0 masked)."""
    import tensorflow as tf

    class MaskOutput(module.layers.Layer):
        def call(self, inputs: Any, mask: Any = None) -> Any:
            return tf.cast(mask, tf.float32)

        def compute_mask(self, inputs: Any, mask: Any = None) -> None:
            return None

    return MaskOutput(name=f"grucli_mask_probe_{next(_PROBE_IDS)}")


_PROBE_IDS = itertools.count()


def _predict(runner: Any, owner: Any, inputs: list[np.ndarray]) -> Any:
    """`runner.predict` in batches of the size `owner` fixes (batch_input_shape, a stateful
    model's batch_shape), which Keras's default batch of 32 would not fit; 32 where none is fixed."""
    fixed = next((int(t.shape[0]) for t in owner.inputs if t.shape[0] is not None), None)
    return runner.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0, batch_size=fixed or 32)


def _reset_states(model: Any) -> None:
    """Zero the state of every stateful recurrent layer, inside nested models and wrappers too."""
    for layer in _keras_layers(model):
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_states"):
            layer.reset_states()


def _keras_layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        for attribute in ("forward_layer", "backward_layer", "layer"):
            inner = getattr(layer, attribute, None)
            if inner is not None and inner is not layer:
                yield inner
        if hasattr(layer, "layers") and layer is not model:
            yield from _keras_layers(layer)


def _quiet_import(name: str) -> Any:
    """Import a framework with its C++ start-up chatter (oneDNN, CUDA probes) kept off stderr.

    TensorFlow prints those lines before its logging is set up, so no setting silences them;
    the file descriptor is redirected for the import only, and the text is kept for errors.
    """
    import importlib
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            os.dup2(saved, 2)
            sink.seek(0)
            chatter = sink.read().decode(errors="replace").strip().splitlines()
            raise ImportError(f"{exc}" + (f" ({chatter[-1]})" if chatter else "")) from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _chain_text(exc: BaseException) -> str:
    """An exception's message and those of the exceptions it was raised from (Keras 3 wraps the
    cause of a failed build in "Unable to revive model from config")."""
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def _innermost(exc: BaseException) -> str:
    """The cause at the bottom of Keras 3's nested "Exception encountered: ..." messages."""
    causes = _chain_text(exc).split("Exception encountered: ")
    return first_line(ValueError(causes[-1]) if len(causes) > 1 else exc, 300)


def _feeding_tensor(owner: Any, nested_name: str) -> Any:
    """The tensor of `owner`'s graph that is fed into its nested model `nested_name`."""
    layers = owner.layers
    for index, layer in enumerate(layers):
        if layer.name != nested_name:
            continue
        if is_sequential(type(owner).__name__):
            return layers[index - 1].output if index > 0 else owner.inputs[0]
        node = layer._inbound_nodes[-1]
        tensors = node.input_tensors if hasattr(node, "input_tensors") else node.arguments.keras_tensors
        return tensors[0] if isinstance(tensors, (list, tuple)) else tensors
    raise VerifyError(f"nested model {nested_name} not found in {owner.name}")


def _legacy_decoded(config: dict[str, Any], json_utils: Any) -> dict[str, Any]:
    """The config as a Keras 2 loader reads `model_config`: through its JSON decoder, which turns
    the markers Keras 2 wrote for values JSON lacks (`__tuple__`, `__ellipsis__` in TFOpLambda
    slices, TensorShapes) back into those values. Only data: the decoder builds no layer."""
    return json_utils.decode(json.dumps(config))


def _set_keras3_weights(keras_model: Any, root: RawLayer) -> None:
    """Give a model built from a Keras 3 config the arrays grucli read, where Keras 3 looks for them.

    Keras 3 stores each object's variables under the path of its attributes (`layers/
    multi_head_attention/query_dense/vars/0`), and a layer with sub-layers owns them in attribute
    order, not the file's alphabetical one. Keras's own walk over the model assigns them by path
    from a store that holds only grucli's arrays: the file is never opened by Keras.
    """
    from keras.src.saving import saving_lib

    arrays: dict[str, dict[str, Any]] = {}
    for weight in root.all_weights():
        group, _, index = weight.name.rpartition("/vars/")
        arrays.setdefault(group if weight.name.startswith(group + "/vars/") else "", {})[index] = weight.array

    class GrucliStore(saving_lib.H5IOStore):
        """Keras's weights store interface over grucli's arrays (no HDF5 file behind it)."""

        def __init__(self) -> None:
            self.mode = "r"

        def __bool__(self) -> bool:
            return True

        def get(self, path: str) -> dict[str, np.ndarray]:
            return {index: np.asarray(array) for index, array in arrays.get(path, {}).items()}

        def has_path(self, path: str) -> bool:  # a group at `path` (HDF5 has the groups above a dataset too)
            return any(group == path or group.startswith(path + "/") for group in arrays)

        def close(self) -> None:
            pass

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saving_lib._load_state(
                keras_model,
                weights_store=GrucliStore(),
                assets_store=None,
                inner_path="",
                visited_saveables=set(),
            )
    except ValueError as exc:
        raise VerifyError(f"the file's weights do not fit the model its config builds ({first_line(exc, 300)})") from None


def _set_weights(keras_model: Any, root: RawLayer, layers: ModelLayers, prefix: str) -> None:
    """Give each Keras layer grucli's weights: canonical for recurrent layers, as stored otherwise."""
    canonical = {layer.path: layer for layer in layers.recurrent}
    by_name = {child.name: child for _, child in root.children}
    for keras_layer in keras_model.layers:
        raw = by_name.get(keras_layer.name)
        if raw is None or not keras_layer.weights:
            continue
        path = f"{prefix}{raw.name}"
        if is_model(raw.class_name):
            _set_weights(keras_layer, raw, layers, paths.prefix(path))
            continue
        arrays = list(_weights_for(raw, path, canonical))
        try:
            keras_layer.set_weights(arrays)
        except ValueError as exc:
            raise VerifyError(f"layer {path}: the file's weights do not fit the rebuilt layer ({first_line(exc, 300)})") from None


def _weights_for(raw: RawLayer, path: str, canonical: Mapping[str, Any]) -> Iterator[np.ndarray]:
    if path in canonical:
        layer = canonical[path]
        yield np.asarray(layer.kernel)
        yield np.asarray(layer.recurrent_kernel)
        if layer.bias is not None:
            yield layer.bias
        return
    if raw.children:
        for role, child in raw.children:
            child_path = paths.join(path, role if role_of(raw.class_name) in (Role.BIDIRECTIONAL, Role.RNN) else child.name)
            yield from _weights_for(child, path if role_of(raw.class_name) is Role.RNN and role == paths.CELL else child_path, canonical)
        return
    arrays = [np.asarray(weight.array) for weight in raw.weights]
    if is_keras1_conv1d(raw.class_name) and arrays:  # rebuilt as a Conv1D: its kernel as Keras 2's loader converts it
        arrays[0] = keras1_conv1d_kernel(arrays[0], *keras1_conv1d_sizes(raw.config, path))
    yield from arrays
