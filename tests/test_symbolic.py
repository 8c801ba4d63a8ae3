"""Models as users bring them: symbolic shapes and entry functions other than `main`.

One compile of a module with a symbolic dimension runs at any size; each run is compared with
TVM's own unsplit build of the same module at that size.
"""

import numpy as np
import pytest
import tvm
from relax_modules import unsplit
from tvm import relax
from tvm.relax.frontend import nn

import tvm_place
from tvm_place import models
from tvm_place.errors import UnsupportedModelError


class MLP(nn.Module):
    def __init__(self):
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 16)

    def forward(self, x):
        return self.fc2(nn.op.relu(self.fc1(x)))


def alternating(placed_or_num) -> np.ndarray:
    num = placed_or_num if isinstance(placed_or_num, int) else placed_or_num.problem.num_ops
    return (np.arange(num) % 2).astype(np.int64)


@pytest.fixture(scope="module")
def exported():
    mod, params = MLP().export_tvm(spec={"forward": {"x": nn.spec.Tensor(("batch", 32), "float32")}})
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal([int(d) for d in p.shape]).astype("float32") for _, p in params]
    return mod, weights


def test_nn_export_forward_with_symbolic_batch_runs_at_any_batch(exported):
    mod, weights = exported
    reference = unsplit(mod, "forward")
    solved = tvm_place.compile(mod, ["llvm", "llvm"], entry="forward", shape_hints={"batch": 8})
    num_ops = solved.problem.num_ops
    placed = tvm_place.compile(mod, ["llvm", "llvm"], entry="forward", shape_hints={"batch": 8},
                               placement=alternating(num_ops))
    assert placed.plan.num_copies > 0 and placed.plan.symbols == {"batch": [0, 0]}
    assert "costed at batch=8" in placed.report()
    rng = np.random.default_rng(1)
    for batch in (1, 7, 64):
        x = rng.standard_normal((batch, 32)).astype("float32")
        expected = reference(x, *weights)
        for module in (solved, placed):
            got = module(x, *weights).numpy()
            assert got.shape == (batch, 16)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_costs_follow_the_hint(exported):
    mod, _ = exported
    small, large = (tvm_place.compile(mod, ["llvm"], entry="forward", shape_hints={"batch": b})
                    for b in (4, 512))
    assert small.problem.graph.names == large.problem.graph.names
    assert large.problem.compute_time.sum() > 10 * small.problem.compute_time.sum()
    assert large.problem.graph.nodes[-1].output_bytes == 512 * 16 * 4


def test_llama_decoder_with_symbolic_length_runs_at_three_lengths():
    model = models.get("llama2-7b-4layers", seq_len="n", hidden=64, heads=4, ffn=128,
                       num_layers=2, max_seq_len=32)
    main = model.mod["main"]
    assert str(main.params[0].ty.shape[1]) == "n"
    reference = unsplit(model.mod)
    # Without a hint the length is costed at main's tir_var_upper_bound (32).
    placed = tvm_place.compile(model.mod, ["llvm", "llvm"], objective="throughput")
    assert placed.plan.shape_values == {"n": 32}
    assert set(placed.placement.device_of.tolist()) == {0, 1}
    rng = np.random.default_rng(2)
    for length in (3, 17, 32):
        x = rng.standard_normal((1, length, 64)).astype("float32")
        np.testing.assert_allclose(placed(x).numpy(), reference(x), rtol=1e-5, atol=1e-5)


def test_memory_is_sized_at_the_upper_bound():
    model = models.get("llama2-7b-4layers", seq_len="n", hidden=64, heads=4, ffn=128,
                       num_layers=1, max_seq_len=64)
    placed = tvm_place.compile(model.mod, ["llvm"], shape_hints={"n": 8})
    graph, problem = placed.problem.graph, placed.problem
    last = len(graph) - 1
    assert graph.nodes[last].output_bytes == 8 * 64 * 4  # costed at the hint
    assert problem.memory[last] == graph.nodes[last].param_bytes + 64 * 64 * 4  # at the bound


def arange_module():
    """A stage whose only link to the symbolic size is the size itself (``arange(n)``): it gets
    a shape parameter, which the runtime fills from the input's shape."""
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            positions = bb.emit(relax.op.arange(0, n, 1, "float32"))
            column = bb.emit(relax.op.reshape(positions, (n, 1)))
            out = bb.emit_output(relax.op.add(relax.op.exp(x), column))
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def shape_argument_module():
    mod = arange_module()
    single = tvm_place.compile(mod, ["llvm"], shape_hints={"n": 16})
    # the arange on cpu:1, alone in its stage; the rest on cpu:0
    names = single.problem.graph.names
    device_of = np.array([1 if name.startswith("arange") else 0 for name in names], dtype=np.int64)
    placed = tvm_place.compile(mod, ["llvm", "llvm"], shape_hints={"n": 16}, placement=device_of)
    return mod, placed


def test_stage_without_a_carrier_gets_a_shape_argument(shape_argument_module):
    mod, placed = shape_argument_module
    assert list(placed.plan.shape_args.values()) == [["n"]]
    reference = unsplit(mod)
    for rows in (1, 5, 40):
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype("float32")
        np.testing.assert_allclose(placed(x).numpy(), reference(x), rtol=1e-6)
        stream = placed.run_stream([x, x[: max(1, rows // 2)]])
        np.testing.assert_allclose(stream[1], reference(x[: max(1, rows // 2)]), rtol=1e-6)


def test_symbolic_plan_survives_export_and_load(shape_argument_module, tmp_path):
    mod, placed = shape_argument_module
    placed.export(tmp_path / "placed")
    loaded = tvm_place.load(tmp_path / "placed")
    assert loaded.plan.shape_values == {"n": 16} and loaded.plan.shape_args == placed.plan.shape_args
    x = np.ones((9, 4), "float32")
    np.testing.assert_allclose(loaded(x).numpy(), unsplit(mod)(x), rtol=1e-6)


@pytest.mark.xdist_group("ray")
def test_symbolic_shapes_on_ray_workers(shape_argument_module, ray_session):
    mod, placed = shape_argument_module
    reference = unsplit(mod)
    inputs = [np.full((rows, 4), 0.5, "float32") for rows in (3, 11)]
    with placed.attach_workers("ray", calibrate=False):
        for x, got in zip(inputs, placed.run_stream(inputs)):
            np.testing.assert_allclose(got, reference(x), rtol=1e-6)


def test_relax_pipeline_places_a_symbolic_module():
    mod = arange_module()
    chosen = tvm_place.pipeline(["llvm", "llvm"], shape_hints={"n": 16}, placement=[1, 0, 0])
    executable = tvm.compile(mod, relax_pipeline=chosen)
    assert "costed at n=16" in chosen.report()
    vm = relax.VirtualMachine(executable, tvm_place.devices_of(executable))
    for rows in (2, 33):
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype("float32")
        np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), unsplit(mod)(x), rtol=1e-6)


@pytest.mark.parametrize("hints, message", [
    ({"m": 4}, r"shape hints name \['m'\].*symbolic dimensions: \['batch'\]"),
    ({"batch": 0}, "positive integer"),
    ({"batch": "8"}, "positive integer"),
])
def test_bad_shape_hints(exported, hints, message):
    mod, _ = exported
    with pytest.raises(UnsupportedModelError, match=message):
        tvm_place.compile(mod, ["llvm"], entry="forward", shape_hints=hints)


def test_hint_outside_the_bounds():
    model = models.get("llama2-7b-4layers", seq_len="n", hidden=64, heads=4, ffn=128,
                       num_layers=1, max_seq_len=32)
    with pytest.raises(UnsupportedModelError, match=r"n=64 is outside the function's bounds \[1, 32\]"):
        tvm_place.compile(model.mod, ["llvm"], shape_hints={"n": 64})


def test_missing_entry_names_the_functions(exported):
    mod, _ = exported
    with pytest.raises(UnsupportedModelError, match=r"no function 'main'.*entry='forward'"):
        tvm_place.compile(mod, ["llvm"], shape_hints={"batch": 2})
    with pytest.raises(UnsupportedModelError, match="no function 'decode'"):
        tvm_place.compile(mod, ["llvm"], entry="decode")


class MergedBatch(nn.Module):
    """A static batch of 2 merged into a symbolic length: a kernel whose buffer has the
    dimension ``n * 2``, and a gather whose kernel takes the length as a scalar argument."""

    def __init__(self):
        self.table = nn.Parameter((50, 8), "float32")

    def forward(self, tokens, x):
        rows = nn.op.take(self.table, nn.op.reshape(tokens, (-1,)), axis=0)
        return nn.op.reshape(nn.op.exp(x), (-1, 8)) + rows


def test_kernels_with_expressions_of_a_symbolic_dimension_are_costed_and_run_at_any_size():
    spec = {"forward": {"tokens": nn.spec.Tensor((2, "n"), "int64"), "x": nn.spec.Tensor((2, "n", 8), "float32")}}
    mod, params = MergedBatch().export_tvm(spec=spec)
    table = np.random.default_rng(0).standard_normal((50, 8)).astype("float32")
    reference = unsplit(mod, "forward")
    solved = tvm_place.compile(mod, ["llvm", "llvm"], entry="forward", shape_hints={"n": 6})
    placed = tvm_place.compile(mod, ["llvm", "llvm"], entry="forward", shape_hints={"n": 6},
                               placement=alternating(solved))
    assert placed.plan.num_copies > 0
    rng = np.random.default_rng(1)
    for n in (1, 4, 11):
        tokens = rng.integers(0, 50, (2, n))
        x = rng.standard_normal((2, n, 8)).astype("float32")
        expected = reference(tokens, x, table)
        for module in (solved, placed):
            np.testing.assert_allclose(module(tokens, x, table).numpy(), expected, rtol=1e-5, atol=1e-6)
