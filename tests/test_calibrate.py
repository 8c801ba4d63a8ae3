"""Calibrated profiles: per-operator-class figures in profiles, the micro-benchmark fit,
``tvm-place calibrate`` and the calibrated cost model's per-device cache (issue 18)."""

import dataclasses
import json

import numpy as np
import pytest
import tvm
from relax_modules import matmul_module

from tvm_place.cli import main
from tvm_place.cost import AnalyticalCostModel, CalibratedCostModel, device_profile
from tvm_place.cost.analytical import operator_class
from tvm_place.cost.calibrate import (ESSENTIAL, CalibratedProfileWarning, Sample, benchmarks,
                                      calibrate, fit_profile)
from tvm_place.cost.profiles import profile_from_dict, profile_to_dict
from tvm_place.errors import InvalidTargetError, TvmPlaceError
from tvm_place.formats import load_device_file
from tvm_place.graph import OpNode
from tvm_place.targets import resolve_targets

#: A time limit no benchmark beyond the essential ones fits in.
TINY = 0.01


@pytest.mark.parametrize("kind, expected", [
    ("fused_conv2d3_add2_relu1", "conv"),
    ("conv2d_transpose", "conv"),
    ("fused_matmul4_add2_gelu", "matmul"),
    ("fused_reshape_matmul", "matmul"),
    ("max_pool2d", "pooling"),
    ("adaptive_avg_pool2d1", "pooling"),
    ("softmax1", "reduction"),
    ("fused_expand_dims_expand_dims1_greater_cast_sum", "reduction"),
    ("layer_norm", "reduction"),
    ("fused_reshape_transpose1", "data_movement"),
    ("fused_concatenate40_multiply45_add45_relu45", "data_movement"),
    ("take", "data_movement"),
    ("fused_multiply3_add3_relu2", "elementwise"),
    ("maximum", "elementwise"),  # not a reduction: max is
    ("fused_less_where", "elementwise"),
])
def test_an_operator_is_classed_by_the_operators_in_its_name(kind, expected):
    assert operator_class(kind) == expected


def _profile_with(classes: dict):
    base = profile_to_dict(device_profile("local-cpu"))
    return profile_from_dict("test", {**base, "operator_classes": classes})


def test_a_class_figures_change_only_that_class_prediction():
    conv = OpNode("c", kind="fused_conv2d_add_relu", flops=1e8, bytes_accessed=1e5)
    add = OpNode("a", kind="add", flops=1e6, bytes_accessed=1e7)
    (device,) = resolve_targets(["llvm"])
    model = AnalyticalCostModel()
    plain = {node.kind: model.op_time(None, node, device)[0] for node in (conv, add)}
    slow_conv = dataclasses.replace(device, profile=_profile_with(
        {"conv": {"compute_efficiency": device.profile.compute_efficiency / 4,
                  "launch_overhead_us": 0}}))
    # compute-bound: a quarter of the efficiency is four times the compute time, no launch
    launch = device.profile.launch_overhead_us * 1e-6
    assert model.op_time(None, conv, slow_conv)[0] == pytest.approx(4 * (plain[conv.kind] - launch))
    assert model.op_time(None, add, slow_conv)[0] == plain[add.kind]
    fast_memory = dataclasses.replace(device, profile=_profile_with(
        {"elementwise": {"memory_efficiency": 1.0}}))
    assert model.op_time(None, add, fast_memory)[0] < plain[add.kind]
    assert model.op_time(None, conv, fast_memory)[0] == plain[conv.kind]
    # the figures survive the way to a dict and back (plans and device-file overrides)
    again = profile_from_dict("again", profile_to_dict(slow_conv.profile))
    assert again.operator_classes == slow_conv.profile.operator_classes


@pytest.mark.parametrize("classes, words", [
    ({"convolution": {"compute_efficiency": 0.1}}, "unknown key 'convolution'; the keys are ['conv',"),
    ({"matmull": {"compute_efficiency": 0.1}}, "'matmull' (did you mean 'matmul'?)"),
    ({"conv": {"compute_efficiency": 0}}, "operator_classes.conv.compute_efficiency: 0 is out of range"),
    ({"conv": {"efficiency": 0.1}}, "unknown key 'efficiency'"),
    ({"conv": {}}, "operator_classes.conv: is empty"),
])
def test_bad_class_figures_in_a_device_file_are_clear_errors(tmp_path, classes, words):
    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"devices": [{"target": "llvm", "profile": "local-cpu",
                                             "operator_classes": classes}]}))
    with pytest.raises(InvalidTargetError) as caught:
        load_device_file(path)
    assert words in str(caught.value) and str(path) in str(caught.value)


def test_old_profile_files_without_classes_still_load():
    for name in ("local-cpu", "a100"):
        profile = device_profile(name)
        assert profile.operator_classes == ()
        assert profile.figures("conv") == (profile.compute_efficiency, profile.memory_efficiency,
                                           profile.launch_overhead_us)


def test_the_fit_recovers_a_roofline_from_its_own_times():
    """Times made by a known roofline per class are fitted back to within the grid's step."""
    peak, bandwidth, launch = 40e9, 20e9, 1e-6
    truth = {"matmul": (0.05, 0.5), "elementwise": (1.0, 0.4)}
    samples = [Sample("elementwise", "tiny", 1.0, 12.0, launch + 12.0 / (bandwidth * 0.4))]
    rng = np.random.default_rng(0)
    for op_class, (compute, memory) in truth.items():
        for _ in range(6):
            flops, bytes_ = 10 ** rng.uniform(4, 9), 10 ** rng.uniform(4, 7)
            if op_class == "elementwise":
                flops = bytes_ / 8
            seconds = launch + max(flops / (peak * compute), bytes_ / (bandwidth * memory))
            samples.append(Sample(op_class, "made", flops, bytes_, seconds))
    fitted = profile_from_dict("fitted", {**fit_profile(samples, [], "cpu"), "memory_bytes": 1e9})
    for sample in samples:
        predicted = launch + max(
            sample.flops / (fitted.peak_gflops * 1e9 * fitted.figures(sample.op_class)[0]),
            sample.bytes_accessed / (fitted.memory_bandwidth_gbs * 1e9 * fitted.figures(sample.op_class)[1]))
        assert predicted == pytest.approx(sample.seconds, rel=0.02)


def test_every_benchmark_lowers_to_a_kernel_of_its_class():
    from tvm_place.cost.calibrate import _kernel

    plan = benchmarks()
    assert {op_class for op_class, _, _ in plan} == {"conv", "matmul", "pooling", "reduction",
                                                     "data_movement", "elementwise"}
    for op_class, name, build in plan:
        node, _ = _kernel(build())
        assert operator_class(node.kind) == op_class, name
        assert node.bytes_accessed > 0, name


def test_calibrate_with_a_tiny_time_limit_writes_a_profile_that_loads_back(tmp_path, capsys):
    out = tmp_path / "cpu.json"
    assert main(["calibrate", "--time-limit", str(TINY), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "not run (time limit)" in printed
    targets, (profile,) = load_device_file(out)
    assert targets == ["llvm"] and profile.kind == "cpu"
    data = json.loads(out.read_text())["devices"][0]["profile"]
    assert "calibrated by tvm-place" in data["description"]
    assert f"{ESSENTIAL} micro-benchmarks" in data["description"]
    # a matmul and an elementwise kernel ran: the matmul class has its own figures, and every
    # figure is one a profile may hold
    assert "matmul" not in data["operator_classes"]  # one matmul fixes no roofline
    assert "elementwise" in data["operator_classes"]
    assert 0 < profile.compute_efficiency <= 1 and 0 < profile.memory_efficiency <= 1
    assert data["link"]["bandwidth_gbs"] > 0
    # the file is a device file: placing with it prices with the calibrated figures
    resolved = resolve_targets(targets, [profile])
    node = OpNode("a", kind="add", flops=1e6, bytes_accessed=1e7)
    seconds, source = AnalyticalCostModel().op_time(None, node, resolved[0])
    assert source == "analytical" and seconds == pytest.approx(
        profile.launch_overhead_us * 1e-6 + max(
            1e6 / (profile.peak_gflops * 1e9 * profile.figures("elementwise")[0]),
            1e7 / (profile.memory_bandwidth_gbs * 1e9 * profile.figures("elementwise")[1])))


def test_calibrating_what_is_not_here_is_a_clear_error(capsys):
    with pytest.raises(InvalidTargetError, match="places on"):
        calibrate("vulkan", TINY)
    with pytest.raises(TvmPlaceError, match="time limit"):
        calibrate("llvm", 0)
    if not tvm.cuda(0).exist:
        assert main(["calibrate", "--target", "cuda", "--time-limit", str(TINY)]) == 2
        assert "no cuda device 0 on this machine to calibrate" in capsys.readouterr().err


def test_the_calibrated_model_calibrates_once_per_device_and_caches(tmp_path):
    import tvm_place

    mod = matmul_module([32, 64])
    first = CalibratedCostModel(cache_dir=tmp_path, time_limit=TINY)
    placed = tvm_place.place(mod, ["llvm", "llvm"], cost_model=first, time_limit=5)
    assert first.calibrations == 1  # two CPU devices of one target: one calibration
    assert {s for row in placed.cost_sources for s in row} == {"calibrated"}
    (cached_file,) = (tmp_path / "calibrated-profiles").iterdir()
    second = CalibratedCostModel(cache_dir=tmp_path, time_limit=TINY)
    again = tvm_place.place(mod, ["llvm", "llvm"], cost_model=second, time_limit=5)
    assert second.calibrations == 0
    assert {s for row in again.cost_sources for s in row} == {"calibrated (cached)"}
    assert np.array_equal(again.problem.compute_time, placed.problem.compute_time)
    # a corrupt cache file is measured again, with a warning, and rewritten
    cached_file.write_text("{not json")
    third = CalibratedCostModel(cache_dir=tmp_path, time_limit=TINY)
    with pytest.warns(CalibratedProfileWarning, match="calibrating cpu:0 again"):
        third.profile(resolve_targets(["llvm"])[0])
    assert third.calibrations == 1 and load_device_file(cached_file)


def test_a_device_not_here_keeps_its_profile_as_written(tmp_path):
    if tvm.cuda(0).exist:
        pytest.skip("this machine has a GPU: cuda would be calibrated")
    (gpu,) = resolve_targets(["cuda"])
    node = OpNode("m", kind="matmul", flops=1e9, bytes_accessed=1e6)
    model = CalibratedCostModel(cache_dir=tmp_path, time_limit=TINY)
    assert model.op_time(None, node, gpu) == AnalyticalCostModel().op_time(None, node, gpu)
    assert model.calibrations == 0 and not (tmp_path / "calibrated-profiles").exists()
