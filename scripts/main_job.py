"""The main job: place and compile a real model across CPU and GPU, then run it across two CPUs.

1. ResNet-50 (batch 1, 224x224) placed on this CPU + an NVIDIA A100 (described by its profile: no GPU
   is needed to compile for it), priced by tvm-place's default cost model (``auto``: the CPU by its
   learned model where one was trained for it, else its calibrated profile; the A100 by its
   roofline; the report says which); the report is printed and the per-target artifacts are
   exported.
2. The same model placed across two CPU devices of this machine (``["llvm", "llvm"]``), run, and
   checked against the unsplit ``tvm.compile`` build (max abs error <= 1e-5).
3. That build run as a pipeline on two threads (each bound to its own cores), with the measured
   time per device and per input printed beside the evaluator's prediction. Timings are printed,
   never checked: on a shared 2-core machine they are only as steady as the machine.

Usage: python scripts/main_job.py [--model resnet50] [--out build/main-job] [--cost auto|analytical|calibrated|learned|measured]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import tvm
from tvm import relax

import tvm_place
from tvm_place import models
from tvm_place.compiler import prepare
from tvm_place.options import COST_MODELS, PlaceOptions
from tvm_place.passes import collect_op_graph


#: Inputs streamed through the two-CPU pipeline in part 3.
STREAM_INPUTS = 6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=models.list())
    parser.add_argument("--out", default="build/main-job")
    parser.add_argument("--cost", default=PlaceOptions().cost_model, choices=COST_MODELS,
                        help="the cost model (default: tvm-place's own default)")
    parser.add_argument("--objective", default="throughput", choices=["throughput", "latency"])
    args = parser.parse_args()

    started = time.perf_counter()
    model = models.get(args.model)
    print(f"== {model.name}: {model.description}", flush=True)

    print("\n== 1. CPU + described A100 GPU", flush=True)
    default = " (tvm-place's default)" if args.cost == PlaceOptions().cost_model else ""
    print(f"cost model: {args.cost}{default}; the report's 'priced by' line says which model priced "
          "each device", flush=True)
    placed = tvm_place.compile(
        model.mod,
        ["llvm", "cuda"],
        objective=args.objective,
        cost_model=args.cost,
        progress=True,
        name=model.name,
    )
    print(placed.report())
    exported = placed.export(f"{args.out}/cpu-gpu")
    print(f"artifacts written to {exported}/ (running them needs the GPU)")

    print("\n== 2. two CPU devices of this machine, checked against the unsplit build", flush=True)
    num_ops = len(collect_op_graph(prepare(model.mod)).graph)
    # A contiguous split in two halves, so both devices and the copies between them are exercised
    # whatever the solver would choose on two identical CPUs.
    device_of = (np.arange(num_ops) >= num_ops // 2).astype(np.int64)
    two_cpus = tvm_place.compile(
        model.mod,
        ["llvm", "llvm"],
        objective=args.objective,
        placement=device_of,
        name=model.name,
    )
    print(two_cpus.report().split("\n\n")[0])
    output = two_cpus(*model.inputs).numpy()
    reference_vm = relax.VirtualMachine(tvm.compile(model.mod, target="llvm"), tvm.cpu())
    reference = reference_vm["main"](*[tvm.runtime.tensor(x) for x in model.inputs]).numpy()
    error = float(np.abs(output - reference).max())
    print(f"max abs error against the unsplit build: {error:.3g} (limit 1e-5)")
    two_cpus.export(f"{args.out}/two-cpus")

    print(f"\n== 3. the two-CPU build run as a pipeline ({STREAM_INPUTS} inputs, each device a "
          "thread on its own cores), measured against the evaluator's prediction", flush=True)
    two_cpus.attach_workers("threads")
    two_cpus.run_stream([tuple(model.inputs)] * STREAM_INPUTS)
    print(two_cpus.compare())
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0 if error <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
