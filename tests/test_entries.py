"""Several entry functions placed together (``entries=``): one joint placement, in which a
weight the functions share lives on one device, and each function built and run on its own,
equal to TVM's unsplit build of the same module."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_place
from tvm_place.entries import BOUNDARY, Entry, joint_problem
from tvm_place.errors import InvalidTargetError, TvmPlaceError, UnsupportedModelError
from tvm_place.evaluate import evaluate, validate
from tvm_place.graph import Device, OpGraph, OpNode, Placement, PlacementProblem
from tvm_place.runtime.placed import PlacedModule
from tvm_place.solvers.grouping import colocation_groups

MODEL_FILE = '''
from tvm.relax.frontend import nn

class Net(nn.Module):
    def __init__(self):
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)

    def prefill(self, x):
        return self.fc2(nn.op.relu(self.fc1(x)))

    def decode(self, x):
        h = self.fc2(nn.op.silu(self.fc1(x)))
        return h, nn.op.sum(h, axis=-1)

SPEC = {"prefill": {"x": nn.spec.Tensor(("n", 64), "float32")},
        "decode": {"x": nn.spec.Tensor((1, 64), "float32")}}

def model():
    return Net().export_tvm(spec=SPEC)[0]
'''


def chain(num_ops: int, compute: list[list[float]], name: str) -> PlacementProblem:
    nodes = [OpNode(f"op{u}", output_bytes=1.0) for u in range(num_ops)]
    return PlacementProblem(
        graph=OpGraph(nodes, [(u, u + 1) for u in range(num_ops - 1)]),
        devices=[Device("cpu:0"), Device("cpu:1")],
        compute_time=np.array(compute, dtype=float),
        transfer_time=np.full((num_ops, 2), 0.5),
        memory=np.array([10.0] * num_ops),
        name=name,
    )


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_joint_problem_prices_a_round_and_counts_a_shared_weight_once(objective):
    first = Entry("prefill", chain(2, [[4, 8], [2, 2]], "p"), 1.0, {"w": (1, 6.0)})
    second = Entry("decode", chain(2, [[1, 3], [1, 1]], "d"), 4.0, {"w": (0, 6.0)})
    joint = joint_problem([first, second], objective)
    boundaries = [u for u, node in enumerate(joint.graph.nodes) if node.kind == BOUNDARY]
    assert len(boundaries) == (1 if objective == "latency" else 0)
    assert joint.graph.names[second.first] == "decode/op0"
    assert joint.colour_classes == [[first.first + 1, second.first]]
    # The weight's 6 bytes count with prefill's reader only.
    assert joint.memory.sum() == pytest.approx(40.0 - 6.0)
    on_one = Placement(np.zeros(joint.num_ops, dtype=np.int64), objective, 0.0, 0.0, "given")
    validate(joint, on_one)
    got = evaluate(joint, on_one)
    alone = [evaluate(e.problem, Placement(np.zeros(2, dtype=np.int64), objective, 0.0, 0.0, "given"))
             for e in (first, second)]
    if objective == "latency":  # one after the other, decode 4 times
        assert got.latency == pytest.approx(alone[0].latency + 4 * alone[1].latency)
    else:
        assert got.max_load == pytest.approx(alone[0].max_load + 4 * alone[1].max_load)
    split = on_one.device_of.copy()
    split[second.first] = 1  # decode's reader of the weight away from prefill's
    with pytest.raises(Exception, match="must share a device"):
        validate(joint, Placement(split, objective, 0.0, 0.0, "given"))


@pytest.fixture(scope="module")
def two_functions():
    namespace: dict = {}
    exec(MODEL_FILE, namespace)  # the same model the CLI test loads from a file
    mod, params = namespace["Net"]().export_tvm(spec=namespace["SPEC"])
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal([int(d) for d in p.shape]).astype("float32") for _, p in params]
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return mod, weights, vm


def spread(problem: PlacementProblem) -> np.ndarray:
    """Colocation groups dealt over the two devices alternately: a split with copies that
    keeps every shared weight's readers together; a boundary goes with the output before it
    (elsewhere, that output's copy to it would be priced)."""
    device_of = np.zeros(problem.num_ops, dtype=np.int64)
    for position, group in enumerate(colocation_groups(problem)):
        device_of[group] = position % 2
    for u, node in enumerate(problem.graph.nodes):
        if node.kind == BOUNDARY:
            device_of[u] = device_of[problem.graph.predecessors[u][0]]
    return device_of


def outputs(value):
    return [value.numpy()] if hasattr(value, "numpy") else [v.numpy() for v in value]


def check_equal(placed, weights, vm, rng, bound=False):
    """Each function of ``placed`` equals the unsplit build (``bound``: the weights were bound,
    so calls take the data alone)."""
    for name, shapes in (("prefill", [(1, 64), (5, 64), (16, 64)]), ("decode", [(1, 64)])):
        for shape in shapes:
            x = rng.standard_normal(shape).astype("float32")
            expected = outputs(vm[name](tvm.runtime.tensor(x), *[tvm.runtime.tensor(w) for w in weights]))
            got = outputs(placed[name](x) if bound else placed[name](x, *weights))
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_two_entry_functions_share_weights_and_each_runs_equal_to_the_unsplit_build(two_functions, tmp_path):
    mod, weights, vm = two_functions
    entries = {"prefill": 1, "decode": 4}
    solved = tvm_place.compile(mod, ["llvm", "llvm"], entries=entries, shape_hints={"n": 16},
                               time_limit=5)
    placed = tvm_place.compile(mod, ["llvm", "llvm"], entries=entries, shape_hints={"n": 16},
                               placement=spread(solved.problem))
    assert sorted(placed.functions) == ["decode", "prefill"]
    prefill, decode = placed.functions["prefill"], placed.functions["decode"]
    # Every weight both functions read is charged to one operator of each, on one device.
    assert sorted(prefill.weights) == sorted(decode.weights) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    for weight in prefill.weights:
        assert (prefill.placement.device_of[prefill.weights[weight][0]]
                == decode.placement.device_of[decode.weights[weight][0]])
    assert placed.plan is None and decode.plan.num_copies > 0 and prefill.plan.symbols == {"n": [0, 0]}
    # The joint value is a round: prefill once, then decode four times.
    assert placed.placement.value == pytest.approx(
        evaluate(prefill.problem, prefill.placement).latency
        + 4 * evaluate(decode.problem, decode.placement).latency, rel=1e-9)
    report = placed.report()
    assert "decode" in report and "placed[name]" in report
    rng = np.random.default_rng(1)
    check_equal(solved, weights, vm, rng)
    check_equal(placed, weights, vm, rng)
    stream = placed["decode"].run_stream([(rng.standard_normal((1, 64)).astype("float32"), *weights)] * 3)
    assert len(stream) == 3 and stream[0][0].shape == (1, 64)
    loaded = PlacedModule.load(placed.export(tmp_path / "export"))
    assert sorted(loaded.functions) == ["decode", "prefill"]
    check_equal(loaded, weights, vm, rng)
    with pytest.raises(TvmPlaceError, match=r"several entry functions.*placed\['prefill'\]"):
        placed(np.zeros((1, 64), "float32"), *weights)
    with pytest.raises(KeyError, match="no entry function 'forward'"):
        placed["forward"]
    placed.close()


@pytest.mark.parametrize("options, error, message", [
    ({"entries": ["prefill"]}, InvalidTargetError, "two or more"),
    ({"entries": ["prefill", "decode"], "entry": "prefill"}, InvalidTargetError, "not both"),
    ({"entries": {"prefill": 1, "decode": 0}}, InvalidTargetError, "above 0"),
    ({"entries": ["prefill", "verify"]}, UnsupportedModelError, "no function 'verify'"),
    ({"entries": ["prefill", "decode"], "shape_hints": {"m": 4}}, UnsupportedModelError,
     r"\['m'\], which none of the functions"),
])
def test_bad_entries_are_clear_errors(two_functions, options, error, message):
    mod = two_functions[0]
    with pytest.raises(error, match=message):
        tvm_place.compile(mod, ["llvm", "llvm"], **{"shape_hints": {"n": 8}, **options})


def test_cli_compiles_several_entry_functions_and_runs_one(tmp_path):
    model = tmp_path / "net.py"
    model.write_text(MODEL_FILE)
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "tvm_place.cli"]
    done = subprocess.run(cli + ["compile", f"{model}:model", "--target", "llvm", "--target", "llvm",
                                 "--entry", "prefill", "--entry", "decode=8", "--shape", "n=32",
                                 "--time-limit", "5", "--output", str(out), "--json", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["functions"]) == ["decode", "prefill"]
    assert manifest["functions"]["decode"]["calls"] == 8
    ran = subprocess.run(cli + ["run", str(out), "--entry", "decode", "--repeat", "1", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["output_shape"] == [1, 64]
    missing = subprocess.run(cli + ["run", str(out)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "--entry NAME" in missing.stderr


def test_bound_weights_stay_on_the_workers_and_calls_take_the_data_only(two_functions):
    mod, weights, vm = two_functions
    problem = tvm_place.place(mod, ["llvm", "llvm"], entries={"prefill": 1, "decode": 4},
                              shape_hints={"n": 16}, method="greedy").problem
    placed = tvm_place.compile(mod, ["llvm", "llvm"], entries={"prefill": 1, "decode": 4},
                               shape_hints={"n": 16}, placement=spread(problem))
    names = placed.functions["decode"].plan.inputs[1:]
    with pytest.raises(TvmPlaceError, match="no input 'fc1.weigth'; did you mean 'fc1.weight'"):
        placed.bind({"fc1.weigth": weights[0]})
    with pytest.raises(TvmPlaceError, match=r"'fc1.weight' is float32\[128, 64\], got float32\[64, 128\]"):
        placed.bind({"fc1.weight": weights[0].T.copy()})
    placed.bind(dict(zip(names, weights)))
    check_equal(placed, weights, vm, np.random.default_rng(2), bound=True)
    # Only the data input is read from the caller: each weight is held where a stage reads it.
    assert len(placed["decode"].example_inputs()) == 1
    with pytest.raises(TypeError, match="takes 1 inputs besides its 4 bound ones"):
        placed["decode"](np.zeros((1, 64), "float32"), *weights)
    placed.close()


@pytest.mark.xdist_group("ray")
def test_entry_functions_share_ray_actors_that_hold_the_bound_weights(two_functions, ray_session):
    mod, weights, vm = two_functions
    problem = tvm_place.place(mod, ["llvm", "llvm"], entries=["prefill", "decode"],
                              shape_hints={"n": 16}, method="greedy").problem
    placed = tvm_place.compile(mod, ["llvm", "llvm"], entries=["prefill", "decode"],
                               shape_hints={"n": 16}, placement=spread(problem))
    names = placed.functions["decode"].plan.inputs[1:]
    placed.attach_workers("ray", calibrate=False)
    try:
        placed.bind(dict(zip(names, weights)))  # sent to the actors already there
        actors = {device: worker.label for device, worker in placed.workers.items()}
        assert len(actors) == 2 and all("ray actor" in label for label in actors.values())
        check_equal(placed, weights, vm, np.random.default_rng(3), bound=True)
        assert {d: w.label for d, w in placed["decode"].workers.items()} == actors
    finally:
        placed.close()
