"""tvm_place.pipeline inside tvm.compile: one multi-device executable, run by TVM's own VM."""

import re

import numpy as np
import pytest
import tvm
from relax_modules import unsplit
from tvm import relax

import tvm_place
from tvm_place import models
from tvm_place.compiler import place, prepare
from tvm_place.errors import InfeasibleError, TvmPlaceError
from tvm_place.passes import collect_op_graph

BERT = dict(seq_len=8, hidden=64, heads=4, ffn=128)
CPU_GPU = ["llvm", {"kind": "cuda", "arch": "sm_80"}]


def bert():
    return models.get("bert-layer", **BERT)


def inputs(model):
    return [tvm.runtime.tensor(x) for x in model.inputs]


def forced_across_two(mod) -> np.ndarray:
    """Every third operator on device 1, the rest on device 0: many copies both ways."""
    num_ops = len(collect_op_graph(prepare(mod)).graph)
    return (np.arange(num_ops) % 3 == 1).astype(np.int64)


@tvm.ir.transform.module_pass(opt_level=0, name="test.Capture")
class Capture:
    """A user pass after ours: it sees (and keeps) the VM-lowered module."""

    def __init__(self):
        self.module = None

    def transform_module(self, mod, ctx):
        self.module = mod
        return mod


def to_device_calls(mod) -> int:
    return mod["main"].script().count('"vm.builtin.to_device"')


def test_two_cpu_devices_match_the_unsplit_build():
    model = bert()
    placement = forced_across_two(model.mod)
    capture = Capture()
    pipeline = tvm_place.pipeline(["llvm", "llvm"], placement=placement)
    executable = tvm.compile(model.mod, relax_pipeline=tvm.transform.Sequential([pipeline, capture]))
    assert to_device_calls(capture.module) > 0, "a placement across two devices must copy"
    devices = tvm_place.devices_of(executable)
    assert devices == [tvm.cpu(0), tvm.cpu(1)] == pipeline.devices
    out = relax.VirtualMachine(executable, devices)["main"](*inputs(model)).numpy()
    assert np.abs(out - unsplit(model.mod)(*model.inputs)).max() <= 1e-5
    assert pipeline.placement.device_of.tolist() == placement.tolist()
    assert "cpu:1" in pipeline.report()


def test_solved_placement_is_the_one_tvm_place_compile_finds():
    model = bert()
    pipeline = tvm_place.pipeline(["llvm", "llvm"], profiles=[None, "server-cpu"], objective="throughput")
    lowered = pipeline(model.mod)  # the pass alone, as tvm.compile would run it
    assert "tvm_place_devices" in [gv.name_hint for gv in lowered.get_global_vars()]
    expected = place(model.mod, ["llvm", "llvm"], objective="throughput", profiles=[None, "server-cpu"])
    assert pipeline.placement.to_json() == expected.placement.to_json()
    assert set(pipeline.placement.device_of.tolist()) == {0, 1}


def _modules(module):
    yield module
    for imported in module.imports:
        yield from _modules(imported)


def test_cpu_gpu_builds_cuda_kernels_for_gpu_ops_only():
    model = bert()
    # The first q/k/v projection on the CPU, the second on the GPU: one PrimFunc, two targets.
    pins = {"fused_NT_matmul_add": "cpu:0", "fused_NT_matmul_add#1": "gpu:0", "softmax": "cpu:0"}
    capture = Capture()
    pipeline = tvm_place.pipeline(CPU_GPU, pins=pins)
    executable = tvm.compile(model.mod, relax_pipeline=tvm.transform.Sequential([pipeline, capture]))
    assert tvm_place.devices_of(executable) == [tvm.cpu(0), tvm.cuda(0)]
    placement = pipeline.placement
    assert set(placement.device_of.tolist()) == {0, 1}

    targets = {
        gv.name_hint: func.attrs["target"].kind.name
        for gv, func in capture.module.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc) and "target" in func.attrs
    }
    callees = [node.kind for node in pipeline.problem.graph.nodes]
    for callee, device in zip(callees, placement.device_of):
        kind = "cuda" if device == 1 else "llvm"
        assert kind in {t for name, t in targets.items() if name in (callee, f"{callee}_cuda0", f"{callee}_cpu0")}
    assert targets["fused_NT_matmul_add"] != targets.get("fused_NT_matmul_add_cuda0", targets.get("fused_NT_matmul_add_cpu0"))

    modules = list(_modules(executable.mod))
    kernels = set()
    for module in modules:
        if module.kind == "cuda":
            kernels |= set(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)", module.inspect_source()))
    gpu_functions = {name for name, kind in targets.items() if kind == "cuda"}
    cpu_functions = {name for name, kind in targets.items() if kind == "llvm"}
    assert gpu_functions and cpu_functions
    assert {f"{name}_kernel" for name in gpu_functions} <= kernels, kernels
    assert not {f"{name}_kernel" for name in cpu_functions} & kernels
    host_ir = "\n".join(m.inspect_source() for m in modules if m.kind == "llvm")
    for name in cpu_functions:
        assert re.search(rf"define .*@__tvm_ffi_{name}\(", host_ir), name
    assert "gpu:0" in pipeline.report()


def test_composes_with_user_passes_before_and_after(tmp_path):
    model = models.get("onnx-cnn")

    @tvm.ir.transform.module_pass(opt_level=0, name="test.Double")
    def double_output(mod, ctx):
        """A user pass before ours, on the high-level module: main returns twice its result."""
        main = mod["main"]
        value = relax.BlockBuilder().normalize(
            relax.op.multiply(main.body.body, relax.const(2.0, "float32"))
        )
        doubled = relax.Var("doubled", value.ty)
        body = relax.SeqExpr(
            [*main.body.blocks, relax.BindingBlock([relax.VarBinding(doubled, value)])], doubled
        )
        new = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        new[mod.get_global_var("main")] = relax.Function(main.params, body, value.ty, main.is_pure, main.attrs)
        return new

    capture = Capture()
    pipeline = tvm_place.pipeline(["llvm", "llvm"], pins={"*": "cpu:1"})
    executable = tvm.compile(
        model.mod, relax_pipeline=tvm.transform.Sequential([double_output, pipeline, capture])
    )
    assert capture.module is not None and "tvm_place_devices" in [
        gv.name_hint for gv in capture.module.get_global_vars()
    ]
    assert set(pipeline.placement.device_of.tolist()) == {1}
    out = relax.VirtualMachine(executable, tvm_place.devices_of(executable))["main"](*inputs(model))
    assert np.abs(out.numpy() - 2 * unsplit(model.mod)(*model.inputs)).max() <= 2e-5

    # The device order travels with the exported library.
    executable.export_library(str(tmp_path / "cnn.so"))
    loaded = tvm.runtime.load_module(str(tmp_path / "cnn.so"))
    assert tvm_place.devices_of(loaded) == [tvm.cpu(0), tvm.cpu(1)]
    again = relax.VirtualMachine(loaded, tvm_place.devices_of(loaded))["main"](*inputs(model))
    assert np.array_equal(again.numpy(), out.numpy())


def test_options_from_module_attributes():
    model = models.get("onnx-cnn")
    mod = model.mod.with_attr("tvm_place.objective", "throughput").with_attr("tvm_place.targets", ["llvm", "llvm"])
    pipeline = tvm_place.pipeline()
    assert pipeline.resolved_options(mod)["objective"] == "throughput"
    tvm.compile(mod, relax_pipeline=pipeline)
    assert pipeline.placement.objective == "throughput"
    assert len(pipeline.devices) == 2
    # an argument wins over the attribute
    assert tvm_place.pipeline(["llvm"], objective="latency").resolved_options(mod)["objective"] == "latency"
    # an options object settles every option; keywords override it
    chosen = tvm_place.PlaceOptions(method="greedy", time_limit=7)
    assert tvm_place.pipeline(["llvm"], chosen).resolved_options(mod)["objective"] == "latency"
    resolved = tvm_place.pipeline(options=chosen, objective="throughput").resolved_options(mod)
    assert (resolved["method"], resolved["time_limit"], resolved["objective"]) == ("greedy", 7.0, "throughput")
    assert resolved["targets"] == ["llvm", "llvm"]  # not an option: still from the attribute


def test_pass_context_config_is_read_where_tvm_allows_it(monkeypatch):
    # TVM 0.27 refuses keys it has not registered (registration is C++ only) ...
    with pytest.raises(AttributeError, match="Invalid config option"):
        tvm.transform.PassContext(config={"tvm_place.objective": "throughput"})

    # ... so the pass reads them only from a context that has them.
    class Context:
        config = {"tvm_place.objective": "throughput", "tvm_place.time_limit": 5}

    monkeypatch.setattr(tvm.transform.PassContext, "current", staticmethod(lambda: Context()))
    options = tvm_place.pipeline(["llvm"]).resolved_options(models.get("onnx-cnn").mod)
    assert options["objective"] == "throughput" and options["time_limit"] == 5.0


def test_errors_keep_their_type_through_tvm_compile():
    model = models.get("onnx-cnn")
    with pytest.raises(InfeasibleError, match="matches no operator"):
        tvm.compile(model.mod, relax_pipeline=tvm_place.pipeline(["llvm", "llvm"], pins={"nope": "cpu:1"}))
    with pytest.raises(TvmPlaceError, match="unknown option 'colour'"):
        tvm_place.pipeline(["llvm"], colour="red")
    with pytest.raises(TvmPlaceError, match="places main only"):
        tvm_place.pipeline(["llvm"], entry="forward")
    plain = tvm.compile(model.mod, target="llvm")
    with pytest.raises(TvmPlaceError, match="no tvm-place device record"):
        tvm_place.devices_of(plain)


def test_a_weight_read_in_two_stages_of_another_device_is_copied_once():
    from tvm_place.passes import AnnotatePlacement, SplitByDevice
    from tvm_place.passes.multi_device import bind_prim_func_targets, copy_constants, inline_stages
    from tvm_place.passes._ir import TO_VDEVICE, bindings, is_call_to

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 4), "float32"))
    w = relax.const(np.arange(16, dtype="float32").reshape(4, 4) / 16)
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.matmul(x, w))
            b = bb.emit(relax.op.nn.softmax(a))
            out = bb.emit_output(relax.op.matmul(b, w))
        bb.emit_func_output(out)
    mod = bb.get()
    placement = [1, 0, 1]  # both matmuls on cpu:1, in two stages with softmax on cpu:0 between
    placed = place(mod, ["llvm", "llvm"], placement=placement)
    targets = [d.target for d in placed.devices]
    split = tvm.transform.Sequential([AnnotatePlacement(placement, targets), SplitByDevice()])(placed.prepared)
    flat = bind_prim_func_targets(copy_constants(inline_stages(split)))
    relax.analysis.well_formed(flat)
    copies = [b for b in bindings(flat["main"]) if is_call_to(b.value, TO_VDEVICE)]
    assert sum(isinstance(b.value.args[0], tvm.ir.Constant) for b in copies) == 1

    executable = tvm.compile(mod, relax_pipeline=tvm_place.pipeline(["llvm", "llvm"], placement=placement))
    x_value = np.random.default_rng(0).standard_normal((4, 4)).astype("float32")
    out = relax.VirtualMachine(executable, tvm_place.devices_of(executable))["main"](tvm.runtime.tensor(x_value))
    reference = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x_value))
    assert np.abs(out.numpy() - reference.numpy()).max() <= 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA GPU on this machine")
def test_cpu_gpu_executable_runs_on_a_real_gpu():
    model = bert()
    # "cuda" without an arch: built for this machine's GPU. Weights of GPU operators are copied
    # from cpu:0 at each call, values cross both ways.
    pipeline = tvm_place.pipeline(["llvm", "cuda"], pins={"softmax": "cpu:0", "fused_NT_matmul_add": "cpu:0"})
    executable = tvm.compile(model.mod, relax_pipeline=pipeline)
    assert set(pipeline.placement.device_of.tolist()) == {0, 1}
    devices = tvm_place.devices_of(executable)
    assert devices == [tvm.cpu(0), tvm.cuda(0)]
    out = relax.VirtualMachine(executable, devices)["main"](*inputs(model))
    assert np.abs(out.numpy() - unsplit(model.mod)(*model.inputs)).max() <= 1e-4
