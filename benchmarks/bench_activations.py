"""`grucli activations` over a dataset where the cost shows: every gate of a GRU(256) over 20,000
sequences of 100 steps, against Keras's predict of the same model in the same run.

    python benchmarks/bench_activations.py [--rows 20000] [--small 2000] [--dask-rows 6000] [--repeat 2]

Model: GRU(256), return_sequences=True, on 64 features (Keras 3, TensorFlow backend); data a
float32 .npy of 20,000 × 100 × 64 (512 MB), made in a temporary folder.

1. Rows a second: the extraction (z, r, hh and h of every row and step, float32, written to a
   compressed Zarr store: 8 GB of values) against `model.predict` on the same .npy, which
   computes h only and writes nothing. Each in a process of its own, timed inside it (imports
   and loading left out), the fastest of --repeat. predict at its default batch of 32 (what
   `model.predict(x)` does) and at 256 (the batch activations runs). Goal: at least 1.0x the rows
   a second of predict.
2. Peak memory (the OS's ru_maxrss) of the whole `grucli activations` process at --rows and at
   --small rows. Goal: at most 1.2x: memory is one batch's, not the dataset's.
3. Dask: `--workers 2` against `--workers 1` (local clusters, one process a worker, started by
   each run) on --dask-rows rows, whole commands. Goal: 2 workers faster than 1 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from bench_big import LAUNCHER  # noqa: E402  (the same measuring launcher)
from common import ROOT, compile_package  # noqa: E402

UNITS, FEATURES, STEPS = 256, 64, 100

PREDICT = """
import os, sys, time, json
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2], mmap_mode="r")
batch = int(sys.argv[3])
model.predict(np.asarray(x[:batch]), batch_size=batch, verbose=0)  # traced once, as a user's second call
start = time.perf_counter()
model.predict(x, batch_size=batch, verbose=0)
print(json.dumps(time.perf_counter() - start))
"""
EXTRACT = """
import sys, json, shutil
import grucli
model = grucli.load(sys.argv[1])
shutil.rmtree(sys.argv[3], ignore_errors=True)
report = grucli.activations(model, sys.argv[2], sys.argv[3])
print(json.dumps([report.seconds, report.settings.batch_size]))
"""


def make(folder: Path, rows: int, small: int) -> tuple[Path, Path, Path]:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.GRU(UNITS, return_sequences=True)])
    model.save(folder / "gru256.keras")
    rng = np.random.default_rng(0)
    big = np.lib.format.open_memmap(folder / "x_big.npy", mode="w+", dtype=np.float32, shape=(rows, STEPS, FEATURES))
    for start in range(0, rows, 1000):
        big[start : start + 1000] = rng.normal(size=(min(1000, rows - start), STEPS, FEATURES))
    big.flush()
    del big
    np.save(folder / "x_small.npy", np.load(folder / "x_big.npy", mmap_mode="r")[:small])
    return folder / "gru256.keras", folder / "x_big.npy", folder / "x_small.npy"


def in_process(code: str, *arguments: str) -> object:
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def whole(*command: str) -> tuple[float, float]:
    """Seconds and peak MiB of a whole command."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True, cwd=ROOT)
    code, seconds, rss, stderr = json.loads(result.stdout)
    if code != 0:
        raise SystemExit(f"{command} failed ({code}): {stderr}")
    return seconds, rss


def main() -> int:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--dask-rows", type=int, default=6_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grucli-bench-activations-") as temp:
        folder = Path(temp)
        model, big, small = make(folder, args.rows, args.small)
        store = folder / "acts.zarr"
        print(f"GRU({UNITS}), {FEATURES} features, {STEPS} steps; {args.rows:,} rows ({big.stat().st_size / 2**20:,.0f} MiB of input)")

        # 1. rows a second, fastest of --repeat, predict and activations in turns
        predict: dict[int, float] = {32: float("inf"), 256: float("inf")}
        extract = float("inf")
        for _ in range(args.repeat):
            for batch in predict:
                predict[batch] = min(predict[batch], float(in_process(PREDICT, str(model), str(big), str(batch))))  # type: ignore[arg-type]
            seconds, batch_size = in_process(EXTRACT, str(model), str(big), str(store))  # type: ignore[misc]
            extract = min(extract, seconds)
        stored = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        shutil.rmtree(store)
        rate = args.rows / extract
        print(f"activations (z, r, hh, h; float32; batches of {batch_size}): {extract:6.1f} s  {rate:8,.0f} rows/s  "
              f"store {stored / 2**30:.2f} GiB ({args.rows * STEPS * UNITS * 4 * 4 / stored:.2f}x compression)")
        for batch, seconds in predict.items():
            print(f"predict at batch {batch:>3} (h only, nothing written):       {seconds:6.1f} s  {args.rows / seconds:8,.0f} rows/s"
                  f"   activations/predict rows a second: {rate / (args.rows / seconds):.2f}x")

        # 2. peak memory, whole processes
        peaks = {}
        for name, data in (("small", small), ("big", big)):
            shutil.rmtree(store, ignore_errors=True)
            _, peaks[name] = whole(sys.executable, "-m", "grucli", "activations", str(model), "--input", str(data), "-o", str(store))
        shutil.rmtree(store, ignore_errors=True)
        print(f"peak memory: {args.small:,} rows {peaks['small']:.0f} MiB, {args.rows:,} rows {peaks['big']:.0f} MiB "
              f"({peaks['big'] / peaks['small']:.2f}x)")

        # 3. Dask workers
        dask_data = folder / "x_dask.npy"
        np.save(dask_data, np.load(big, mmap_mode="r")[: args.dask_rows])
        times = {}
        for workers in (1, 2):
            best = float("inf")
            for _ in range(args.repeat):
                shutil.rmtree(store, ignore_errors=True)
                seconds, _ = whole(sys.executable, "-m", "grucli", "activations", str(model), "--input", str(dask_data), "-o", str(store),
                                   "--workers", str(workers))
                best = min(best, seconds)
            times[workers] = best
        print(f"Dask, {args.dask_rows:,} rows, whole commands: --workers 1 {times[1]:.1f} s, --workers 2 {times[2]:.1f} s "
              f"({times[1] / times[2]:.2f}x faster)")
        print("goals: activations at least 1.0x predict's rows/s (at its default batch); peak memory at "
              f"{args.rows:,} rows at most 1.2x that at {args.small:,}; --workers 2 faster than --workers 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
