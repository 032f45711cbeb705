"""Time and peak memory of every command on the zip bomb and the huge-shape files.

    python benchmarks/measure_hostile.py

Builds the hostile corpus (tests/hostile/make_corpus.py) in a temporary folder, runs each
command as its own process and prints its wall time and peak resident memory as the operating
system accounts it (`os.wait4` rusage). Goal: a few hundred MiB at most, seconds at most.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hostile.make_corpus import make_models  # noqa: E402

ITEMS = ["zip_bomb.keras", "huge_shape.h5", "huge_shape.keras"]


def measured(args: list[str]) -> tuple[int, float, float]:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "grucli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        models = make_models(Path(folder) / "models")
        good = str(ROOT / "sample_models" / "k3_gru.keras")
        out = Path(folder)
        print(f"{'file':18} {'command':8} {'exit':>4} {'seconds':>8} {'peak RSS MiB':>13}")
        worst_time, worst_rss = 0.0, 0.0
        for item in ITEMS:
            model = str(models[item])
            size = models[item].stat().st_size
            for name, args in [
                ("inspect", ["inspect", model]), ("export", ["export", model, "-o", str(out / "x.npz")]),
                ("verify", ["verify", model]), ("replay", ["replay", model, "-o", str(out / "y.npy")]),
                ("diff", ["diff", model, good]), ("check", ["check", model]),
            ]:
                code, seconds, rss = measured(args)
                worst_time, worst_rss = max(worst_time, seconds), max(worst_rss, rss)
                print(f"{item:18} {name:8} {code:>4} {seconds:8.2f} {rss:13.0f}")
            print(f"{'':18} (file on disk: {size / 2**20:.1f} MiB)")
    print(f"worst: {worst_time:.2f} s, {worst_rss:.0f} MiB (goal: seconds, a few hundred MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
