"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Refuse to run when ``--dist loadgroup`` did not tag the grouped tests.

    pytest-xdist 3.8 groups a test by appending ``@group`` to its node id; pytest 9.2 no longer
    reads the attribute it writes, so the Ray tests spread over both workers and wait on each
    other for the one local Ray's CPUs (minutes instead of seconds). Hence the pin of pytest in
    pyproject.toml, and this check in case the pin is lifted.
    """
    if not config.getoption("loadgroup", default=False):
        return
    ungrouped = [item.nodeid for item in items
                 if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(ungrouped)} tests (first: {ungrouped[0]}): this "
            "pytest and pytest-xdist do not work together; install the versions pinned in "
            "pyproject.toml's 'test' extra")


def pytest_runtest_teardown(item):
    """Widen the test runner's thread to this process's cores again after each test.

    TVM pins a thread that launches its first parallel kernel to the machine's first core: both
    pytest workers' threads then shared core 0 for the rest of the run (the suite took 11-12
    minutes instead of about 7). The tests run TVM as a user's process does (tvm-place's own
    threads and Ray actors bind themselves to their cores, which tests check); only the runner's
    thread is put back, once its pool exists TVM does not pin it again."""
    import os

    from tvm_place.cores import process_cores

    os.sched_setaffinity(0, process_cores())


@pytest.fixture
def models_here(tmp_path):
    """A folder of the shipped learned cost models, marked as trained at this process's thread
    count (a machine whose TVM runs more threads than the training did falls back, as a test
    checks)."""
    import json

    from tvm_place.cost.learned import MODEL_DIR
    from tvm_place.cost.measured import cpu_threads

    folder = tmp_path / "learned-models"
    folder.mkdir()
    for path in sorted(MODEL_DIR.glob("*.json")):
        (folder / path.name).write_text(json.dumps({**json.loads(path.read_text()),
                                                    "threads": cpu_threads()}))
    return folder


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


#: How long a Ray test waits for the actors of the tests before it to be gone.
RAY_SETTLE_SECONDS = 90.0


@pytest.fixture(autouse=True)
def _ray_settled(request):
    """Before a test on the shared Ray: wait until every CPU is free again. Killed actors give
    their resources back asynchronously (a frozen one only once Ray has reaped it), and a test
    that starts workers before then waits for CPUs that are about to be free."""
    if "ray_session" not in request.fixturenames:
        yield
        return
    import time

    ray = request.getfixturevalue("ray_session")
    deadline = time.monotonic() + RAY_SETTLE_SECONDS
    total = ray.cluster_resources().get("CPU", 0)
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    yield
