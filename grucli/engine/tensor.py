"""The values that flow through a replayed model graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from grucli.model.semantics import Semantics


@dataclass
class Tensor:
    value: np.ndarray
    mask: np.ndarray | None = None


class Runtime(Protocol):
    """What a layer implementation needs to know of the replay running it."""

    dtype: type  # float64 or float32: the precision of the replay
    semantics: Semantics  # KERAS2 or KERAS3: whose definitions (hard_sigmoid, merge masks) apply
