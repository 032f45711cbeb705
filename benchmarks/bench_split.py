"""A step's units on two threads (grucli.engine.parallel) against one thread, per layer size and dtype:
where the split pays, which is what SPLIT_MIN_MULTIPLY_ADDS encodes.

    python benchmarks/bench_split.py [--rounds 5] [--short 200] [--long 1000]

Each case replays one layer (return_sequences, 64 features) with run_layer at two lengths, in
rounds taking turns between the split (forced on, whatever the size) and one thread (forced
off); the cost per step is the marginal one, (fastest at LONG - fastest at SHORT) / (LONG -
SHORT). Printed per case: both costs, their ratio (below 1: the split pays), the step's
multiply-adds and whether run_layer splits it on this machine as shipped. Meaningful on a
2-core machine; elsewhere the split is never chosen (and forcing it measures little).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from grucli.engine import parallel
from grucli.engine.steps import run_layer
from grucli.model.records import RecurrentLayer

FEATURES = 64
GATES = {"GRU": 3, "LSTM": 4, "SimpleRNN": 1}
CASES = [  # kind, dtype, units, batch
    ("LSTM", np.float64, 64, 32), ("LSTM", np.float64, 128, 32), ("LSTM", np.float64, 256, 32), ("LSTM", np.float64, 512, 32),
    ("LSTM", np.float64, 256, 8), ("LSTM", np.float32, 256, 32), ("LSTM", np.float32, 512, 32), ("LSTM", np.float32, 256, 128),
    ("GRU", np.float64, 128, 32), ("GRU", np.float64, 256, 32), ("GRU", np.float32, 256, 32), ("GRU", np.float32, 512, 32),
    ("SimpleRNN", np.float64, 256, 32), ("SimpleRNN", np.float64, 512, 32), ("SimpleRNN", np.float32, 1024, 32),
]


def layer_of(kind: str, units: int) -> RecurrentLayer:
    rng = np.random.default_rng(0)
    columns = GATES[kind] * units
    kernel = rng.normal(0, 0.1, (FEATURES, columns)).astype("float32")
    recurrent = rng.normal(0, 0.1, (units, columns)).astype("float32")
    bias = rng.normal(0, 0.1, (2, columns) if kind == "GRU" else (columns,)).astype("float32")
    config = {"activation": "tanh", "return_sequences": True}
    if kind != "SimpleRNN":
        config["recurrent_activation"] = "sigmoid"
    if kind == "GRU":
        config["reset_after"] = True
    return RecurrentLayer("l", kind, kind, units, FEATURES, config, (), kernel, recurrent, bias)


@contextmanager
def forced(split: bool) -> Iterator[None]:
    """The split forced on (any size, two CPUs) or off, for the duration."""
    saved = parallel.usable_cpus, parallel.SPLIT_MIN_MULTIPLY_ADDS, parallel._AVX512
    parallel.usable_cpus = (lambda: 2) if split else (lambda: 1)
    parallel.SPLIT_MIN_MULTIPLY_ADDS = {dtype: 0 for dtype in saved[1]}
    parallel._AVX512 = False  # measured with and without the split on any CPU
    try:
        yield
    finally:
        parallel.usable_cpus, parallel.SPLIT_MIN_MULTIPLY_ADDS, parallel._AVX512 = saved


def seconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def per_step(kind: str, dtype: type, units: int, batch: int, rounds: int, short: int, long: int) -> dict[bool, float]:
    layer = layer_of(kind, units)
    inputs = {n: np.random.default_rng(n).normal(size=(batch, n, FEATURES)).astype("float32") for n in (short, long)}
    fastest: dict[tuple[bool, int], float] = {}
    for _ in range(rounds):
        for split in (True, False):
            with forced(split):
                for n in (short, long):
                    took = seconds(lambda: run_layer(layer, inputs[n], dtype=dtype))
                    fastest[split, n] = min(fastest.get((split, n), took), took)
    return {split: (fastest[split, long] - fastest[split, short]) / (long - short) for split in (True, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long", type=int, default=1000)
    args = parser.parse_args()
    print(f"usable CPUs: {parallel.usable_cpus()}; NumPy with AVX-512: {parallel.numpy_has_avx512()}; marginal µs per step, {args.short} to {args.long} steps, fastest of {args.rounds} rounds in turns")
    for kind, dtype, units, batch in CASES:
        cost = per_step(kind, dtype, units, batch, args.rounds, args.short, args.long)
        multiply_adds = batch * (units + 1 + FEATURES) * GATES[kind] * units
        shipped = len(parallel.unit_ranges(units, multiply_adds, dtype, units_apart=True)) == 2
        print(f"{kind:9} {np.dtype(dtype).name:7} units {units:4} batch {batch:3} ({multiply_adds / 1e6:5.1f} M multiply-adds): "
              f"one thread {cost[False] * 1e6:7.1f} | split {cost[True] * 1e6:7.1f} ({cost[True] / cost[False]:.2f}x) | "
              f"split as shipped: {'yes' if shipped else 'no'}")


if __name__ == "__main__":
    main()
