"""Exact dynamic program over contiguous splits for the throughput (max-load) objective.

Reference: J. Tarnawski, A. Phanishayee, N. Devanur, D. Mahajan, F. Nina Paravecino, "Efficient
Algorithms for Device Placement of DNN Graph Operators", NeurIPS 2020 (arXiv 2006.16423), Sec. 4.

A placement is *contiguous* when the devices can be ordered as a pipeline that data only flows
forward through. Equivalently, the devices hold the differences ``I_1 \\ I_0, I_2 \\ I_1, ...`` of a
chain of *ideals* ``{} = I_0 ⊂ I_1 ⊂ ... ⊂ I_k = V`` (an ideal is a predecessor-closed node set).
For ideals ``J ⊊ I`` and the block ``S = I \\ J`` on device ``d`` the load that
:func:`tvm_place.evaluate.evaluate` charges is::

    load_d(J, I) = sum_{u in S} compute[u, d]
                 + sum_{u in J, u has a successor in S} transfer[u, d]            (values received)
                 + sum_{u in S, u has a successor outside I} transfer[u, d]       (values sent)

and the block must fit: ``memory(S) <= capacity[d]``, every ``u in S`` allowed on ``d``.

Devices with identical compute, transfer, capacity and allowed columns form a *type*; with
``c_t`` devices of type ``t`` and a usage vector ``v <= c`` the recurrence is::

    dp[{}][0] = 0
    dp[I][v]  = min over ideals J ⊊ I and types t with v_t > 0 of
                    max(dp[J][v - e_t], load_t(J, I))
    answer    = min over v <= c of dp[V][v]          (devices may stay unused)

Preprocessing, all exact over contiguous splits: each colour class is contracted into one group;
cycles this creates are contracted too (a contiguous split keeps a strongly connected set on one
device); a group of operators with zero compute on every device, no pin, no colour class and
memory no capacity can notice (zero, or all operators fit on every device), whose values go to
and come from one other group only, joins that group (repeatedly), since moving it there never
raises a load. Ideals are enumerated over the groups.

Per ideal ``J`` the program keeps its maximal nodes (``J ⊂ I`` iff they all lie in ``I``) and its
boundary ``B(J)``, the nodes of ``J`` with a successor outside ``J``, each with those successors
``R(u, J)``. For a fixed ``I`` one vectorised pass over its sub-ideals then gives every
``load_t(J, I)``: ``u in B(J)`` receives into ``S`` iff ``R(u, J)`` meets ``I``, and ``u`` is sent
out of ``I`` (so not from ``S``) iff ``R(u, J)`` leaves ``I``.

Complexity: with ``N`` ideals, ``w`` the width of the group DAG (``N = O((n / w + 1)^w)``), ``P``
the nested pairs ``J ⊊ I`` (at most ``N^2 / 2``), ``b`` the boundary nodes of an ideal and ``r``
their successors outside it, ``T`` types and ``V = prod (c_t + 1)`` usage vectors, the
enumeration takes ``O(N * w * b * r)`` big-integer operations and the program
``O(N^2 * w + P * (b * r + V * T))`` time (vectorised over the sub-ideals of each ``I``) and
``O(N * (V + b * r))`` memory. Wide graphs have exponentially many ideals, so enumeration stops at ``max_ideals``; on that cap or the time
limit the solver returns the best slicing of one topological order (the same program run over the
prefixes of that order, ``N = groups + 1``), flagged not optimal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import networkx as nx
import numpy as np

from ..errors import InfeasibleError, UnknownMethodError
from ..evaluate import MEMORY_TOLERANCE, evaluate
from ..graph import Placement, PlacementProblem
from . import bounds

#: Enumeration stops beyond this many ideals: the graph is too wide for the exact program.
DEFAULT_MAX_IDEALS = 200_000

#: The program keeps a value and a choice per (ideal, device-usage vector): about 14 bytes each.
_MAX_STATES = 20_000_000

#: How many new ideals (or DP rows) pass between two looks at the clock.
_CLOCK_PERIOD = 64


class _Stopped(Exception):
    """The search ran out of time or ideals; ``args[0]`` says which."""


@dataclass
class _DeviceTypes:
    """Devices grouped by identical cost columns; ``(n, T)`` arrays hold one column per type."""

    devices: list[list[int]]
    compute: np.ndarray  # inf (unsupported) replaced by 0: ``allowed`` carries that information
    transfer: np.ndarray
    allowed: np.ndarray
    capacity: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(ds) for ds in self.devices], dtype=np.int64)


@dataclass
class _Groups:
    """Nodes that the search keeps together, numbered in a topological order of their DAG.

    Node sets are Python ``int`` bitmasks over the operators.
    """

    members: list[int]
    preds: list[int]  # nodes outside the group feeding it
    succ_groups: list[list[int]]
    tops: list[int]  # members with no successor inside the group (maximal once it is added)


@dataclass
class _Lattice:
    """Ideals listed level by level (level k: ideals of k groups), with what loads need.

    CSR layouts: ideal ``i`` owns ``max_node[max_start[i]:max_start[i+1]]`` and boundary entries
    ``entry_start[i]:entry_start[i+1]``; entry ``e`` (boundary node ``entry_node[e]``) owns the
    successors ``triple_node[triple_start[e]:triple_start[e+1]]`` outside its ideal.
    """

    masks: list[int]
    level_start: np.ndarray
    level: np.ndarray
    max_start: np.ndarray
    max_node: np.ndarray
    entry_start: np.ndarray
    entry_node: np.ndarray
    triple_start: np.ndarray
    triple_node: np.ndarray
    compute: np.ndarray  # (N, T) compute of the ideal's nodes on each type
    disallowed: np.ndarray  # (N, T) how many of its nodes may not run on each type
    memory: np.ndarray  # (N,)
    sent: np.ndarray  # (N, T) transfer time of its boundary, each value once
    entry_transfer: np.ndarray  # (T, E) transfer time of each entry's node (rows: one gather each)

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


def _sum_rows(row_of: np.ndarray, values: np.ndarray, num_rows: int) -> np.ndarray:
    """Add row ``e`` of ``values`` (shape ``(E, T)``) into row ``row_of[e]`` of the result."""
    num_cols = values.shape[1]
    slots = (row_of[:, None] * num_cols + np.arange(num_cols)).ravel()
    return np.bincount(slots, values.ravel(), num_rows * num_cols).reshape(num_rows, num_cols)


def _device_types(problem: PlacementProblem) -> _DeviceTypes:
    allowed = problem.allowed()
    capacity = problem.capacity
    key_to_type: dict[tuple, int] = {}
    devices: list[list[int]] = []
    for d in range(problem.num_devices):
        key = (
            problem.compute_time[:, d].tobytes(),
            problem.transfer_time[:, d].tobytes(),
            float(capacity[d]),
            allowed[:, d].tobytes(),
        )
        if key not in key_to_type:
            key_to_type[key] = len(devices)
            devices.append([])
        devices[key_to_type[key]].append(d)
    representative = [ds[0] for ds in devices]
    compute = problem.compute_time[:, representative]
    return _DeviceTypes(
        devices=devices,
        compute=np.where(np.isfinite(compute), compute, 0.0),
        transfer=problem.transfer_time[:, representative],
        allowed=allowed[:, representative],
        capacity=capacity[representative],
    )


def _costless(problem: PlacementProblem) -> np.ndarray:
    """Operators that cost nothing wherever they go: zero compute on every device, no pin, no
    colour class, and memory that no capacity can notice (none, or all operators fit anywhere)."""
    coloured = np.zeros(problem.num_ops, dtype=bool)
    for colour in problem.colour_classes:
        coloured[colour] = True
    pinned = np.zeros(problem.num_ops, dtype=bool)
    pinned[list(problem.pins)] = True
    fits_anywhere = problem.memory.sum() <= problem.capacity.min() * (1 + MEMORY_TOLERANCE)
    memory_free = (problem.memory == 0) | fits_anywhere
    return (problem.compute_time == 0).all(axis=1) & memory_free & ~pinned & ~coloured


def _contract(problem: PlacementProblem) -> tuple[_Groups, np.ndarray]:
    """Group the operators (colour classes, costless leaves, cycles); return groups, group_of."""
    graph = problem.graph
    n = problem.num_ops
    root = list(range(n))

    def find(u: int) -> int:
        while root[u] != u:
            root[u] = root[root[u]]
            u = root[u]
        return u

    def union(u: int, v: int) -> None:
        root[find(u)] = find(v)

    for colour in problem.colour_classes:
        for u in colour[1:]:
            union(u, colour[0])
    # A costless group whose values only go to, and come from, one other group joins it: moving it
    # there drops transfers and adds nothing. Repeat, since merged groups can become such groups.
    costless = _costless(problem)
    edges = [(int(u), int(v)) for u, v in graph.edges]
    while True:
        neighbours: dict[int, set[int]] = {}
        all_costless: dict[int, bool] = {}
        for u in range(n):
            r = find(u)
            all_costless[r] = all_costless.get(r, True) and bool(costless[u])
        for u, v in edges:
            ru, rv = find(u), find(v)
            if ru != rv:
                neighbours.setdefault(ru, set()).add(rv)
                neighbours.setdefault(rv, set()).add(ru)
        lonely = [
            (r, next(iter(near)))
            for r, near in neighbours.items()
            if len(near) == 1 and all_costless[r]
        ]
        if not lonely:
            break
        for r, neighbour in lonely:
            union(r, neighbour)
    # Contract the cycles the merges made (a contiguous split keeps each on one device) and number
    # the groups in a topological order, smallest member first among ready ones, so that their
    # prefixes are ideals: the chain the fallback slices.
    quotient = nx.DiGraph()
    quotient.add_nodes_from({find(u) for u in range(n)})
    quotient.add_edges_from((find(u), find(v)) for u, v in edges if find(u) != find(v))
    condensed = nx.condensation(quotient)
    component_of = condensed.graph["mapping"]
    smallest_member: dict[int, int] = {}
    for u in range(n):
        smallest_member.setdefault(component_of[find(u)], u)
    order = list(nx.lexicographical_topological_sort(condensed, key=smallest_member.__getitem__))
    number = {component: g for g, component in enumerate(order)}
    group_of = np.array([number[component_of[find(u)]] for u in range(n)], dtype=np.int64)

    num_groups = len(order)
    members = [0] * num_groups
    for u in range(n):
        members[group_of[u]] |= 1 << u
    preds = [0] * num_groups
    tops = list(members)
    succ_groups: list[set[int]] = [set() for _ in range(num_groups)]
    for u, v in edges:
        gu, gv = group_of[u], group_of[v]
        if gu == gv:
            tops[gu] &= ~(1 << u)
        else:
            preds[gv] |= 1 << u
            succ_groups[gu].add(int(gv))
    groups = _Groups(
        members=members,
        preds=preds,
        succ_groups=[sorted(s) for s in succ_groups],
        tops=tops,
    )
    return groups, group_of


def _check_groups_placeable(problem: PlacementProblem, types: _DeviceTypes, group_of) -> None:
    """Raise if a group may run on no device type at all (the search would find nothing)."""
    num_groups = int(group_of.max()) + 1
    disallowed = np.zeros((num_groups, types.allowed.shape[1]), dtype=np.int64)
    np.add.at(disallowed, group_of, ~types.allowed)
    for g in np.flatnonzero((disallowed > 0).all(axis=1)):
        names = [problem.graph.nodes[u].name for u in np.flatnonzero(group_of == g)]
        if len(names) == 1:
            raise InfeasibleError(
                f"operator {names[0]!r} can run on no device of {problem.device_names}: it is "
                "unsupported everywhere or pinned where it is unsupported; add a device or change "
                "the pin"
            )
        raise InfeasibleError(
            f"operators {names[:6]} must share one device (a colour class, or operators on a path "
            f"between members of one), but no device of {problem.device_names} may run all of "
            "them; check their pins and supported devices"
        )


def _enumerate_ideals(
    groups: _Groups,
    types: _DeviceTypes,
    memory: np.ndarray,
    successors: list[int],
    group_of: np.ndarray,
    deadline: float,
    max_ideals: int,
    progress: Callable | None,
    chain: bool,
) -> _Lattice:
    """Every ideal of the group DAG (``chain``: only the prefixes of the group numbering)."""
    num_groups = len(groups.members)
    masks = [0]
    parent = [0]
    added = [0]
    level_start = [0]
    max_count = [0]
    max_node: list[int] = []
    entry_count = [0]
    entry_node: list[int] = []
    triple_count: list[int] = []
    triple_node: list[int] = []
    sources = sum(1 << g for g in range(num_groups) if groups.preds[g] == 0)
    # One record per ideal of the current level: (index, boundary, maximal nodes, ready groups).
    current = [(0, 0, 0, sources)]
    for level in range(num_groups):
        level_start.append(len(masks))
        index_of: dict[int, int] = {}
        following = []
        for index, boundary, maximal, ready in current:
            mask = masks[index]
            for g in (level,) if chain else _bits(ready):
                grown = mask | groups.members[g]
                if grown in index_of:
                    continue
                index_of[grown] = len(masks)
                # Only the group's members and the nodes feeding it can change boundary status.
                changed = (boundary & groups.preds[g]) | groups.members[g]
                grown_boundary = boundary & ~changed
                for u in _bits(changed):
                    if successors[u] & ~grown:
                        grown_boundary |= 1 << u
                grown_maximal = (maximal & ~groups.preds[g]) | groups.tops[g]
                grown_ready = ready & ~(1 << g)
                for h in groups.succ_groups[g]:
                    if not groups.preds[h] & ~grown:
                        grown_ready |= 1 << h
                masks.append(grown)
                parent.append(index)
                added.append(g)
                max_nodes_here = list(_bits(grown_maximal))
                max_node.extend(max_nodes_here)
                max_count.append(len(max_nodes_here))
                entries = 0
                for u in _bits(grown_boundary):
                    outside = list(_bits(successors[u] & ~grown))
                    entry_node.append(u)
                    triple_count.append(len(outside))
                    triple_node.extend(outside)
                    entries += 1
                entry_count.append(entries)
                following.append((len(masks) - 1, grown_boundary, grown_maximal, grown_ready))
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
    group_disallowed = np.zeros((num_groups, num_types), dtype=np.int64)
    np.add.at(group_disallowed, group_of, ~types.allowed)
    group_memory = np.bincount(group_of, weights=memory, minlength=num_groups)
    parent_array = np.array(parent, dtype=np.int64)
    added_array = np.array(added, dtype=np.int64)
    compute = np.zeros((num_ideals, num_types))
    disallowed = np.zeros((num_ideals, num_types), dtype=np.int64)
    total_memory = np.zeros(num_ideals)
    level_of = np.zeros(num_ideals, dtype=np.int64)
    # Each ideal's sums are its parent's plus the added group's; parents sit one level earlier.
    for level in range(1, num_groups + 1):
        rows = slice(level_start[level], level_start[level + 1])
        up, g = parent_array[rows], added_array[rows]
        compute[rows] = compute[up] + group_compute[g]
        disallowed[rows] = disallowed[up] + group_disallowed[g]
        total_memory[rows] = total_memory[up] + group_memory[g]
        level_of[rows] = level
    entry_ideal = np.repeat(np.arange(num_ideals), entry_count)
    entry_node_array = np.array(entry_node, dtype=np.int64)
    sent = _sum_rows(entry_ideal, types.transfer[entry_node_array], num_ideals)
    return _Lattice(
        masks=masks,
        level_start=np.array(level_start, dtype=np.int64),
        level=level_of,
        max_start=np.concatenate([[0], np.cumsum(max_count)]).astype(np.int64),
        max_node=np.array(max_node, dtype=np.int64),
        entry_start=np.concatenate([[0], np.cumsum(entry_count)]).astype(np.int64),
        entry_node=entry_node_array,
        triple_start=np.concatenate([[0], np.cumsum(triple_count)]).astype(np.int64),
        triple_node=np.array(triple_node, dtype=np.int64),
        compute=compute,
        disallowed=disallowed,
        memory=total_memory,
        sent=sent,
        entry_transfer=np.ascontiguousarray(types.transfer[entry_node_array].T),
    )


def _best_split(
    lattice: _Lattice,
    types: _DeviceTypes,
    num_ops: int,
    deadline: float,
    progress: Callable | None,
    label: str,
) -> tuple[float, list[tuple[int, int]], int]:
    """Run the recurrence; return (max load, blocks as (node mask, type), sub-ideal pairs seen)."""
    num_ideals = len(lattice)
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
    capacity = types.capacity * (1 + MEMORY_TOLERANCE)
    num_bytes = (num_ops + 7) // 8

    best = np.full((num_ideals, num_vectors), np.inf)
    best[0, 0] = 0.0
    chosen_sub = np.zeros((num_ideals, num_vectors), dtype=np.int32)
    chosen_type = np.zeros((num_ideals, num_vectors), dtype=np.int16)
    pairs = 0
    report_every = max(1, num_ideals // 100)
    for i in range(1, num_ideals):
        if i % _CLOCK_PERIOD == 0 and time.perf_counter() > deadline:
            raise _Stopped(f"time limit reached in the {label} program at ideal {i}/{num_ideals}")
        if progress is not None and i % report_every == 0:
            progress(f"dp: {label} program", i / num_ideals)
        inside = np.unpackbits(
            np.frombuffer(lattice.masks[i].to_bytes(num_bytes, "little"), dtype=np.uint8),
            count=num_ops,
            bitorder="little",
        ).astype(bool)
        smaller = int(lattice.level_start[lattice.level[i]])
        # Sub-ideals: the empty one, and every smaller ideal whose maximal nodes all lie in I.
        if smaller > 1:
            contained = np.logical_and.reduceat(
                inside[lattice.max_node[: lattice.max_start[smaller]]],
                lattice.max_start[1:smaller],
            )
            subs = np.concatenate([[0], 1 + np.flatnonzero(contained)])
        else:
            subs = np.zeros(1, dtype=np.int64)
        pairs += len(subs)

        # Only the boundary entries of the sub-ideals matter: gather them, then their successors.
        entry_counts = lattice.entry_start[subs + 1] - lattice.entry_start[subs]
        entries = _ranges(lattice.entry_start[subs], entry_counts)
        outside_counts = lattice.triple_start[entries + 1] - lattice.triple_start[entries]
        successors = lattice.triple_node[_ranges(lattice.triple_start[entries], outside_counts)]
        entry_of_successor = np.repeat(np.arange(len(entries)), outside_counts)
        inside_counts = np.bincount(entry_of_successor, inside[successors], len(entries))
        # u in B(J) receives into S = I \ J iff one of its successors outside J is in I; it is sent
        # out of I (so it is not among S's sends) iff one of them is outside I.
        feeds_block = inside_counts > 0
        leaves_ideal = inside_counts < outside_counts
        sub_of_entry = np.repeat(np.arange(len(subs)), entry_counts)
        load = lattice.compute[i] - lattice.compute[subs] + lattice.sent[i]
        for t in range(num_types):
            transfer = lattice.entry_transfer[t, entries]
            received = np.bincount(sub_of_entry, transfer * feeds_block, len(subs))
            kept = np.bincount(sub_of_entry, transfer * leaves_ideal, len(subs))
            load[:, t] += received - kept
        fits = (lattice.disallowed[i] - lattice.disallowed[subs] == 0) & (
            (lattice.memory[i] - lattice.memory[subs])[:, None] <= capacity
        )
        load[~fits] = np.inf

        before = best[subs]
        for t in range(num_types):
            if not len(with_type[t]) or not fits[:, t].any():
                continue
            candidate = np.maximum(before[:, without_one[t]], load[:, t, None])
            pick = candidate.argmin(axis=0)
            value = candidate[pick, np.arange(len(pick))]
            better = value < best[i, with_type[t]]
            targets = with_type[t][better]
            best[i, targets] = value[better]
            chosen_sub[i, targets] = subs[pick[better]]
            chosen_type[i, targets] = t

    full = num_ideals - 1
    vector = int(best[full].argmin())
    value = float(best[full, vector])
    blocks: list[tuple[int, int]] = []
    if math.isfinite(value):
        i = full
        while i != 0:
            j, t = int(chosen_sub[i, vector]), int(chosen_type[i, vector])
            blocks.append((lattice.masks[i] & ~lattice.masks[j], t))
            vector -= int(stride[t])
            i = j
    return value, blocks, pairs


def _assign(blocks: list[tuple[int, int]], types: _DeviceTypes, num_ops: int) -> np.ndarray:
    """Give each block its own device of its type."""
    device_of = np.zeros(num_ops, dtype=np.int64)
    next_of_type = [0] * len(types.devices)
    for mask, t in blocks:
        device = types.devices[t][next_of_type[t]]
        next_of_type[t] += 1
        device_of[list(_bits(mask))] = device
    return device_of


def _single_device(problem: PlacementProblem) -> np.ndarray | None:
    """All operators on the device where they run fastest together, if one may hold them all."""
    allowed = problem.allowed().all(axis=0) & (
        problem.memory.sum() <= problem.capacity * (1 + MEMORY_TOLERANCE)
    )
    if not allowed.any():
        return None
    total = np.where(allowed, problem.compute_time.sum(axis=0), np.inf)
    return np.full(problem.num_ops, int(total.argmin()), dtype=np.int64)


def _infeasible(problem: PlacementProblem, types: _DeviceTypes, group_of: np.ndarray):
    """The error for a problem the complete program found no contiguous split for."""
    num_groups = int(group_of.max()) + 1
    group_memory = np.bincount(group_of, weights=problem.memory, minlength=num_groups)
    disallowed = np.zeros((num_groups, len(types.devices)), dtype=np.int64)
    np.add.at(disallowed, group_of, ~types.allowed)
    room = np.where(disallowed == 0, types.capacity * (1 + MEMORY_TOLERANCE), -np.inf).max(axis=1)
    too_big = np.flatnonzero(group_memory > room)
    if too_big.size:
        g = int(too_big[0])
        names = [problem.graph.nodes[u].name for u in np.flatnonzero(group_of == g)]
        what = (
            f"operator {names[0]!r} needs"
            if len(names) == 1
            else f"operators {names[:6]} must share one device and need"
        )
        return InfeasibleError(
            f"{what} {group_memory[g]:.4g} bytes, more than any device that may run them holds "
            f"({room[g]:.4g}); raise the capacity, or drop the pin or colour class"
        )
    return InfeasibleError(
        f"no contiguous split of the {problem.num_ops} operators over {problem.device_names} fits "
        f"the memory capacities and pins ({problem.memory.sum():.4g} bytes in all, capacities "
        f"{problem.capacity.tolist()}); add devices, raise capacities or drop pins"
    )


def solve(
    problem: PlacementProblem,
    objective: str,
    time_limit: float,
    progress: Callable[[str, float | None], None] | None = None,
    max_ideals: int = DEFAULT_MAX_IDEALS,
) -> Placement:
    """Minimise the max device load over contiguous splits; see the module docstring."""
    if objective != "throughput":
        raise UnknownMethodError(
            f"the dp method minimises the max device load ('throughput'), not {objective!r}"
        )
    deadline = time.perf_counter() + time_limit
    n = problem.num_ops
    types = _device_types(problem)
    groups, group_of = _contract(problem)
    _check_groups_placeable(problem, types, group_of)
    successors = [sum(1 << v for v in succ) for succ in problem.graph.successors]
    lattice_inputs = (groups, types, problem.memory, successors, group_of)
    stats = {
        "search_space": "contiguous",
        "groups": len(groups.members),
        "device_types": len(types.devices),
    }

    # The best slicing of one topological order comes first and cheaply (groups + 1 ideals): it is
    # the answer kept if the complete program cannot finish.
    fallback = None
    try:
        chain = _enumerate_ideals(*lattice_inputs, deadline, max_ideals, progress, chain=True)
        _, blocks, _ = _best_split(chain, types, n, deadline, progress, "one-order")
        if blocks:
            fallback = _assign(blocks, types, n)
    except _Stopped:
        pass

    try:
        if progress is not None:
            progress("dp: enumerating ideals", None)
        lattice = _enumerate_ideals(*lattice_inputs, deadline, max_ideals, progress, chain=False)
        stats["ideals"] = len(lattice)
        value, blocks, pairs = _best_split(lattice, types, n, deadline, progress, "complete")
        stats["block_pairs"] = pairs
    except _Stopped as stop:
        stats.setdefault("ideals", None)
        stats.update(
            optimal=False, reason=str(stop), fallback="best slicing of one topological order"
        )
        if fallback is None:
            fallback = _single_device(problem)
            stats["fallback"] = "all operators on one device"
        if fallback is None:
            raise InfeasibleError(
                f"the dp search stopped ({stop}) before finding any placement that fits the "
                "memory capacities and pins; give it more time or check the constraints"
            )
        return Placement(
            device_of=fallback,
            objective="throughput",
            value=evaluate(problem, fallback).max_load,
            lower_bound=bounds.work_bound(problem),
            method="dp",
            stats=stats,
        )

    if not math.isfinite(value):
        raise _infeasible(problem, types, group_of)
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
