"""Local search over contiguous placements: groups moved across the cuts of the pipeline.

A contiguous placement is a chain of blocks, one per device, in a topological order of the
devices' quotient (:mod:`tvm_place.solvers.dp`, module docstring). A *move* takes a group (of
:func:`tvm_place.solvers.grouping.contract`: operators kept together) from its block to the next block when
every contiguity successor of the group lies in later blocks, or to the previous block when
every predecessor lies in earlier ones: the chain stays a chain of ideals, so the placement stays
contiguous, and every contiguous placement with the same device order is reachable by moves. A
move is tried only where the target device runs the group within its memory.

Search: iterated local search (H. R. Lourenço, O. C. Martin, T. Stützle, "Iterated Local
Search", Handbook of Metaheuristics, 2003). The descent takes the most loaded blocks in turn and
accepts a move of one of their boundary groups when it lowers that block and leaves every block
it changes below the max-load: the max-load never rises, and the number of blocks at it falls
until the max-load itself falls. At a local optimum a kick of a few random moves follows, then a
new descent from the kicked chain; the best chain found is kept.

Loads are kept incrementally, by the evaluator's rule (:func:`tvm_place.evaluate.evaluate`):
compute, a send where a value has a consumer on another device, a receive per other device with
a consumer. Per operator the number of its consumers in each block is kept, so a move re-prices
only the group's members and their producers: ``O(s d)`` for ``s`` members of in-degree ``d``.
A descent step scans the boundary of one block, ``O(|block| * degree)``.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np

from ..evaluate import MEMORY_TOLERANCE, contiguity_edges
from ..graph import PlacementProblem
from .grouping import Groups, contract

#: Random moves in one kick (drawn uniformly in this range).
KICK_MOVES = (2, 8)
#: A load must fall by at least this (relative to the max-load) to count as lower.
_EPSILON = 1e-12


def chain_order(problem: PlacementProblem, device_of: np.ndarray) -> list[int]:
    """The devices of a contiguous placement in a topological order of their quotient over the
    contiguity edges, the unused ones last. Raises ``ValueError`` if the placement is not
    contiguous."""
    D = problem.num_devices
    edges = contiguity_edges(problem)
    pairs = {(int(device_of[u]), int(device_of[v])) for u, v in edges.tolist()}
    successors = {d: set() for d in range(D)}
    indegree = [0] * D
    for a, b in pairs:
        if a != b and b not in successors[a]:
            successors[a].add(b)
            indegree[b] += 1
    used = set(np.asarray(device_of).tolist())
    ready = sorted(d for d in used if indegree[d] == 0)
    order = []
    while ready:
        d = ready.pop(0)
        order.append(d)
        for e in sorted(successors[d]):
            indegree[e] -= 1
            if indegree[e] == 0:
                ready.append(e)
    if len(order) != len(used):
        raise ValueError("the placement is not contiguous: its devices' quotient has a cycle")
    return order + [d for d in range(D) if d not in used]


class _Chain:
    """Blocks of groups on a fixed device order, with loads kept by the evaluator's rule."""

    def __init__(self, problem: PlacementProblem, groups: Groups, order: list[int],
                 block_of_group: np.ndarray):
        self.problem, self.groups = problem, groups
        self.device = list(order)
        self.K = len(order)
        self.members = [m.tolist() for m in groups.members]
        self.block = block_of_group.astype(np.int64).tolist()
        self.group_of = groups.group_of.tolist()
        self.consumers = problem.graph.successors
        self.producers = problem.graph.predecessors
        self.transfer = problem.transfer_time.tolist()
        G = groups.num_groups
        self.succ = groups.successors
        self.pred = [[] for _ in range(G)]
        for g, h in groups.edges.tolist():
            self.pred[h].append(g)
        device_compute = groups.compute[:, order]
        self.compute = device_compute.tolist()  # inf where the group may not run
        self.memory = groups.memory.tolist()
        self.capacity = (problem.capacity[order] * (1 + MEMORY_TOLERANCE)).tolist()
        self.block_groups = [set() for _ in range(self.K)]
        self.used_memory = [0.0] * self.K
        self.loads = [0.0] * self.K
        for g in range(G):
            b = self.block[g]
            self.block_groups[b].add(g)
            self.used_memory[b] += self.memory[g]
            self.loads[b] += self.compute[g][b]
        self.count = []
        for u in range(problem.num_ops):
            counter = Counter(self.block[self.group_of[v]] for v in self.consumers[u])
            self.count.append(counter)
            for b, amount in self._charges(u):
                self.loads[b] += amount

    def _charges(self, u: int):
        """``(block, seconds)`` the evaluator charges for operator ``u``'s output."""
        own = self.block[self.group_of[u]]
        others = [b for b, c in self.count[u].items() if c and b != own]
        if not others:
            return []
        row = self.transfer[u]
        return [(own, row[self.device[own]])] + [(b, row[self.device[b]]) for b in others]

    def movable(self, g: int, target: int) -> bool:
        """Whether group ``g`` may move to the adjacent block ``target``."""
        if not 0 <= target < self.K or not math.isfinite(self.compute[g][target]):
            return False
        if self.used_memory[target] + self.memory[g] > self.capacity[target]:
            return False
        if target > self.block[g]:
            return all(self.block[h] >= target for h in self.succ[g])
        return all(self.block[h] <= target for h in self.pred[g])

    def move(self, g: int, target: int) -> dict[int, float]:
        """Move group ``g`` to block ``target``; return the load before the move of every block
        the move may have changed."""
        source = self.block[g]
        members = self.members[g]
        touched = set(members)
        for u in members:
            touched.update(self.producers[u])
        charges = [charge for u in touched for charge in self._charges(u)]
        before = {b: self.loads[b] for b, _ in charges}
        before[source], before[target] = self.loads[source], self.loads[target]
        for b, amount in charges:
            self.loads[b] -= amount
        self.block[g] = target
        for u in members:
            for p in self.producers[u]:
                self.count[p][source] -= 1
                self.count[p][target] += 1
        for u in touched:
            for b, amount in self._charges(u):
                before.setdefault(b, self.loads[b])
                self.loads[b] += amount
        self.loads[source] -= self.compute[g][source]
        self.loads[target] += self.compute[g][target]
        self.block_groups[source].discard(g)
        self.block_groups[target].add(g)
        self.used_memory[source] -= self.memory[g]
        self.used_memory[target] += self.memory[g]
        return before

    def boundary(self, b: int) -> list[tuple[int, int]]:
        """The moves out of block ``b``: ``(group, target)``."""
        moves = []
        for g in self.block_groups[b]:
            for target in (b - 1, b + 1):
                if self.movable(g, target):
                    moves.append((g, target))
        return moves


def improve(problem: PlacementProblem, device_of: np.ndarray, time_limit: float,
            seed: int = 0, groups: Groups | None = None,
            stop_at: float = 0.0, patience: int | None = None) -> tuple[np.ndarray, dict]:
    """The best contiguous placement the iterated local search (module docstring) reaches from
    the contiguous placement ``device_of`` within ``time_limit`` seconds, on the same device
    order; never worse than ``device_of``; it stops early at a max-load of ``stop_at`` (a lower
    bound: nothing is better), and after ``patience`` kicks in a row that found nothing better
    (``None``: never; ``0``: one descent only). The result depends on ``seed`` alone
    when the search ends before the limit. Returns ``(device_of, stats)``."""
    started = time.perf_counter()
    deadline = started + time_limit
    groups = contract(problem) if groups is None else groups
    order = chain_order(problem, np.asarray(device_of))
    position = {d: p for p, d in enumerate(order)}
    block_of_group = np.array([position[int(device_of[m[0]])] for m in groups.members])
    chain = _Chain(problem, groups, order, block_of_group)
    rng = np.random.default_rng(seed)
    best_value, best_block = max(chain.loads), list(chain.block)
    stats = {"descents": 0, "moves": 0, "kicks": 0}
    stalled = 0

    def descend() -> None:
        while time.perf_counter() < deadline:
            top = max(chain.loads)
            limit = top * (1 - _EPSILON)
            improved = False
            bottlenecks = [b for b in range(chain.K) if chain.loads[b] >= limit]
            for b in rng.permutation(bottlenecks).tolist():
                moves = chain.boundary(b)
                for index in rng.permutation(len(moves)).tolist():
                    g, target = moves[index]
                    before = chain.move(g, target)
                    # Block b falls below the max-load; no other block rises to it or above.
                    if chain.loads[b] < limit and all(
                            chain.loads[c] < limit or chain.loads[c] <= old
                            for c, old in before.items()):
                        stats["moves"] += 1
                        improved = True
                        break
                    chain.move(g, b)  # undo
                if improved:
                    break
            if not improved:
                return

    while time.perf_counter() < deadline and best_value > stop_at:
        descend()
        stats["descents"] += 1
        value = max(chain.loads)
        if value < best_value * (1 - _EPSILON):
            best_value, best_block = value, list(chain.block)
            stalled = 0
        elif stats["kicks"]:
            stalled += 1
        if time.perf_counter() >= deadline \
                or (patience is not None and stalled >= patience):
            break  # (a kick from the best chain rebuilds it: O(n + m), not started late)
        if value > best_value * (1 + _EPSILON):  # kick from the best chain, not this one
            chain = _Chain(problem, groups, order, np.array(best_block))
        stats["kicks"] += 1
        for _ in range(int(rng.integers(*KICK_MOVES))):
            b = int(rng.integers(chain.K))
            moves = chain.boundary(b)
            if moves:
                chain.move(*moves[int(rng.integers(len(moves)))])
    result = np.asarray(order)[np.asarray(best_block)[groups.group_of]]
    stats.update(value=best_value, seconds=time.perf_counter() - started)
    return result, stats
