"""The Relax passes, each alone and inside a user's own Sequential, on tiny modules."""

import re

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_place.errors import InvalidPlacementError, UnsupportedModelError
from tvm_place.passes import (
    AnnotatePlacement,
    CollectOpGraph,
    SplitByDevice,
    build_stages,
    collect_op_graph,
    prepare_pipeline,
    stage_plan,
)
from tvm_place.passes._ir import CALL_TIR, TO_VDEVICE, bindings, is_call_to, tensor_types


@I.ir_module
class FanOut:
    """x -> matmul -> {exp, tanh, sigmoid}; the three are summed: one value, three consumers."""

    @R.function
    def main(x: R.Tensor((8, 16), "float32"), w: R.Tensor((16, 16), "float32")):
        with R.dataflow():
            a = R.matmul(x, w)
            b = R.exp(a)
            c = R.tanh(a)
            d = R.sigmoid(a)
            e = R.add(b, c)
            f = R.add(e, d)
            R.output(f)
        return f


@I.ir_module
class Hinted:
    """A user pin on an operator's output and one on an input."""

    @R.function
    def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 8), "float32")):
        with R.dataflow():
            a = R.matmul(x, w)
            b = R.hint_on_device(a, R.device(2, 0))
            c = R.exp(b)
            xh = R.hint_on_device(x, R.device(1, 1))
            d = R.tanh(xh)
            e = R.add(c, d)
            R.output(e)
        return e


def unfused(mod):
    """Legalize only, so each Relax operator stays its own call_tir (no fusion hides edges)."""
    return relax.transform.LegalizeOps()(mod)


TWO_CPUS = [tvm.target.Target("llvm"), tvm.target.Target("llvm")]
CPU_GPU = [tvm.target.Target("llvm"), tvm.target.Target({"kind": "cuda", "arch": "sm_80"})]


def test_collect_reads_ops_edges_and_sizes():
    collected = collect_op_graph(unfused(FanOut))
    graph = collected.graph
    assert [n.kind for n in graph.nodes] == ["matmul", "tir_exp", "tir_tanh", "tir_sigmoid", "add", "add"]
    assert graph.names[-1] == "add#1"
    assert graph.edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 4], [2, 4], [3, 5], [4, 5]]
    matmul = graph.nodes[0]
    assert matmul.flops == 2 * 8 * 16 * 16
    assert matmul.output_bytes == 8 * 16 * 4
    assert matmul.bytes_accessed == (8 * 16 + 16 * 16 + 8 * 16) * 4
    assert collected.input_names == ["x", "w"]


def test_collect_is_an_analysis_pass_in_a_users_sequential():
    collect = CollectOpGraph()
    prepared = FanOut
    result = tvm.transform.Sequential([prepare_pipeline(), collect])(prepared)
    assert collect.result is not None and len(collect.result.graph) >= 1
    assert isinstance(result, tvm.IRModule)


def test_collect_turns_hints_into_pins():
    collected = collect_op_graph(prepare_pipeline()(Hinted))
    names = collected.graph.names
    pinned = {names[u]: pin for u, pin in collected.pins.items()}
    # The producer of the hinted value is pinned; a hinted input pins its consumers.
    assert pinned[next(n for n in names if "matmul" in n)] == ("gpu", 0)
    assert pinned[next(n for n in names if "tanh" in n)] == ("cpu", 1)


def test_collect_counts_constants_as_parameter_bytes():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    weight = relax.const(np.ones((3, 5), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(x, weight))
        bb.emit_func_output(y)
    collected = collect_op_graph(unfused(bb.get()))
    assert collected.graph.nodes[0].param_bytes == 3 * 5 * 4


def test_annotate_writes_vdevices_and_drops_hints():
    prepared = prepare_pipeline()(Hinted)
    num_ops = len(collect_op_graph(prepared).graph)
    device_of = [1] * num_ops
    annotated = AnnotatePlacement(device_of, CPU_GPU)(prepared)
    relax.analysis.well_formed(annotated)
    vdevices = annotated.global_infos["vdevice"]
    assert [v.target.kind.name for v in vdevices] == ["llvm", "cuda"]
    calls = [b for b in bindings(annotated["main"]) if is_call_to(b.value, CALL_TIR)]
    assert len(calls) == num_ops
    for binding in calls:
        assert binding.var.ty.vdevice.target.kind.name == "cuda"
    assert "hint_on_device" not in annotated["main"].script()


def test_annotate_rejects_a_placement_of_another_module():
    prepared = prepare_pipeline()(FanOut)
    with pytest.raises(InvalidPlacementError, match="another module"):
        AnnotatePlacement([0] * 99, TWO_CPUS)(prepared)


def test_split_puts_one_copy_per_value_and_destination_device():
    module = unfused(FanOut)
    # matmul on cpu:0, its three consumers on cpu:1, the adds back on cpu:0.
    device_of = np.array([0, 1, 1, 1, 0, 0])
    split = tvm.transform.Sequential([AnnotatePlacement(device_of, TWO_CPUS), SplitByDevice()])(
        module
    )
    relax.analysis.well_formed(split)
    main = split["main"]
    copies = [b for b in bindings(main) if is_call_to(b.value, TO_VDEVICE)]
    copied = sorted(
        (b.value.args[0].name, int(b.var.ty.vdevice.vdevice_id)) for b in copies
    )
    # Inputs live on cpu:0 and are read only there; matmul's output crosses once for its three
    # readers; exp, tanh and sigmoid cross back, each once.
    assert copied == [("a", 1), ("b", 0), ("c", 0), ("d", 0)]
    stages = [gv.name_hint for gv, f in split.functions_items() if gv.name_hint.startswith("stage")]
    # The schedule's stages: every operator that reads or sends a value across devices starts or
    # ends one (tvm_place.schedule.stage_of), so exp, tanh and sigmoid each leave on their own.
    expected = ["stage0_cpu0", "stage1_cpu1", "stage2_cpu1", "stage3_cpu1", "stage4_cpu0", "stage5_cpu0"]
    assert sorted(stages) == expected
    plan = stage_plan(split)
    assert plan.num_copies == 4
    assert [s["stage"] for s in plan.steps if s["kind"] == "call"] == expected


def test_split_has_no_copies_when_everything_shares_a_device():
    module = prepare_pipeline()(FanOut)
    num_ops = len(collect_op_graph(module).graph)
    split = tvm.transform.Sequential([AnnotatePlacement([0] * num_ops, TWO_CPUS), SplitByDevice()])(
        module
    )
    assert not [b for b in bindings(split["main"]) if is_call_to(b.value, TO_VDEVICE)]


def test_split_requires_annotation():
    with pytest.raises(InvalidPlacementError, match="AnnotatePlacement"):
        SplitByDevice()(prepare_pipeline()(FanOut))


def test_split_runs_and_matches_unsplit_numerics():
    module = unfused(FanOut)
    device_of = [0, 1, 1, 1, 0, 1]
    split = tvm.transform.Sequential([AnnotatePlacement(device_of, TWO_CPUS), SplitByDevice()])(
        module
    )
    plan, executables = build_stages(split)
    from tvm_place.runtime.placed import PlacedModule

    placed = PlacedModule(
        plan, executables, [{"name": "cpu:0", "kind": "cpu", "index": 0}, {"name": "cpu:1", "kind": "cpu", "index": 1}]
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16)).astype("float32")
    w = rng.standard_normal((16, 16)).astype("float32")
    reference = relax.VirtualMachine(tvm.compile(FanOut, target="llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x), tvm.runtime.tensor(w)
    )
    assert np.abs(placed(x, w).numpy() - reference.numpy()).max() <= 1e-5


def _cuda_kernel_names(executable) -> set[str]:
    """Names of the CUDA kernels inside a built executable (empty if it has no CUDA module)."""
    names: set[str] = set()

    def walk(module):
        if module.kind == "cuda":
            names.update(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)", module.inspect_source()))
        for imported in module.imports:
            walk(imported)

    walk(executable.mod)
    return names


def _llvm_function_names(executable) -> str:
    """The LLVM IR of the host module (where CPU kernels live)."""
    sources = []

    def walk(module):
        if module.kind == "llvm":
            sources.append(module.inspect_source())
        for imported in module.imports:
            walk(imported)

    walk(executable.mod)
    return "\n".join(sources)


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_gpu_placed_ops_become_cuda_kernels_and_cpu_ops_do_not(fused):
    """The silent traps of TVM 0.27: unscheduled GPU functions and FuseTIR dropping targets."""
    module = prepare_pipeline()(FanOut) if fused else unfused(FanOut)
    num_ops = len(collect_op_graph(module).graph)
    # Alternate devices; in the unfused module `add` runs once on each device.
    device_of = [1 - i % 2 for i in range(num_ops)]
    split = tvm.transform.Sequential([AnnotatePlacement(device_of, CPU_GPU), SplitByDevice()])(module)
    plan, executables = build_stages(split)
    devices_seen = set()
    for step in plan.steps:
        if step["kind"] != "call":
            continue
        executable = executables[step["module"]]
        stage_callees = {
            b.value.args[0].name_hint
            for b in bindings(split[step["stage"]])
            if is_call_to(b.value, CALL_TIR)
        }
        kernels = _cuda_kernel_names(executable)
        devices_seen.add(step["device"])
        if step["device"] == 1:
            assert {f"{callee}_kernel" for callee in stage_callees} <= kernels, (stage_callees, kernels)
        else:
            assert not kernels, f"CPU stage {step['stage']} holds CUDA kernels {kernels}"
            host_ir = _llvm_function_names(executable)
            for callee in stage_callees:
                assert re.search(rf"define .*@__tvm_ffi_{callee}\(", host_ir), callee
    assert devices_seen == ({0, 1} if num_ops > 1 else {1})


def test_pass_pipeline_composes_in_users_sequential():
    collect = CollectOpGraph()
    prepared = tvm.transform.Sequential([prepare_pipeline(), collect])(FanOut)
    device_of = [i % 2 for i in range(len(collect.result.graph))]
    user_pipeline = tvm.transform.Sequential(
        [AnnotatePlacement(device_of, TWO_CPUS), SplitByDevice(), relax.transform.DeadCodeElimination()]
    )
    split = user_pipeline(prepared)
    assert any(gv.name_hint.startswith("stage") for gv, _ in split.functions_items())


def test_symbolic_shapes_are_costed_at_their_hints():
    @I.ir_module
    class Dynamic:
        @R.function
        def main(x: R.Tensor(("n", 8), "float32")):
            with R.dataflow():
                y = R.exp(x)
                R.output(y)
            return y

    prepared = prepare_pipeline()(Dynamic)
    with pytest.raises(UnsupportedModelError, match="'n' has no size"):
        collect_op_graph(prepared)
    small, large = (collect_op_graph(prepared, {"n": n}) for n in (4, 64))
    assert small.shape_values == {"n": 4}
    assert small.graph.nodes[0].name == large.graph.nodes[0].name == small.callees[0]
    assert small.graph.nodes[0].output_bytes == 4 * 8 * 4
    assert large.graph.nodes[0].output_bytes == 64 * 8 * 4
    # the costed kernel is the operator's PrimFunc at those sizes
    assert "T.int64(64)" in large.kernels[0].script() and "T.int64(4)" in small.kernels[0].script()


def test_unlowered_operator_gets_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="not a TIR operator"):
        collect_op_graph(FanOut)  # not legalized: R.matmul is still a Relax operator


# -- convert_conv_layout ----------------------------------------------------------------------


@I.ir_module
class ConvRelu:
    """Two NCHW convolutions with a relu between: the relu follows the new layout."""

    @R.function
    def main(x: R.Tensor((1, 8, 10, 10), "float32"), w1: R.Tensor((16, 8, 3, 3), "float32"),
             w2: R.Tensor((4, 16, 1, 1), "float32")):
        with R.dataflow():
            a = R.nn.conv2d(x, w1, padding=1)
            b = R.nn.relu(a)
            c = R.nn.conv2d(b, w2)
            R.output(c)
        return c


def _conv_layouts(mod) -> list[tuple[str, str]]:
    conv2d = tvm.ir.Op.get("relax.nn.conv2d")
    return [(str(b.value.attrs.data_layout), str(b.value.attrs.kernel_layout))
            for b in bindings(mod["main"]) if is_call_to(b.value, conv2d)]


def test_convert_conv_layout_computes_channels_last_with_the_same_outputs():
    import tvm_place
    from tvm_place.passes import convert_conv_layout

    assert convert_conv_layout(ConvRelu, "NCHW") is ConvRelu
    nhwc = convert_conv_layout(ConvRelu, "NHWC")
    assert _conv_layouts(ConvRelu) == [("NCHW", "OIHW")] * 2
    assert _conv_layouts(nhwc) == [("NHWC", "HWIO")] * 2
    # main's signature is kept: the same inputs, the same output shape
    shapes = [[int(d) for d in p.ty.shape] for p in ConvRelu["main"].params]
    assert [[int(d) for d in p.ty.shape] for p in nhwc["main"].params] == shapes
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype("float32") for shape in shapes]
    want = tvm_place.compile(ConvRelu, ["llvm"])(*inputs).numpy()
    got = tvm_place.compile(nhwc, ["llvm", "llvm"], objective="throughput")(*inputs).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown convolution layout 'NCWH'"):
        convert_conv_layout(ConvRelu, "NCWH")
