"""The ``tvm-place`` command line: the library's steps as subcommands.

``models`` lists the registry; ``inspect`` summarises a model's operator graph; ``place`` solves
and prints the placement; ``compile`` writes the per-target artifacts with a manifest; ``run``
loads and runs them (latency or stream); ``solve`` places a problem file; ``bench`` compares
methods on one model; ``check`` compares a model's placement with a golden plan; ``calibrate``
fits a device's profile to micro-benchmarks run on it. A model is a
registry name, an ``.onnx`` file or a ``.py`` file (``tvm_place.model_source``). Bad input exits with
code 2 and a one-paragraph message (``--debug`` shows the traceback); ``check`` exits 1 when the
placement changed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .errors import TvmPlaceError

#: Written beside an exported manifest so that ``run`` can rebuild the model's inputs.
SOURCE_FILE = "tvm-place-source.json"

EXAMPLES = {
    "models": "  tvm-place models\n  tvm-place models --json",
    "inspect": "  tvm-place inspect resnet18 --size image_size=64\n  tvm-place inspect model.onnx --json",
    "place": (
        "  tvm-place place resnet18 --target llvm --target cuda --objective throughput\n"
        "  tvm-place place bert-base --devices hardware.toml --pin '*matmul*=gpu:0' "
        "--save-plan plan.json --plot out/\n"
        "  tvm-place place resnet18 --target llvm --target llvm --plan plan.json --json"
    ),
    "compile": (
        "  tvm-place compile resnet18 --target llvm --target llvm --size image_size=64 "
        "--output build/\n  tvm-place compile my_model.py:get_module --target llvm --output build/"
    ),
    "run": (
        "  tvm-place run build/ --repeat 10\n  tvm-place run build/ --mode stream --inputs 32 "
        "--workers ray\n  tvm-place run build/ --ray-address 10.0.0.2:6379"
    ),
    "solve": (
        "  tvm-place solve data/dnn-partitioning/throughput-inputs/LayerGraphs/bert24_inference.json"
        " \\\n      --format dnn-partitioning --objective throughput --method dp --output split.json\n"
        "  tvm-place solve problem.json --objective latency --method heft --time-limit 10"
    ),
    "tune": (
        "  tvm-place tune resnet50 --target llvm --database tuning/ --trials 32 --tuning-time 1800\n"
        "  tvm-place compile resnet50 --target llvm --database tuning/ --output build/"
    ),
    "bench": "  tvm-place bench resnet50 --target llvm --target cuda --methods dp,ip,greedy",
    "check": "  tvm-place check resnet18 --plan tests/golden/resnet18.json",
    "calibrate": (
        "  tvm-place calibrate                    (this CPU; the profile --cost-model calibrated uses)\n"
        "  tvm-place calibrate --target cuda --out my-gpu.json --time-limit 60\n"
        "  tvm-place place resnet18 --devices my-gpu.json   (the calibrated profile, anywhere)"
    ),
    "llm": (
        "  tvm-place llm tinyllama-1.1b --layers 4 --target llvm --target llvm --prompt 128 --tokens 64\n"
        "  tvm-place llm llama2-7b --devices my-gpus.toml --batch 8 --json\n"
        "  tvm-place llm tiny --target llvm --target llvm --run --micro-batches 2 --workers ray"
    ),
}


# -- shared pieces -------------------------------------------------------------------------------


def _progress(args: argparse.Namespace, log: list | None = None):
    """A progress callback drawing a bar on stderr (none with ``--quiet``); messages also go to
    ``log`` when given (the solver's log in reports)."""
    if getattr(args, "quiet", False) and log is None:
        return None
    bar = None
    if not getattr(args, "quiet", False):
        from tqdm import tqdm

        bar = tqdm(total=100, file=sys.stderr, leave=False, disable=None,  # None: off unless a TTY
                   bar_format="{desc} {bar} {percentage:3.0f}%")

    def show(message: str, fraction: float | None = None) -> None:
        if log is not None:
            log.append(message)
        if bar is not None:
            bar.set_description_str(f"[tvm-place] {message[:70]}", refresh=False)
            if fraction is not None:
                bar.n = int(100 * min(max(fraction, 0.0), 1.0))
            bar.refresh()

    return show


def _name_values(flag: str, pairs: list[str] | None, form: str, example: str, valid=None,
                 at_last: bool = False) -> list[tuple[str, str]]:
    """``NAME=VALUE`` option values split at the first ``=`` (the last with ``at_last``); a
    malformed one (or one ``valid(name, value)`` refuses) is an error showing ``form``."""
    split = []
    for pair in pairs or []:
        name, sep, value = pair.rpartition("=") if at_last else pair.partition("=")
        name, value = (name, value) if at_last else (name.strip(), value.strip())
        if not sep or not name or (valid is not None and not valid(name, value)):
            raise TvmPlaceError(f"{flag} {pair!r}: write {form}, e.g. {flag} {example}")
        split.append((name, value))
    return split


def _sizes(pairs: list[str]) -> dict:
    return {name: int(value) if value.lstrip("-").isdigit() else value
            for name, value in _name_values("--size", pairs, "NAME=VALUE", "image_size=64")}


def _positive(kind: type, allow_zero: bool = False):
    """An argparse type: a finite ``kind`` above 0 (or at least 0), else a message saying so."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"{text!r}: give a {'whole' if kind is int else 'finite'} number "
                f"{'of at least 0' if allow_zero else 'above 0'}")
        return value

    parse.__name__ = "whole number" if kind is int else "number"
    return parse


def _shapes(pairs: list[str]) -> dict:
    return {name: int(value) for name, value in _name_values(
        "--shape", pairs, "NAME=SIZE for a symbolic dimension", "n=128",
        valid=lambda name, value: value.isdigit())}


def _entries(values: list[str] | None) -> tuple[str, dict | None]:
    """``--entry`` values as ``(entry, entries)``: one function, or several with their calls."""
    calls = {}
    for value in values or ["main"]:
        name, sep, count = value.partition("=")
        try:
            number = float(count) if sep else 1.0
        except ValueError:
            number = math.nan
        if not name.strip() or not 0 < number < math.inf:
            raise TvmPlaceError(f"--entry {value!r}: write NAME, or NAME=CALLS with CALLS a number "
                                "above 0, e.g. --entry prefill --entry decode=32")
        calls[name.strip()] = number
    if len(calls) == 1:
        return next(iter(calls)), None
    return "main", calls


def _pins(pairs: list[str]) -> dict:
    return dict(_name_values("--pin", pairs, "PATTERN=DEVICE", "'conv*=gpu:0'", at_last=True))


def _output_file(path: str | None, option: str) -> None:
    """Refuse, before any work, a file to write whose folder does not exist."""
    if path and not Path(path).parent.is_dir():
        raise TvmPlaceError(f"{option} {path!r}: the folder {str(Path(path).parent)!r} does not "
                            "exist; create it, or write the file elsewhere")


def _model(args: argparse.Namespace):
    from .model_source import load_model

    return load_model(args.model, batch=args.batch, sizes=_sizes(args.size), seed=args.seed,
                      training=args.training, layout=args.layout)


def _targets(args: argparse.Namespace) -> tuple[list, list | None]:
    if args.devices:
        if args.target:
            raise TvmPlaceError("give either --target (repeatable) or --devices FILE, not both")
        from .formats import load_device_file

        return load_device_file(args.devices)
    return (args.target or ["llvm"]), None


def _cost_model(args: argparse.Namespace):
    """The cost model a command asked for; ``--cost-cache`` moves the measured and calibrated
    models' caches (``auto``'s calibrated profiles too)."""
    if args.cost_model == "measured" and args.cost_cache:
        from .cost import MeasuredCostModel

        return MeasuredCostModel(cache_dir=args.cost_cache)
    if args.cost_model == "calibrated" and args.cost_cache:
        from .cost import CalibratedCostModel

        return CalibratedCostModel(cache_dir=args.cost_cache)
    if args.cost_model == "auto" and args.cost_cache:
        from .cost import AutoCostModel

        return AutoCostModel(cache_dir=args.cost_cache, time_limit=args.time_limit)
    return args.cost_model


def _placement_options(args: argparse.Namespace, log: list) -> dict:
    _output_file(getattr(args, "save_plan", None), "--save-plan")
    targets, profiles = _targets(args)
    options = dict(
        targets=targets, profiles=profiles, objective=args.objective, method=args.method,
        time_limit=args.time_limit, cost_model=_cost_model(args), pins=_pins(args.pin) or None,
        database=getattr(args, "database", None), shape_hints=_shapes(args.shape) or None,
    )
    options["entry"], options["entries"] = _entries(args.entry)
    if args.plan:
        from .formats import load_placement

        options["placement"] = load_placement(args.plan)
    options["progress"] = _progress(args, log)
    return options


def _report(problem, placement, cost_sources, log: list, args, options: dict, extra: dict | None = None,
            shape_values: dict | None = None, fallbacks: list | None = None) -> None:
    """Print the placement as text or, with ``--json``, as one JSON object; write pictures and
    the plan where asked."""
    from .evaluate import evaluate
    from .report import cost_sources_by_device, format_report

    if args.save_plan:
        from .formats import write_plan

        model = {"name": args.model, "sizes": _sizes(args.size), "batch": args.batch, "seed": args.seed}
        write_plan(args.save_plan, problem, placement, options["targets"], options, model,
                   cost_sources=cost_sources)
    pictures = []
    if args.plot:
        from .plot import write_plots

        pictures = [str(p) for p in write_plots(problem, placement, Path(args.plot))]
    if args.json:
        from .report import device_traffic

        evaluation = evaluate(problem, placement)
        traffic = device_traffic(problem, placement, evaluation)
        devices = [
            {
                "name": name, "ops": int((placement.device_of == d).sum()),
                "compute": float(evaluation.compute[d]), "transfer_in": float(evaluation.transfer_in[d]),
                "transfer_out": float(evaluation.transfer_out[d]), "load": float(evaluation.load[d]),
                "memory": float(evaluation.memory[d]),
                "capacity": float(problem.capacity[d]) if problem.capacity[d] < float("inf") else None,
                **{key: values[d] for key, values in traffic.items()},
            }
            for d, name in enumerate(problem.device_names)
        ]
        print(json.dumps({
            "model": problem.name, "objective": placement.objective, "value": placement.value,
            "lower_bound": placement.lower_bound, "gap": placement.gap, "method": placement.method,
            "seconds": placement.stats.get("seconds"), "predicted_latency": evaluation.latency,
            "predicted_max_stage_time": evaluation.max_load, "copies": len(evaluation.copies),
            "devices": devices, "plots": pictures, "log": log, "placement": placement.to_dict(),
            "shape_values": shape_values or {}, "fallbacks": fallbacks or [],
            "cost_sources": cost_sources_by_device(problem.device_names, cost_sources or []),
            **(extra or {}),
        }))
        return
    print(format_report(problem, placement, cost_sources, shape_values=shape_values, fallbacks=fallbacks))
    solver_log = [line for line in log if not line.startswith("costing ")]  # per-op cost lines
    if solver_log:
        print("\nsolver log:\n  " + "\n  ".join(solver_log[-20:]))
    for picture in pictures:
        print(f"wrote {picture}")


# -- subcommands -----------------------------------------------------------------------------------


def _models(args: argparse.Namespace) -> int:
    from . import models

    entries = [{"name": name, **models.describe(name)} for name in models.list()]
    if args.json:
        print(json.dumps(entries))
    else:
        for entry in entries:
            print(f"{entry['name']:<22} {entry['family']:<14} {entry['description']}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .compiler import prepare
    from .passes import collect_op_graph

    model = _model(args)
    collected = collect_op_graph(prepare(model.mod))
    nodes = collected.graph.nodes
    kinds: dict[str, int] = {}
    for node in nodes:
        kinds[node.kind] = kinds.get(node.kind, 0) + 1
    heaviest = sorted(range(len(nodes)), key=lambda u: -nodes[u].flops)[:10]
    summary = {
        "model": model.name, "operators": len(nodes), "edges": len(collected.graph.edges),
        "inputs": [list(x.shape) for x in model.inputs],
        "gflops": sum(n.flops for n in nodes) / 1e9,
        "parameter_mb": sum(n.param_bytes for n in nodes) / 1e6,
        "kinds": kinds,
        "heaviest": [{"operator": nodes[u].name, "gflops": nodes[u].flops / 1e9} for u in heaviest],
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{model.name}: {summary['operators']} operators, {summary['edges']} edges, "
          f"{summary['gflops']:.3f} GFLOP, {summary['parameter_mb']:.1f} MB of weights, "
          f"inputs {summary['inputs']}")
    print("  kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print("  heaviest operators:")
    for entry in summary["heaviest"]:
        print(f"    {entry['operator'][:60]:<60} {entry['gflops']:10.4f} GFLOP")
    return 0


def _place(args: argparse.Namespace) -> int:
    from .compiler import place

    model, log = _model(args), []
    options = _placement_options(args, log)
    placed = place(model.mod, name=model.name, **options)
    _report(placed.problem, placed.placement, placed.cost_sources, log, args, options,
            shape_values=placed.shape_values, fallbacks=placed.fallbacks)
    return 0


def _compile(args: argparse.Namespace) -> int:
    from . import compiler

    model, log = _model(args), []
    options = _placement_options(args, log)
    placed = compiler.compile(model.mod, name=model.name, **options)
    directory = placed.export(args.output)
    (directory / SOURCE_FILE).write_text(json.dumps(
        {"model": args.model, "batch": args.batch, "size": args.size, "seed": args.seed,
         "training": args.training, "layout": args.layout}))
    _report(placed.problem, placed.placement, None, log, args, options, {"output": str(directory)},
            placed.plan.shape_values if placed.plan else None, placed.fallbacks)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from .options import PlaceOptions
    from .tuning import tune

    if not args.database:
        raise TvmPlaceError("tune writes its records to a database: give --database DIR")
    model, log = _model(args), []
    options = _placement_options(args, log)
    hints, entry, entries = options.pop("shape_hints"), options.pop("entry"), options.pop("entries")
    if hints or entry != "main" or entries:
        raise TvmPlaceError("tune takes a static `main`: drop --shape/--entry (bind the symbolic "
                            "dimensions with relax.transform.BindSymbolicVars to tune at one size)")
    solving = PlaceOptions(time_limit=options.pop("time_limit"))  # --tuning-time is tune's own
    result = tune(model.mod, options.pop("targets"), options.pop("database"), solving,
                  trials=args.trials, time_limit=args.tuning_time, strategy=args.strategy,
                  retune=args.retune, **options)
    if args.json:
        print(json.dumps({"model": model.name, **result.to_dict()}))
    else:
        print(result.summary())
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runtime.placed import PlacedModule
    from .model_source import load_model

    directory = Path(args.directory)
    placed = PlacedModule.load(directory)
    if placed.functions or args.entry:
        if args.entry not in placed.functions:
            raise TvmPlaceError(
                f"{directory} has the entry functions {sorted(placed.functions)}: run one with --entry NAME"
                if placed.functions else f"{directory} has one entry function: drop --entry")
        if args.from_source:
            raise TvmPlaceError("--from-source feeds a model's `main`; an export of several entry "
                                "functions runs on random inputs of the types its manifest records")
        placed = placed[args.entry]
    if args.workers != "threads" or args.ray_address:
        placed.attach_workers("ray" if args.ray_address else args.workers, address=args.ray_address,
                              timeout=args.connect_timeout)
    if args.from_source:  # the user asked: build the model the export was compiled from
        source_file = directory / SOURCE_FILE
        if not source_file.is_file():
            raise TvmPlaceError(f"{directory} has no {SOURCE_FILE}: it was not written by `tvm-place compile`")
        source = json.loads(source_file.read_text())
        inputs = load_model(source["model"], source["batch"], _sizes(source["size"]), source["seed"],
                            training=source.get("training", False),
                            layout=source.get("layout", "NCHW")).inputs
        if not inputs:
            raise TvmPlaceError(f"{source['model']} has no `main` whose inputs --from-source could "
                                "feed: run without it (random inputs of the recorded types)")
    else:  # the export is data: random inputs of the types its manifest records
        inputs = placed.example_inputs()
    if args.mode == "latency":
        outputs = placed(*inputs)  # warm-up and the outputs shown
        seconds = placed.measure_latency(inputs, repeat=args.repeat)
        result = {"mode": "latency", "seconds": seconds}
    else:
        items = [tuple(inputs)] * args.inputs
        started = time.perf_counter()
        outputs = placed.run_stream(items)[0]
        elapsed = time.perf_counter() - started
        result = {"mode": "stream", "inputs": args.inputs, "seconds": elapsed,
                  "inputs_per_second": args.inputs / elapsed}
    first = outputs
    while not hasattr(first, "shape"):  # the first tensor of a (nested) tuple of outputs
        first = first[0]
    result["output_shape"] = list(first.shape)
    if args.json:
        print(json.dumps(result))
    elif args.mode == "latency":
        print(f"latency {1e3 * result['seconds']:.3f} ms (median of {args.repeat}), output "
              f"{result['output_shape']}")
    else:
        print(f"{args.inputs} inputs in {result['seconds']:.3f} s: "
              f"{result['inputs_per_second']:.2f} inputs/s, output {result['output_shape']}")
    return 0


def _llm(args: argparse.Namespace) -> int:
    """Place a Llama-architecture model's prefill and decode together, beside the layer splits
    users make; with --run, build every split and generate with each."""
    from . import compiler, llm
    from .models import llama_kv

    config = llama_kv.config(args.config, num_layers=args.layers)
    if args.prompt + args.tokens > config.max_len:
        raise TvmPlaceError(f"--prompt {args.prompt} + --tokens {args.tokens} is over the model's "
                            f"{config.max_len} tokens")
    log: list = []
    options = _placement_options(args, log)
    options.pop("entry"), options.pop("entries")
    # Decode is costed at the cache's mean length over the generation.
    options["shape_hints"] = {"n": args.prompt, "m": max(1, args.prompt + args.tokens // 2)}
    options["entries"] = {"prefill": 1, "decode": max(1, args.tokens - 1)}
    mod, weight_shapes = llama_kv.export(config, batch=args.batch)
    placed = compiler.place(mod, name=f"{args.config}-{config.num_layers}layers", **options)
    entries = [part.entry for part in placed.entries]
    baselines = llm.baseline_splits(placed.problem, entries)
    candidates = {"solver": placed.placement.device_of, **_contiguous(placed.problem, args.time_limit)}
    chosen, source = llm.best_split(placed.problem, entries, {**candidates, **baselines}, args.batch,
                                    args.micro_batches)
    splits = {"tvm-place": chosen, **baselines}
    result = {"model": args.config, "layers": config.num_layers, "batch": args.batch,
              "weights": config.num_weights(), "placement": placed.placement.to_dict(timings=False),
              "tvm_place_split": source, "predicted": {}, "measured": {}}
    for name, device_of in splits.items():
        figures = llm.llm_figures(placed.problem, entries, device_of, args.batch,
                                  micro_batches=args.micro_batches)
        result["predicted"][name] = {"decode_tokens_per_second": figures.decode_tokens_per_second,
                                     "time_to_first_token": figures.time_to_first_token,
                                     "seconds_per_round": figures.seconds_per_round,
                                     "fits": figures.fits}
    if args.measure:
        result["measured"] = _llm_runs(args, config, mod, splits, options)
    if args.json:
        print(json.dumps(result))
        return 0
    placement = placed.placement
    print(f"tvm-place llm: {args.config}, {config.num_layers} layers ({config.num_weights() / 1e6:,.1f}M "
          f"weights), batch {args.batch}, prompt {args.prompt}, {args.tokens} tokens, on "
          f"{', '.join(placed.problem.device_names)}")
    print(f"  objective {placement.objective} per round (prefill once, decode {args.tokens - 1} times): "
          f"method {placement.method}, gap {placement.gap:.2%}"
          + ("" if source == "solver" else f"; tvm-place takes the {source} placement, which "
             f"decodes fastest with {args.micro_batches} micro-batches in flight"))
    print(llm.format_llm_report(placed.problem, entries, splits, args.batch))
    if result["measured"]:
        print(f"\n  measured on {args.workers} workers ({args.micro_batches} micro-batches in flight), "
              "beside the prediction priced with the links and stage starts measured there:")
        print(f"  {'split':<12} {'decode tokens/s':>16} {'predicted':>10} {'first token':>12} {'predicted':>10}")
        for name, measured in result["measured"].items():
            predicted = measured["predicted_with_links"]
            print(f"  {name:<12} {measured['decode_tokens_per_second']:>16.2f} "
                  f"{predicted['decode_tokens_per_second']:>10.2f} "
                  f"{measured['time_to_first_token'] * 1e3:>9.2f} ms "
                  f"{predicted['time_to_first_token'] * 1e3:>7.2f} ms")
        same = len({json.dumps(m["tokens"]) for m in result["measured"].values()}) == 1
        print(f"  generated tokens {'identical' if same else 'DIFFER'} across the splits")
    return 0


def _contiguous(problem, time_limit: float) -> dict:
    """The exact contiguous split (a pipeline of one stage per device: short step latency,
    where few micro-batches are in flight), if dp finds one."""
    from . import solvers

    try:
        return {"solver (contiguous)": solvers.solve(problem, "throughput", "dp", time_limit).device_of}
    except TvmPlaceError:  # no contiguous split fits: the other candidates remain
        return {}


def _llm_runs(args, config, mod, splits: dict, options: dict) -> dict:
    """Build each split, bind random weights, generate ``--tokens`` tokens for
    ``--micro-batches`` micro-batches; measured decode tokens/s and time to first token."""
    import numpy as np

    from . import compiler, llm
    from .models import llama_kv

    _, params = llama_kv.build(config, batch=args.batch, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    prompts = [rng.integers(0, config.vocab, (args.batch, args.prompt)) for _ in range(args.micro_batches)]
    measured = {}
    for name, device_of in splits.items():
        built = compiler.compile(mod, placement=device_of, **{k: v for k, v in options.items()
                                                              if k not in ("method", "time_limit")})
        with built:
            built.bind(params)
            # The workers' links and stage starts measured (probes up to the largest value the
            # model moves), so the prediction prices them too.
            largest = int(min(max(node.output_bytes for node in built.problem.graph.nodes), 64 << 20))
            built.attach_workers(args.workers, probe_sizes=sorted({1024, max(4096, largest)}))
            entries = [llm.Entry(f, built[f].problem, function.calls, function.weights)
                       for f, function in built.functions.items()]
            predicted = llm.llm_figures(built.problem, entries, device_of, args.batch,
                                        micro_batches=args.micro_batches)
            generation = llm.generate(built, prompts, args.tokens)
            ttft = built["prefill"].measure_latency([prompts[0]], repeat=3)
        measured[name] = {"decode_tokens_per_second": generation.decode_tokens_per_second,
                          "time_to_first_token": ttft,
                          "predicted_with_links": {
                              "decode_tokens_per_second": predicted.decode_tokens_per_second,
                              "time_to_first_token": predicted.time_to_first_token},
                          "tokens": [t.tolist() for t in generation.tokens]}
    return measured


def _solve(args: argparse.Namespace) -> int:
    from . import solvers
    from .formats import dnn_split, load_dnn_partitioning, load_problem

    _output_file(args.output, "--output")
    if args.format == "dnn-partitioning":
        problem = load_dnn_partitioning(args.file)
    else:
        problem = load_problem(args.file)
    placement = solvers.solve(problem, args.objective, args.method, args.time_limit,
                              _progress(args))
    if args.output:
        if args.format == "dnn-partitioning":
            written = dnn_split(problem, placement)
        else:
            written = placement.to_dict()
        Path(args.output).write_text(json.dumps(written, indent=1))
    summary = {
        "problem": problem.name,
        "objective": placement.objective,
        "value": placement.value,
        "lower_bound": placement.lower_bound,
        "gap": placement.gap,
        "method": placement.method,
        "seconds": placement.stats.get("seconds"),
        "search_space": placement.stats.get("search_space"),
        "output": args.output,
    }
    print(json.dumps(summary))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import solvers
    from .compiler import place

    model = _model(args)
    targets, profiles = _targets(args)
    placed = place(model.mod, targets, objective=args.objective, method="greedy",
                   cost_model=_cost_model(args), profiles=profiles, pins=_pins(args.pin) or None,
                   time_limit=args.time_limit, name=model.name)
    rows = []
    methods = args.methods or ("greedy,heft,auto" if args.objective == "latency" else "greedy,dp,auto")
    for method in methods.split(","):
        try:
            result = solvers.solve(placed.problem, args.objective, method.strip(), args.time_limit,
                                   _progress(args))
            rows.append({"method": method, "value": result.value, "lower_bound": result.lower_bound,
                         "gap": result.gap, "seconds": result.stats.get("seconds"),
                         "search_space": result.stats.get("search_space")})
        except TvmPlaceError as err:
            rows.append({"method": method, "error": str(err)})
    if args.json:
        print(json.dumps({"model": model.name, "objective": args.objective, "results": rows}))
        return 0
    print(f"{model.name}: {placed.problem.num_ops} operators on {placed.problem.device_names}, "
          f"{args.objective}")
    print(f"  {'method':<16} {'value':>12} {'bound':>12} {'gap':>8} {'seconds':>9}")
    for row in rows:
        if "error" in row:
            print(f"  {row['method']:<16} error: {row['error']}")
        else:
            print(f"  {row['method']:<16} {row['value']:12.6g} {row['lower_bound']:12.6g} "
                  f"{row['gap']:8.2%} {row['seconds']:9.2f}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .testing import check_plan

    targets, options = None, {}
    if args.target or args.devices:
        targets, profiles = _targets(args)
        options = {"profiles": profiles} if profiles else {}
    code, message = check_plan(args.model, args.plan, targets=targets, tolerance=args.tolerance,
                               update=args.update, **options)
    print(message)
    return code


def _calibrate(args: argparse.Namespace) -> int:
    from .cost.calibrate import CalibratedCostModel, calibrate, local_device

    _output_file(args.out, "--out")
    device = local_device(args.target)
    calibration = calibrate(device, args.time_limit, _progress(args))
    path = calibration.write(args.out or CalibratedCostModel(args.cost_cache).profile_path(device))
    if args.json:
        print(json.dumps({"file": str(path), **calibration.device_file()}, indent=2))
        return 0
    print(calibration.summary())
    print(f"wrote {path}: use it with --devices {path}"
          + ("" if args.out else " (--cost-model calibrated, and the default auto where no "
                                 "learned model of this device's kind exists to adapt, read it "
                                 "on this machine)"))
    return 0


# -- the parser ----------------------------------------------------------------------------------


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registry name (tvm-place models), FILE.onnx, FILE.py[:NAME]")
    parser.add_argument("--batch", type=_positive(int), default=1, help="batch size of a registry model")
    parser.add_argument("--size", action="append", metavar="NAME=VALUE",
                        help="override a registry model's size, e.g. image_size=64 (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument("--training", action="store_true",
                        help="a registry model's training step (forward, loss, weight gradients)")
    parser.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW",
                        help="convolution layout: NHWC (channels last) tunes faster on CPUs")


def _add_placement_arguments(parser: argparse.ArgumentParser, plan: bool = True) -> None:
    from .graph import OBJECTIVES
    from .options import COST_MODELS, PlaceOptions
    from .solvers import METHODS

    parser.add_argument("--target", action="append",
                        help="a device's TVM target, repeated per device (default: one llvm)")
    parser.add_argument("--devices", metavar="FILE",
                        help="hardware as a JSON or TOML device file (see docs/problem-format.md)")
    parser.add_argument("--objective", choices=OBJECTIVES, default="latency")
    parser.add_argument("--method", default="auto", help=f"one of {', '.join(sorted(METHODS))}")
    parser.add_argument("--time-limit", type=_positive(float), default=60.0, help="solver seconds (default 60)")
    parser.add_argument("--cost-model", choices=COST_MODELS, default=PlaceOptions().cost_model,
                        help="auto (the default): per device the best of the others available "
                             "(learned where a model was trained for it, else another "
                             "CPU's learned model adapted to it, else calibrated where it is on "
                             "this machine, else analytical; the report says which); "
                             "analytical: roofline from device profiles; calibrated: the "
                             "roofline on profiles calibrated on this machine's devices (once "
                             "each, cached; `tvm-place calibrate`); learned: boosted trees "
                             "trained on this CPU's kernels; measured: kernels timed on this "
                             "machine")
    parser.add_argument("--cost-cache", metavar="DIR",
                        help="where measured costs and calibrated profiles are cached (default "
                             "$TVM_PLACE_CACHE_DIR or ~/.cache/tvm-place); entries are keyed by "
                             "TVM version, target and kernel (profiles: target, hardware and "
                             "threads), so a change in any of them measures again")
    parser.add_argument("--database", metavar="DIR",
                        help="tuning database (from `tvm-place tune`): tuned kernels are built "
                             "with their schedules and costed by their tuned times")
    parser.add_argument("--pin", action="append", metavar="PATTERN=DEVICE",
                        help="pin operators matching a glob, e.g. 'conv*=gpu:0' (repeatable)")
    parser.add_argument("--shape", action="append", metavar="NAME=SIZE",
                        help="size a symbolic dimension is costed at, e.g. n=128 (repeatable; "
                             "default: the function's tir_var_upper_bound)")
    parser.add_argument("--entry", action="append", metavar="NAME[=CALLS]",
                        help="the Relax function to place (default main; forward for nn.Module "
                             "exports); repeat it to place several together, each with its calls "
                             "per round (--entry prefill --entry decode=32)")
    if plan:
        parser.add_argument("--plan", help="apply this saved placement instead of solving")
        parser.add_argument("--save-plan", metavar="FILE", help="save the plan as JSON (what --plan applies and `tvm-place check` compares with)")
        parser.add_argument("--plot", metavar="DIR",
                            help="write the placement graph and a pipeline Gantt chart here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .graph import OBJECTIVES
    from .solvers import METHODS

    parser = argparse.ArgumentParser(
        prog="tvm-place", description=__doc__.splitlines()[0],
        epilog="Run `tvm-place COMMAND --help` for each command's options and examples.")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks of errors and TVM's own log lines")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, run) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help,
                                  epilog="examples:\n" + EXAMPLES[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(run=run)
        return sub

    models = command("models", "list the models of the registry", _models)
    models.add_argument("--json", action="store_true", help="print JSON")

    inspect = command("inspect", "summarise a model's operator graph", _inspect)
    _add_model_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="print JSON")

    place = command("place", "place a model's operators on devices and print the placement", _place)
    _add_model_arguments(place)
    _add_placement_arguments(place)
    place.add_argument("--json", action="store_true", help="print one JSON object")

    compile_ = command("compile", "place a model and write per-target artifacts with a manifest",
                       _compile)
    _add_model_arguments(compile_)
    _add_placement_arguments(compile_)
    compile_.add_argument("--output", required=True, metavar="DIR", help="artifact directory")
    compile_.add_argument("--json", action="store_true", help="print one JSON object")

    tune_ = command("tune", "tune the kernels each device will run (MetaSchedule) into a database",
                    _tune)
    _add_model_arguments(tune_)
    _add_placement_arguments(tune_, plan=False)
    tune_.set_defaults(plan=None)
    tune_.add_argument("--trials", type=_positive(int), default=32, help="trials per kernel (default 32)")
    tune_.add_argument("--tuning-time", type=_positive(float), default=1800.0,
                       help="seconds for the whole search (default 1800); --time-limit is the solver's")
    tune_.add_argument("--strategy", choices=["replay-trace", "evolutionary"], default="replay-trace",
                       help="MetaSchedule search: sample the design space, or evolve with an "
                            "XGBoost cost model (slower per trial)")
    tune_.add_argument("--retune", action="store_true",
                       help="search kernels already in the database again (--trials more each)")
    tune_.add_argument("--json", action="store_true", help="print one JSON object")

    run = command("run", "load artifacts written by `compile` and run them", _run)
    run.add_argument("directory", help="artifact directory written by `tvm-place compile`")
    run.add_argument("--mode", choices=["latency", "stream"], default="latency")
    run.add_argument("--repeat", type=_positive(int), default=5, help="timed runs in latency mode")
    run.add_argument("--inputs", type=_positive(int), default=16, help="inputs in stream mode")
    run.add_argument("--workers", default="threads", choices=["threads", "ray", "processes"],
                     help="threads (default: every device in this process) or ray (one Ray actor "
                          "per device, pinned to its own cores on this host; processes: the same)")
    run.add_argument("--ray-address", default=None,
                     help="run the actors on the Ray cluster at this address (implies --workers ray)")
    run.add_argument("--connect-timeout", type=_positive(float), default=120.0,
                     help="seconds to wait for the workers to start")
    run.add_argument("--from-source", action="store_true",
                     help="feed the inputs of the model the export was compiled from (builds it "
                          "again: runs a Python model file if it names one); default: random "
                          "inputs of the types the manifest records, no user code run")
    run.add_argument("--entry", metavar="NAME",
                     help="the entry function to run, for an export of several")
    run.add_argument("--json", action="store_true", help="print one JSON object")

    llm_ = command("llm", "place a Llama-architecture model's prefill and decode over devices, "
                          "beside the layer splits users make (uniform, by parameters, by memory)", _llm)
    llm_.add_argument("config", help="tinyllama-1.1b, llama2-7b or tiny (models/llama_kv.py)")
    llm_.add_argument("--layers", type=_positive(int), help="decoder layers (default: the model's)")
    llm_.add_argument("--batch", type=_positive(int), default=1, help="sequences per micro-batch")
    llm_.add_argument("--prompt", type=_positive(int), default=32, help="prompt tokens (default 32)")
    llm_.add_argument("--tokens", type=_positive(int), default=32, help="tokens to generate (default 32)")
    _add_placement_arguments(llm_, plan=False)
    llm_.set_defaults(objective="throughput", plan=None, save_plan=None, plot=None)
    llm_.add_argument("--run", dest="measure", action="store_true",
                      help="build every split, generate with random weights and measure")
    llm_.add_argument("--micro-batches", type=_positive(int), default=2,
                      help="micro-batches in flight (default 2): priced, and run with --run")
    llm_.add_argument("--workers", default="threads", choices=["threads", "ray"],
                      help="where the devices' stages run with --run")
    llm_.add_argument("--seed", type=int, default=0, help="of the random weights and prompts")
    llm_.add_argument("--json", action="store_true", help="print one JSON object")

    solve = command("solve", "place a problem file and print the result as JSON", _solve)
    solve.add_argument("file", help="problem file")
    solve.add_argument(
        "--format", choices=["tvm-place", "dnn-partitioning"], default="tvm-place",
        help="file format (default: tvm-place JSON, docs/problem-format.md)",
    )
    solve.add_argument("--objective", choices=OBJECTIVES, default="throughput")
    solve.add_argument("--method", default="auto", help=f"one of {', '.join(sorted(METHODS))}")
    solve.add_argument("--time-limit", type=_positive(float), default=60.0, help="seconds (default 60)")
    solve.add_argument("--output", help="write the placement here (a split file for dnn-partitioning)")
    solve.add_argument("--quiet", action="store_true", help="no progress bar")

    bench = command("bench", "compare placement methods on one model (solving only)", _bench)
    _add_model_arguments(bench)
    _add_placement_arguments(bench, plan=False)
    bench.add_argument("--methods",
                       help="comma-separated methods (default: greedy,heft,auto for latency, "
                            "greedy,dp,auto for throughput)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    check = command("check", "compare a model's placement with a golden plan (exit 1 if changed)",
                    _check)
    check.add_argument("model", help="registry name (built with the sizes the plan records)")
    check.add_argument("--plan", required=True, help="the golden plan (JSON)")
    check.add_argument("--target", action="append", help="targets (default: the plan's)")
    check.add_argument("--devices", metavar="FILE", help="device file (default: the plan's)")
    check.add_argument("--tolerance", type=_positive(float, allow_zero=True), help="allowed relative objective regression")
    check.add_argument("--update", action="store_true", help="rewrite the plan instead")

    from .cost.calibrate import DEFAULT_TIME_LIMIT

    calibrate = command("calibrate", "fit a device's profile to micro-benchmarks run on it "
                                     "(efficiency per operator class, bandwidth, launch, copies)",
                        _calibrate)
    calibrate.add_argument("--target", default="llvm", choices=["llvm", "cuda"],
                           help="the device on this machine to calibrate (default llvm: its CPU)")
    calibrate.add_argument("--out", metavar="FILE",
                           help="write the profile as a device file here (default: the cache "
                                "that --cost-model calibrated reads)")
    calibrate.add_argument("--cost-cache", metavar="DIR",
                           help="the cache directory of the default --out (default "
                                "$TVM_PLACE_CACHE_DIR or ~/.cache/tvm-place)")
    calibrate.add_argument("--time-limit", type=_positive(float), default=DEFAULT_TIME_LIMIT,
                           help=f"seconds (default {DEFAULT_TIME_LIMIT:g}), checked between "
                                "benchmarks; the three the fit needs run whatever it is")
    calibrate.add_argument("--json", action="store_true", help="print the profile file as JSON")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        from .tvm_log import show

        show()  # TVM's own log lines too
    try:
        with warnings.catch_warnings():
            # one line per warning, not the line of tvm-place that gave it (unless --debug, or
            # a caller such as pytest records them)
            if not args.debug and warnings.showwarning is getattr(warnings, "_showwarning_orig", None):
                warnings.showwarning = lambda message, *rest, **kw: print(
                    f"tvm-place: warning: {message}", file=sys.stderr)
            return args.run(args)
    except TvmPlaceError as err:
        if args.debug:
            raise
        print(f"tvm-place: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (e.g. `| head`) stopped reading: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as interrupted:  # Ctrl-C: one line, the shell's code for SIGINT
        if args.debug:
            raise
        print(f"tvm-place: {interrupted or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
