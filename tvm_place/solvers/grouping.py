r"""Operators kept on one device: the one contraction of the operator graph into groups.

Three merges, each valid for the placements it names (``OPT`` the optimum over them):

1. *Colour classes* (every valid placement): the validator puts each colour class on one device,
   so classes sharing an operator merge (:func:`colocation_groups`, a union-find).
2. *Costless satellites* (max-load, over every placement and over contiguous ones; not latency,
   not replicas): a group whose operators cost nothing anywhere (:func:`costless_operators`: zero
   compute on every device, no pin, memory that no capacity notices) and whose edges, in either
   direction, all join one other group ``Y`` joins ``Y``; repeated, since merged groups can become
   such groups. *Why* (by induction over the merges): take an optimal placement that keeps the
   groups merged so far whole, and move the satellite ``X`` onto ``Y``'s device. Its sends and
   receives disappear (every producer and consumer of ``X`` is in ``X`` or ``Y``), ``Y``'s device
   loses the receives of ``X``'s values and gains no compute; support, pins and memory still hold;
   colour classes inside ``X`` move whole; and since every contiguity edge of ``X`` is an edge of
   ``X`` (:func:`tvm_place.evaluate.contiguity_edges` keeps or mirrors edges), the move adds no
   quotient edge, so a contiguous placement stays contiguous. No load rises: the moved placement
   is optimal too. A colour class counts as one group here: when all of it is costless it may
   join its one neighbour like any other group. (The copy of this contraction in the former
   ``archer_bounds`` never merged coloured operators; that was valid but weaker, and dp's merged
   them: ``tests/test_grouping.py`` checks the merge against brute force on graphs with colour
   classes, over every placement and over contiguous ones.)
3. *Contiguity cycles* (contiguous placements only): the strongly connected sets of the groups'
   quotient over the contiguity edges; a contiguous placement has an acyclic device quotient, so
   it keeps each such set on one device.

:func:`contract` applies 1 and 2 (``merge_costless``) and, with ``contiguous``, 3, numbering the
groups in a topological order of the quotient (the ready group holding the smallest operator
first), so that its prefixes are ideals. :func:`check_placeable` is the one check that each group
may go somewhere (support, pins, memory), with the message that says why not; and
:func:`feasible_devices` is, per operator, where it may go in some valid placement.

Time: :func:`contract` O(n D + m log m) in NumPy where nothing merges (no colour class, no costless
operator, no backward node), else a union-find and a condensation in Python,
O((n + m) * rounds of satellite merging).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..errors import InfeasibleError
from ..evaluate import MEMORY_TOLERANCE, contiguity_edges
from ..graph import PlacementProblem


class _UnionFind:
    """Disjoint sets of ``0..n-1`` (path halving)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, u: int) -> int:
        parent = self.parent
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    def union(self, u: int, v: int) -> None:
        self.parent[self.find(u)] = self.find(v)


def _colour_sets(problem: PlacementProblem) -> _UnionFind:
    sets = _UnionFind(problem.num_ops)
    for colour in problem.colour_classes:
        for u in colour[1:]:
            sets.union(u, colour[0])
    return sets


def colocation_groups(problem: PlacementProblem) -> list[list[int]]:
    """Operators that every valid placement puts on one device: overlapping colour classes
    merged, every other operator alone; each group sorted, groups sorted by first member."""
    if not problem.colour_classes:  # the common case, without a Python union-find pass
        return [[u] for u in range(problem.num_ops)]
    sets = _colour_sets(problem)
    groups: dict[int, list[int]] = {}
    for u in range(problem.num_ops):
        groups.setdefault(sets.find(u), []).append(u)
    return sorted(groups.values())


def costless_operators(problem: PlacementProblem) -> np.ndarray:
    """``(n,)`` bool: operators that cost nothing wherever they go: zero compute on every device,
    no pin, and memory that no capacity can notice (none, or all operators fit on every device)."""
    pinned = np.zeros(problem.num_ops, dtype=bool)
    pinned[list(problem.pins)] = True
    fits_anywhere = problem.memory.sum() <= problem.capacity.min() * (1 + MEMORY_TOLERANCE)
    memory_free = (problem.memory == 0) | fits_anywhere
    return (problem.compute_time == 0).all(axis=1) & memory_free & ~pinned


@dataclass
class Groups:
    """Operators kept together (:func:`contract`).

    ``group_of[u]``: ``u``'s group, ``0..G-1``; ``members[g]``: its operators, ascending;
    ``edges``: unique group-level contiguity edges ``(g, h)``; ``comm``: unique pairs ``(u, h)``
    where operator ``u`` has a successor in group ``h != group_of[u]`` (any edge: every edge
    costs); ``compute[g, d]`` (``inf`` where some member may not run on ``d``), ``memory[g]``;
    ``successors[g]`` and ``num_predecessors[g]`` over ``edges``.
    """

    group_of: np.ndarray
    members: list[np.ndarray]
    edges: np.ndarray
    comm: np.ndarray
    compute: np.ndarray
    memory: np.ndarray
    successors: list[list[int]] = field(default_factory=list)
    num_predecessors: np.ndarray | None = None

    @property
    def num_groups(self) -> int:
        return len(self.members)

    def fits(self, problem: PlacementProblem) -> np.ndarray:
        """``(G, D)`` bool: device ``d`` may hold group ``g`` (support, pins, its own memory)."""
        capacity = problem.capacity * (1 + MEMORY_TOLERANCE)
        return np.isfinite(self.compute) & (self.memory[:, None] <= capacity[None, :])

    def least_compute(self, problem: PlacementProblem) -> np.ndarray:
        """``(G,)``: each group's compute on the device that fits it fastest (``inf``: none)."""
        return np.where(self.fits(problem), self.compute, np.inf).min(axis=1)


def contract(problem: PlacementProblem, merge_costless: bool = True,
             contiguous: bool = True) -> Groups:
    """The groups of the module docstring: colour classes, costless satellites
    (``merge_costless``: for max-load only) and, with ``contiguous``, contiguity cycles, numbered
    in a topological order of the quotient. Without ``contiguous`` (valid for every placement)
    the groups are numbered by smallest member and their quotient may have cycles."""
    n = problem.num_ops
    order_edges = contiguity_edges(problem)
    costless = costless_operators(problem) if merge_costless else np.zeros(n, dtype=bool)
    if not problem.colour_classes and not costless.any():
        if not contiguous:
            return groups_from(problem, np.arange(n, dtype=np.int64))
        if np.array_equal(order_edges, problem.graph.edges):
            # The quotient is the graph itself (acyclic), and the numbering below (a topological
            # sort taking the smallest operator first) is the graph's own topological order.
            group_of = np.empty(n, dtype=np.int64)
            group_of[problem.graph.topological_order] = np.arange(n)
            return groups_from(problem, group_of)
    sets = _colour_sets(problem)
    if costless.any():
        _merge_satellites(sets, costless, problem.graph.edges.tolist())
    roots = [sets.find(u) for u in range(n)]
    if not contiguous:
        number: dict[int, int] = {}
        return groups_from(problem, np.array([number.setdefault(r, len(number)) for r in roots],
                                             dtype=np.int64))
    quotient = nx.DiGraph()
    quotient.add_nodes_from(set(roots))
    quotient.add_edges_from((roots[u], roots[v]) for u, v in order_edges.tolist()
                            if roots[u] != roots[v])
    condensed = nx.condensation(quotient)
    component_of = condensed.graph["mapping"]
    smallest: dict[int, int] = {}
    for u in range(n):
        smallest.setdefault(component_of[roots[u]], u)
    numbering = list(nx.lexicographical_topological_sort(condensed, key=smallest.__getitem__))
    number = {component: g for g, component in enumerate(numbering)}
    group_of = np.array([number[component_of[roots[u]]] for u in range(n)], dtype=np.int64)
    return groups_from(problem, group_of)


def _merge_satellites(sets: _UnionFind, costless: np.ndarray, edges: list[list[int]]) -> None:
    """Merge, until none is left, each all-costless set whose edges all join one other set
    (module docstring, 2). The contiguity edges are edges or mirrored edges, so ``edges`` (taken
    in both directions) gives every set its neighbours."""
    n = len(costless)
    while True:
        neighbours: dict[int, set[int]] = {}
        all_costless: dict[int, bool] = {}
        for u in range(n):
            r = sets.find(u)
            all_costless[r] = all_costless.get(r, True) and bool(costless[u])
        for u, v in edges:
            ru, rv = sets.find(u), sets.find(v)
            if ru != rv:
                neighbours.setdefault(ru, set()).add(rv)
                neighbours.setdefault(rv, set()).add(ru)
        lonely = [(r, next(iter(near))) for r, near in sorted(neighbours.items())
                  if len(near) == 1 and all_costless[r]]
        if not lonely:
            return
        for r, neighbour in lonely:
            sets.union(r, neighbour)


def groups_from(problem: PlacementProblem, group_of: np.ndarray) -> Groups:
    """The :class:`Groups` of a grouping ``group_of`` (groups ``0..G-1``). Time O(n D + m log m),
    in NumPy."""
    num_groups = int(group_of.max()) + 1
    by_group = np.argsort(group_of, kind="stable")
    sizes = np.bincount(group_of, minlength=num_groups)
    if num_groups == len(group_of):  # singletons: views of one array, faster than a split
        members = list(by_group.reshape(-1, 1))
    else:
        members = np.split(by_group, np.cumsum(sizes)[:-1])

    edges = contiguity_edges(problem)
    if len(edges):
        pairs = _unique_pairs(group_of[edges[:, 0]], group_of[edges[:, 1]], num_groups)
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
    graph_edges = problem.graph.edges
    if len(graph_edges):
        comm = _unique_pairs(graph_edges[:, 0], group_of[graph_edges[:, 1]], num_groups,
                             keep=group_of[graph_edges[:, 0]] != group_of[graph_edges[:, 1]])
    else:
        comm = np.zeros((0, 2), dtype=np.int64)
    costs = np.where(problem.allowed(), problem.compute_time, np.inf)
    compute = np.stack([np.bincount(group_of, costs[:, d], num_groups)
                        for d in range(problem.num_devices)], axis=1)
    memory = np.bincount(group_of, weights=problem.memory, minlength=num_groups)
    # ``pairs`` is sorted by tail: each group's successors are one slice of the heads.
    heads = pairs[:, 1].tolist()
    ends = np.cumsum(np.bincount(pairs[:, 0], minlength=num_groups)).tolist()
    successors = [heads[a:b] for a, b in zip([0] + ends[:-1], ends)]
    num_predecessors = np.bincount(pairs[:, 1], minlength=num_groups).astype(np.int64)
    return Groups(
        group_of=group_of,
        members=members,
        edges=pairs.astype(np.int64),
        comm=comm.astype(np.int64),
        compute=compute,
        memory=memory,
        successors=successors,
        num_predecessors=num_predecessors,
    )


def _unique_pairs(a: np.ndarray, b: np.ndarray, width: int, keep: np.ndarray | None = None):
    """Sorted unique pairs ``(a, b)``, ``b < width``, with ``a != b`` unless ``keep`` says which
    to keep (a 1-D key: ``np.unique`` over rows is several times slower)."""
    keep = a != b if keep is None else keep
    keys = np.sort(a[keep].astype(np.int64) * width + b[keep])
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    return np.stack([keys // width, keys % width], axis=1)


def check_placeable(problem: PlacementProblem, groups: Groups) -> None:
    """Raise :class:`InfeasibleError`, saying why and how to fix it, if some group fits no
    device at all (support, pins, memory)."""
    fits = groups.fits(problem)
    for g in np.flatnonzero(~fits.any(axis=1)):
        members = groups.members[g].tolist()
        names = [problem.graph.nodes[u].name for u in members]
        devices = problem.device_names
        supported = np.isfinite(groups.compute[g])
        if not supported.any() and len(members) == 1:
            u = members[0]
            why = (f"it is pinned to {[devices[d] for d in problem.pins[u]]}, none of which "
                   "supports it" if u in problem.pins else f"no device of {devices} supports it")
            raise InfeasibleError(
                f"operator {names[0]!r} can run on no device: {why}; add a device that supports "
                "it or change the pin"
            )
        if not supported.any():
            raise InfeasibleError(
                f"operators {names[:6]} must share one device (a colour class, or operators on a "
                f"path between members of one), but no device of {devices} may run all of them "
                "(support or pins); drop the colour class, relax the pins, or add a device that "
                "runs them all"
            )
        what = (f"operator {names[0]!r} needs" if len(names) == 1
                else f"operators {names[:6]} must share one device and need")
        holds = ", ".join(f"{devices[d]} ({problem.capacity[d]:.4g} bytes)"
                          for d in np.flatnonzero(supported).tolist())
        raise InfeasibleError(
            f"{what} {groups.memory[g]:.4g} bytes of memory, more than any device that may run "
            f"{'it' if len(names) == 1 else 'them'} holds: {holds}; raise those devices' memory_capacity, add a device, or drop "
            "the pin or colour class"
        )


def feasible_devices(problem: PlacementProblem) -> np.ndarray:
    """``(n, D)`` bool: where each operator may run in *some* valid placement: a device that
    supports it, is within its pin, and may run and hold its whole colocation group (colour
    classes sharing an operator merged). Raises :class:`InfeasibleError` (:func:`check_placeable`)
    if an operator or a class has no such device."""
    if not problem.colour_classes:  # operators alone, in NumPy: no groups to build
        fits = problem.allowed() & (
            problem.memory[:, None] <= problem.capacity[None, :] * (1 + MEMORY_TOLERANCE))
        if fits.any(axis=1).all():
            return fits
    groups = contract(problem, merge_costless=False, contiguous=False)
    check_placeable(problem, groups)
    return groups.fits(problem)[groups.group_of]
