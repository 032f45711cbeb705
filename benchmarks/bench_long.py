"""Long sequences: the replay's cost per timestep, its memory and verify's overhead, at lengths
where the per-step cost shows (500 and 2500 timesteps), each against its baseline in one run.

    python benchmarks/bench_long.py [--repeat 9] [--process-repeat 9] [--short 500] [--long 2500] [--in-process-only] [--kinds GRU,LSTM]

Model: GRU(256) and LSTM(256), return_sequences=True, on 64 features, batch 32 (Keras 3,
TensorFlow backend), generated into a temporary folder with inputs of both lengths.

1. Marginal cost per timestep, (time at LONG - time at SHORT) / (LONG - SHORT), which takes
   the fixed costs (imports, loading, tracing) out:
   - in-process: the replay (float64 and float32) against Keras's predict, each loaded and
     run once on every input (predict traces per input shape) in a worker process of its own;
     in each round every runner in turn runs both lengths back to back; printed are each
     runner's marginal cost from its fastest run at each length over the rounds and its ratio to
     predict's made the same way (the goal's figure; see PerStep for why), and, beside it, each
     round's ratio and their median; plus torch.nn.GRU/LSTM on the CPU with the weights
     `grucli export --layout torch` writes, when PyTorch is installed (what a user might pick
     instead);
   - whole processes: `grucli replay` against a bare script that loads the model with Keras and
     calls predict.
   Goals: float64 at most 1.5x predict's per-step cost; float32 at most 0.7x.
2. Peak memory (the OS's ru_maxrss) of `grucli replay` at LONG timesteps in float64, the input
   and output files of the run included. Goal: at most 400 MiB.
3. `grucli verify` at LONG timesteps against the bare load-and-predict script, whole processes.
   Goal: at most 1.3x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from bench_big import LAUNCHER  # noqa: E402  (the same measuring launcher)
from common import compile_package  # noqa: E402

UNITS, FEATURES, BATCH = 256, 64, 32
BARE = "import numpy as np, keras; m = keras.saving.load_model({model!r}); m.predict(np.load({x!r}), verbose=0, batch_size={batch})"


def make_models(folder: Path, lengths: tuple[int, ...]) -> dict[str, Path]:
    import keras

    made = {}
    for kind in ("GRU", "LSTM"):
        keras.utils.set_random_seed(0)
        # Any length: one file serves both input lengths.
        model = keras.Sequential([keras.Input((None, FEATURES)), getattr(keras.layers, kind)(UNITS, return_sequences=True)])
        path = folder / f"{kind.lower()}{UNITS}.keras"
        model.save(path)
        made[kind] = path
    for length in lengths:
        x = np.random.default_rng(length).normal(size=(BATCH, length, FEATURES)).astype("float32")
        np.save(folder / f"x{length}.npy", x)
    return made


def process(command: list[str]) -> tuple[float, float]:
    """Seconds and peak MiB of one command, run as its own process."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True)
    code, seconds, peak, stderr = json.loads(result.stdout)
    if code not in (0, 1):
        raise SystemExit(f"{command} failed ({code}): {stderr}")
    return seconds, peak


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@dataclass(frozen=True)
class PerStep:
    """One runner's marginal seconds per step, measured in rounds beside predict's.

    `best`: (min of its long runs - min of its short runs) / steps; `best_ratio`: that against
    predict's figure made the same way (the goal's figure: the cost of the code on this machine
    when nothing slows it, as the issue's own figures were minimums of interleaved runs). The VM's
    cores change speed by up to 2x for seconds at a time, independently of load (NumPy's float64
    exp measured 5.4 and 10-11 ns a value in runs seconds apart, with the other core idle or busy
    alike), and a slow spell only ever adds time: the minimum over rounds leaves it out for every
    runner alike, where a ratio of two runs can pair one runner's slow spell with the other's fast
    one. `median_ratio` and `ratios`: each round's ratio of marginal costs and their median,
    printed beside it to show the spread."""

    best: float
    best_ratio: float
    median_ratio: float
    ratios: list[float]


def in_process(model_path: Path, kind: str, folder: Path, lengths: tuple[int, int], repeat: int) -> dict[str, PerStep]:
    """Each runner's marginal cost per step against predict's (`PerStep`).

    Each runner lives in a worker process of its own (as a user runs it: TensorFlow's thread pools,
    busy after a predict, would slow a replay beside them), loaded and run once on each input. In each
    round the parent asks every runner, in turns (who goes first rotates), for a run at the short
    length and one at the long length back to back."""
    runners = ["predict", "float64", "float32"]
    try:
        import torch  # noqa: F401

        runners.append("torch")
    except ImportError:
        pass
    workers = {runner: _Worker(runner, model_path, kind, folder, lengths) for runner in runners}
    short, long = lengths
    times: dict[str, list[tuple[float, float]]] = {runner: [] for runner in runners}  # (short, long) per round
    try:
        for round_number in range(repeat):
            turn = runners[round_number % len(runners):] + runners[:round_number % len(runners)]
            for runner in turn:
                pair = []
                for length in lengths:
                    pair.append(workers[runner].time(length))
                    time.sleep(SETTLE_SECONDS)
                times[runner].append((pair[0], pair[1]))
    finally:
        for worker_process in workers.values():
            worker_process.close()

    def marginal(pair: tuple[float, float]) -> float:
        return (pair[1] - pair[0]) / (long - short)

    # each runner's fastest short run and fastest long run, wherever in the rounds they fell
    best = {runner: marginal((min(t[0] for t in runs), min(t[1] for t in runs))) for runner, runs in times.items()}
    results = {}
    for runner in runners:
        ratios = [marginal(mine) / marginal(theirs) for mine, theirs in zip(times[runner], times["predict"])]
        results[runner] = PerStep(best[runner], best[runner] / best["predict"], statistics.median(ratios), ratios)
    return results


# After each timed run: OpenBLAS's and TensorFlow's threads spin a while after their work, and on
# 2 cores a spinning thread of the previous runner would slow the next one.
SETTLE_SECONDS = 0.3


class _Worker:
    """A runner in a process of its own: `time(length)` runs it once on the input of that length."""

    def __init__(self, runner: str, model_path: Path, kind: str, folder: Path, lengths: tuple[int, int]) -> None:
        command = [sys.executable, __file__, "--worker", runner, str(model_path), kind, str(folder), *map(str, lengths)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.runner = runner
        self._reply()  # loaded and warmed up

    def _reply(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.runner} worker stopped (exit {self.process.wait()})")
        return line.strip()

    def time(self, length: int) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{length}\n")
        self.process.stdin.flush()
        return float(self._reply())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


def worker(runner_name: str, model_path: Path, kind: str, folder: Path, lengths: tuple[int, int]) -> None:
    """Load one runner, run it once on every input (Keras traces per input shape), print "ready";
    then for each length read from stdin, run once untimed on 50 steps and once timed on the input
    of that length, and print the seconds."""
    inputs = {length: np.load(folder / f"x{length}.npy") for length in lengths}
    if runner_name == "predict":
        import keras

        model = keras.saving.load_model(model_path)

        def run(x: np.ndarray) -> object:
            return model.predict(x, verbose=0, batch_size=BATCH)
    elif runner_name == "torch":
        made = _torch_runner(model_path, kind, folder)
        assert made is not None
        run = made
    else:
        from grucli.engine.graph import ModelReplay
        from grucli.files.reader import read_model
        from grucli.model.layers import find_layers
        from grucli.model.semantics import semantics_for

        model_file = read_model(model_path)
        layers = find_layers(model_file)
        semantics = semantics_for(model_file.keras_version, model_file.format)
        dtype = np.float64 if runner_name == "float64" else np.float32

        def run(x: np.ndarray) -> object:
            return ModelReplay(model_file, layers, semantics, dtype).run([x])
    warm_up = inputs[lengths[0]][:, :50]
    for x in (warm_up, *inputs.values()):  # predict traces once per input shape: not in a timed run
        run(x)
    print("ready", flush=True)
    for line in sys.stdin:
        run(warm_up)  # untimed: a run that follows an idle spell starts slow on this VM
        print(timed(lambda: run(inputs[int(line)])), flush=True)


def _torch_runner(model_path: Path, kind: str, folder: Path) -> Callable[[np.ndarray], object] | None:
    try:
        import torch
    except ImportError:
        return None
    exported = folder / f"{kind.lower()}_torch.npz"
    subprocess.run([sys.executable, "-m", "grucli", "export", str(model_path), "--layout", "torch", "-o", str(exported), "--force"],
                   check=True, capture_output=True)
    weights = np.load(exported)
    path = next(key.split("/")[0] for key in weights.files if key.endswith("/constructor"))
    module = getattr(torch.nn, kind)(input_size=FEATURES, hidden_size=UNITS, batch_first=True)
    module.load_state_dict({key.split("/")[-1]: torch.from_numpy(weights[key]) for key in weights.files
                            if key.startswith(path + "/") and not key.endswith("/constructor")})
    module.eval()

    def run(x: np.ndarray) -> object:
        with torch.no_grad():
            return module(torch.from_numpy(x))

    return run


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        runner, model, kind, folder, short, long = sys.argv[2:8]
        worker(runner, Path(model), kind, Path(folder), (int(short), int(long)))
        return 0
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="in-process timings: rounds of runs in turns")
    # 9, not 5: a whole-process figure subtracts two minimums of 3 to 6 s processes, and with 5 runs
    # the float64 LSTM's moved from 1.35x to 1.60x between runs of the same code (2026-11-24).
    parser.add_argument("--process-repeat", type=int, default=9, help="whole-process timings: runs per command and length")
    parser.add_argument("--short", type=int, default=500)
    parser.add_argument("--long", type=int, default=2500)
    parser.add_argument("--in-process-only", action="store_true", help="only the in-process per-step costs (no whole processes, memory or verify)")
    parser.add_argument("--kinds", default="GRU,LSTM", help="the layers measured, of GRU and LSTM (comma-separated)")
    args = parser.parse_args()
    lengths = (args.short, args.long)
    steps = args.long - args.short
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        models = make_models(folder, lengths)
        print(f"{{{args.kinds}}}({UNITS}), return_sequences, {FEATURES} features, batch {BATCH}; marginal cost per step from "
              f"{args.short} to {args.long} timesteps; in-process: {args.repeat} rounds in turns, whole processes: "
              f"minimum of {args.process_repeat}")
        for kind, model in models.items():
            if kind not in args.kinds.split(","):
                continue
            costs = in_process(model, kind, folder, lengths, args.repeat)
            line = f"{kind:5} in-process µs/step (min over rounds): predict {costs['predict'].best * 1e6:6.0f}"
            for name in ("float64", "float32", "torch"):
                if name in costs:
                    line += f" | {name} {costs[name].best * 1e6:6.0f} ({costs[name].best_ratio:4.2f}x)"
            print(line, flush=True)
            print(f"{kind:5} in-process ratio to predict, round by round: " + " | ".join(
                f"{name} " + " ".join(f"{ratio:.2f}" for ratio in costs[name].ratios) + f" (median {costs[name].median_ratio:.2f})"
                for name in ("float64", "float32", "torch") if name in costs))
            if args.in_process_only:
                continue

            whole: dict[tuple[str, int], float] = {}
            peaks: dict[tuple[str, int], float] = {}
            for _ in range(args.process_repeat):
                for length in lengths:
                    x = folder / f"x{length}.npy"
                    commands = {
                        "bare": [sys.executable, "-c", BARE.format(model=str(model), x=str(x), batch=BATCH)],
                        "replay64": [sys.executable, "-m", "grucli", "replay", str(model), "--input", str(x), "-o",
                                     str(folder / "out.npy"), "--force"],
                        "replay32": [sys.executable, "-m", "grucli", "replay", str(model), "--input", str(x), "-o",
                                     str(folder / "out.npy"), "--force", "--dtype", "float32"],
                        "verify": [sys.executable, "-m", "grucli", "verify", str(model), "--input", str(x)],
                    }
                    for runner, command in commands.items():
                        if runner == "verify" and length != args.long:
                            continue
                        seconds, peak = process(command)
                        whole[runner, length] = min(whole.get((runner, length), float("inf")), seconds)
                        peaks[runner, length] = max(peaks.get((runner, length), 0.0), peak)
            marginal = {runner: (whole[runner, args.long] - whole[runner, args.short]) / steps for runner in ("bare", "replay64", "replay32")}
            print(f"{kind:5} whole processes µs/step: load+predict {marginal['bare'] * 1e6:6.0f} | replay float64 "
                  f"{marginal['replay64'] * 1e6:6.0f} ({marginal['replay64'] / marginal['bare']:4.2f}x) | replay float32 "
                  f"{marginal['replay32'] * 1e6:6.0f} ({marginal['replay32'] / marginal['bare']:4.2f}x)")
            print(f"{kind:5} peak memory at {args.long} steps: replay float64 {peaks['replay64', args.long]:5.0f} MiB, float32 "
                  f"{peaks['replay32', args.long]:5.0f} MiB, load+predict {peaks['bare', args.long]:5.0f} MiB")
            verify, bare = whole["verify", args.long], whole["bare", args.long]
            print(f"{kind:5} verify at {args.long} steps: {verify:5.2f} s against load+predict {bare:5.2f} s ({verify / bare:4.2f}x)",
                  flush=True)
    print("goals: float64 per step <= 1.5x predict, float32 <= 0.7x; float64 replay peak <= 400 MiB; verify <= 1.3x load+predict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
