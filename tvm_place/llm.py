"""Splitting a decoder language model over devices: each operator's layer, the layer splits the
tools people use, and what a placement gives in decode tokens/s and time to first token.

The splits users have today cut the model between layers: evenly (vLLM's and MLC-LLM's pipeline
parallelism, DeepSpeed's ``uniform``), by parameter count (DeepSpeed's ``parameters``), or in
proportion to each device's memory (exo's memory-weighted ring partition). :func:`baseline_splits`
builds each as a placement of the same problem tvm-place solves, so the one evaluator prices
them all alike.

Layers are read off the weights an operator reads (``layers.<i>.`` in their names, as Hugging
Face and ``tvm.relax.frontend.nn`` modules name them; see :func:`operator_layers`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .entries import BOUNDARY, Entry
from .errors import InvalidPlacementError
from .evaluate import MEMORY_TOLERANCE, evaluate, stream_interval
from .graph import Placement, PlacementProblem

#: A weight of decoder layer ``i``: ``layers.<i>.`` at the start of its name or after a dot.
LAYER_WEIGHT = re.compile(r"(?:^|\.)layers\.(\d+)\.")

#: The splits :func:`baseline_splits` makes, and whose tool each stands for.
BASELINES = {
    "uniform": "layers split evenly (vLLM, MLC-LLM pipeline parallelism, DeepSpeed 'uniform')",
    "parameters": "layers split by parameter bytes (DeepSpeed 'parameters')",
    "memory": "layers in proportion to device memory (exo's memory-weighted partition)",
}


def operator_layers(problem: PlacementProblem, weights: dict[str, tuple[int, float]]) -> np.ndarray:
    """The decoder layer of each operator of one function: the layer of the weight it reads
    (``weights``: ``{name: (operator charged with it, bytes)}``, as
    :class:`~tvm_place.entries.Entry` has them), else the latest layer among its producers, else
    (reading inputs only) the earliest layer among its consumers; -1 before the first layer (the
    embedding). The final norm and head follow the last layer. O(V + E)."""
    own = {}
    for name, (reader, _) in weights.items():
        found = LAYER_WEIGHT.search(name)
        if found:
            own[int(reader)] = int(found.group(1))
    graph = problem.graph
    layer = np.full(problem.num_ops, -1, dtype=np.int64)
    for u in graph.topological_order:
        u = int(u)
        if u in own:
            layer[u] = own[u]
        elif graph.predecessors[u]:
            layer[u] = max(int(layer[p]) for p in graph.predecessors[u])
    # An operator that reads only inputs (a decode step's cache of one layer) goes with the
    # earliest layer that reads what it makes.
    for u in graph.topological_order[::-1]:
        u = int(u)
        if layer[u] < 0 and u not in own and graph.successors[u]:
            layer[u] = min(int(layer[v]) for v in graph.successors[u])
    if not own:
        raise InvalidPlacementError(
            "no operator reads a weight named 'layers.<i>.…': the model's layers cannot be told "
            "apart (name the decoder layers' weights layers.0., layers.1., …, as Hugging Face does)"
        )
    return layer


def layer_bytes(weights: dict[str, tuple[int, float]], num_layers: int) -> np.ndarray:
    """Bytes of each decoder layer's weights."""
    sizes = np.zeros(num_layers)
    for name, (_, size) in weights.items():
        found = LAYER_WEIGHT.search(name)
        if found and int(found.group(1)) < num_layers:
            sizes[int(found.group(1))] += size
    return sizes


def contiguous_counts(sizes: Sequence[float], shares: Sequence[float]) -> list[int]:
    """Layers per device for a contiguous split of layers of ``sizes`` in which device ``d``
    gets about ``shares[d]`` of the total: each cut where the running total comes closest to
    the devices' shares so far (a tie: the later cut), never before the previous cut. O(L + k)."""
    sizes = np.asarray(sizes, dtype=float)
    shares = np.asarray(shares, dtype=float) / float(np.sum(shares))
    prefix = np.concatenate([[0.0], np.cumsum(sizes)])  # prefix[c]: total of the first c layers
    cuts, start = [], 0
    for target in np.cumsum(shares)[:-1] * prefix[-1]:
        after = int(np.searchsorted(prefix, target, side="left"))  # first prefix >= target
        before = max(after - 1, 0)
        after = min(after, len(sizes))
        cut = before if target - prefix[before] < prefix[after] - target else after
        start = max(cut, start)
        cuts.append(start)
    bounds = [0] + cuts + [len(sizes)]
    return [bounds[d + 1] - bounds[d] for d in range(len(shares))]


def split_by_layers(problem: PlacementProblem, entries: Sequence[Entry], layers: Sequence[np.ndarray],
                    counts: Sequence[int]) -> np.ndarray:
    """A placement of ``problem`` (the joint problem of ``entries``, or one function's) that
    puts ``counts[d]`` consecutive layers on device ``d`` in every function; the embedding
    goes with the first layer, a boundary node with an operator before it."""
    first_layer = np.cumsum([0] + list(counts))
    device_of = np.zeros(problem.num_ops, dtype=np.int64)
    for entry, layer in zip(entries, layers):
        device = np.searchsorted(first_layer, np.maximum(layer, 0), side="right") - 1
        device_of[entry.nodes] = np.minimum(device, len(counts) - 1)
    for u, node in enumerate(problem.graph.nodes):
        if node.kind == BOUNDARY:
            device_of[u] = device_of[problem.graph.predecessors[u][0]]
    return device_of


def baseline_splits(problem: PlacementProblem, entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """The layer splits of :data:`BASELINES` as joint placements of ``problem`` (made by
    :func:`~tvm_place.entries.joint_problem` from ``entries``, or one function's own problem
    with ``entries`` its one :class:`Entry`), over every device of the problem."""
    layers = [operator_layers(entry.problem, entry.weights) for entry in entries]
    num_layers = int(max(layer.max() for layer in layers)) + 1
    weights = {name: value for entry in entries for name, value in entry.weights.items()}
    capacity = problem.capacity
    memory_share = (np.ones(problem.num_devices) if not np.isfinite(capacity).all()
                    else capacity)
    counts = {
        "uniform": contiguous_counts(np.ones(num_layers), np.ones(problem.num_devices)),
        "parameters": contiguous_counts(layer_bytes(weights, num_layers), np.ones(problem.num_devices)),
        "memory": contiguous_counts(np.ones(num_layers), memory_share),
    }
    return {name: split_by_layers(problem, entries, layers, count) for name, count in counts.items()}


def best_split(problem: PlacementProblem, entries: Sequence[Entry], candidates: dict[str, np.ndarray],
               batch: int, micro_batches: int | None = None) -> tuple[np.ndarray, str]:
    """Of ``candidates`` (the solvers' placements first, then the splits users make), the one
    that fits with the most decode tokens/s (:func:`llm_figures` with ``micro_batches``), and
    its name; a tie goes to the earlier. So a solver stopped by its time limit, or one that
    minimised the busiest device's load where too few micro-batches are in flight to hide a
    long chain of stages, never gives less than the splits users already have."""
    best = None
    for name, device_of in candidates.items():
        figures = llm_figures(problem, entries, device_of, batch, micro_batches=micro_batches)
        if figures.fits and (best is None or figures.decode_tokens_per_second > best[0]):
            best = (figures.decode_tokens_per_second, device_of, name)
    if best is None:
        raise InvalidPlacementError(
            f"none of {list(candidates)} fits the devices' memory: add devices or memory")
    return best[1], best[2]


@dataclass
class LLMFigures:
    """What a placement gives a language model, by the evaluator: ``decode_tokens_per_second``
    (a pipeline of micro-batches: the batch over the busiest device's time per decode step, or,
    where too few micro-batches are in flight to keep every device busy, their tokens over one
    step's latency), ``time_to_first_token`` (one prefill's latency), and whether it fits each
    device's memory."""

    decode_tokens_per_second: float
    time_to_first_token: float
    fits: bool
    #: The joint objective (what tvm-place minimises): a round of the functions' calls.
    seconds_per_round: float = math.nan


def llm_figures(problem: PlacementProblem, entries: Sequence[Entry], device_of: np.ndarray,
                batch: int, prefill: str = "prefill", decode: str = "decode",
                micro_batches: int | None = None) -> LLMFigures:
    """:class:`LLMFigures` of the joint placement ``device_of`` of ``entries`` (each function
    priced on its own problem: one call). ``micro_batches``: how many are in flight; a
    micro-batch's next step waits for its last, so the decode rate is the evaluator's stream
    with that many inputs in flight (:func:`tvm_place.evaluate.stream_interval`: a split that
    goes back and forth between devices overlaps less than its max-stage time says). None: as
    many as the pipeline takes (the max-stage time)."""
    by_name = {entry.name: entry for entry in entries}
    missing = [name for name in (prefill, decode) if name not in by_name]
    if missing:
        raise InvalidPlacementError(f"no entry function {missing}: the functions are {list(by_name)}")

    def evaluation(entry: Entry, objective: str):
        # Priced whether or not it fits: a split that does not is still compared, marked so.
        return evaluate(_uncapped(entry.problem), Placement(device_of[entry.nodes], objective, 0.0, 0.0, "given"))

    decoded = evaluation(by_name[decode], "throughput")
    interval = decoded.max_load
    if micro_batches is not None:
        interval = stream_interval(_uncapped(by_name[decode].problem), device_of[by_name[decode].nodes],
                                   micro_batches)
    rate = 1.0 / interval if interval > 0 else math.inf
    ttft = evaluation(by_name[prefill], "latency").latency
    used = np.bincount(device_of, weights=problem.memory, minlength=problem.num_devices)
    fits = bool(np.all(used <= problem.capacity * (1 + MEMORY_TOLERANCE)))
    objective = "latency" if any(node.kind == BOUNDARY for node in problem.graph.nodes) else "throughput"
    round_ = evaluate(_uncapped(problem), Placement(device_of, objective, 0.0, 0.0, "given")).objective(objective)
    return LLMFigures(batch * rate, ttft, fits, round_)


def format_llm_report(problem: PlacementProblem, entries: Sequence[Entry], placements: dict[str, np.ndarray],
                      batch: int, prefill: str = "prefill", decode: str = "decode") -> str:
    """Per device, for the first of ``placements`` (its name: its split): the layers it runs,
    its memory (weights; activations and the KV cache, at the symbolic sizes' upper bounds;
    free) and its time per decode step; then every placement's decode tokens/s and time to
    first token beside each other, by the one evaluator."""
    from .report import _bytes, _seconds

    by_name = {entry.name: entry for entry in entries}
    name, device_of = next(iter(placements.items()))
    layers = operator_layers(by_name[decode].problem, by_name[decode].weights)
    on_device = device_of[by_name[decode].nodes]
    weights = np.zeros(problem.num_devices)
    charged = {}
    for entry in entries:
        for weight, (reader, size) in entry.weights.items():
            charged.setdefault(weight, (int(device_of[entry.first + reader]), size))
    for device, size in charged.values():
        weights[device] += size
    used = np.bincount(device_of, weights=problem.memory, minlength=problem.num_devices)
    step = evaluate(_uncapped(by_name[decode].problem),
                    Placement(on_device, "throughput", 0.0, 0.0, "given")).load
    lines = [f"  {name}: {'device':<10} {'layers':<10} {'weights':>10} {'act.+cache':>11} "
             f"{'free':>10} {'decode step':>12}"]
    for d, device in enumerate(problem.devices):
        mine = sorted(set(layers[on_device == d].tolist()))
        span = f"{mine[0]}-{mine[-1]}" if mine else "-"
        free = device.memory_capacity - used[d]
        lines.append(f"  {'':<{len(name)}}  {device.name:<10} {span:<10} {_bytes(weights[d]):>10} "
                     f"{_bytes(max(0.0, used[d] - weights[d])):>11} "
                     f"{_bytes(free) if math.isfinite(free) else 'unlimited':>10} {_seconds(step[d]):>12}")
    lines += ["", f"  {'split':<12} {'decode tokens/s':>16} {'time to first token':>20}  fits"]
    for split, placement in placements.items():
        figures = llm_figures(problem, entries, placement, batch, prefill, decode)
        lines.append(f"  {split:<12} {figures.decode_tokens_per_second:>16.2f} "
                     f"{_seconds(figures.time_to_first_token):>20}  {'yes' if figures.fits else 'NO'}")
    return "\n".join(lines)


def _uncapped(problem: PlacementProblem) -> PlacementProblem:
    """``problem`` without memory capacities: a split that does not fit is still priced."""
    return dataclasses.replace(problem, devices=[
        dataclasses.replace(d, memory_capacity=math.inf) for d in problem.devices])


@dataclass
class Generation:
    """What :func:`generate` made and measured: ``tokens`` per micro-batch ``(b, steps)``;
    ``prefill_seconds`` (all prompts through prefill, pipelined), ``decode_seconds`` (every
    decode step of every micro-batch) and the steady ``decode_tokens_per_second``."""

    tokens: list[np.ndarray]
    prefill_seconds: float
    decode_seconds: float
    decode_tokens_per_second: float


def generate(placed, prompts: Sequence[np.ndarray], steps: int, prefill: str = "prefill",
             decode: str = "decode", timeout: float = 600.0) -> Generation:
    """Greedy generation of ``steps`` tokens for each micro-batch of ``prompts`` (``(b, n)``
    int64 token ids each) on a module placed with its ``prefill`` and ``decode`` functions
    (``tvm_place.compile(..., entries=...)``, weights bound with ``placed.bind``), pipelined:
    the micro-batches are in flight across the stages at once, and each step's token of a
    micro-batch goes back to the first stage as its next step's input (the runtime's stream,
    :meth:`~tvm_place.runtime.placed.PlacedModule.run_stream`, with as many inputs in flight
    as micro-batches, reads a micro-batch's next step only once its last one is out).

    The functions take and return the KV cache (``prefill(tokens) -> (logits, *caches)``,
    ``decode(token, *caches) -> (logits, *caches)``): it goes back through this process
    between steps, as the model's functional cache is defined."""
    import time

    if steps < 1 or not prompts:
        raise InvalidPlacementError("generate needs at least one prompt and one step")
    count = len(prompts)
    started = time.perf_counter()
    prefilled = placed[prefill].run_stream([(np.ascontiguousarray(p, dtype=np.int64),) for p in prompts],
                                           depth=count, timeout=timeout)
    prefill_seconds = time.perf_counter() - started
    tokens = [[np.argmax(out[0], axis=-1).astype(np.int64)[:, None]] for out in prefilled]
    caches = [tuple(out[1:]) for out in prefilled]

    def steps_in_order():
        for _ in range(steps - 1):
            for j in range(count):  # read once micro-batch j's previous step is out
                yield (tokens[j][-1], *caches[j])

    def took(index: int, output) -> None:
        j = index % count
        tokens[j].append(np.argmax(output[0], axis=-1).astype(np.int64)[:, None])
        caches[j] = tuple(output[1:])

    started = time.perf_counter()
    if steps > 1:
        placed[decode].run_stream(steps_in_order(), depth=count, timeout=timeout, on_result=took)
    decode_seconds = time.perf_counter() - started
    generated = sum(int(p.shape[0]) for p in prompts) * (steps - 1)
    return Generation([np.concatenate(t, axis=1) for t in tokens], prefill_seconds, decode_seconds,
                      generated / decode_seconds if steps > 1 else 0.0)


__all__ = ["BASELINES", "BOUNDARY", "Entry", "Generation", "LLMFigures", "baseline_splits", "best_split", "contiguous_counts", "format_llm_report", "generate",
           "layer_bytes", "llm_figures", "operator_layers", "split_by_layers"]
