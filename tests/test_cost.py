"""Cost models: the roofline formula, measurement with its disk cache, link transfer times."""

import json
import os

import numpy as np
import pytest
from relax_modules import matmul_module
from tvm import relax

from tvm_place.cost import AnalyticalCostModel, MeasuredCostModel, compute_costs, device_profile
from tvm_place.cost.measured import CostCache
from tvm_place.errors import InvalidTargetError
from tvm_place.graph import OpNode
from tvm_place.passes import collect_op_graph
from tvm_place.targets import resolve_targets


def test_analytical_model_is_the_roofline_of_the_profile():
    (cpu, gpu) = resolve_targets(["llvm", "cuda"])
    node = OpNode("matmul", flops=2e9, bytes_accessed=1e6)
    model = AnalyticalCostModel()
    for device in (cpu, gpu):
        p = device.profile
        expected = p.launch_overhead_us * 1e-6 + max(
            2e9 / (p.peak_gflops * 1e9 * p.compute_efficiency),
            1e6 / (p.memory_bandwidth_gbs * 1e9 * p.memory_efficiency),
        )
        assert model.op_time(None, node, device) == (pytest.approx(expected), "analytical")
    # compute-bound work is faster on the A100 profile than on this CPU's
    assert model.op_time(None, node, gpu)[0] < model.op_time(None, node, cpu)[0]


def test_profiles_are_data_and_unknown_ones_are_refused():
    assert device_profile("h100").arch == "sm_90"
    assert device_profile("a100").link.name == "pcie4"
    with pytest.raises(InvalidTargetError, match="unknown device profile"):
        device_profile("tpu-v9")
    (gpu,) = resolve_targets([{"kind": "cuda", "arch": "sm_75"}])
    assert gpu.profile.name == "t4"
    with pytest.raises(InvalidTargetError, match="describes a gpu"):
        resolve_targets(["llvm"], profiles=["a100"])


def test_measured_model_times_kernels_and_caches_them(tmp_path):
    mod = matmul_module([16, 128])
    collected = collect_op_graph(mod)
    devices = resolve_targets(["llvm", "llvm"])
    model = MeasuredCostModel(cache_dir=tmp_path)
    compute_time, sources = compute_costs(collected, devices, model)
    assert sources[0][0] == "measured" and sources[1][0] == "measured"
    # cpu:1 is the same target: its kernels come from the disk cache, not measured again
    assert compute_time[:, 0].tolist() == compute_time[:, 1].tolist()
    assert sources[0][1] == "measured (cached)"
    # 128^3 multiply-adds take longer than 16^3 (a factor 512 in work)
    assert compute_time[1, 0] > 10 * compute_time[0, 0]
    entries = json.loads((tmp_path / "measured-costs.json").read_text())
    assert len(entries) == 2 and all(key.count("|") == 3 for key in entries)

    again = MeasuredCostModel(cache_dir=tmp_path)
    cached_time, cached_sources = compute_costs(collected, devices, again)
    assert cached_sources[0][0] == "measured (cached)"
    assert np.array_equal(cached_time, compute_time)


def test_cache_key_changes_with_target_and_kernel():
    mod = matmul_module([16, 32])
    small, large = mod["matmul"], mod["matmul1"]
    (cpu,) = resolve_targets(["llvm"])
    (cpu_avx,) = resolve_targets([{"kind": "llvm", "mcpu": "skylake"}])
    assert CostCache.key(small, cpu.target) != CostCache.key(large, cpu.target)
    assert CostCache.key(small, cpu.target) != CostCache.key(small, cpu_avx.target)


def test_cache_key_changes_with_cpu_threads(monkeypatch):
    from tvm_place.cost import measured

    mod = matmul_module([16])
    (cpu,) = resolve_targets(["llvm"])
    one = CostCache.key(mod["matmul"], cpu.target)
    monkeypatch.setattr(measured, "cpu_threads", lambda: 8)
    assert CostCache.key(mod["matmul"], cpu.target) != one


def test_measured_model_falls_back_for_missing_devices(tmp_path):
    mod = matmul_module([16])
    collected = collect_op_graph(mod)
    devices = resolve_targets(["cuda"])
    _, sources = compute_costs(collected, devices, MeasuredCostModel(cache_dir=tmp_path))
    import tvm

    expected = "measured" if tvm.cuda(0).exist else "analytical"
    assert sources[0][0] == expected


def test_plain_llvm_is_compiled_for_this_host_cpu():
    """A bare 'llvm' gets the host's mcpu (TVM's default is generic x86-64, SSE only); an explicit
    mcpu or mtriple is left as given."""
    from tvm_place.targets import host_cpu, resolve_targets

    host = host_cpu()
    plain = resolve_targets(["llvm"])[0].target
    assert (str(plain.attrs["mcpu"]) if "mcpu" in plain.attrs else None) == host
    portable = resolve_targets([{"kind": "llvm", "mcpu": "x86-64"}])[0].target
    assert str(portable.attrs["mcpu"]) == "x86-64"
    cross = resolve_targets([{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}])[0].target
    assert "mcpu" not in cross.attrs


def _put_many(directory: str, prefix: str, count: int) -> None:
    cache = CostCache(directory)
    for i in range(count):
        cache.put(f"{prefix}{i}", float(i))


def test_cost_cache_merges_concurrent_writers(tmp_path):
    """Two processes writing one cache keep each other's entries (each write re-reads the file
    under a lock), and the file is readable by others, as the umask allows."""
    import multiprocessing
    import stat

    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_put_many, args=(str(tmp_path), prefix, 40)) for prefix in "ab"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert all(writer.exitcode == 0 for writer in writers)
    entries = json.loads((tmp_path / "measured-costs.json").read_text())
    assert len(entries) == 80
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "measured-costs.json").stat().st_mode) == 0o666 & ~umask


def test_measured_kernels_get_indices_in_bounds():
    """A gather kernel is timed on index arrays of zeros: random integers could fall outside
    the table, which TVM's "fast" take does not check (the process would crash)."""
    from tvm_place.passes import prepare_pipeline

    bb = relax.BlockBuilder()
    table = relax.Var("table", relax.TensorType((50, 8), "float32"))
    ids = relax.Var("ids", relax.TensorType((64,), "int64"))
    with bb.function("main", [table, ids]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.take(table, ids, axis=0, mode="fast"))
        bb.emit_func_output(out)
    kernel = collect_op_graph(prepare_pipeline()(bb.get())).kernels[0]
    from tvm_place.cost.measured import kernel_argument

    rng = np.random.default_rng(0)
    arguments = [kernel_argument(param, rng) for param in kernel.params]
    assert [a.dtype.kind for a in arguments] == ["f", "i", "f"] and not arguments[1].any()
