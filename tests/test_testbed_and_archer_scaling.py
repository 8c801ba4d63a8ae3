"""Reduced runs of scripts/testbed.py, scripts/table_archer.py and scripts/table_scaling.py.

They check the outputs' structure and invariants (bounds never above the best placement, ratios
in (0, 1], every manifest entry loads as a problem of the stated size), not timings.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    out = tmp_path_factory.mktemp("testbed")
    testbed = _script("testbed")
    code = testbed.main([
        "--quick", "--models", "onnx-cnn", "gpt2-block", "--hardware", "cpu+a100", "cpu+a100+t4",
        "a100x2", "a100x4", "--out", str(out),
    ])
    assert code == 0
    return out


def test_testbed_manifest_lists_loadable_problems(testbed):
    from tvm_place.formats import load_problem

    manifest = json.loads((testbed / "manifest.json").read_text())
    assert manifest["format"] == "tvm-place-testbed" and manifest["quick"] is True
    assert manifest["skipped"] == []
    entries = manifest["problems"]
    assert {(e["model"], e["hardware"]) for e in entries} == {
        (m, h) for m in ("onnx-cnn", "gpt2-block") for h in ("cpu+a100", "cpu+a100+t4", "a100x2", "a100x4")
    }
    for e in entries:
        assert set(e) >= {"model", "hardware", "ops", "edges", "file", "devices"}
        problem = load_problem(str(testbed / e["file"]))
        assert problem.num_ops == e["ops"] and len(problem.graph.edges) == e["edges"]
        assert problem.num_devices == e["devices"]
        assert [d.profile for d in problem.devices] == e["profiles"]
        assert (problem.compute_time > 0).all()
    four = next(e for e in entries if e["hardware"] == "a100x4")
    assert "equal-gpus" in four["tags"] and "pipeline" in four["tags"]


def test_testbed_records_models_over_max_ops(tmp_path):
    testbed = _script("testbed")
    assert testbed.main(["--quick", "--models", "onnx-cnn", "--hardware", "a100x2", "--max-ops", "2",
                         "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["problems"] == []
    assert manifest["skipped"][0]["model"] == "onnx-cnn" and "max-ops" in manifest["skipped"][0]["reason"]


def test_archer_table_bounds_never_exceed_the_best_placement(testbed, tmp_path):
    archer = _script("table_archer")
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\n## Other\n\n<!-- table:other -->\nkeep me\n<!-- /table:other -->\n")
    results = tmp_path / "archer.json"
    assert archer.main(["--testbed", str(testbed), "--ks", "2", "4", "--time-limit", "0.5",
                        "--dp-time-limit", "0.5", "--results", str(results), "--doc", str(doc)]) == 0
    data = json.loads(results.read_text())
    assert len(data["rows"]) == 4 and not data["skipped"]
    for r in data["rows"]:
        assert r["best"] == min(r["slicegraph"], r.get("dp", math.inf))
        slack = r["best"] * (1 + 1e-6) + 1e-15
        assert 0 < r["combinatorial"] <= r["best_bound"] <= r["best_proven"] <= slack
        assert "bound_conflict" not in r
    for t in data["table"]:
        assert 0 < t["combinatorial"] <= t["best_bound"] <= t["best_proven"] <= 1 + 1e-6
        assert t["problems"] == 2
    text = doc.read_text()
    assert "keep me" in text and text.count("<!-- table:archer -->") == 1
    # a second run replaces its own block only
    assert archer.main(["--testbed", str(testbed), "--ks", "2", "--time-limit", "0.3", "--no-dp",
                        "--results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.count("<!-- table:archer -->") == 1 and "keep me" in text and "| 4 |" not in text
    # re-rendering from the saved results gives the same block, plus a line saying so
    block = text[text.index("<!-- table:archer -->"):].splitlines()
    assert archer.main(["--from-results", str(results), "--doc", str(doc)]) == 0
    again = doc.read_text()
    again = again[again.index("<!-- table:archer -->"):].splitlines()
    kept = [line for line in again if line and not line.startswith("(Rendered from")]
    assert kept == [line for line in block if line]


def test_wide_table_grades_every_method_the_same_way(tmp_path):
    testbed = _script("testbed")
    out = tmp_path / "testbed"
    assert testbed.main(["--quick", "--models", "randwire-ws", "--hardware", "a100x2", "a100x4",
                         "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # Quick sizes are below the wide graphs' size: not tagged, but the table can take them.
    assert all("wide" not in e["tags"] for e in manifest["problems"])
    wide = _script("table_wide")
    doc, results = tmp_path / "bench.md", tmp_path / "wide.json"
    assert wide.main(["--testbed", str(out), "--min-ops", "0", "--hardware", "a100x2", "a100x4",
                      "--methods", "dp", "slicegraph", "--time-limit", "1", "--results",
                      str(results), "--doc", str(doc)]) == 0
    rows = json.loads(results.read_text())["rows"]
    assert {(r["k"], r["method"]) for r in rows} == {(k, m) for k in (2, 4)
                                                     for m in ("dp", "slicegraph")}
    for r in rows:
        assert 0 < r["lower_bound"] <= r["value"] * (1 + 1e-9)
        assert r["gap"] == pytest.approx(1 - r["lower_bound"] / r["value"], abs=1e-12)
    assert doc.read_text().count("<!-- table:wide -->") == 1
    # The bound's refinements measured afterwards on that run's values, kept beside its rows.
    measured = tmp_path / "wide-variants.json"
    assert wide.main(["--testbed", str(out), "--min-ops", "0", "--hardware", "a100x2", "a100x4",
                      "--from-results", str(results), "--bound-variants", "0.5", "--results",
                      str(measured), "--no-doc"]) == 0
    kept = json.loads(measured.read_text())
    assert kept["rows"] == rows
    assert {(v["k"], v["variant"]) for v in kept["bound_variants"]} == {
        (k, name) for k in (2, 4) for name in wide.BOUND_VARIANTS}
    for v in kept["bound_variants"]:
        assert 0 < v["bound"] <= v["upper"] * (1 + 1e-9)
    # Which side holds a gap: an answer far from optimal (every operator on one device) moves,
    # the bound stays under the better value, and the table shows both.
    from tvm_place.evaluate import evaluate
    from tvm_place.formats import load_problem

    entry = next(e for e in manifest["problems"] if e["hardware"] == "a100x4")
    problem = load_problem(str(out / entry["file"]))
    lumped = np.zeros(problem.num_ops, dtype=np.int64)
    row = {"model": entry["model"], "hardware": "a100x4", "k": 4, "method": "dp",
           "value": evaluate(problem, lumped).max_load, "lower_bound": 0.0}
    sides = wide.which_side([row], {0: (problem, lumped)}, 2.0)
    assert len(sides) == 1 and sides[0]["chain"]["measured"] < row["value"]
    assert sides[0]["upper"] == sides[0]["chain"]["measured"]
    assert 0 < sides[0]["window_bound"] <= sides[0]["upper"] * (1 + 1e-9)
    table = wide.render([], [], {**kept["meta"], "side_seconds": 2.0}, [], [], sides)
    assert "Which side holds the gaps" in table and f"| {entry['model']} | 4 | dp |" in table


def test_scaling_table_and_plot(testbed, tmp_path):
    scaling = _script("table_scaling")
    doc = tmp_path / "bench.md"
    plot = tmp_path / "scaling.png"
    results = tmp_path / "scaling.json"
    assert scaling.main(["--sizes", "12", "30", "--real", "1", "--testbed", str(testbed),
                         "--methods", "greedy", "heft", "dp", "pipedream", "--time-limit", "1",
                         "--plot", str(plot), "--doc", str(doc), "--results", str(results)]) == 0
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(results.read_text())
    graphs = {r["graph"] for r in data["rows"]}
    assert graphs == {"random-12", "random-30", "onnx-cnn"} or graphs == {"random-12", "random-30", "gpt2-block"}
    for r in data["rows"]:
        assert "error" not in r, r
        assert r["lower_bound"] <= r["value"] * (1 + 1e-6)
        assert r["vs_best"] >= 1 - 1e-9
    text = doc.read_text()
    assert text.count("<!-- table:scaling -->") == 1 and "| random-30 | 30 |" in text


def test_random_layered_problem_is_a_connected_dag_of_the_requested_size():
    scaling = _script("table_scaling")
    problem = scaling.random_layered_problem(50, seed=3)
    assert problem.num_ops == 50 and problem.num_devices == 3
    assert len(problem.graph.topological_order) == 50
    sources = {v for _, v in problem.graph.edges}
    assert len(set(range(50)) - sources) <= 3  # only the first layer has no input
