"""Fuzzing the file formats and the command line (hypothesis): problem files, dnn-partitioning
workloads, plans, device files, export manifests and CLI option strings. Valid inputs are generated and mutated (a value replaced
by any JSON of another type, a key deleted or added, a misspelt key, an out-of-range number);
every input either loads (an unmutated one must) or raises the project's error, a
:class:`~tvm_place.TvmPlaceError`; on the CLI it exits 0, or 2 with a message and no traceback.

At least 1,000 examples per format, derandomized so that CI sees the same ones every run.
"""

import copy
import io
import json
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_place.errors import TvmPlaceError

EXAMPLES = 1000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# -- mutation of valid documents --------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
EDGE_NUMBERS = st.sampled_from([-1, 0, -0.0, 50, 1e308, -1e-300, 2**70, True, False, float("nan"),
                                float("inf"), "1", None])


def _paths(value, prefix=()):
    """Every path to a value inside ``value`` (the root included)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _typo(key: str, position: int) -> str:
    if not key:
        return "x"
    position %= len(key)
    return key[:position] + key[position + 1:] if len(key) > 1 else key + key


@st.composite
def mutated(draw, valid):
    """``(document, was_mutated)``: a valid document, or one with one to three mutations."""
    document = copy.deepcopy(draw(valid))
    count = draw(st.integers(0, 3))
    for _ in range(count):
        paths = list(_paths(document))
        path = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(["replace", "number", "delete", "add", "typo"]))
        if not path:
            if operation == "replace":
                document = draw(JSON)
            continue
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if operation == "replace":
            parent[last] = draw(JSON)
        elif operation == "number":
            parent[last] = draw(EDGE_NUMBERS)
        elif operation == "delete":
            del parent[last]
        elif operation == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
        elif operation == "typo" and isinstance(parent, dict):
            parent[_typo(str(last), draw(st.integers(0, 20)))] = parent.pop(last)
    return document, count > 0


def loads_or_refuses(load, document, was_mutated, outcomes: dict):
    """The property: a valid document loads; any document loads or raises TvmPlaceError."""
    try:
        load(document)
        outcomes["loaded"] += 1
    except TvmPlaceError as err:
        assert str(err), "an error without a message"
        assert was_mutated, f"a valid document was refused: {err}"
        outcomes["refused"] += 1


def fuzz(strategy, load) -> dict:
    """Run ``loads_or_refuses`` over ``strategy``'s documents; how many loaded and were refused
    (both must happen, at least 1 in 50, or the generator tests one side only)."""
    outcomes = {"loaded": 0, "refused": 0}

    @FUZZ
    @given(strategy)
    def check(case):
        loads_or_refuses(load, *case, outcomes)

    check()
    assert min(outcomes.values()) >= EXAMPLES // 50, outcomes
    return outcomes


_scratch = tempfile.TemporaryDirectory(prefix="tvm-place-fuzz-")


def as_file(document, name: str) -> Path:
    path = Path(_scratch.name) / name
    path.write_text(json.dumps(document))
    return path


# -- problem files ----------------------------------------------------------------------------------

COST = st.floats(0, 10, allow_nan=False)


@st.composite
def problems(draw):
    num_devices, num_nodes = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    devices = [{"name": f"d{d}", "kind": draw(st.sampled_from(["cpu", "gpu"])),
                "memory_capacity": draw(st.none() | st.floats(0, 1e9))} for d in range(num_devices)]
    nodes = [{"name": f"n{u}", "compute_time": draw(st.lists(st.none() | COST, min_size=num_devices,
                                                             max_size=num_devices)),
              "transfer_time": draw(st.lists(COST, min_size=num_devices, max_size=num_devices)),
              "memory": draw(COST), "flops": draw(COST), "is_backward": draw(st.booleans())}
             for u in range(num_nodes)]
    pairs = [(u, v) for u in range(num_nodes) for v in range(u + 1, num_nodes)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=6)) if pairs else []
    node = st.integers(0, num_nodes - 1)
    pins = draw(st.dictionaries(node.map(str), st.lists(st.integers(0, num_devices - 1), min_size=1,
                                                        max_size=2), max_size=2))
    classes = draw(st.lists(st.lists(node, min_size=2, max_size=3), max_size=2))
    return {"format": "tvm-place-problem", "version": 1, "name": "fuzz", "devices": devices,
            "nodes": nodes, "edges": [list(e) for e in edges], "pins": pins,
            "colour_classes": classes}


def test_problem_files():
    from tvm_place.formats import load_problem

    fuzz(mutated(problems()), lambda d: load_problem(as_file(d, "problem.json")))


@st.composite
def workloads(draw):
    """dnn-partitioning workloads (data/dnn-partitioning/README.md)."""
    num_nodes = draw(st.integers(1, 5))
    nodes = [{"id": u, "name": f"n{u}", "cpuLatency": draw(COST), "fpgaLatency": draw(COST),
              "supportedOnFpga": draw(st.sampled_from([0, 1, True, False])), "size": draw(COST),
              "isBackwardNode": draw(st.booleans()), "colorClass": draw(st.integers(0, 2))}
             for u in range(num_nodes)]
    pairs = [(u, v) for u in range(num_nodes) for v in range(u + 1, num_nodes)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=5)) if pairs else []
    return {"maxSizePerFPGA": draw(st.floats(0, 100)), "maxFPGAs": draw(st.integers(1, 2)),
            "maxCPUs": draw(st.integers(0, 2)), "nodes": nodes,
            "edges": [{"sourceId": u, "destId": v, "cost": draw(COST)} for u, v in edges]}


def test_dnn_partitioning_workloads():
    from tvm_place.formats import load_dnn_partitioning

    fuzz(mutated(workloads()), lambda d: load_dnn_partitioning(as_file(d, "workload.json")))


# -- plans ------------------------------------------------------------------------------------------


@st.composite
def plans(draw):
    devices = [f"cpu:{d}" for d in range(draw(st.integers(1, 3)))]
    ops = [[f"op{u}", draw(st.sampled_from(devices))] for u in range(draw(st.integers(1, 5)))]
    plan = {
        "format": "tvm-place-plan", "version": 1,
        "model": {"name": "resnet18", "sizes": {"image_size": 32}, "batch": 1, "seed": 0},
        "targets": ["llvm"] * len(devices), "devices": devices,
        "options": {"objective": "latency", "method": draw(st.sampled_from(["auto", "dp"])),
                    "time_limit": draw(st.floats(0.1, 100)), "cost_model": "analytical",
                    "profiles": None, "pins": draw(st.none() | st.just({"conv*": "cpu:0"}))},
        "objective": draw(st.sampled_from(["latency", "throughput"])), "value": draw(COST),
        "lower_bound": 0.0, "method": "dp", "ops": ops,
    }
    if draw(st.booleans()):
        plan["order"] = list(range(len(ops)))
    return plan


def test_plan_files():
    from tvm_place.formats import load_placement

    fuzz(mutated(plans()), lambda d: load_placement(as_file(d, "plan.json")))


# -- device files -----------------------------------------------------------------------------------

PROFILE = st.fixed_dictionaries({
    "kind": st.just("gpu"), "arch": st.just("sm_80"), "peak_gflops": st.floats(1, 1e5),
    "memory_bandwidth_gbs": st.floats(1, 1e4), "memory_bytes": st.floats(1e6, 1e11),
    "compute_efficiency": st.floats(0.01, 1), "memory_efficiency": st.floats(0.01, 1),
    "launch_overhead_us": COST,
    "link": st.sampled_from(["pcie4", "nvlink3"]) | st.fixed_dictionaries(
        {"bandwidth_gbs": st.floats(0.1, 100), "latency_us": COST}),
})
DEVICE = st.one_of(
    st.fixed_dictionaries({"target": st.just("llvm")},
                          optional={"memory_bytes": st.floats(1e6, 1e11),
                                    "profile": st.sampled_from(["local-cpu", "server-cpu"])}),
    st.fixed_dictionaries({"target": st.sampled_from(["cuda", {"kind": "cuda", "arch": "sm_75"}])},
                          optional={"profile": st.sampled_from(["t4", "a100"]) | PROFILE,
                                    "compute_efficiency": st.floats(0.01, 1)}),
)


def test_device_files():
    from tvm_place.formats import load_device_file

    fuzz(mutated(st.fixed_dictionaries({"devices": st.lists(DEVICE, min_size=1, max_size=3)})),
         lambda d: load_device_file(as_file(d, "devices.json")))


# -- export manifests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export():
    from test_cli_commands import MODEL_FILE
    from tvm_place import cli

    model = Path(_scratch.name) / "model.py"
    model.write_text(MODEL_FILE)
    directory = Path(_scratch.name) / "export"
    with redirect_stdout(io.StringIO()):
        assert cli.main(["compile", str(model), "--target", "llvm", "--output", str(directory),
                         "--quiet"]) == 0
    return directory


def test_manifests(export):
    import tvm_place

    manifest = json.loads((export / "manifest.json").read_text())

    def load(document):
        (export / "manifest.json").write_text(json.dumps(document))
        tvm_place.load(export)

    try:
        fuzz(mutated(st.just(manifest)), load)
    finally:
        (export / "manifest.json").write_text(json.dumps(manifest))


# -- CLI option strings -----------------------------------------------------------------------------

TOKENS = st.sampled_from(["--time-limit", "--method", "--objective", "--format", "--output",
                          "--quiet", "--repeat", "--inputs", "--mode", "--connect-timeout", "--json",
                          "--workers"])
VALUES = st.sampled_from(["1", "0", "-3", "inf", "nan", "1e400", "abc", "", "greedy", "dp", "heft",
                          "fastest-device", "latency", "throughput", "tvm-place", "dnn-partitioning",
                          "no-such", "stream", "threads", "3.5", "/nonexistent/dir/out.json"])


@pytest.fixture(scope="module")
def problem_file():
    import numpy as np
    from brute_force import random_problem
    from tvm_place.formats import problem_to_json

    problem = random_problem(np.random.default_rng(1), 4, 2)
    return as_file(json.loads(problem_to_json(problem)), "cli-problem.json")


def test_cli_options(problem_file, monkeypatch):
    from tvm_place import cli

    monkeypatch.chdir(_scratch.name)  # --output VALUE writes VALUE here, not into the checkout

    fixed = {"--method": "greedy"}  # the portfolio would take seconds per example
    codes = {0: 0, 2: 0}

    @FUZZ
    @given(st.sampled_from(["solve", "run"]),
           st.lists(st.tuples(TOKENS, VALUES | st.text(max_size=6)), max_size=4))
    def check(command, options):
        argv = [command, str(problem_file) if command == "solve" else str(Path(_scratch.name) / "none")]
        for option, value in options:
            argv += [option, fixed.get(option, value)] if option != "--quiet" else [option]
        if command == "solve" and "--method" not in argv:
            argv += ["--method", "greedy"]
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exited:  # argparse: a usage error exits 2 with its message
                code = exited.code
        assert code in (0, 2), (argv, code, err.getvalue())
        assert "Traceback" not in err.getvalue()
        if code == 2:
            assert "error" in err.getvalue(), (argv, err.getvalue())
        codes[code] += 1

    check()
    assert min(codes.values()) >= EXAMPLES // 50, codes
