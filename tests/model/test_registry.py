"""The two registries are the only places that compare a family or layer class name.

model/registry.py knows the recurrent families and the classes grucli reads by name;
engine/registry.py (with the implementation tables it assembles) knows the layers the replay
runs. Everywhere else asks them: no `== "GRU"`, no `kind.startswith("ConvLSTM")`, no
`class_name in ("Bidirectional", "RNN")`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grucli.model import registry
from grucli.model.registry import FAMILIES, KINDS, Role, family_of, kind_of, reset_after_rule, role_of

PACKAGE = Path(__file__).resolve().parents[2] / "grucli"
# The family and class registry, the replay's layer registry, and convert's (CONVERTERS, MASK_RULES).
REGISTRIES = {PACKAGE / "model" / "registry.py", PACKAGE / "engine" / "registry.py", PACKAGE / "convert" / "layers.py"}

# Every class name either registry knows, and the family names.
CLASS_NAMES = sorted(set(registry.CLASS_KINDS) | set(registry.ROLES) | registry.LISTING_CELLS | registry.CODE_CLASSES
                     | registry.TOKEN_ID_CLASSES | {family.name for family in FAMILIES} | {"ConvLSTM", "CuDNN", "Concatenate",
                     "Dense", "Conv1D", "Convolution1D", "Dot", "MultiHeadAttention", "TFOpLambda", "Embedding", "Lambda"})
NAMES = "|".join(re.escape(name) for name in CLASS_NAMES)
COMPARISONS = [
    re.compile(rf'(==|!=)\s*"({NAMES})"'),  # kind == "GRU"
    re.compile(rf'"({NAMES})"\s*(==|!=)'),
    re.compile(rf'\b(not\s+)?in\s*[({{\[]\s*"({NAMES})"'),  # class_name in ("Bidirectional", "RNN")
    re.compile(rf'startswith\(\s*\(?"({NAMES})'),  # kind.startswith("ConvLSTM")
    re.compile(r'(?<!dtype\.)\b(class_name|kind|family)\s*(==|!=)\s*"'),  # any class, kind or family against a literal
]


def _sources() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path not in REGISTRIES)


def test_no_class_or_family_name_is_compared_outside_the_registries() -> None:
    found = []
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(pattern.search(code) for pattern in COMPARISONS):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert found == []


def test_the_pattern_catches_what_it_must() -> None:
    """The check above can fail: each form it forbids is caught on a sample line."""
    samples = ['if kind == "GRU":', 'if layer.kind.startswith("ConvLSTM"):', 'if raw.class_name in ("Bidirectional", "RNN"):',
               'x = "LSTM" == family', 'if class_name == "Sequential":', 'if name not in {"TimeDistributed"}:']
    assert all(any(pattern.search(sample) for pattern in COMPARISONS) for sample in samples)


@pytest.mark.parametrize("kind, gates, states", [
    ("GRU", ("z", "r", "h"), 1), ("LSTM", ("i", "f", "c", "o"), 2), ("SimpleRNN", ("h",), 1), ("ConvLSTM2D", ("i", "f", "c", "o"), 2),
])
def test_each_kind_has_its_family(kind: str, gates: tuple[str, ...], states: int) -> None:
    family = family_of(kind)
    assert family.gates == gates and family.state_count == states
    assert set(family.meanings) == set(gates) and set(family.squashed_gates) <= set(gates)


def test_every_family_has_a_cell_the_engine_runs() -> None:
    from grucli.engine.steps import CELLS

    assert {family.cell for family in FAMILIES} == set(CELLS)


def test_every_recurrent_class_has_a_kind_and_a_role() -> None:
    for class_name, kind in registry.CLASS_KINDS.items():
        assert kind in KINDS and kind_of(class_name) == kind
        assert role_of(class_name) in (Role.RECURRENT, Role.CELL)
    assert role_of("Dense") is Role.OTHER and kind_of("Dense") is None


@pytest.mark.parametrize("bias_rows, declared, version, expected", [
    (2, False, "2.2.4", True),  # the bias shape wins over the config
    (1, True, None, False),
    (None, True, "2.2.4", True),  # no bias: the config
    (None, None, "2.2.4", False),  # neither: Keras 2's default
    (None, None, "2.15.0", False),
    (None, None, "3.3.3", True),
    (None, None, None, True),
])
def test_reset_after_has_one_rule(bias_rows: int | None, declared: bool | None, version: str | None, expected: bool) -> None:
    assert reset_after_rule(bias_rows, declared, version) is expected
