"""tvm_place.compile end to end on real models from the registry, against the unsplit TVM build."""

import json

import numpy as np
import pytest
import tvm
from relax_modules import unsplit
from tvm import relax

import tvm_place
from tvm_place import models
from tvm_place.compiler import prepare
from tvm_place.errors import (
    InfeasibleError,
    InvalidTargetError,
    TvmPlaceError,
    UnsupportedModelError,
)
from tvm_place.passes import collect_op_graph
from tvm_place.passes._ir import TO_VDEVICE, bindings, is_call_to

#: Small sizes so each model compiles in seconds; the architecture is the real one.
SMALL = {
    "resnet18": dict(image_size=32),
    "bert-layer": dict(seq_len=8, hidden=64, heads=4, ffn=128),
    "torch-cnn": {},
    "onnx-cnn": {},
}


def build(name):
    if name == "torch-cnn":
        pytest.importorskip("torch")
    return models.get(name, **SMALL[name])


def split_in_two(mod) -> np.ndarray:
    """A contiguous placement: the first half of the operators on cpu:0, the rest on cpu:1."""
    num_ops = len(collect_op_graph(prepare(mod)).graph)
    return (np.arange(num_ops) >= num_ops // 2).astype(np.int64)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_two_cpu_devices_match_unsplit_build(name):
    model = build(name)
    reference = unsplit(model.mod)(*model.inputs)
    forced = tvm_place.compile(model.mod, ["llvm", "llvm"], placement=split_in_two(model.mod))
    assert set(forced.placement.device_of.tolist()) == {0, 1}
    copies = [b for b in bindings(forced.split_module["main"]) if is_call_to(b.value, TO_VDEVICE)]
    assert copies, "a placement across two devices must copy between them"
    assert np.abs(forced(*model.inputs).numpy() - reference).max() <= 1e-5

    solved = tvm_place.compile(model.mod, ["llvm", "llvm"], objective="latency")
    assert np.abs(solved(*model.inputs).numpy() - reference).max() <= 1e-5
    assert solved.placement.lower_bound <= solved.placement.value


def test_throughput_placement_runs_and_reports_bound_and_gap():
    model = build("bert-layer")
    placed = tvm_place.compile(model.mod, ["llvm", "llvm"], objective="throughput")
    report = placed.report()
    for field in ("objective      throughput", "lower bound", "gap", "cpu:0", "cpu:1", "copies"):
        assert field in report
    assert np.abs(placed(*model.inputs).numpy() - unsplit(model.mod)(*model.inputs)).max() <= 1e-5


def test_cpu_gpu_builds_with_gpu_kernels_for_gpu_ops():
    model = build("resnet18")
    placed = tvm_place.compile(model.mod, ["llvm", "cuda"], objective="throughput")
    gpu_stages = [s for s in placed.plan.steps if s["kind"] == "call" and s["device"] == 1]
    assert gpu_stages, "the A100 profile is far faster than this CPU: something belongs on it"
    for step in gpu_stages:
        kinds = []

        def walk(module):
            kinds.append(module.kind)
            for imported in module.imports:
                walk(imported)

        walk(placed.executables[step["module"]].mod)
        assert "cuda" in kinds
    assert "gpu:0" in placed.report()


def test_export_and_load_round_trip(tmp_path):
    model = build("onnx-cnn")
    placed = tvm_place.compile(model.mod, ["llvm", "llvm"], placement=split_in_two(model.mod))
    placed.export(tmp_path / "artifacts")
    loaded = tvm_place.load(tmp_path / "artifacts")
    expected = placed(*model.inputs).numpy()
    assert np.array_equal(loaded(*model.inputs).numpy(), expected)
    assert loaded.report() == placed.report()
    assert loaded.placement.device_of.tolist() == placed.placement.device_of.tolist()


def test_a_many_stage_placement_builds_one_executable_per_device(tmp_path, monkeypatch):
    """Issue 17: each device's stages are functions of one executable, built once, and called
    by name; the export holds a library per device and runs the same."""
    from tvm_place.passes import build as build_module

    model = build("bert-layer")
    num_ops = len(collect_op_graph(prepare(model.mod)).graph)
    alternating = np.arange(num_ops) % 2  # cuts a stage at nearly every operator
    builds = []
    compile_module = build_module.compile_module
    monkeypatch.setattr(build_module, "compile_module",
                        lambda module, target: builds.append(module) or compile_module(module, target))
    placed = tvm_place.compile(model.mod, ["llvm", "llvm"], placement=alternating)
    calls = [step for step in placed.plan.steps if step["kind"] == "call"]
    assert len(calls) > 4
    assert len(builds) == 2 and sorted(placed.executables) == ["cpu0", "cpu1"]
    for step in calls:
        assert step["module"] == f"cpu{step['device']}"
        vm = relax.VirtualMachine(placed.executables[step["module"]], tvm.cpu())
        assert vm[step["stage"]] is not None  # the stage is a function of its device's module
    reference = unsplit(model.mod)(*model.inputs)
    assert np.abs(placed(*model.inputs).numpy() - reference).max() <= 1e-5

    placed.export(tmp_path / "artifacts")
    assert sorted(p.name for p in (tmp_path / "artifacts").glob("*.so")) == ["cpu0.so", "cpu1.so"]
    loaded = tvm_place.load(tmp_path / "artifacts")
    assert np.array_equal(loaded(*model.inputs).numpy(), placed(*model.inputs).numpy())


def test_pins_by_pattern_are_honoured():
    model = build("bert-layer")
    placed = tvm_place.compile(model.mod, ["llvm", "llvm"], pins={"*matmul*": "cpu:1"})
    names = placed.problem.graph.names
    pinned = [u for u, name in enumerate(names) if "matmul" in name]
    assert pinned and all(placed.placement.device_of[u] == 1 for u in pinned)


# -- bad input -------------------------------------------------------------------------------


def test_module_without_main():
    model = build("onnx-cnn")
    renamed = tvm.IRModule({relax.GlobalVar("forward"): model.mod["main"]})
    with pytest.raises(UnsupportedModelError, match=r"no function 'main'.*pass entry='forward'"):
        tvm_place.compile(renamed, ["llvm"])
    placed = tvm_place.compile(renamed, ["llvm"], entry="forward")
    np.testing.assert_allclose(placed(*model.inputs).numpy(), unsplit(model.mod)(*model.inputs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "targets, message",
    [
        ([], "empty"),
        ("llvm", "must be a list"),
        (["nosuch"], "cannot make a target"),
        (["llvm -mcpu=native"], "bare kind"),
        (["opencl"], "places on"),
        ([42], "is a int"),
    ],
)
def test_bad_targets(targets, message):
    model = build("onnx-cnn")
    with pytest.raises(InvalidTargetError, match=message):
        tvm_place.compile(model.mod, targets)


def test_pin_to_a_device_not_in_targets():
    model = build("onnx-cnn")
    with pytest.raises(InfeasibleError, match="cuda:0.*cpu:0"):
        tvm_place.compile(model.mod, ["llvm", "llvm"], pins={"*": "cuda:0"})
    with pytest.raises(InfeasibleError, match="matches no operator"):
        tvm_place.compile(model.mod, ["llvm", "llvm"], pins={"no_such_op*": "cpu:1"})


def test_hint_to_a_device_not_in_targets():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.exp(x))
            z = bb.emit(relax.op.hint_on_device(y, tvm.cuda(0)))
            out = bb.emit_output(relax.op.tanh(z))
        bb.emit_func_output(out)
    with pytest.raises(InfeasibleError, match="hint_on_device.*gpu:0"):
        tvm_place.compile(bb.get(), ["llvm", "llvm"])


def test_symbolic_dimension_without_a_size_is_named():
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.exp(x))
        bb.emit_func_output(out)
    with pytest.raises(UnsupportedModelError, match=r"symbolic dimension 'n' has no size.*shape_hints"):
        tvm_place.compile(bb.get(), ["llvm"])


def test_every_error_is_a_tvm_place_error():
    with pytest.raises(TvmPlaceError):
        tvm_place.compile("not a module", ["llvm"])


@pytest.mark.gpu
def test_cpu_gpu_numerics_on_a_real_gpu():
    """Runs only where a CUDA GPU and driver exist (pytest -m gpu)."""
    if not tvm.cuda(0).exist:
        pytest.skip("no CUDA GPU on this machine")
    for name in ("resnet18", "bert-layer"):
        model = build(name)
        num_ops = len(collect_op_graph(prepare(model.mod)).graph)
        device_of = (np.arange(num_ops) >= num_ops // 2).astype(np.int64)
        placed = tvm_place.compile(model.mod, ["llvm", "cuda"], placement=device_of)
        error = np.abs(placed(*model.inputs).numpy() - unsplit(model.mod)(*model.inputs)).max()
        assert error <= 1e-4, (name, error)


def sort_scan_module():
    """cumsum, sort, argsort and top-k: operators TVM's pipeline lowers by its library dispatch
    (relax.backend.DispatchSortScan), not by LegalizeOps."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((6, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            running = bb.emit(relax.op.cumsum(x, axis=1))
            ordered = bb.emit(relax.op.sort(running, axis=1, descending=True))
            ranks = bb.emit(relax.op.argsort(x, axis=1))
            best = bb.emit(relax.op.topk(relax.op.multiply(ordered, ordered), k=3, axis=1))
            out = bb.emit_output(relax.Tuple([ordered, ranks, best[0], best[1]]))
        bb.emit_func_output(out)
    return bb.get()


def test_sort_scan_and_topk_place_and_match_tvm_compile():
    mod = sort_scan_module()
    x = np.random.default_rng(0).standard_normal((6, 16)).astype("float32")
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    expected = [value.numpy() for value in vm["main"](tvm.runtime.tensor(x))]
    num_ops = len(collect_op_graph(prepare(mod)).graph)
    alternate = (np.arange(num_ops) % 2).astype(np.int64)
    placed = tvm_place.compile(mod, ["llvm", "llvm"], placement=alternate)
    assert placed.plan.num_copies > 0
    got = placed(x)
    assert len(got) == len(expected)
    for value, reference in zip(got, expected):
        np.testing.assert_array_equal(value.numpy(), reference)


def test_a_kernel_the_gpu_cannot_build_falls_back_to_the_cpu(tmp_path, monkeypatch):
    """TVM's CPU sort and scan kernels get no GPU schedule (dlight has no rule for them): on a
    CPU + GPU machine they are placed on the CPU by themselves, the report says why, and the
    check is cached. Built, not run: no GPU is needed to build a CUDA kernel."""
    monkeypatch.setenv("TVM_PLACE_CACHE_DIR", str(tmp_path))
    mod = sort_scan_module()
    placed = tvm_place.compile(mod, ["llvm", "cuda"], objective="throughput")
    names = placed.problem.graph.names
    on = dict(zip(names, placed.placement.device_of.tolist()))
    fallen = {"cumsum", "sort", "argsort", "topk"}
    assert all(on[name] == 0 for name in fallen), on
    assert np.isinf(placed.problem.compute_time[[names.index(n) for n in fallen], 1]).all()
    report = placed.report()
    for name in fallen:
        assert f"fallback       {name}: not on gpu:0 (no GPU schedule applies" in report
    assert "fallback       multiply" not in report
    assert len(placed.fallbacks) == len(fallen)
    cached = json.loads((tmp_path / "kernel-support.json").read_text())
    assert sorted(bool(why) for why in cached.values()).count(True) == len(fallen)
    with pytest.raises(InfeasibleError, match=r"'sort' cannot run on any device it may use: gpu:0 cannot build it"):
        tvm_place.compile(mod, ["llvm", "cuda"], pins={"sort": "gpu:0"})
