"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (its start costs about 3 s here).

    Every test that uses it is in the xdist group "ray" (``scripts/test.sh`` runs pytest with
    ``--dist loadgroup``), so they share one pytest worker and so one Ray instance.
    """
    ray = pytest.importorskip("ray")
    from tvm_place.runtime.ray_engine import ensure_ray

    started_here = not ray.is_initialized()
    ensure_ray()
    yield ray
    if started_here:
        ray.shutdown()
