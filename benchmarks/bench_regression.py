"""This checkout against an earlier grucli, on the same Keras 3 model, in one run: does it stay as fast?

    python benchmarks/bench_regression.py [--baseline REF]

The baseline (default: 7cf63dd, main as it landed on 2026-12-03 with convert and report, the
commit before the work of issue 33: a baseline that has every command the small-model row runs) is
checked out into a temporary git worktree; both trees' `python -m grucli` run as fresh
processes, in turns (medians of 5), so that the machine's drift hits both alike:

- `replay` of GRU(256) → GRU(256) → Dense over 1000 timesteps (batch 16): where the recurrent loop
  costs, and the graph executor around it would show;
- `inspect` and `export` of a GRU(2048) `.keras` file (48 MiB of weights), and `check` and `diff`
  of it, where the per-gate work costs;
- every command on a small sample model (a Bidirectional LSTM `.keras`), where start-up and
  imports are most of the time: inspect, inspect --json, explain --keras none, export, check,
  diff and verify (the last with Keras, whose import dominates).

Goal: every ratio (this checkout / baseline) at most 1.15 by default (the VM's run-to-run drift
is about 10%); `--goal 1.05` for a change that must not cost anything.
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

from common import ROOT, compile_package

DEFAULT_BASELINE = "7cf63dd"
RUNS = 5
GOAL = 1.15


def _build_models(folder: Path) -> tuple[Path, Path, Path]:
    script = f"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
rng = np.random.default_rng(0)
inputs = keras.Input((None, 32))
hidden = keras.layers.GRU(256, return_sequences=True)(inputs)
model = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.GRU(256)(hidden)))
model.set_weights([rng.normal(scale=0.05, size=w.shape).astype("float32") for w in model.get_weights()])
model.save({str(folder / "replay.keras")!r})
np.save({str(folder / "x.npy")!r}, rng.normal(size=(16, 1000, 32)).astype("float32"))
big = keras.Sequential([keras.Input((None, 64)), keras.layers.GRU(2048)])
big.set_weights([rng.normal(scale=0.05, size=w.shape).astype("float32") for w in big.get_weights()])
big.save({str(folder / "big.keras")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    return folder / "replay.keras", folder / "x.npy", folder / "big.keras"


def _worktree(ref: str, folder: Path) -> Path:
    tree = folder / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), ref], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "grucli")], check=True)
    return tree


def _timed(tree: Path, args: list[str]) -> float:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "grucli", *args], env=environment, cwd=tree,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: check found something, which is a result too
        raise SystemExit(f"grucli {' '.join(args)} in {tree} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the grucli to compare with")
    parser.add_argument("--goal", type=float, default=GOAL, help="the largest ratio that passes")
    parser.add_argument("--runs", type=int, default=RUNS, help="runs of each command in each tree (the median counts)")
    options = parser.parse_args()
    compile_package()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        replay_model, x, big = _build_models(folder)
        baseline = _worktree(options.baseline, folder)
        try:
            small = str(ROOT / "sample_models" / "k3_bidir_concat.keras")
            commands = {
                "replay GRU(256)x2, 1000 steps": ["replay", str(replay_model), "--input", str(x), "-o", str(folder / "y.npy"), "--force"],
                "inspect GRU(2048) .keras": ["inspect", str(big)],
                "export GRU(2048) .keras": ["export", str(big), "-o", str(folder / "g.npz"), "--force"],
                "check GRU(2048) .keras": ["check", str(big), "--max-spectral-norm", "1e9"],
                "diff GRU(2048) .keras": ["diff", str(big), str(big)],
                "inspect small": ["inspect", small],
                "inspect --json small": ["inspect", small, "--json"],
                "explain --keras none small": ["explain", small, "--keras", "none"],
                "export small": ["export", small, "-o", str(folder / "g.npz"), "--force"],
                "check small": ["check", small, "--max-spectral-norm", "1e9", "--saturation-logit", "1e9"],
                "diff small": ["diff", small, small],
                "verify small (Keras)": ["verify", small],
            }
            print(f"this checkout against {options.baseline}; median of {options.runs}, in turns")
            print(f"{'command':34} {'this s':>8} {'baseline s':>11} {'ratio':>7}")
            worst = 0.0
            for label, args in commands.items():
                times: dict[Path, list[float]] = {ROOT: [], baseline: []}
                for _ in range(options.runs):
                    for tree in (ROOT, baseline):
                        (folder / "g.npz").unlink(missing_ok=True)
                        times[tree].append(_timed(tree, args))
                ours, theirs = statistics.median(times[ROOT]), statistics.median(times[baseline])
                worst = max(worst, ours / theirs)
                print(f"{label:34} {ours:8.2f} {theirs:11.2f} {ours / theirs:6.2f}x")
            print(f"largest ratio: {worst:.2f}x (goal: at most {options.goal}x)")
            return 0 if worst <= options.goal else 1
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
