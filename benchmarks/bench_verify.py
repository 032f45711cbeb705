"""verify's cost against its baselines, side by side in one run; prints ratios.

    python benchmarks/bench_verify.py [--timesteps 100] [--repeat 5]

1. Total wall time of `grucli verify MODEL --input X` against a bare script that loads the
   same model with Keras and calls predict (both fresh processes). Goal: at most 1.3x.
2. Cost per timestep of the NumPy replay (float64 and float32) against Keras's predict on the
   same input, in one process after a warm-up. Goal: float64 at most 1.5x, float32 at most 1x.

Models are GRU(256) and LSTM(256) on 64 features, batch 32, generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from common import compile_package  # noqa: E402

UNITS, FEATURES, BATCH = 256, 64, 32
BARE = "import numpy as np, keras; m = keras.saving.load_model({model!r}); m.predict(np.load({x!r}), verbose=0)"


def make_models(folder: Path, timesteps: int) -> dict[str, tuple[Path, Path]]:
    import keras

    made = {}
    for kind in ("GRU", "LSTM"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((timesteps, FEATURES)), getattr(keras.layers, kind)(UNITS)])
        path = folder / f"{kind.lower()}{UNITS}.keras"
        model.save(path)
        x = np.random.default_rng(0).normal(size=(BATCH, timesteps, FEATURES)).astype("float32")
        np.save(folder / f"{kind.lower()}_x.npy", x)
        made[kind] = (path, folder / f"{kind.lower()}_x.npy")
    return made


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def per_step_costs(model_path: Path, x_path: Path, timesteps: int, repeat: int) -> tuple[float, float, float]:
    import keras

    from grucli.engine.graph import ModelReplay
    from grucli.files.reader import read_model
    from grucli.model.layers import find_layers
    from grucli.model.semantics import semantics_for

    model = keras.saving.load_model(model_path)
    x = np.load(x_path)
    model_file = read_model(model_path)
    layers = find_layers(model_file)
    semantics = semantics_for(model_file.keras_version, model_file.format)
    replays = [ModelReplay(model_file, layers, semantics, dtype) for dtype in (np.float64, np.float32)]
    costs = []
    # Each back to back, predict's best case: run in turns with the replays, predict measured up
    # to twice as slow (TensorFlow's thread pools go idle between calls).
    for run in (lambda: model.predict(x, verbose=0), lambda: replays[0].run([x]), lambda: replays[1].run([x])):
        run()  # trace and warm up
        costs.append(median([_timed(run) for _ in range(repeat)]) / timesteps)
    predict, f64, f32 = costs
    return predict, f64, f32


def _timed(function: object) -> float:
    start = time.perf_counter()
    function()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> int:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        models = make_models(Path(folder), args.timesteps)
        print(f"GRU/LSTM({UNITS}), {FEATURES} features, batch {BATCH}, {args.timesteps} timesteps; median of {args.repeat}")
        print(f"{'':6} {'verify s':>9} {'bare s':>8} {'ratio':>6} | {'predict µs/step':>15} {'f64 µs/step':>12} {'ratio':>6} {'f32 µs/step':>12} {'ratio':>6}")
        for kind, (model, x) in models.items():
            verify_runs, bare_runs = [], []
            for _ in range(args.repeat):  # in turns
                verify_runs.append(wall([sys.executable, "-m", "grucli", "verify", str(model), "--input", str(x)]))
                bare_runs.append(wall([sys.executable, "-c", BARE.format(model=str(model), x=str(x))]))
            ours, bare = median(verify_runs), median(bare_runs)
            predict, f64, f32 = per_step_costs(model, x, args.timesteps, args.repeat)
            print(
                f"{kind:6} {ours:9.2f} {bare:8.2f} {ours / bare:5.2f}x | {predict * 1e6:15.0f} {f64 * 1e6:12.0f} "
                f"{f64 / predict:5.2f}x {f32 * 1e6:12.0f} {f32 / predict:5.2f}x"
            )
    print("goals: verify/bare <= 1.3x; float64 replay/predict <= 1.5x; float32 replay/predict <= 1.0x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
