"""Which Keras's definitions a file's numbers follow: Keras 3, or Keras 1/2 and tf.keras 2.

They differ where it matters to a replay (`hard_sigmoid` is clip(0.2x + 0.5, 0, 1) in Keras 1/2 and
tf.keras 2, clip(x/6 + 0.5, 0, 1) in Keras 3; merges treat masks differently).

May import: the standard library only.
"""

from __future__ import annotations

import enum
import re


class Semantics(str, enum.Enum):
    """The generation of Keras whose definitions apply; compares equal to its value ("keras2")."""

    KERAS2 = "keras2"  # Keras 1/2, tf.keras 2, tf-keras
    KERAS3 = "keras3"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


KERAS2 = Semantics.KERAS2
KERAS3 = Semantics.KERAS3
# Activations whose definitions differ between Keras 2 and Keras 3 (verify warns where they matter).
VERSION_DEPENDENT = frozenset({"hard_sigmoid", "hard_silu", "hard_swish"})


def semantics_for(keras_version: str | None, file_format: str) -> Semantics:
    """KERAS3 for files saved by Keras 3, KERAS2 for Keras 1/2 and tf.keras 2 files.

    The recorded version decides: tf.keras 2.13 and later (and tf-keras) also write the .keras zip
    format of Keras 3, with their own, Keras 2 definitions. A .keras file without a version is Keras 3's."""
    major = re.match(r"[0-9]{1,9}", keras_version) if keras_version else None  # ASCII digits only ("²".isdigit() is True)
    if major:
        return KERAS3 if int(major.group()) >= 3 else KERAS2
    return KERAS3 if file_format.startswith("keras-v3") else KERAS2  # legacy HDF5 without a version: Keras 1
