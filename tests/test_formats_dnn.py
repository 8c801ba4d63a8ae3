"""The dnn-partitioning loaders, checked against the figures published with the workloads."""

import json
from pathlib import Path

import numpy as np
import pytest

from tvm_place.errors import InvalidGraphError
from tvm_place.evaluate import evaluate
from tvm_place.formats import (
    dnn_partitioning_problem,
    dnn_split,
    dnn_split_to_device_of,
    load_dnn_partitioning,
    load_dnn_split,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "dnn-partitioning"
LAYERS = DATA / "throughput-inputs" / "LayerGraphs"

#: Expert splits and "all on one accelerator" max-loads from data/dnn-partitioning/README.md.
PUBLISHED = {
    "bert24_inference": (20.084, 92.406),
    "bert24_training": (49.4049, 217.813),
    "gnmt_inference": (46.2085, 182.563),
    "gnmt_training": (137.154, 520.453),
    "resnet50_inference": (43.9183, None),
    "inceptionv3_inference": (102.482, 310.969),
}


@pytest.mark.parametrize("workload", sorted(PUBLISHED))
def test_evaluator_reproduces_published_expert_and_single_device_loads(workload):
    problem = load_dnn_partitioning(LAYERS / f"{workload}.json")
    expert, single = PUBLISHED[workload]
    device_of = load_dnn_split(DATA / "human-experts" / f"{workload}_expert.json", problem)
    assert evaluate(problem, device_of).max_load == pytest.approx(expert, rel=1e-4)
    if single is not None:
        on_one = np.zeros(problem.num_ops, dtype=np.int64)
        assert evaluate(problem, on_one).max_load == pytest.approx(single, rel=1e-4)


def test_workload_devices_costs_and_colour_classes():
    problem = load_dnn_partitioning(LAYERS / "bert24_training.json")
    assert problem.device_names == [f"acc:{i}" for i in range(6)] + ["cpu:0"]
    assert np.all(problem.transfer_time[:, 6] == 0.0)
    assert problem.capacity[0] == 17185374208.0 and np.isinf(problem.capacity[6])
    assert len(problem.colour_classes) == 32
    assert sum(node.is_backward for node in problem.graph.nodes) == 32


def test_device_counts_written_as_whole_floats_are_counts():
    """JSON Schema's integers include 2.0 and -0.0 (the fuzzer's ``"maxFPGAs": -0.0`` once raised
    a TypeError from inside the loader)."""
    data = json.loads((LAYERS / "bert24_inference.json").read_text())
    data["maxFPGAs"], data["maxCPUs"] = 2.0, 1.0
    assert dnn_partitioning_problem(data).device_names == ["acc:0", "acc:1", "cpu:0"]
    data["maxFPGAs"] = -0.0
    assert dnn_partitioning_problem(data).device_names == ["cpu:0"]


def test_split_round_trip():
    problem = load_dnn_partitioning(LAYERS / "bert24_inference.json")
    device_of = load_dnn_split(DATA / "human-experts" / "bert24_inference_expert.json", problem)
    written = dnn_split(problem, device_of)
    assert written["maxLoad"] == pytest.approx(20.084, rel=1e-4)
    assert np.array_equal(dnn_split_to_device_of(json.loads(json.dumps(written)), problem), device_of)


def test_malformed_workloads_get_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(InvalidGraphError, match="not valid JSON"):
        load_dnn_partitioning(bad)
    data = json.loads((LAYERS / "bert24_inference.json").read_text())
    del data["maxFPGAs"]
    with pytest.raises(InvalidGraphError, match="maxFPGAs"):
        dnn_partitioning_problem(data)
    data = json.loads((LAYERS / "bert24_inference.json").read_text())
    data["edges"].append({"sourceId": 1, "destId": 999, "cost": 0.0})
    with pytest.raises(InvalidGraphError, match="does not exist"):
        dnn_partitioning_problem(data)
    data = json.loads((LAYERS / "bert24_inference.json").read_text())
    first = data["edges"][0]
    data["edges"].append({"sourceId": first["destId"], "destId": first["sourceId"], "cost": 0.0})
    with pytest.raises(InvalidGraphError, match="cycle"):
        dnn_partitioning_problem(data)
