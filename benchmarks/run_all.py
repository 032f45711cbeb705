"""Every performance goal, measured side by side with its baseline in one run; prints the ratios.

    python benchmarks/run_all.py

Runs, in order: bench_inspect.py (cold start against Keras and against a bare h5py read),
bench_big.py (GRU(4096) .h5 and .keras: inspect and export against a bare h5py read, peak
memory from the OS), bench_verify.py (verify against load-and-predict; replay per timestep
against predict), bench_regression.py (replay, inspect and export against an earlier grucli in a
git worktree), bench_savedmodel.py (inspect of a SavedModel folder and a checkpoint against tf-keras
loading them), bench_long.py (long sequences: the replay's marginal cost per timestep from 500 to
2500 steps against predict's, in-process and as whole processes; peak memory; verify at 2500
steps against load-and-predict), bench_split.py (a step's units on two threads against one, per
layer kind, size and dtype), bench_onnx.py (ONNX Runtime on the converted file against predict;
convert against Keras's export), bench_activations.py (every gate of a GRU(256) over 20,000 sequences into a Zarr store against
predict; its peak memory at 2,000 and 20,000 rows; Dask with 1 and 2 workers), bench_report.py
(report against inspect + replay; the page's size
for a GRU(4096)). Models are generated in temporary folders; nothing is committed. About thirty
minutes on a 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failures = 0
    scripts = ("bench_inspect.py", "bench_big.py", "bench_verify.py", "bench_regression.py", "bench_savedmodel.py", "bench_long.py",
               "bench_split.py", "bench_onnx.py", "bench_report.py", "bench_activations.py")
    for script in scripts:
        print(f"\n=== {script}", flush=True)
        failures += subprocess.run([sys.executable, str(HERE / script)]).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
