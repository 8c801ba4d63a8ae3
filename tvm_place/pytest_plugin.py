"""pytest plugin of tvm-place (registered as ``tvm_place`` through the ``pytest11`` entry point, so
installing tvm-place is enough): the ``placement_golden`` fixture and ``--update-golden``.

.. code-block:: python

    def test_resnet_placement(placement_golden):
        model = tvm_place.models.get("resnet18", image_size=32)
        placement_golden(model.mod, ["llvm", {"kind": "cuda", "arch": "sm_80"}])
        # compares with golden/test_resnet_placement.json beside this test file

``pytest --update-golden`` (or ``TVM_PLACE_UPDATE_GOLDEN=1``) rewrites the plans instead. Without
the entry point (tvm-place not installed, only on the path), add
``pytest_plugins = ["tvm_place.pytest_plugin"]`` to a ``conftest.py``.

Importing this module imports neither TVM nor tvm-place's compiler, so every pytest run in an
environment with tvm-place installed stays as fast as before.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("tvm-place")
    group.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tvm-place golden placement plans instead of comparing with them",
    )


def _plan_name(node_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name).strip("_") + ".json"


@pytest.fixture
def placement_golden(request):
    """``check(mod, targets, plan_path=None, **options)``: :func:`tvm_place.testing.assert_placement`
    bound to this test. The plan defaults to ``golden/<test name>.json`` beside the test file; the
    update mode follows ``--update-golden`` or ``$TVM_PLACE_UPDATE_GOLDEN``."""
    from tvm_place.testing import assert_placement

    update = True if request.config.getoption("update_golden", False) else None

    def check(mod, targets=None, plan_path=None, **options):
        if plan_path is None:
            plan_path = Path(request.node.path).parent / "golden" / _plan_name(request.node.name)
        options.setdefault("update", update)
        return assert_placement(mod, targets, plan_path, **options)

    return check
