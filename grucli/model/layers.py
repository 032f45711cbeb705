"""Find the recurrent layers in a file's layer tree and give each canonical weights and config.

Each layer is named by its path (`paths`: `NAME/forward`, `OUTER/INNER`, `NAME/cell_K`); the
root model's own name is not part of any path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from grucli.errors import GrucliError, ModelFileError, SelectionError, counted
from grucli.model import gates, paths
from grucli.model.records import (
    CONV_KEYS,
    ModelFile,
    ModelLayers,
    NamedArray,
    OtherLayer,
    RawLayer,
    RecurrentLayer,
)
from grucli.model.registry import (
    Role,
    family_of,
    is_cudnn_class,
    is_unknown,
    kind_of,
    looks_recurrent,
    reset_after_rule,
    role_of,
)
from grucli.model.sources import ONNX, PYTORCH, SourceWeights, onnx_to_keras, torch_to_keras

CONTAINER_ROLES = {"layers"}
# Settings of the RNN wrapper that apply to the cell it runs.
SEQUENCE_KEYS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "time_major", "zero_output_for_mask")
ALWAYS_SHOWN_SEQUENCE_KEYS = SEQUENCE_KEYS[:5]


def find_layers(model: ModelFile) -> ModelLayers:
    """Every recurrent layer of the file, canonicalised, and every other layer, listed."""
    recurrent: list[RecurrentLayer] = []
    others: list[OtherLayer] = []
    root = model.root
    top = [child for role, child in root.children if role in CONTAINER_ROLES] if _is_container(root) else [root]
    for layer in top:
        for item in _walk(layer, layer.name, model):
            if isinstance(item, RecurrentLayer):
                recurrent.append(item)
            else:
                others.append(item)
    return ModelLayers(file=model, recurrent=tuple(recurrent), others=tuple(others))


def require_recurrent(found: ModelLayers) -> None:
    """Refuse a model with no recurrent layer: a check over nothing must not pass."""
    if found.recurrent:
        return
    others = ", ".join(f"{other.path} ({other.class_name})" for other in found.others) or "no layers"
    raise SelectionError(f"{found.file.path} has no recurrent layer (expected a GRU, LSTM, SimpleRNN or ConvLSTM layer); found: {others}")


def refuse_unsliced(found: ModelLayers, skip: bool = False) -> list[OtherLayer]:
    """The layers holding recurrent weights grucli cannot slice: an error, unless `skip` (then returned)."""
    unsliced = [other for other in found.others if other.unsliced_recurrent]
    if unsliced and not skip:
        named = "; ".join(f"{other.path} ({other.class_name}): {other.skipped_reason}" for other in unsliced)
        raise SelectionError(
            f"{found.file.path} holds recurrent weights grucli cannot slice: {named}; pass --skip-unsliced to leave them out"
        )
    return unsliced


def _is_container(layer: RawLayer) -> bool:
    return bool(layer.children) and all(role in CONTAINER_ROLES for role, _ in layer.children)


def _walk(layer: RawLayer, path: str, model: ModelFile) -> Iterator[RecurrentLayer | OtherLayer]:
    if _is_container(layer):
        for _, child in layer.children:
            yield from _walk(child, paths.join(path, child.name), model)
    elif role_of(layer.class_name) is Role.BIDIRECTIONAL and layer.children:
        for role, child in layer.children:
            if role_of(child.class_name) is Role.RNN and child.children:  # Bidirectional(RNN(cell)): read like Bidirectional(LSTM)
                yield from _rnn_cells(child, paths.join(path, role), model, {**layer.config, **child.config})
            else:
                yield from _recurrent_or_skipped(child, paths.join(path, role), model, layer.config)
    elif role_of(layer.class_name) is Role.RNN and layer.children:
        yield from _rnn_cells(layer, path, model, layer.config)
    elif role_of(layer.class_name) is Role.TIME_DISTRIBUTED and layer.children:
        inner = layer.children[0][1]
        if kind_of(inner.class_name):
            yield from _recurrent_or_skipped(inner, path, model, layer.config)
        else:
            yield _other(layer, path, class_name=f"TimeDistributed({inner.class_name})")  # its weights: the inner layer's
    elif kind_of(layer.class_name):
        yield from _recurrent_or_skipped(layer, path, model, {})
    else:  # a PyTorch module grucli cannot slice says why (nn.LSTM with proj_size)
        yield _other(layer, path, reason=layer.config.get("unsupported"))


def _rnn_cells(layer: RawLayer, path: str, model: ModelFile, wrapper_config: Mapping[str, Any]) -> Iterator[RecurrentLayer | OtherLayer]:
    """The cells an RNN layer runs: one cell at the RNN's own path, stacked cells at PATH/cell_K."""
    roles = [role for role, _ in layer.children]
    for role, child in layer.children:
        child_path = path if roles == [paths.CELL] else paths.join(path, role)
        yield from _recurrent_or_skipped(child, child_path, model, wrapper_config)


def _recurrent_or_skipped(
    layer: RawLayer, path: str, model: ModelFile, wrapper_config: Mapping[str, Any]
) -> Iterator[RecurrentLayer | OtherLayer]:
    if not kind_of(layer.class_name):
        yield _other(layer, path, reason=f"{layer.class_name} is not a recurrent layer or cell grucli can slice")
        return
    yield canonical_layer(layer, path, model, wrapper_config)


def _other(
    layer: RawLayer, path: str, class_name: str | None = None, weights: tuple[NamedArray, ...] | None = None, reason: str | None = None
) -> OtherLayer:
    weights = layer.weights if weights is None else weights
    recurrent_like = reason is not None or looks_recurrent(layer.class_name)
    if reason is None and recurrent_like:
        reason = f"{layer.class_name} is not a recurrent layer grucli understands; its weights are not sliced"
    if reason is None and is_unknown(layer.class_name) and weights:
        reason = "no config, and the weight shapes match no recurrent layer"
    below = (weight for _, child in layer.children for weight in child.all_weights())
    weight_shapes = tuple((w.name, tuple(w.array.shape)) for w in (*weights, *below))
    return OtherLayer(
        path=path,
        class_name=class_name or layer.class_name,
        weight_shapes=weight_shapes,
        skipped_reason=reason,
        unsliced_recurrent=recurrent_like and bool(weight_shapes),
        weights=tuple(weights),
        config=layer.config,
    )


# --- canonical weights and config ---------------------------------------------------------------


def canonical_layer(layer: RawLayer, path: str, model: ModelFile, wrapper_config: Mapping[str, Any]) -> RecurrentLayer:
    """A `RecurrentLayer` in canonical layout, with its config normalised across Keras versions."""
    class_name = layer.class_name
    kind = kind_of(class_name)
    assert kind is not None, class_name  # _recurrent_or_skipped sends only recurrent classes here
    family = family_of(kind)
    if layer.config.get("source_layout") in FOREIGN_LAYOUTS:
        return _foreign_layer(layer, path, kind)
    weights = layer.weights
    notes: list[str] = []
    bias: np.ndarray | None
    if not weights:
        raise ModelFileError(f"layer {path} ({class_name}) has no weights in the file; expected a kernel, a recurrent kernel and a bias")
    if family.keras1_stored_gates and len(weights) == 3 * len(family.gates):
        _check_keras1_shapes(path, kind, weights)
        kernel, recurrent, bias = gates.from_keras1(kind, [NamedArray(w.name, np.asarray(w.array)) for w in weights])
        source_layout = "keras1"
        stored_order = family.keras1_stored_gates
        notes.append(
            "assembled from Keras 1 per-gate arrays (W_*, U_*, b_*)"
            + (f", stored in gate order {', '.join(stored_order)}" if stored_order != family.gates else "")
        )
    else:
        kernel, recurrent, bias = _kernel_recurrent_bias(weights, path)
        source_layout = "keras"
        if _is_cudnn(class_name, kind, recurrent, bias):
            assert bias is not None
            _check_cudnn_shapes(path, kind, kernel, recurrent, bias)
            kernel, recurrent, bias = gates.from_cudnn(kind, np.asarray(kernel), np.asarray(recurrent), bias)
            source_layout = "cudnn"
            notes.append(
                f"converted from the {family.cudnn_class} layout (per-gate transposed kernels"
                + ("; input and recurrent biases summed" if family.cudnn_bias == "sum" else "; bias (6u,) read as (2, 3u)")
                + ")"
            )
    units = _check_shapes(path, kind, kernel, recurrent, bias, layer.config)
    if units == 0:
        notes.append("this layer has 0 units: it computes nothing and its output is empty")
    config = normalize_config(kind, class_name, layer.config, wrapper_config, bias, model, source_layout, notes)
    if layer.inferred:
        notes.append(f"kind inferred from weight shapes: the file has no config for {path}")
    return RecurrentLayer(
        path=path,
        class_name=class_name,
        kind=kind,
        units=units,
        input_dim=int(kernel.shape[-2]),
        config=config,
        stored_weights=tuple((w.name, tuple(w.array.shape)) for w in weights),
        kernel=kernel,
        recurrent_kernel=recurrent,
        bias=bias,
        source_layout=source_layout,
        inferred=layer.inferred,
        notes=tuple(notes),
        stored_arrays=tuple(weights),
    )


FOREIGN_LAYOUTS = (PYTORCH, ONNX)


def _foreign_layer(layer: RawLayer, path: str, kind: str) -> RecurrentLayer:
    """A layer read from a PyTorch state_dict or an ONNX graph (files/foreign.py, files/onnx_file.py):
    its arrays put in Keras's canonical layout, the framework's own kept beside them."""
    family, config = family_of(kind), layer.config
    roles = list(config.get("source_roles", ()))
    arrays = {role: np.asarray(weight.array) for role, weight in zip(roles, layer.weights)}
    framework = config["source_layout"]
    if framework == PYTORCH:
        kernel, recurrent, bias = torch_to_keras(
            family, arrays["weight_ih"], arrays["weight_hh"], arrays.get("bias_ih"), arrays.get("bias_hh"), f"layer {path}"
        )
        letters, keras_gates = family.torch_letters, family.torch_gates
        settings: dict[str, Any] = {"nonlinearity": config.get("activation")} if not family.uses_recurrent_activation else {}
    else:
        kernel, recurrent, bias = onnx_to_keras(
            family, arrays["W"], arrays["R"], arrays.get("B"), bool(config.get("reset_after")), f"layer {path}"
        )
        letters, keras_gates = family.onnx_letters, family.onnx_gates
        settings = {
            key: config[key]
            for key in ("linear_before_reset", "onnx_activations", "onnx_activation_alpha", "onnx_activation_beta", "layout")
            if key in config
        }
        settings["activations"] = config.get("onnx_activations")
    settings.update({key: config[key] for key in ("module_path", "layer_index", "direction") if key in config})
    assert letters is not None and keras_gates is not None  # the readers send only families with that framework's layout
    units = _check_shapes(path, kind, kernel, recurrent, bias, config)
    source = SourceWeights(
        framework,
        str(config.get("source_module")),
        letters,
        keras_gates,
        tuple((role, arrays[role]) for role in roles),
        tuple(w.name for w in layer.weights),
        settings,
    )
    normalized = {
        key: config.get(key)
        for key in ("activation", "recurrent_activation")
        if key != "recurrent_activation" or family.uses_recurrent_activation
    }
    normalized["use_bias"] = bias is not None
    if family.two_row_bias:
        normalized["reset_after"] = bias is None or bias.ndim == 2 if framework == PYTORCH else bool(config.get("reset_after"))
    normalized.update(
        go_backwards=bool(config.get("go_backwards")),
        return_sequences=bool(config.get("return_sequences")),
        return_state=False,
        stateful=False,
    )
    framework_name = "PyTorch" if framework == PYTORCH else "ONNX"
    order = f"gates {', '.join(letters)} in its order, put in Keras's ({', '.join(family.gates)})"
    notes = [f"read from {source.module} ({framework_name}): {order}"]
    if config.get("go_backwards"):
        notes.append("the reverse direction: it reads the sequence from the last step, its outputs aligned with the input's steps")
    if framework == PYTORCH and not family.uses_recurrent_activation:
        notes.append("nn.RNN's nonlinearity (tanh or relu) is not in a state_dict: the file does not say which")
    return RecurrentLayer(
        path=path,
        class_name=layer.class_name,
        kind=kind,
        units=units,
        input_dim=int(kernel.shape[-2]),
        config=normalized,
        stored_weights=tuple((w.name, tuple(w.array.shape)) for w in layer.weights),
        kernel=kernel,
        recurrent_kernel=recurrent,
        bias=bias,
        source_layout=framework,
        inferred=True,
        notes=tuple(notes),
        source=source,
        stored_arrays=tuple(layer.weights),
    )


def _kernel_recurrent_bias(weights: tuple[NamedArray, ...], path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    by_role = {_role(w.name): w.array for w in weights}
    if {"kernel", "recurrent_kernel"} <= by_role.keys() and len(by_role) == len(weights):
        bias = by_role.get("bias")
        return by_role["kernel"], by_role["recurrent_kernel"], None if bias is None else np.asarray(bias)
    # Names drift between Keras versions (and Keras 3 files number them); order does not.
    if len(weights) not in (2, 3):
        raise ModelFileError(
            f"layer {path} stores {len(weights)} weights ({', '.join(w.name for w in weights)}); "
            "expected kernel, recurrent kernel and optionally bias"
        )
    return weights[0].array, weights[1].array, np.asarray(weights[2].array) if len(weights) == 3 else None


def _check_keras1_shapes(path: str, kind: str, weights: tuple[NamedArray, ...]) -> None:
    """Keras 1 per-gate arrays: every W (input_dim, units), U (units, units), b (units,) alike."""
    shapes = [tuple(w.array.shape) for w in weights]
    kernels, recurrents, biases = shapes[0::3], shapes[1::3], shapes[2::3]
    units = recurrents[0][0] if recurrents[0] else None
    fits = (
        len(set(kernels)) == len(set(recurrents)) == len(set(biases)) == 1
        and len(kernels[0]) == 2
        and kernels[0][1] == units
        and recurrents[0] == (units, units)
        and biases[0] == (units,)
    )
    if not fits:
        raise ModelFileError(
            f"layer {path} stores {len(weights)} Keras 1 per-gate {kind} arrays of shapes {', '.join(str(s) for s in shapes)}; "
            "expected W (input_dim, units), U (units, units), b (units,) for every gate"
        )


def _check_cudnn_shapes(path: str, kind: str, kernel: Any, recurrent: Any, bias: np.ndarray) -> None:
    units = int(recurrent.shape[0])
    columns = len(gates.gate_names(kind)) * units
    if kernel.ndim != 2 or kernel.shape[1] != columns or recurrent.shape != (units, columns) or bias.ndim != 1:
        raise ModelFileError(
            f"layer {path} ({family_of(kind).cudnn_class}): kernel {tuple(kernel.shape)}, recurrent kernel {tuple(recurrent.shape)} and "
            f"bias {tuple(bias.shape)} do not fit; expected (input_dim, {columns}), ({units}, {columns}) and ({2 * columns},)"
        )


def _role(weight_name: str) -> str:
    return weight_name.rsplit("/", maxsplit=1)[-1].split(":", maxsplit=1)[0]


def _is_cudnn(class_name: str, kind: str, recurrent: np.ndarray, bias: np.ndarray | None) -> bool:
    if bias is None or recurrent.ndim != 2:
        return False
    family = family_of(kind)
    if family.cudnn_class is None:
        return False
    units = recurrent.shape[0]
    return class_name == family.cudnn_class or bias.shape == (2 * len(family.gates) * units,)


def _check_shapes(
    path: str, kind: str, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray | None, config: Mapping[str, Any]
) -> int:
    n_gates = len(gates.gate_names(kind))
    if recurrent.ndim < 2 or kernel.ndim != recurrent.ndim:
        raise ModelFileError(f"layer {path}: kernel {kernel.shape} and recurrent kernel {recurrent.shape} do not fit a {kind} layer")
    units = int(recurrent.shape[-2])
    declared = config.get("units", config.get("output_dim", config.get("filters")))
    if isinstance(declared, int) and declared != units:
        raise ModelFileError(
            f"layer {path}: the config says {counted(declared, 'unit')} but the recurrent kernel {recurrent.shape} holds {units}"
        )
    expected_columns = n_gates * units
    problems = []
    if recurrent.shape[-1] != expected_columns:
        problems.append(f"recurrent kernel {recurrent.shape}, expected (..., {units}, {expected_columns})")
    if kernel.shape[-1] != expected_columns:
        problems.append(f"kernel {kernel.shape}, expected (..., input_dim, {expected_columns})")
    allowed_bias = [(expected_columns,)] + ([(2, expected_columns)] if family_of(kind).two_row_bias else [])
    if bias is not None and bias.shape not in allowed_bias:
        problems.append(f"bias {bias.shape}, expected {' or '.join(str(s) for s in allowed_bias)}")
    if problems:
        raise ModelFileError(f"layer {path} ({kind}, {counted(units, 'unit')}): " + "; ".join(problems))
    return units


def activation_name(value: Any) -> str | None:
    """An activation as its name: configs hold strings, or dicts in Keras 3 serialisation."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        inner = value.get("config")
        if isinstance(inner, str):
            return inner
        if isinstance(inner, Mapping) and isinstance(inner.get("name"), str):
            return inner["name"]
        return str(value.get("class_name"))
    return str(value)


def default_recurrent_activation(keras_version: str | None, class_name: str) -> str:
    """What recurrent_activation meant when a config left it out, by the Keras that saved it."""
    if is_cudnn_class(class_name):
        return "sigmoid"
    major_minor_patch = _version_tuple(keras_version)
    if major_minor_patch is None or major_minor_patch < (2, 3, 0):
        return "hard_sigmoid"
    return "sigmoid"


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = []
    for piece in version.split(".")[:3]:
        digits = re.match(r"[0-9]{1,9}", piece)  # ASCII digits only ("²".isdigit() is True), and few of them
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts)


def normalize_config(
    kind: str,
    class_name: str,
    config: Mapping[str, Any],
    wrapper_config: Mapping[str, Any],
    bias: np.ndarray | None,
    model: ModelFile,
    source_layout: str,
    notes: list[str],
) -> dict[str, Any]:
    """The settings that decide what the layer computes, under their current Keras names."""
    has_config = model.has_config and not _only_name(config)
    sequence_source = {**config, **{k: wrapper_config[k] for k in SEQUENCE_KEYS if k in wrapper_config}}
    family = family_of(kind)
    cudnn = is_cudnn_class(class_name) or source_layout == "cudnn"
    activation: str | None
    recurrent_activation: str | None
    if cudnn:
        activation, recurrent_activation = "tanh", "sigmoid"
    elif has_config:
        activation = activation_name(config.get("activation", "tanh"))
        recurrent_activation = activation_name(config.get("recurrent_activation", config.get("inner_activation")))
        if recurrent_activation is None and family.uses_recurrent_activation:
            recurrent_activation = default_recurrent_activation(model.keras_version, class_name)
            notes.append(
                f"recurrent_activation not in the config: {recurrent_activation}, the default of Keras {model.keras_version or '1'}"
            )
    else:
        activation = recurrent_activation = None
        # Without a recorded version the layout tells the generation: Keras 3 weights files and
        # TensorFlow checkpoints (tf.keras 2, sigmoid since TF 2.0) record none; Keras 1 HDF5 neither.
        unrecorded = "Keras 3" if model.format.startswith("keras-v3") else "tf.keras 2" if model.format.startswith("tf-") else "Keras 1"
        saver = f"Keras {model.keras_version}" if model.keras_version else unrecorded
        default = (
            None
            if not family.uses_recurrent_activation
            else "sigmoid"
            if unrecorded != "Keras 1" and not model.keras_version
            else default_recurrent_activation(model.keras_version, class_name)
        )
        defaults = f"tanh and {default}" if default else "tanh"
        notes.append(
            f"activations unknown: the file has no config (the defaults of {saver} are {defaults}; pass --config with the architecture)"
        )
    normalized: dict[str, Any] = {"activation": activation}
    if family.uses_recurrent_activation:
        normalized["recurrent_activation"] = recurrent_activation
    normalized["use_bias"] = bias is not None
    if family.two_row_bias:
        declared = config.get("reset_after")
        reset_after = reset_after_rule(None if bias is None else bias.ndim, declared, model.keras_version)
        if has_config and declared is None and bias is not None:
            notes.append(f"no reset_after key in the config; the bias shape {tuple(bias.shape)} says reset_after={reset_after}")
        elif declared is not None and bool(declared) != reset_after and bias is not None:
            notes.append(f"the config says reset_after={declared} but the bias shape {tuple(bias.shape)} says {reset_after}")
        normalized["reset_after"] = reset_after
    for key in SEQUENCE_KEYS:
        if key in sequence_source:
            normalized[key] = bool(sequence_source[key])
        elif key in ALWAYS_SHOWN_SEQUENCE_KEYS:
            normalized[key] = False if has_config else None
    normalized["dropout"] = config.get("dropout", config.get("dropout_W"))
    normalized["recurrent_dropout"] = config.get("recurrent_dropout", config.get("dropout_U"))
    if family.has_cell_state and not family.convolutional and "unit_forget_bias" in config:
        normalized["unit_forget_bias"] = config["unit_forget_bias"]
    if family.convolutional:
        for key in CONV_KEYS:
            if key in config:
                normalized[key] = config[key]
    return normalized


def _only_name(config: Mapping[str, Any]) -> bool:
    return set(config) <= {"name"}


def select_layers(layers: Sequence[RecurrentLayer], wanted: Sequence[str]) -> list[RecurrentLayer]:
    """The layers named by the paths `wanted`; a path also selects what is below it (`bi` → `bi/forward`)."""
    if not wanted:
        return list(layers)
    chosen = [layer for layer in layers if paths.in_scope(layer.path, wanted)]
    missing = [p for p in wanted if not any(paths.selects(p, layer.path) for layer in layers)]
    if missing:
        available = ", ".join(layer.path for layer in layers) or "none"
        raise SelectionError(f"no recurrent layer {missing[0]!r} in this model; expected one of: {available}")
    return chosen


def conv_lstm_settings(layer: RecurrentLayer, error: type[GrucliError], who: str) -> tuple[tuple[int, ...], str, tuple[int, ...]]:
    """A ConvLSTM's input convolution: strides, padding and dilation per spatial axis, validated
    (`error` and `who`, the replay or convert, name what is refused)."""
    rank = layer.kernel.ndim - 2
    config = layer.settings.conv

    def per_axis(key: str) -> tuple[int, ...]:
        value = config.get(key, 1)
        values = [value] * rank if isinstance(value, int) and not isinstance(value, bool) else value
        if (
            not isinstance(values, list)
            or len(values) != rank
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
        ):
            raise error(f"layer {layer.path} ({layer.kind}) has {key}={value!r}; expected {rank} positive integers")
        return tuple(values)

    padding = config.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise error(f"layer {layer.path} ({layer.kind}) has padding={padding!r}; expected valid or same")
    if config.get("data_format") not in (None, "channels_last"):
        raise error(f"layer {layer.path} ({layer.kind}) has data_format={config['data_format']!r}; {who} runs channels_last")
    strides, dilation = per_axis("strides"), per_axis("dilation_rate")
    if max(strides) > 1 and max(dilation) > 1:
        raise error(f"layer {layer.path} ({layer.kind}) has both strides and dilation above 1, which Keras refuses")
    return strides, padding, dilation
