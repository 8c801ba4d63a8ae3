"""The runtime: pipelined throughput mode, stage workers in threads and in worker processes over
tvm.rpc (pinned to cores), measured feedback, and faults (a worker killed mid-stream, a closed
port, a stage that raises, a stage that hangs). Loopback addresses only; every wait is bounded and
every worker process is ended (checked at the end of the module)."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tvm import relax

import tvm_place
from tvm_place import models
from tvm_place.compiler import prepare
from tvm_place.cost import AnalyticalCostModel
from tvm_place.evaluate import evaluate
from tvm_place.passes import collect_op_graph
from tvm_place.runtime import StageError, StageTimeoutError, WorkerDiedError, WorkerUnreachableError
from tvm_place.runtime.workers import LocalServer, core_groups

BERT = dict(seq_len=8, hidden=64, heads=4, ffn=128)


def worker_processes_of_this_test_run() -> list[int]:
    """Live processes started by tvm_place.runtime.workers on behalf of this process."""
    marker = f"--parent-pid\x00{os.getpid()}\x00"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if "tvm_place.runtime.server" in command and marker in command and state != "Z":
            pids.append(int(entry.name))
    return pids


def three_segments(mod) -> np.ndarray:
    """cpu:0 for the first third of the operators, cpu:1 for the second, cpu:0 again: three
    stages, two of them sharing a device (and so a worker)."""
    num_ops = len(collect_op_graph(prepare(mod)).graph)
    third = np.arange(num_ops) * 3 // num_ops
    return (third == 1).astype(np.int64)


def have_tornado() -> bool:
    """TVM's RPC tracker server needs tornado (its clients do not)."""
    import importlib.util

    return importlib.util.find_spec("tornado") is not None


@pytest.fixture(scope="module")
def servers():
    """Two worker processes, each pinned to its own core group, and an RPC tracker (if it can)."""
    groups = core_groups(2)
    started = [LocalServer(cores=g, threads=1) for g in groups]
    if have_tornado():
        started.append(LocalServer(role="tracker"))
    try:
        for server in started:
            server.wait_ready(120)
        yield started
    finally:
        for server in started:
            server.close()
        deadline = time.monotonic() + 10
        while worker_processes_of_this_test_run() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker_processes_of_this_test_run() == [], "worker processes left behind"


@pytest.fixture(scope="module")
def bert():
    model = models.get("bert-layer", **BERT)
    placed = tvm_place.compile(model.mod, ["llvm", "llvm"], objective="throughput",
                               placement=three_segments(model.mod))
    rng = np.random.default_rng(1)
    stream = [rng.standard_normal(model.inputs[0].shape).astype(np.float32) for _ in range(6)]
    expected = [placed(x).numpy() for x in stream]
    yield model, placed, stream, expected
    placed.close()


def assert_same(outputs, expected):
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert np.array_equal(got, want)


# -- throughput mode ----------------------------------------------------------------------------


def test_stream_in_threads_equals_latency_mode_in_order(bert):
    model, placed, stream, expected = bert
    calls = [s for s in placed.plan.steps if s["kind"] == "call"]
    assert [s["device"] for s in calls] == [0, 1, 0]
    placed.attach_workers("threads")
    outputs = placed.run_stream(iter(stream), depth=1)
    assert_same(outputs, expected)
    stats = placed.last_stats
    assert all(len(stats.compute[s["stage"]]) == len(stream) for s in calls)
    assert stats.copies and all(r.count == len(stream) and r.bytes > 0 for r in stats.copies.values())
    assert len(stats.copies) == placed.plan.num_copies - sum(
        1 for s in placed.plan.steps if s["kind"] == "copy" and s["source"] in placed.plan.inputs
    )
    assert stats.throughput > 0 and stats.num_inputs == len(stream)
    text = stats.format()
    assert "lv" in text and "cpu:1" in text
    # Latency mode is unchanged, and a one-input model takes bare arrays or 1-tuples alike.
    assert np.array_equal(placed(stream[0]).numpy(), expected[0])
    assert_same(placed.run_stream([(x,) for x in stream[:2]]), expected[:2])


def test_stream_on_pinned_worker_processes(bert, servers):
    model, placed, stream, expected = bert
    placed.attach_workers(servers[:2])
    outputs = placed.run_stream(stream, depth=2)
    assert_same(outputs, expected)
    # The stages ran in the servers' session processes, pinned and single-threaded.
    for server in servers[:2]:
        sessions = server.session_pids()
        assert sessions, "no session process serves this module"
        for pid in sessions:
            allowed = os.sched_getaffinity(pid)
            assert sorted(allowed) == server.cores
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"TVM_NUM_THREADS=1" in environment
    # Copies between processes are counted and timed, both halves.
    for record in placed.last_stats.copies.values():
        assert record.count == len(stream)
        assert len(record.export_seconds) == len(stream) and len(record.import_seconds) == len(stream)
    # Latency mode through the same workers.
    assert np.array_equal(placed(stream[1]).numpy(), expected[1])
    placed.close()


def test_processes_mode_pins_times_out_and_cleans_up(bert):
    model, placed, stream, expected = bert
    before = set(worker_processes_of_this_test_run())
    placed.attach_workers("processes")
    try:
        servers = placed.worker_processes
        assert len(servers) == 2
        assert [s.cores for s in servers] == core_groups(2)
        assert_same(placed.run_stream(stream), expected)
        # A worker that stops answering: the run ends at the timeout, naming stage and input.
        hung = servers[1].session_pids()[0]
        os.kill(hung, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StageTimeoutError) as caught:
            placed.run_stream(stream, timeout=1.0)
        assert time.monotonic() - started < 10
        error = caught.value
        assert error.device == "cpu:1" and error.input_index == 0 and "stage" in str(error)
        assert error.stage in str(error)
    finally:
        placed.close()
    deadline = time.monotonic() + 10
    while set(worker_processes_of_this_test_run()) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(worker_processes_of_this_test_run()) - before == set()


# -- faults -------------------------------------------------------------------------------------


def test_killed_worker_mid_stream_is_reported_not_hung(bert, servers):
    model, placed, stream, expected = bert
    placed.attach_workers(servers[:2])
    victim = servers[1].session_pids()
    assert victim

    def kill_after_two(index, output):
        if index == 1:
            for pid in victim:
                os.kill(pid, signal.SIGKILL)

    long_stream = (stream[i % len(stream)] for i in range(10_000))
    started = time.monotonic()
    with pytest.raises(WorkerDiedError) as caught:
        placed.run_stream(long_stream, on_result=kill_after_two, timeout=30)
    assert time.monotonic() - started < 20
    error = caught.value
    assert error.stage == "stage1_cpu1" and error.device == "cpu:1"
    assert error.input_index is not None and error.input_index >= 2
    assert "died" in str(error) and f"input {error.input_index}" in str(error)
    # Nothing silently dropped: every input before the failing one came back, in order.
    assert len(error.completed) == error.input_index
    assert_same(error.completed, [expected[i % len(stream)] for i in range(error.input_index)])
    placed.close()
    # The server outlives its dead session and serves again.
    assert servers[1].alive()
    placed.attach_workers(servers[:2])
    assert_same(placed.run_stream(stream[:3]), expected[:3])
    placed.close()


def test_stage_given_a_wrong_shaped_input(bert, servers):
    model, placed, stream, expected = bert
    bad = np.zeros((1, 4, BERT["hidden"]), dtype=np.float32)
    for workers in ("threads", servers[:2]):
        placed.attach_workers(workers)
        with pytest.raises(StageError) as caught:
            placed.run_stream([stream[0], stream[1], bad, stream[2]], timeout=30)
        error = caught.value
        assert not isinstance(error, WorkerDiedError)
        assert error.stage == "stage0_cpu0" and error.input_index == 2
        assert "input 2" in str(error) and "stage0_cpu0" in str(error)
        assert "4 vs. 8" in str(error)  # TVM's own shape message is kept
        assert_same(error.completed, expected[:2])
        # The worker is intact: the next stream runs.
        assert_same(placed.run_stream(stream[:2]), expected[:2])
    placed.close()


def test_unreachable_server_fails_fast(bert):
    model, placed, stream, expected = bert
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    started = time.monotonic()
    with pytest.raises(WorkerUnreachableError, match=f"cpu:1.*127.0.0.1:{port}"):
        placed.attach_workers(["thread", f"127.0.0.1:{port}"], timeout=5)
    with pytest.raises(WorkerUnreachableError, match="tracker"):
        placed.attach_workers(["thread", f"tracker://127.0.0.1:{port}/nokey"], timeout=5)
    assert time.monotonic() - started < 10
    assert placed.workers == {}


def test_worker_from_a_tracker(bert, servers):
    if len(servers) < 3:
        pytest.skip("TVM's RPC tracker needs tornado (pip install tornado)")
    model, placed, stream, expected = bert
    tracker = servers[2]
    registered = LocalServer(cores=servers[1].cores, threads=1, tracker=tracker.address, key="tp-test")
    try:
        registered.wait_ready(120)
        address = f"tracker://{tracker.address}/tp-test"
        deadline = time.monotonic() + 30
        while True:  # the server announces itself to the tracker shortly after it listens
            try:
                placed.attach_workers({"cpu:1": address}, timeout=3)
                break
            except WorkerUnreachableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert placed.workers[1].remote and placed.workers[0].remote is False
        assert_same(placed.run_stream(stream), expected)
        # A key nobody serves: the tracker never answers; the wait is bounded.
        started = time.monotonic()
        with pytest.raises(WorkerUnreachableError, match="no answer"):
            placed.attach_workers({"cpu:1": f"tracker://{tracker.address}/nobody"}, timeout=1)
        assert time.monotonic() - started < 5
    finally:
        placed.close()
        registered.close()


# -- artifacts and measured feedback ---------------------------------------------------------


def test_exported_artifacts_run_on_worker_processes(bert, servers, tmp_path):
    model, placed, stream, expected = bert
    placed.close()
    placed.export(tmp_path / "art")
    loaded = tvm_place.load(tmp_path / "art")
    with loaded.attach_workers(servers[:2]):
        assert_same(loaded.run_stream(stream[:3]), expected[:3])
        assert "predicted" in loaded.compare()  # the manifest keeps the placement problem


class TenTimesSlowerCpu1:
    """A deliberately wrong cost model: cpu:1 is as fast as cpu:0, but costed 10x slower."""

    name = "analytical, cpu:1 x10"

    def __init__(self):
        self.base = AnalyticalCostModel()

    def op_time(self, prim_func, node, device):
        seconds, source = self.base.op_time(prim_func, node, device)
        return (seconds * 10, "x10") if device.index == 1 else (seconds, source)


def layer_chain(layers=12, rows=64, width=256, seed=0):
    """``layers`` identical matmul+relu layers (a few ms each on one core)."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, width), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            for _ in range(layers):
                weight = rng.standard_normal((width, width)) / np.sqrt(width)
                h = bb.emit(relax.op.nn.relu(relax.op.matmul(h, relax.const(weight.astype("float32")))))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get()


def measure(placed, servers, stream):
    with placed.attach_workers(servers):
        placed.run_stream(stream[:2])  # warm-up
        outputs = placed.run_stream(stream)
        return outputs, placed.last_stats


def as_if_measured(stats, problem, device_of, true_factor):
    """``stats`` with each device's stage times replaced by its predicted compute time times
    ``true_factor[device]`` and every copy taking no time: a run whose outcome is known, so the
    feedback logic is tested without timing noise (the bench in scripts/bench_pipeline.py
    measures real feedback runs)."""
    predicted = evaluate(problem, device_of).compute
    stages_on = {}
    for stage, device in stats.stage_device.items():
        stages_on.setdefault(device, []).append(stage)
    compute = {}
    for device, stages in stages_on.items():
        # Split the device's time evenly over its stages: the factor only reads the sum.
        seconds = predicted[device] * true_factor[device] / len(stages)
        compute.update({stage: [seconds] * len(stats.compute[stage]) for stage in stages})
    still = {name: dataclasses.replace(record, export_seconds=[0.0] * len(record.export_seconds),
                                       import_seconds=[0.0] * len(record.import_seconds))
             for name, record in stats.copies.items()}
    return dataclasses.replace(stats, compute=compute, copies=still)


def test_measured_feedback_repairs_a_wrong_cost_model(servers):
    mod = layer_chain()
    # A distinct target string for cpu:1 keeps its costs apart in compute_costs' per-target cache.
    targets = ["llvm", {"kind": "llvm", "num-cores": 1}]
    wrong = tvm_place.compile(mod, targets, objective="throughput", method="dp",
                              cost_model=TenTimesSlowerCpu1())
    assert 1 <= (wrong.placement.device_of == 1).sum() <= 2, "the wrong model pushes work off cpu:1"
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    stream = [x * (i + 1) for i in range(8)]
    reference, measured = measure(wrong, servers[:2], stream)
    table = wrong.compare(measured)
    assert "cpu:0" in table and "cpu:1" in table and "measured" in table
    # The real run sees cpu:1 faster than its 10x cost says (a wide margin: both are cores of the
    # same CPU; how much work moves depends on the run, so it is checked below on a known run).
    seen_factor = wrong.rebalance(measured).stats["device_factor"]
    assert seen_factor[1] < seen_factor[0], seen_factor
    # A run in which cpu:1 is exactly as fast as cpu:0: the re-solve splits the equal layers evenly.
    known = as_if_measured(measured, wrong.problem, wrong.placement.device_of, true_factor=[1.0, 0.1])
    new = wrong.rebalance(known)
    np.testing.assert_allclose(new.stats["device_factor"], [1.0, 0.1], rtol=1e-9)
    on_cpu1 = int((new.device_of == 1).sum())
    assert abs(on_cpu1 - (new.device_of == 0).sum()) <= 2, new.device_of
    assert new.stats["value_before"] > 1.5 * new.value, "the old split must look much worse on the true costs"
    fixed = tvm_place.compile(mod, targets, placement=new, cost_model=TenTimesSlowerCpu1())
    outputs, _ = measure(fixed, servers[:2], stream)
    for got, want in zip(outputs, reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
