"""A PyTorch recurrent layer run by PyTorch itself, from the arrays a state_dict holds: the reference a
port of PyTorch weights into Keras is proved against, where PyTorch is installed.

The module is built as the user's was (`nn.GRU` / `nn.LSTM` / `nn.RNN`, one layer, one direction,
batch first, bias or not; a cell's weights load into the one-layer module, which runs the cell over
time) in float64, its `weight_ih_l0` ... set from the file's tensors, and run from zero state; a
reverse direction runs on the time-reversed input, as PyTorch's bidirectional layers do.

May import: torch, numpy, model/, errors.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from grucli.model.registry import Family
from grucli.model.sources import SourceWeights


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_version() -> str:
    import torch

    return f"PyTorch {torch.__version__}"


def run_with_torch(source: SourceWeights, family: Family, x: np.ndarray, reverse: bool, nonlinearity: str | None) -> np.ndarray:
    """The layer's output at every step, (batch, time, units) in processing order, by PyTorch."""
    import torch

    assert family.torch_module is not None  # the reader made the layer from a PyTorch module of this family
    w_ih, w_hh = source.array("weight_ih"), source.array("weight_hh")
    assert w_ih is not None and w_hh is not None
    bias = source.array("bias_ih") is not None
    options = {"nonlinearity": nonlinearity} if not family.uses_recurrent_activation else {}
    module = getattr(torch.nn, family.torch_module.removeprefix("nn."))(
        int(w_ih.shape[1]), int(w_hh.shape[1]), batch_first=True, bias=bias, **options
    ).double()
    with torch.no_grad():
        for role in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            array = source.array(role)
            if array is not None:
                getattr(module, f"{role}_l0").copy_(torch.from_numpy(np.asarray(array, np.float64)))
        steps = np.ascontiguousarray(np.asarray(x, np.float64)[:, ::-1] if reverse else np.asarray(x, np.float64))
        output, _ = module(torch.from_numpy(steps))
    return output.numpy()
