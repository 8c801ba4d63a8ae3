"""Measure tvm-place on a real CUDA GPU: per-operator costs and end-to-end placed latency.

Runs where a CUDA GPU and its driver exist; the results in docs/gpu-results.md came from it.
After installing the project (``pip install -e .`` with TVM, see that page for the exact commands):

    PYTHONUNBUFFERED=1 python scripts/gpu_check.py --out OUT --phases env,ops,e2e,torch \\
        --models resnet50,bert-base --deadline 480 2>&1 | tee OUT/log

Phases (each writes one JSON file under ``--out``, rewritten after every item, so a run stopped by
its time limit keeps what it finished; ``--deadline`` seconds after the start nothing new begins):

``env``    the machine and versions (nvidia-smi, nvcc, CPU, TVM, torch), and whether a kernel built
           (as build_stages builds) for another architecture (``--foreign-arch``, default sm_80)
           loads on this GPU -> env.json
``ops``    every distinct kernel (fused operator) of each model, compiled alone, timed on the GPU by
           ``MeasuredCostModel`` and predicted by ``AnalyticalCostModel`` from the GPU's profile;
           mean absolute percentage error and Spearman rank correlation -> ops-<model>.json.
           ``--cpu-ops`` does the same on the CPU (which also feeds the ``measured`` placement below).
``e2e``    ``tvm_place.compile(model, [cpu, gpu])`` solved by tvm-place (analytical costs), all on
           the GPU, all on the CPU, and solved with measured costs; each run ``--runs`` times after
           warm-up (median), output compared with the unsplit ``tvm.compile(mod, "llvm")`` build,
           predicted latency from the placement's evaluator -> e2e-<model>.json
``torch``  PyTorch eager on the GPU (fp32, TF32 off and torch's defaults) for the same shapes
           -> torch.json

``--second llvm`` replaces the GPU by a second CPU device, to try the script on a machine without
a GPU (``--models`` small sizes with ``--small``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STARTED = time.monotonic()

#: Small sizes for trying the script on a CPU-only machine (``--small``).
SMALL = {
    "resnet50": dict(image_size=32),
    "resnet18": dict(image_size=32),
    "bert-base": dict(seq_len=8, hidden=64, heads=4, ffn=128, num_layers=2),
    "bert-layer": dict(seq_len=8, hidden=64, heads=4, ffn=128),
}


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f} s] {message}", flush=True)


def seconds_left(args, deadline: float | None = None) -> float:
    return min(args.deadline, deadline or args.deadline) - (time.monotonic() - STARTED)


class Results:
    """One JSON file, rewritten whenever an item is added."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {}

    def __setitem__(self, key, value):
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=_plain))

    def __getitem__(self, key):
        return self.data[key]


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def command_output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"unavailable ({err})"


def gpu_target(args) -> dict:
    """The GPU target: ``cuda`` with this GPU's architecture (or the ``--second`` stand-in)."""
    import tvm

    if args.second != "cuda":
        return {"kind": args.second}
    arch = args.arch or "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    return {"kind": "cuda", "arch": arch}


def synchronize(args) -> None:
    import tvm

    if args.second == "cuda":
        tvm.cuda(0).sync()


def load_model(name: str, args):
    from tvm_place import models

    return models.get(name, batch=1, **(SMALL.get(name, {}) if args.small else {}))


# -- statistics -------------------------------------------------------------------------------


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        result[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(a, b) -> float:
    a, b = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def accuracy(predicted, measured, counts) -> dict:
    """How well ``predicted`` seconds match ``measured`` ones, per kernel and summed over calls."""
    predicted, measured, counts = (np.asarray(x, float) for x in (predicted, measured, counts))
    error = np.abs(predicted - measured) / measured
    return {
        "kernels": int(len(measured)),
        "mape": float(error.mean()),
        "median_ape": float(np.median(error)),
        "spearman": spearman(predicted, measured),
        "median_measured_over_predicted": float(np.median(measured / predicted)),
        "sum_predicted_s": float((predicted * counts).sum()),
        "sum_measured_s": float((measured * counts).sum()),
    }


# -- phases -----------------------------------------------------------------------------------


def phase_env(args, out: Path) -> None:
    import tvm
    import tvm_ffi

    results = Results(out / "env.json")
    results["date_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    results["nvidia_smi"] = command_output(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,"
            "pstate,temperature.gpu,utilization.gpu",
            "--format=csv",
        ]
    )
    results["nvcc"] = command_output(["nvcc", "--version"]).splitlines()[-2:]
    cpu_lines = [
        line
        for line in command_output(["lscpu"]).splitlines()
        if line.split(":")[0].strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L3 cache")
    ]
    results["cpu"] = cpu_lines
    versions = {"python": platform.python_version(), "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__,
                "numpy": np.__version__}
    for package in ("torch", "torchvision", "ortools", "cuda.bindings"):
        try:
            module = __import__(package, fromlist=["__version__"])
            versions[package] = getattr(module, "__version__", "?")
        except Exception as err:  # noqa: BLE001 - report whatever stops the import
            versions[package] = f"unavailable ({type(err).__name__}: {err})"
    results["versions"] = versions
    device = tvm.cuda(0)
    gpu = {"exist": bool(device.exist)}
    if device.exist:
        for attribute in ("device_name", "compute_version", "multi_processor_count",
                          "max_threads_per_block", "total_global_memory"):
            try:
                gpu[attribute] = getattr(device, attribute)
            except Exception as err:  # noqa: BLE001
                gpu[attribute] = f"unavailable ({err})"
    results["tvm_cuda_device"] = gpu
    log(f"env: {json.dumps(results.data, default=_plain)[:3000]}")
    if args.second == "cuda" and device.exist:
        results["foreign_arch_kernel"] = foreign_arch_check(args.foreign_arch)
        log(f"a kernel built for {args.foreign_arch}: {results['foreign_arch_kernel']}")


def foreign_arch_check(arch: str) -> dict:
    """Build one small Relax function for ``cuda -arch=arch`` and try to run it on this GPU."""
    import tvm
    from tvm import relax

    from tvm_place.passes.build import gpu_schedule_pass

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((64, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.exp(x))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "cuda", "arch": arch})
    try:
        # Inside the target's scope, as build_stages compiles: TVM's CUDA compile callback takes
        # the arch from the current target, and outside any scope it uses this GPU's instead.
        with target:
            mod = relax.transform.LegalizeOps()(bb.get())
            mod = gpu_schedule_pass()(mod)
            executable = tvm.compile(mod, target=target)
        vm = relax.VirtualMachine(executable, tvm.cuda(0))
        data = np.random.default_rng(0).standard_normal((64, 64)).astype("float32")
        result = vm["main"](tvm.runtime.tensor(data, tvm.cuda(0))).numpy()
        return {"arch": arch, "ran": True, "max_abs_error": float(np.abs(result - np.exp(data)).max())}
    except Exception as err:  # noqa: BLE001 - the failure is the finding
        return {"arch": arch, "ran": False, "error": str(err).strip().splitlines()[-1][:500]}


def phase_ops(args, out: Path) -> None:
    from tvm_place.compiler import prepare
    from tvm_place.cost import AnalyticalCostModel, MeasuredCostModel
    from tvm_place.passes import collect_op_graph
    from tvm_place.targets import resolve_targets

    cpu, gpu = resolve_targets(["llvm", gpu_target(args)])
    measured = MeasuredCostModel(cache_dir=args.cache)
    analytical = AnalyticalCostModel()
    prepared_models = {}
    for name in args.models:
        results = Results(out / f"ops-{name}.json")
        started = time.monotonic()
        prepared = prepare(load_model(name, args).mod)
        collected = collect_op_graph(prepared)
        kernels: dict[str, dict] = {}
        for node, callee in zip(collected.graph.nodes, collected.callees):
            entry = kernels.setdefault(
                callee,
                {"kernel": callee, "calls": 0, "flops": node.flops, "bytes": node.bytes_accessed, "node": node},
            )
            entry["calls"] += 1
        results["model"] = {"name": name, "operators": len(collected.graph), "kernels": len(kernels),
                            "prepare_s": time.monotonic() - started}
        log(f"ops {name}: {len(collected.graph)} operators, {len(kernels)} distinct kernels")
        prepared_models[name] = (prepared, kernels, results)
    # Every model on the GPU first, then (--cpu-ops) on the CPU.
    for device in [gpu] + ([cpu] if args.cpu_ops else []):
        for name, (prepared, kernels, results) in prepared_models.items():
            rows = []
            for number, entry in enumerate(kernels.values()):
                if seconds_left(args, args.ops_deadline) < 10:
                    log(f"ops {name} on {device.name}: stopped at kernel {number} (deadline)")
                    break
                func = prepared[entry["kernel"]]
                row = {k: v for k, v in entry.items() if k != "node"}
                row["predicted_s"] = analytical.op_time(func, entry["node"], device)[0]
                began = time.monotonic()
                try:
                    row["measured_s"], row["source"] = measured.op_time(func, entry["node"], device)
                except Exception as err:  # noqa: BLE001 - a kernel that fails is recorded, not fatal
                    row["error"] = str(err).strip().splitlines()[-1][:300]
                    log(f"  {entry['kernel']}: FAILED {row['error']}")
                row["measure_wall_s"] = time.monotonic() - began
                rows.append(row)
            timed = [r for r in rows if "measured_s" in r]
            summary = accuracy(
                [r["predicted_s"] for r in timed], [r["measured_s"] for r in timed], [r["calls"] for r in timed]
            ) if timed else {}
            summary.update(profile=device.profile.name, target=str(device.target),
                           failed=len(rows) - len(timed), not_reached=len(kernels) - len(rows))
            results[device.name] = {"summary": summary, "kernels": rows}
            log(f"ops {name} on {device.name} ({device.profile.name}): {json.dumps(summary, default=_plain)}")
    del prepared_models
    gc.collect()


def timed_runs(function, args, warmup: int, runs: int, budget: float) -> list[float]:
    """Wall seconds of ``function()`` (device synchronized) after ``warmup`` calls; at least 2
    timed runs, at most ``runs``, stopping once ``budget`` seconds are spent."""
    for _ in range(warmup):
        function()
        synchronize(args)
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < runs:
        start = time.perf_counter()
        function()
        synchronize(args)
        times.append(time.perf_counter() - start)
        if len(times) >= 2 and time.perf_counter() - began > budget:
            break
    return times


def summarize(times: list[float]) -> dict:
    array = np.asarray(times)
    return {"runs": len(times), "median_s": float(np.median(array)), "min_s": float(array.min()),
            "max_s": float(array.max())}


def phase_e2e(args, out: Path) -> None:
    import tvm
    from tvm import relax

    targets = ["llvm", gpu_target(args)]
    for name in args.e2e_models or args.models:
        if seconds_left(args) < 60:
            log(f"e2e {name}: skipped (deadline)")
            continue
        results = Results(out / f"e2e-{name}.json")
        model = load_model(name, args)
        inputs = model.inputs
        results["model"] = {"name": name, "description": model.description,
                            "input_shapes": [list(x.shape) for x in inputs], "targets": targets}

        began = time.monotonic()
        executable = tvm.compile(model.mod, target="llvm")
        compile_s = time.monotonic() - began
        vm = relax.VirtualMachine(executable, tvm.cpu())
        tvm_inputs = [tvm.runtime.tensor(x) for x in inputs]
        began = time.perf_counter()
        reference = vm["main"](*tvm_inputs).numpy()
        results["unsplit_cpu_build"] = {"compile_s": compile_s, "one_run_s": time.perf_counter() - began,
                                        "output_abs_max": float(np.abs(reference).max())}
        log(f"e2e {name}: unsplit CPU build {results['unsplit_cpu_build']}")
        del vm, executable
        gc.collect()

        # The CPU-only run needs about a compile and four runs of the unsplit build.
        cpu_need = compile_s + 4 * results["unsplit_cpu_build"]["one_run_s"] + 20
        configs = [
            ("solved-analytical-latency", dict(objective="latency", time_limit=args.time_limit,
                                               cost_model="analytical"), 60),
            ("gpu-only", dict(objective="latency", placement="gpu", cost_model="analytical"), 60),
            ("solved-analytical-throughput", dict(objective="throughput", time_limit=args.time_limit,
                                                  cost_model="analytical"), 60),
        ]
        if args.measured_placement:
            configs.append(("solved-measured-latency",
                            dict(objective="latency", time_limit=args.time_limit, cost_model="measured"), 60))
        configs.append(("cpu-only", dict(objective="latency", placement="cpu", cost_model="analytical"),
                        cpu_need))
        seen: dict[tuple, str] = {}
        for label, options, need in configs:
            if seconds_left(args) < need:
                results[label] = {"skipped": "deadline"}
                log(f"e2e {name} {label}: skipped (deadline)")
                continue
            try:
                results[label] = run_config(args, model, targets, label, dict(options), reference, seen)
            except Exception as err:  # noqa: BLE001 - record the failure and go on
                results[label] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:500]}"}
            log(f"e2e {name} {label}: {json.dumps(results[label], default=_plain)[:1500]}")
            gc.collect()


def run_config(args, model, targets, label, options, reference, seen) -> dict:
    import tvm_place
    from tvm_place.compiler import prepare
    from tvm_place.evaluate import evaluate
    from tvm_place.passes import collect_op_graph

    fixed = options.pop("placement", None)
    if fixed is not None:
        num_ops = len(collect_op_graph(prepare(model.mod)).graph)
        options["placement"] = np.full(num_ops, 1 if fixed == "gpu" else 0, dtype=np.int64)
        if tuple(options["placement"].tolist()) in seen:  # built and measured already
            return {"same_placement_as": seen[tuple(options["placement"].tolist())]}
    began = time.monotonic()
    placed = tvm_place.compile(model.mod, targets, name=model.name, **options)
    compile_s = time.monotonic() - began
    device_of = placed.placement.device_of
    evaluation = evaluate(placed.problem, placed.placement)
    result = {
        "compile_s": compile_s,
        "method": placed.placement.method,
        "objective": placed.placement.objective,
        "ops_per_device": [int((device_of == d).sum()) for d in range(placed.problem.num_devices)],
        "stages": sum(1 for s in placed.plan.steps if s["kind"] == "call"),
        "copies": placed.plan.num_copies,
        "predicted_latency_s": float(evaluation.latency),
        "predicted_max_stage_s": float(evaluation.max_load),
        "lower_bound_s": float(placed.placement.lower_bound),
        "report_head": placed.report().split("\n\n")[0],
    }
    key = tuple(device_of.tolist())
    if key in seen:
        result["same_placement_as"] = seen[key]
    seen.setdefault(key, label)
    output = placed(*model.inputs)
    output = output[0] if isinstance(output, tuple) else output
    error = np.abs(output.numpy() - reference)
    result["max_abs_error"] = float(error.max())
    result["max_rel_error"] = float(error.max() / max(np.abs(reference).max(), 1e-30))
    on_cpu_only = result["ops_per_device"][1] == 0 and args.second == "cuda"
    budget = args.cpu_budget if on_cpu_only else args.gpu_budget
    times = timed_runs(lambda: placed(*model.inputs), args, warmup=1 if on_cpu_only else 3,
                       runs=args.runs, budget=budget)
    result["measured"] = summarize(times)
    result["measured_over_predicted"] = result["measured"]["median_s"] / result["predicted_latency_s"]
    if result["stages"] > 1 and not on_cpu_only and seconds_left(args) > 60:
        try:
            placed.run_stream([tuple(model.inputs)] * args.stream, depth=2)
            stats = placed.last_stats
            result["stream"] = {"inputs": args.stream, "throughput_per_s": float(stats.throughput),
                                "compare": placed.compare()}
        except Exception as err:  # noqa: BLE001
            result["stream"] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"}
    placed.close()
    return result


def phase_torch(args, out: Path) -> None:
    import torch

    results = Results(out / "torch.json")
    if not torch.cuda.is_available():
        results["error"] = "torch sees no CUDA device"
        return
    device = torch.device("cuda")
    rng = torch.Generator().manual_seed(0)
    builders = {}
    if "resnet50" in args.models:
        import torchvision

        builders["resnet50"] = (lambda: torchvision.models.resnet50(weights=None), (1, 3, 224, 224))
    if "bert-base" in args.models:
        def bert():
            layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, activation="gelu",
                                                     batch_first=True, norm_first=False)
            return torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)

        builders["bert-base"] = (bert, (1, 128, 768))
    for name, (build, shape) in builders.items():
        entry = {"shape": list(shape)}
        module = build().eval()
        x = torch.randn(*shape, generator=rng)
        # torch's defaults: TF32 off for matmuls, on for cuDNN convolutions
        for mode, matmul_tf32, cudnn_tf32 in (("fp32_no_tf32", False, False), ("torch_defaults", False, True)):
            torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
            torch.backends.cudnn.allow_tf32 = cudnn_tf32
            gpu_module, gpu_x = module.to(device), x.to(device)
            with torch.no_grad():
                for _ in range(10):
                    gpu_module(gpu_x)
                torch.cuda.synchronize()
                times = []
                for _ in range(50):
                    start = time.perf_counter()
                    gpu_module(gpu_x)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
            entry[f"gpu_{mode}"] = summarize(times)
        with torch.no_grad():
            cpu_module = module.to("cpu")
            cpu_module(x)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                cpu_module(x)
                times.append(time.perf_counter() - start)
        entry["cpu"] = dict(summarize(times), threads=torch.get_num_threads())
        results[name] = entry
        log(f"torch {name}: {json.dumps(entry)}")


def print_summary(out: Path) -> None:
    """One line per measured item of every result file under ``out``."""
    for path in sorted(out.glob("ops-*.json")):
        for key, value in json.loads(path.read_text()).items():
            if isinstance(value, dict) and "summary" in value:
                s = value["summary"]
                print(f"{path.stem:<18} {key:<6} {s.get('profile', ''):<10} kernels {s.get('kernels', 0):>3} "
                      f"failed {s.get('failed', 0)}  MAPE {s.get('mape', float('nan')):7.2f}  "
                      f"spearman {s.get('spearman', float('nan')):5.2f}  sum pred "
                      f"{1e3 * s.get('sum_predicted_s', 0):8.2f} ms  sum meas {1e3 * s.get('sum_measured_s', 0):8.2f} ms")
    for path in sorted(out.glob("e2e-*.json")):
        for key, value in json.loads(path.read_text()).items():
            if not isinstance(value, dict) or key == "model":
                continue
            if "measured" in value:
                print(f"{path.stem:<18} {key:<30} ops {value['ops_per_device']}  pred "
                      f"{1e3 * value['predicted_latency_s']:9.3f} ms  meas {1e3 * value['measured']['median_s']:9.3f} ms"
                      f"  err {value['max_abs_error']:.2e}  compile {value['compile_s']:.0f} s")
            else:
                print(f"{path.stem:<18} {key:<30} {json.dumps(value)[:200]}")
    torch_path = out / "torch.json"
    if torch_path.exists():
        for key, value in json.loads(torch_path.read_text()).items():
            if isinstance(value, dict):
                print(f"torch {key:<12} " + "  ".join(
                    f"{mode} {1e3 * v['median_s']:.3f} ms" for mode, v in value.items() if isinstance(v, dict)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--phases", default="env,ops,e2e,torch")
    parser.add_argument("--models", default="resnet50,bert-base")
    parser.add_argument("--deadline", type=float, default=480.0, help="seconds after which nothing new starts")
    parser.add_argument("--ops-deadline", type=float, default=None, help="the ops phase stops here")
    parser.add_argument("--cache", default=os.environ.get("TVM_PLACE_CACHE_DIR"),
                        help="measured-cost cache directory (default: TVM_PLACE_CACHE_DIR or ~/.cache)")
    parser.add_argument("--e2e-models", default=None, help="models of the e2e phase (default: --models)")
    parser.add_argument("--cpu-ops", action="store_true", help="also time every kernel on the CPU")
    parser.add_argument("--measured-placement", action="store_true",
                        help="e2e: also solve with cost_model='measured'")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--gpu-budget", type=float, default=20.0, help="seconds of timed runs per GPU config")
    parser.add_argument("--cpu-budget", type=float, default=20.0, help="seconds of timed runs per CPU-only config")
    parser.add_argument("--stream", type=int, default=20, help="inputs of the throughput stream")
    parser.add_argument("--time-limit", type=float, default=10.0, help="solver time limit")
    parser.add_argument("--arch", default=None, help="GPU arch (default: this GPU's)")
    parser.add_argument("--foreign-arch", default="sm_80")
    parser.add_argument("--second", default="cuda", help="second target kind ('llvm' to try without a GPU)")
    parser.add_argument("--small", action="store_true", help="small model sizes (trying the script)")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.e2e_models = [m for m in (args.e2e_models or "").split(",") if m]
    args.out.mkdir(parents=True, exist_ok=True)
    phases = {"env": phase_env, "ops": phase_ops, "e2e": phase_e2e, "torch": phase_torch}
    failed = []
    for phase in args.phases.split(","):
        log(f"== phase {phase}")
        try:
            phases[phase](args, args.out)
        except Exception:  # noqa: BLE001 - one phase failing must not lose the others
            import traceback

            traceback.print_exc()
            failed.append(phase)
    print_summary(args.out)
    log(f"done; failed phases: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
