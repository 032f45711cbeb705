"""grucli: read, slice and check the weights of Keras recurrent layers (GRU, LSTM, SimpleRNN).

From Python (`grucli.api`): `grucli.load(path)` reads a model file, `grucli.replay(model, x)` runs
it in NumPy, `grucli.verify(model, x)` compares it with Keras; `grucli.activations(model, data, store)`
streams a dataset's gates and states into a Zarr store and `grucli.probe(store, labels)` fits
diagnostic classifiers on them. They are imported on first use, so
the command line (which imports this package for its version) starts no slower.
"""

from __future__ import annotations

from typing import Any

from grucli.version import __version__

_FROM_API = ("load", "port", "replay", "verify", "activations", "open_activations", "probe", "population")
__all__ = ["__version__", "activations", "load", "open_activations", "population", "port", "probe", "replay", "verify"]


def __getattr__(name: str) -> Any:
    if name in _FROM_API:
        from grucli import api

        return getattr(api, name)
    raise AttributeError(f"module 'grucli' has no attribute {name!r}")
