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

With several inputs in flight (a stream), :class:`Stream` is the rule for which input's stage
each device runs next: the evaluator's :func:`~tvm_place.evaluate.stream_interval` prices the
schedule it makes, and the runtime's executor submits each device's calls in its order.

Plain data only (no TVM): the pass feeds it the module's operators, the evaluator the problem's.
Complexity: O(n + m) for ``n`` operators and ``m`` edges.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["Stream", "device_sequences", "execution_order", "stage_of", "stream_members"]


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


def stream_members(replicas, devices: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """``{physical device: (logical device, position, group size)}`` for the devices that run
    stages (``devices``) and the members of their replica groups (member ``position`` of a
    group of ``size`` takes the inputs ``k`` with ``k % size == position``)."""
    members = {int(d): (int(d), 0, 1) for d in devices}
    for group in replicas:
        if int(group[0]) in members:
            for position, member in enumerate(group):
                members[int(member)] = (int(group[0]), position, len(group))
    return members


class Stream:
    """The stream rule: the order in which each device runs the stages of the inputs in flight,
    made by simulating the stream on the stages' predicted times.

    Stage ``s`` runs on logical device ``stage_device[s]`` once the stages ``needs[s]`` of the
    same input are done, occupying physical device ``p`` for ``busy[s][p]`` seconds (its
    operators, its call and its halves of the copies it receives and sends). ``members[p] =
    (logical, position, size)``: physical device ``p`` runs its logical device's stages for the
    inputs ``k`` with ``k % size == position`` (a replica group; default: every logical device
    alone). At most ``depth`` inputs are in flight: input ``k`` enters when input ``k - depth``
    is done. Each device runs one stage at a time, each input's stages in stage order, and an
    input's stage after the previous input's same stage there (results leave in order).

    A device that falls free runs, of the stages ready by then, the one of smallest ``(k +
    hops[s], k)``, and else the one that can start first. ``hops[s]``: the device changes along
    the longest chain of stages before ``s``; input ``k``'s stage ``s`` then goes about with input
    ``k + hops[s]``'s first stages, as in a software pipeline. Why, simulated on random splits
    of a BERT layer (seq 512, measured costs) over two devices, as steady-state time per input
    over the max-stage time with 4 inputs in flight (8): the earliest input first, 1.15x on
    average, up to 1.40x (the same with 8); a fixed order by that key alone (what the Ray
    runtime ran before; a BERT layer split back and forth measured 1.46x), 1.31x, up to 1.85x
    (1.00x, up to 1.39x); this rule 1.01x, up to 1.26x (1.00x, up to 1.00x).

    ``inputs``: how many inputs the stream has (None: endless, simulated as far as asked).
    :meth:`call` gives a device's ``i``-th call; :meth:`run` simulates a finite stream to its end.
    Each call scheduled costs O(devices * depth * in-degree).
    """

    def __init__(self, stage_device: Sequence[int], busy, needs: Sequence[Sequence[int]],
                 depth: int, inputs: int | None = None,
                 members: dict[int, tuple[int, int, int]] | None = None):
        self.stage_device = [int(d) for d in stage_device]
        self.busy = busy
        self.needs = [sorted(int(p) for p in need) for need in needs]
        self.depth = max(1, int(depth))
        self.inputs = inputs
        logical = sorted(set(self.stage_device))
        self.members = dict(members) if members is not None else {d: (d, 0, 1) for d in logical}
        #: Per physical device: its logical device's stages, in stage order.
        self.sequence = {p: [s for s, d in enumerate(self.stage_device) if d == logical]
                         for p, (logical, _, _) in self.members.items()}
        self.hops: list[int] = []
        for s, d in enumerate(self.stage_device):
            self.hops.append(max((self.hops[p] + (self.stage_device[p] != d) for p in self.needs[s]),
                                 default=0))
        #: Per physical device: ``(input, stage, start, end)`` of its calls, in the order it runs them.
        self.calls: dict[int, list[tuple[int, int, float, float]]] = {p: [] for p in self.members}
        #: Per input: when its last stage ends.
        self.done: dict[int, float] = {}
        self._finish: dict[tuple[int, int], float] = {}
        first = self.depth if inputs is None else min(self.depth, inputs)
        self._admitted = {k: 0.0 for k in range(first)}
        self._progress: dict[int, dict[int, int]] = {p: {} for p in self.members}
        self._first = {p: position for p, (_, position, _) in self.members.items()}
        self._free = {p: 0.0 for p in self.members}
        self._left: dict[int, int] = {}

    def call(self, device: int, i: int) -> tuple[int, int] | None:
        """``(input, stage)`` of ``device``'s ``i``-th call (from 0); None where a finite stream
        has no such call."""
        calls = self.calls[device]
        while len(calls) <= i and self.step():
            pass
        return calls[i][:2] if len(calls) > i else None

    def run(self) -> "Stream":
        """Simulate a finite stream to its end."""
        if self.inputs is None:
            raise ValueError("an endless stream cannot be run to its end")
        while self.step():
            pass
        return self

    def interval(self) -> float:
        """Seconds per input in steady state of a finite stream: between the ends of its inputs
        at a quarter and at three quarters (fill and drain left out)."""
        self.run()
        quarter = max(1, self.inputs // 4)
        if self.inputs < 3 * quarter + 1:
            return self.done[self.inputs - 1] / self.inputs
        return (self.done[3 * quarter] - self.done[quarter]) / (2 * quarter)

    def step(self) -> bool:
        """Schedule the next call to start (of every device's choice, the earliest); False when
        a finite stream is done."""
        best = None  # (start, key, input, device, stage)
        for p, sequence in self.sequence.items():
            choice = self._choice(p, sequence)
            if choice is not None and (best is None or choice < best):
                best = choice
        if best is None:
            if self.inputs is not None and len(self.done) == self.inputs:
                return False
            raise ValueError("the stream cannot proceed: a stage waits for itself (a cycle?)")
        start, _, k, p, s = best
        end = start + float(self.busy[s][p])
        self._finish[k, s] = end
        self._free[p] = end
        self._progress[p][k] = self._progress[p].get(k, 0) + 1
        self.calls[p].append((k, s, start, end))
        left = self._left.get(k, len(self.stage_device)) - 1
        self._left[k] = left
        if left == 0:
            self.done[k] = max(self._finish.pop((k, t)) for t in range(len(self.stage_device)))
            del self._left[k]
            for progress in self._progress.values():  # of a finished input: its end and calls
                progress.pop(k, None)
            later = k + self.depth
            if self.inputs is None or later < self.inputs:
                self._admitted[later] = self.done[k]
        return True

    def _choice(self, p: int, sequence: list[int]):
        _, _, size = self.members[p]
        progress, free = self._progress[p], self._free[p]
        while self._first[p] in self.done or (progress.get(self._first[p], 0) >= len(sequence)
                                               and self._first[p] in self._admitted):
            self._first[p] += size
        now, soonest = None, None  # (key, ...) of a stage ready by ``free``; of the earliest
        k = self._first[p]
        while k in self._admitted:
            i = progress.get(k, 0)
            if i < len(sequence):
                s = sequence[i]
                if k >= size and k - size not in self.done and progress.get(k - size, 0) <= i:
                    break  # the previous input's same stage here goes first (and so for later ones)
                arrivals = [self._finish.get((k, t)) for t in self.needs[s]]
                if None not in arrivals:
                    ready = max([self._admitted[k], *arrivals])
                    key = k + self.hops[s]
                    if ready <= free:
                        if now is None or (key, k) < now[:2]:
                            now = (key, k, s)
                    elif soonest is None or (ready, key, k) < soonest[:3]:
                        soonest = (ready, key, k, s)
            k += size
        if now is not None:
            key, k, s = now
            return free, key, k, p, s
        if soonest is not None:
            ready, key, k, s = soonest
            return ready, key, k, p, s
        return None
