"""External calls (``R.call_dps_packed`` of a function outside the module) are operators:
timed in this process on CPU devices or given by the user, placed where they can run, split
into stages and run equal to TVM's unsplit build."""

import numpy as np
import pytest
import tvm
import tvm_ffi
from relax_modules import unsplit
from tvm import relax

import tvm_place
from tvm_place.errors import TvmPlaceError, UnsupportedModelError
from tvm_place.runtime.errors import WorkerError

SHAPE = (64, 64)


@tvm_ffi.register_global_func("tvm_place_test.scale_by_two")
def _scale_by_two(x, out):
    out.copyfrom(x.numpy() * 2)


def with_external(name: str) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.exp(x))
            b = bb.emit(relax.call_dps_packed(name, relax.Tuple([a]), relax.TensorType(SHAPE, "float32")))
            c = bb.emit(relax.op.tanh(a))
            out = bb.emit_output(relax.op.add(b, c))
        bb.emit_func_output(out)
    return bb.get()


def external_operator(placed) -> int:
    names = placed.problem.graph.names
    return names.index("tvm_place_test.scale_by_two")


def test_a_registered_external_call_is_measured_placed_and_run_equal_to_the_unsplit_build():
    mod = with_external("tvm_place_test.scale_by_two")
    x = np.random.default_rng(0).standard_normal(SHAPE).astype("float32") / 4
    solved = tvm_place.compile(mod, ["llvm", "llvm"], time_limit=5)
    u = external_operator(solved)
    assert solved.problem.compute_time[u].min() > 0  # measured by calling it
    np.testing.assert_allclose(solved(x).numpy(), unsplit(mod)(x), rtol=1e-6)
    # The external call on one device, every other operator on the other: copies both ways.
    num_ops = solved.problem.num_ops
    for device in (0, 1):
        device_of = np.full(num_ops, 1 - device)
        device_of[u] = device
        placed = tvm_place.compile(mod, ["llvm", "llvm"], placement=device_of)
        assert placed.plan.externals == ["tvm_place_test.scale_by_two"] and placed.plan.num_copies > 0
        np.testing.assert_allclose(placed(x).numpy(), unsplit(mod)(x), rtol=1e-6)
        assert len(placed.run_stream([x] * 3)) == 3
    with pytest.raises(WorkerError, match=r"external functions \['tvm_place_test.scale_by_two'\].*threads"):
        placed.attach_workers("ray")


def test_given_external_costs_place_it_only_where_they_say_it_runs():
    mod = with_external("tvm_place_test.scale_by_two")
    placed = tvm_place.compile(mod, ["llvm", "llvm"], time_limit=5,
                               external_costs={"tvm_place_test.scale_by_two": {"cpu:1": 1e-6}})
    u = external_operator(placed)
    assert np.isinf(placed.problem.compute_time[u, 0]) and placed.problem.compute_time[u, 1] == 1e-6
    assert placed.placement.device_of[u] == 1
    x = np.ones(SHAPE, "float32")
    np.testing.assert_allclose(placed(x).numpy(), unsplit(mod)(x), rtol=1e-6)


def test_an_unregistered_external_function_is_a_clear_error_naming_it_and_the_fix():
    mod = with_external("tvm_place_test.nowhere")
    with pytest.raises(UnsupportedModelError,
                       match=r"'tvm_place_test.nowhere'.*not registered in this process.*"
                             r"external_costs=.*pins="):
        tvm_place.compile(mod, ["llvm"])
    with pytest.raises(Exception, match="seconds per call"):
        tvm_place.compile(mod, ["llvm"], external_costs={"tvm_place_test.nowhere": "fast"})


def test_running_an_export_whose_external_function_is_missing_says_so(tmp_path, monkeypatch):
    mod = with_external("tvm_place_test.scale_by_two")
    placed = tvm_place.compile(mod, ["llvm"], time_limit=5)
    loaded = tvm_place.PlacedModule.load(placed.export(tmp_path / "export"))
    loaded.plan.externals = ["tvm_place_test.not_here"]  # as in a process that lacks it
    with pytest.raises(TvmPlaceError, match=r"\['tvm_place_test.not_here'\], which are not registered"):
        loaded(np.ones(SHAPE, "float32"))
