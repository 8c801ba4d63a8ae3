"""Each pass of tvm-place tested the way TVM tests its own passes (tests/python/relax/): a tiny
module `Before`, the pass, the module `Expected` written out by hand, and
`tvm.ir.assert_structural_equal`.

The passes chain as they do in `tvm_place.compile`, so each test's `Before` is the `Expected` of
the pass before it: AnnotatePlacement, then SplitByDevice, then the stage modules of
build_stages or the multi-device lowering of `tvm_place.pipeline`.

Two of them give data rather than a module, and their results are compared with the expected
data instead: CollectOpGraph (an analysis: the operator graph of `main`) and stage_plan (the
steps of a split `main` that the runtime executes).

The operators are external calls (``R.call_dps_packed``), which tvm-place places as it places
``call_tir`` kernels, so most modules need no PrimFunc; the passes that act on PrimFuncs get one
small kernel.
"""

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_place.passes import (
    AnnotatePlacement,
    CollectOpGraph,
    SplitByDevice,
    convert_conv_layout,
    device_module,
    stage_plan,
)
from tvm_place.passes.multi_device import bind_prim_func_targets, copy_constants, inline_stages

TWO_CPUS = [tvm.target.Target("llvm"), tvm.target.Target("llvm")]
CPU_GPU = [tvm.target.Target("llvm"), tvm.target.Target({"kind": "cuda", "arch": "sm_80"})]


# -- AnnotatePlacement ---------------------------------------------------------------------------


@I.ir_module
class Unplaced:
    """exp, then tanh of it (hinted onto a GPU by the user), then their sum."""

    @R.function
    def main(x: R.Tensor((4,), "float32")):
        with R.dataflow():
            a = R.call_dps_packed("kernel_exp", (x,), out_ty=R.Tensor((4,), "float32"))
            hinted = R.hint_on_device(a, R.device(2, 0))
            c = R.call_dps_packed("kernel_tanh", (hinted,), out_ty=R.Tensor((4,), "float32"))
            d = R.call_dps_packed("kernel_add", (a, c), out_ty=R.Tensor((4,), "float32"))
            R.output(d)
        return d


@I.ir_module
class Annotated:
    """`Unplaced` with exp and the sum on cpu:0 and tanh on cpu:1; the hint is gone."""

    I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice("llvm", 1)]})

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32", "llvm:0"):
        with R.dataflow():
            a = R.call_dps_packed("kernel_exp", (x,), out_ty=R.Tensor((4,), "float32", "llvm:0"))
            c = R.call_dps_packed("kernel_tanh", (a,), out_ty=R.Tensor((4,), "float32", "llvm:1"))
            d = R.call_dps_packed("kernel_add", (a, c), out_ty=R.Tensor((4,), "float32", "llvm:0"))
            R.output(d)
        return d


def test_annotate_placement_writes_vdevices_and_drops_hints():
    tvm.ir.assert_structural_equal(AnnotatePlacement([0, 1, 0], TWO_CPUS)(Unplaced), Annotated)


# -- CollectOpGraph (an analysis: compared as data) ----------------------------------------------


@I.ir_module
class TwoKernels:
    """A kernel applied twice, the second time to a hinted value: an edge and a pin."""

    @T.prim_func(private=True)
    def add_one(x: T.Buffer((T.int64(4),), "float32"), y: T.Buffer((T.int64(4),), "float32")):
        for i in range(T.int64(4)):
            y[i] = x[i] + T.float32(1)

    @R.function
    def main(x: R.Tensor((4,), "float32")):
        cls = TwoKernels
        with R.dataflow():
            a = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4,), "float32"))
            hinted = R.hint_on_device(a, R.device(2, 0))
            b = R.call_tir(cls.add_one, (hinted,), out_ty=R.Tensor((4,), "float32"))
            R.output(b)
        return b


def test_collect_op_graph_reads_operators_edges_sizes_and_pins():
    collect = CollectOpGraph()
    tvm.ir.assert_structural_equal(collect(TwoKernels), TwoKernels)  # an analysis: unchanged
    collected = collect.result
    graph = collected.graph
    assert graph.names == ["add_one", "add_one#1"]
    assert graph.edges.tolist() == [[0, 1]]
    assert [(n.flops, n.output_bytes, n.bytes_accessed) for n in graph.nodes] == [(4, 16, 32)] * 2
    assert collected.input_names == ["x"]
    assert collected.pins == {0: ("gpu", 0)}  # the producer of the hinted value


# -- SplitByDevice -------------------------------------------------------------------------------


@I.ir_module
class Split:
    """`Annotated` cut into three stages, a copy wherever a value changes device."""

    I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice("llvm", 1)]})

    @R.function(private=True)
    def stage0_cpu0(x: R.Tensor((4,), "float32")) -> R.Tuple(R.Tensor((4,), "float32", "llvm:0")):
        R.func_attr({"tvm_place.device": 0, "tvm_place.stage": 0})
        with R.dataflow():
            a = R.call_dps_packed("kernel_exp", (x,), out_ty=R.Tensor((4,), "float32", "llvm:0"))
            result = (a,)
            R.output(result)
        return result

    @R.function(private=True)
    def stage1_cpu1(
        a: R.Tensor((4,), "float32", "llvm:1"),
    ) -> R.Tuple(R.Tensor((4,), "float32", "llvm:1")):
        R.func_attr({"tvm_place.device": 1, "tvm_place.stage": 1})
        with R.dataflow():
            c = R.call_dps_packed("kernel_tanh", (a,), out_ty=R.Tensor((4,), "float32", "llvm:1"))
            result = (c,)
            R.output(result)
        return result

    @R.function(private=True)
    def stage2_cpu0(
        a: R.Tensor((4,), "float32", "llvm:0"), c: R.Tensor((4,), "float32", "llvm:0")
    ) -> R.Tuple(R.Tensor((4,), "float32", "llvm:0")):
        R.func_attr({"tvm_place.device": 0, "tvm_place.stage": 2})
        with R.dataflow():
            d = R.call_dps_packed("kernel_add", (a, c), out_ty=R.Tensor((4,), "float32", "llvm:0"))
            result = (d,)
            R.output(result)
        return result

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32", "llvm:0"):
        cls = Split
        stage0 = cls.stage0_cpu0(x)
        a = stage0[0]
        a_to_cpu1 = R.to_vdevice(a, "llvm:1")
        stage1 = cls.stage1_cpu1(a_to_cpu1)
        c = stage1[0]
        c_to_cpu0 = R.to_vdevice(c, "llvm:0")
        stage2 = cls.stage2_cpu0(a, c_to_cpu0)
        d = stage2[0]
        return d


def test_split_by_device_cuts_stages_joined_by_copies():
    tvm.ir.assert_structural_equal(SplitByDevice()(Annotated), Split)


# -- build: the module of one stage, and the plan (data) -----------------------------------------


@I.ir_module
class DeviceCpu0:
    """`Split`'s stages on cpu:0 as one module, as build_stages compiles it: each stage a function
    of its own name, no vdevices left."""

    @R.function
    def stage0_cpu0(x: R.Tensor((4,), "float32")) -> R.Tuple(R.Tensor((4,), "float32")):
        with R.dataflow():
            a = R.call_dps_packed("kernel_exp", (x,), out_ty=R.Tensor((4,), "float32"))
            result = (a,)
            R.output(result)
        return result

    @R.function
    def stage2_cpu0(
        a: R.Tensor((4,), "float32"), c: R.Tensor((4,), "float32")
    ) -> R.Tuple(R.Tensor((4,), "float32")):
        with R.dataflow():
            d = R.call_dps_packed("kernel_add", (a, c), out_ty=R.Tensor((4,), "float32"))
            result = (d,)
            R.output(result)
        return result


def test_device_module_holds_a_devices_stages_by_name_without_vdevices():
    module = device_module(Split, ["stage0_cpu0", "stage2_cpu0"], TWO_CPUS[0])
    tvm.ir.assert_structural_equal(module, DeviceCpu0)


def test_stage_plan_lists_the_calls_and_copies_of_the_split_main():
    plan = stage_plan(Split)
    assert plan.inputs == ["x"] and plan.outputs == ["d"] and not plan.output_is_tuple
    assert plan.steps == [
        {"kind": "call", "stage": "stage0_cpu0", "device": 0, "module": "cpu0", "args": ["x"],
         "outputs": ["a"]},
        {"kind": "copy", "source": "a", "result": "a_to_cpu1", "device": 1},
        {"kind": "call", "stage": "stage1_cpu1", "device": 1, "module": "cpu1", "args": ["a_to_cpu1"],
         "outputs": ["c"]},
        {"kind": "copy", "source": "c", "result": "c_to_cpu0", "device": 0},
        {"kind": "call", "stage": "stage2_cpu0", "device": 0, "module": "cpu0", "args": ["a", "c_to_cpu0"],
         "outputs": ["d"]},
    ]
    assert [(d["target"], d["index"]) for d in plan.devices] == [("llvm", 0), ("llvm", 1)]
    assert plan.externals == ["kernel_add", "kernel_exp", "kernel_tanh"]
    assert plan.input_types == [{"shape": [4], "dtype": "float32"}]


# -- multi_device: one VM executable for all devices ---------------------------------------------


@I.ir_module
class Inlined:
    """`Split` with its stages inlined back into `main`, the copies kept."""

    I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice("llvm", 1)]})

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32", "llvm:0"):
        a = R.call_dps_packed("kernel_exp", (x,), out_ty=R.Tensor((4,), "float32", "llvm:0"))
        a_to_cpu1 = R.to_vdevice(a, "llvm:1")
        c = R.call_dps_packed("kernel_tanh", (a_to_cpu1,), out_ty=R.Tensor((4,), "float32", "llvm:1"))
        c_to_cpu0 = R.to_vdevice(c, "llvm:0")
        d = R.call_dps_packed("kernel_add", (a, c_to_cpu0), out_ty=R.Tensor((4,), "float32", "llvm:0"))
        return d


def test_inline_stages_gives_one_flat_main_with_the_copies():
    tvm.ir.assert_structural_equal(inline_stages(Split), Inlined)


@I.ir_module
class KernelOnTwoDevices:
    """One kernel called on the CPU, then on the GPU, there once on a constant."""

    I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice({"kind": "cuda", "arch": "sm_80"}, 0)]})

    @T.prim_func(private=True)
    def add_one(x: T.Buffer((T.int64(4),), "float32"), y: T.Buffer((T.int64(4),), "float32")):
        for i in range(T.int64(4)):
            y[i] = x[i] + T.float32(1)

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32", "cuda:0"):
        cls = KernelOnTwoDevices
        with R.dataflow():
            a = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4,), "float32", "llvm:0"))
            b = R.call_tir(cls.add_one, (a,), out_ty=R.Tensor((4,), "float32", "cuda:0"))
            c = R.call_tir(cls.add_one, (R.const(np.ones(4, "float32")),), out_ty=R.Tensor((4,), "float32", "cuda:0"))
            R.output(c)
        return c


@I.ir_module
class KernelPerTarget:
    """`KernelOnTwoDevices` with the kernel bound to each target it runs on: a copy for the GPU."""

    I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice({"kind": "cuda", "arch": "sm_80"}, 0)]})

    @T.prim_func(private=True)
    def add_one(x: T.Buffer((T.int64(4),), "float32"), y: T.Buffer((T.int64(4),), "float32")):
        T.func_attr({"target": T.target("llvm")})
        for i in range(T.int64(4)):
            y[i] = x[i] + T.float32(1)

    @T.prim_func(private=True)
    def add_one_cuda0(x: T.Buffer((T.int64(4),), "float32"), y: T.Buffer((T.int64(4),), "float32")):
        T.func_attr({"target": T.target({"kind": "cuda", "arch": "sm_80"})})
        for i in range(T.int64(4)):
            y[i] = x[i] + T.float32(1)

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32", "cuda:0"):
        cls = KernelPerTarget
        with R.dataflow():
            a = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4,), "float32", "llvm:0"))
            b = R.call_tir(cls.add_one_cuda0, (a,), out_ty=R.Tensor((4,), "float32", "cuda:0"))
            c = R.call_tir(cls.add_one_cuda0, (R.const(np.ones(4, "float32")),), out_ty=R.Tensor((4,), "float32", "cuda:0"))
            R.output(c)
        return c


def test_bind_prim_func_targets_gives_each_call_its_devices_kernel():
    tvm.ir.assert_structural_equal(bind_prim_func_targets(KernelOnTwoDevices), KernelPerTarget)


@I.ir_module
class ConstantCopied:
    """`KernelOnTwoDevices` with the GPU call's constant copied to the GPU first (the VM puts
    every constant on the first device)."""

    I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice({"kind": "cuda", "arch": "sm_80"}, 0)]})

    @T.prim_func(private=True)
    def add_one(x: T.Buffer((T.int64(4),), "float32"), y: T.Buffer((T.int64(4),), "float32")):
        for i in range(T.int64(4)):
            y[i] = x[i] + T.float32(1)

    @R.function
    def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32", "cuda:0"):
        cls = ConstantCopied
        with R.dataflow():
            a = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4,), "float32", "llvm:0"))
            b = R.call_tir(cls.add_one, (a,), out_ty=R.Tensor((4,), "float32", "cuda:0"))
            # A plain Var (an output of the block), so that later blocks may read it too.
            const0_to_dev1 = R.to_vdevice(R.const(np.ones(4, "float32")), "cuda:0")
            c = R.call_tir(cls.add_one, (const0_to_dev1,), out_ty=R.Tensor((4,), "float32", "cuda:0"))
            R.output(c, const0_to_dev1)
        return c


def test_copy_constants_copies_a_constant_to_the_device_that_reads_it():
    tvm.ir.assert_structural_equal(copy_constants(KernelOnTwoDevices), ConstantCopied)


# -- convert_conv_layout -------------------------------------------------------------------------


@I.ir_module
class ConvNCHW:
    @R.function
    def main(x: R.Tensor((1, 8, 10, 10), "float32"), w: R.Tensor((16, 8, 3, 3), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, padding=1)
            z = R.nn.relu(y)
            R.output(z)
        return z


@I.ir_module
class ConvNHWC:
    """The convolution channels-last with HWIO weights; the relu follows the new layout; `main`
    still takes and returns NCHW."""

    @R.function
    def main(x: R.Tensor((1, 8, 10, 10), "float32"), w: R.Tensor((16, 8, 3, 3), "float32")):
        with R.dataflow():
            x_nhwc = R.permute_dims(x, axes=[0, 2, 3, 1])
            w_hwio = R.permute_dims(w, axes=[2, 3, 1, 0])
            y = R.nn.conv2d(x_nhwc, w_hwio, padding=1, data_layout="NHWC", kernel_layout="HWIO")
            relu = R.nn.relu(y)
            z = R.permute_dims(relu, axes=[0, 3, 1, 2])
            R.output(z)
        return z


def test_convert_conv_layout_makes_convolutions_channels_last():
    tvm.ir.assert_structural_equal(convert_conv_layout(ConvNCHW, "NHWC"), ConvNHWC)
    assert convert_conv_layout(ConvNCHW, "NCHW") is ConvNCHW
