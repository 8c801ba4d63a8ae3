"""Exact dynamic program over contiguous splits for the throughput (max-load) objective.

Reference: J. Tarnawski, A. Phanishayee, N. Devanur, D. Mahajan, F. Nina Paravecino, "Efficient
Algorithms for Device Placement of DNN Graph Operators", NeurIPS 2020 (arXiv 2006.16423): the
dynamic program over ideals for max-load, with its training variant.

*Contiguity* is judged on :func:`tvm_place.evaluate.contiguity_edges`: every edge of an inference
graph; in a training graph only its forward part (a backward node follows the forward nodes of its
colour class; a backward node without one mirrors its edges). A placement is contiguous when the
devices can be ordered so that those edges only go forward. Equivalently, the devices hold the
differences ``I_1 \\ I_0, I_2 \\ I_1, ...`` of a chain of *ideals* ``{} = I_0 ⊂ ... ⊂ I_k = V``
(node sets closed under predecessors along contiguity edges, colour classes kept whole).

Loads count every edge, exactly as :func:`tvm_place.evaluate.evaluate` does: a block ``X`` on a
device of type ``t`` carries::

    load_t(X) = sum_{u in X} compute[u, t]
              + sum_{u in X, some successor outside X} transfer[u, t]       (values sent)
              + sum_{u outside X, some successor in X} transfer[u, t]       (values received)

and must fit (``memory(X) <= capacity[t]``, every ``u in X`` allowed on ``t``). In a training
graph data also flows backward along the chain, so both sums see nodes on either side of a block.
Write ``B(K)`` for the nodes whose closed out-neighbourhood ``{u} ∪ succ(u)`` meets both ``K`` and
its complement, and ``sent_t(K)`` for the transfer of ``B(K)``: the transfer term of ``K`` as one
block. For ideals ``J ⊊ I``, with ``a``/``b`` the successors of ``u`` outside ``J`` that lie
inside/outside ``I`` and ``c`` those inside ``J``::

    load_t(I \\ J) = compute_t(I) - compute_t(J) + sent_t(I)
                   + sum_{u in B(J)} transfer[u, t] * δ_u
    δ_u = [a > 0] - [b > 0]   if u in J
          [c > 0 and b = 0]   if u in I \\ J
          -[c > 0 and a = 0]  if u outside I

(a node outside ``B(J)`` has ``{u} ∪ succ(u)`` inside ``J``, where it adds nothing, or outside
``J``, where it adds what it adds to ``I`` alone). ``δ_u`` depends on ``I`` and on the
*signature* of ``u`` in ``J`` (``u``, whether ``u in J``, whether ``c > 0``, the groups of its
successors outside ``J``); few signatures recur across all ideals, so ``δ`` is tabulated per
(ideal, signature). Devices with identical compute, transfer, capacity and allowed columns form a
*type*; with ``c_t`` devices of type ``t`` and a usage vector ``v <= c``::

    dp[{}][0] = 0
    dp[I][v]  = min over ideals J ⊊ I, types t with v_t > 0 of max(dp[J][v - e_t], load_t(I \\ J))
    answer    = min over v <= c of dp[V][v]          (devices may stay unused)

Preprocessing, exact over contiguous splits (:func:`tvm_place.solvers.grouping.contract`, whose
docstring proves it): colour classes, costless satellites and the cycles of the group graph along
contiguity edges become groups. Ideals are enumerated over the groups.

Pruning, exact (it only drops what no split of max load ``<= U`` uses):

- an upper bound ``U`` comes first from the best slicing of one topological order (the same
  program over the ``groups + 1`` prefixes of that order);
- a block carries at least its cheapest compute ``m(X) = sum_{u in X} min_t compute[u, t]``, so
  the candidates ``J`` of ``I`` have ``m(I) - m(J) <= U``; and since every ``δ_u >= -1``,
  ``load_t >= compute_t(I \\ J) + sent_t(I) - sent_t(J)`` discards most pairs before their
  boundaries are looked at;
- a block of load ``<= U`` on type ``t`` has ``m(X) <= share_t * U`` (``share_t``: the largest
  ``m(u) / compute[u, t]``), so a state ``(I, v)`` whose unused devices cannot carry
  ``m(V) - m(I)`` is dead, and an ideal without a live state is never a candidate again.

The ideals of one level (same number of groups) only build on smaller ones, so the program runs
level by level, in batches whose array operations span all their (ideal, sub-ideal) pairs. The
candidates come without search or repeats: a sub-ideal ``J`` of ``I`` is ``I - g`` or a sub-ideal
of ``I - g`` for ``g``, the largest group of ``I \\ J`` (maximal in ``I``), and then ``I - g \\ J``
has only smaller groups; so the candidate lists of one level, sorted by that largest group, give
the next level's by concatenating prefixes.

Complexity: ``N`` ideals (``O((n / w + 1)^w)`` for width ``w`` of the group DAG), ``C`` candidate
pairs (live sub-ideals within ``U`` of cheapest compute; at most ``N^2 / 2``), ``P <= C`` pairs
that survive the bounds, ``W = ceil(groups / 64)`` words of group bits per ideal, ``b`` boundary
nodes of an ideal, ``S`` signatures, ``T`` types and ``V = prod (c_t + 1)`` usage vectors:
enumeration ``O(N * (w + b) * d)`` big-integer operations (``d``: out-degree), the program
``O(C + N * w + N * S + P * (b + V * T))`` vectorised time and ``O(N * (V + W + b) + C_level)``
memory, ``C_level`` the candidates of two consecutive levels. Wide graphs have exponentially many
ideals, so enumeration stops at ``max_ideals``; on that cap, or when the complete program has not
finished within ``COMPLETE_SHARE`` of the time limit, the best slicing of one topological order
and the bound of :func:`tvm_place.solvers.bounds.work_bound` and
:func:`tvm_place.solvers.bounds.contiguous.combinatorial_bound` go to :func:`tvm_place.solvers.anytime.refine`
for the rest of the limit (local search across the cuts, the chain model hinted with its
placement, the cut-window bound: issue 17), and
the answer is flagged not optimal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InfeasibleError
from ..evaluate import MEMORY_TOLERANCE, evaluate
from ..graph import Placement, PlacementProblem
from . import anytime, bounds
from .bounds import contiguous
from .common import DeviceTypes, require_objective, single_device
from .grouping import Groups, check_placeable, colocation_groups, contract

#: Enumeration stops beyond this many ideals: the graph is too wide for the exact program.
DEFAULT_MAX_IDEALS = 200_000
#: The one-order program may take this share of the time limit; where it cannot finish (or is
#: estimated not to), the slicing of runs of groups
#: (:func:`tvm_place.solvers.slicegraph.sliced_runs`) gets this share of what is left.
CHAIN_SHARE = 0.5
RUNS_SHARE = 0.5
#: The complete program (enumeration and dynamic program) may take this share of the time limit;
#: where it cannot finish, the rest goes to local search, the chain model and the cut-window bound
#: (:mod:`tvm_place.solvers.anytime`), so that a wide graph's answer is more than a fallback.
COMPLETE_SHARE = 0.75

#: The program keeps a value and a choice per (ideal, device-usage vector): about 14 bytes each.
_MAX_STATES = 20_000_000

#: How many new ideals pass between two looks at the clock.
_CLOCK_PERIOD = 64

#: Candidate (ideal, sub-ideal) pairs and ideals processed at once: they bound a batch's memory.
_BATCH_PAIRS = 1 << 18
_BATCH_IDEALS = 1 << 11

#: Relative slack on the pruning bound, so that float sums of the same block never fall outside.
_BOUND_SLACK = 1e-9


class _Stopped(Exception):
    """The search ran out of time or ideals; ``args[0]`` says which."""


@dataclass
class _Groups:
    """Operators the search keeps together, numbered in a topological order along contiguity
    edges (so the prefixes of the numbering are ideals). Node sets are Python ``int`` bitmasks."""

    group_of: np.ndarray
    members: list[int]
    feeders: list[int]  # nodes outside the group with an edge into it
    contiguity_preds: list[int]  # bitmask of the groups with a contiguity edge into the group
    contiguity_succs: list[list[int]]

    def __len__(self) -> int:
        return len(self.members)


@dataclass
class _Lattice:
    """Ideals listed level by level (level k: ideals of k groups), with what loads need.

    A boundary node ``u in B(K)`` enters a load only through its *signature*: ``u``, whether it is
    in ``K``, whether it has a successor in ``K``, and the groups of its successors outside ``K``.
    Few signatures recur across many ideals; nodes with no transfer time on any type have none. CSR layouts: ideal ``i`` owns the signatures
    ``entry_signature[entry_start[i]:entry_start[i+1]]`` and the edges
    ``down_start[i]:down_start[i+1]`` to the ideals ``down_parent`` it leaves without one of its
    maximal groups ``down_group`` (ascending); signature ``s`` owns the groups
    ``signature_group[signature_start[s]:signature_start[s+1]]``.
    """

    masks: list[int]  # node set of each ideal
    group_columns: np.ndarray  # (W, N) little-endian uint64 words: the ideal's groups
    level_start: np.ndarray
    down_start: np.ndarray
    down_group: np.ndarray
    down_parent: np.ndarray
    entry_start: np.ndarray
    entry_signature: np.ndarray
    signature_node: np.ndarray
    signature_inside: np.ndarray  # the node is in the ideal
    signature_fed: np.ndarray  # the node has a successor in the ideal
    signature_start: np.ndarray
    signature_group: np.ndarray
    signature_node_group: np.ndarray
    signature_transfer: np.ndarray  # (T, signatures) transfer time of the signature's node
    compute: np.ndarray  # (N, T) compute of the ideal's nodes on each type
    cheapest: np.ndarray  # (N,) sum over its nodes of the cheapest compute over the types
    disallowed: np.ndarray  # (N, T) how many of its nodes may not run on each type
    memory: np.ndarray  # (N,)
    sent: np.ndarray  # (N, T) transfer of its boundary, the transfer term of the ideal as a block

    def __len__(self) -> int:
        return len(self.masks)


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + c)`` over the pairs of ``starts`` and ``counts``."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    return np.repeat(starts - ends + counts, counts) + np.arange(total)


def _bit_groups(problem: PlacementProblem, groups: Groups) -> _Groups:
    """``groups`` (:func:`tvm_place.solvers.grouping.contract`: colour classes, costless
    satellites, contiguity cycles, numbered in a topological order) as the bitmasks the
    enumeration works on. Time O(n + m) big-integer operations."""
    group_of = groups.group_of.tolist()
    num_groups = groups.num_groups
    members = [0] * num_groups
    for u, g in enumerate(group_of):
        members[g] |= 1 << u
    feeders = [0] * num_groups
    for u, v in problem.graph.edges.tolist():
        if group_of[u] != group_of[v]:
            feeders[group_of[v]] |= 1 << u
    contiguity_preds = [0] * num_groups
    for g, h in groups.edges.tolist():
        contiguity_preds[h] |= 1 << g
    return _Groups(
        group_of=groups.group_of,
        members=members,
        feeders=feeders,
        contiguity_preds=contiguity_preds,
        contiguity_succs=[sorted(successors) for successors in groups.successors],
    )


def _enumerate_ideals(
    problem: PlacementProblem,
    groups: _Groups,
    types: DeviceTypes,
    deadline: float,
    max_ideals: int,
    progress: Callable | None,
    chain: bool,
) -> _Lattice:
    """Every ideal of the group DAG (``chain``: only the prefixes of the group numbering)."""
    n = problem.num_ops
    num_groups = len(groups)
    group_of = groups.group_of
    successors = [sum(1 << v for v in succ) for succ in problem.graph.successors]
    closed = [(1 << u) | successors[u] for u in range(n)]
    # Boundary nodes that move no data on any type add nothing to a load: no entries for them.
    moving = sum(1 << int(u) for u in np.flatnonzero(types.transfer.any(axis=1)))
    group_masks = [0]
    masks = [0]
    parent = [0]
    added = [0]
    level_start = [0]
    down_ideal: list[int] = []  # ideal I, its maximal group g and the ideal I - g
    down_group: list[int] = []
    down_parent: list[int] = []
    entry_count = [0]
    entry_signature: list[int] = []
    signature_of: dict[tuple[int, int, int, int], int] = {}
    sources = sum(1 << g for g in range(num_groups) if groups.contiguity_preds[g] == 0)
    # One record per ideal of the current level: (index, boundary B(K), groups ready to add).
    current = [(0, 0, sources)]
    for level in range(num_groups):
        level_start.append(len(masks))
        index_of: dict[int, int] = {}
        following = []
        for index, boundary, ready in current:
            for g in (level,) if chain else _bits(ready):
                grown_groups = group_masks[index] | (1 << g)
                down_group.append(g)
                down_parent.append(index)
                if grown_groups in index_of:
                    down_ideal.append(index_of[grown_groups])
                    continue
                index_of[grown_groups] = len(masks)
                down_ideal.append(len(masks))
                grown = masks[index] | groups.members[g]
                # Only the group's members and the nodes feeding it can change boundary status.
                changed = groups.members[g] | groups.feeders[g]
                grown_boundary = boundary & ~changed
                for u in _bits(changed):
                    if closed[u] & grown and closed[u] & ~grown:
                        grown_boundary |= 1 << u
                grown_ready = ready & ~(1 << g)
                for h in groups.contiguity_succs[g]:
                    if not groups.contiguity_preds[h] & ~grown_groups:
                        grown_ready |= 1 << h
                group_masks.append(grown_groups)
                masks.append(grown)
                parent.append(index)
                added.append(g)
                entries = 0
                for u in _bits(grown_boundary & moving):
                    outside_groups = 0
                    for v in _bits(successors[u] & ~grown):
                        outside_groups |= 1 << int(group_of[v])
                    key = (u, (grown >> u) & 1, int(successors[u] & grown != 0), outside_groups)
                    entry_signature.append(signature_of.setdefault(key, len(signature_of)))
                    entries += 1
                entry_count.append(entries)
                following.append((len(masks) - 1, grown_boundary, grown_ready))
                if len(masks) > max_ideals:
                    raise _Stopped(
                        f"the graph has more than {max_ideals} ideals: too wide for the exact "
                        "program (raise max_ideals, or give more time)"
                    )
                if len(masks) % _CLOCK_PERIOD == 0:
                    if time.perf_counter() > deadline:
                        raise _Stopped(
                            f"time limit reached while enumerating ideals ({len(masks)} so far)"
                        )
                    if progress is not None and len(masks) % (_CLOCK_PERIOD * 64) == 0:
                        progress(f"dp: {len(masks)} ideals enumerated", None)
        current = following
    level_start.append(len(masks))

    num_ideals = len(masks)
    num_types = types.allowed.shape[1]
    group_compute = np.zeros((num_groups, num_types))
    np.add.at(group_compute, group_of, types.compute)
    group_cheapest = np.bincount(group_of, weights=types.cheapest, minlength=num_groups)
    group_disallowed = np.zeros((num_groups, num_types), dtype=np.int64)
    np.add.at(group_disallowed, group_of, ~types.allowed)
    group_memory = np.bincount(group_of, weights=problem.memory, minlength=num_groups)
    parent_array = np.array(parent, dtype=np.int64)
    added_array = np.array(added, dtype=np.int64)
    num_words = (num_groups + 63) // 64
    group_columns = np.zeros((num_words, num_ideals), dtype="<u8")
    compute = np.zeros((num_ideals, num_types))
    cheapest = np.zeros(num_ideals)
    disallowed = np.zeros((num_ideals, num_types), dtype=np.int64)
    total_memory = np.zeros(num_ideals)
    # Each ideal's sums are its parent's plus the added group's; parents sit one level earlier.
    for level in range(1, num_groups + 1):
        rows = np.arange(level_start[level], level_start[level + 1])
        up, g = parent_array[rows], added_array[rows]
        group_columns[:, rows] = group_columns[:, up]
        group_columns[g // 64, rows] |= np.left_shift(np.uint64(1), (g % 64).astype(np.uint64))
        compute[rows] = compute[up] + group_compute[g]
        cheapest[rows] = cheapest[up] + group_cheapest[g]
        disallowed[rows] = disallowed[up] + group_disallowed[g]
        total_memory[rows] = total_memory[up] + group_memory[g]

    keys = list(signature_of)  # dicts keep insertion order: key i has signature id i
    signature_node = np.array([key[0] for key in keys], dtype=np.int64)
    signature_groups = [list(_bits(key[3])) for key in keys]
    entry_signature_array = np.array(entry_signature, dtype=np.int64)
    entry_ideal = np.repeat(np.arange(num_ideals), entry_count)
    sent = np.zeros((num_ideals, num_types))
    for t in range(num_types):
        sent[:, t] = np.bincount(
            entry_ideal,
            types.transfer[signature_node[entry_signature_array], t],
            num_ideals,
        )
    down = np.lexsort((down_group, down_ideal))
    return _Lattice(
        masks=masks,
        group_columns=group_columns,
        level_start=np.array(level_start, dtype=np.int64),
        down_start=np.concatenate(
            [[0], np.cumsum(np.bincount(down_ideal, minlength=num_ideals))]
        ).astype(np.int64),
        down_group=np.array(down_group, dtype=np.int64)[down],
        down_parent=np.array(down_parent, dtype=np.int64)[down],
        entry_start=np.concatenate([[0], np.cumsum(entry_count)]).astype(np.int64),
        entry_signature=entry_signature_array,
        signature_node=signature_node,
        signature_inside=np.array([key[1] for key in keys], dtype=bool),
        signature_fed=np.array([key[2] for key in keys], dtype=bool),
        signature_start=np.concatenate(
            [[0], np.cumsum([len(gs) for gs in signature_groups])]
        ).astype(np.int64),
        signature_group=np.array([g for gs in signature_groups for g in gs], dtype=np.int64),
        signature_node_group=group_of[signature_node],
        signature_transfer=np.ascontiguousarray(types.transfer[signature_node].T),
        compute=compute,
        cheapest=cheapest,
        disallowed=disallowed,
        memory=total_memory,
        sent=sent,
    )


def _best_split(
    lattice: _Lattice,
    types: DeviceTypes,
    group_of: np.ndarray,
    bound: float,
    deadline: float,
    progress: Callable | None,
    label: str,
) -> tuple[float, list[tuple[int, int]], int]:
    """Run the recurrence with blocks of load at most ``bound`` (``inf``: all); return (max load,
    blocks as (node mask, type), sub-ideal pairs whose load was computed).

    The ideals of one level only build on smaller ones, so each level is processed in batches of
    ideals, every array operation spanning all the (ideal, sub-ideal) pairs of a batch.
    """
    num_ideals = len(lattice)
    num_groups = int(group_of.max()) + 1
    counts = types.counts
    num_types = len(counts)
    stride = np.concatenate([[1], np.cumprod(counts + 1)]).astype(np.int64)
    num_vectors = int(stride[-1])
    if num_ideals * num_vectors > _MAX_STATES:
        raise _Stopped(
            f"{num_ideals} ideals x {num_vectors} device-usage vectors exceed {_MAX_STATES} states "
            "(many devices that differ in cost: give identical devices identical costs)"
        )
    usage = (np.arange(num_vectors)[:, None] // stride[:-1]) % (counts + 1)
    with_type = [np.flatnonzero(usage[:, t] > 0) for t in range(num_types)]
    without_one = [with_type[t] - stride[t] for t in range(num_types)]
    limit = bound * (1 + _BOUND_SLACK) if math.isfinite(bound) else math.inf
    # Candidates J of I have cheapest(I) - limit <= cheapest(J) <= cheapest(I), up to float sums.
    total_cheapest = float(lattice.cheapest[-1])
    tolerance = _BOUND_SLACK * (total_cheapest + 1.0)
    # A state (I, v) is dead when the devices v leaves unused cannot carry the rest of the work:
    # a block of load <= limit on type t has cheapest compute <= share[t] * limit. ``room[v]`` is
    # what the unused devices can carry, ``reach[v]`` what they can after one more block.
    if math.isfinite(limit):
        block_room = types.share * limit
        room = (counts - usage) @ block_room + tolerance
        smallest_next = np.where(usage < counts, block_room, np.inf).min(axis=1)
        reach_of_vector = room - smallest_next
    else:
        room = reach_of_vector = np.full(num_vectors, np.inf)
    remaining = total_cheapest - lattice.cheapest

    best = np.full((num_ideals, num_vectors), np.inf)
    best[0, 0] = 0.0
    # reach[J]: the most work the devices left unused by a live state of J can carry beyond one more
    # block; -inf while J has no live state (or is not processed yet).
    reach = np.full(num_ideals, -np.inf)
    reach[0] = reach_of_vector[0]
    # For each ideal K of the previous level, its live sub-ideals J within the candidate range,
    # sorted by top(K, J), the largest group of K \\ J (CSR over K - previous, after a dummy
    # entry). A sub-ideal J of I has top(I, J) = g maximal in I and, unless J = I - g, is a
    # sub-ideal of I - g with a smaller top: so these lists of one level give the next level's
    # candidates without repeats, and no candidate needs a containment test.
    previous = 0
    list_start = np.ones(2, dtype=np.int64)
    list_sub = np.zeros(1, dtype=np.int64)
    list_key = np.full(1, -1, dtype=np.int64)  # (K - previous) * (groups + 1) + top, ascending
    pairs = 0
    num_levels = len(lattice.level_start) - 2
    for level in range(1, num_levels + 1):
        if progress is not None:
            progress(f"dp: {label} program", level / num_levels)
        start, stop = int(lattice.level_start[level]), int(lattice.level_start[level + 1])
        first_edge, last_edge = int(lattice.down_start[start]), int(lattice.down_start[stop])
        edges_of_ideal = np.diff(lattice.down_start[start : stop + 1])
        edge_ideal = np.repeat(np.arange(start, stop), edges_of_ideal)
        edge_group = lattice.down_group[first_edge:last_edge]
        edge_parent = lattice.down_parent[first_edge:last_edge] - previous
        below = (
            np.searchsorted(list_key, edge_parent * (num_groups + 1) + edge_group)
            - list_start[edge_parent]
        )
        lengths = 1 + below  # I - g itself, then the sub-ideals of I - g with a smaller top
        per_ideal = np.bincount(edge_ideal - start, lengths, stop - start).astype(np.int64)
        full_batch = np.flatnonzero(np.diff((np.cumsum(per_ideal) - per_ideal) // _BATCH_PAIRS)) + 1
        cuts = np.union1d(full_batch, np.arange(_BATCH_IDEALS, stop - start, _BATCH_IDEALS))
        kept_lists = []
        for batch in np.split(np.arange(stop - start), cuts):
            if time.perf_counter() > deadline:
                raise _Stopped(
                    f"time limit reached in the {label} program at level {level}/{num_levels}"
                )
            edges = np.arange(
                lattice.down_start[start + batch[0]] - first_edge,
                lattice.down_start[start + batch[-1] + 1] - first_edge,
            )
            offset = _ranges(np.zeros_like(edges), lengths[edges])
            edge_of = np.repeat(edges, lengths[edges])
            from_list = np.where(offset > 0, list_start[edge_parent[edge_of]] + offset - 1, 0)
            pair_sub = np.where(offset > 0, list_sub[from_list], edge_parent[edge_of] + previous)
            pair_ideal = edge_ideal[edge_of]
            pair_top = edge_group[edge_of]
            keep = (reach[pair_sub] > -np.inf) & (
                lattice.cheapest[pair_ideal] - lattice.cheapest[pair_sub] <= limit + tolerance
            )
            pair_ideal, pair_sub, pair_top = pair_ideal[keep], pair_sub[keep], pair_top[keep]
            kept_lists.append((pair_ideal, pair_sub, pair_top))
            keep = reach[pair_sub] >= remaining[pair_ideal]
            pair_ideal, pair_sub = pair_ideal[keep], pair_sub[keep]
            pair_ideal, pair_sub, load = _block_loads(
                lattice, types, pair_ideal, pair_sub, start + int(batch[0]), limit, num_groups
            )
            pairs += len(pair_ideal)
            # dp[I][v] over each ideal's pairs: segmented minima, type by type.
            for t in range(num_types):
                rows = np.flatnonzero(load[:, t] <= limit)
                if not len(rows):
                    continue
                candidate = np.maximum(
                    best[pair_sub[rows, None], without_one[t]], load[rows, t, None]
                )
                ideal_of_row = pair_ideal[rows]
                segment_start = np.flatnonzero(np.r_[True, ideal_of_row[1:] != ideal_of_row[:-1]])
                targets = np.ix_(ideal_of_row[segment_start], with_type[t])
                best[targets] = np.minimum(
                    best[targets], np.minimum.reduceat(candidate, segment_start, axis=0)
                )
        values = best[start:stop]
        live = np.isfinite(values) & (remaining[start:stop, None] <= room)
        values[~live] = np.inf
        reach[start:stop] = np.where(live, reach_of_vector, -np.inf).max(axis=1)
        owner = np.concatenate([ideal for ideal, _, _ in kept_lists]) - start
        previous = start
        list_length = np.bincount(owner, minlength=stop - start)
        list_start = 1 + np.concatenate([[0], np.cumsum(list_length)])
        list_sub = np.concatenate([[0], *(sub for _, sub, _ in kept_lists)])
        list_key = np.concatenate(
            [[-1], owner * (num_groups + 1) + np.concatenate([top for _, _, top in kept_lists])]
        )

    # Walk back from the best full state: recompute the loads into one ideal at a time.
    full = num_ideals - 1
    vector = int(best[full].argmin())
    value = float(best[full, vector])
    blocks: list[tuple[int, int]] = []
    i = full
    while math.isfinite(value) and i != 0:
        below = np.arange(int(lattice.level_start[_level_of(lattice, i)]))
        contained = ~(lattice.group_columns[:, below] & ~lattice.group_columns[:, [i]]).any(axis=0)
        subs = below[contained]
        _, subs, load = _block_loads(
            lattice, types, np.full(len(subs), i), subs, i, math.inf, num_groups
        )
        options = [
            (float(np.maximum(best[subs, vector - stride[t]], load[:, t]).min()), t)
            for t in range(num_types)
            if usage[vector, t] > 0
        ]
        _, t = min(options)
        candidate = np.maximum(best[subs, vector - stride[t]], load[:, t])
        j = int(subs[candidate.argmin()])
        blocks.append((lattice.masks[i] & ~lattice.masks[j], t))
        vector -= int(stride[t])
        i = j
    return value, blocks, pairs


def _level_of(lattice: _Lattice, ideal: int) -> int:
    return int(np.searchsorted(lattice.level_start, ideal, "right")) - 1


def _block_loads(
    lattice: _Lattice,
    types: DeviceTypes,
    pair_ideal: np.ndarray,
    pair_sub: np.ndarray,
    first: int,
    limit: float,
    num_groups: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The load of every block ``pair_ideal \\ pair_sub`` on every type, ``inf`` where it does not
    fit or exceeds ``limit``; the pairs no type can take are dropped first. The ideals of the
    pairs lie in ``first ..`` (one batch, ascending). Returns (ideals, sub-ideals, loads)."""
    capacity = types.capacity * (1 + MEMORY_TOLERANCE)
    # Exact for types that move no data; a lower bound otherwise (every δ_u >= -1).
    load = lattice.compute[pair_ideal] - lattice.compute[pair_sub] + lattice.sent[pair_ideal]
    fits = (lattice.disallowed[pair_ideal] - lattice.disallowed[pair_sub] == 0) & (
        (lattice.memory[pair_ideal] - lattice.memory[pair_sub])[:, None] <= capacity
    )
    fits &= load - lattice.sent[pair_sub] <= limit
    keep = fits.any(axis=1)
    pair_ideal, pair_sub, load, fits = pair_ideal[keep], pair_sub[keep], load[keep], fits[keep]
    moving = [t for t in range(load.shape[1]) if types.transfer[:, t].any()]
    if moving and len(pair_ideal):
        _add_boundary_transfer(
            lattice,
            lattice.group_columns[:, first : int(pair_ideal[-1]) + 1],
            pair_ideal - first,
            pair_sub,
            load,
            moving,
            num_groups,
        )
    load[~(fits & (load <= limit))] = np.inf
    return pair_ideal, pair_sub, load


def _add_boundary_transfer(
    lattice: _Lattice,
    batch_columns: np.ndarray,
    pair_row: np.ndarray,
    pair_sub: np.ndarray,
    load: np.ndarray,
    moving: list[int],
    num_groups: int,
) -> None:
    """Add ``sum_{u in B(J)} transfer[u, t] * δ_u`` to ``load[:, t]`` for the types that move data.

    ``batch_columns`` holds the group words of the batch's ideals; pair ``p`` joins ideal
    ``pair_row[p]`` of the batch with sub-ideal ``pair_sub[p]``. δ depends on the ideal and the
    signature only, so it is tabulated per (ideal of the batch, signature) first.
    """
    num_rows = batch_columns.shape[1]
    num_signatures = len(lattice.signature_node)
    signature_of_group = np.repeat(np.arange(num_signatures), np.diff(lattice.signature_start))
    group_inside = np.unpackbits(
        np.ascontiguousarray(batch_columns.T).view(np.uint8),
        axis=1,
        count=num_groups,
        bitorder="little",
    ).astype(bool)
    successor_inside = group_inside[:, lattice.signature_group].ravel()
    slot = (
        np.arange(num_rows)[:, None] * num_signatures + signature_of_group[None, :]
    ).ravel()
    size = num_rows * num_signatures
    into_block = (np.bincount(slot, successor_inside, size) > 0).reshape(num_rows, num_signatures)
    beyond = (np.bincount(slot, ~successor_inside, size) > 0).reshape(num_rows, num_signatures)
    fed = lattice.signature_fed
    delta = np.where(
        lattice.signature_inside,
        into_block.astype(np.int8) - beyond,
        np.where(
            group_inside[:, lattice.signature_node_group],
            fed & ~beyond,
            -(fed & ~into_block).astype(np.int8),
        ),
    ).ravel()
    entry_counts = lattice.entry_start[pair_sub + 1] - lattice.entry_start[pair_sub]
    signatures = lattice.entry_signature[_ranges(lattice.entry_start[pair_sub], entry_counts)]
    pair_of_entry = np.repeat(np.arange(len(pair_sub)), entry_counts)
    entry_delta = delta[np.repeat(pair_row * num_signatures, entry_counts) + signatures]
    for t in moving:
        load[:, t] += np.bincount(
            pair_of_entry, lattice.signature_transfer[t, signatures] * entry_delta, len(pair_sub)
        )


def _assign(blocks: list[tuple[int, int]], types: DeviceTypes, num_ops: int) -> np.ndarray:
    """Give each block its own device of its type."""
    device_of = np.zeros(num_ops, dtype=np.int64)
    next_of_type = [0] * len(types.devices)
    for mask, t in blocks:
        device = types.devices[t][next_of_type[t]]
        next_of_type[t] += 1
        device_of[list(_bits(mask))] = device
    return device_of


def solve(
    problem: PlacementProblem,
    objective: str,
    time_limit: float,
    progress: Callable[[str, float | None], None] | None = None,
    max_ideals: int = DEFAULT_MAX_IDEALS,
) -> Placement:
    """Minimise the max device load over contiguous splits; see the module docstring."""
    require_objective("dp", objective, ("throughput",))
    deadline = time.perf_counter() + time_limit
    n = problem.num_ops
    from .slicegraph import sliced_runs, slicing_seconds

    if slicing_seconds(problem, len(colocation_groups(problem))) > CHAIN_SHARE * time_limit:
        # Thousands of groups: not even one order's program would finish, and the lattice's
        # bitsets over the operators take O(n^2 / 64) to build; slice runs of groups instead.
        device_of = sliced_runs(problem, RUNS_SHARE * time_limit)
        if device_of is None:
            raise InfeasibleError(
                f"dp found no contiguous placement of the {n} operators within {time_limit:g} s "
                "(too many for its program; a slicing of runs of them found none either); raise "
                "the time limit or use 'greedy'"
            )
        stats = {"search_space": "contiguous", "optimal": False, "ideals": None,
                 "fallback": "best slicing of runs of consecutive groups",
                 "reason": "too many groups for one order's program in the time"}
        device_of, value, lower = anytime.refine(problem, device_of, bounds.work_bound(problem),
                                                 deadline, stats)
        return Placement(
            device_of=device_of,
            objective="throughput",
            value=value,
            lower_bound=lower,
            method="dp",
            stats=stats,
        )
    types = DeviceTypes.of(problem)
    contracted = contract(problem)
    check_placeable(problem, contracted)
    groups = _bit_groups(problem, contracted)
    lattice_inputs = (problem, groups, types)
    stats = {
        "search_space": "contiguous",
        "groups": len(groups),
        "device_types": len(types.devices),
    }

    # The best slicing of one topological order comes first and cheaply (groups + 1 ideals): its
    # value bounds the complete program, and it is the answer kept if that cannot finish.
    fallback = None
    bound = math.inf
    # At most half the limit: where even one order's program cannot finish (thousands of
    # groups), runs of groups are sliced instead in part of the rest.
    chain_deadline = min(deadline, time.perf_counter() + CHAIN_SHARE * time_limit)
    try:
        if slicing_seconds(problem, len(groups)) > CHAIN_SHARE * time_limit:
            raise _Stopped("one order's program would not finish in time")
        chain = _enumerate_ideals(*lattice_inputs, chain_deadline, max_ideals, progress,
                                  chain=True)
        bound, blocks, _ = _best_split(
            chain, types, groups.group_of, math.inf, chain_deadline, progress, "one-order"
        )
        if blocks:
            fallback = _assign(blocks, types, n)
    except _Stopped as stop:
        chain_stopped = stop  # the complete program, a superset of this one, cannot finish
        fallback = sliced_runs(problem, RUNS_SHARE * max(0.0, deadline - time.perf_counter()))
        if fallback is not None:
            stats["fallback"] = "best slicing of runs of consecutive groups"
    else:
        chain_stopped = None
    stats["upper_bound"] = bound if math.isfinite(bound) else None

    try:
        if progress is not None:
            progress("dp: enumerating ideals", None)
        if chain_stopped is not None:
            raise chain_stopped
        complete_deadline = deadline - (1 - COMPLETE_SHARE) * time_limit
        lattice = _enumerate_ideals(*lattice_inputs, complete_deadline, max_ideals, progress,
                                    chain=False)
        stats["ideals"] = len(lattice)
        value, blocks, pairs = _best_split(
            lattice, types, groups.group_of, bound, complete_deadline, progress, "complete"
        )
        stats["block_pairs"] = pairs
    except _Stopped as stop:
        stats.setdefault("ideals", None)
        stats.setdefault("fallback", "best slicing of one topological order")
        stats.update(optimal=False, reason=str(stop))
        if fallback is None:
            fallback = single_device(problem)
            stats["fallback"] = "all operators on one device"
        if fallback is None:
            raise InfeasibleError(
                f"the dp search stopped ({stop}) before finding any placement that fits the "
                "memory capacities and pins; give it more time or check the constraints"
            )
        # The rest of the limit goes to local search, the chain model and the cut-window bound
        # (issue 17).
        lower = max(bounds.work_bound(problem), contiguous.combinatorial_bound(problem, contracted))
        fallback, value, lower = anytime.refine(problem, fallback, lower, deadline, stats)
        return Placement(
            device_of=fallback,
            objective="throughput",
            value=value,
            lower_bound=lower,
            method="dp",
            stats=stats,
        )

    if not math.isfinite(value):
        # Every group fits some device (checked above): the split as a whole does not.
        raise InfeasibleError(
            f"no contiguous split of the {n} operators over {problem.device_names} fits the "
            f"memory capacities and pins ({problem.memory.sum():.4g} bytes in all, capacities "
            f"{problem.capacity.tolist()}); add devices, raise capacities or drop pins"
        )
    device_of = _assign(blocks, types, n)
    measured = evaluate(problem, device_of).max_load
    stats.update(optimal=True, blocks=len(blocks))
    return Placement(
        device_of=device_of,
        objective="throughput",
        value=measured,
        lower_bound=measured,
        method="dp",
        stats=stats,
    )
