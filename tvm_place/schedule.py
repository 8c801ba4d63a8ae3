"""The schedule: the one written rule for the order in which each device runs its operators, and
how they group into the stages the runtime calls.

Both sides of "predicted = measured" read it:

- the evaluator's latency (:func:`tvm_place.evaluate.evaluate`) runs each device's operators one
  at a time in :func:`device_sequences` order, an operator starting when its device is free and
  its inputs have arrived;
- ``SplitByDevice`` cuts ``main`` into the stages of :func:`stage_of`, and the runtime
  (:mod:`tvm_place.runtime.executor`) runs each device's stages in that same order, each as soon
  as its inputs have arrived, all devices at once.

A stage is a run of consecutive operators of one device's sequence. A new stage starts before an
operator that reads a value made on another device, and after an operator whose value another
device reads, so that a stage never waits inside for a copy and a copy never waits for the rest of
its stage: stage boundaries are exactly the points where the evaluator's timing depends on another
device. Stages listed by their first operator's position in the order form a topological order
(every cross-device edge leaves a stage's last operator and enters a later stage's first one).

Plain data only (no TVM): the pass feeds it the module's operators, the evaluator the problem's.
Complexity: O(n + m) for ``n`` operators and ``m`` edges.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["device_sequences", "execution_order", "stage_of"]


def execution_order(num_ops: int, edges: np.ndarray, order: Sequence[int] | None = None) -> np.ndarray:
    """``order`` as an array if given (a placement's own execution order), else the smallest-index
    topological order (``0..n-1`` when the numbering is already topological, as CollectOpGraph's
    binding order is)."""
    if order is not None:
        return np.asarray(order, dtype=np.int64)
    import heapq

    successors: list[list[int]] = [[] for _ in range(num_ops)]
    indegree = [0] * num_ops
    for u, v in np.asarray(edges, dtype=np.int64).reshape(-1, 2).tolist():
        successors[u].append(v)
        indegree[v] += 1
    ready = [u for u in range(num_ops) if indegree[u] == 0]
    heapq.heapify(ready)
    result = []
    while ready:
        u = heapq.heappop(ready)
        result.append(u)
        for v in successors[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                heapq.heappush(ready, v)
    return np.asarray(result, dtype=np.int64)


def device_sequences(device_of: np.ndarray, order: np.ndarray, num_devices: int) -> list[list[int]]:
    """Per device, its operators in the order it runs them."""
    sequences: list[list[int]] = [[] for _ in range(num_devices)]
    for u in order:
        sequences[int(device_of[u])].append(int(u))
    return sequences


def stage_of(device_of: np.ndarray, edges: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The stage index of every operator (stages numbered in the order the runtime lists them).

    ``device_of[u]``: the device of operator ``u``; ``edges``: ``(producer, consumer)`` pairs;
    ``order``: a topological order (:func:`execution_order`). See the module docstring for the
    rule.
    """
    device_of = np.asarray(device_of, dtype=np.int64)
    n = device_of.size
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    receives = np.zeros(n, dtype=bool)
    sends = np.zeros(n, dtype=bool)
    if len(edges):
        crossing = device_of[edges[:, 0]] != device_of[edges[:, 1]]
        sends[edges[crossing, 0]] = True
        receives[edges[crossing, 1]] = True
    num_devices = int(device_of.max()) + 1 if n else 0
    open_stage = [-1] * num_devices  # per device: the stage its next operator may join, or -1
    stage = np.empty(n, dtype=np.int64)
    count = 0
    for u in order:
        d = int(device_of[u])
        if open_stage[d] < 0 or receives[u]:
            open_stage[d] = count  # stages are numbered as they open: by first position
            count += 1
        stage[u] = open_stage[d]
        if sends[u]:
            open_stage[d] = -1
    return stage
