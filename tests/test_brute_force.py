"""The vectorised exhaustive reference agrees with the evaluator-based one."""

import numpy as np
import pytest

from brute_force import best_throughput, exhaustive_throughput, random_problem


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_reference_matches_evaluator_reference(seed):
    rng = np.random.default_rng(seed)
    problem = random_problem(
        rng,
        num_ops=int(rng.integers(2, 6)),
        num_devices=int(rng.integers(2, 4)),
        memory_caps=bool(seed % 2),
        colour_classes=bool(seed % 3 == 0),
        unsupported=bool(seed % 4 == 0),
        cpu_pays_no_transfer=bool(seed % 5 == 0),
    )
    best_all, best_contiguous = exhaustive_throughput(problem)
    assert best_all == pytest.approx(best_throughput(problem), rel=1e-12)
    assert best_contiguous == pytest.approx(best_throughput(problem, contiguous=True), rel=1e-12)
