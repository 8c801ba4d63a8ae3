"""docs/architecture.md, the source of truth for where each concept lives, names every module."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["tvm_place", "passes", "models", "scripts"]


def _sections() -> dict[str, str]:
    """The text under each ``### ... (`folder/` ...)`` heading, joined per folder: what the page
    says lives in that folder."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    sections: dict[str, str] = {}
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        folder = re.search(r"\(`([\w/]+)/`", heading)
        if folder:
            sections[folder.group(1)] = sections.get(folder.group(1), "") + body
    return sections


@pytest.mark.parametrize("package", PACKAGES)
def test_architecture_names_every_module_in_its_folders_section(package):
    sections = _sections()
    modules = [path for path in sorted((ROOT / package).rglob("*.py"))
               if path.name != "__init__.py" and "__pycache__" not in path.parts]
    assert modules
    missing = [str(path.relative_to(ROOT)) for path in modules
               if f"`{path.name}`" not in sections.get(str(path.parent.relative_to(ROOT)), "")]
    assert not missing, (f"docs/architecture.md does not name {missing} under its folder's heading "
                         "(### Room (`folder/`)): say where they fit")


def test_architecture_names_no_module_that_is_gone():
    """A renamed or removed module leaves no stale row behind: every ``name.py`` a section's table
    or list names exists in that section's folder."""
    stale = [f"{folder}/{name}" for folder, body in _sections().items()
             for name in re.findall(r"`(\w+\.py)`", body) if not (ROOT / folder / name).exists()]
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"


# -- the import graph ----------------------------------------------------------------------------

#: Installed package name of each top-level folder (pyproject maps passes/ and models/ into
#: tvm_place).
INSTALLED = {"tvm_place": "tvm_place", "passes": "tvm_place.passes", "models": "tvm_place.models"}


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [INSTALLED[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, at module level or inside functions."""
    import ast

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the module ``pkg.mod`` where one exists.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _import_graph():
    import networkx as nx

    files = {_module_name(p): p for folder in INSTALLED for p in (ROOT / folder).rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        for target in _imports(path, name, set(files)):
            # A package's __init__ re-exporting its modules is not a dependency of theirs on it.
            if not name.startswith(target + "."):
                graph.add_edge(name, target)
    return graph


def test_no_import_cycle_among_the_projects_modules():
    import networkx as nx

    graph = _import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import cycles (module-level and function-level imports): {cycles}"
    # The check sees imports: the solvers package imports its bounds, which import grouping.
    assert graph.has_edge("tvm_place.solvers", "tvm_place.solvers.bounds")
    assert graph.has_edge("tvm_place.solvers.bounds.cut", "tvm_place.solvers.grouping")


def test_the_runtime_imports_no_solver():
    graph = _import_graph()
    reaching = {(m, t) for m, t in graph.edges
                if m.startswith("tvm_place.runtime") and t.startswith("tvm_place.solvers")}
    assert not reaching, f"runtime modules import solvers: {sorted(reaching)}"
