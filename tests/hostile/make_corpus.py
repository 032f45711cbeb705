"""Make the corpus of broken and hostile inputs that every grucli command must refuse cleanly.

    python tests/hostile/make_corpus.py OUT_FOLDER

Everything is generated from the sample models (no binary is committed): random bytes, empty
and truncated files, zips without or with broken config, plain HDF5, weights that contradict
their config, a dataset declaring terabytes while storing nothing, a 5 GiB zip bomb, a zip
member climbing out of its folder, external HDF5 links, and hostile inputs (a pickle that would
run a command, wrong shapes and dtypes). Every command must answer each with exit code 2 and
one `Error:` line, in bounded time and memory.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SAMPLES = Path(__file__).resolve().parent.parent.parent / "sample_models"
BOMB_BYTES = 5 * 2**30


def make_models(folder: Path) -> dict[str, Path]:
    """Hostile model files, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        made[name] = folder / name
        made[name].write_bytes(data)

    write("random_bytes.keras", rng.bytes(4096))
    write("random_bytes.h5", rng.bytes(4096))
    write("empty.h5", b"")
    keras_bytes = (SAMPLES / "k3_gru.keras").read_bytes()
    h5_bytes = (SAMPLES / "tfk_gru.h5").read_bytes()
    write("truncated.keras", keras_bytes[: len(keras_bytes) // 2])
    write("truncated.h5", h5_bytes[: len(h5_bytes) // 2])
    write("hdf5_signature_only.h5", b"\x89HDF\r\n\x1a\n" + bytes(100))

    members = _zip_members(SAMPLES / "k3_gru.keras")
    made["no_config.keras"] = _zip(folder / "no_config.keras", {k: v for k, v in members.items() if k != "config.json"})
    made["bad_json.keras"] = _zip(folder / "bad_json.keras", {**members, "config.json": b'{"class_name": "Sequential", "config": '})
    made["config_not_a_model.keras"] = _zip(folder / "config_not_a_model.keras", {**members, "config.json": b"[1, 2, 3]"})
    made["zip_slip.keras"] = _zip(folder / "zip_slip.keras", {**members, "../../x": b"climbs out"})
    made["absolute_member.keras"] = _zip(folder / "absolute_member.keras", {**members, "/etc/cron.d/x": b"absolute"})
    made["zip_bomb.keras"] = _zip_bomb(folder / "zip_bomb.keras", members)

    plain = folder / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["data"] = np.arange(10.0)
        f.attrs["note"] = "an HDF5 file with nothing Keras in it"
    made["plain.h5"] = plain

    made["shape_contradiction.h5"] = _edited_copy(folder / "shape_contradiction.h5", _bias_of_wrong_shape)
    made["huge_shape.h5"] = _edited_copy(folder / "huge_shape.h5", _huge_kernel)
    made["string_weights.h5"] = _edited_copy(folder / "string_weights.h5", _string_kernel)
    made["external_link.h5"] = _edited_copy(folder / "external_link.h5", _external_link)
    made["config_contradicts_units.h5"] = _edited_copy(folder / "config_contradicts_units.h5", _units_in_config)

    huge_keras = folder / "huge_shape.keras"
    weights = io.BytesIO()
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as source, h5py.File(weights, "w") as target:
        source.copy(source["layers"], target, "layers")
        del target["layers/gru/cell/vars/1"]
        target["layers/gru/cell/vars"].create_dataset("1", shape=(10**6, 10**6), dtype="float32", chunks=(64, 64))
    made["huge_shape.keras"] = _zip(huge_keras, {**members, "model.weights.h5": weights.getvalue()})

    made["weights_npz.keras"] = _zip(folder / "weights_npz.keras", {
        "config.json": members["config.json"], "metadata.json": members["metadata.json"], "model.weights.npz": b"PK\x03\x04",
    })
    made["directory"] = folder / "a_directory.keras"
    made["directory"].mkdir(exist_ok=True)
    made["missing"] = folder / "does_not_exist.h5"
    return made


def make_inputs(folder: Path, marker: Path) -> dict[str, Path]:
    """Hostile `--input` files for sample_models/k3_gru.keras, which expects (batch, 5, 3)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}

    class RunsACommand:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    made["pickle.npy"] = folder / "pickle.npy"
    np.save(made["pickle.npy"], np.array([RunsACommand()], dtype=object), allow_pickle=True)
    made["pickle.npz"] = folder / "pickle.npz"
    np.savez(made["pickle.npz"], x=np.array([RunsACommand()], dtype=object))
    made["wrong_shape.npy"] = folder / "wrong_shape.npy"
    np.save(made["wrong_shape.npy"], np.zeros((2, 5, 4), dtype="float32"))
    made["strings.npy"] = folder / "strings.npy"
    np.save(made["strings.npy"], np.array([["a", "b", "c"]] * 5))
    made["bad.csv"] = folder / "bad.csv"
    made["bad.csv"].write_text("1,2,three\n4,5,6\n")
    made["truncated.npy"] = folder / "truncated.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 5, 3), dtype="float32"))
    made["truncated.npy"].write_bytes(buffer.getvalue()[:90])
    made["input_directory"] = folder / "input_dir.npy"
    made["input_directory"].mkdir(exist_ok=True)
    return made


def _zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def _zip_bomb(path: Path, members: dict[str, bytes]) -> Path:
    """A .keras whose weights member is 5 GiB of zeros deflated to a few MB."""
    chunk = bytes(64 * 2**20)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", members["config.json"])
        archive.writestr("metadata.json", members["metadata.json"])
        info = zipfile.ZipInfo("model.weights.h5")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            for _ in range(BOMB_BYTES // len(chunk)):
                member.write(chunk)
    return path


def _edited_copy(path: Path, edit: Any) -> Path:
    shutil.copy(SAMPLES / "tfk_gru.h5", path)
    with h5py.File(path, "r+") as f:
        edit(f, path)
    return path


CELL = "model_weights/gru/gru/gru_cell"


def _bias_of_wrong_shape(f: h5py.File, path: Path) -> None:
    del f[f"{CELL}/bias:0"]
    f[f"{CELL}/bias:0"] = np.zeros(7, dtype="float32")


def _huge_kernel(f: h5py.File, path: Path) -> None:
    # 4 TB declared; chunked and never written, so the file stores nothing.
    del f[f"{CELL}/kernel:0"]
    f.create_dataset(f"{CELL}/kernel:0", shape=(10**6, 10**6), dtype="float32", chunks=(64, 64))


def _string_kernel(f: h5py.File, path: Path) -> None:
    del f[f"{CELL}/kernel:0"]
    f[f"{CELL}/kernel:0"] = np.array([b"not", b"numbers"])


def _external_link(f: h5py.File, path: Path) -> None:
    outside = path.with_name("outside.h5")
    with h5py.File(outside, "w") as other:
        other["kernel"] = np.zeros((3, 12), dtype="float32")
    del f[f"{CELL}/kernel:0"]
    f[f"{CELL}/kernel:0"] = h5py.ExternalLink(str(outside), "kernel")


def _units_in_config(f: h5py.File, path: Path) -> None:
    config = json.loads(f.attrs["model_config"])
    config["config"]["layers"][-1]["config"]["units"] = 9
    f.attrs["model_config"] = json.dumps(config)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(sys.argv[1])
    for name, path in {**make_models(folder / "models"), **make_inputs(folder / "inputs", folder / "pickle_ran")}.items():
        print(f"{name:28} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
