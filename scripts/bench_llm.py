"""LLM decode on unequal devices: tvm-place's placement beside the layer splits users make.

Devices: two Ray actors, each pinned to one core with one TVM thread (this process too). The
slow one is held to a fraction of its core by a cgroup (the v1 cpu controller's
``cfs_quota_us``): that is how this 2-core machine emulates a device ``--speed`` times as fast
as the other, and why this script needs root and a writable ``/sys/fs/cgroup/cpu``. The
placement is told so: costs are the kernels measured on this machine (``cost_model=
"measured"``), with the slow device's divided by its speed (a described device, as a user
describes hardware tvm-place cannot measure); the run then says whether the emulation holds,
measured beside predicted. Setups may cap each device's memory (a fraction of the model's
weights), which forces a split.

Per model size and setup, per split (tvm-place: its solver's placement, or a user split if that
is shorter; uniform; by parameters; by memory): the predicted decode tokens/s (priced with the
links and stage starts measured on the actors) and time to first token beside the measured
ones. Decode runs ``--micro-batches`` micro-batches in flight, each step's token fed back; the
generated tokens must be identical across the splits. Writes a table into docs/benchmarks.md.

Usage:
    python scripts/bench_llm.py [--models tinyllama-1.1b:4,llama2-7b:2] [--setups 2x,2x-capped]
        [--prompt 32] [--tokens 16] [--micro-batches 2] [--batch 1]

Run it on an otherwise idle machine: the two workers need both cores.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM loads: the driver's kernels as the workers'

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tables import LoadSampler, machine, shown, today, versions, write_block  # noqa: E402

CORES = [[0], [1]]
CGROUP = Path("/sys/fs/cgroup/cpu/tvm-place-slow-device")
PERIOD_US = 100_000

#: name -> (speed of each device, memory cap of each as a fraction of the model's memory)
SETUPS = {
    "2x": ((1.0, 0.5), (None, None)),
    "2x-capped": ((1.0, 0.5), (0.55, 1.2)),
    "3x": ((1.0, 1 / 3), (None, None)),
}


def throttle(pid: int, speed: float) -> None:
    """Hold process ``pid`` to ``speed`` of one core (a cgroup v1 CPU quota)."""
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (CGROUP / "cpu.cfs_quota_us").write_text(str(int(PERIOD_US * speed)))
    (CGROUP / "cgroup.procs").write_text(str(pid))


def _remove_cgroup(timeout: float = 30.0) -> None:
    """Move what is left in the cgroup (an actor Ray has not reaped yet) out, and remove it."""
    deadline = time.monotonic() + timeout
    while CGROUP.exists():
        for pid in (CGROUP / "cgroup.procs").read_text().split():
            try:
                (CGROUP.parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # gone meanwhile
        try:
            CGROUP.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def described(problem, speeds, caps):
    """``problem`` with each device's compute divided by its speed and memory capped."""
    compute = problem.compute_time / np.asarray(speeds)[None, :]
    devices = [dataclasses.replace(d, memory_capacity=np.inf if cap is None else cap)
               for d, cap in zip(problem.devices, caps)]
    return dataclasses.replace(problem, compute_time=compute, devices=devices)


def run_setup(model: str, layers: int, setup: str, args) -> list[dict]:
    import tvm_place
    from tvm_place import llm, solvers
    from tvm_place.cost.links import with_links
    from tvm_place.entries import Entry, joint_problem
    from tvm_place.models import llama_kv

    speeds, fractions = SETUPS[setup]
    config = llama_kv.config(model, num_layers=layers)
    mod, params = llama_kv.build(config, batch=args.batch)
    options = dict(objective="throughput", cost_model="measured",
                   entries={"prefill": 1, "decode": args.tokens - 1},
                   shape_hints={"n": args.prompt, "m": args.prompt + args.tokens // 2})
    placed = tvm_place.place(mod, ["llvm", "llvm"], method="greedy", time_limit=args.time_limit, **options)
    # Caps as fractions of the model's memory as placement counts it (weights once, and every
    # operator's output at the longest sequence).
    footprint = float(placed.problem.memory.sum())
    caps = [None if f is None else f * footprint for f in fractions]
    entries = [Entry(p.entry.name, described(p.entry.problem, speeds, caps), p.entry.calls, p.entry.weights)
               for p in placed.entries]
    # The machine as the runtime pays it: links and stage starts measured on the two actors
    # (any split: they do not depend on it), then tvm-place solves on those costs.
    links, overheads = _measured_links(mod, options, llm.baseline_splits(joint_problem(entries, "throughput"), entries),
                                       speeds)
    entries = [Entry(e.name, with_links(e.problem, links, overheads), e.calls, e.weights) for e in entries]
    joint = joint_problem(entries, "throughput")
    candidates = {"solver": solvers.solve(joint, "throughput", "auto", args.time_limit).device_of,
                  "solver (contiguous)": solvers.solve(joint, "throughput", "dp", args.time_limit).device_of}
    baselines = llm.baseline_splits(joint, entries)
    chosen, source = llm.best_split(joint, entries, {**candidates, **baselines}, args.batch, args.micro_batches)
    splits = {"tvm-place": chosen, **baselines}
    if args.predict_only:  # the candidates as the evaluator prices them; nothing run
        for name, device_of in {**candidates, **baselines}.items():
            figures = llm.llm_figures(joint, entries, device_of, args.batch, micro_batches=args.micro_batches)
            print(f"{model} x{layers} {setup} {name}: predicted {figures.decode_tokens_per_second:.3f} "
                  f"tokens/s, first token {figures.time_to_first_token:.3f} s, layers "
                  f"{_layers(entries, device_of)}{'' if figures.fits else ', does not fit'}", flush=True)
        print(f"chosen: {source}")
        return []
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, config.vocab, (args.batch, args.prompt)) for _ in range(args.micro_batches)]
    rows = []
    for position, (name, device_of) in enumerate(splits.items()):
        figures = llm.llm_figures(joint, entries, device_of, args.batch, micro_batches=args.micro_batches)
        row = {"model": f"{model} x{layers} layers ({config.num_weights() / 1e6:,.0f}M weights)", "setup": setup,
               "split": name + (f" ({source})" if name == "tvm-place" else ""),
               "fits": figures.fits, "layers": _layers(entries, device_of)}
        if not figures.fits:
            rows.append(row)
            continue
        same = next((earlier for earlier, d in list(splits.items())[:position]
                     if np.array_equal(d, device_of)), None)
        if same is not None:  # the same split as one measured above: its row, not a second run
            measured = next(r for r in rows if r["split"].split(" (")[0] == same)
            rows.append({**measured, "split": f"{name} (= {same})"})
            continue
        built = tvm_place.compile(mod, ["llvm", "llvm"], placement=device_of, **options)
        with built:
            built.bind(params)
            _attach(built, speeds)
            generation = llm.generate(built, prompts, args.tokens)
            ttft = built["prefill"].measure_latency([prompts[0]], repeat=args.repeat)
        row.update(predicted_tps=figures.decode_tokens_per_second, measured_tps=generation.decode_tokens_per_second,
                   predicted_ttft=figures.time_to_first_token, measured_ttft=ttft,
                   tokens=[t.tolist() for t in generation.tokens])
        rows.append(row)
        print(f"{row['model']} {setup} {row['split']}: {row['measured_tps']:.3f} tokens/s "
              f"(predicted {row['predicted_tps']:.3f}), first token {ttft:.3f} s", flush=True)
    return rows


def _attach(built, speeds) -> None:
    """Two Ray actors on their own cores, the second held to its speed."""
    built.attach_workers("ray", cores=CORES, threads=1, calibrate=False)
    if 1 in built.workers:  # a split may leave the slow device out
        throttle(built.workers[1].info["pid"], speeds[1])


def _measured_links(mod, options: dict, splits: dict, speeds):
    """Links and stage starts of two actors (the second throttled as in its setup), measured on
    a build of a split that uses both."""
    import tvm_place

    device_of = next(d for d in splits.values() if len(set(d.tolist())) == 2)
    built = tvm_place.compile(mod, ["llvm", "llvm"], placement=device_of, **options)
    with built:
        _attach(built, speeds)
        largest = int(min(max(n.output_bytes for n in built.problem.graph.nodes), 64 << 20))
        built.calibrate_links(sorted({1024, max(4096, largest)}))
        return built.links, built.call_overheads


def _layers(entries, device_of) -> str:
    from tvm_place import llm

    decode = entries[-1]
    layers = llm.operator_layers(decode.problem, decode.weights)
    on = device_of[decode.nodes]
    return " / ".join(f"{len(set(layers[on == d].tolist()))}" for d in range(int(device_of.max()) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tinyllama-1.1b:4,llama2-7b:2",
                        help="CONFIG:LAYERS,... (models/llama_kv.py configs)")
    parser.add_argument("--setups", default="2x,2x-capped", help=f"of {', '.join(SETUPS)}")
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--micro-batches", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=1, help="timed prefills for the first token")
    parser.add_argument("--table", default="llm", help="the docs/benchmarks.md block to write")
    parser.add_argument("--predict-only", action="store_true",
                        help="print every candidate split's predicted figures, run nothing")
    args = parser.parse_args()
    from tvm_place.runtime.ray_engine import ensure_ray

    started = time.monotonic()
    ensure_ray()
    rows = []
    try:
        with LoadSampler() as load:
            for spec in args.models.split(","):
                model, _, layers = spec.partition(":")
                for setup in args.setups.split(","):
                    rows += run_setup(model, int(layers or 2), setup, args)
    finally:
        _remove_cgroup()
    if args.predict_only:
        return
    same = {}
    for row in rows:
        if "tokens" in row:
            same.setdefault((row["model"], row["setup"]), set()).add(str(row["tokens"]))
    command = "python " + " ".join(shlex.quote(a) for a in [shown(__file__), *sys.argv[1:]])
    table = ["| model | setup | split | layers on each device (a layer cut between them counts on both) | decode tokens/s measured | predicted | "
             "first token measured | predicted |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if "measured_tps" not in row:
            table.append(f"| {row['model']} | {row['setup']} | {row['split']} | {row['layers']} | "
                         "does not fit | | | |")
            continue
        table.append(f"| {row['model']} | {row['setup']} | {row['split']} | {row['layers']} | "
                     f"{row['measured_tps']:.3f} | {row['predicted_tps']:.3f} | "
                     f"{row['measured_ttft']:.3f} s | {row['predicted_ttft']:.3f} s |")
    identical = all(len(tokens) == 1 for tokens in same.values())
    header = (f"`{command}` on {today()}: {machine()}; {versions()}; load average {load.summary()}; "
              f"{time.monotonic() - started:.0f} s in all. Two Ray actors pinned to one core each, one "
              "TVM thread; the second held to its setup's speed by a cgroup CPU quota; setups: "
              + "; ".join(f"{name}: speeds {s}, memory caps {c} of the model's memory (weights and every "
                         "output at the longest sequence)" for name, (s, c) in SETUPS.items()
                         if name in args.setups.split(","))
              + f". Generated tokens {'identical' if identical else 'DIFFER'} across the splits.")
    write_block(args.table, f"## LLM decode on unequal devices (issue 16): {args.models}",
                header + "\n\n" + "\n".join(table))
    print("\n".join(table))
    print(header)


if __name__ == "__main__":
    main()
