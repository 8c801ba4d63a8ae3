"""Compiler regression testing: deterministic plans, cost snapshots, golden plans and their diffs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_place
from tvm_place import models
from tvm_place.compiler import place
from tvm_place.cost import AnalyticalCostModel, Snapshot
from tvm_place.errors import InvalidGraphError, TvmPlaceError
from tvm_place.graph import Placement
from tvm_place.testing import UPDATE_ENV, assert_placement, check_plan, read_golden_plan

GOLDEN = Path(__file__).parent / "golden"
BERT = dict(seq_len=8, hidden=64, heads=4, ffn=128)
CPU_T4 = ["llvm", {"kind": "cuda", "arch": "sm_75"}]


def bert():
    return models.get("bert-layer", **BERT)


class NoisyCostModel(AnalyticalCostModel):
    """Stands in for measuring on a busy machine: every call returns a slightly different time."""

    name = "noisy"

    def __init__(self):
        self.rng = np.random.default_rng()  # unseeded on purpose

    def op_time(self, prim_func, node, device):
        seconds, _ = super().op_time(prim_func, node, device)
        return seconds * float(self.rng.uniform(0.5, 2.0)), "measured"


# -- determinism -----------------------------------------------------------------------------

PLACE_AND_PRINT = """
import sys
sys.modules["torch"] = None  # not needed to place; importing it would double this test's time
from tvm_place import models
from tvm_place.compiler import place
model = models.get("bert-layer", seq_len=8, hidden=64, heads=4, ffn=128)
for objective in ("latency", "throughput"):
    placed = place(model.mod, ["llvm", {"kind": "cuda", "arch": "sm_75"}], objective=objective,
                   cost_model="analytical")
    sys.stdout.write(placed.placement.to_json() + "\\n----\\n")
"""


def test_plan_is_byte_identical_across_runs_and_processes():
    """The same costs give the same plan, here the analytical model's, the same on every machine
    (the default, auto, prices a CPU by a learned model where one matches this machine and its
    thread count). Equal optima under learned costs once gave another ``order`` from run to run:
    tests/test_diviml.py's ``test_equal_optima_give_the_same_plan_on_every_run`` keeps that out."""
    # Another process, with another hash seed (so set and dict orders differ from this one's).
    other = subprocess.Popen(
        [sys.executable, "-c", PLACE_AND_PRINT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    model = bert()
    runs = [
        "".join(
            place(model.mod, CPU_T4, objective=objective,
                  cost_model="analytical").placement.to_json() + "\n----\n"
            for objective in ("latency", "throughput")
        )
        for _ in range(2)
    ]
    out, err = other.communicate(timeout=240)
    assert other.returncode == 0, err[-2000:]
    assert out == runs[0] == runs[1]
    assert '"seconds"' not in out and out.count('"format": "tvm-place-placement"') == 2


def test_plan_json_leaves_out_solver_timings_and_search_effort_and_to_dict_keeps_them():
    # CP-SAT's branch and conflict counts differ from run to run with parallel workers.
    stats = {"seconds": 1.5, "build_seconds": 0.2, "runs": [{"method": "dp", "seconds": 0.1}],
             "nodes": 7, "conflicts": 3, "optimal": True}
    placement = Placement([0, 1], "latency", 2.0, 1.0, "dp", stats=stats)
    plan = json.loads(placement.to_json())
    assert plan["stats"] == {"runs": [{"method": "dp"}], "optimal": True}
    assert placement.to_dict()["stats"] == stats
    assert json.loads(placement.to_json(timings=True))["stats"] == stats
    assert Placement.from_dict(plan).device_of.tolist() == [0, 1]


# -- cost snapshots --------------------------------------------------------------------------


def test_cost_snapshot_reproduces_a_placement_without_measuring(tmp_path):
    model = bert()
    noisy = place(model.mod, CPU_T4, objective="throughput", cost_model=NoisyCostModel())
    again = place(model.mod, CPU_T4, objective="throughput", cost_model=NoisyCostModel())
    assert not np.array_equal(noisy.problem.compute_time, again.problem.compute_time)

    path = Snapshot.save(noisy.problem, tmp_path / "costs.json")
    for _ in range(2):
        replayed = place(model.mod, CPU_T4, objective="throughput", cost_model=Snapshot(path))
        assert replayed.placement.to_json() == noisy.placement.to_json()
        assert np.array_equal(replayed.problem.compute_time, noisy.problem.compute_time)
        assert np.array_equal(replayed.problem.transfer_time, noisy.problem.transfer_time)
        assert {source for row in replayed.cost_sources for source in row} == {"snapshot"}


def test_snapshot_in_compile_and_in_the_pipeline(tmp_path):
    model = models.get("onnx-cnn")
    first = place(model.mod, ["llvm", "llvm"], objective="throughput", cost_model=NoisyCostModel())
    path = Snapshot.save(first.problem, tmp_path / "costs.json")
    placed = tvm_place.compile(model.mod, ["llvm", "llvm"], objective="throughput",
                               cost_model=Snapshot(path))
    assert placed.placement.to_json() == first.placement.to_json()
    assert "snapshot" in placed.report()
    pipeline = tvm_place.pipeline(["llvm", "llvm"], objective="throughput", cost_model=str(path))
    executable = tvm.compile(model.mod, relax_pipeline=pipeline)
    assert pipeline.placement.to_json() == first.placement.to_json()
    out = relax.VirtualMachine(executable, tvm_place.devices_of(executable))["main"](
        *[tvm.runtime.tensor(x) for x in model.inputs]
    )
    assert np.abs(out.numpy() - placed(*model.inputs).numpy()).max() <= 1e-5


def test_snapshot_of_another_module_or_other_targets_is_refused(tmp_path):
    path = Snapshot.save(place(models.get("onnx-cnn").mod, ["llvm", "llvm"]).problem,
                         tmp_path / "cnn.json")
    with pytest.raises(InvalidGraphError, match="no operator .* another module"):
        place(bert().mod, ["llvm", "llvm"], cost_model=Snapshot(path))
    with pytest.raises(InvalidGraphError, match="taken on devices"):
        place(models.get("onnx-cnn").mod, CPU_T4, cost_model=Snapshot(path))
    with pytest.raises(InvalidGraphError, match="changed since the snapshot"):
        place(models.get("onnx-cnn", batch=2).mod, ["llvm", "llvm"], cost_model=Snapshot(path))


# -- golden plans ----------------------------------------------------------------------------


def test_assert_placement_writes_compares_and_explains(tmp_path, monkeypatch):
    model = bert()
    plan = tmp_path / "bert.json"
    with pytest.raises(TvmPlaceError, match=f"no golden plan .*{UPDATE_ENV}=1"):
        assert_placement(model.mod, CPU_T4, plan, objective="throughput")

    monkeypatch.setenv(UPDATE_ENV, "1")
    written = assert_placement(model.mod, CPU_T4, plan, objective="throughput")
    monkeypatch.delenv(UPDATE_ENV)
    data = read_golden_plan(plan)
    assert [device for _, device in data["ops"]] == [
        data["devices"][d] for d in written.device_of
    ]
    assert data["options"]["objective"] == "throughput" and data["targets"] == CPU_T4
    assert assert_placement(model.mod, CPU_T4, plan, objective="throughput").device_of.tolist() == (
        written.device_of.tolist()
    )

    # A pin moves operators: the diff names them, with devices and the objective before and after.
    moved_pins = {"softmax": "gpu:0", "fused_NT_matmul_add": "gpu:0"}
    with pytest.raises(AssertionError) as failure:
        assert_placement(model.mod, CPU_T4, plan, objective="throughput", pins=moved_pins)
    message = str(failure.value)
    assert "the placement changed" in message
    assert "softmax" in message and "cpu:0 -> gpu:0" in message
    assert "objective (throughput): golden" in message and "now" in message
    assert "pins: golden None" in message
    assert UPDATE_ENV in message

    # update=True accepts the new placement
    assert_placement(model.mod, CPU_T4, plan, objective="throughput", pins=moved_pins, update=True)
    assert_placement(model.mod, CPU_T4, plan, objective="throughput", pins=moved_pins)


def test_check_plan_exit_codes_and_regression_tolerance(tmp_path):
    plan = tmp_path / "cnn.json"
    code, message = check_plan("onnx-cnn", plan, targets=["llvm", "llvm"], update=True,
                               objective="throughput", profiles=[None, "server-cpu"])
    assert code == 0 and "wrote golden plan" in message
    code, message = check_plan("onnx-cnn", plan)  # targets and options from the plan
    assert code == 0 and "placement matches" in message

    # Same placement, but the golden objective was better: a regression, beyond the tolerance.
    data = json.loads(plan.read_text())
    data["value"] *= 0.9
    plan.write_text(json.dumps(data))
    code, message = check_plan("onnx-cnn", plan)
    assert code == 1 and "regressed beyond the tolerance" in message and "moved" not in message
    assert check_plan("onnx-cnn", plan, tolerance=0.2)[0] == 0

    code, message = check_plan("onnx-cnn", plan, targets=["llvm", "llvm"], profiles=[None, "local-cpu"])
    assert code == 1 and "profiles: golden" in message

    with pytest.raises(TvmPlaceError, match="is for model 'onnx-cnn'"):
        check_plan("bert-layer", plan)
    plan.write_text("{")
    with pytest.raises(TvmPlaceError, match="not valid JSON"):
        check_plan("onnx-cnn", plan)


def test_measured_golden_plan_replays_its_cost_snapshot(tmp_path):
    model = bert()
    plan = tmp_path / "noisy.json"
    written = assert_placement(model.mod, CPU_T4, plan, update=True, objective="throughput",
                               cost_model=NoisyCostModel())
    assert read_golden_plan(plan)["options"]["cost_model"] == {"snapshot": "noisy.costs.json"}
    assert (tmp_path / "noisy.costs.json").exists()
    for _ in range(2):  # fresh noisy costs each time, but the check replays the snapshot
        again = assert_placement(model.mod, CPU_T4, plan, objective="throughput",
                                 cost_model=NoisyCostModel())
        assert again.to_json() == written.to_json()
    assert check_plan(model.mod, plan)[0] == 0


GOLDEN_CASES = {
    # name: (model, sizes, targets, options)
    "bert-layer-throughput-cpu-t4": ("bert-layer", BERT, CPU_T4, {"objective": "throughput"}),
    "gpt2-block-latency-cpu-t4": ("gpt2-block", dict(seq_len=16, hidden=64, heads=4), CPU_T4,
                                  {"objective": "latency"}),
    "resnet18-throughput-two-cpus": ("resnet18", dict(image_size=32), ["llvm", "llvm"],
                                     {"objective": "throughput", "profiles": [None, "server-cpu"]}),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_plans_of_registry_models(case, placement_golden):
    """The project's own golden plans (tests/golden/), placed with the analytical model named
    (not the compile default, which depends on the machine); rewrite them with --update-golden."""
    name, sizes, targets, options = GOLDEN_CASES[case]
    placement = placement_golden(name, targets, GOLDEN / f"{case}.json", model_sizes=sizes,
                                 cost_model="analytical", **options)
    assert set(placement.device_of.tolist()) == {0, 1}, "a golden plan worth keeping uses both devices"


def test_golden_plan_checks_by_model_name_as_the_cli_does():
    code, message = check_plan("bert-layer", GOLDEN / "bert-layer-throughput-cpu-t4.json")
    assert code == 0, message


def test_golden_plan_at_the_fixtures_default_path(placement_golden):
    """Without a path the plan is golden/<test name>.json beside the test file."""
    placement = placement_golden(models.get("onnx-cnn").mod, ["llvm", "llvm"],
                                 objective="throughput", profiles=[None, "server-cpu"])
    assert (GOLDEN / "test_golden_plan_at_the_fixtures_default_path.json").exists()
    assert set(placement.device_of.tolist()) == {0, 1}


def test_tvm_place_check_command_exit_codes(tmp_path, capsys):
    from tvm_place.cli import main

    golden = GOLDEN / "bert-layer-throughput-cpu-t4.json"
    assert main(["check", "bert-layer", "--plan", str(golden)]) == 0
    assert "placement matches" in capsys.readouterr().out

    data = json.loads(golden.read_text())
    device_of_first = data["ops"][0][1]
    data["ops"][0][1] = "gpu:0" if device_of_first == "cpu:0" else "cpu:0"
    data["value"] *= 0.5
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    assert main(["check", "bert-layer", "--plan", str(changed)]) == 1
    out = capsys.readouterr().out
    assert f"{data['ops'][0][0]}" in out and f"-> {device_of_first}" in out
    assert "regressed beyond the tolerance" in out

    assert main(["check", "bert-layer", "--plan", str(tmp_path / "missing.json")]) == 2
    assert "no golden plan" in capsys.readouterr().err
