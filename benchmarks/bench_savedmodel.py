"""`grucli inspect` of a SavedModel folder and of a TensorFlow checkpoint, against tf-keras loading them.

    python benchmarks/bench_savedmodel.py

A Bidirectional GRU(256) → LSTM(256) → Dense model is saved by tf-keras as a SavedModel folder and
as a checkpoint (`save_weights`); each command runs as a fresh process, grucli and tf-keras in
turns, medians of 5. The baselines: `tf_keras.models.load_model(folder)` and building the model
then `load_weights(prefix)`, each followed by get_weights() on every layer. Goal: grucli at least
10x faster.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import compile_package

RUNS = 5
GOAL = 10.0
BUILD = """
import tf_keras
layers = tf_keras.layers
model = tf_keras.Sequential([layers.Bidirectional(layers.GRU(256, return_sequences=True), input_shape=(None, 64)),
                             layers.LSTM(256), layers.Dense(10)])
"""


def _timed(command: list[str]) -> float:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    compile_package()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        saved, prefix = folder / "saved", folder / "ckpt" / "weights"
        subprocess.run([sys.executable, "-c", BUILD + f"model.save({str(saved)!r}, save_format='tf'); model.save_weights({str(prefix)!r})"],
                       check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stderr=subprocess.DEVNULL)
        cases = {
            "SavedModel folder": (saved, f"import tf_keras; m = tf_keras.models.load_model({str(saved)!r}, compile=False); "
                                         "[l.get_weights() for l in m.layers]"),
            "checkpoint (save_weights)": (prefix, BUILD + f"model.load_weights({str(prefix)!r}); [l.get_weights() for l in model.layers]"),
        }
        print(f"{'file':28} {'grucli s':>9} {'tf-keras s':>11} {'ratio':>7}")
        smallest = float("inf")
        for label, (path, baseline) in cases.items():
            ours, theirs = [], []
            for _ in range(RUNS):
                ours.append(_timed([sys.executable, "-m", "grucli", "inspect", str(path)]))
                theirs.append(_timed([sys.executable, "-c", baseline]))
            ratio = statistics.median(theirs) / statistics.median(ours)
            smallest = min(smallest, ratio)
            print(f"{label:28} {statistics.median(ours):9.2f} {statistics.median(theirs):11.2f} {ratio:6.1f}x")
        print(f"smallest ratio: {smallest:.1f}x (goal: at least {GOAL:.0f}x)")
        return 0 if smallest >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
