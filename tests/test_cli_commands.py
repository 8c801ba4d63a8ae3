"""Every ``tvm-place`` subcommand end to end in a subprocess, as a user at a terminal drives it:
a registry model and a Python model file through models, inspect, place (plan, pins, device
file, pictures), compile, run and bench (check: tests/test_regression.py); and each bad input's
exit code and message, through ``cli.main`` in this process (no TVM start-up per case)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tvm_place import cli

SMALL = ["resnet18", "--size", "image_size=32"]
TWO_CPUS = ["--target", "llvm", "--target", "llvm"]

#: A small TVMScript model file, as a user writes one.
MODEL_FILE = (Path(__file__).resolve().parent.parent / "data" / "models" / "small_matmul.py").read_text()


def tvm_place(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvm_place.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def in_process(capsys, *args) -> str:
    """``tvm-place ARGS`` through ``cli.main`` here: for the variants of a command whose
    subprocess run is tested once."""
    capsys.readouterr()
    assert cli.main([str(a) for a in args]) == 0
    return capsys.readouterr().out


def test_models_lists_the_registry():
    listed = json.loads(ok(tvm_place("models", "--json")))
    names = [entry["name"] for entry in listed]
    assert "resnet18" in names and all(entry["family"] for entry in listed)


def test_inspect_summarises_a_registry_model_and_a_python_file(tmp_path, capsys):
    summary = json.loads(ok(tvm_place("inspect", *SMALL, "--json")))
    assert summary["operators"] > 10 and summary["inputs"] == [[1, 3, 32, 32]]
    model_file = tmp_path / "model.py"
    model_file.write_text(MODEL_FILE)
    summary = json.loads(in_process(capsys, "inspect", f"{model_file}:Module", "--json"))
    assert summary["operators"] >= 1 and summary["inputs"] == [[4, 8], [8, 8]]


def test_place_saves_a_plan_that_applies_again_with_pictures(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    first = json.loads(ok(tvm_place("place", *SMALL, *TWO_CPUS, "--objective", "throughput",
                                    "--method", "dp", "--save-plan", plan, "--plot",
                                    tmp_path / "pictures", "--json", "--quiet")))
    assert {d["name"] for d in first["devices"]} == {"cpu:0", "cpu:1"}
    assert first["gap"] == pytest.approx(0.0, abs=1e-9)
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == [
        "gantt.png", "placement.png", "placement.svg"]
    again = json.loads(in_process(capsys, "place", *SMALL, *TWO_CPUS, "--objective",
                                  "throughput", "--plan", plan, "--json", "--quiet"))
    assert again["method"] == "given"
    assert again["placement"]["device_of"] == first["placement"]["device_of"]
    text = in_process(capsys, "place", *SMALL, *TWO_CPUS, "--plan", plan, "--quiet")
    assert "memory used / capacity" in text and "bytes in" in text and "copies in/out" in text
    crossing = sum(d["copies_in"] for d in first["devices"])
    assert crossing == sum(d["copies_out"] for d in first["devices"]) >= 1  # two stages
    assert sum(d["bytes_in"] for d in first["devices"]) > 0


def test_place_with_a_pin_and_a_toml_device_file(tmp_path, capsys):
    devices = tmp_path / "hardware.toml"
    devices.write_text(
        '[[devices]]\ntarget = "llvm"\n\n[[devices]]\ntarget = "cuda"\nprofile = "t4"\n'
        "memory_bytes = 2e9\n"
    )
    placed = json.loads(in_process(capsys, "place", *SMALL, "--devices", devices, "--pin",
                                   "max_pool2d=cpu:0", "--json", "--quiet"))
    names = placed["placement"]["device_names"]
    assert names == ["cpu:0", "gpu:0"] and placed["devices"][1]["capacity"] == 2e9
    assert placed["placement"]["device_of"][1] == 0  # max_pool2d, pinned


def test_compile_then_run_latency_and_stream(tmp_path, capsys):
    build = tmp_path / "build"
    compiled = json.loads(ok(tvm_place("compile", *SMALL, *TWO_CPUS, "--output", build, "--json",
                                       "--quiet")))
    assert compiled["output"] == str(build) and (build / "manifest.json").is_file()
    latency = json.loads(ok(tvm_place("run", build, "--repeat", "2", "--json")))
    assert latency["seconds"] > 0 and latency["output_shape"] == [1, 1000]
    stream = json.loads(in_process(capsys, "run", build, "--mode", "stream", "--inputs", "4",
                                   "--json"))
    assert stream["inputs_per_second"] > 0
    # a Ray cluster nobody serves: a clear error at once, exit 2
    assert cli.main(["run", str(build), "--ray-address", "127.0.0.1:9"]) == 2
    assert "no Ray cluster answers at 127.0.0.1:9" in capsys.readouterr().err


TWO_OUTPUTS_FILE = MODEL_FILE.replace("out = R.add(z, y)", "out = (z, (y, R.add(z, y)))")
assert TWO_OUTPUTS_FILE != MODEL_FILE


def test_run_a_model_with_nested_tuple_outputs(tmp_path, capsys):
    model_file = tmp_path / "two.py"
    model_file.write_text(TWO_OUTPUTS_FILE)
    build = tmp_path / "two"
    in_process(capsys, "compile", f"{model_file}:Module", *TWO_CPUS, "--output", build, "--quiet")
    latency = json.loads(in_process(capsys, "run", build, "--repeat", "1", "--json"))
    assert latency["output_shape"] == [4, 8]
    stream = json.loads(in_process(capsys, "run", build, "--mode", "stream", "--inputs", "3", "--json"))
    assert stream["inputs"] == 3 and stream["output_shape"] == [4, 8]


SYMBOLIC_LLAMA = ["llama2-7b-4layers", "--size", "seq_len=n", "--size", "hidden=64", "--size", "heads=4",
                  "--size", "ffn=128", "--size", "num_layers=1", "--size", "max_seq_len=32"]


def test_symbolic_length_from_the_command_line(tmp_path, capsys):
    placed = json.loads(in_process(capsys, "place", *SYMBOLIC_LLAMA, *TWO_CPUS, "--shape", "n=8",
                                   "--json", "--quiet"))
    assert placed["predicted_latency"] > 0
    build = tmp_path / "llama"
    report = in_process(capsys, "compile", *SYMBOLIC_LLAMA, *TWO_CPUS, "--shape", "n=8",
                        "--output", build, "--quiet")
    assert "costed at n=8" in report
    # run feeds random inputs of the recorded types, the sequence at the size it was costed at
    latency = json.loads(in_process(capsys, "run", build, "--repeat", "1", "--json"))
    assert latency["output_shape"] == [1, 8, 64]
    # or, when asked, the registry's own inputs: the sequence at its upper bound, 32
    latency = json.loads(in_process(capsys, "run", build, "--repeat", "1", "--json", "--from-source"))
    assert latency["output_shape"] == [1, 32, 64]
    assert cli.main(["place", *SYMBOLIC_LLAMA, "--shape", "n=big", "--quiet"]) == 2
    assert "NAME=SIZE" in capsys.readouterr().err
    assert cli.main(["place", *SYMBOLIC_LLAMA, "--shape", "m=8", "--quiet"]) == 2
    assert "shape hints name ['m']" in capsys.readouterr().err


def test_run_executes_no_model_file_unless_asked(tmp_path, capsys):
    """An export is data: `run` feeds inputs of the types its manifest records and never runs
    the Python file the export was compiled from, unless --from-source asks for it."""
    model_file = tmp_path / "model.py"
    model_file.write_text(MODEL_FILE)
    build = tmp_path / "build"
    in_process(capsys, "compile", model_file, *TWO_CPUS, "--output", build, "--quiet")
    marker = tmp_path / "ran"
    model_file.write_text(f"open({str(marker)!r}, 'w').close()\n" + MODEL_FILE)
    latency = json.loads(in_process(capsys, "run", build, "--repeat", "1", "--json"))
    assert latency["output_shape"] == [4, 8] and not marker.exists()
    in_process(capsys, "run", build, "--repeat", "1", "--from-source")
    assert marker.exists()


def test_compile_channels_last_and_run_from_the_recorded_source(tmp_path, capsys):
    build = tmp_path / "nhwc"
    in_process(capsys, "compile", *SMALL, "--target", "llvm", "--layout", "NHWC", "--output", build,
               "--quiet")
    assert json.loads((build / cli.SOURCE_FILE).read_text())["layout"] == "NHWC"
    report = in_process(capsys, "inspect", *SMALL, "--layout", "NHWC")
    assert "transpose 1" in report  # the input enters channels-last through one transpose
    latency = json.loads(in_process(capsys, "run", build, "--repeat", "1", "--json", "--from-source"))
    assert latency["seconds"] > 0 and latency["output_shape"] == [1, 1000]


def test_bench_compares_methods():
    result = json.loads(ok(tvm_place("bench", *SMALL, *TWO_CPUS, "--objective", "throughput",
                                     "--methods", "greedy,dp", "--time-limit", "5", "--json",
                                     "--quiet")))
    values = {row["method"]: row["value"] for row in result["results"]}
    assert values["dp"] <= values["greedy"] * (1 + 1e-9)


@pytest.mark.parametrize("args, message", [
    (["place", "no-such-model"], "neither a registry model"),
    (["place", *SMALL, "--target", "llvm", "--pin", "conv*=gpu:0"], "matches no operator"),
    (["place", *SMALL, "--target", "vulkan"], "tvm-place places on"),
    (["place", *SMALL, "--target", "llvm", "--size", "image_size"], "NAME=VALUE"),
    (["place", "missing.onnx"], "does not exist"),
    (["run", "no-such-directory"], "manifest.json"),
])
def test_bad_input_exits_2_with_a_message(args, message, capsys):
    assert cli.main([*args, "--quiet"] if args[0] == "place" else args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["place", *SMALL, "--time-limit", "inf"], "'inf': give a finite number above 0"),
    (["place", *SMALL, "--time-limit", "nan"], "'nan': give a finite number above 0"),
    (["solve", "problem.json", "--time-limit", "-1"], "'-1': give a finite number above 0"),
    (["place", *SMALL, "--batch", "0"], "'0': give a whole number above 0"),
    (["run", "build", "--repeat", "0"], "'0': give a whole number above 0"),
    (["run", "build", "--inputs", "-3"], "'-3': give a whole number above 0"),
    (["run", "build", "--connect-timeout", "-5"], "'-5': give a finite number above 0"),
    (["tune", *SMALL, "--trials", "many"], "'many' is not a whole number"),
])
def test_bad_numbers_exit_2_before_any_work(args, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_a_plan_for_another_model_and_a_malformed_device_file(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert cli.main(["place", *SMALL, *TWO_CPUS, "--save-plan", str(plan), "--quiet"]) == 0
    # one plan format: what --save-plan writes is what check compares with (issue 15)
    assert cli.main(["check", "resnet18", "--plan", str(plan)]) == 0
    assert "placement matches" in capsys.readouterr().out
    model_file = tmp_path / "model.py"
    model_file.write_text(MODEL_FILE)
    capsys.readouterr()
    assert cli.main(["place", str(model_file), *TWO_CPUS, "--plan", str(plan), "--quiet"]) == 2
    assert "no longer matches" in capsys.readouterr().err
    bad = tmp_path / "devices.json"
    bad.write_text('{"devices": [')
    assert cli.main(["place", *SMALL, "--devices", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    result = tvm_place("--debug", "place", *SMALL, "--devices", bad)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_every_subcommand_has_help_with_examples(capsys):
    for command in ("models", "inspect", "place", "compile", "run", "solve", "bench", "check"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_devices_too_small_and_a_broken_model_file(tmp_path, capsys):
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"devices": [{"target": "llvm", "memory_bytes": 1000}]}))
    assert cli.main(["place", *SMALL, "--devices", str(tiny), "--quiet"]) == 2
    assert "capacity" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no weights here')\n")
    assert cli.main(["place", str(broken), "--quiet"]) == 2
    assert "no weights here" in capsys.readouterr().err


LLM_ARGS = ["llm", "tiny", "--layers", "2", "--target", "llvm", "--target", "llvm", "--prompt", "6",
            "--tokens", "4", "--time-limit", "5", "--quiet", "--json"]


def test_llm_places_prefill_and_decode_beside_the_baselines(capsys):
    assert cli.main(LLM_ARGS) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["predicted"]) == ["memory", "parameters", "tvm-place", "uniform"]
    assert all(p["decode_tokens_per_second"] > 0 and p["fits"] for p in result["predicted"].values())
    # The fastest-decoding candidate: the solver's placements and the user splits are among them.
    assert result["tvm_place_split"] in ["solver", "solver (contiguous)", *result["predicted"]]
    best = max(p["decode_tokens_per_second"] for p in result["predicted"].values())
    assert result["predicted"]["tvm-place"]["decode_tokens_per_second"] >= best * (1 - 1e-9)
    assert cli.main(["llm", "tiny", "--prompt", "60", "--tokens", "10", "--quiet"]) == 2
    assert "over the model's 64 tokens" in capsys.readouterr().err


@pytest.mark.slow
def test_llm_runs_every_split_and_they_generate_the_same_tokens(capsys):
    assert cli.main(LLM_ARGS + ["--run", "--micro-batches", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    measured = result["measured"]
    assert sorted(measured) == sorted(result["predicted"])
    # Every split generates the same tokens: two micro-batches of one sequence, four tokens each.
    tokens = {json.dumps(m["tokens"]) for m in measured.values()}
    assert len(tokens) == 1 and len(json.loads(tokens.pop())) == 2


@pytest.mark.parametrize("source, message", [
    ("import sys\nsys.exit(0)\n", "exited (sys.exit(0))"),
    ("def get_module(size):\n    return None\n", "calling get_module() of"),
])
def test_a_model_file_that_exits_or_needs_arguments_exits_2(tmp_path, capsys, source, message):
    model = tmp_path / "m.py"
    model.write_text(source)
    assert cli.main(["place", str(model), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_output_files_into_a_missing_folder_are_refused_before_any_work(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "plan.json"
    assert cli.main(["place", *SMALL, "--save-plan", str(missing), "--quiet"]) == 2
    assert "the folder" in capsys.readouterr().err and not missing.parent.exists()


@pytest.mark.parametrize("args, message", [
    (["inspect", "bert-layer", "--size", "seq_len=0"], "seq_len=0"),
    (["inspect", "resnet18", "--size", "image_size=abc"], "image_size='abc'"),
    (["place", "MODEL", *TWO_CPUS, "--pin", "fused_*=cpu:0", "--pin", "fused_matmul*=cpu:1"],
     "by pin 'fused_*' and to cpu:1 by pin 'fused_matmul*'"),
])
def test_sizes_of_zero_or_names_and_overlapping_pins_exit_2(tmp_path, capsys, args, message):
    model = tmp_path / "m.py"
    model.write_text(MODEL_FILE)
    assert cli.main([str(model) if a == "MODEL" else a for a in args] + ["--quiet"] * (args[0] == "place")) == 2
    assert message in capsys.readouterr().err


def test_check_replays_a_plan_saved_with_a_device_file_profile(tmp_path, capsys):
    devices = tmp_path / "hardware.json"
    devices.write_text(json.dumps({"devices": [
        {"target": "llvm"},
        {"target": "llvm", "profile": {"kind": "cpu", "peak_gflops": 500, "memory_bandwidth_gbs": 50,
                                       "memory_bytes": 8e9, "compute_efficiency": 0.2,
                                       "memory_efficiency": 0.5, "launch_overhead_us": 3,
                                       "link": {"bandwidth_gbs": 10, "latency_us": 2}}}]}))
    plan = tmp_path / "plan.json"
    assert cli.main(["place", *SMALL, "--devices", str(devices), "--save-plan", str(plan),
                     "--quiet"]) == 0
    recorded = json.loads(plan.read_text())["options"]["profiles"]
    assert recorded[0] is None and recorded[1]["peak_gflops"] == 500
    capsys.readouterr()
    assert cli.main(["check", "resnet18", "--plan", str(plan)]) == 0
    assert "placement matches" in capsys.readouterr().out
