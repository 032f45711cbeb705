"""A replay step's units on two threads: each runs the cell on its half of the units.

Within a step, a dense cell's units are independent once h_tm1 is known: unit j's gates read
x_t, the whole h_tm1 and unit j's own columns of the weights (and its own cell state). So the
step loop can hand each of two threads half of the units, each with its own matrix product and
its own activations, and wait for both before the next step. On a 2-core machine that beats one
thread with a 2-thread BLAS product: the product runs on both cores either way, but NumPy's
float64 exp, a third of an LSTM step (no SIMD exp for float64 without AVX-512), then runs on
both cores too. What it costs: two hand-overs a step (12 to 14 µs together on the 2-core VM),
and the two threads take turns holding the GIL between NumPy calls (about 2 µs a call), which
is why the cells make few calls a step.

BLAS runs single-threaded in each thread meanwhile (threadpoolctl), and is set back after:
two threads each calling a 2-thread BLAS would ask four threads of two cores. The split is used
only where it was measured to pay (benchmarks/bench_split.py): exactly 2 usable CPUs (with more,
BLAS's own threads could use them, and nothing was measured there), a CPU without AVX-512 (with
it, NumPy's float64 exp has SIMD and BLAS is faster: on a 2-core AVX-512 VM, 2026-12-04, the split
lost at every size measured, 1.06x to 1.68x one thread's time), cells whose units are
independent, and a step of at least SPLIT_MIN_MULTIPLY_ADDS.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any

import numpy as np

StepPart = Callable[[int], None]  # computes step t for one range of units

# A step's multiply-adds (batch x operand width x output columns) from which the split pays,
# per dtype. Measured on the 2-core VM (benchmarks/bench_split.py, 2026-11-24), split against
# one thread: float64 LSTM at batch 32, 1.22x at 64 units (1.1 M), 0.86x at 128 (3.2 M), 0.84x
# at 256 (10.5 M), but 1.04x at 256 units and batch 8 (2.6 M); GRU(128) 0.99x (2.4 M), GRU(256)
# 0.81x (7.9 M). float32, whose exp has SIMD: LSTM(256) 1.01x (10.5 M), GRU(256) 1.09x (7.9 M),
# LSTM(512) 0.91x (38 M), GRU(512) 0.93x (28 M). The bounds leave out a few sizes that gain
# (SimpleRNN(256) in float64, 0.85x at 2.6 M) rather than take in ones that lose.
SPLIT_MIN_MULTIPLY_ADDS: Mapping[np.dtype, int] = {np.dtype(np.float64): 1 << 22, np.dtype(np.float32): 1 << 24}


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else the count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def numpy_has_avx512() -> bool:
    """Whether NumPy dispatches AVX-512 kernels on this CPU (its float64 exp among them). NumPy
    says so only in a private module: where that is gone, False, the machines the split was
    measured on."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # type: ignore[import-not-found]  # np.show_runtime() reads it
    except ImportError:
        return False
    return bool(__cpu_features__.get("AVX512F", False) and __cpu_features__.get("AVX512_SKX", False))


_AVX512 = numpy_has_avx512()


def unit_ranges(units: int, multiply_adds: int, dtype: type, units_apart: bool) -> list[slice]:
    """The ranges of units the step loop runs side by side: two halves where the split pays, else
    all. `units_apart`: whether each unit's step reads no other unit's gates, which an activation
    over the units (softmax) or a GRU's reset r · h_tm1 before the product break."""
    least = SPLIT_MIN_MULTIPLY_ADDS.get(np.dtype(dtype))
    if not units_apart or usable_cpus() != 2 or least is None or multiply_adds < least or units < 2 or _AVX512:
        return [slice(0, units)]
    half = units // 2
    return [slice(0, half), slice(half, units)]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for the duration (a Dask worker shares the cores with the others)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


class StepsSideBySide:
    """Runs a step's parts, one on this thread and the rest each on a thread of its own.

    `with StepsSideBySide(parts) as run_step:` then `run_step(t)` returns once every part has
    computed step t. An exception in a part is raised here, in the caller's thread. With one
    part, no thread is started and BLAS is left as it is.
    """

    def __init__(self, parts: Sequence[StepPart]) -> None:
        self._parts = list(parts)
        self._workers: list[_Worker] = []
        self._stack = ExitStack()

    def __enter__(self) -> StepPart:
        if len(self._parts) == 1:
            return self._parts[0]
        # Imported here, not at the top: it would add 2 ms to the start of every command, inspect's too.
        from threadpoolctl import threadpool_limits

        self._stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        errors = np.geterr()  # NumPy's error settings are per thread: the caller's apply to every part
        self._workers = [_Worker(part, errors) for part in self._parts[1:]]
        return self._run_step

    def _run_step(self, t: int) -> None:
        for worker in self._workers:
            worker.start_step(t)
        try:
            self._parts[0](t)
        finally:  # never leave a worker writing into buffers the caller goes on to read
            for worker in self._workers:
                worker.finish_step()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        for worker in self._workers:
            worker.stop()
        self._stack.close()


class _Worker:
    """A daemon thread that computes one part of each step it is handed."""

    def __init__(self, part: StepPart, errors: Any) -> None:  # np.geterr()'s settings
        self._part = part
        self._errors = errors
        self._step: int | None = None
        self._error: BaseException | None = None
        self._busy = False
        # Locks held by nobody in particular, released to signal: a C lock hands over in 12 to
        # 14 µs on the 2-core VM, a few µs less than threading.Semaphore (a Python class).
        self._handed, self._done = threading.Lock(), threading.Lock()
        self._handed.acquire()
        self._done.acquire()
        self._thread = threading.Thread(target=self._serve, name="grucli-step-part", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with np.errstate(**self._errors):
            self._serve_steps()

    def _serve_steps(self) -> None:
        while True:
            self._handed.acquire()
            if self._step is None:
                return
            try:
                self._part(self._step)
            except BaseException as error:  # noqa: BLE001 - any error, Ctrl-C too, is handed to the caller's thread, which raises it
                self._error = error
            self._done.release()

    def start_step(self, t: int) -> None:
        self._step = t
        self._busy = True
        self._handed.release()

    def finish_step(self) -> None:
        """Waits for the step handed last; raises what the part raised."""
        if not self._busy:
            return
        self._done.acquire()
        self._busy = False
        error, self._error = self._error, None
        if error is not None:
            raise error

    def stop(self) -> None:
        """Ends the thread once it has finished any step it is computing (join waits for it)."""
        self._step = None
        if self._handed.locked():  # else a step handed over is still to be taken: the thread takes it and sees None
            self._handed.release()
        self._thread.join()
