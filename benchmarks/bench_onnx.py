"""ONNX Runtime on grucli's converted file against Keras's predict, on long sequences; and convert's
time against Keras's own ONNX export, where that works. One run, ratios printed.

    python benchmarks/bench_onnx.py

- inference: GRU(256) → GRU(256) → Dense and LSTM(256) → Dense over 1000 and 4000 timesteps
  (batch 16), each timed warm (the median of 5 runs after one), ONNX Runtime on the `.onnx`
  that `grucli convert` wrote against `model.predict` on the same input, in this process;
- convert: `grucli convert` (a fresh process, which includes running the file once in ONNX
  Runtime as its proof) against `model.export(format="onnx")` of Keras 3: on the TensorFlow
  backend it needs tf2onnx (where it fails, the line says why instead of a ratio); on the PyTorch
  backend (a process of its own) it traces the model through torch.onnx, timed without the
  model's loading, and its file is run at the traced length and another, against grucli's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from common import ROOT, compile_package, median_seconds  # noqa: E402


def _models(keras: Any) -> dict[str, Any]:
    L = keras.layers
    rng = np.random.default_rng(0)
    gru = keras.Sequential([keras.Input((None, 32)), L.GRU(256, return_sequences=True), L.GRU(256), L.Dense(8)])
    lstm = keras.Sequential([keras.Input((None, 32)), L.LSTM(256), L.Dense(8)])
    for model in (gru, lstm):
        model.set_weights([rng.normal(scale=0.05, size=w.shape).astype("float32") for w in model.get_weights()])
    return {"GRU(256)x2": gru, "LSTM(256)": lstm}


def main() -> int:
    import keras
    import onnxruntime

    compile_package()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        print(f"{'model':12} {'steps':>6} {'predict s':>10} {'ORT s':>8} {'ORT/predict':>12}")
        for name, model in _models(keras).items():
            path = folder / f"{name}.keras"
            model.save(path)
            onnx_path = folder / f"{name}.onnx"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "grucli", "convert", str(path), "-o", str(onnx_path), "--timesteps", "50"],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            convert_seconds = time.perf_counter() - start
            session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            for steps in (1000, 4000):
                x = np.random.default_rng(steps).normal(size=(16, steps, 32)).astype("float32")
                predict = median_seconds(lambda: model.predict(x, verbose=0, batch_size=16))
                name_in = session.get_inputs()[0].name  # the Keras input's name, which convert keeps
                ort = median_seconds(lambda: session.run(None, {name_in: x}))
                print(f"{name:12} {steps:6d} {predict:10.3f} {ort:8.3f} {ort / predict:11.2f}x")
            try:
                start = time.perf_counter()
                model.export(str(folder / f"{name}_keras.onnx"), format="onnx", verbose=False)
                keras_seconds = time.perf_counter() - start
                print(f"  convert {convert_seconds:.2f} s (fresh process, proof included); Keras export {keras_seconds:.2f} s: "
                      f"{convert_seconds / keras_seconds:.2f}x")
            except Exception as exc:  # noqa: BLE001 - Keras's own export failing is the finding
                print(f"  convert {convert_seconds:.2f} s (fresh process, proof included); Keras export (TensorFlow backend) failed: "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            print("  " + _torch_backend_export(path, folder / f"{name}_torch.onnx", onnx_path, convert_seconds))
    return 0


# Keras 3 on the PyTorch backend exports through torch.onnx, in a process of its own (the backend is
# chosen at import): the model is called once (export needs that), the export timed, and the file it
# wrote run at the length it was traced at and at another, both files against predict on that backend.
_TORCH_EXPORT = """
import sys, time, numpy as np, keras, onnxruntime
source, target, ours = sys.argv[1:4]
model = keras.saving.load_model(source)
model.predict(np.zeros((1, 50, 32), np.float32), verbose=0)
start = time.perf_counter()
model.export(target, format="onnx", verbose=False)
seconds = time.perf_counter() - start
theirs, mine = (onnxruntime.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (target, ours))
errors = []
for steps in (50, 200):
    x = np.random.default_rng(steps).normal(size=(4, steps, 32)).astype(np.float32)
    try:
        got = theirs.run(None, {theirs.get_inputs()[0].name: x})[0]
        predicted = model.predict(x, verbose=0)
        errors.append(f"{steps} steps: max |export - predict| {np.abs(got - predicted).max():.1e}, "
                      f"|grucli - predict| {np.abs(mine.run(None, {mine.get_inputs()[0].name: x})[0] - predicted).max():.1e}")
    except Exception as exc:
        errors.append(f"{steps} steps: the exported file fails ({type(exc).__name__})")
print(f"RESULT {seconds:.3f}|{'; '.join(errors)}")
"""


def _torch_backend_export(path: Path, target: Path, ours: Path, convert_seconds: float) -> str:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "Keras export (PyTorch backend): torch is not installed"
    ran = subprocess.run([sys.executable, "-c", _TORCH_EXPORT, str(path), str(target), str(ours)], capture_output=True, text=True,
                         env={**os.environ, "KERAS_BACKEND": "torch"})
    if ran.returncode != 0:
        return f"Keras export (PyTorch backend) failed: {(ran.stderr.strip().splitlines() or ['?'])[-1][:160]}"
    result = [line for line in ran.stdout.splitlines() if line.startswith("RESULT ")]
    if not result:
        return f"Keras export (PyTorch backend) printed no result: {ran.stdout.strip()[-160:]}"
    seconds, checks = result[-1][len("RESULT "):].split("|", 1)
    return (f"Keras export (PyTorch backend, traced at 50 steps) {float(seconds):.2f} s; convert/export "
            f"{convert_seconds / float(seconds):.2f}x; {checks}")


    return 0


if __name__ == "__main__":
    sys.exit(main())
