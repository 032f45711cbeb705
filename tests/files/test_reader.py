"""The reader: naming rules, HDF5 attribute quirks and layouts, against Keras's own code and files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from conftest import real, sample
from grucli.model.layers import find_layers
from grucli.model.records import NamedArray
from grucli.files.hdf5 import read_list_attribute
from grucli.files.inference import infer_class
from grucli.files.reader import read_model
from grucli.files.tree import snake_case


@pytest.mark.parametrize("name", ["GRU", "SimpleRNN", "LSTM", "ConvLSTM2D", "StackedRNNCells", "TimeDistributed", "InputLayer", "GRUCell", "CuDNNLSTM"])
def test_snake_case_matches_keras(keras3: Any, name: str) -> None:
    from keras.src.utils.naming import to_snake_case

    assert snake_case(name) == to_snake_case(name)


def test_chunked_and_bytes_attributes(tmp_path: Path) -> None:
    path = tmp_path / "chunks.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names0"] = [b"a", b"b"]
        f.attrs["layer_names1"] = np.array(["c"], dtype=h5py.string_dtype())
        f.attrs["empty"] = np.array([], dtype=np.float64)  # how h5py returns an empty weight_names
    with h5py.File(path, "r") as f:
        assert read_list_attribute(f, "layer_names") == ["a", "b", "c"]
        assert read_list_attribute(f, "empty") == []


def test_keras21_list_config_and_names_without_cell_scope() -> None:
    model = read_model(real("trafficflow_lstm_keras2.1.4.h5"))
    assert (model.format, model.keras_version, model.backend) == ("legacy-h5", "2.1.4", "tensorflow")
    layers = find_layers(model)
    assert [layer.path for layer in layers.recurrent] == ["lstm_1", "lstm_2"]
    assert layers.recurrent[0].stored_weights[0] == ("lstm_1/kernel:0", (1, 256))
    assert layers.recurrent[0].config["recurrent_activation"] == "hard_sigmoid"
    assert [o.path for o in layers.others] == ["dropout_1", "dense_1"]


def test_time_major_config_is_kept() -> None:
    [lstm] = find_layers(read_model(real("ethnicolr_census2010_lstm_tfkeras2.5.h5"))).recurrent
    assert lstm.config["time_major"] is False
    assert (lstm.units, lstm.input_dim) == (128, 32)


def test_keras1_file_has_no_version_and_old_config_names() -> None:
    model = read_model(sample("keras1_lstm.h5"))
    assert model.keras_version is None
    [lstm] = find_layers(model).recurrent
    assert lstm.source_layout == "keras1"
    assert lstm.config["recurrent_activation"] == "hard_sigmoid"  # from inner_activation


@pytest.mark.parametrize(
    "shapes, expected",
    [
        ([(3, 12), (4, 12), (2, 12)], "GRU"),
        ([(3, 12), (4, 12), (12,)], "GRU"),
        ([(3, 12), (4, 12), (24,)], "CuDNNGRU"),
        ([(3, 16), (4, 16), (16,)], "LSTM"),
        ([(3, 16), (4, 16), (32,)], "CuDNNLSTM"),
        ([(3, 4), (4, 4), (4,)], "SimpleRNN"),
        ([(3, 4), (4, 4)], "SimpleRNN"),
        ([(2, 2, 12), (2, 3, 12), (12,)], "ConvLSTM1D"),
        ([(356, 1)], None),
        ([(64, 1), (1,)], None),
    ],
)
def test_infer_class_from_shapes(shapes: list[tuple[int, ...]], expected: str | None) -> None:
    assert infer_class([NamedArray(str(i), np.zeros(s)) for i, s in enumerate(shapes)]) == expected


def test_keras_zip_member_is_read_in_place() -> None:
    # The stored member is read through a window on the file, not extracted or copied.
    from grucli.files.keras_zip import MemberView

    import zipfile

    with zipfile.ZipFile(sample("k3_gru.keras")) as archive:
        info = archive.getinfo("model.weights.h5")
        expected = archive.read(info)
        assert info.compress_type == zipfile.ZIP_STORED
    from grucli.files.budget import Budget, Limits
    from grucli.files.keras_zip import open_member

    with zipfile.ZipFile(sample("k3_gru.keras")) as archive:
        view = open_member(sample("k3_gru.keras"), archive, info, Budget(Limits()))
    assert isinstance(view, MemberView)
    assert view.read() == expected
    view.seek(-10, 2)
    assert view.read() == expected[-10:]
    view.close()


def test_shape_contradicting_config_is_an_error(tmp_path: Path) -> None:
    import shutil

    from grucli.errors import ModelFileError

    broken = tmp_path / "broken.h5"
    shutil.copy(sample("tfk_lstm.h5"), broken)
    with h5py.File(broken, "r+") as f:
        group = f["model_weights/lstm/lstm/lstm_cell"]
        del group["bias:0"]
        group["bias:0"] = np.zeros(7, dtype="float32")
    with pytest.raises(ModelFileError, match=r"layer lstm \(LSTM, 4 units\): bias \(7,\), expected \(16,\)"):
        find_layers(read_model(broken))
