"""The fast exhaustive references agree with the plain evaluator-based enumerations."""

import numpy as np
import pytest

from brute_force import (
    best_latency,
    best_replicated_throughput,
    best_throughput,
    exhaustive_latency,
    exhaustive_replicated_throughput,
    exhaustive_throughput,
    random_problem,
)


def small_problem(seed: int):
    rng = np.random.default_rng(seed)
    return random_problem(
        rng,
        num_ops=int(rng.integers(2, 6)),
        num_devices=int(rng.integers(2, 4)),
        memory_caps=bool(seed % 2),
        colour_classes=bool(seed % 3 == 0),
        unsupported=bool(seed % 4 == 0),
        cpu_pays_no_transfer=bool(seed % 5 == 0),
    )


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_reference_matches_evaluator_reference(seed):
    problem = small_problem(seed)
    best_all, best_contiguous = exhaustive_throughput(problem)
    assert best_all == pytest.approx(best_throughput(problem), rel=1e-12)
    assert best_contiguous == pytest.approx(best_throughput(problem, contiguous=True), rel=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_replicated_reference_matches_evaluator_reference(seed):
    problem = small_problem(seed)
    assert exhaustive_replicated_throughput(problem) == pytest.approx(
        best_replicated_throughput(problem), rel=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_latency_search_matches_listing_every_order(seed):
    problem = small_problem(seed)
    assert exhaustive_latency(problem) == pytest.approx(best_latency(problem), rel=1e-12)
