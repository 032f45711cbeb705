"""Cold start of `grucli inspect` on small models, against Keras and against a bare h5py read.

    python benchmarks/bench_inspect.py [--repeat 5] [--cold-repeat 20]

Each command runs as a fresh process (that is what a user or a CI loop pays).

1. Against a script that loads the model with Keras 3 (or tf-keras for Keras 2 files, which
   Keras 3 cannot load) and calls get_weights() on every layer: median times and the ratio
   Keras / grucli. Goal: at least 10.
2. Against a bare h5py script that reads the same arrays (for a .keras, out of its zip): the
   two run in turns, many times; medians and the ratio grucli / bare. Goal: at most 1.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import compile_package

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("sample_models/k3_gru.keras", "keras"),
    ("sample_models/k3_bidir_concat.keras", "keras"),
    ("sample_models/tfk_gru_reset_before.h5", "tf_keras"),
    ("../shared/real_models/trafficflow_lstm_keras2.1.4.h5", "tf_keras"),
]
BASELINE = {
    "keras": "import keras; m = keras.saving.load_model({path!r}, compile=False); [l.get_weights() for l in m.layers]",
    "tf_keras": "import tf_keras; m = tf_keras.models.load_model({path!r}, compile=False); [l.get_weights() for l in m.layers]",
}


def wall_time(command: list[str]) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def median_time(command: list[str], repeat: int) -> float:
    wall_time(command)  # warm the file cache and the interpreter's bytecode
    return statistics.median(wall_time(command) for _ in range(repeat))


BARE_H5 = """
import sys, h5py
def read(name, item):
    if isinstance(item, h5py.Dataset):
        item[()]
with h5py.File(sys.argv[1], "r") as f:
    f.visititems(read)
"""
BARE_KERAS = """
import io, sys, zipfile, h5py
def read(name, item):
    if isinstance(item, h5py.Dataset):
        item[()]
with zipfile.ZipFile(sys.argv[1]) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
    f.visititems(read)
"""


def interleaved_medians(commands: list[list[str]], repeat: int) -> list[float]:
    """Median wall time of each command, run in turns so that a noisy moment hits all alike."""
    for command in commands:
        wall_time(command)  # warm the file cache and the interpreter's bytecode
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(repeat):
        for index, command in enumerate(commands):
            times[index].append(wall_time(command))
    return [statistics.median(runs) for runs in times]


def cold_start(repeat: int) -> list[float]:
    print(f"\n{'model':48} {'grucli s':>9} {'bare h5py s':>11} {'ratio':>7}")
    ratios = []
    for relative in ("sample_models/tfk_gru.h5", "sample_models/k3_gru.keras", "sample_models/k3_lstm.h5"):
        path = str(ROOT / relative)
        bare = BARE_KERAS if relative.endswith(".keras") else BARE_H5
        ours, theirs = interleaved_medians([[sys.executable, "-m", "grucli", "inspect", path], [sys.executable, "-c", bare, path]], repeat)
        ratios.append(ours / theirs)
        print(f"{relative:48} {ours:9.3f} {theirs:11.3f} {ours / theirs:6.2f}x")
    print(f"largest ratio: {max(ratios):.2f}x (goal: at most 1.5x)")
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold-repeat", type=int, default=30)
    args = parser.parse_args()
    compile_package()
    print(f"{'model':48} {'grucli s':>9} {'keras s':>9} {'ratio':>7}")
    ratios = []
    for relative, loader in CASES:
        path = ROOT / relative
        if not path.exists():
            print(f"{relative:48} missing, skipped")
            continue
        ours = median_time([sys.executable, "-m", "grucli", "inspect", str(path)], args.repeat)
        theirs = median_time([sys.executable, "-c", BASELINE[loader].format(path=str(path))], args.repeat)
        ratios.append(theirs / ours)
        print(f"{relative:48} {ours:9.3f} {theirs:9.3f} {theirs / ours:6.1f}x")
    if ratios:
        print(f"smallest ratio: {min(ratios):.1f}x (goal: at least 10x)")
    cold_start(args.cold_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
