"""`grucli activations`: a dataset's traced gates and states in a Zarr store, equal to what
`replay --gates` writes for the same rows, and to Keras's own states; the Dask path and a resumed
run write the same bytes as one uninterrupted run in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli

pytest.importorskip("zarr", reason="activations writes Zarr (pip install -e '.[test]')")

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def masked_rows(rng: np.random.Generator, rows: int, steps: int, features: int) -> np.ndarray:
    """Rows of real steps, some padded with zeros at the end and some at the start (Masking skips both)."""
    x = rng.normal(size=(rows, steps, features)).astype(np.float32)
    for row in range(rows):
        if row % 3 == 1:
            x[row, steps - 1 - row % steps // 2 :] = 0.0
        elif row % 3 == 2:
            x[row, : 1 + row % 4] = 0.0
    return x


@pytest.fixture(scope="module")
def functional(keras3: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A functional model as people build them: Masking, a GRU, a Bidirectional LSTM (whose backward
    direction runs last step first) and a SimpleRNN, with a Dense head."""
    keras3.utils.set_random_seed(3)
    layers = keras3.layers
    inputs = keras3.Input((9, 4), name="frames")
    masked = layers.Masking(name="mask")(inputs)
    gru = layers.GRU(6, return_sequences=True, name="gru")(masked)
    bi = layers.Bidirectional(layers.LSTM(5, return_sequences=True), name="bi")(gru)
    rnn = layers.SimpleRNN(3, return_sequences=True, name="rnn")(bi)
    outputs = layers.Dense(2, name="head")(layers.GlobalAveragePooling1D()(rnn))
    model = keras3.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("functional") / "functional.keras"
    model.save(path)
    return path, model


def store_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_the_store_holds_what_replay_gates_writes_exactly(functional: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = functional
    x = masked_rows(np.random.default_rng(0), 11, 9, 4)
    np.save(tmp_path / "x.npy", x)
    result = run("activations", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "acts.zarr"), "--batch-size", "4")
    assert result.exit_code == 0, result.output
    replayed = run("replay", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                   "--gates", str(tmp_path / "gates.npz"), "--dtype", "float32")
    assert replayed.exit_code == 0, replayed.output

    import zarr

    store = zarr.open_group(str(tmp_path / "acts.zarr"), mode="r")
    gates = np.load(tmp_path / "gates.npz")
    assert sorted(gates.files) == sorted(
        f"{layer}/{name}" for layer, names in (("gru", "z r hh h"), ("bi/forward", "i f cc c o h"), ("bi/backward", "i f cc c o h"),
                                               ("rnn", "h")) for name in names.split()
    )
    for key in gates.files:
        stored = store[key][:]
        assert stored.dtype == np.float32 and stored.shape == gates[key].shape
        assert np.array_equal(stored, gates[key]), key  # the same rows, in batches of 4 or all at once: the same bits
    # The mask: Keras's Masking keeps a step where any feature is not 0; in time order, for every layer.
    real = np.any(x != 0, axis=-1)
    for key in ("mask", "gru/mask", "bi/forward/mask", "bi/backward/mask", "rnn/mask"):
        assert np.array_equal(store[key][:], real), key
    attributes = dict(store.attrs)
    assert attributes["rows_complete"] == 11 and attributes["complete"] is True
    assert attributes["dtype"] == "float32" and attributes["keras_definitions"] == "keras3"
    assert attributes["model"]["sha256"].startswith("sha256:") and attributes["data"]["inputs"][0]["shape"] == [11, 9, 4]
    layers = {layer["path"]: layer for layer in attributes["layers"]}
    assert layers["bi/backward"]["order"] == "reversed" and layers["gru"]["order"] == "time"
    assert layers["gru"]["activations"] == {"z": "sigmoid", "r": "sigmoid", "hh": "tanh"}
    assert "masked" in attributes["masked_steps"]


def test_stored_states_are_keras_states_within_float32_rounding(functional: tuple[Path, Any], tmp_path: Path, keras3: Any) -> None:
    """h of every layer against Keras's own outputs at real steps (sub-models of the same model)."""
    path, model = functional
    x = masked_rows(np.random.default_rng(1), 7, 9, 4)
    np.save(tmp_path / "x.npy", x)
    assert run("activations", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "acts.zarr")).exit_code == 0
    import zarr

    store = zarr.open_group(str(tmp_path / "acts.zarr"), mode="r")
    real = np.any(x != 0, axis=-1)
    outputs = keras3.Model(model.input, [model.get_layer(name).output for name in ("gru", "bi", "rnn")]).predict(x, verbose=0)
    gru, bi, rnn = (np.asarray(o) for o in outputs)
    forward, backward = bi[..., :5], bi[..., 5:]
    # Keras's return_sequences output is h at each step (time order for both directions of a Bidirectional).
    expected = {"gru/h": gru, "bi/forward/h": forward, "bi/backward/h": backward, "rnn/h": rnn}
    for key, keras_h in expected.items():
        stored = store[key][:]
        if key == "bi/backward/h":
            stored = stored[:, ::-1]  # stored as the layer ran: last step first
        # float32 sums of at most 4 + 6 + 10 products a step, over 9 steps, each rounding 2^-24 of its size
        bound = 64 * FLOAT32_EPS * 9
        assert np.abs(stored[real] - keras_h[real]).max() < bound, key


def test_an_lstm_cell_state_is_keras_cell_state(keras3: Any, tmp_path: Path) -> None:
    """c per step against Keras: return_state on each prefix of the sequence gives c at that step."""
    keras3.utils.set_random_seed(5)
    inputs = keras3.Input((None, 3))
    lstm = keras3.layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")
    sequence, _, _ = lstm(inputs)
    model = keras3.Model(inputs, sequence)
    model.save(tmp_path / "lstm.keras")
    x = np.random.default_rng(2).normal(size=(5, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert run("activations", str(tmp_path / "lstm.keras"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "a.zarr"),
               "--only", "c,h").exit_code == 0
    import zarr

    store = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert sorted(store["lstm"].array_keys()) == ["c", "h"]
    states = keras3.Model(inputs, lstm(inputs))
    for t in range(8):
        _, h, c = (np.asarray(v) for v in states.predict(x[:, : t + 1], verbose=0))
        assert np.abs(store["lstm/c"][:, t] - c).max() < 64 * FLOAT32_EPS * (t + 1)
        assert np.abs(store["lstm/h"][:, t] - h).max() < 64 * FLOAT32_EPS * (t + 1)


def test_the_sources_of_data_give_the_same_store(functional: tuple[Path, Any], tmp_path: Path) -> None:
    """.npy, .npz from np.savez, a folder of shards and a Zarr array: the same rows, the same activations."""
    import zarr

    path, _ = functional
    x = masked_rows(np.random.default_rng(4), 10, 9, 4)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", frames=x)
    (tmp_path / "shards").mkdir()
    for index, start in enumerate((0, 3, 7)):
        np.save(tmp_path / "shards" / f"part{index}.npy", x[start : (3, 7, 10)[index]])
    zarr.create_array(str(tmp_path / "x.zarr"), data=x, chunks=(4, 9, 4))
    np.save(tmp_path / "x_fortran.npy", np.asfortranarray(x))
    stores = {}
    for name in ("x.npy", "x.npz", "shards", "x.zarr", "x_fortran.npy"):
        out = tmp_path / f"{name}.acts"
        result = run("activations", str(path), "--input", str(tmp_path / name), "-o", str(out), "--batch-size", "3")
        assert result.exit_code == 0, (name, result.output)
        stores[name] = zarr.open_group(str(out), mode="r")
    for name, store in stores.items():
        for key in ("gru/z", "bi/backward/c", "rnn/h", "mask"):
            assert np.array_equal(store[key][:], stores["x.npy"][key][:]), (name, key)


def test_a_seq2seq_with_two_inputs_reads_an_npz_by_input_name(keras3: Any, tmp_path: Path) -> None:
    """Encoder and decoder GRUs over inputs of different lengths: one array per input, each layer its own steps."""
    keras3.utils.set_random_seed(6)
    encoder_in = keras3.Input((7, 3), name="source")
    decoder_in = keras3.Input((5, 2), name="target")
    _, state = keras3.layers.GRU(4, return_state=True, name="encoder")(encoder_in)
    decoded = keras3.layers.GRU(4, return_sequences=True, name="decoder")(decoder_in, initial_state=state)
    model = keras3.Model([encoder_in, decoder_in], keras3.layers.Dense(2)(decoded))
    model.save(tmp_path / "s2s.keras")
    rng = np.random.default_rng(3)
    source, target = rng.normal(size=(6, 7, 3)).astype(np.float32), rng.normal(size=(6, 5, 2)).astype(np.float32)
    np.savez(tmp_path / "pairs.npz", target=target, source=source)
    result = run("activations", str(tmp_path / "s2s.keras"), "--input", str(tmp_path / "pairs.npz"), "-o", str(tmp_path / "a.zarr"), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    steps = {layer["path"]: layer["timesteps"] for layer in document["layers"]}
    assert steps == {"encoder": 7, "decoder": 5}
    import zarr

    store = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    decoder = keras3.Model(model.inputs, model.get_layer("decoder").output).predict([source, target], verbose=0)
    assert np.abs(store["decoder/h"][:] - decoder).max() < 64 * FLOAT32_EPS * 12


def test_dask_workers_write_the_same_store(functional: tuple[Path, Any], tmp_path: Path) -> None:
    """A distributed.LocalCluster of two worker processes, started here, runs the batches: every file of
    its store (metadata, attributes, compressed chunks) is byte for byte the one-process store's."""
    distributed = pytest.importorskip("distributed")
    import grucli

    path, _ = functional
    x = masked_rows(np.random.default_rng(7), 23, 9, 4)
    np.save(tmp_path / "x.npy", x)
    model = grucli.load(path)
    alone = grucli.activations(model, tmp_path / "x.npy", tmp_path / "alone.zarr", batch_size=5)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = grucli.activations(model, tmp_path / "x.npy", tmp_path / "dask.zarr", batch_size=5, scheduler=cluster.scheduler_address)
    assert on_dask.engine == cluster.scheduler_address and alone.engine == "this process"
    assert on_dask.complete and on_dask.batches_run == 5
    # the stores name the same data and model: only the store's own path differs, and it is not recorded
    assert store_files(tmp_path / "dask.zarr") == store_files(tmp_path / "alone.zarr")


def test_workers_option_starts_a_local_cluster(functional: tuple[Path, Any], tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    path, _ = functional
    x = masked_rows(np.random.default_rng(8), 9, 9, 4)
    np.save(tmp_path / "x.npy", x)
    single = run("activations", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "one.zarr"), "--batch-size", "2")
    workers = run("activations", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "two.zarr"), "--batch-size", "2",
                  "--workers", "2")
    assert single.exit_code == 0 and workers.exit_code == 0, workers.output
    assert "local Dask cluster of 2 workers" in workers.output
    assert store_files(tmp_path / "one.zarr") == store_files(tmp_path / "two.zarr")


def test_an_interrupted_run_resumes_to_the_same_store(functional: tuple[Path, Any], tmp_path: Path) -> None:
    import grucli

    path, _ = functional
    x = masked_rows(np.random.default_rng(9), 20, 9, 4)
    np.save(tmp_path / "x.npy", x)
    model = grucli.load(path)
    grucli.activations(model, tmp_path / "x.npy", tmp_path / "whole.zarr", batch_size=3)

    def stop_after_three_batches(done: int, total: int) -> None:
        if done >= 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grucli.activations(model, tmp_path / "x.npy", tmp_path / "part.zarr", batch_size=3, progress=stop_after_three_batches)
    kept = grucli.open_activations(tmp_path / "part.zarr")
    assert kept.progress.rows_complete == 9 and not kept.progress.complete
    assert [d is not None for d in kept.progress.digests] == [True] * 3 + [False] * 4
    # an interrupted store is not probed: its missing rows hold no activations
    refused = run("probe", str(tmp_path / "part.zarr"), "--labels", str(tmp_path / "x.npy"))
    assert refused.exit_code == 2 and "holds 9 of 20 rows" in refused.output and "--resume" in refused.output
    resumed = run("activations", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "part.zarr"), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "3 batches kept from before" in resumed.output
    assert store_files(tmp_path / "part.zarr") == store_files(tmp_path / "whole.zarr")


def test_resume_refuses_another_model_other_data_and_other_settings(functional: tuple[Path, Any], tmp_path: Path, keras3: Any) -> None:
    import grucli

    path, _ = functional
    x = masked_rows(np.random.default_rng(10), 12, 9, 4)
    np.save(tmp_path / "x.npy", x)

    def stop(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grucli.activations(grucli.load(path), tmp_path / "x.npy", tmp_path / "part.zarr", batch_size=4, progress=stop)
    before = store_files(tmp_path / "part.zarr")
    other = keras3.Sequential([keras3.Input((9, 4)), keras3.layers.Masking(), keras3.layers.GRU(6, return_sequences=True)])
    other.save(tmp_path / "other.keras")
    changed = x.copy()
    changed[1, 2, 0] += 1.0
    np.save(tmp_path / "changed.npy", changed)
    cases = [
        (["activations", str(tmp_path / "other.keras"), "--input", str(tmp_path / "x.npy")], "expected the same model file"),
        (["activations", str(path), "--input", str(tmp_path / "changed.npy")], "expected the same data"),
        (["activations", str(path), "--input", str(tmp_path / "x.npy"), "--only", "h"], "expected the same settings"),
        (["activations", str(path), "--input", str(tmp_path / "x.npy"), "--batch-size", "3"], "batches of 4 rows"),
    ]
    for arguments, said in cases:
        result = run(*arguments, "-o", str(tmp_path / "part.zarr"), "--resume")
        assert result.exit_code == 2 and said in result.output, (arguments, result.output)
        assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert store_files(tmp_path / "part.zarr") == before  # nothing written


def test_ctrl_c_in_the_command_says_what_is_kept(tmp_path: Path, keras3: Any) -> None:
    """A real SIGINT: exit 130, one line saying how many rows the store holds, and --resume completes it."""
    import signal
    import subprocess
    import sys
    import time

    import zarr

    model = keras3.Sequential([keras3.Input((None, 8)), keras3.layers.GRU(48, return_sequences=True)])
    model.save(tmp_path / "slow.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(400, 2000, 8)).astype(np.float32))
    command = [sys.executable, "-m", "grucli", "activations", str(tmp_path / "slow.keras"), "--input", str(tmp_path / "x.npy"),
               "-o", str(tmp_path / "acts.zarr"), "--batch-size", "4", "--only", "h"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until some batches are written
        time.sleep(0.5)
        attributes = tmp_path / "acts.zarr" / "zarr.json"
        if attributes.is_file() and json.loads(attributes.read_text())["attributes"].get("rows_complete", 0) >= 8:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted (Ctrl-C); ") and "of 400 rows" in lines[0] and "--resume" in lines[0]
    kept = dict(zarr.open_group(str(tmp_path / "acts.zarr"), mode="r").attrs)
    assert 8 <= kept["rows_complete"] < 400 and kept["complete"] is False
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert dict(zarr.open_group(str(tmp_path / "acts.zarr"), mode="r").attrs)["complete"] is True
