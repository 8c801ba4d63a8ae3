"""Checks that need a CUDA GPU and driver (``pytest -m gpu``); skipped everywhere else."""

import json

import numpy as np
import pytest
import tvm
from relax_modules import matmul_module

import tvm_place
from tvm_place.cost import MeasuredCostModel, compute_costs
from tvm_place.passes import collect_op_graph
from tvm_place.targets import resolve_targets

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA GPU on this machine"),
]


def test_measured_model_times_cuda_kernels(tmp_path):
    mod = matmul_module([16, 1024])
    collected = collect_op_graph(mod)
    (gpu,) = resolve_targets(["cuda"])
    compute_time, sources = compute_costs(collected, [gpu], MeasuredCostModel(cache_dir=tmp_path))
    assert [row[0] for row in sources] == ["measured", "measured"]
    small, large = compute_time[:, 0]
    # 1024^3 multiply-adds (2.1 GFLOP) take longer than 16^3, and far less than a second
    assert 0 < small < large < 1.0
    keys = list(json.loads((tmp_path / "measured-costs.json").read_text()))
    assert len(keys) == 2 and all('"cuda"' in key for key in keys)


def test_cuda_target_without_arch_is_built_for_this_gpu():
    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    (gpu,) = resolve_targets(["cuda"])
    assert str(gpu.target.attrs["arch"]) == arch
    # a named profile still describes the GPU the user asked for, with its own architecture
    (described,) = resolve_targets(["cuda"], profiles=["a100"])
    assert str(described.target.attrs["arch"]) == "sm_80"


def test_default_cuda_target_runs_on_this_gpu():
    """A plain "cuda" target must load here: with the A100 profile's sm_80 as the default, an
    H100 refused the kernels (CUDA_ERROR_NO_BINARY_FOR_GPU)."""
    x = np.random.default_rng(0).standard_normal((64, 64)).astype("float32")
    placed = tvm_place.compile(matmul_module([64], legalized=False), ["llvm", "cuda"], placement=[1])
    (result,) = placed(x)
    assert result.device.dlpack_device_type() == tvm.cuda(0).dlpack_device_type()
    assert np.abs(result.numpy() - x @ x).max() <= 1e-3
