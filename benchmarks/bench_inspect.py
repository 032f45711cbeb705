"""Wall-clock time of `grucli inspect` against loading the same model with Keras, side by side.

    python benchmarks/bench_inspect.py [--repeat 5]

Each command runs as a fresh process (that is what a user or a CI loop pays): `grucli inspect`
against a baseline script that loads the model with Keras 3 (or tf-keras for Keras 2 files,
which Keras 3 cannot load) and calls get_weights() on every layer. Prints the median times and
the ratio baseline / grucli; the goal is a ratio of at least 10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
