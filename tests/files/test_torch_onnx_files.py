"""PyTorch state_dicts (`.pt` zips under any name, checkpoint dicts, `.safetensors`) and ONNX graphs,
read without PyTorch and without running anything they hold.

Truth is PyTorch's own documented layout, written out here: `nn.GRU`'s `weight_ih_l0` rows are r
[0:H], z [H:2H], n [2H:3H]; `nn.LSTM`'s i, f, g, o. Each exported Keras gate slice must equal the
block of the PyTorch tensor that gate is, transposed; the ONNX file torch.onnx.export writes of
the same module reads to the same Keras arrays.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli

torch = pytest.importorskip("torch", reason="PyTorch writes the files these tests read (pip install -e '.[test]')")

# Keras gate g of a PyTorch family is PyTorch block k (PyTorch's own order, from its documentation).
TORCH_BLOCK = {"GRU": {"r": 0, "z": 1, "h": 2}, "LSTM": {"i": 0, "f": 1, "c": 2, "o": 3}, "SimpleRNN": {"h": 0}}


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _seeded(module: Any, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-0.5, 0.5)
    return module


class Tagger(torch.nn.Module):
    """Embedding → GRU(2 layers, bidirectional) → Linear on the last step, with a BatchNorm buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(30, 5)
        self.rnn = torch.nn.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.norm = torch.nn.BatchNorm1d(8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: Any) -> Any:
        out, _ = self.rnn(self.embedding(ids))
        return self.head(self.norm(out[:, -1]))


def _exported(path: Path) -> dict[str, np.ndarray]:
    target = path.with_name(path.name + ".npz")
    result = run("export", str(path), "-o", str(target))
    assert result.exit_code == 0, result.output
    with np.load(target) as data:
        return {key: data[key] for key in data.files}


def _check_torch_gates(exported: dict[str, np.ndarray], prefix: str, state: dict[str, Any], family: str, layer: str,
                       suffix: str) -> None:
    hidden = state[f"{prefix}weight_hh_{suffix}"].shape[1]
    for gate, block in TORCH_BLOCK[family].items():
        rows = slice(block * hidden, (block + 1) * hidden)
        np.testing.assert_array_equal(exported[f"{layer}/{gate}/kernel"], state[f"{prefix}weight_ih_{suffix}"][rows].numpy().T)
        np.testing.assert_array_equal(exported[f"{layer}/{gate}/recurrent_kernel"], state[f"{prefix}weight_hh_{suffix}"][rows].numpy().T)
        b_ih, b_hh = (state[f"{prefix}bias_{side}_{suffix}"][rows].numpy() for side in ("ih", "hh"))
        if family == "GRU":  # reset_after=True: Keras keeps both bias rows
            np.testing.assert_array_equal(exported[f"{layer}/{gate}/bias"], b_ih)
            np.testing.assert_array_equal(exported[f"{layer}/{gate}/recurrent_bias"], b_hh)
        else:  # one bias: their sum, in float32 as PyTorch adds them
            np.testing.assert_allclose(exported[f"{layer}/{gate}/bias"], b_ih + b_hh, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "checkpoint.tar", "weights.bin", "model.pkl"])
def test_a_state_dict_under_any_name_reads_in_keras_layout(tmp_path: Path, name: str) -> None:
    model = _seeded(Tagger())
    state = model.state_dict()
    torch.save(state, tmp_path / name)
    document = json.loads(run("inspect", str(tmp_path / name), "--json").stdout)
    assert document["format"] == "pytorch"
    assert [layer["path"] for layer in document["layers"]] == ["rnn/l0", "rnn/l0_reverse", "rnn/l1", "rnn/l1_reverse"]
    first = document["layers"][0]
    assert first["source"]["gates"] == ["r", "z", "n"] and first["source"]["keras_gates"] == ["r", "z", "h"]
    assert list(first["gates"]) == ["r", "z", "n"]  # PyTorch's order and letters
    assert first["config"]["reset_after"] is True and document["layers"][1]["config"]["go_backwards"] is True
    others = {other["path"]: other for other in document["other_layers"]}
    assert set(others) == {"embedding", "norm", "head"}  # listed, num_batches_tracked (an int64 buffer) among norm's
    assert others["head"]["class"] == "nn.Linear" and any(w["name"] == "norm.num_batches_tracked" for w in others["norm"]["weights"])
    exported = _exported(tmp_path / name)
    for layer, suffix in (("rnn/l0", "l0"), ("rnn/l0_reverse", "l0_reverse"), ("rnn/l1", "l1"), ("rnn/l1_reverse", "l1_reverse")):
        _check_torch_gates(exported, "rnn.", state, "GRU", layer, suffix)


@pytest.mark.parametrize("form", ["model", "state_dict", "per_module", "archive_folder"])
def test_checkpoint_dicts_as_people_save_them(tmp_path: Path, form: str) -> None:
    model = _seeded(Tagger(), seed=1)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randint(0, 30, (2, 4))).sum().backward()
    optimizer.step()
    state = model.state_dict()
    path = tmp_path / "checkpoint.tar"
    if form == "model":
        torch.save({"epoch": 7, "model": state, "optimizer": optimizer.state_dict(), "loss": 0.25}, path)
    elif form == "state_dict":
        torch.save({"state_dict": state, "best_accuracy": 0.9}, path)
    elif form == "per_module":
        torch.save({"encoder": model.rnn.state_dict(), "classifier": model.head.state_dict()}, path)
    else:  # PyTorch before 2.0 named the zip's folder `archive`
        torch.save(state, tmp_path / "plain.pt")
        with zipfile.ZipFile(tmp_path / "plain.pt") as original, zipfile.ZipFile(path, "w") as renamed:
            for info in original.infolist():
                renamed.writestr("archive/" + info.filename.split("/", 1)[1], original.read(info))
    document = json.loads(run("inspect", str(path), "--json").stdout)
    prefix = "encoder/" if form == "per_module" else "rnn/"
    expected = [f"{prefix}l0", f"{prefix}l0_reverse", f"{prefix}l1", f"{prefix}l1_reverse"]
    if form == "per_module":
        expected = [path.replace("encoder/", "encoder/") for path in expected]
    assert [layer["path"] for layer in document["layers"]] == expected
    exported = _exported(path)
    _check_torch_gates(exported, "rnn.", state, "GRU", expected[2], "l1")
    if form in ("model", "state_dict", "per_module"):
        text = run("inspect", str(path)).stdout
        assert "the state_dict was found under the checkpoint key" in text


def test_cells_lstm_and_rnn_read_in_their_own_letters(tmp_path: Path) -> None:
    modules = torch.nn.ModuleDict({"cell": torch.nn.LSTMCell(3, 4), "gru_cell": torch.nn.GRUCell(3, 2),
                                   "lstm": torch.nn.LSTM(3, 4), "rnn": torch.nn.RNN(3, 5, nonlinearity="relu", bias=False)})
    _seeded(modules, seed=2)
    state = modules.state_dict()
    torch.save(state, tmp_path / "m.pt")
    document = json.loads(run("inspect", str(tmp_path / "m.pt"), "--json").stdout)
    layers = {layer["path"]: layer for layer in document["layers"]}
    assert set(layers) == {"cell", "gru_cell", "lstm/l0", "rnn/l0"}
    assert layers["cell"]["source"]["module"] == "nn.LSTMCell" and list(layers["cell"]["gates"]) == ["i", "f", "g", "o"]
    assert layers["rnn/l0"]["config"]["activation"] is None  # nn.RNN's nonlinearity is not in a state_dict
    text = run("inspect", str(tmp_path / "m.pt"), "--layer", "rnn/l0").stdout
    assert "tanh or relu" in text
    exported = _exported(tmp_path / "m.pt")
    hidden = 4
    for gate, block in TORCH_BLOCK["LSTM"].items():
        rows = slice(block * hidden, (block + 1) * hidden)
        np.testing.assert_array_equal(exported[f"cell/{gate}/kernel"], state["cell.weight_ih"][rows].numpy().T)
    np.testing.assert_array_equal(exported["rnn/l0/h/kernel"], state["rnn.weight_ih_l0"].numpy().T)
    assert "rnn/l0/h/bias" not in exported  # bias=False


def test_safetensors_and_pt_read_alike(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _seeded(Tagger(), seed=3)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    save_file(state, str(tmp_path / "m.safetensors"))
    from_pt, from_st = _exported(tmp_path / "m.pt"), _exported(tmp_path / "m.safetensors")
    assert from_pt.keys() == from_st.keys() and all(np.array_equal(from_pt[k], from_st[k]) for k in from_pt)
    document = json.loads(run("inspect", str(tmp_path / "m.safetensors"), "--json").stdout)
    assert document["format"] == "safetensors" and len(document["layers"]) == 4


def test_an_onnx_export_reads_to_the_same_keras_arrays(tmp_path: Path) -> None:
    model = _seeded(Tagger(), seed=4).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    torch.onnx.export(model, (torch.randint(0, 30, (2, 6)),), str(tmp_path / "m.onnx"), dynamo=False, input_names=["ids"])
    document = json.loads(run("inspect", str(tmp_path / "m.onnx"), "--json").stdout)
    paths = [layer["path"] for layer in document["layers"]]
    assert len(paths) == 4 and all(layer["source"]["module"] == "ONNX GRU" for layer in document["layers"])
    assert document["layers"][0]["source"]["settings"]["linear_before_reset"] == 1
    from_pt, from_onnx = _exported(tmp_path / "m.pt"), _exported(tmp_path / "m.onnx")
    for torch_path, onnx_path in zip(["rnn/l0", "rnn/l0_reverse", "rnn/l1", "rnn/l1_reverse"], paths):
        for key in [k for k in from_pt if k.startswith(torch_path + "/")]:
            np.testing.assert_allclose(from_onnx[onnx_path + key[len(torch_path):]], from_pt[key], rtol=0, atol=0)
    assert {other["class"] for other in document["other_layers"]} == {"ONNX Gather", "ONNX Gemm"}


# --- what is refused, by name ---------------------------------------------------------------------------------


def test_a_pickle_that_calls_os_system_is_refused_by_every_command_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    state = _seeded(torch.nn.GRU(3, 4)).state_dict()
    state["evil"] = Payload()  # type: ignore[assignment]
    torch.save(state, tmp_path / "evil.pt")
    runs = [["inspect", str(tmp_path / "evil.pt")], ["inspect", str(tmp_path / "evil.pt"), "--json"],
            ["export", str(tmp_path / "evil.pt"), "-o", str(tmp_path / "g.npz")], ["check", str(tmp_path / "evil.pt")],
            ["diff", str(tmp_path / "evil.pt"), str(tmp_path / "evil.pt")], ["plot", str(tmp_path / "evil.pt"), "-o", str(tmp_path / "p.png")],
            ["report", str(tmp_path / "evil.pt"), "-o", str(tmp_path / "r.html")]]
    for args in runs:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("Error: ") and "system" in result.stderr and "names" in result.stderr, result.stderr
    assert not marker.exists()
    assert not list(tmp_path.glob("*.npz")) and not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.html"))


def test_a_whole_pickled_module_and_torchscript_are_refused_with_advice(tmp_path: Path) -> None:
    module = _seeded(torch.nn.GRU(3, 4))
    torch.save(module, tmp_path / "whole.pt")
    whole = run("inspect", str(tmp_path / "whole.pt"))
    assert whole.exit_code == 2 and "torch.save(model)" in whole.stderr and "state_dict()" in whole.stderr
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(tmp_path / "script.pt"))
    script = run("inspect", str(tmp_path / "script.pt"))
    assert script.exit_code == 2 and "TorchScript" in script.stderr and "state_dict()" in script.stderr


def test_an_lstm_with_proj_size_is_listed_and_refused_by_export(tmp_path: Path) -> None:
    torch.save(_seeded(torch.nn.LSTM(3, 4, proj_size=2)).state_dict(), tmp_path / "proj.pt")
    document = json.loads(run("inspect", str(tmp_path / "proj.pt"), "--json").stdout)
    assert document["layers"] == [] and "proj_size" in document["other_layers"][0]["skipped"]
    exported = run("export", str(tmp_path / "proj.pt"), "-o", str(tmp_path / "g.npz"))
    assert exported.exit_code == 2 and "proj_size" in exported.stderr


def test_onnx_graphs_grucli_cannot_read_are_refused_by_name(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    # A GRU whose W is computed (a MatMul's output), not a constant of the graph.
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [5, 1, 3])
    w_in = helper.make_tensor_value_info("w_in", onnx.TensorProto.FLOAT, [1, 12, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    r = onnx.numpy_helper.from_array(np.zeros((1, 12, 4), np.float32), "R")
    nodes = [helper.make_node("Identity", ["w_in"], ["W"]), helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=4, name="gru")]
    graph = helper.make_graph(nodes, "g", [x, w_in], [y], [r])
    onnx.save(helper.make_model(graph), str(tmp_path / "computed.onnx"))
    computed = run("inspect", str(tmp_path / "computed.onnx"))
    assert computed.exit_code == 2 and "node gru takes its W from 'W', which the graph computes" in computed.stderr
    # No recurrent node: a Loop, as tf2onnx writes a Keras GRU.
    body = helper.make_graph([helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
                             [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, [])])
    loop = helper.make_node("Loop", ["", "c"], [], body=body, name="while")
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(np.array(True))), loop],
                              "g", [], [helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])])
    onnx.save(helper.make_model(graph), str(tmp_path / "loop.onnx"))
    lowered = run("inspect", str(tmp_path / "loop.onnx"))
    assert lowered.exit_code == 2 and "no ONNX GRU, LSTM or RNN node was found" in lowered.stderr and "Loop" in lowered.stderr


def test_a_legacy_torch_file_is_refused_with_advice(tmp_path: Path) -> None:
    torch.save(_seeded(torch.nn.GRU(3, 4)).state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    result = run("inspect", str(tmp_path / "old.pt"))
    assert result.exit_code == 2 and "before PyTorch 1.6" in result.stderr


def test_storage_bytes_are_charged_to_the_budget(tmp_path: Path) -> None:
    torch.save(_seeded(torch.nn.GRU(256, 512)).state_dict(), tmp_path / "big.pt")  # 4.5 MiB of storages
    result = run("inspect", str(tmp_path / "big.pt"), "--max-total-mb", "1")
    assert result.exit_code == 2 and "--max-total-mb" in result.stderr
    assert run("inspect", str(tmp_path / "big.pt"), "--max-total-mb", "8").exit_code == 0


@pytest.mark.parametrize("form", ["pt", "onnx"])
def test_check_plot_and_report_read_other_frameworks(tmp_path: Path, form: str) -> None:
    """inspect, check, plot and report show these sources like a Keras file (plot names the
    framework's arrays: weight_ih and weight_hh, W and R)."""
    pytest.importorskip("matplotlib")
    sample = Path(__file__).resolve().parents[2] / "sample_models" / f"torch_gru_head.{form}"
    assert run("check", str(sample)).exit_code == 0
    plotted = run("plot", str(sample), "-o", str(tmp_path / "p.png"))
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
    reported = run("report", str(sample), "-o", str(tmp_path / "r.html"))
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "r.html").read_text()
    assert "gru" in page and ("weight_ih" in page or "kernel" in page)
