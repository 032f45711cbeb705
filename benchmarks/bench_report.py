"""`grucli report` against what it stands on: `inspect` (with values) plus `replay` (with gates), in
the same run, as ratios; and the size of the page for a GRU(4096). One run, figures printed.

    python benchmarks/bench_report.py

- time: the API calls in this process (the median of 5 after one), computed only and with the
  files each command writes (replay's output and gates; report's page), report without verify
  (verify is Keras's predict, timed by bench_verify.py), on the
  largest sample model (q_gru32_dense10.keras, random input) and on a GRU(512) → GRU(512) over
  2000 steps, where the replay's cost shows; goal: report ≤ 2x inspect + replay;
- size: the page for a GRU(4096) (a .keras file of 200 MB) on 200 random steps, against the
  bound the README states (3 MB): the heatmaps are averaged over blocks beyond 128 × 128 cells
  (weights) and 128 units × 400 steps (activations).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from common import ROOT, compile_package, median_seconds  # noqa: E402

SIZE_BOUND = 3_000_000  # bytes, as the README states for a GRU(4096)


def _compare(name: str, path: Path, timesteps: int, folder: Path) -> None:
    import grucli
    from grucli.output.formats import write_npy, write_npz
    from grucli.output.html_report import render_report, write_report

    with grucli.load(path) as model:
        inputs, _ = grucli.api.model_inputs(model, None, 4, timesteps, 0)

        def computed() -> None:  # inspect --values and replay --gates, their records only
            grucli.api.inspect(model, with_values=True)
            grucli.replay(model, inputs, gates=True)

        def written() -> None:  # and the files the commands write: replay's output and gates
            grucli.api.inspect(model, with_values=True)
            result = grucli.replay(model, inputs, gates=True)
            write_npy(folder / "y.npy", np.asarray(result.outputs[0]), force=True)
            write_npz(folder / "g.npz", result.gate_arrays(), force=True)

        def report_computed() -> None:
            render_report(grucli.api.report(model, inputs, "random", with_verify=False))

        def report_written() -> None:
            write_report(grucli.api.report(model, inputs, "random", with_verify=False), folder / "r.html", force=True)

        times = [median_seconds(function) for function in (computed, report_computed, written, report_written)]
    print(f"{name:26} {timesteps:6d} {times[0]:9.4f} {times[1]:9.4f} {times[1] / times[0]:7.2f}x {times[2]:9.4f} {times[3]:9.4f} "
          f"{times[3] / times[2]:7.2f}x")


def _big_page(folder: Path) -> None:
    import keras

    import grucli
    from grucli.output.html_report import write_report

    model = keras.Sequential([keras.Input((None, 64)), keras.layers.GRU(4096, return_sequences=True)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.02, size=w.shape).astype("float32") for w in model.get_weights()])
    path = folder / "gru4096.keras"
    model.save(path)
    del model
    with grucli.load(path) as loaded:
        inputs, _ = grucli.api.model_inputs(loaded, None, 2, 200, 0)
        start = time.perf_counter()
        size = write_report(grucli.api.report(loaded, inputs, "random", with_verify=False), folder / "big.html", force=True)
        seconds = time.perf_counter() - start
    print(f"GRU(4096), 200 steps: page {size / 1e6:.2f} MB in {seconds:.1f} s; bound {SIZE_BOUND / 1e6:.0f} MB: "
          f"{'within' if size <= SIZE_BOUND else 'OVER'} ({size / SIZE_BOUND:.2f}x of it)")


def main() -> int:
    compile_package()
    import keras

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        print("computed: the records and the page's text; written: and each command's files (atomic writes)")
        print(f"{'model':26} {'steps':>6} {'i+r s':>9} {'report s':>9} {'ratio':>8} {'i+r+files':>9} {'report+file':>9} {'ratio':>8}")
        _compare("q_gru32_dense10 (sample)", ROOT / "sample_models" / "q_gru32_dense10.keras", 10, folder)
        stacked = keras.Sequential([keras.Input((None, 32)), keras.layers.GRU(512, return_sequences=True),
                                    keras.layers.GRU(512, return_sequences=True)])
        stacked.save(folder / "stacked.keras")
        _compare("GRU(512) x2", folder / "stacked.keras", 2000, folder)
        _big_page(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
