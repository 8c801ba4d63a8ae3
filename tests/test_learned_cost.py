"""The learned cost model (issue 18): kernel features, the shipped model file, held-out models,
fallback for untrained targets, and placement regret."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import tvm

from tvm_place import models
from tvm_place.compiler import prepare
from tvm_place.cost import AnalyticalCostModel, LearnedCostModel
from tvm_place.cost.learned import FEATURES, MODEL_DIR, BoostedTrees, kernel_features, model_name
from tvm_place.errors import TvmPlaceError
from tvm_place.evaluate import evaluate, regret
from tvm_place.graph import Device, OpGraph, OpNode, PlacementProblem
from tvm_place.passes import collect_op_graph
from tvm_place.targets import resolve_targets

train_cost_model = importlib.import_module("train_cost_model")
table_cost_model = importlib.import_module("table_cost_model")

SHIPPED = sorted(MODEL_DIR.glob("*.json"))


def _model(path=None) -> dict:
    return json.loads((path or SHIPPED[0]).read_text())


@pytest.fixture(scope="module")
def tiny():
    """A small ResNet's collected graph (a few kernels)."""
    return collect_op_graph(prepare(models.get("resnet18", batch=1, image_size=32, width=8,
                                               num_classes=10).mod))


def _device(target: dict, profile: str = "local-cpu"):
    (device,) = resolve_targets([target], [profile])
    return device


def test_features_are_deterministic_and_tell_kernels_apart(tiny):
    again = collect_op_graph(prepare(models.get("resnet18", batch=1, image_size=32, width=8,
                                                num_classes=10).mod))
    rows = [kernel_features(k, n) for k, n in zip(tiny.kernels, tiny.graph.nodes)]
    assert all(len(r) == len(FEATURES) and np.isfinite(r).all() for r in rows)
    assert all(np.array_equal(r, kernel_features(k, n))
               for r, k, n in zip(rows, again.kernels, again.graph.nodes))
    conv = next(r for r, n in zip(rows, tiny.graph.nodes) if "conv2d" in n.name)
    assert conv[FEATURES.index("conv_blocks")] >= 1
    assert conv[FEATURES.index("log_reduction_extent")] > 0
    assert len({tuple(r) for r in rows}) > len(rows) // 2  # different kernels, different rows


def _matmul(weights_transposed: bool):
    """A (16, 64) x (64, 128) matmul, its weights stored (128, 64) (read in place, NT) or
    (64, 128) (strided), as a PrimFunc and its node."""
    from tvm import te

    a = te.placeholder((16, 64), name="A")
    w = te.placeholder((128, 64) if weights_transposed else (64, 128), name="W")
    k = te.reduce_axis((0, 64), name="k")
    out = te.compute((16, 128), lambda i, j: te.sum(
        a[i, k] * (w[j, k] if weights_transposed else w[k, j]), axis=k), name="matmul")
    node = OpNode("matmul", flops=2 * 16 * 64 * 128, bytes_accessed=4 * (16 * 64 + 64 * 128),
                  output_bytes=4 * 16 * 128, param_bytes=4 * 64 * 128)
    return te.create_prim_func([a, w, out]), node


def test_features_tell_a_strided_weight_read_from_one_in_place():
    """The innermost (reduction) loop walks W[k, j] 128 elements a step, W[j, k] one."""
    strided, in_place = (kernel_features(*_matmul(t)) for t in (False, True))
    stride, count = FEATURES.index("log_inner_read_stride"), FEATURES.index("inner_strided_reads")
    assert strided[stride] == pytest.approx(np.log1p(128)) and strided[count] == 1
    assert in_place[stride] == pytest.approx(np.log1p(1)) and in_place[count] == 0
    assert strided[FEATURES.index("log_inner_strided_bytes")] == pytest.approx(np.log1p(4 * 64 * 128))
    others = [i for i, f in enumerate(FEATURES) if "inner_" not in f]
    assert np.array_equal(strided[others], in_place[others])  # nothing else tells them apart


def test_some_model_is_shipped():
    assert SHIPPED, "no learned model shipped in tvm_place/cost/learned/"


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda path: path.stem)
def test_shipped_model_loads_and_predicts_positive_times(shipped, tiny, models_here):
    data = _model(shipped)
    assert data["features"] == list(FEATURES)
    target = tvm.target.Target(data["target"])
    assert shipped.stem == model_name(target)
    device = _device({"kind": "llvm", "mcpu": str(target.attrs["mcpu"])})
    learned = LearnedCostModel(directory=models_here)
    assert learned.has_model(device)
    for kernel, node in zip(tiny.kernels, tiny.graph.nodes):
        seconds, source = learned.op_time(kernel, node, device)
        assert source == "learned" and 0 < seconds < 10 and np.isfinite(seconds)


def _dataset(shipped) -> dict:
    """The dataset the shipped model ``shipped`` was fitted on (one per CPU)."""
    return json.loads(train_cost_model.dataset_path(shipped.stem).read_text())


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda path: path.stem)
def test_tree_evaluator_reproduces_xgboost(shipped):
    """The package's evaluator gives the trained booster's predictions (saved by the trainer)."""
    dataset = _dataset(shipped)
    assert model_name(tvm.target.Target(json.loads(dataset["target"]))) == shipped.stem
    rows = np.array([r["features"] for r in dataset["records"]])
    ours = BoostedTrees.load(shipped).predict(rows)
    theirs = np.array([r["xgboost_log_seconds"] for r in dataset["records"]])
    assert np.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda path: path.stem)
def test_held_out_models_never_trained_on(shipped):
    dataset = _dataset(shipped)
    architecture = lambda label: label.split("[")[0]  # noqa: E731
    held_out = {architecture(m) for m in dataset["held_out"]}
    held_out |= {r for name in list(held_out) for r in train_cost_model.RELATIVES.get(name, ())}
    assert held_out >= {name for name, _, role in table_cost_model.FULL if role == "test"}
    trained = {architecture(r["model"]) for r in dataset["records"] if r["role"] == "train"}
    assert trained and not trained & held_out
    assert not {architecture(m) for m in _model(shipped)["training"]["models"]} & held_out
    assert {r["model"] for r in dataset["records"] if r["role"] == "held-out"} == \
        set(dataset["held_out"])


def test_untrained_targets_fall_back(tiny, tmp_path, models_here):
    node, kernel = tiny.graph.nodes[0], tiny.kernels[0]
    analytical = AnalyticalCostModel()
    other_cpu = _device({"kind": "llvm", "mcpu": "skylake-avx512"})
    gpu = _device({"kind": "cuda", "arch": "sm_80"}, "a100")
    learned = LearnedCostModel(directory=models_here)
    for device in (other_cpu, gpu):
        assert not learned.has_model(device)
        assert learned.op_time(kernel, node, device) == analytical.op_time(kernel, node, device)
    from tvm_place.cost.measured import cpu_threads

    other_threads = tmp_path / "threads"  # this CPU's model, trained at another thread count
    other_threads.mkdir()
    (other_threads / SHIPPED[0].name).write_text(json.dumps({**_model(),
                                                             "threads": cpu_threads() + 1}))
    cpu = _device({"kind": "llvm", "mcpu": str(tvm.target.Target(_model()["target"]).attrs["mcpu"])})
    assert LearnedCostModel(directory=other_threads).op_time(kernel, node, cpu) == \
        analytical.op_time(kernel, node, cpu)
    (tmp_path / "empty").mkdir()
    empty = LearnedCostModel(directory=tmp_path / "empty")  # no model: every target falls back
    assert empty.op_time(kernel, node, cpu)[1] == "analytical"
    assert LearnedCostModel(directory=models_here).op_time(kernel, node, cpu)[1] == "learned"


def test_bad_model_file_is_a_clear_error(tmp_path):
    data = _model()
    data["trees"][0]["left"][0] = 10 ** 6
    bad = tmp_path / "llvm-bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(TvmPlaceError, match="child that is not there"):
        BoostedTrees.load(bad)
    data["trees"][0]["left"][0] = _model()["trees"][0]["left"][0]
    data["trees"][2]["threshold"][1] = "0.5"  # items are checked too, at the item
    bad.write_text(json.dumps(data))
    with pytest.raises(TvmPlaceError, match=r"trees\[2\]\.threshold\[1\]: not a number"):
        BoostedTrees.load(bad)
    data["trees"][2]["threshold"][1] = _model()["trees"][2]["threshold"][1]
    bad.write_text(json.dumps({**data, "linear": {"features": ["no such feature"],
                                                  "coefficients": [1.0]}}))
    with pytest.raises(TvmPlaceError, match="linear: names features the model has not"):
        BoostedTrees.load(bad)
    bad.write_text(json.dumps({**data, "format": "something else"}))
    with pytest.raises(TvmPlaceError, match="learned cost model"):
        BoostedTrees.load(bad)


def test_trees_follow_xgboost_rule():
    """One split: left where x < threshold, the missing side by default_left; base added."""
    trees = BoostedTrees({"features": ["a", "b"], "base_score": 1.0, "trees": [
        {"feature": [1, -1, -1], "threshold": [0.5, 0, 0], "left": [1, -1, -1],
         "right": [2, -1, -1], "default_left": [False, False, False], "value": [0, -2.0, 3.0]}]})
    rows = np.array([[0.0, 0.4], [0.0, 0.5], [0.0, np.nan]])
    assert trees.predict(rows).tolist() == [-1.0, 4.0, 4.0]
    based = BoostedTrees({**trees.data, "linear": {"features": ["a"], "coefficients": [0.5]}})
    rows[:, 0] = [2.0, 4.0, 6.0]  # the linear base adds 0.5 x a; the trees read b as before
    assert based.predict(rows).tolist() == [0.0, 6.0, 7.0]


def test_cross_validation_reads_training_records_only(tmp_path, capsys):
    """``cv`` leaves each architecture out in turn and never reads a held-out record."""
    pytest.importorskip("xgboost")
    dataset = _dataset(SHIPPED[0])
    small = {"resnet18", "vgg16", "two-tower"}
    dataset["records"] = [r for r in dataset["records"] if r["role"] == "held-out"
                          or train_cost_model.architecture(r["model"]) in small]
    path = tmp_path / "dataset.json"

    def cv() -> str:
        path.write_text(json.dumps(dataset))
        train_cost_model.main(["cv", "--dataset", str(path)])
        return capsys.readouterr().err

    first = cv()
    assert "cross-validated (" in first and "resnet18[image_size=32]" in first
    assert "t5-base" not in first
    for record in dataset["records"]:
        if record["role"] == "held-out":
            record["seconds"] *= 1000.0
    assert cv() == first
    with pytest.raises(SystemExit, match="no feature"):
        train_cost_model.main(["cv", "--dataset", str(path), "--without", "nonsense"])


def _chain(costs_a, costs_b, transfer=0.0) -> PlacementProblem:
    n = len(costs_a)
    graph = OpGraph([OpNode(f"op{i}") for i in range(n)], [(i, i + 1) for i in range(n - 1)])
    return PlacementProblem(graph=graph, devices=[Device("cpu:0"), Device("cpu:1")],
                            compute_time=np.array([costs_a, costs_b]).T,
                            transfer_time=np.full((n, 2), transfer))


def test_regret_zero_when_models_agree_positive_when_worse():
    from tvm_place.solvers import solve

    measured = _chain([1.0, 5.0, 1.0], [2.0, 1.0, 2.0])
    reference = solve(measured, "latency", "auto", 5.0)
    predicted = _chain([1.0, 5.0, 1.0], [2.0, 1.0, 2.0])  # a model that agrees
    assert regret(measured, solve(predicted, "latency", "auto", 5.0), reference, "latency") == 0
    wrong = _chain([1.0, 0.5, 1.0], [2.0, 1.0, 2.0])  # thinks op1 is cheap on cpu:0
    placement = solve(wrong, "latency", "auto", 5.0)
    assert placement.device_of.tolist() == [0, 0, 0]
    assert evaluate(measured, reference).latency == pytest.approx(3.0)
    assert regret(measured, placement, reference, "latency") == pytest.approx(7.0 / 3.0 - 1)
    assert regret(measured, np.array([0, 1, 0]), reference, "latency") == 0
