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
