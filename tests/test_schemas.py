"""Every file format is checked at the boundary against its schema (tvm_place/schemas.py): problem
files, plans, device files and profiles, export manifests (and the libraries they name), cost
caches. Each bad file gives the project's error naming the file, the field, what is wrong and the
fix; nothing a file names runs or loads before it is checked."""

import copy
import json
import os
import shutil

import pytest

from test_cli_commands import MODEL_FILE
from tvm_place import cli
from tvm_place.errors import (ArtifactVersionWarning, InvalidArtifactError, InvalidGraphError,
                              InvalidPlacementError, InvalidTargetError, TvmPlaceError)
from tvm_place.formats import (load_device_file, load_placement, load_problem, problem_from_dict,
                               read_plan)

PROBLEM = {
    "format": "tvm-place-problem", "version": 1, "name": "two",
    "devices": [{"name": "cpu:0", "kind": "cpu"}, {"name": "gpu:0", "kind": "gpu", "memory_capacity": 1e9}],
    "nodes": [
        {"name": "a", "compute_time": [1.0, None], "transfer_time": [0.1, 0.1], "flops": 1e6},
        {"name": "b", "compute_time": [2.0, 0.5], "transfer_time": [0.1, 0.1], "memory": 10},
    ],
    "edges": [[0, 1]], "pins": {"1": [1]}, "colour_classes": [[0, 1]],
}


def mutated(change) -> dict:
    data = copy.deepcopy(PROBLEM)
    change(data)
    return data


def test_the_valid_problem_loads():
    problem = problem_from_dict(PROBLEM)
    assert problem.num_ops == 2 and problem.pins == {1: (1,)} and problem.colour_classes == [[0, 1]]


@pytest.mark.parametrize("change, field, words", [
    (lambda d: d.update(pins=[[0, 1]]), "pins", "is a list, expected an object"),
    (lambda d: d["nodes"][0].update(flops="lots"), "nodes[0].flops", "'lots' is a string"),
    (lambda d: d.update(nodes=5), "nodes", "5 is a number, expected a list"),
    (lambda d: d["nodes"][1].update(compute_time=[True, 1.0]), "nodes[1].compute_time[0]",
     "True is a boolean"),
    (lambda d: d["nodes"][1].update(memory=float("nan")), "nodes[1].memory", "not a finite number"),
    (lambda d: d["nodes"][1].update(memory=float("inf")), "nodes[1].memory", "not a finite number"),
    (lambda d: d["nodes"][0].update(compute_time=[-1.0, 1.0]), "nodes[0].compute_time[0]",
     "out of range"),
    (lambda d: d.update(colour_classes=[[0, 7]]), "colour_classes[0][1]", "node 7 does not exist"),
    (lambda d: d.update(pins={"5": [0]}), "pins.5", "node 5 does not exist"),
    (lambda d: d.update(pins={"0": [3]}), "pins.0[0]", "device 3 does not exist"),
    (lambda d: d.update(edges=[[0, 9]]), "edges[0][1]", "node 9 does not exist"),
    (lambda d: d["nodes"][0].update(flosp=1), "nodes[0]", "unknown key 'flosp' (did you mean 'flops'?)"),
    (lambda d: d["nodes"][0].update(compute_time=[1.0]), "nodes[0].compute_time",
     "gives 1 times for 2 devices"),
    (lambda d: d["devices"][0].pop("name"), "devices[0]", "missing 'name'"),
    (lambda d: d.update(version=2), "version", "version 2 is not supported"),
    (lambda d: d.update(format="other"), "format", "not a tvm-place problem"),
    (lambda d: d.update(devices=[]), "devices", "at least 1"),
])
def test_a_bad_problem_names_the_field_and_what_is_wrong(change, field, words):
    with pytest.raises(InvalidGraphError) as raised:
        problem_from_dict(mutated(change), "problem file 'p.json'")
    message = str(raised.value)
    assert message.startswith(f"problem file 'p.json': {field}: ") and words in message
    assert "fix: " in message


@pytest.mark.parametrize("content, words", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"\x00\xff\xfe\x89PNG\r\n", "not a text file"),
    (b"{broken", r"not valid JSON \(line 1"),
    (b"[1, 2]", "not a tvm-place problem"),
])
def test_a_file_that_is_no_problem_file_gets_a_clear_error(tmp_path, content, words):
    path = tmp_path / "problem.json"
    path.write_bytes(content)
    with pytest.raises(InvalidGraphError, match=words):
        load_problem(path)


def test_a_directory_or_an_unreadable_file(tmp_path):
    with pytest.raises(InvalidGraphError, match="is a directory"):
        load_problem(tmp_path)
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(PROBLEM))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything
            pytest.skip("this user can read a file of mode 000")
        with pytest.raises(InvalidGraphError, match="permission denied"):
            load_problem(path)
    finally:
        path.chmod(0o644)


# -- device files and profiles --------------------------------------------------------------------

FULL_PROFILE = {"kind": "gpu", "arch": "sm_80", "peak_gflops": 1000, "memory_bandwidth_gbs": 100,
                "memory_bytes": 8e9, "compute_efficiency": 0.3, "memory_efficiency": 0.6,
                "launch_overhead_us": 5, "link": {"bandwidth_gbs": 16, "latency_us": 10}}


@pytest.mark.parametrize("entry, field, words", [
    ({"target": "llvm", "memroy_bytes": 1e9}, "devices[0]",
     "unknown key 'memroy_bytes' (did you mean 'memory_bytes'?)"),
    ({"target": "cuda", "profile": {**FULL_PROFILE, "peak_gflops": -100}},
     "devices[0].profile.peak_gflops", "-100 is out of range: give a number above 0"),
    ({"target": "llvm", "compute_efficiency": 50}, "devices[0].compute_efficiency", "at most 1"),
    ({"target": "llvm", "link": {"bandwidth_gbs": 0, "latency_us": 1}},
     "devices[0].link.bandwidth_gbs", "above 0"),
    ({"target": "llvm", "memory_bytes": True}, "devices[0].memory_bytes", "True is a boolean"),
    ({"target": {"arch": "sm_80"}}, "devices[0].target", "missing 'kind'"),
    ({"target": "cuda", "profile": {"kind": "gpu"}}, "devices[0]", "missing 'peak_gflops'"),
])
def test_a_bad_device_file_names_the_field(tmp_path, entry, field, words):
    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"devices": [entry]}))
    with pytest.raises(InvalidTargetError) as raised:
        load_device_file(path)
    assert str(raised.value).startswith(f"device file {str(path)!r}: {field}: ")
    assert words in str(raised.value)


def test_device_files_in_toml_and_json_load_and_misspellings_are_caught_in_both(tmp_path):
    good = tmp_path / "devices.toml"
    good.write_text('[[devices]]\ntarget = "llvm"\nmemory_bytes = 1e9\n\n'
                    '[[devices]]\ntarget = { kind = "cuda", arch = "sm_75" }\nprofile = "t4"\n')
    targets, profiles = load_device_file(good)
    assert targets[1] == {"kind": "cuda", "arch": "sm_75"} and profiles[0].memory_bytes == 1e9
    bad = tmp_path / "bad.toml"
    bad.write_text('[[devices]]\ntarget = "llvm"\nmemroy_bytes = 1e9\n')
    with pytest.raises(InvalidTargetError, match="did you mean 'memory_bytes'"):
        load_device_file(bad)
    with pytest.raises(InvalidTargetError, match="did you mean 'a100'"):
        from tvm_place.cost.profiles import device_profile

        device_profile("a10")


def test_profiles_are_checked_wherever_they_come_from():
    from tvm_place.cost.profiles import profile_from_dict, profile_names, device_profile

    assert all(device_profile(name).peak_gflops > 0 for name in profile_names())
    with pytest.raises(InvalidTargetError, match="memory_efficiency: 50 is out of range"):
        profile_from_dict("x", {**FULL_PROFILE, "memory_efficiency": 50})
    with pytest.raises(InvalidTargetError, match="link.bandwidth_gbs: 0 is out of range"):
        profile_from_dict("x", {**FULL_PROFILE, "link": {"bandwidth_gbs": 0, "latency_us": 1}})
    with pytest.raises(InvalidTargetError, match="kind: is 'tpu', expected one of"):
        profile_from_dict("x", {**FULL_PROFILE, "kind": "tpu"})


def test_a_device_file_misspelling_exits_2_on_the_cli(tmp_path, capsys):
    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"devices": [{"target": "llvm", "memroy_bytes": 1000}]}))
    assert cli.main(["place", "resnet18", "--size", "image_size=32", "--devices", str(path)]) == 2
    assert "did you mean 'memory_bytes'" in capsys.readouterr().err


# -- plans and placements ---------------------------------------------------------------------------

PLAN = {
    "format": "tvm-place-plan", "version": 1, "model": {"name": "m", "sizes": {}, "batch": 1, "seed": 0},
    "targets": ["llvm", "llvm"], "devices": ["cpu:0", "cpu:1"],
    "options": {"objective": "latency", "method": "auto", "time_limit": 60.0,
                "cost_model": "analytical", "profiles": None, "pins": None},
    "objective": "latency", "value": 2.0, "lower_bound": 1.0, "method": "dp",
    "ops": [["a", "cpu:0"], ["b", "cpu:1"]],
}


def test_a_plan_loads_as_its_placement_and_a_bare_placement_still_loads(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    placement = load_placement(path)
    assert placement.device_of.tolist() == [0, 1] and placement.operators == ["a", "b"]
    assert placement.device_names == ["cpu:0", "cpu:1"] and placement.gap == pytest.approx(0.5)
    bare = tmp_path / "placement.json"
    bare.write_text(placement.to_json())
    assert load_placement(bare).device_of.tolist() == [0, 1]
    with pytest.raises(InvalidPlacementError, match="bare placement"):
        read_plan(bare)  # what check reads: the plan of a model


@pytest.mark.parametrize("change, words", [
    (lambda p: p.update(ops=[["a", "gpu:3"], ["b", "cpu:1"]]), "ops[0][1]: device 'gpu:3' is not"),
    (lambda p: p["options"].update(time_limit=-1), "options.time_limit: -1 is out of range"),
    (lambda p: p.update(value="fast"), "value: 'fast' is a string"),
    (lambda p: p.update(objectiv="latency"), "did you mean 'objective'"),
    (lambda p: p.update(order=[0, 0]), "order: is not an order of the 2 operators"),
    (lambda p: p.pop("ops"), "missing 'ops'"),
])
def test_a_bad_plan_names_the_field(tmp_path, change, words):
    plan = copy.deepcopy(PLAN)
    change(plan)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(InvalidPlacementError) as raised:
        load_placement(path)
    assert words in str(raised.value) and str(path) in str(raised.value)


def test_a_bad_placement_names_the_field(tmp_path):
    from tvm_place.graph import Placement

    good = Placement([0, 1], "latency", 2.0, 1.0, "dp", device_names=["a", "b"]).to_dict()
    for change, words in [({"device_of": [0, 5]}, "device_of[1]: device 5 does not exist"),
                          ({"device_of": [0, True]}, "device_of[1]: True is a boolean"),
                          ({"objective": "speed"}, "objective: is 'speed', expected one of")]:
        with pytest.raises(InvalidPlacementError, match=words.replace("[", r"\[")):
            Placement.from_dict({**good, **change})


# -- exports ----------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export") / "build"
    model = directory.parent / "model.py"
    model.write_text(MODEL_FILE)
    assert cli.main(["compile", str(model), "--target", "llvm", "--output", str(directory),
                     "--quiet"]) == 0
    return directory


@pytest.fixture
def export(exported, tmp_path):
    copy_ = tmp_path / "build"
    shutil.copytree(exported, copy_)
    return copy_


def edit_manifest(directory, change):
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_an_export_records_and_checks_a_sha256_per_library(export):
    import tvm_place

    manifest = json.loads((export / "manifest.json").read_text())
    assert set(manifest["sha256"]) == set(manifest["libraries"])
    assert all(len(digest) == 64 for digest in manifest["sha256"].values())
    assert tvm_place.load(export).plan.inputs == ["x", "w"]


def test_a_truncated_or_edited_library_is_refused_before_tvm_loads_it(export, capsys):
    import tvm_place

    library = next(export.glob("*.so"))
    library.write_bytes(library.read_bytes()[:4096])  # TVM mapping this killed the process (SIGBUS)
    with pytest.raises(InvalidArtifactError, match=f"library '{library.name}' is not the one exported"):
        tvm_place.load(export)
    assert cli.main(["run", str(export)]) == 2
    err = capsys.readouterr().err
    assert library.name in err and "sha256" in err and "Traceback" not in err


@pytest.mark.parametrize("change, words", [
    (lambda m: m["libraries"].update({next(iter(m["libraries"])): "/etc/passwd"}), "outside the export"),
    (lambda m: m["libraries"].update({next(iter(m["libraries"])): "../build/x.so"}), "outside the export"),
    (lambda m: m["libraries"].update({next(iter(m["libraries"])): "gone.so"}), "'gone.so' is missing"),
    (lambda m: m.pop("sha256"), "records no sha256"),
    (lambda m: m.update(libraris=m.pop("libraries")), "did you mean 'libraries'"),
    (lambda m: m["devices"][0].update(index="zero"), "devices[0].index: 'zero' is a string"),
    (lambda m: m["placement"].update(device_of="all"), "placement: device_of: 'all' is a string"),
    (lambda m: m["problem"]["nodes"][0].update(flops=True), "problem: nodes[0].flops: True"),
    (lambda m: m.update(libraries={}), "libraries: is empty"),
])
def test_an_edited_manifest_is_refused_with_the_field(export, change, words):
    import tvm_place

    edit_manifest(export, change)
    with pytest.raises(TvmPlaceError) as raised:
        tvm_place.load(export)
    assert words in str(raised.value) and "manifest.json" in str(raised.value)


def test_a_missing_library_is_an_error(export):
    import tvm_place

    next(export.glob("*.so")).unlink()
    with pytest.raises(InvalidArtifactError, match="is missing from"):
        tvm_place.load(export)


def test_an_export_of_the_older_artifact_format_is_refused_saying_to_export_again(export, capsys):
    """Format 1 (a library per stage, each called as `main`) cannot run on a runtime that calls
    stages by name in a library per device."""
    import tvm_place

    edit_manifest(export, lambda m: m.update(version=1))
    with pytest.raises(InvalidArtifactError, match=r"older tvm-place \(artifact format 1.*export the model again"):
        tvm_place.load(export)
    assert cli.main(["run", str(export)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_stage_call_without_its_module_is_refused_with_the_field(export):
    import tvm_place

    edit_manifest(export, lambda m: m["plan"]["steps"][0].pop("module"))
    with pytest.raises(InvalidArtifactError, match=r"plan\.steps\[0\].*export the model again"):
        tvm_place.load(export)


def test_an_export_of_another_tvm_version_loads_with_a_warning(export):
    import tvm_place

    edit_manifest(export, lambda m: m.update(tvm_version="0.1.0"))
    with pytest.warns(ArtifactVersionWarning, match="written with TVM 0.1.0"):
        tvm_place.load(export)


# -- cost caches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, kept", [
    ("{not json", {}),
    ("[1, 2, 3]", {}),
    ('{"a": 0.5, "b": -1, "c": "no cuda", "d": true, "e": [1]}', {"a": 0.5, "c": "no cuda"}),
])
def test_a_corrupt_cost_cache_is_ignored_with_a_warning_and_rewritten(tmp_path, content, kept):
    from tvm_place.cost.measured import CostCache, CostCacheWarning

    (tmp_path / "measured-costs.json").write_text(content)
    with pytest.warns(CostCacheWarning, match="cost cache"):
        cache = CostCache(tmp_path)
    assert cache.entries == kept
    cache.put("k", 1.5)
    assert json.loads((tmp_path / "measured-costs.json").read_text()) == {**kept, "k": 1.5}


def test_a_cost_cache_that_is_a_directory_is_ignored(tmp_path):
    from tvm_place.cost.measured import CostCache, CostCacheWarning

    (tmp_path / "measured-costs.json").mkdir()
    with pytest.warns(CostCacheWarning, match="is a directory"):
        assert CostCache(tmp_path).entries == {}


def test_a_cost_cache_that_cannot_be_written_keeps_entries_for_the_run(tmp_path):
    from tvm_place.cost.measured import CostCache, CostCacheWarning

    (tmp_path / "file").write_text("x")
    cache = CostCache(tmp_path / "file")  # --cost-cache naming a file, not a folder
    with pytest.warns(CostCacheWarning, match="is not a folder"):
        cache.put("k", 1.0)
    assert cache.get("k") == 1.0


# -- dnn-partitioning workloads and splits ----------------------------------------------------------

WORKLOAD = {"maxSizePerFPGA": 100.0, "maxFPGAs": 1, "maxCPUs": 1,
            "nodes": [{"id": 0, "cpuLatency": 1.0, "fpgaLatency": 0.5, "supportedOnFpga": 1, "size": 1},
                      {"id": 1, "cpuLatency": 2.0, "fpgaLatency": 0.5, "supportedOnFpga": True, "size": 1}],
            "edges": [{"sourceId": 0, "destId": 1, "cost": 0.1}]}


@pytest.mark.parametrize("change, words", [
    (lambda w: w["nodes"][0].update(cpuLatency=True), "nodes[0].cpuLatency: True is a boolean"),
    (lambda w: w["nodes"][0].update(cpuLatncy=1), "did you mean 'cpuLatency'"),
    (lambda w: w.update(maxFPGAs=-1), "maxFPGAs: -1 is out of range"),
    (lambda w: w["edges"][0].update(cost="high"), "edges[0].cost: 'high' is a string"),
])
def test_a_bad_dnn_partitioning_workload_names_the_field(change, words):
    from tvm_place.formats import dnn_partitioning_problem

    assert dnn_partitioning_problem(WORKLOAD).num_ops == 2
    workload = copy.deepcopy(WORKLOAD)
    change(workload)
    with pytest.raises(InvalidGraphError, match=words.replace("[", r"\[")):
        dnn_partitioning_problem(workload)


def test_a_bad_dnn_partitioning_split_names_the_field():
    from tvm_place.formats import dnn_partitioning_problem, dnn_split_to_device_of

    problem = dnn_partitioning_problem(WORKLOAD)
    assert dnn_split_to_device_of({"fpgas": [{"nodes": [0, 1]}]}, problem).tolist() == [0, 0]
    with pytest.raises(InvalidGraphError, match=r"fpgas\[0\].nodes\[1\]: '1' is a string"):
        dnn_split_to_device_of({"fpgas": [{"nodes": [0, "1"]}]}, problem)
