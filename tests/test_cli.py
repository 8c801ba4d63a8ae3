"""The tvm-place command line, driven in a subprocess as a user would."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "dnn-partitioning"
BERT24 = DATA / "throughput-inputs" / "LayerGraphs" / "bert24_inference.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tvm_place.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_solve_dnn_partitioning_writes_a_split_and_prints_json(tmp_path):
    output = tmp_path / "split.json"
    result = run(
        "solve", str(BERT24), "--format", "dnn-partitioning", "--objective", "throughput",
        "--method", "dp", "--time-limit", "30", "--output", str(output), "--quiet",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("objective", "lower_bound", "gap", "method", "seconds"):
        assert key in summary
    assert summary["value"] == pytest.approx(17.7899, rel=1e-4)
    split = json.loads(output.read_text())
    assert split["maxLoad"] == pytest.approx(summary["value"])
    assert sum(len(part["nodes"]) for part in split["fpgas"] + split["cpus"]) == 32


def test_solve_round_trips_the_tvm_place_format(tmp_path):
    from tvm_place.formats import load_dnn_partitioning, problem_to_json

    problem_file = tmp_path / "problem.json"
    problem_file.write_text(problem_to_json(load_dnn_partitioning(BERT24)))
    output = tmp_path / "placement.json"
    result = run("solve", str(problem_file), "--method", "dp", "--output", str(output), "--quiet")
    assert result.returncode == 0, result.stderr
    placement = json.loads(output.read_text())
    assert placement["format"] == "tvm-place-placement" and len(placement["device_of"]) == 32


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("{broken", [], "not valid JSON"),
        ('{"format": "tvm-place-problem", "version": 9}', [], "version"),
        ("{}", ["--format", "dnn-partitioning"], "maxSizePerFPGA"),
        (None, ["--method", "no-such-method"], "unknown method"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path, content, args, message):
    path = tmp_path / "input.json"
    if content is None:
        path = BERT24
        args = ["--format", "dnn-partitioning", *args]
    else:
        path.write_text(content)
    result = run("solve", str(path), *args, "--quiet")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_debug_flag():
    result = run("solve", "does-not-exist.json")
    assert result.returncode == 2 and "does not exist" in result.stderr
    debug = run("--debug", "solve", "does-not-exist.json")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


TWO_NODE_PROBLEM = {
    "format": "tvm-place-problem", "version": 1,
    "devices": [{"name": "cpu:0"}, {"name": "cpu:1"}],
    "nodes": [{"name": "a", "compute_time": [1, 2], "transfer_time": [0.1, 0.1]},
              {"name": "b", "compute_time": [2, 1], "transfer_time": [0.1, 0.1]}],
    "edges": [[0, 1]],
}


@pytest.mark.parametrize("edit, message", [
    ({"pins": [[0, 1]]}, "pins: [[0, 1]] is a list, expected an object"),
    ({"nodes": 5}, "nodes: 5 is a number, expected a list"),
    ({"colour_classes": [[0, 9]]}, "colour_classes[0][1]: node 9 does not exist"),
    ({"edges": [[0, 1]], "egdes": []}, "unknown key 'egdes' (did you mean 'edges'?)"),
    ({"devices": [{"name": "cpu:0", "memory_capacity": True}]}, "memory_capacity: True is a boolean"),
])
def test_a_bad_problem_file_exits_2_naming_the_field(tmp_path, capsys, edit, message):
    from tvm_place import cli

    path = tmp_path / "problem.json"
    path.write_text(json.dumps({**TWO_NODE_PROBLEM, **edit}))
    assert cli.main(["solve", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "fix:" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["directory", "binary", "deep", "flops"])
def test_files_that_are_no_problem_files_exit_2(tmp_path, capsys, kind):
    from tvm_place import cli

    path = tmp_path / "problem.json"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)))
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        nodes = [{**node, "flops": "lots"} for node in TWO_NODE_PROBLEM["nodes"]]
        path.write_text(json.dumps({**TWO_NODE_PROBLEM, "nodes": nodes}))
    assert cli.main(["solve", str(path), "--quiet"]) == 2
    assert "problem file" in capsys.readouterr().err
