"""Big files: `inspect` and `export` on a GRU(4096) model against a bare h5py read of its arrays.

    python benchmarks/bench_big.py [--units 4096] [--repeat 3]

Generates a Keras 3 model GRU(UNITS) on UNITS features (about 400 MB of weights for 4096), saved
as legacy `.h5` and as `.keras`, in a temporary folder. Each command runs as its own process
(started from a small launcher, so the memory figure is the command's own); wall time is the
median of the repeats and peak memory the operating system's `ru_maxrss`.

Goals: time within 2x of the bare h5py read of the .h5; peak memory under 1.5x the largest
single weight array plus a small constant (the interpreter and libraries: the bare read's
figure minus the array it holds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import compile_package

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
stderr = process.stderr.read().decode()
_, status, usage = os.wait4(process.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024, stderr[-300:]]))
"""
BARE_H5 = """
import sys, h5py
def read(name, item):
    if isinstance(item, h5py.Dataset):
        item[()]  # read every array once; visititems stops at a callback that returns a value
with h5py.File(sys.argv[1], "r") as f:
    f.visititems(read)
"""
BARE_IMPORT = "import h5py, numpy"


def make_model(folder: Path, units: int) -> tuple[Path, Path, int]:
    code = f"""
import os; os.environ["KERAS_BACKEND"] = "tensorflow"
import keras
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((10, {units})), keras.layers.GRU({units}, recurrent_initializer="glorot_uniform")])
model.save({str(folder / "big.h5")!r})
model.save({str(folder / "big.keras")!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL)
    largest = units * 3 * units * 4  # kernel and recurrent kernel: (units, 3*units) float32
    return folder / "big.h5", folder / "big.keras", largest


def measure(command: list[str], repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True)
        code, seconds, rss, stderr = json.loads(result.stdout)
        if code != 0:
            raise SystemExit(f"{command} failed ({code}): {stderr}")
        runs.append((seconds, rss))
    return statistics.median(s for s, _ in runs), max(r for _, r in runs)


if __name__ == "__main__":
    sys.exit(main())
