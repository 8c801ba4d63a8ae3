"""Reduced runs of scripts/table_diviml.py and scripts/table_cost_model.py (issue 4, tables 3 and
4): structure and invariants of what they produce, never timings."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest


table_diviml = importlib.import_module("table_diviml")
table_cost_model = importlib.import_module("table_cost_model")
tables = importlib.import_module("_tables")

REL = 1e-6


def test_diviml_table_reduced(tmp_path, capsys):
    out = tmp_path / "diviml.json"
    assert table_diviml.main(["--reduced", "--models", "bert-layer,resnet18", "--time-limit", "0.5",
                              "--no-write", "--json", str(out), "--cache-dir", ""]) == 0
    text = capsys.readouterr().out
    assert "| family | model | ops | objective | split |" in text
    assert "(b) Three devices against the fastest single GPU" in text
    data = json.loads(out.read_text())
    assert [row["model"] for row in data["rows"]] == ["bert-layer", "resnet18"]
    for row in data["rows"]:
        assert row["devices"] == ["cpu:0 (server-cpu)", "gpu:0 (a100)", "gpu:1 (t4)"]
        singles = {s["device"]: s for s in row["single"]}
        for objective, single_key in (("latency", "latency"), ("throughput", "max_load")):
            split, milp = row[f"{objective}/split"], row[f"{objective}/diviml-milp"]
            for result in (split, milp):
                assert "error" not in result, result
                assert 0 < result["lower_bound"] <= result["value"] * (1 + REL)
                assert sum(result["ops_per_device"].values()) == row["ops"]
            # A bound holds for every placement: the other method's value and each single device.
            bound = max(split["lower_bound"], milp["lower_bound"])
            assert bound <= min(split["value"], milp["value"]) * (1 + REL)
            for single in singles.values():
                assert bound <= single[single_key] * (1 + REL)
            if milp["status"] == "optimal":
                assert milp["value"] <= split["value"] * (1 + REL)
                assert milp["value"] <= min(s[single_key] for s in singles.values()) * (1 + REL)
            comparison = table_diviml.comparison(row, objective)
            assert comparison["loss_pct"] >= -100 and comparison["speedup"] > 0
        replicas = row["throughput/diviml-replicas"]
        assert "error" not in replicas, replicas
        assert 0 < replicas["lower_bound"] <= replicas["value"] * (1 + REL)
        if replicas["status"] == "optimal":  # its search space holds every placement without replicas
            assert replicas["value"] <= row["throughput/diviml-milp"]["value"] * (1 + REL)


def test_cost_model_table_reduced(tmp_path, capsys):
    out = tmp_path / "cost.json"
    png = tmp_path / "plot.png"
    assert table_cost_model.main(["--reduced", "--no-write", "--json", str(out), "--plot", str(png),
                                  "--cache-dir", str(tmp_path / "cache"), "--number", "1",
                                  "--repeat", "1", "--min-repeat-ms", "1",
                                  "--calibrate-time", "0.01"]) == 0
    text = capsys.readouterr().out
    assert "| model (sizes) | role | ops |" in text and "**Calibration**" in text
    assert png.stat().st_size > 1000
    data = json.loads(out.read_text())
    records = data["records"]
    assert {r["role"] for r in records} == {"train", "test"}
    assert all(r["predicted"] > 0 and r["measured"] > 0 for r in records)
    assert all(r["source"].startswith("measured") for r in records)
    for stats in [*data["per_model"].values(), data["overall"]]:
        assert math.isfinite(stats["mape"]) and stats["mape"] >= 0
        assert -1 <= stats["spearman"] <= 1 or math.isnan(stats["spearman"])
    assert set(data["calibrations"]) == {"none (profile as is)", "global scale",
                                         "scale per op kind", "roofline refit (GFLOP/s, GB/s)",
                                         "roofline refit + launch overhead",
                                         "calibrated (micro-benchmarks)"}
    for entry in data["calibrations"].values():
        assert math.isfinite(entry["test"]["mape"]) and math.isfinite(entry["train"]["mape"])
    # Every distinct kernel was measured once and cached (equal kernels share an entry).
    from tvm_place.cost import CostCache

    cached = len(CostCache(tmp_path / "cache").entries)
    assert 0 < cached <= len({(r["model"], r["kernel"]) for r in records})
    # The learned model's rows and the regret of each cost model's placement (issue 18).
    assert "**Learned model (issue 18)**" in text
    assert all(r["learned"] > 0 for r in records)
    test_models = {r["model"] for r in records if r["role"] == "test"}
    assert {(r["model"], r["hardware"], r["cost_model"]) for r in data["regret"]} == {
        (m, hardware, c) for m in test_models for hardware, *_ in table_cost_model.REGRET_SETS
        for c in ("analytical", "calibrated", "learned")}
    for row in data["regret"]:
        assert math.isfinite(row["regret"]) and row["latency"] > 0
        assert row["regret"] == pytest.approx(row["latency"] / row["reference_latency"] - 1)
    # the worst ratio bounds the geometric mean (equal, up to rounding, with one held-out model)
    worst, geo_mean = (data["learned"][key] for key in ("whole_model_ratio_worst",
                                                         "whole_model_ratio_geo_mean"))
    assert worst >= geo_mean * (1 - 1e-9) and geo_mean >= 1


def test_calibration_fits_recover_synthetic_truth():
    rng = np.random.default_rng(0)
    flops = 10 ** rng.uniform(4, 9, 200)
    nbytes = 10 ** rng.uniform(3, 8, 200)
    gflops, gbs, launch_us = 2.5, 7.0, 2.0
    measured = launch_us * 1e-6 + np.maximum(flops / (gflops * 1e9), nbytes / (gbs * 1e9))
    kinds = np.where(flops > 1e6, "conv2d", "add")
    records = [{"flops": f, "bytes": b, "measured": m, "predicted": m / (3.0 if k == "conv2d" else 0.5),
                "kind": k} for f, b, m, k in zip(flops, nbytes, measured, kinds)]
    params, predict = table_cost_model.fit_roofline(records, launch_us)
    assert params["gflops"] == pytest.approx(gflops, rel=0.02)
    assert params["gbs"] == pytest.approx(gbs, rel=0.02)
    params, _ = table_cost_model.fit_roofline(records, [0.0, 2.0, 10.0])
    assert params["launch_us"] == 2.0 and params["gflops"] == pytest.approx(gflops, rel=0.02)
    params, predict = table_cost_model.fit_per_kind(records)
    assert params["per_kind"] == pytest.approx({"add": 0.5, "conv2d": 3.0})
    assert all(predict(r) == pytest.approx(r["measured"]) for r in records)
    params, _ = table_cost_model.fit_global(records)
    assert 0.5 < params["scale"] < 3.0
    x = np.array([3.0, 1.0, 2.0, 2.0])
    assert table_cost_model.spearman(x, x * 10) == pytest.approx(1.0)
    assert table_cost_model.spearman(x, -x) == pytest.approx(-1.0)
    stats = table_cost_model.metrics(np.array([1.0, 2.0]), np.array([2.0, 2.0]))
    assert stats["mape"] == pytest.approx(25.0) and stats["geo_ratio"] == pytest.approx(2 ** 0.5)


def test_op_kind_names():
    assert table_cost_model.op_kind("fused_conv2d16_multiply7_add9_relu7") == "conv2d"
    assert table_cost_model.op_kind("fused_matmul3_add2_gelu") == "matmul"
    assert table_cost_model.op_kind("layer_norm1") == "layer_norm"
    assert table_cost_model.op_kind("add5") == "add"


def test_write_block_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n<!-- table:other -->\nkeep me\n<!-- /table:other -->\n")
    tables.write_block("mine", "## Mine", "first", path)
    tables.write_block("mine", "## Mine", "second", path)
    text = path.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count("## Mine") == 1 and text.count("<!-- table:mine -->") == 1
