"""The default cost model, ``cost_model="auto"`` (issue 18): per device the learned model where
one was trained for it, else a calibrated profile (cached, or calibrated on first use), else the
profile as written; the report, the CLI and plans say which model priced each device."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm

import tvm_place
from tvm_place import models
from tvm_place.cli import build_parser, main
from tvm_place.cost import AnalyticalCostModel, AutoCostModel, LearnedCostModel, TunedCostModel
from tvm_place.cost import calibrate as calibrate_module
from tvm_place.cost.auto import CALIBRATION_SECONDS, CalibrationFailedWarning
from tvm_place.cost.calibrate import CalibratedCostModel, Calibration
from tvm_place.cost.learned import MODEL_DIR
from tvm_place.cost.profiles import device_profile, profile_to_dict
from tvm_place.errors import TvmPlaceError
from tvm_place.formats import read_plan
from tvm_place.options import COST_MODELS, PlaceOptions
from tvm_place.report import format_report
from tvm_place.targets import resolve_targets

#: The CPU the shipped learned model was trained for, as an llvm target.
TRAINED_CPU = {"kind": "llvm",
               "mcpu": str(tvm.target.Target(json.loads(
                   sorted(MODEL_DIR.glob("*.json"))[0].read_text())["target"]).attrs["mcpu"])}
#: A CPU no learned model is shipped for.
OTHER_CPU = {"kind": "llvm", "mcpu": "skylake-avx512"}
#: A GPU described by its profile (no GPU needed).
A100 = {"kind": "cuda", "arch": "sm_80"}

described_gpu = pytest.mark.skipif(tvm.cuda(0).exist,
                                   reason="this machine has a GPU: auto would calibrate cuda")


@pytest.fixture(scope="module")
def tiny():
    return models.get("resnet18", batch=1, image_size=32, width=8, num_classes=10).mod


def _sources(placed) -> list[set[str]]:
    """Per device, the sources of every operator's cost there."""
    return [{row[d] for row in placed.cost_sources} for d in range(len(placed.devices))]


def _calibrated_profile(peak_gflops: float) -> dict:
    """A calibrated profile's fields: the local CPU's, at another peak (so its costs differ)."""
    return {**profile_to_dict(device_profile("local-cpu")), "peak_gflops": peak_gflops,
            "description": "written by the test as a calibration would be"}


def test_the_default_is_auto_in_the_api_and_the_cli():
    assert PlaceOptions().cost_model == "auto" == COST_MODELS[0]
    args = build_parser().parse_args(["place", "resnet18"])
    assert args.cost_model == PlaceOptions().cost_model


@described_gpu
def test_auto_prices_a_trained_cpu_by_its_learned_model_and_a_described_gpu_by_its_profile(
        tiny, tmp_path, models_here):
    model = AutoCostModel(cache_dir=tmp_path, time_limit=5, learned_dir=models_here)
    placed = tvm_place.place(tiny, [TRAINED_CPU, A100], cost_model=model, time_limit=5)
    assert _sources(placed) == [{"learned"}, {"analytical"}]
    cpu, gpu = placed.devices
    learned, analytical = LearnedCostModel(models_here), AnalyticalCostModel()
    from tvm_place.passes import collect_op_graph

    collected = collect_op_graph(placed.prepared)
    for u, (kernel, node) in enumerate(zip(collected.kernels, collected.graph.nodes)):
        assert placed.problem.compute_time[u, 0] == learned.op_time(kernel, node, cpu)[0]
        assert placed.problem.compute_time[u, 1] == analytical.op_time(kernel, node, gpu)[0]
    report = format_report(placed.problem, placed.placement, placed.cost_sources)
    n = placed.problem.num_ops
    assert f"priced by      cpu:0 {n} learned; gpu:0 {n} analytical" in report
    assert not (tmp_path / "calibrated-profiles").exists()  # nothing was calibrated


def test_a_device_the_user_gave_a_profile_is_priced_by_it(tiny, tmp_path, models_here):
    model = AutoCostModel(cache_dir=tmp_path, time_limit=5, learned_dir=models_here)
    placed = tvm_place.place(tiny, [TRAINED_CPU, TRAINED_CPU], profiles=[None, "server-cpu"],
                             cost_model=model, time_limit=5)
    assert _sources(placed) == [{"learned"}, {"analytical"}]
    described = tvm_place.place(tiny, [TRAINED_CPU], profiles=["server-cpu"],
                                cost_model="analytical", time_limit=5)
    assert np.array_equal(placed.problem.compute_time[:, 1], described.problem.compute_time[:, 0])


@pytest.fixture
def no_models(tmp_path):
    """A folder of learned models with none in it: no CPU has a model to adapt, so ``auto``
    calibrates where it would adapt one."""
    folder = tmp_path / "no-learned-models"
    folder.mkdir()
    return folder


def test_auto_prices_a_cpu_without_a_learned_model_by_its_cached_calibration(tiny, tmp_path,
                                                                             no_models):
    (device,) = resolve_targets([OTHER_CPU])
    calibrated = CalibratedCostModel(cache_dir=tmp_path)
    Calibration("llvm", _calibrated_profile(7.0), [], [], 1.0).write(calibrated.profile_path(device))
    for targets in ([OTHER_CPU], [OTHER_CPU, OTHER_CPU]):
        model = AutoCostModel(cache_dir=tmp_path, time_limit=5, learned_dir=no_models)
        placed = tvm_place.place(tiny, targets, cost_model=model, time_limit=5)
        assert _sources(placed) == [{"calibrated (cached)"}] * len(targets)
        assert model.calibrated.calibrations == 0
        as_written = tvm_place.place(tiny, targets, cost_model="analytical", time_limit=5)
        assert not np.allclose(placed.problem.compute_time, as_written.problem.compute_time)
    # without a cached profile (another cache) the one-device placement is priced as written
    alone = tvm_place.place(tiny, [OTHER_CPU], time_limit=5, cost_model=AutoCostModel(
        cache_dir=tmp_path / "empty", learned_dir=no_models))
    assert _sources(alone) == [{"analytical"}]


def test_auto_calibrates_on_first_use_for_several_devices_within_its_budget(
        tiny, tmp_path, no_models, monkeypatch):
    asked = []

    def quick_calibration(device, time_limit, progress=None):
        asked.append(time_limit)
        if progress is not None:
            progress(f"calibrating {device.name}: a test's benchmark", 0.5)
        return Calibration("llvm", _calibrated_profile(9.0), [], [], 0.1)

    monkeypatch.setattr(calibrate_module, "calibrate", quick_calibration)
    # one device: its placement is the only one whatever the costs, so nothing is calibrated
    model = AutoCostModel(cache_dir=tmp_path, time_limit=60, learned_dir=no_models)
    one = tvm_place.place(tiny, [OTHER_CPU], cost_model=model, time_limit=60)
    assert asked == [] and _sources(one) == [{"analytical"}]
    # nor a given placement, which is priced, not chosen
    monkeypatch.setenv("TVM_PLACE_CACHE_DIR", str(tmp_path))
    given = tvm_place.place(tiny, [OTHER_CPU, OTHER_CPU], placement=[0] * one.problem.num_ops,
                            time_limit=60)  # cost_model="auto", the default
    assert asked == [] and _sources(given) == [{"analytical"}] * 2
    # a time limit of 0 calibrates nothing either
    model = AutoCostModel(cache_dir=tmp_path, time_limit=0, learned_dir=no_models)
    none = tvm_place.place(tiny, [OTHER_CPU, OTHER_CPU], cost_model=model, time_limit=5)
    assert asked == [] and _sources(none) == [{"analytical"}] * 2
    # two devices of one CPU: one calibration, within min(CALIBRATION_SECONDS, time limit),
    # with progress; the next compile reads the cache
    messages = []
    model = AutoCostModel(cache_dir=tmp_path, time_limit=3, learned_dir=no_models)
    two = tvm_place.place(tiny, [OTHER_CPU, OTHER_CPU], cost_model=model, time_limit=3,
                          progress=lambda message, fraction=None: messages.append(message))
    assert asked == [min(CALIBRATION_SECONDS, 3)] and _sources(two) == [{"calibrated"}] * 2
    assert "calibrating cpu:0: a test's benchmark" in messages
    assert "costing cpu:0 with the calibrated model" in messages
    model = AutoCostModel(cache_dir=tmp_path, time_limit=60, learned_dir=no_models)
    again = tvm_place.place(tiny, [OTHER_CPU, OTHER_CPU], cost_model=model, time_limit=60)
    assert len(asked) == 1 and _sources(again) == [{"calibrated (cached)"}] * 2
    assert np.array_equal(again.problem.compute_time, two.problem.compute_time)


def test_a_failed_calibration_prices_the_device_as_written_with_a_warning(
        tiny, tmp_path, no_models, monkeypatch):
    def failing(device, time_limit, progress=None):
        raise TvmPlaceError(f"cannot calibrate llvm: the benchmark failed on {device.name}")

    monkeypatch.setattr(calibrate_module, "calibrate", failing)
    model = AutoCostModel(cache_dir=tmp_path, time_limit=60, learned_dir=no_models)
    with pytest.warns(CalibrationFailedWarning) as caught:
        placed = tvm_place.place(tiny, [OTHER_CPU, OTHER_CPU], cost_model=model, time_limit=5)
    assert _sources(placed) == [{"analytical"}] * 2
    # one warning: the second CPU of the same kind is not calibrated again
    assert [str(w.message) for w in caught] == [
        "cannot calibrate llvm: the benchmark failed on cpu:0; cpu:0 is priced by its profile "
        "as written (local-cpu)"]


@described_gpu
def test_tuned_kernels_keep_their_database_times_under_auto(tiny, tmp_path, models_here):
    class OneTunedKernel:
        """A tuning database holding the first kernel it is asked about."""

        def __init__(self):
            self.tuned = None

        def seconds(self, prim_func, target):
            if self.tuned is None:
                self.tuned = prim_func
            return 1e-3 if prim_func.same_as(self.tuned) else None

    model = TunedCostModel(OneTunedKernel(), AutoCostModel(cache_dir=tmp_path, time_limit=5,
                                                           learned_dir=models_here))
    placed = tvm_place.place(tiny, [TRAINED_CPU, A100], cost_model=model, time_limit=5)
    cpu, gpu = _sources(placed)
    assert cpu == {"tuned (database)", "learned"} and gpu == {"tuned (database)", "analytical"}


@described_gpu
def test_a_plan_records_which_model_priced_each_device(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    code = main(["place", "resnet18", "--size", "image_size=32", "--size", "width=8",
                 "--target", "llvm", "--target", "cuda", "--time-limit", "2", "--quiet",
                 "--save-plan", str(plan)])
    assert code == 0
    printed = capsys.readouterr().out
    written = read_plan(plan)
    n = len(written["ops"])
    cpu = "learned" if LearnedCostModel().has_model(resolve_targets(["llvm"])[0]) else None
    assert written["options"]["cost_model"] == {"snapshot": "plan.costs.json"}
    assert (tmp_path / "plan.costs.json").exists()
    assert written["cost_sources"]["gpu:0"] == {"analytical": n}
    if cpu is not None:  # this machine's CPU has a learned model
        assert written["cost_sources"]["cpu:0"] == {"learned": n}
    assert f"gpu:0 {n} analytical" in printed
    # --json says the same; an explicit analytical records no sources (its costs are the profiles')
    assert main(["place", "resnet18", "--size", "image_size=32", "--size", "width=8", "--target",
                 "cuda", "--time-limit", "2", "--quiet", "--json", "--cost-model", "analytical",
                 "--save-plan", str(tmp_path / "analytical.json")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cost_sources"] == {"gpu:0": {"analytical": n}}
    analytical = read_plan(tmp_path / "analytical.json")
    assert analytical["options"]["cost_model"] == "analytical" and "cost_sources" not in analytical


def test_golden_plans_are_placed_analytically_unless_told(tiny, tmp_path):
    from tvm_place.testing import GOLDEN_COST_MODEL, assert_placement, check_plan

    plan = tmp_path / "golden.json"
    assert_placement(tiny, ["llvm", "llvm"], plan, update=True, time_limit=5)
    written = read_plan(plan)
    assert GOLDEN_COST_MODEL == "analytical" == written["options"]["cost_model"]
    assert "cost_sources" not in written and not (tmp_path / "golden.costs.json").exists()
    assert check_plan(tiny, plan)[0] == 0
    # asked for, the default is recorded with the snapshot it replays and its sources
    assert_placement(tiny, ["llvm", "llvm"], tmp_path / "auto.json", update=True, time_limit=5,
                     cost_model="auto")
    auto = read_plan(tmp_path / "auto.json")
    assert auto["options"]["cost_model"] == {"snapshot": "auto.costs.json"}
    assert set(auto["cost_sources"]) == {"cpu:0", "cpu:1"}
    assert check_plan(tiny, tmp_path / "auto.json")[0] == 0
