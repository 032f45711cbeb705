"""The packages import one way, as docs/development.md draws them and each package's __init__ says.

model ← files ← frameworks ← commands ← api ← cli, with engine and convert beside files (they
read only model/, and convert the input declarations of files/), and output drawing the
commands' records. Every import counts, also those inside
functions. Third-party packages stay where they belong: h5py in files/, Rich and matplotlib in
output/, Click in cli/, Keras and TensorFlow in frameworks/, threadpoolctl in engine/, onnx in
convert/ and ONNX Runtime in commands/ (convert's proof); zarr in files/ (the store is a file
format), scikit-learn, Dask and distributed in commands/ (the probes and the cluster run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "grucli"

# What each part of grucli may import of grucli (besides itself).
ALLOWED = {
    "errors": set(),
    "model": {"errors"},
    "files": {"model", "errors"},
    "engine": {"model", "errors"},
    "frameworks": {"files", "model", "errors"},
    "convert": {"files", "model", "errors"},
    "commands": {"engine", "frameworks", "convert", "files", "model", "errors"},
    "output": {"commands", "model", "errors", "version"},
    "api": {"commands", "engine", "convert", "files", "model", "output", "errors"},
    "cli": {"api", "output", "commands", "files", "errors", "version"},
    "__init__": {"api", "version"},
    "version": set(),
    "__main__": {"cli"},
}
# Where each third-party package may be imported.
THIRD_PARTY = {
    "h5py": {"files"}, "rich": {"output"}, "matplotlib": {"output"}, "click": {"cli"}, "threadpoolctl": {"engine"},
    "keras": {"frameworks"}, "tensorflow": {"frameworks"}, "tf_keras": {"frameworks"}, "torch": {"frameworks"}, "jax": {"frameworks"},
    "onnx": {"convert", "files"}, "onnxruntime": {"commands"}, "safetensors": {"files"},
    "zarr": {"files"}, "sklearn": {"commands"}, "dask": {"commands"}, "distributed": {"commands"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "grucli":
                found |= {f"grucli.{alias.name}" for alias in node.names}
    return found


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_package_may(path: Path) -> None:
    part = _part(path)
    imported = _imports(path)
    inside = {name.split(".")[1] for name in imported if name.startswith("grucli.")} - {part}
    assert inside <= ALLOWED[part], f"{part} may import {sorted(ALLOWED[part])}"
    outside = {name.split(".")[0] for name in imported} & THIRD_PARTY.keys()
    assert all(part in THIRD_PARTY[name] for name in outside), sorted(outside)


def test_every_package_says_what_it_may_import() -> None:
    for package in sorted(path for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()):
        text = (package / "__init__.py").read_text()
        assert "May import" in text, package.name


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The check can fail: a model module importing the engine is caught."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def f():\n    from grucli.engine.steps import run_layer\n    import rich\n")
    imported = _imports(wrong)
    assert {name.split(".")[1] for name in imported if name.startswith("grucli.")} - ALLOWED["model"] == {"engine"}
    assert "rich" in imported


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Which grucli modules each grucli module imports (any import: at the top, inside functions,
    under TYPE_CHECKING), resolved to modules: `from grucli.convert import layers` names
    grucli.convert.layers."""
    modules = {_module_name(path): path for path in MODULES}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for imported in _imports(path) | _from_imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                found.add(imported)
        graph[name] = found
    return graph


def _from_imports(path: Path) -> set[str]:
    return {f"{node.module}.{alias.name}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 for alias in node.names}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    """Imports run one way between modules too, not only between packages: convert/'s builder,
    converters and walk in that order (symbols ← builder ← converters ← layers ← onnx_graph)."""
    graph = _import_graph()
    assert _cycles(graph) == []
    assert "grucli.convert.onnx_graph" not in set().union(*(graph[name] for name in graph if name.startswith("grucli.convert.")))


def test_the_cycle_check_can_fail() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
