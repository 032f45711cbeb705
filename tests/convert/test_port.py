"""`convert SOURCE --into TARGET`: PyTorch and ONNX weights ported into Keras models, proved.

Sources are built the way users build them (`nn.GRU/LSTM/RNN`, 1-2 layers, bidirectional,
batch_first both ways, a Linear head, an Embedding) and saved as they save them
(`torch.save(state_dict)`, `safetensors.torch.save_file`, `torch.onnx.export(..., dynamo=False)`);
targets are the Keras models a user writes for the same architecture. Truth: PyTorch's own output
(or ONNX Runtime's) against Keras 3's `load_model(OUT).predict` (tf-keras's for `.h5` targets),
within float32 rounding of these small layers (rtol 1e-5, atol 1e-6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli

torch = pytest.importorskip("torch", reason="PyTorch makes the sources of these tests (pip install -e '.[test]')")
RTOL, ATOL = 1e-5, 1e-6


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _seeded(module: Any, seed: int) -> Any:
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-0.6, 0.6)
    return module.eval()


class BiGRU(torch.nn.Module):
    """GRU, 2 layers, bidirectional; the whole output sequence."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = torch.nn.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=batch_first)

    def forward(self, x: Any) -> Any:
        return self.rnn(x)[0]


class LastStepLSTM(torch.nn.Module):
    """LSTM with a Linear head on the last step."""

    batch_first = True

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(5, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x: Any) -> Any:
        return self.head(self.lstm(x)[0][:, -1])


class ReluRNN(torch.nn.Module):
    batch_first = True

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.RNN(5, 7, nonlinearity="relu", batch_first=True)

    def forward(self, x: Any) -> Any:
        return self.rnn(x)[0]


class Tagger(torch.nn.Module):
    """Embedding → GRU → Linear on every step."""

    batch_first = True

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(40, 5)
        self.gru = torch.nn.GRU(5, 4, batch_first=True)
        self.out = torch.nn.Linear(4, 6)

    def forward(self, ids: Any) -> Any:
        return self.out(self.gru(self.embedding(ids))[0])


def _bigru_target(keras: Any) -> Any:
    L = keras.layers
    return keras.Sequential([keras.Input((None, 5)), L.Bidirectional(L.GRU(4, return_sequences=True)),
                             L.Bidirectional(L.GRU(4, return_sequences=True))])


def _lstm_target(keras: Any) -> Any:
    return keras.Sequential([keras.Input((None, 5)), keras.layers.LSTM(6), keras.layers.Dense(3)])


def _rnn_target(keras: Any) -> Any:
    return keras.Sequential([keras.Input((None, 5)), keras.layers.SimpleRNN(7, activation="relu", return_sequences=True)])


def _tagger_target(keras: Any) -> Any:
    ids = keras.Input((None,), dtype="int32")
    hidden = keras.layers.GRU(4, return_sequences=True)(keras.layers.Embedding(40, 5)(ids))
    return keras.Model(ids, keras.layers.Dense(6)(hidden))


CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], Any], bool]] = {
    # name: (PyTorch module, Keras target, takes token ids)
    "gru_2_layers_bidirectional": (lambda: BiGRU(batch_first=True), _bigru_target, False),
    "gru_2_layers_bidirectional_time_first": (lambda: BiGRU(batch_first=False), _bigru_target, False),
    "lstm_linear_head": (LastStepLSTM, _lstm_target, False),
    "rnn_relu": (ReluRNN, _rnn_target, False),
    "embedding_gru_linear": (Tagger, _tagger_target, True),
}


def _probe(ids: bool, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 40, size=(batch, 9)) if ids else rng.normal(size=(batch, 9, 5)).astype(np.float32)


def _torch_output(module: Any, x: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(x)
    if not module.batch_first and tensor.ndim == 3:
        return module(tensor.transpose(0, 1)).transpose(0, 1).detach().numpy()
    return module(tensor).detach().numpy()


def _save_source(module: Any, form: str, folder: Path, ids: bool) -> Path:
    if form == "pt":
        torch.save(module.state_dict(), folder / "source.pt")
        return folder / "source.pt"
    if form == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "source.safetensors"))
        return folder / "source.safetensors"
    example = torch.from_numpy(_probe(ids, 2, 0))
    if not module.batch_first:
        example = example.transpose(0, 1)
    axes = {"x": {0: "a", 1: "b"}}
    torch.onnx.export(module, (example,), str(folder / "source.onnx"), dynamo=False, input_names=["x"], dynamic_axes=axes)
    return folder / "source.onnx"


@pytest.mark.parametrize("form", ["pt", "safetensors", "onnx"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_port_computes_what_the_source_computes(keras3: Any, tmp_path: Path, form: str, case: str) -> None:
    build, target_of, ids = CASES[case]
    module = _seeded(build(), seed=hash(case) % 1000)
    source = _save_source(module, form, tmp_path, ids)
    target_of(keras3).save(tmp_path / "target.keras")
    result = run("convert", str(source), "--into", str(tmp_path / "target.keras"), "-o", str(tmp_path / "ported.keras"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["proofs"]
    if form == "onnx":
        assert report["end_to_end"] is not None and report["end_to_end"]["passed"] is True, report["end_to_end_note"]
    ported = keras3.saving.load_model(tmp_path / "ported.keras")
    for batch in (1, 7):
        x = _probe(ids, batch, seed=batch)
        np.testing.assert_allclose(ported.predict(x, verbose=0), _torch_output(module, x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["gru_2_layers_bidirectional", "lstm_linear_head"])
def test_h5_targets_of_tf_keras_and_keras_3(keras3: Any, tf_keras: Any, tmp_path: Path, case: str) -> None:
    build, target_of, ids = CASES[case]
    module = _seeded(build(), seed=11)
    source = _save_source(module, "pt", tmp_path, ids)
    for name, keras, load in (("tfk.h5", tf_keras, lambda p: tf_keras.models.load_model(p, compile=False)),
                              ("k3.h5", keras3, lambda p: keras3.saving.load_model(p, compile=False))):
        target_of(keras).save(tmp_path / name)
        out = tmp_path / f"ported_{name}"
        result = run("convert", str(source), "--into", str(tmp_path / name), "-o", str(out))
        assert result.exit_code == 0, result.output
        x = _probe(ids, 5, seed=3)
        np.testing.assert_allclose(load(out).predict(x, verbose=0), _torch_output(module, x), rtol=RTOL, atol=ATOL)
        assert run("verify", str(out)).exit_code == 0  # and Keras's predict agrees with the replay of it


# --- refusals, by name, nothing written -----------------------------------------------------------------------


def _refused(source: Path, target: Path, out: Path, *words: str) -> None:
    result = run("convert", str(source), "--into", str(target), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in result.stderr, result.stderr
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_a_pytorch_gru_into_reset_after_false_is_refused(keras3: Any, tmp_path: Path) -> None:
    torch.save(_seeded(torch.nn.GRU(5, 4, batch_first=True), 1).state_dict(), tmp_path / "gru.pt")
    keras3.Sequential([keras3.Input((None, 5)), keras3.layers.GRU(4, reset_after=False)]).save(tmp_path / "t.keras")
    _refused(tmp_path / "gru.pt", tmp_path / "t.keras", tmp_path / "out.keras", "a PyTorch GRU", "reset_after=False")


def test_a_hard_sigmoid_target_is_refused(keras3: Any, tmp_path: Path) -> None:
    torch.save(_seeded(torch.nn.LSTM(5, 4, batch_first=True), 2).state_dict(), tmp_path / "lstm.pt")
    keras3.Sequential([keras3.Input((None, 5)), keras3.layers.LSTM(4, recurrent_activation="hard_sigmoid")]).save(tmp_path / "t.keras")
    _refused(tmp_path / "lstm.pt", tmp_path / "t.keras", tmp_path / "out.keras", "hard_sigmoid", "does not compute")


def test_an_lstm_with_proj_size_is_refused(keras3: Any, tmp_path: Path) -> None:
    torch.save(_seeded(torch.nn.LSTM(5, 4, proj_size=2, batch_first=True), 3).state_dict(), tmp_path / "proj.pt")
    keras3.Sequential([keras3.Input((None, 5)), keras3.layers.LSTM(4)]).save(tmp_path / "t.keras")
    _refused(tmp_path / "proj.pt", tmp_path / "t.keras", tmp_path / "out.keras", "proj_size")


def test_shapes_leftovers_and_ambiguity_are_refused(keras3: Any, tmp_path: Path) -> None:
    torch.save(_seeded(torch.nn.GRU(5, 4, batch_first=True), 4).state_dict(), tmp_path / "gru.pt")
    keras3.Sequential([keras3.Input((None, 5)), keras3.layers.GRU(8)]).save(tmp_path / "wide.keras")
    _refused(tmp_path / "gru.pt", tmp_path / "wide.keras", tmp_path / "a.keras", "4 units", "8", "shapes that differ")
    keras3.Sequential([keras3.Input((None, 5)), keras3.layers.GRU(4), keras3.layers.Dense(2)]).save(tmp_path / "dense.keras")
    _refused(tmp_path / "gru.pt", tmp_path / "dense.keras", tmp_path / "b.keras", "target layers left without weights", "dense")
    two = torch.nn.ModuleDict({"encoder": torch.nn.GRU(5, 4, batch_first=True), "decoder": torch.nn.GRU(4, 4, batch_first=True)})
    torch.save(_seeded(two, 5).state_dict(), tmp_path / "two.pt")
    target = keras3.Sequential([keras3.Input((None, 5)), keras3.layers.GRU(4, return_sequences=True), keras3.layers.GRU(4)])
    target.save(tmp_path / "two.keras")
    _refused(tmp_path / "two.pt", tmp_path / "two.keras", tmp_path / "c.keras", "several modules", "encoder", "decoder", "--map")
    first, second = (layer.name for layer in target.layers)
    mapped = run("convert", str(tmp_path / "two.pt"), "--into", str(tmp_path / "two.keras"), "-o", str(tmp_path / "c.keras"),
                 "--map", f"decoder={second}", "--map", f"encoder={first}", "--json")
    assert mapped.exit_code == 0, mapped.output
    pairs = {pair["source"]: pair["target"] for pair in json.loads(mapped.stdout)["pairs"]}
    assert pairs == {"encoder/l0": first, "decoder/l0": second}


def test_a_malicious_pickle_is_refused_by_convert_into(keras3: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    state = _seeded(torch.nn.GRU(5, 4), 6).state_dict()
    state["x"] = Payload()  # type: ignore[assignment]
    torch.save(state, tmp_path / "evil.pt")
    keras3.Sequential([keras3.Input((None, 5)), keras3.layers.GRU(4)]).save(tmp_path / "t.keras")
    _refused(tmp_path / "evil.pt", tmp_path / "t.keras", tmp_path / "out.keras", "system", "never needs")
    assert not marker.exists()


# --- checkpoints and cells, one module at a time ---------------------------------------------------------------


class Zoo(torch.nn.Module):
    """A checkpoint of 14 modules: a dozen recurrent ones among two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv1d(5, 5, 3)
        self.mix = torch.nn.Conv1d(5, 5, 1)
        kinds = [torch.nn.GRU, torch.nn.LSTM, torch.nn.RNN]
        self.rnns = torch.nn.ModuleList([kinds[k % 3](5, 3 + k % 4, batch_first=True, bidirectional=k % 4 == 3) for k in range(12)])


def _target_for(keras: Any, module: Any) -> Any:
    L = keras.layers
    units = module.hidden_size
    layer = {torch.nn.GRU: L.GRU, torch.nn.LSTM: L.LSTM, torch.nn.RNN: L.SimpleRNN}[type(module)](units, return_sequences=True)
    wrapped = L.Bidirectional(layer) if module.bidirectional else layer
    return keras.Sequential([keras.Input((None, 5)), wrapped])


def test_a_14_module_checkpoint_ported_one_module_at_a_time(keras3: Any, tmp_path: Path) -> None:
    zoo = _seeded(Zoo(), 7)
    torch.save({"epoch": 12, "model": zoo.state_dict(), "optimizer": torch.optim.SGD(zoo.parameters(), lr=0.1).state_dict()},
               tmp_path / "zoo.tar")
    x = _probe(False, 4, seed=8)
    for index, module in enumerate(zoo.rnns):
        target = _target_for(keras3, module)
        target.save(tmp_path / f"t{index}.keras")
        name = target.layers[0].name
        out = tmp_path / f"p{index}.keras"
        result = run("convert", str(tmp_path / "zoo.tar"), "--into", str(tmp_path / f"t{index}.keras"), "-o", str(out),
                     "--map", f"rnns.{index}={name}", "--partial", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert [pair["source"].split("/")[0] for pair in report["pairs"]] == [f"rnns.{index}"]
        assert any("stem" in item for item in report["left_out"]) and len(report["left_out"]) == 13
        expected = module(torch.from_numpy(x))[0].detach().numpy()
        np.testing.assert_allclose(keras3.saving.load_model(out).predict(x, verbose=0), expected, rtol=RTOL, atol=ATOL)


def test_cells_run_over_time_as_layers(keras3: Any, tmp_path: Path) -> None:
    cells = torch.nn.ModuleDict({"gru_cell": torch.nn.GRUCell(5, 4), "lstm_cell": torch.nn.LSTMCell(5, 3)})
    _seeded(cells, 9)
    torch.save(cells.state_dict(), tmp_path / "cells.pth")
    x = _probe(False, 3, seed=10)
    for cell_name, layer in (("gru_cell", keras3.layers.RNN(keras3.layers.GRUCell(4), return_sequences=True)),
                             ("lstm_cell", keras3.layers.LSTM(3, return_sequences=True))):
        target = keras3.Sequential([keras3.Input((None, 5)), layer])
        target.save(tmp_path / f"{cell_name}.keras")
        out = tmp_path / f"{cell_name}_ported.keras"
        result = run("convert", str(tmp_path / "cells.pth"), "--into", str(tmp_path / f"{cell_name}.keras"), "-o", str(out),
                     "--map", f"{cell_name}={target.layers[0].name}", "--partial")
        assert result.exit_code == 0, result.output
        cell = cells[cell_name]
        h = torch.zeros(3, cell.hidden_size)
        c = torch.zeros(3, cell.hidden_size)
        steps = []
        for t in range(x.shape[1]):  # the cell over time, as a user runs it
            step = torch.from_numpy(x[:, t])
            if cell_name == "lstm_cell":
                h, c = cell(step, (h, c))
            else:
                h = cell(step, h)
            steps.append(h.detach().numpy())
        np.testing.assert_allclose(keras3.saving.load_model(out).predict(x, verbose=0), np.stack(steps, axis=1), rtol=RTOL, atol=ATOL)


def test_the_api_ports_and_proves(keras3: Any, tmp_path: Path) -> None:
    import grucli

    module = _seeded(LastStepLSTM(), 12)
    torch.save(module.state_dict(), tmp_path / "m.pt")
    _lstm_target(keras3).save(tmp_path / "t.keras")
    with grucli.load(tmp_path / "m.pt") as source, grucli.load(tmp_path / "t.keras") as target:
        report = grucli.port(source, target, tmp_path / "p.keras")
    assert report.passed and {pair.category for pair in report.pairs} == {"recurrent", "dense"}
    assert all(proof.comparison.max_abs_err < 1e-6 for proof in report.proofs)
    with grucli.load(report.output) as ported:
        x = _probe(False, 2, seed=13)
        np.testing.assert_allclose(grucli.replay(ported, x).output, _torch_output(module, x), rtol=RTOL, atol=ATOL)
