"""How long a run given a time limit may take, in tests that check the limit is honoured."""

import os


def crowding() -> float:
    """How many times over its cores the machine is loaded (at least 1)."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def allowed_seconds(limit: float) -> float:
    """10% + 2 s over ``limit``; the 2 s scaled by how far the machine's load exceeds its cores.

    What a solver does after its limit (building the answer, its bound, validating it) is CPU
    work: a process that gets a fifth of a core (load 10 on 2 cores, as when other jobs share the
    machine with the suite) takes five times as long for it. The limit itself is wall time and is
    not scaled."""
    return 1.1 * limit + 2.0 * crowding()
