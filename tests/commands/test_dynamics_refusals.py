"""Bad and hostile input to activations, probe, plot --trajectories and report --activations: one
`Error:` line, exit 2, nothing written; stores and data whose metadata names codecs that decode
Python objects are refused before zarr reads a byte of them (no code from a file ever runs)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from grucli.cli import cli

zarr = pytest.importorskip("zarr", reason="the store is Zarr (pip install -e '.[test]')")
pytest.importorskip("sklearn", reason="probe fits scikit-learn models (pip install -e '.[test]')")


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def refused(result: Any, said: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and said in lines[0], result.output


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(keras3: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("made")
    keras3.utils.set_random_seed(1)
    model = keras3.Sequential([keras3.Input((6, 3)), keras3.layers.GRU(5, return_sequences=True, name="gru")])
    model.save(folder / "gru.keras")
    other = keras3.Sequential([keras3.Input((6, 3)), keras3.layers.GRU(5, return_sequences=True, name="gru")])
    other.save(folder / "other.keras")
    np.save(folder / "x.npy", np.random.default_rng(0).normal(size=(30, 6, 3)).astype(np.float32))
    result = run("activations", str(folder / "gru.keras"), "--input", str(folder / "x.npy"), "-o", str(folder / "acts.zarr"))
    assert result.exit_code == 0, result.output
    return folder


def test_labels_of_the_wrong_length_or_shape(made: Path, tmp_path: Path) -> None:
    for shape, said in (((29,), "expected (30,)"), ((30, 5), "expected (30, 6)"), ((30, 6, 2), "expected (30,)")):
        np.save(tmp_path / "y.npy", np.zeros(shape))
        result = run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "y.npy"), "-o", str(tmp_path / "curves.png"))
        refused(result, said)
        assert not (tmp_path / "curves.png").exists()


def test_nan_labels_and_other_labels_that_cannot_be_probed(made: Path, tmp_path: Path) -> None:
    y = np.random.default_rng(0).normal(size=30)
    y[4] = np.nan
    np.save(tmp_path / "nan.npy", y)
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "nan.npy")), "1 NaN or infinite labels")
    np.save(tmp_path / "one.npy", np.ones(30, np.int64))
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "one.npy")), "one class only")
    np.save(tmp_path / "rare.npy", np.array([1] * 28 + [0] * 2))
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "rare.npy")), "expected at least --folds (5) of each class")
    np.save(tmp_path / "frac.npy", np.linspace(0, 1, 30))
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "frac.npy"), "--task", "classification"), "fractions")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "objects.npy")), "never unpickles")
    np.save(tmp_path / "y.npy", np.zeros(30))
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "y.npy"), "--per-step"), "expected (N, T)")
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "y.npy"), "--control", "type"), "needs the input ids")
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "y.npy"), "--state", "c"), "expected some of: h, hh, r, z")
    refused(run("probe", str(made / "acts.zarr"), "--labels", str(tmp_path / "y.npy"), "--layer", "lstm"), "holds no layer 'lstm'")


def test_a_store_from_another_model(made: Path, tmp_path: Path) -> None:
    before = tree(made / "acts.zarr")
    np.save(tmp_path / "y.npy", np.zeros(30))
    refused(
        run("plot", str(made / "other.keras"), "--trajectories", str(made / "acts.zarr"), "-o", str(tmp_path / "t.png")),
        "expected the model the store was computed from",
    )
    refused(
        run("report", str(made / "other.keras"), "--activations", str(made / "acts.zarr"), "--labels", str(tmp_path / "y.npy"),
            "-o", str(tmp_path / "r.html")),
        "expected the model the store was computed from",
    )
    refused(
        run("activations", str(made / "other.keras"), "--input", str(made / "x.npy"), "-o", str(made / "acts.zarr"), "--resume"),
        "expected the same model file",
    )
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "r.html").exists()
    assert tree(made / "acts.zarr") == before


def test_data_of_the_wrong_shape_or_kind_writes_nothing(made: Path, tmp_path: Path) -> None:
    cases = {
        "steps.npy": (np.zeros((4, 7, 3), np.float32), "expects (batch, 6, 3)"),
        "features.npy": (np.zeros((4, 6, 2), np.float32), "expects (batch, 6, 3)"),
        "flat.npy": (np.zeros((4,), np.float32), "expected rows first"),
        "complex.npy": (np.zeros((4, 6, 3), np.complex64), "expected numbers"),
    }
    for name, (array, said) in cases.items():
        np.save(tmp_path / name, array)
        refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / name), "-o", str(tmp_path / "acts.zarr")), said)
        assert not (tmp_path / "acts.zarr").exists()
    np.save(tmp_path / "pickled.npy", np.array([[[object()]]], dtype=object), allow_pickle=True)
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "pickled.npy"), "-o", str(tmp_path / "acts.zarr")),
            "never unpickles")
    np.savez_compressed(tmp_path / "packed.npz", x=np.zeros((4, 6, 3), np.float32))
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "packed.npz"), "-o", str(tmp_path / "acts.zarr")),
            "np.savez_compressed")
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "steps.npy").read_bytes()[:200])
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "truncated.npy"), "-o", str(tmp_path / "acts.zarr")),
            "but holds")
    (tmp_path / "empty").mkdir()
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "empty"), "-o", str(tmp_path / "acts.zarr")),
            "holds no .npy shards")
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", np.zeros((2, 6, 3), np.float32))
    np.save(tmp_path / "mixed" / "b.npy", np.zeros((2, 6, 3), np.float64))
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "mixed"), "-o", str(tmp_path / "acts.zarr")),
            "expected (6, 3) float32 like a.npy")
    assert not (tmp_path / "acts.zarr").exists()


def test_outputs_that_would_replace_what_they_should_not(made: Path, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    refused(run("activations", str(made / "gru.keras"), "--input", str(made / "x.npy"), "-o", str(tmp_path / "notes"), "--force"),
            "is a folder that is not a grucli store")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    refused(run("activations", str(made / "gru.keras"), "--input", str(made / "x.npy"), "-o", str(made / "acts.zarr")),
            "already exists; pass --force")
    refused(run("activations", str(made / "gru.keras"), "--input", str(made / "x.npy"), "-o", str(made / "x.npy"), "--force"),
            "would replace the data")
    refused(run("activations", str(made / "gru.keras"), "--input", str(made / "x.npy"), "-o", str(tmp_path / "a.zarr"), "--layer", "lstm"),
            "no recurrent layer 'lstm'")
    refused(run("activations", str(made / "gru.keras"), "--input", str(made / "x.npy"), "-o", str(tmp_path / "a.zarr"), "--only", "c"),
            "no selected layer traces 'c'")
    assert not (tmp_path / "a.zarr").exists()


class Planted:
    """Unpickling this writes a file: a pickle codec that ran would leave it behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "code from the file ran"))


def _pickle_array_v2(folder: Path, marker: Path) -> None:
    """A Zarr 2 array whose compressor unpickles its chunk."""
    folder.mkdir()
    (folder / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [4, 6, 3], "chunks": [4, 6, 3], "dtype": "<f4", "compressor": {"id": "pickle"},
        "fill_value": 0, "filters": None, "order": "C",
    }))
    (folder / "0.0.0").write_bytes(pickle.dumps(Planted(marker)))


def test_zarr_data_whose_codec_would_unpickle_is_refused(made: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    _pickle_array_v2(tmp_path / "data.zarr", marker)
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "data.zarr"), "-o", str(tmp_path / "a.zarr")),
            "uses codec 'pickle'")
    (tmp_path / "objects.zarr").mkdir()
    (tmp_path / "objects.zarr" / "zarr.json").write_text(json.dumps({
        "zarr_format": 3, "node_type": "array", "shape": [4, 6, 3], "data_type": "object",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 6, 3]}},
        "chunk_key_encoding": {"name": "default"}, "fill_value": None,
        "codecs": [{"name": "numcodecs.pickle"}],
    }))
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "objects.zarr"), "-o", str(tmp_path / "a.zarr")),
            "expected numbers")
    assert not marker.exists() and not (tmp_path / "a.zarr").exists()


def test_a_hostile_store_is_refused_before_zarr_reads_it(made: Path, tmp_path: Path) -> None:
    import shutil

    marker = tmp_path / "ran.txt"
    np.save(tmp_path / "y.npy", np.zeros(30))
    store = tmp_path / "acts.zarr"
    shutil.copytree(made / "acts.zarr", store)
    # its h array now unpickles its chunks
    meta = json.loads((store / "gru" / "h" / "zarr.json").read_text())
    meta["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "numcodecs.pickle"}]
    (store / "gru" / "h" / "zarr.json").write_text(json.dumps(meta))
    refused(run("probe", str(store), "--labels", str(tmp_path / "y.npy")), "uses codec 'numcodecs.pickle'")
    assert not marker.exists()
    # damaged attributes
    shutil.rmtree(store)
    shutil.copytree(made / "acts.zarr", store)
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["layers"][0]["path"] = "../../etc"
    (store / "zarr.json").write_text(json.dumps(root))
    refused(run("probe", str(store), "--labels", str(tmp_path / "y.npy")), "attributes are damaged")
    root["attributes"]["layers"][0]["path"] = "gru"
    root["attributes"]["rows"] = root["attributes"]["batch_size"] = 31  # one batch still: the arrays hold 30 rows
    (store / "zarr.json").write_text(json.dumps(root))
    refused(run("probe", str(store), "--labels", str(tmp_path / "y.npy")), "its attributes say (31, 6, 5)")
    (store / "zarr.json").write_text("{" * 100 + "1")
    refused(run("probe", str(store), "--labels", str(tmp_path / "y.npy")), "is not JSON")
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    refused(run("probe", str(store), "--labels", str(tmp_path / "y.npy")), "not one grucli wrote")
    refused(run("probe", str(tmp_path / "missing.zarr"), "--labels", str(tmp_path / "y.npy")), "does not exist")


def test_huge_declared_chunks_are_refused(made: Path, tmp_path: Path) -> None:
    (tmp_path / "big.zarr").mkdir()
    (tmp_path / "big.zarr" / "zarr.json").write_text(json.dumps({
        "zarr_format": 3, "node_type": "array", "shape": [4, 6, 3], "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4_000_000, 6000, 3]}},
        "chunk_key_encoding": {"name": "default"}, "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }))
    refused(run("activations", str(made / "gru.keras"), "--input", str(tmp_path / "big.zarr"), "-o", str(tmp_path / "a.zarr")),
            "over the limit")
