"""The command line: exit codes, exact error lines, JSON schema, selection options, safe writes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import real, sample
from grucli.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- errors: one line on stderr, exit 2 --------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    code, out, err = run("inspect", str(missing))
    assert (code, out) == (2, "")
    assert err == f"Error: {missing}: no such file; expected a Keras model file (.keras, .h5, .hdf5)\n"


def test_directory(tmp_path: Path) -> None:
    code, _, err = run("export", str(tmp_path), "-o", str(tmp_path / "x.npz"))
    assert code == 2
    assert err == (f"Error: {tmp_path} is a directory; expected a Keras model file (.keras, .h5, .hdf5), a SavedModel "
                   "folder (saved_model.pb and variables/) or a TensorFlow checkpoint folder\n")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    code, _, err = run("inspect", str(empty))
    assert code == 2
    assert err == f"Error: {empty} is empty; expected a Keras model file (.keras zip or HDF5)\n"


def test_not_a_model(tmp_path: Path) -> None:
    text = tmp_path / "model.h5"
    text.write_bytes(b"hello, this is not HDF5")
    code, _, err = run("inspect", str(text))
    assert code == 2
    assert err == f"Error: {text} is neither a Keras .keras zip nor an HDF5 file (.h5, .hdf5), nor a PyTorch, .safetensors or .onnx file\n"


@pytest.mark.parametrize("name", ["k3_gru.keras", "k3_gru.h5"])
def test_truncated_files(tmp_path: Path, name: str) -> None:
    cut = tmp_path / name
    cut.write_bytes(sample(name).read_bytes()[:3000])
    code, out, err = run("inspect", str(cut))
    assert code == 2 and out == ""
    assert err.startswith(f"Error: cannot read {cut}: the file is corrupt or truncated (")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_hdf5_without_keras_content(tmp_path: Path) -> None:
    import h5py

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["data"] = np.arange(3)
    code, _, err = run("inspect", str(plain))
    assert code == 2
    assert err.startswith(f"Error: {plain} is an HDF5 file with no Keras model in it; expected")


def test_zip_without_config(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "m.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("metadata.json", "{}")
    code, _, err = run("inspect", str(archive))
    assert code == 2
    assert err == f"Error: {archive} is a zip without config.json; expected a Keras 3 .keras file\n"


def test_unknown_layer_gate_unit() -> None:
    model = str(sample("k3_bidir_concat.keras"))
    assert run("inspect", model, "--layer", "nope") == (2, "", "Error: no recurrent layer 'nope' in this model; expected one of: bi/forward, bi/backward\n")
    assert run("inspect", model, "--gate", "f") == (2, "", "Error: no gate 'f' in the selected layers; expected one of: h, r, z\n")
    assert run("inspect", model, "--unit", "4") == (2, "", "Error: --unit 4 is out of range; the selected layers have at most 4 units (0-3)\n")


def test_usage_error_exit_code() -> None:
    code, _, err = run("inspect")
    assert code == 2 and "Missing argument 'MODEL'" in err


# --- inspect -------------------------------------------------------------------------------------------------


def test_inspect_json_schema_and_values() -> None:
    code, out, err = run("inspect", str(sample("k3_gru.keras")), "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["format"] == "keras-v3" and doc["keras_version"] == "3.15.1"
    assert doc["file"] == str(sample("k3_gru.keras"))
    [layer] = doc["layers"]
    assert (layer["path"], layer["class"], layer["units"], layer["input_dim"]) == ("gru", "GRU", 4, 3)
    assert layer["config"]["reset_after"] is True
    assert set(layer["gates"]) == {"z", "r", "h"}
    assert set(layer["gates"]["z"]) == {"kernel", "recurrent_kernel", "bias", "recurrent_bias"}
    assert layer["gates"]["h"]["recurrent_kernel"]["shape"] == [4, 4]
    assert "values" not in layer["gates"]["z"]["kernel"]
    assert [o["class"] for o in doc["other_layers"]] == ["InputLayer", "Dense"]

    with_values = json.loads(run("inspect", str(sample("k3_gru.keras")), "--json", "--values")[1])
    kernel = np.asarray(with_values["layers"][0]["gates"]["r"]["kernel"]["values"])

    with zipfile.ZipFile(sample("k3_gru.keras")) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        stored = f["layers/gru/cell/vars/0"][()]
    assert np.array_equal(kernel, stored[:, 4:8].astype(np.float64))
    stats = with_values["layers"][0]["gates"]["r"]["kernel"]["stats"]
    assert stats["max"] == pytest.approx(float(stored[:, 4:8].max()))
    assert stats["nan"] == 0 and stats["inf"] == 0


def test_inspect_unit_selects_one_column() -> None:
    doc = json.loads(run("inspect", str(sample("k3_lstm.keras")), "--layer", "lstm", "--unit", "3", "--json", "--values")[1])
    [layer] = doc["layers"]
    assert layer["unit"] == 3
    assert layer["gates"]["f"]["kernel"]["shape"] == [3]
    assert layer["gates"]["f"]["bias"]["shape"] == []
    full = json.loads(run("inspect", str(sample("k3_lstm.keras")), "--layer", "lstm", "--json", "--values")[1])
    column = np.asarray(full["layers"][0]["gates"]["f"]["kernel"]["values"])[:, 3]
    assert np.array_equal(np.asarray(layer["gates"]["f"]["kernel"]["values"]), column)


def test_inspect_text_for_a_person() -> None:
    code, out, err = run("inspect", str(real("trafficflow_gru_keras2.1.4.h5")))
    assert code == 0 and err == ""
    assert "saved by Keras 2.1.4" in out and "backend: tensorflow" in out
    assert "gru_1" in out and "gru_2" in out
    assert "no reset_after key in the config; the bias shape (192,) says reset_after=False" in out
    assert "recurrent_activation=hard_sigmoid" in out
    assert "h = z * h_prev + (1 - z) * hh" in out
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_inspect_values_elides_large_matrices() -> None:
    code, out, _ = run("inspect", str(sample("q_gru32_dense10.keras")), "--gate", "z", "--values")
    assert code == 0
    assert "showing the corners of a 32×32 matrix" in out
    assert "u31" in out and "u15" not in out


def test_inspect_values_of_a_conv_lstm_label_rows_by_window_position() -> None:
    """ConvLSTM1D(3, kernel_size=2) on 2 channels: the kernel (2, 2, 3) has a row per window
    position and input channel, [0]x0 [0]x1 [1]x0 [1]x1 (Rich once read "[0]" as markup and
    printed x0 x1 x0 x1), and its numbers are the file's kernel[position, channel, unit]."""
    code, out, _ = run("inspect", str(sample("k3_conv_lstm1d.keras")), "--gate", "i", "--values")
    assert code == 0
    block = out.split("i (input gate) · kernel\n", 1)[1].splitlines()[2:6]
    assert [line.split()[0] for line in block] == ["[0]x0", "[0]x1", "[1]x0", "[1]x1"]
    with zipfile.ZipFile(sample("k3_conv_lstm1d.keras")) as archive, \
            h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
        kernels = []
        weights.visititems(lambda name, item: kernels.append(item[()]) if name.endswith("vars/0") and item.ndim == 3 else None)
    kernel = kernels[0]  # (window, channels, 4 * units), gates i, f, c, o
    printed = [[float(v) for v in line.split()[1:]] for line in block]
    np.testing.assert_allclose(printed, kernel[:, :, :3].reshape(4, 3), atol=5e-5)


def test_inspect_weights_only_file_says_inferred() -> None:
    code, out, _ = run("inspect", str(real("textgenrnn_cudnnlstm_weights_keras2.1.5.hdf5")))
    assert code == 0
    assert "kind inferred from weight shapes" in out
    assert "converted from the CuDNNLSTM layout" in out
    assert "rnn_1" in out and "rnn_2" in out
    assert "attention" in out  # non-recurrent layers are listed, not dropped


def grucli_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grucli", *args], capture_output=True, text=True)


def test_python_dash_m(tmp_path: Path) -> None:
    result = grucli_process("--version")
    assert result.returncode == 0 and result.stdout.startswith("grucli, version ")


def test_process_exit_leaves_every_output_complete(tmp_path: Path) -> None:
    # The command ends the process without the interpreter's teardown: buffered stdout must still
    # arrive whole, and the exit codes be the command's own.
    result = grucli_process("inspect", str(sample("k3_lstm.h5")), "--json", "--values")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"][1]["path"] == "lstm_2"
    exported = grucli_process("export", str(sample("k3_lstm.h5")), "-o", str(tmp_path / "w.npz"))
    assert exported.returncode == 0 and exported.stderr == f"wrote 24 arrays from 2 layer(s) to {tmp_path / 'w.npz'}\n"
    with np.load(tmp_path / "w.npz") as loaded:
        assert loaded["lstm_2/o/bias"].shape == (2,)
    missing = grucli_process("inspect", str(tmp_path / "none.h5"))
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr.startswith("Error: ") and missing.stderr.count("\n") == 1
    assert grucli_process("no-such-command").returncode == 2


def test_a_reader_that_goes_away_is_no_error() -> None:
    # `grucli inspect ... | head`: the pipe closes before the output is written. Not an error of
    # grucli's: exit 0, nothing on stderr (it was "Error: unexpected BrokenPipeError", exit 2).
    big_output = real("textgenrnn_cudnnlstm_weights_keras2.1.5.hdf5")  # 9 MB of JSON: past any pipe buffer
    command = [sys.executable, "-m", "grucli", "inspect", str(big_output), "--json", "--values"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command has written anything
    stderr = process.stderr.read()
    assert process.wait() == 0
    assert stderr == b""


# --- export ---------------------------------------------------------------------------------------------------


def test_export_refuses_to_overwrite_and_force(tmp_path: Path) -> None:
    out = tmp_path / "g.npz"
    out.write_bytes(b"keep me")
    model = str(sample("k3_gru.keras"))
    assert run("export", model, "-o", str(out)) == (2, "", f"Error: {out} already exists; pass --force to overwrite it\n")
    assert out.read_bytes() == b"keep me"
    code, out_text, err = run("export", model, "-o", str(out), "--force")
    assert code == 0 and out_text == ""
    assert err == f"wrote 12 arrays from 1 layer(s) to {out}\n"
    with np.load(out) as data:
        assert "gru/h/recurrent_bias" in data.files
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # no temporary file left


def test_export_layer_prefix(tmp_path: Path) -> None:
    out = tmp_path / "g.npz"
    assert run("export", str(sample("k3_nested.keras")), "-o", str(out), "--layer", "encoder")[0] == 0
    with np.load(out) as data:
        assert sorted({key.rsplit("/", 2)[0] for key in data.files}) == ["encoder/enc_gru"]


def test_export_missing_folder(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "g.npz"
    code, _, err = run("export", str(sample("k3_gru.keras")), "-o", str(out))
    assert code == 2
    assert err == f"Error: folder {out.parent} does not exist; expected an existing folder for g.npz\n"
