"""`convert`: a model written as ONNX, and the proof that it computes what the model computes.

The ONNX graph comes from convert/; with ONNX Runtime installed it is run on the probe input and
compared with grucli's float64 replay (which `verify` compares with Keras's predict), so an ONNX
file grucli writes has been checked before anyone deploys it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grucli.commands.verify_report import Comparison, compare
from grucli.convert.onnx_graph import Converted
from grucli.engine.graph import ModelReplay
from grucli.errors import GrucliError
from grucli.model.records import ModelFile, ModelLayers
from grucli.model.semantics import semantics_for

# float32 in ONNX Runtime against the float64 replay: the rounding of a float32 step, not 1e-6 absolute.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5


@dataclass(frozen=True)
class ConvertReport:
    path: str
    output: str
    nodes: int
    recurrent_nodes: tuple[str, ...]
    input_description: str
    comparison: Comparison | None  # ONNX Runtime against the replay; None when it could not run
    not_compared: str | None  # why there is no comparison
    atol: float
    rtol: float
    inputs: tuple[str, ...] = ()  # the graph's inputs as a user feeds them: "encoder_inputs float32 (batch, any, 3)"
    outputs: tuple[str, ...] = ()  # the graph's outputs, named after the Keras model's
    state_inputs: tuple[str, ...] = ()  # --state-io (and stateful layers): PATH/h_in ...
    state_outputs: tuple[str, ...] = ()  # PATH/h_out ...

    @property
    def passed(self) -> bool:
        return self.comparison is None or self.comparison.passed


def prove(
    result: Converted, model_file: ModelFile, layers: ModelLayers, inputs: Sequence[np.ndarray], atol: float, rtol: float
) -> tuple[Comparison | None, str | None]:
    """ONNX Runtime's outputs on `inputs` compared with the replay's; (None, why) without ONNX Runtime."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None, "onnxruntime is not installed (pip install 'grucli[onnx]'), so the file was not run"
    import onnxruntime

    session = onnxruntime.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {name: np.asarray(x, dtype) for name, dtype, x in zip(result.inputs, result.input_types, inputs)}
    batch = len(inputs[0])
    feeds.update({name: np.zeros((batch, units), np.float32) for name, units in result.state_inputs})  # one pass from zeros
    try:
        ran = session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors, reported as such
        raise ConvertRunError(f"ONNX Runtime could not run the converted model: {str(exc).splitlines()[0][:300]}") from None
    replay = ModelReplay(model_file, layers, semantics_for(model_file.keras_version, model_file.format), np.float64)
    expected = replay.run(list(inputs))
    outputs = ran[: len(result.outputs)]  # the model's own outputs; --state-io's final states follow them
    return compare([np.asarray(y, np.float64) for y in outputs], expected, atol, rtol, ("ONNX Runtime", "the replay")), None


class ConvertRunError(GrucliError):
    """ONNX Runtime refused or failed to run the written model."""


# The NumPy type of each element type an ONNX graph input may take.
ORT_INPUT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def run_onnx_file(path: Path, inputs: Sequence[np.ndarray], max_bytes: int, names: Sequence[str] = ()) -> list[np.ndarray]:
    """An ONNX file's outputs on `inputs` in ONNX Runtime (verify --onnx): fed by the Keras input
    `names` where the file's inputs carry them (grucli's do), else in order; each cast to the type
    the file declares for it; extra inputs (--state-io's) get zero states."""
    from grucli.files.regular import regular_file_size

    if importlib.util.find_spec("onnxruntime") is None:
        raise ConvertRunError("--onnx needs onnxruntime; install it with pip install 'grucli[onnx]'")
    size = regular_file_size(path, f"--onnx {path}")
    if size > max_bytes:
        raise ConvertRunError(f"--onnx {path} is {size} bytes, over the limit of {max_bytes} (--max-total-mb)")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's refusal of the file, reported as such
        raise ConvertRunError(f"ONNX Runtime cannot load --onnx {path}: {str(exc).splitlines()[0][:300]}") from None
    declared = session.get_inputs()
    if len(declared) < len(inputs):
        raise ConvertRunError(f"--onnx {path} takes {len(declared)} inputs; the model takes {len(inputs)}")
    by_name = {spec.name: spec for spec in declared}
    if names and all(name in by_name for name in names):
        fed = [by_name[name] for name in names]
    else:
        fed = list(declared[: len(inputs)])
    unknown = [spec for spec in fed if spec.type not in ORT_INPUT_TYPES]
    if unknown:
        raise ConvertRunError(
            f"--onnx {path} declares its input {unknown[0].name} as {unknown[0].type}; expected float, int32, int64 or bool"
        )
    batch = len(inputs[0])
    feeds: dict[str, np.ndarray] = {spec.name: np.asarray(x, ORT_INPUT_TYPES[spec.type]) for spec, x in zip(fed, inputs)}
    for spec in declared:
        if spec.name in feeds:
            continue
        if len(spec.shape) != 2 or not isinstance(spec.shape[1], int):
            raise ConvertRunError(
                f"--onnx {path} has the input {spec.name} of shape {spec.shape} beyond the model's; expected "
                "only --state-io's (batch, units) states"
            )
        feeds[spec.name] = np.zeros((batch, spec.shape[1]), np.float32)
    try:
        ran = session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        raise ConvertRunError(f"ONNX Runtime could not run --onnx {path}: {str(exc).splitlines()[0][:300]}") from None
    return [np.asarray(y) for y in ran]


def report(
    path: str | Path,
    output: str | Path,
    result: Converted,
    description: str,
    comparison: Comparison | None,
    not_compared: str | None,
    atol: float,
    rtol: float,
) -> ConvertReport:
    return ConvertReport(
        str(path),
        str(output),
        len(result.model.graph.node),
        result.recurrent_nodes,
        description,
        comparison,
        not_compared,
        atol,
        rtol,
        result.input_signatures(),
        result.outputs,
        tuple(f"{name} float32 (batch, {units})" for name, units in result.state_inputs),
        result.state_outputs,
    )
