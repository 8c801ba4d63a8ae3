"""Turn every registry model into placement problems for several hardware sets (issue 4, testbed).

For each model of ``tvm_place.models.list()`` (batch 1, real sizes unless ``--quick``, analytical
costs from ``tvm_place/cost/profiles/devices.json``) the module is lowered and its operator graph
collected once; then one placement problem is written per hardware set, in the JSON problem format
(``docs/problem-format.md``), under ``testbed/`` (git-ignored), with ``testbed/manifest.json``
listing model, hardware, devices, operators, edges and file of each.

Hardware sets (``HARDWARE``):

- ``cpu+a100``: 1 server CPU + 1 A100 (PCIe);
- ``cpu+a100+t4``: 1 server CPU + 2 different GPUs, the DiviML setting;
- ``a100xK`` for K in {2, 4, 8, 16, 32, 64}: K equal A100s, the k-stage pipelines of Archer et
  al. (``a100x4`` and ``a100x8`` are also the "4 and 8 equal GPUs" sets: tagged ``equal-gpus``).

Usage::

    python scripts/testbed.py                      # everything, real sizes (slow: minutes)
    python scripts/testbed.py --quick              # small sizes of every model (seconds each)
    python scripts/testbed.py --models resnet50 bert-base --hardware cpu+a100 a100x16
    python scripts/testbed.py --max-ops 3000 --out testbed

A model that fails to build, or whose operator graph exceeds ``--max-ops``, is recorded in the
manifest's ``skipped`` list with the reason; the rest go on.

Problems of the wide models (``WIDE_MODELS``: NASNet-A, Inception-v3 at operator granularity,
RandWire; issue 17) with at least ``WIDE_MIN_OPS`` operators are tagged ``wide``: graphs whose
ideals the exact dp cannot enumerate (``scripts/table_wide.py`` grades the methods on them).

``--training`` adds each model's training step as model ``<name>_training`` (forward, loss and
weight gradients, ``tvm_place.models.get(name, training=True)``): its backward operators are marked
``is_backward`` and tied to their forward operators by colour classes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PIPELINE_STAGES = (2, 4, 8, 16, 32, 64)

#: name -> (targets, profiles, tags)
HARDWARE: dict[str, tuple[list[str], list[str], list[str]]] = {
    "cpu+a100": (["llvm", "cuda"], ["server-cpu", "a100"], ["cpu+gpu"]),
    "cpu+a100+t4": (["llvm", "cuda", "cuda"], ["server-cpu", "a100", "t4"], ["cpu+2gpu", "diviml"]),
}
for _k in PIPELINE_STAGES:
    HARDWARE[f"a100x{_k}"] = (
        ["cuda"] * _k,
        ["a100"] * _k,
        ["pipeline"] + (["equal-gpus"] if _k in (4, 8) else []),
    )

#: The models whose operator graphs are wide (many parallel branches), and the fewest operators a
#: problem of theirs has to be tagged ``wide``.
WIDE_MODELS = ("nasnet-a-mobile", "nasnet-a-large", "inception-v3-ops", "randwire-ws",
               "randwire-er", "randwire-ba")
WIDE_MIN_OPS = 300

#: Small sizes for ``--quick``: every model shrunk so that it lowers in a second or two.
QUICK_SIZES: dict[str, dict] = {
    "bert-base": dict(seq_len=16, hidden=64, heads=4, ffn=128, num_layers=2),
    "bert-large": dict(seq_len=16, hidden=64, heads=4, ffn=128, num_layers=3),
    "bert-layer": dict(seq_len=16, hidden=64, heads=4, ffn=128),
    "densenet121": dict(image_size=32, growth=8, block_config=(2, 2), init_features=16, num_classes=10),
    "dlrm": dict(table_sizes=(100, 50, 30), bottom_mlp=(32, 16), top_mlp=(32, 16)),
    "efficientnet-b0": dict(image_size=32, width_mult=0.25, depth_mult=0.25, num_classes=10),
    "gpt2-block": dict(seq_len=16, hidden=64, heads=4, ffn=128),
    "gpt2-medium": dict(seq_len=16, hidden=64, heads=4, ffn=128, num_layers=3),
    "gpt2-small": dict(seq_len=16, hidden=64, heads=4, ffn=128, num_layers=2),
    "inception-v3": dict(image_size=75, channels=0.125, num_classes=10),
    "inception-v3-ops": dict(image_size=75, channels=0.125, num_classes=10),
    "llama2-7b": dict(seq_len=16, hidden=64, heads=4, ffn=128, num_layers=4),
    "llama2-7b-4layers": dict(seq_len=16, hidden=64, heads=4, ffn=128, num_layers=2),
    "mobilenet-v2": dict(image_size=32, width_mult=0.25, num_classes=10),
    "moe-block": dict(seq_len=16, hidden=64, heads=4, ffn=128, num_experts=4),
    "nasnet-a-large": dict(image_size=32, stem_filters=8, filters=8, repeats=1, num_classes=10),
    "nasnet-a-mobile": dict(image_size=32, stem_filters=8, filters=8, repeats=1, num_classes=10),
    "randwire-ba": dict(image_size=32, num_nodes=12, channels=8, num_classes=10),
    "randwire-er": dict(image_size=32, num_nodes=12, channels=8, num_classes=10),
    "randwire-ws": dict(image_size=32, num_nodes=12, channels=8, num_classes=10),
    "resnet152": dict(image_size=32, width=8, num_classes=10),
    "resnet18": dict(image_size=32, width=8, num_classes=10),
    "resnet50": dict(image_size=32, width=8, num_classes=10),
    "t5-base": dict(seq_len=16, decoder_seq_len=8, hidden=64, heads=4, ffn=128, num_layers=1,
                    decoder_layers=1),
    "unet": dict(image_size=32, width=8),
    "vgg16": dict(image_size=32, width=8, hidden=64, num_classes=10),
    "vit-b16": dict(image_size=32, patch=8, hidden=64, heads=4, ffn=128, num_layers=2, num_classes=10),
}


def _quick_sizes(name: str) -> dict:
    """The small sizes of ``name`` that its builder accepts (unknown models: its defaults)."""
    import inspect

    from models.registry import _REGISTRY

    accepted = set(inspect.signature(_REGISTRY[name].build).parameters)
    return {k: v for k, v in QUICK_SIZES.get(name, {}).items() if k in accepted}


def _say(message: str) -> None:
    print(message, flush=True)


def build_model_problems(name: str, hardware: list[str], quick: bool, max_ops: int | None,
                         training: bool = False):
    """Lower ``name`` once and cost it for every hardware set: ``(problems, info)``.

    ``problems`` maps hardware name -> PlacementProblem; ``info`` has build/collect seconds and
    the sizes used. Raises on a failure to build; returns ``(None, info)`` when over ``max_ops``.
    """
    from tvm_place import models
    from tvm_place.compiler import build_problem, prepare
    from tvm_place.cost import AnalyticalCostModel
    from tvm_place.passes import collect_op_graph
    from tvm_place.targets import resolve_targets

    sizes = _quick_sizes(name) if quick else {}
    info: dict = {"sizes": sizes}
    started = time.perf_counter()
    model = models.get(name, batch=1, training=training, **sizes)
    info["build_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    prepared = prepare(model.mod)
    collected = collect_op_graph(prepared)
    info["lower_seconds"] = round(time.perf_counter() - started, 2)
    graph = collected.graph
    info["ops"] = len(graph)
    info["edges"] = len(graph.edges)
    info["family"] = model.family
    del model
    if max_ops is not None and len(graph) > max_ops:
        return None, info
    problems = {}
    cost_model = AnalyticalCostModel()  # the same costs on every machine
    started = time.perf_counter()
    for hw in hardware:
        targets, profiles, _ = HARDWARE[hw]
        devices = resolve_targets(targets, profiles)
        label = f"{name}_training" if training else name
        problem, _ = build_problem(prepared, collected, devices, cost_model, name=f"{label}@{hw}")
        problems[hw] = problem
    info["cost_seconds"] = round(time.perf_counter() - started, 2)
    return problems, info


def main(argv: list[str] | None = None) -> int:
    from tvm_place.formats import problem_to_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="registry names (default: all)")
    parser.add_argument("--exclude", nargs="*", default=[], help="registry names to leave out")
    parser.add_argument("--hardware", nargs="*", choices=sorted(HARDWARE), help="default: all")
    parser.add_argument("--quick", action="store_true", help="small sizes of every model")
    parser.add_argument("--max-ops", type=int, default=None,
                        help="skip models with more operators than this (recorded in the manifest)")
    parser.add_argument("--out", default=str(ROOT / "testbed"), help="output folder (default testbed/)")
    parser.add_argument("--training", action="store_true",
                        help="also write each model's training step as <model>_training")
    args = parser.parse_args(argv)

    from tvm_place import models

    names = args.models or models.list()
    names = [n for n in names if n not in set(args.exclude)]
    unknown = [n for n in names if n not in models.list()]
    if unknown:
        parser.error(f"unknown models {unknown}; available: {models.list()}")
    hardware = args.hardware or list(HARDWARE)
    out = Path(args.out)
    (out / "problems").mkdir(parents=True, exist_ok=True)

    entries, skipped, model_info = [], [], {}
    started_all = time.perf_counter()
    jobs = [(n, False) for n in names] + ([(n, True) for n in names] if args.training else [])
    for i, (model_name, training) in enumerate(jobs, 1):
        name = f"{model_name}_training" if training else model_name
        _say(f"[{i}/{len(jobs)}] {name}: building{' (quick sizes)' if args.quick else ''} ...")
        try:
            problems, info = build_model_problems(model_name, hardware, args.quick, args.max_ops,
                                                  training)
        except Exception as err:  # a model that does not build: record and go on
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            _say(f"    skipped: {reason}")
            skipped.append({"model": name, "reason": reason})
            continue
        model_info[name] = info
        if problems is None:
            reason = f"{info['ops']} operators > --max-ops {args.max_ops}"
            _say(f"    skipped: {reason}")
            skipped.append({"model": name, "reason": reason, "ops": info["ops"]})
            continue
        for hw, problem in problems.items():
            targets, profiles, tags = HARDWARE[hw]
            file = Path("problems") / f"{name}@{hw}.json"
            (out / file).write_text(problem_to_json(problem))
            entries.append({
                "model": name,
                "training": training,
                "family": info["family"],
                "hardware": hw,
                "tags": tags + (["wide"] if model_name in WIDE_MODELS and not training
                                and problem.num_ops >= WIDE_MIN_OPS else []),
                "devices": len(targets),
                "profiles": profiles,
                "ops": problem.num_ops,
                "edges": len(problem.graph.edges),
                "file": str(file),
            })
        _say(f"    {info['ops']} ops, {info['edges']} edges; build {info['build_seconds']} s, "
             f"lower {info['lower_seconds']} s, cost {info['cost_seconds']} s; "
             f"{len(problems)} problems  ({time.perf_counter() - started_all:.0f} s so far)")
    manifest = {
        "format": "tvm-place-testbed",
        "version": 1,
        "quick": args.quick,
        "batch": 1,
        "cost_model": "analytical",
        "hardware": {hw: {"targets": HARDWARE[hw][0], "profiles": HARDWARE[hw][1],
                          "tags": HARDWARE[hw][2]} for hw in hardware},
        "models": model_info,
        "problems": entries,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started_all, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    _say(f"wrote {len(entries)} problems of {len(model_info) - sum(1 for s in skipped if 'ops' in s)} "
         f"models to {out}/ ({len(skipped)} skipped) in {manifest['seconds']} s")
    return 0


def load_manifest(folder: str | os.PathLike) -> dict:
    """The testbed manifest in ``folder``."""
    return json.loads((Path(folder) / "manifest.json").read_text())


if __name__ == "__main__":
    sys.exit(main())
