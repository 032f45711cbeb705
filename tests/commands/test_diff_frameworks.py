"""`diff` across frameworks: a PyTorch (or ONNX) source against a Keras port of it, compared in Keras's
layout; where the port holds the source's numbers in the wrong places, the mistake is named.

Each hand port below is built the way people get it wrong (keras-team/keras#15915 and its like):
PyTorch's tensors copied into a Keras model with `set_weights`, one step of the conversion left out.
A right port diffs clean, exit 0 with --exit-code; every wrong one exits 1 and names its mistake.
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


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _rows(array: np.ndarray, count: int) -> list[np.ndarray]:
    return np.split(array, count)


def _keras_order(array: np.ndarray) -> np.ndarray:
    """PyTorch's GRU rows r, z, n in Keras's order z, r, h."""
    r, z, n = _rows(array, 3)
    return np.concatenate([z, r, n])


def _right(sd: dict[str, np.ndarray], suffix: str = "l0") -> list[np.ndarray]:
    return [_keras_order(sd[f"weight_ih_{suffix}"]).T, _keras_order(sd[f"weight_hh_{suffix}"]).T,
            np.stack([_keras_order(sd[f"bias_ih_{suffix}"]), _keras_order(sd[f"bias_hh_{suffix}"])])]


HAND_PORTS: dict[str, Callable[[dict[str, np.ndarray]], list[np.ndarray]]] = {
    "right": _right,
    # keras#15915: PyTorch's tensors transposed, their gates left in PyTorch's order r, z, n.
    "gates_permuted": lambda sd: [sd["weight_ih_l0"].T, sd["weight_hh_l0"].T, np.stack([sd["bias_ih_l0"], sd["bias_hh_l0"]])],
    # The recurrent blocks put side by side as PyTorch stores them, each left untransposed.
    "transposed": lambda sd: [_right(sd)[0], np.concatenate(_rows(_keras_order(sd["weight_hh_l0"]), 3), axis=1), _right(sd)[2]],
    "bias_rows_swapped": lambda sd: [*_right(sd)[:2], _right(sd)[2][::-1]],
    "kernels_exchanged": lambda sd: [_right(sd)[1], _right(sd)[0], _right(sd)[2]],
}


@pytest.fixture(scope="module")
def gru_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("source")
    torch.manual_seed(0)
    module = torch.nn.GRU(4, 4, batch_first=True)  # input_dim == units: kernels can be exchanged
    torch.save(module.state_dict(), folder / "gru.pt")
    return folder / "gru.pt", {k: v.numpy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("mistake", sorted(HAND_PORTS))
def test_diff_names_each_mistake_of_a_hand_port(keras3: Any, tmp_path: Path, gru_source: tuple[Path, Any], mistake: str) -> None:
    source, state = gru_source
    model = keras3.Sequential([keras3.Input((None, 4)), keras3.layers.GRU(4, return_sequences=True)])
    model.layers[0].set_weights(HAND_PORTS[mistake](state))
    model.save(tmp_path / "port.keras")
    result = run("diff", str(source), str(tmp_path / "port.keras"), "--exit-code", "--json")
    document = json.loads(result.stdout)
    assert document["paired_by_order"] is True
    if mistake == "right":
        assert result.exit_code == 0 and document["identical"] is True and document["findings"] == []
        return
    assert result.exit_code == 1, result.output
    assert [finding["kind"] for finding in document["findings"]] == [mistake]
    assert document["findings"][0]["fix"]
    if mistake == "gates_permuted":
        assert document["findings"][0]["detail"].startswith("z and r swapped")
    text = run("diff", str(source), str(tmp_path / "port.keras")).stdout
    assert f"{mistake}: l0 ↔ {model.layers[0].name}" in text and "fix:" in text


def test_directions_swapped_in_a_bidirectional_port(keras3: Any, tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)
    torch.save(module.state_dict(), tmp_path / "bi.pt")
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    model = keras3.Sequential([keras3.Input((None, 3)), keras3.layers.Bidirectional(keras3.layers.GRU(4, return_sequences=True))])
    model.layers[0].set_weights(_right(state, "l0_reverse") + _right(state, "l0"))  # the backward weights first
    model.save(tmp_path / "bi.keras")
    result = run("diff", str(tmp_path / "bi.pt"), str(tmp_path / "bi.keras"), "--exit-code", "--json")
    assert result.exit_code == 1
    assert [finding["kind"] for finding in json.loads(result.stdout)["findings"]] == ["directions_swapped"]
    model.layers[0].set_weights(_right(state, "l0") + _right(state, "l0_reverse"))
    model.save(tmp_path / "right.keras")
    assert run("diff", str(tmp_path / "bi.pt"), str(tmp_path / "right.keras"), "--exit-code").exit_code == 0


def test_reset_after_mismatch_and_summed_biases(keras3: Any, tmp_path: Path, gru_source: tuple[Path, Any]) -> None:
    source, state = gru_source
    model = keras3.Sequential([keras3.Input((None, 4)), keras3.layers.GRU(4, reset_after=False)])
    kernel, recurrent, bias = _right(state)
    model.layers[0].set_weights([kernel, recurrent, bias.sum(axis=0)])
    model.save(tmp_path / "summed.keras")
    result = run("diff", str(source), str(tmp_path / "summed.keras"), "--exit-code", "--json")
    assert result.exit_code == 1
    assert [finding["kind"] for finding in json.loads(result.stdout)["findings"]] == ["reset_after_mismatch", "bias_summed"]


def test_pytorch_and_onnx_files_of_one_model_diff_clean(tmp_path: Path) -> None:
    torch.manual_seed(2)
    module = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True).eval()
    torch.save(module.state_dict(), tmp_path / "m.pt")
    torch.onnx.export(module, (torch.zeros(2, 4, 3),), str(tmp_path / "m.onnx"), dynamo=False)
    result = run("diff", str(tmp_path / "m.pt"), str(tmp_path / "m.onnx"), "--exit-code", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["findings"] == []
    # LSTM biases are summed on both sides, PyTorch's two in float32 as read: the last bit may differ.
    assert max(change["max_abs_change"] for change in document["changes"]) < 1e-6


@pytest.mark.parametrize("seed", range(20))
def test_the_norm_screen_never_rules_out_what_the_full_checks_would_find(seed: int) -> None:
    """diff reads each kernel once: the mistake checks are skipped where the gate blocks' norms
    show B cannot hold A's numbers moved. The screen must pass every pair the full checks call the
    same numbers (`same`: float32 rounding), at the edge of that rounding too, and still rule out
    a retrained layer."""
    from grucli.commands.mistakes import BlockNorms, could_be_moved, same

    rng = np.random.default_rng(seed)
    units, inputs, gates = int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3
    kernel = rng.normal(size=(inputs, gates * units)) * 10 ** rng.uniform(-3, 2)
    recurrent = rng.normal(size=(units, gates * units))
    order = rng.permutation(gates)

    def moved(array: np.ndarray) -> np.ndarray:
        blocks = np.split(array, gates, axis=-1)
        rounded = np.concatenate([blocks[i] for i in order], axis=-1)
        # as far off as `same` allows: atol 1e-7 + rtol 1e-6, just inside
        return rounded + np.sign(rng.normal(size=rounded.shape)) * (0.99e-7 + 0.99e-6 * np.abs(rounded))

    def norms(k: np.ndarray, r: np.ndarray) -> BlockNorms:
        return BlockNorms(
            tuple(float(np.linalg.norm(b)) for b in np.split(k, gates, axis=-1)),
            tuple(float(np.linalg.norm(b)) for b in np.split(r, gates, axis=-1)),
        )

    kernel_b, recurrent_b = moved(kernel), moved(recurrent)
    blocks_same = [
        same(y, x) for a, b in ((kernel, kernel_b), (recurrent, recurrent_b))
        for x, y in zip(np.split(a, gates, axis=-1), [np.split(b, gates, axis=-1)[list(order).index(i)] for i in range(gates)])
    ]
    assert all(blocks_same)  # the full checks would call these A's blocks
    values = max(kernel.size, recurrent.size) // gates
    assert could_be_moved(norms(kernel, recurrent), norms(kernel_b, recurrent_b), values)
    # exchanged kernels move blocks whole too
    if inputs == units:
        assert could_be_moved(norms(kernel, recurrent), norms(recurrent_b, kernel_b), values)
    retrained = kernel + rng.normal(size=kernel.shape) * 1e-3 * np.abs(kernel).max()
    assert not could_be_moved(norms(kernel, recurrent), norms(retrained, recurrent), values)
