"""torchvision and Hugging Face architectures as users import them (models/hub.py): each built
from its library with random weights at a small size, imported with ``from_exported_program``,
split over two CPU devices, run, and compared with torch eager.

A few run in the default suite; the rest are marked slow (``pytest -m slow``). Without the
``hub`` extra (torchvision, transformers) they skip.
"""

import numpy as np
import pytest
import tvm

import tvm_place
from tvm_place.compiler import prepare
from tvm_place.models import hub
from tvm_place.passes import collect_op_graph

# LLVM without optimisation: the same numerics, compiles about three times faster.
FAST_LLVM = tvm.target.Target({"kind": "llvm", "opt-level": 0})
DEFAULT_SUITE = {"squeezenet1_1", "bert", "gpt2"}


CASES = [
    pytest.param(build, arch, id=f"{prefix}-{arch}",
                 marks=[] if arch in DEFAULT_SUITE else [pytest.mark.slow])
    for build, table, prefix in ((hub.torchvision_model, hub.TORCHVISION, "torchvision"),
                                 (hub.hugging_face_model, hub.HUGGING_FACE, "hf"))
    for arch in table
]


def split_over_two_cpus(model: hub.HubModel):
    if model.name.removeprefix("hf-") in hub.DECODERS:
        with pytest.raises(tvm_place.errors.UnsupportedModelError, match="cumsum over a boolean tensor"):
            tvm_place.compile(model.mod, [FAST_LLVM, FAST_LLVM])
        return
    num_ops = len(collect_op_graph(prepare(model.mod)).graph)
    placement = (np.arange(num_ops) >= num_ops // 2).astype(np.int64)
    placed = tvm_place.compile(model.mod, [FAST_LLVM, FAST_LLVM], placement=placement)
    assert placed.plan.num_copies > 0
    got = placed(*model.inputs)
    got = got[0] if isinstance(got, tuple) else got
    scale = max(1.0, float(np.abs(model.expected).max()))
    error = float(np.abs(got.numpy() - model.expected).max())
    assert error <= 1e-4 * scale, f"{model.name}: max abs error {error:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("build, arch", CASES)
def test_architecture_split_over_two_devices_matches_torch(build, arch):
    try:
        model = build(arch)
    except tvm_place.errors.MissingDependencyError as err:
        pytest.skip(str(err))
    split_over_two_cpus(model)
