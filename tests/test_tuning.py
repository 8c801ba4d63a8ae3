"""tvm_place.tune, the tuning database, compile(database=...), tuned costs and the untuned warning.

Trials are tiny (1-2 per kernel): these tests check the plumbing (what is tuned, where records go,
what compile and the cost model read back), not the speed of tuned kernels, which
scripts/bench_tuning.py measures.
"""

import json
import threading
import time

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm.script import relax as R

import tvm_place
from tvm_place.cli import main as cli_main
from tvm_place.compiler import prepare
from tvm_place.cost import AnalyticalCostModel, TunedCostModel
from tvm_place.errors import InvalidTargetError, UntunedKernelWarning
from tvm_place.passes import collect_op_graph
from tvm_place.passes.tuning_database import ApplyTunedSchedules, TuningDatabase, target_key, workload
from tvm_place.targets import resolve_targets

# One pytest worker runs this file, so its module-scoped tuned database is built once.
pytestmark = pytest.mark.xdist_group("tuning")


@tvm.script.ir_module
class TwoKernels:
    @R.function
    def main(x: R.Tensor((32, 64), "float32"), w: R.Tensor((64, 32), "float32")):
        with R.dataflow():
            y = R.nn.relu(R.matmul(x, w))
            z = R.sum(y, axis=1)
            R.output(z)
        return z


def inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((32, 64)).astype("float32"), rng.standard_normal((64, 32)).astype("float32")]


def kernels_of(mod) -> list[str]:
    return sorted(set(collect_op_graph(prepare(mod)).callees))


@pytest.fixture(scope="module")
def tuned_database(tmp_path_factory):
    """A database with every kernel of TwoKernels tuned for llvm (2 trials each)."""
    directory = tmp_path_factory.mktemp("tuning-db")
    result = tvm_place.tune(TwoKernels, ["llvm"], database=directory, trials=2, time_limit=300)
    return directory, result


def test_tune_records_every_kernel_the_placement_puts_on_the_cpu(tuned_database):
    directory, result = tuned_database
    (target,) = result.targets
    assert target.kernels == len(kernels_of(TwoKernels)) == 2
    assert sorted(target.newly_tuned) == kernels_of(TwoKernels) and not target.untuned
    assert target.already_tuned == 0 and 1 <= result.trials <= 4 and not result.timed_out
    llvm = resolve_targets(["llvm"])[0].target
    records = (TuningDatabase(directory).path(llvm) / "database_tuning_record.json").read_text()
    assert len(records.strip().splitlines()) == result.trials


def test_compile_with_the_database_builds_tuned_kernels_and_costs_them(tuned_database):
    directory, _ = tuned_database
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedKernelWarning)  # every kernel is tuned: no warning
        tuned = tvm_place.compile(TwoKernels, ["llvm"], database=directory)
    untuned = tvm_place.compile(TwoKernels, ["llvm"])
    np.testing.assert_allclose(tuned(*inputs()).numpy(), untuned(*inputs()).numpy(), rtol=1e-5, atol=1e-5)
    report = tuned.report()
    assert "cost sources   2 tuned (database)" in report, report
    assert sum(line.endswith("tuned (database)") for line in report.splitlines()) == 2, report
    database = TuningDatabase(directory)
    llvm = resolve_targets(["llvm"])[0].target
    prepared = prepare(TwoKernels)
    for name in kernels_of(TwoKernels):
        seconds = database.seconds(prepared[name], llvm)
        assert seconds is not None and seconds > 0
        u = collect_op_graph(prepared).callees.index(name)
        assert tuned.problem.compute_time[u, 0] == pytest.approx(seconds)


def test_second_tune_runs_no_trial_and_second_compile_builds_the_same_kernels(tuned_database):
    directory, _ = tuned_database
    again = tvm_place.tune(TwoKernels, ["llvm"], database=directory, trials=2, time_limit=300)
    (target,) = again.targets
    assert again.trials == 0 and target.already_tuned == 2 and not target.newly_tuned

    database = TuningDatabase(directory)
    llvm = resolve_targets(["llvm"])[0].target
    prepared = prepare(TwoKernels)
    first, second = (ApplyTunedSchedules(database, llvm)(prepared) for _ in range(2))
    for name in kernels_of(TwoKernels):
        assert "tirx.is_scheduled" in first[name].attrs
        assert not tvm_ffi.structural_equal(first[name], prepared[name]), "a tuned kernel changed"
        assert tvm_ffi.structural_equal(first[name], second[name])
    builds = [tvm_place.compile(TwoKernels, ["llvm"], database=directory) for _ in range(2)]
    assert builds[0].kernel_sources() == builds[1].kernel_sources()
    untuned = tvm_place.compile(TwoKernels, ["llvm"])
    assert untuned.kernel_sources() != builds[0].kernel_sources()


@pytest.mark.slow
def test_retune_searches_kernels_in_the_database_again_and_keeps_the_best(tmp_path):
    directory = tmp_path / "db"
    tvm_place.tune(TwoKernels, ["llvm"], database=directory, trials=1, time_limit=300)
    database = TuningDatabase(directory)
    llvm = resolve_targets(["llvm"])[0].target
    prepared = prepare(TwoKernels)
    names = kernels_of(TwoKernels)
    before = {name: (database.record_count(prepared[name], llvm), database.seconds(prepared[name], llvm))
              for name in names}
    assert all(count >= 1 for count, _ in before.values())
    again = tvm_place.tune(TwoKernels, ["llvm"], database=directory, trials=2, time_limit=300,
                           retune=True)
    (target,) = again.targets
    assert again.trials >= 2 and target.already_tuned == 2 and not target.newly_tuned
    database = TuningDatabase(directory)  # re-read what the search wrote
    for name in names:
        count, seconds = database.record_count(prepared[name], llvm), database.seconds(prepared[name], llvm)
        assert count > before[name][0], f"{name}: no new record"
        assert seconds <= before[name][1]  # the best record is kept
        assert (name in target.improved) == (seconds < before[name][1])
    assert "retuned faster" in again.summary() or not target.improved


def test_a_candidate_that_builds_too_long_is_a_failed_trial(monkeypatch):
    from tvm_place import tuning

    release = threading.Event()
    inputs = [tuning.ms.builder.BuilderInput(tvm.IRModule({}), tvm.target.Target("llvm"))
              for _ in range(3)]

    def build(build_input):
        position = next(i for i, other in enumerate(inputs) if other.mod.same_as(build_input.mod))
        if position == 1:
            release.wait(30)  # a build that hangs (until the test lets it go)
        return tuning.ms.builder.BuilderResult(f"/tmp/candidate{position}.tar", None)

    monkeypatch.setattr(tuning, "_build_candidate", build)
    started = time.monotonic()
    results = tuning._InProcessBuilder(2, timeout=0.5).build(inputs)
    release.set()
    assert time.monotonic() - started < 5
    assert [r.artifact_path for r in results] == ["/tmp/candidate0.tar", None, "/tmp/candidate2.tar"]
    assert "longer than" in str(results[1].error_msg)


def test_compile_without_tuning_warns_with_the_expected_slowdown(tmp_path):
    with pytest.warns(UntunedKernelWarning, match=r"2 of 2 kernels on cpu:0 .*slower.*no tuning database"):
        tvm_place.compile(TwoKernels, ["llvm"])
    with pytest.warns(UntunedKernelWarning, match=r"lacks them.*tvm_place.tune"):
        tvm_place.compile(TwoKernels, ["llvm"], database=tmp_path / "empty")


def test_tuned_cost_model_reads_the_database_and_falls_back(tuned_database, tmp_path):
    directory, _ = tuned_database
    device = resolve_targets(["llvm"])[0]
    prepared = prepare(TwoKernels)
    collected = collect_op_graph(prepared)
    name = collected.callees[0]
    node = collected.graph.nodes[0]
    fallback = AnalyticalCostModel()
    seconds, source = TunedCostModel(TuningDatabase(directory), fallback).op_time(prepared[name], node, device)
    assert source == "tuned (database)"
    assert seconds == pytest.approx(TuningDatabase(directory).seconds(prepared[name], device.target))
    empty = TunedCostModel(TuningDatabase(tmp_path), fallback)
    assert empty.op_time(prepared[name], node, device) == fallback.op_time(prepared[name], node, device)


def test_tunes_only_what_the_placement_puts_on_each_device(tmp_path):
    """One kernel placed on a GPU this machine lacks: not tuned (and said so); the CPU one is."""
    ops = collect_op_graph(prepare(TwoKernels)).callees
    if tvm.cuda(0).exist:
        pytest.skip("this machine has a GPU: the cuda kernel would be tuned")
    with pytest.warns(UntunedKernelWarning, match=r"1 of 1 kernels for gpu:0 stay untuned \(not tuned: no cuda"):
        result = tvm_place.tune(TwoKernels, ["llvm", "cuda"], database=tmp_path, trials=1, time_limit=300,
                                placement=[0, 1])
    cpu, gpu = result.targets
    assert cpu.newly_tuned == [ops[0]] and cpu.kernels == 1
    assert gpu.kernels == 1 and gpu.untuned == [ops[1]] and "no cuda device" in gpu.skipped


def test_time_limit_stops_the_search_and_keeps_what_it_found(tmp_path):
    result = tvm_place.tune(TwoKernels, ["llvm"], database=tmp_path, trials=64, time_limit=1.0)
    assert result.timed_out
    assert result.trials < 2 * 64
    (target,) = result.targets
    assert sorted(target.newly_tuned + target.untuned) == kernels_of(TwoKernels)


def test_bad_tuning_arguments_are_refused(tmp_path):
    with pytest.raises(InvalidTargetError, match="unknown tuning strategy"):
        tvm_place.tune(TwoKernels, ["llvm"], database=tmp_path, strategy="annealing")
    with pytest.raises(InvalidTargetError, match="must be positive"):
        tvm_place.tune(TwoKernels, ["llvm"], database=tmp_path, trials=0)


def test_databases_are_per_target_and_per_tvm_version(tmp_path):
    database = TuningDatabase(tmp_path)
    llvm = tvm.target.Target("llvm")
    cuda80 = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
    cuda90 = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    keys = {target_key(t) for t in (llvm, cuda80, cuda90)}
    assert len(keys) == 3 and all("/" not in k for k in keys)
    assert database.path(llvm).parent.name == f"tvm-{tvm.__version__}"
    prepared = prepare(TwoKernels)
    name = kernels_of(TwoKernels)[0]
    kernel = prepared[name]
    assert tvm_ffi.structural_equal(workload(kernel), workload(kernel.with_attr("target", llvm)))
    assert database.record(kernel, llvm) is None  # nothing written: no files needed to ask


def test_cli_tune_then_compile_with_the_database(tmp_path, capsys):
    model = tmp_path / "model.py"
    model.write_text(
        "from tvm.script import relax as R\nimport tvm\n\n"
        "@tvm.script.ir_module\nclass Module:\n"
        "    @R.function\n"
        "    def main(x: R.Tensor((8, 16), 'float32')):\n"
        "        with R.dataflow():\n"
        "            y = R.nn.relu(x)\n"
        "            R.output(y)\n"
        "        return y\n"
    )
    database = tmp_path / "db"
    assert cli_main(["tune", str(model), "--database", str(database), "--trials", "1", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 1 and summary["targets"][0]["newly_tuned"]
    assert cli_main(["compile", str(model), "--database", str(database), "--output", str(tmp_path / "out"),
                     "--quiet", "--json"]) == 0
    capsys.readouterr()
    assert cli_main(["tune", str(model), "--database", str(database), "--trials", "1", "--retune",
                     "--quiet", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["trials"] == 1 and again["targets"][0]["already_tuned"] == 1
    assert cli_main(["tune", str(model), "--quiet"]) == 2
    assert "--database DIR" in capsys.readouterr().err


def test_relax_pipeline_route_applies_the_database(tuned_database):
    """tvm.compile(mod, relax_pipeline=tvm_place.pipeline(..., database=DIR)): tuned kernels (the
    code is parallelised), the same numbers as the untuned build, and no warning."""
    import warnings

    from tvm import relax

    directory, _ = tuned_database
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedKernelWarning)
        tuned = tvm.compile(TwoKernels, relax_pipeline=tvm_place.pipeline(["llvm"], database=directory))
    with pytest.warns(UntunedKernelWarning, match="2 of 2 kernels on cpu"):
        untuned = tvm.compile(TwoKernels, relax_pipeline=tvm_place.pipeline(["llvm"]))
    source = "".join(m.inspect_source() for m in tuned.mod.imports)
    assert "parallel" in source and "parallel" not in "".join(m.inspect_source() for m in untuned.mod.imports)
    args = [tvm.runtime.tensor(x) for x in inputs()]
    outputs = [relax.VirtualMachine(ex, tvm_place.devices_of(ex))["main"](*args).numpy() for ex in (tuned, untuned)]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_bench_tuning_reduced_run(tmp_path):
    """scripts/bench_tuning.py on one tiny model, one trial per kernel: the record it writes."""
    import bench_tuning

    results = tmp_path / "tuning.json"
    assert bench_tuning.main(["--reduced", "--trials", "1", "--time-limit", "120", "--database", str(tmp_path / "db"),
                              "--results", str(results), "--repeat", "2", "--untuned-repeat", "1",
                              "--no-doc", "--quiet"]) == 0
    record = json.loads(results.read_text())["models"]["bert-layer"]
    assert record["tune"]["trials"] >= 1 and record["second_tune_trials"] == 0
    assert record["same_kernels_second_compile"] is True
    assert record["max_abs_error_tuned_vs_untuned"] < 1e-4
    assert record["untuned_seconds"] > 0 and record["tuned_seconds"] > 0
    if "eager_missing" not in record:
        assert record["eager_seconds"] > 0
    assert "no tuning database" in record["untuned_warning"]
