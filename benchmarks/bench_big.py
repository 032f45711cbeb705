"""Big files: `inspect` and `export` on a GRU(4096) model against a bare h5py read of its arrays.

    python benchmarks/bench_big.py [--units 4096] [--repeat 5]

Generates a Keras 3 model GRU(UNITS) on UNITS features (about 400 MB of weights for 4096), saved
as legacy `.h5` and as `.keras`, in a temporary folder. Each command runs as its own process
(started from a small launcher, so the memory figure is the command's own), all of them in
turns; wall time is the median of the repeats and peak memory the operating system's
`ru_maxrss`.

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


def measure_in_turns(commands: list[tuple[str, list[str], Path | None]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median seconds and peak MiB of each command, run in turns so a noisy moment hits all alike.

    Before every run (outside its timing) the previous run's output is deleted and the page cache
    flushed to disk: each export writes a new file, as a user's first export does. (With --force
    over an existing file, the filesystem's cost of freeing the old one comes on top.)
    """
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in commands}
    for _ in range(repeat):
        for name, command, output in commands:
            if output is not None:
                output.unlink(missing_ok=True)
            os.sync()
            result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True)
            code, seconds, rss, stderr = json.loads(result.stdout)
            if code != 0:
                raise SystemExit(f"{command} failed ({code}): {stderr}")
            runs[name].append((seconds, rss))
    return {name: (statistics.median(s for s, _ in values), max(r for _, r in values)) for name, values in runs.items()}


def main() -> int:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        h5, keras_file, largest = make_model(Path(folder), args.units)
        largest_mib = largest / 2**20
        grucli = [sys.executable, "-m", "grucli"]
        out_a, out_b = Path(folder) / "a.npz", Path(folder) / "b.npz"
        results = measure_in_turns([
            ("bare h5py read of the .h5", [sys.executable, "-c", BARE_H5, str(h5)], None),
            ("libraries alone", [sys.executable, "-c", BARE_IMPORT], None),
            ("grucli inspect big.h5", [*grucli, "inspect", str(h5)], None),
            ("grucli inspect big.keras", [*grucli, "inspect", str(keras_file)], None),
            ("grucli export big.h5", [*grucli, "export", str(h5), "-o", str(out_a)], out_a),
            ("grucli export big.keras", [*grucli, "export", str(keras_file), "-o", str(out_b)], out_b),
        ], args.repeat)
        base_seconds, base_rss = results.pop("bare h5py read of the .h5")
        _, import_rss = results.pop("libraries alone")
        constant = import_rss + 64  # the interpreter and libraries, plus a margin for small buffers
        print(f"GRU({args.units}): .h5 {h5.stat().st_size / 2**20:.0f} MiB, .keras {keras_file.stat().st_size / 2**20:.0f} MiB; "
              f"largest array {largest_mib:.0f} MiB; libraries alone {import_rss:.0f} MiB")
        print(f"{'command':34} {'seconds':>8} {'time ratio':>10} {'peak MiB':>9} {'memory goal MiB':>16}")
        print(f"{'bare h5py read of the .h5':34} {base_seconds:8.2f} {'1.00x':>10} {base_rss:9.0f} {'':>16}")
        goal = 1.5 * largest_mib + constant
        for name, (seconds, rss) in results.items():
            verdict = "ok" if rss <= goal else "OVER"
            print(f"{name:34} {seconds:8.2f} {seconds / base_seconds:9.2f}x {rss:9.0f} {goal:10.0f} {verdict:>5}")
    print("goals: time ratio <= 2.0x; peak memory <= 1.5 x largest array + libraries + 64 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
