"""Tuning benchmark (issue 8): untuned vs MetaSchedule-tuned latency on llvm, and PyTorch eager.

For each model (default ResNet-50 at batch 1 and BERT-base at sequence 128):

1. ``tune``: ``tvm_place.tune(mod, ["llvm"], database=DIR, trials=T, time_limit=L)``: the kernels
   the placement puts on the CPU, searched with MetaSchedule into the database;
2. ``measure``: compile without and with the database, check the two agree numerically, time each
   (median of ``--repeat`` runs after a warm-up), time PyTorch eager on the same architecture
   (``tvm_place.models.imported_zoo.torch_eager_module``), and check that a second ``tune`` runs
   no trial and a second compile with the database builds the same kernels.

``--layout NHWC`` builds the convolutions channels-last (:func:`tvm_place.convert_conv_layout`),
both for tuning and measuring; its rows are named ``MODEL (NHWC)``.

The phases can run apart (``--phase tune`` for the long search, then ``--phase measure`` on a quiet
machine); results accumulate in ``--results`` and the table is written to docs/benchmarks.md.

    python scripts/bench_tuning.py                      # both phases, both models
    python scripts/bench_tuning.py --phase tune --models resnet50 --trials 32 --time-limit 2400
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tables import ROOT, LoadSampler, machine, today, versions, write_block  # noqa: E402

#: The issue's models and sizes: registry name, overrides, torch counterpart.
MODELS = {
    "resnet50": ({}, "torch-resnet50"),
    "bert-base": ({"seq_len": 128}, "torch-bert-base"),
}
REDUCED = {"bert-layer": ({"seq_len": 8, "hidden": 64, "heads": 4, "ffn": 128}, "torch-bert-layer")}


def log(message: str) -> None:
    print(f"[bench_tuning] {message}", file=sys.stderr, flush=True)


def _model(name: str, sizes: dict, layout: str):
    """The registry model with its convolutions in ``layout`` (inputs unchanged)."""
    import dataclasses

    from tvm_place import models
    from tvm_place.passes import convert_conv_layout

    model = models.get(name, **sizes)
    return dataclasses.replace(model, mod=convert_conv_layout(model.mod, layout))


def tune_phase(name: str, sizes: dict, args) -> dict:
    import tvm_place

    model = _model(name, sizes, args.layout)
    started = time.perf_counter()
    with LoadSampler() as load:
        result = tvm_place.tune(model.mod, ["llvm"], database=args.database, trials=args.trials,
                                time_limit=args.time_limit, progress=not args.quiet)
    log(result.summary())
    return {"tune": {**result.to_dict(), "wall": time.perf_counter() - started,
                     "trials_per_kernel": args.trials, "time_limit": args.time_limit,
                     "load": load.summary()}}


def _median_seconds(run, repeat: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure_phase(name: str, sizes: dict, torch_name: str | None, args) -> dict:
    import warnings

    import numpy as np

    import tvm_place

    model = _model(name, sizes, args.layout)
    record: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        untuned = tvm_place.compile(model.mod, ["llvm"])
    record["untuned_warning"] = next((str(w.message) for w in caught
                                      if w.category is tvm_place.UntunedKernelWarning), None)
    tuned = tvm_place.compile(model.mod, ["llvm"], database=args.database)
    again = tvm_place.compile(model.mod, ["llvm"], database=args.database)
    record["same_kernels_second_compile"] = tuned.kernel_sources() == again.kernel_sources()
    second = tvm_place.tune(model.mod, ["llvm"], database=args.database, trials=args.trials,
                            time_limit=args.time_limit)
    record["second_tune_trials"] = second.trials
    record["second_tune_seconds"] = second.seconds
    reference = untuned(*model.inputs).numpy()
    record["max_abs_error_tuned_vs_untuned"] = float(np.abs(tuned(*model.inputs).numpy() - reference).max())
    with LoadSampler() as load:
        log(f"{name}: timing untuned")
        record["untuned_seconds"] = untuned.measure_latency(model.inputs, repeat=args.untuned_repeat)
        log(f"{name}: timing tuned")
        record["tuned_seconds"] = tuned.measure_latency(model.inputs, repeat=args.repeat)
        if torch_name is not None:
            record.update(_eager(torch_name, sizes, model, args.repeat))
    record["measure_load"] = load.summary()
    return record


def _eager(torch_name: str, sizes: dict, model, repeat: int) -> dict:
    try:
        import torch

        from tvm_place.models.imported_zoo import torch_eager_module
    except ImportError as err:
        return {"eager_missing": str(err)}
    module, inputs = torch_eager_module(torch_name, **sizes)
    with torch.inference_mode():
        seconds = _median_seconds(lambda: module(*inputs), repeat)
    return {"eager_seconds": seconds, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def table(results: dict) -> str:
    rows = ["| model | kernels | trials | tuning s | untuned ms | tuned ms | speed-up | PyTorch eager ms | tuned / eager | 2nd tune trials | same kernels 2nd compile | max abs diff |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for name, record in results.items():
        tune = record.get("tune", {})
        targets = tune.get("targets", [{}])
        kernels = sum(t.get("kernels", 0) for t in targets)
        untuned, tuned = record.get("untuned_seconds"), record.get("tuned_seconds")
        eager = record.get("eager_seconds")

        def ms(x):
            return "-" if x is None else f"{1e3 * x:.1f}"

        rows.append(
            f"| {name} | {kernels} | {tune.get('trials', '-')} | {tune.get('seconds', 0):.0f} | {ms(untuned)} | "
            f"{ms(tuned)} | {'-' if not (untuned and tuned) else f'{untuned / tuned:.1f}x'} | {ms(eager)} | "
            f"{'-' if not (eager and tuned) else f'{tuned / eager:.2f}x'} | {record.get('second_tune_trials', '-')} | "
            f"{record.get('same_kernels_second_compile', '-')} | {record.get('max_abs_error_tuned_vs_untuned', float('nan')):.1e} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    parser.add_argument("--reduced", action="store_true", help="one tiny model (tests)")
    parser.add_argument("--phase", choices=["tune", "measure", "both"], default="both")
    parser.add_argument("--trials", type=int, default=32, help="MetaSchedule trials per kernel")
    parser.add_argument("--time-limit", type=float, default=2400.0, help="tuning seconds per model")
    parser.add_argument("--database", type=Path, default=ROOT / "build" / "tuning-db")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs (tuned, eager)")
    parser.add_argument("--untuned-repeat", type=int, default=3, help="timed runs (untuned)")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "data" / "tables" / "tuning.json")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW",
                        help="convolution layout of the TVM builds (tvm_place.convert_conv_layout); "
                        "PyTorch eager runs its default NCHW")
    args = parser.parse_args(argv)

    catalogue = REDUCED if args.reduced else MODELS
    names = args.models or list(catalogue)
    saved = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results = saved.get("models", {})
    for name in names:
        sizes, torch_name = catalogue[name]
        record = results.setdefault(name if args.layout == "NCHW" else f"{name} ({args.layout})", {})
        if args.phase in ("tune", "both"):
            record.update(tune_phase(name, sizes, args))
        if args.phase in ("measure", "both"):
            record.update(measure_phase(name, sizes, torch_name, args))
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({"models": results, "machine": machine(), "versions": versions(),
                                            "date": today(), "argv": sys.argv[1:] if argv is None else argv},
                                           indent=1))
    body = table(results)
    print(body)
    if not args.no_doc:
        loads = "; ".join(f"{name}: tuning {r.get('tune', {}).get('load', 'n/a')}, timing {r.get('measure_load', 'n/a')}"
                          for name, r in results.items())
        body = (f"Machine: {machine()}; {versions()}; {today()}. Load average (1 min) {loads}. "
                f"Latency: median of {args.repeat} runs (untuned: {args.untuned_repeat}) after a "
                "warm-up, batch 1.\n\n" + body)
        write_block("tuning", "## Tuning on llvm: untuned vs tuned vs PyTorch eager", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
