"""A learned model of another CPU adapted to this one (``auto`` on a CPU without its own model):
the factor and the source chosen from reference kernels, the time limit, the cache, and the
order ``auto`` chooses it in."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tvm_place
from tvm_place import models
from tvm_place.cost import AutoCostModel
from tvm_place.cost import adapted as adapted_module
from tvm_place.cost.adapted import (MIN_KERNELS, AdaptationCacheWarning, AdaptedCostModel, adapt,
                                    reference_kernels)
from tvm_place.cost.auto import CalibrationFailedWarning
from tvm_place.cost.learned import FEATURES, BoostedTrees, kernel_features
from tvm_place.errors import TvmPlaceError
from tvm_place.targets import resolve_targets

#: A CPU no learned model is shipped for: code for the baseline x86-64, which every x86-64
#: machine runs (the tests time kernels through a mocked timer unless they say so).
OTHER_CPU = {"kind": "llvm", "mcpu": "x86-64"}


def _constant_model(log_seconds: float) -> BoostedTrees:
    """A model predicting ``exp(log_seconds)`` for every kernel."""
    return BoostedTrees({"features": list(FEATURES), "base_score": log_seconds, "trees": []})


@pytest.fixture(scope="module")
def tiny():
    return models.get("resnet18", batch=1, image_size=32, width=8, num_classes=10).mod


@pytest.fixture
def timed(monkeypatch):
    """Reference kernel i takes ``times[i]`` seconds (cycled); the timer records its calls."""
    calls = []
    times = [1e-3, 2e-3, 4e-3]

    def fake_time_kernel(kernel, device, *args, **kwargs):
        calls.append(kernel)
        return times[len(calls) % len(times)]

    from tvm_place.cost import measured

    monkeypatch.setattr(measured, "time_kernel", fake_time_kernel)
    return calls


def test_reference_kernels_are_distinct_kernels_of_both_models():
    kernels = reference_kernels()
    assert len(kernels) >= MIN_KERNELS
    names = [node.name for _, node in kernels]
    assert any("conv2d" in name for name in names) and any("matmul" in name for name in names)
    # interleaved: the first MIN_KERNELS already hold both models' kinds of kernel
    first = names[:MIN_KERNELS]
    assert any("conv2d" in name for name in first) and any("matmul" in name for name in first)
    assert len({tuple(kernel_features(k, n)) for k, n in kernels}) > len(kernels) // 2


def test_the_factor_is_the_median_ratio_and_the_source_the_one_that_agrees_best(timed):
    (device,) = resolve_targets([OTHER_CPU])
    rows = np.array([kernel_features(k, n) for k, n in reference_kernels()])
    # source "near" predicts each kernel's time up to one factor; "far" predicts one time for all
    near = _constant_model(0.0)
    near.predict = lambda x: np.log(np.array([[1e-3, 2e-3, 4e-3][(i + 1) % 3]
                                              for i in range(len(x))]) / 2.0)
    far = _constant_model(np.log(2e-3))
    adaptation = adapt(device, {"llvm-far": far, "llvm-near": near}, time_limit=60)
    assert adaptation.source == "llvm-near" and adaptation.factor == pytest.approx(2.0)
    assert adaptation.error == pytest.approx(0.0, abs=1e-9) and adaptation.kernels == len(rows)
    alone = adapt(device, {"llvm-far": far}, time_limit=60)
    assert alone.source == "llvm-far" and alone.factor == pytest.approx(1.0)  # median of 0.5, 1, 2
    assert alone.error == pytest.approx(np.log(2.0))


def test_the_time_limit_stops_after_the_least_number_of_kernels(timed):
    (device,) = resolve_targets([OTHER_CPU])
    adaptation = adapt(device, {"llvm-x": _constant_model(-7.0)}, time_limit=1e-9)
    assert adaptation.kernels == MIN_KERNELS == len(timed)


def test_a_kernel_that_fails_is_a_clear_error(monkeypatch):
    from tvm_place.cost import measured

    def failing(*args, **kwargs):
        raise RuntimeError("LLVM ERROR: cannot select")

    monkeypatch.setattr(measured, "time_kernel", failing)
    (device,) = resolve_targets([OTHER_CPU])
    with pytest.raises(TvmPlaceError, match="cannot adapt a learned model to cpu:0: a reference "
                                            "kernel failed"):
        adapt(device, {"llvm-x": _constant_model(-7.0)}, time_limit=60)
    with pytest.raises(TvmPlaceError, match="no learned model of another llvm device"):
        adapt(device, {}, time_limit=60)


def test_auto_adapts_on_first_use_caches_and_prices_by_the_scaled_model(tiny, tmp_path,
                                                                        models_here, timed):
    from tvm_place.cost.learned import LearnedCostModel
    from tvm_place.passes import collect_op_graph

    messages = []
    model = AutoCostModel(cache_dir=tmp_path, time_limit=5, learned_dir=models_here)
    placed = tvm_place.place(tiny, [OTHER_CPU, OTHER_CPU], cost_model=model, time_limit=5,
                             progress=lambda message, fraction=None: messages.append(message))
    adaptation = model.adapted.adapt(placed.devices[0])
    source = f"learned (adapted from {adaptation.source})"
    assert {s for row in placed.cost_sources for s in row} == {source}
    assert model.adapted.adaptations == 1 and len(timed) == len(reference_kernels())
    assert any(m.startswith("adapting a learned model to cpu:0: reference kernel 1 of")
               for m in messages)
    assert "costing cpu:0 with the adapted model" in messages
    # the costs: the source model's predictions times the factor
    (source_device,) = resolve_targets([{"kind": "llvm", "mcpu": adaptation.source.split("-")[1]}])
    learned = LearnedCostModel(models_here)
    collected = collect_op_graph(placed.prepared)
    for u, (kernel, node) in enumerate(zip(collected.kernels, collected.graph.nodes)):
        expected = learned.op_time(kernel, node, source_device)[0] * adaptation.factor
        assert placed.problem.compute_time[u, 0] == pytest.approx(expected, rel=1e-12)
    # the next compile reads the cache: no kernel is timed, the same costs
    again = tvm_place.place(tiny, [OTHER_CPU], time_limit=5, cost_model=AutoCostModel(
        cache_dir=tmp_path, time_limit=5, learned_dir=models_here))
    assert len(timed) == len(reference_kernels())
    assert {s for row in again.cost_sources for s in row} == {source}
    assert np.array_equal(again.problem.compute_time[:, 0], placed.problem.compute_time[:, 0])


def test_a_cpu_with_its_own_model_is_not_adapted(tiny, tmp_path, models_here, timed):
    import tvm

    trained = json.loads(sorted(models_here.glob("llvm-*.json"))[0].read_text())["target"]
    own = {"kind": "llvm", "mcpu": str(tvm.target.Target(trained).attrs["mcpu"])}
    model = AutoCostModel(cache_dir=tmp_path, time_limit=5, learned_dir=models_here)
    placed = tvm_place.place(tiny, [own, own], cost_model=model, time_limit=5)
    assert {s for row in placed.cost_sources for s in row} == {"learned"} and timed == []


def test_a_changed_source_model_is_adapted_again(tmp_path, models_here, timed):
    (device,) = resolve_targets([OTHER_CPU])
    first = AdaptedCostModel(tmp_path, 60, models_here)
    first.adapt(device)
    timed.clear()
    assert AdaptedCostModel(tmp_path, 60, models_here).has_adaptation(device)
    changed = sorted(models_here.glob("llvm-*.json"))[0]
    data = json.loads(changed.read_text())
    changed.write_text(json.dumps({**data, "base_score": data["base_score"] + 1.0}))
    assert not AdaptedCostModel(tmp_path, 60, models_here).has_adaptation(device)


def test_a_corrupt_cache_file_is_measured_again_with_a_warning(tmp_path, models_here, timed):
    (device,) = resolve_targets([OTHER_CPU])
    model = AdaptedCostModel(tmp_path, 60, models_here)
    path = model.path(device, model.sources(device))
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "tvm-place-adapted-model", "factor": "fast"}')
    with pytest.warns(AdaptationCacheWarning, match="not one tvm-place wrote"):
        assert not AdaptedCostModel(tmp_path, 60, models_here).has_adaptation(device)
    with pytest.warns(AdaptationCacheWarning):  # read again by a new model, then rewritten
        AdaptedCostModel(tmp_path, 60, models_here).adapt(device)
    assert AdaptedCostModel(tmp_path, 60, models_here).has_adaptation(device)


def test_a_failed_adaptation_prices_the_device_as_written_with_a_warning(
        tiny, tmp_path, models_here, monkeypatch):
    def failing(device, sources, time_limit, progress=None):
        raise TvmPlaceError(f"cannot adapt a learned model to {device.name}: a reference kernel "
                            "failed (LLVM ERROR)")

    monkeypatch.setattr(adapted_module, "adapt", failing)
    model = AutoCostModel(cache_dir=tmp_path, time_limit=5, learned_dir=models_here)
    with pytest.warns(CalibrationFailedWarning, match="priced by its profile as written"):
        placed = tvm_place.place(tiny, [OTHER_CPU, OTHER_CPU], cost_model=model, time_limit=5)
    assert {s for row in placed.cost_sources for s in row} == {"analytical"}


def test_adapting_on_this_machine_measures_real_kernels(tmp_path, models_here):
    """Not mocked: the reference kernels are built and timed here, within the time limit."""
    (device,) = resolve_targets([OTHER_CPU])
    model = AdaptedCostModel(tmp_path, 0.5, models_here)
    adaptation = model.adapt(device)
    assert adaptation.kernels == MIN_KERNELS  # the least number: the limit is short
    assert 0.05 < adaptation.factor < 20 and adaptation.error < 1.0


def test_every_shipped_model_was_trained_on_the_reference_kernels():
    """The factor is measured on kernels the models know (the module's docstring says why)."""
    import importlib

    from tvm_place.cost.learned import MODEL_DIR

    train_cost_model = importlib.import_module("train_cost_model")
    rows = {tuple(kernel_features(k, n)) for k, n in reference_kernels()}
    for shipped in sorted(MODEL_DIR.glob("*.json")):
        dataset = json.loads(train_cost_model.dataset_path(shipped.stem).read_text())
        trained = {tuple(r["features"]) for r in dataset["records"] if r["role"] == "train"}
        assert rows <= trained, shipped.stem
