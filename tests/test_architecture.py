"""docs/architecture.md, the source of truth for where each concept lives, names every module."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["tvm_place", "passes", "models", "scripts"]


@pytest.mark.parametrize("package", PACKAGES)
def test_architecture_names_every_module(package):
    text = (ROOT / "docs" / "architecture.md").read_text()
    modules = [path for path in sorted((ROOT / package).rglob("*.py")) if path.name != "__init__.py"]
    assert modules
    missing = [str(path.relative_to(ROOT)) for path in modules if f"`{path.name}`" not in text]
    assert not missing, f"docs/architecture.md does not name {missing}: say where they fit"


def _imports(package: str) -> dict[str, set[str]]:
    """The modules of ``package`` (dotted names) and, for each, the modules of ``package`` it
    imports anywhere in its text (function-level imports included): ``from . import x`` counts
    as importing ``x`` where ``x`` is a module, else the package it names."""
    import ast

    base = ROOT / package.replace(".", "/")
    files = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    imports: dict[str, set[str]] = {}
    for name, (path, is_package) in files.items():
        here = name if is_package else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    target = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in files
                              else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        imports[name] = {module for module in found if module in files and module != name}
    return imports


@pytest.mark.parametrize("package", ["tvm_place.solvers"])
def test_no_import_cycle(package):
    import networkx as nx

    graph = nx.DiGraph((module, imported) for module, targets in _imports(package).items()
                       for imported in targets)
    cycles = [cycle for cycle in nx.simple_cycles(graph)]
    assert not cycles, f"modules of {package} import each other in a cycle: {cycles[:5]}"
    # The check sees imports: the solvers package imports its bounds, which import grouping.
    assert "tvm_place.solvers.bounds" in _imports(package)["tvm_place.solvers"]
    assert "tvm_place.solvers.grouping" in _imports(package)["tvm_place.solvers.bounds.cut"]
