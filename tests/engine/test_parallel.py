"""A step's units on two threads (grucli.engine.parallel): Keras's numbers, and one thread's.

The split is forced here (the `split` fixture: two usable CPUs, no least step size) on layers
small enough to build in a moment, so that it runs on any machine; `one_thread` forbids it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from conftest import SAMPLES
from grucli.engine import parallel
from grucli.engine import steps as replay
from grucli.model.records import RecurrentLayer
from grucli.model.semantics import KERAS3
from grucli.engine.steps import run_layer
from tests.engine.test_replay import CPU_LEVEL, max_error, predict, replay_file

NO_LEAST = {np.dtype(np.float64): 0, np.dtype(np.float32): 0}


@pytest.fixture
def split(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Forces the split and lists, per layer replayed, how many parts its steps ran in."""
    parts: list[int] = []

    class Counted(parallel.StepsSideBySide):
        def __init__(self, steps: Any) -> None:
            parts.append(len(steps))
            super().__init__(steps)

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    monkeypatch.setattr(parallel, "_AVX512", False)
    monkeypatch.setattr(parallel, "SPLIT_MIN_MULTIPLY_ADDS", NO_LEAST)
    monkeypatch.setattr(parallel, "StepsSideBySide", Counted)
    yield parts


def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)


def masked_input(batch: int, timesteps: int, features: int) -> np.ndarray:
    x = np.random.default_rng(3).normal(size=(batch, timesteps, features)).astype("float32")
    x[1, -3:] = 0.0  # masked by the Masking layer: states carry over, outputs repeat
    x[2, 2] = 0.0
    return x


def test_a_functional_model_split_matches_keras_and_one_thread(keras3: Any, split: list[int], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    layers = keras3.layers
    inputs = keras3.Input((9, 6))
    masked = layers.Masking()(inputs)
    # 5 units: halves of 2 and 3; the exp form (tanh, sigmoid) and Keras's form (hard_sigmoid)
    lstm, h, c = layers.LSTM(5, return_sequences=True, return_state=True)(masked)
    slow = layers.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True, go_backwards=True)(masked)
    # given initial_state=, Keras 3 runs the GRU unmasked; its output carries the mask on
    gru = layers.GRU(5, return_sequences=True)(layers.Concatenate()([lstm, slow]), initial_state=[h])
    rnn = layers.SimpleRNN(5, return_sequences=True)(gru)
    no_reset_after = layers.GRU(4, reset_after=False)(rnn)  # r · h_tm1 reads every unit's r: never split
    model = keras3.Model(inputs, [layers.Dense(2)(no_reset_after), rnn, c])
    path = tmp_path / "functional.keras"
    model.save(path)
    x = masked_input(4, 9, 6)

    split_outputs = replay_file(path, x)
    assert sorted(split) == [1, 2, 2, 2, 2]
    assert max_error(split_outputs, predict(model, x)) < CPU_LEVEL
    one_thread(monkeypatch)
    assert max_error(split_outputs, replay_file(path, x)) < 1e-13


def test_a_bidirectional_lstm_split_in_float32(keras3: Any, split: list[int], tmp_path: Path) -> None:
    inputs = keras3.Input((None, 3))
    outputs = keras3.layers.Bidirectional(keras3.layers.LSTM(6, return_sequences=True))(inputs)
    model = keras3.Model(inputs, outputs)
    path = tmp_path / "bidirectional.keras"
    model.save(path)
    x = masked_input(3, 11, 3)
    assert max_error(replay_file(path, x, np.float32), predict(model, x)) < 1e-5
    assert split == [2, 2]


def lstm_layer(units: int, features: int, config: dict[str, Any]) -> RecurrentLayer:
    rng = np.random.default_rng(7)
    kernel, recurrent, bias = (rng.normal(0, 0.5, size=shape) for shape in ((features, 4 * units), (units, 4 * units), (4 * units,)))
    return RecurrentLayer("l", "LSTM", "LSTM", units, features, {"return_sequences": True, **config}, (), kernel, recurrent, bias)


def test_a_softmax_over_the_units_is_not_split(split: list[int]) -> None:
    layer = lstm_layer(4, 3, {"activation": "softmax", "recurrent_activation": "sigmoid"})
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    run_layer(layer, x, semantics=KERAS3)
    assert split == [1]


def test_the_exp_form_computes_what_keras_form_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    """tanh and sigmoid through one exp of -z and -2·z (weights negated and doubled, which is
    exact) against the same step with each activation applied as Keras applies it."""
    layer = lstm_layer(7, 4, {"activation": "tanh", "recurrent_activation": "sigmoid"})
    x = 3 * np.random.default_rng(1).normal(size=(3, 20, 4))  # large enough to saturate some gates
    by_exp = run_layer(layer, x, semantics=KERAS3, trace=True)
    monkeypatch.setattr(replay, "_tanh_and_sigmoid", lambda layer: False)
    as_keras = run_layer(layer, x, semantics=KERAS3, trace=True)
    assert np.abs(by_exp.sequence - as_keras.sequence).max() < 1e-13
    assert np.abs(by_exp.states[1] - as_keras.states[1]).max() < 1e-13
    for gate in ("i", "f", "cc", "o", "c", "h"):
        assert np.abs(by_exp.trace[gate] - as_keras.trace[gate]).max() < 1e-13, gate


def test_the_trace_of_a_split_layer_holds_every_unit(split: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    layer = lstm_layer(5, 3, {"activation": "tanh", "recurrent_activation": "sigmoid"})
    x = np.random.default_rng(2).normal(size=(2, 6, 3))
    mask = np.ones((2, 6), bool)
    mask[1, 3:] = False
    both = run_layer(layer, x, mask=mask, semantics=KERAS3, trace=True)
    one_thread(monkeypatch)
    one = run_layer(layer, x, mask=mask, semantics=KERAS3, trace=True)
    assert split == [2, 1]
    for gate in ("i", "f", "cc", "o", "c", "h"):
        assert np.abs(both.trace[gate] - one.trace[gate]).max() < 1e-13, gate
    assert np.array_equal(both.trace["h"][1, 3:], np.repeat(both.trace["h"][1, 2:3], 3, axis=0))  # masked: carried over


# --- the threads themselves -------------------------------------------------------------------------


def step_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "grucli-step-part"]


def test_an_error_in_the_other_thread_is_raised_in_the_caller() -> None:
    done: list[int] = []

    def fails_at_3(t: int) -> None:
        if t == 3:
            raise ValueError("step 3 failed")

    with pytest.raises(ValueError, match="step 3 failed"):
        with parallel.StepsSideBySide([done.append, fails_at_3]) as run_step:
            for t in range(10):
                run_step(t)
    assert done == [0, 1, 2, 3]
    assert step_threads() == []


def test_an_interrupt_in_the_caller_stops_the_other_thread() -> None:
    other: list[int] = []

    def interrupted_at_2(t: int) -> None:
        if t == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with parallel.StepsSideBySide([interrupted_at_2, other.append]) as run_step:
            for t in range(10):
                run_step(t)
    assert other == [0, 1, 2]  # step 2 ran to its end before the buffers were let go
    assert step_threads() == []


def test_the_other_thread_keeps_the_callers_numpy_error_settings() -> None:
    def overflows(t: int) -> None:
        np.exp(np.array([1000.0]))

    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        with parallel.StepsSideBySide([lambda t: None, overflows]) as run_step:
            run_step(0)
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        with parallel.StepsSideBySide([lambda t: None, overflows]) as run_step:
            run_step(0)


def blas_threads() -> list[int]:
    return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]


def test_blas_runs_on_one_thread_in_each_part_and_is_restored_after() -> None:
    before = blas_threads()
    seen: list[list[int]] = []
    with parallel.StepsSideBySide([lambda t: seen.append(blas_threads()), lambda t: None]) as run_step:
        run_step(0)
    assert before and seen == [[1] * len(before)]
    assert blas_threads() == before


def test_one_part_runs_on_the_callers_thread_alone() -> None:
    names: list[str] = []
    with parallel.StepsSideBySide([lambda t: names.append(threading.current_thread().name)]) as run_step:
        run_step(0)
    assert names == [threading.current_thread().name]


@pytest.mark.parametrize(("cpus", "units", "multiply_adds", "dtype", "apart", "expected"), [
    (2, 256, 10_500_000, np.float64, True, [slice(0, 128), slice(128, 256)]),
    (2, 5, 1 << 22, np.float64, True, [slice(0, 2), slice(2, 5)]),
    (2, 256, (1 << 22) - 1, np.float64, True, [slice(0, 256)]),  # too small a step to pay
    (2, 256, 10_500_000, np.float32, True, [slice(0, 256)]),  # float32's exp is cheap: pays from 16 M
    (2, 256, 1 << 24, np.float32, True, [slice(0, 128), slice(128, 256)]),
    (2, 256, 10_500_000, np.float16, True, [slice(0, 256)]),
    (2, 256, 10_500_000, np.float64, False, [slice(0, 256)]),
    (1, 256, 10_500_000, np.float64, True, [slice(0, 256)]),
    (4, 256, 10_500_000, np.float64, True, [slice(0, 256)]),  # not measured against BLAS on 4 threads
    (2, 1, 10_500_000, np.float64, True, [slice(0, 1)]),
])
def test_when_the_units_are_split(monkeypatch: pytest.MonkeyPatch, cpus: int, units: int, multiply_adds: int, dtype: type,
                                  apart: bool, expected: list[slice]) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(parallel, "_AVX512", False)
    assert parallel.unit_ranges(units, multiply_adds, dtype, apart) == expected
    # With AVX-512 the split lost at every size measured (bench_split.py): one range, always.
    monkeypatch.setattr(parallel, "_AVX512", True)
    assert parallel.unit_ranges(units, multiply_adds, dtype, apart) == [slice(0, units)]


def test_inspect_does_not_import_threadpoolctl() -> None:
    """threadpoolctl is imported when a step is first split, not at start-up (2 ms of every command);
    inspect loads no part of the replay engine (it learns the Keras definitions from model/semantics)."""
    script = ("import sys\nfrom grucli.cli import cli\n"
              f"cli.main(args=['inspect', {str(SAMPLES / 'k3_lstm.keras')!r}], prog_name='grucli', standalone_mode=False)\n"
              "print('threadpoolctl' in sys.modules, 'grucli.engine.steps' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"  # neither threadpoolctl nor the step loops are loaded
