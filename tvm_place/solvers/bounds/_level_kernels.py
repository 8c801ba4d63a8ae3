"""The compiled inner loops of :mod:`tvm_place.solvers.bounds.levels` (numba, imported only when
a level search runs): the block enumeration from each ideal of a frontier, and the hash table
of the ideals reached. Notation and the rules they implement: that module's docstring."""

from __future__ import annotations

import numba
import numpy as np

_ONE = np.uint64(1)
_FNV_OFFSET = np.uint64(1469598103934665603)
_FNV_PRIME = np.uint64(1099511628211)

#: What :func:`expand` reports.
DONE, REACHED_ALL, NEED_ROOM, OUT_OF_VISITS = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True, inline="always")
def _hash(rows, row):
    h = _FNV_OFFSET
    for w in range(rows.shape[1]):
        h ^= rows[row, w]
        h *= _FNV_PRIME
        h ^= h >> np.uint64(29)
    return h


@numba.njit(cache=True, nogil=True, inline="always")
def _open(open_list, open_at, num_open, e):
    """Add edge ``e`` to the open edges (a list with each edge's position); the new size."""
    open_at[e] = num_open
    open_list[num_open] = e
    return num_open + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _close(open_list, open_at, num_open, e):
    """Take edge ``e`` out of the open edges (the last one takes its place); the new size."""
    num_open -= 1
    last = open_list[num_open]
    open_list[open_at[e]] = last
    open_at[last] = open_at[e]
    open_at[e] = -1
    return num_open


@numba.njit(cache=True, nogil=True)
def find(table, keys, rows, row):
    """The index in ``keys`` of ``rows[row]`` (a row of group words), or ``-1 - slot`` with the
    empty ``slot`` of ``table`` (open addressing, power-of-two size) where it would go."""
    mask = np.uint64(len(table) - 1)
    h = _hash(rows, row) & mask
    while True:
        slot = table[h]
        if slot < 0:
            return -1 - np.int64(h)
        same = True
        for w in range(keys.shape[1]):
            if keys[slot, w] != rows[row, w]:
                same = False
                break
        if same:
            return slot
        h = (h + _ONE) & mask


@numba.njit(cache=True, nogil=True)
def rehash(table, keys, count):
    """Insert ``keys[:count]`` into the empty ``table``."""
    for i in range(count):
        table[-1 - find(table, keys, keys, i)] = i


@numba.njit(cache=True, nogil=True)
def first_common(table, keys, others):
    """The first row of ``others`` also in ``keys`` (via ``table``), as (its index in ``keys``,
    its row in ``others``), or (-1, -1)."""
    for i in range(others.shape[0]):
        slot = find(table, keys, others, i)
        if slot >= 0:
            return slot, i
    return -1, -1


@numba.njit(cache=True, nogil=True)
def expand(frontier, position, seen_keys, seen_table, keys, count, table, parent, level,
           group_compute, group_memory,
           capacity, member_start, member_node, node_edge_start, node_edge, edge_size,
           edge_weight, edge_group_start, edge_group, predecessor_count, successor_start,
           successor, node_group, max_visits):
    """Grow every block of load at most ``level`` from the ideals ``frontier[position:]`` (rows of
    ``seen_keys``); add the ideals they reach that neither ``seen_table`` nor ``table`` holds to
    ``keys[count:]`` and ``table`` (``keys[count]`` is scratch), with their ``parent``. Returns
    (status, count, visits, position to resume from)."""
    num_groups = len(group_compute)
    words = keys.shape[1]
    num_edges = len(edge_size)
    full_words = np.zeros(words, np.uint64)
    for g in range(num_groups):
        full_words[g >> 6] |= _ONE << np.uint64(g & 63)
    pinned = np.zeros(num_edges, np.bool_)
    inside = np.zeros(num_edges, np.int32)
    open_list = np.zeros(num_edges, np.int64)
    open_at = np.full(num_edges, -1, np.int64)
    missing = np.zeros(num_groups, np.int32)
    below = np.zeros(num_groups, np.bool_)
    stack_group = np.zeros(num_groups + 1, np.int64)
    stack_next = np.zeros(num_groups + 1, np.int64)
    stack_ready = np.zeros((num_groups + 1, words), np.uint64)
    visits = 0
    for f in range(position, len(frontier)):
        if count + 2 > keys.shape[0]:
            return NEED_ROOM, count, visits, f
        j = frontier[f]
        for g in range(num_groups):
            below[g] = ((seen_keys[j, g >> 6] >> np.uint64(g & 63)) & _ONE) != 0
        pinned[:] = False
        inside[:] = 0
        for u in range(len(node_group)):
            if below[node_group[u]]:
                for k in range(node_edge_start[u], node_edge_start[u + 1]):
                    pinned[node_edge[k]] = True
        missing[:] = predecessor_count
        for g in range(num_groups):
            if below[g]:
                for k in range(successor_start[g], successor_start[g + 1]):
                    missing[successor[k]] -= 1
        for w in range(words):
            keys[count, w] = seen_keys[j, w]
            stack_ready[0, w] = 0
        for g in range(num_groups):
            if not below[g] and missing[g] == 0:
                stack_ready[0, g >> 6] |= _ONE << np.uint64(g & 63)
        num_open = 0
        compute = 0.0
        memory = 0.0
        certain = 0.0  # edges touched that also hold a group of the ideal: paid for good
        uncertain = 0.0  # edges partly in the block, none of the ideal: paid unless closed
        depth = 0
        stack_group[0] = -1
        stack_next[0] = 0
        while True:
            h = stack_next[depth]
            found = -1
            while h < num_groups:
                w = h >> 6
                bits = stack_ready[depth, w] >> np.uint64(h & 63)
                if bits == 0:
                    h = (w + 1) << 6
                    continue
                while (bits & _ONE) == 0:
                    bits >>= _ONE
                    h += 1
                found = h
                break
            if found < 0:  # no more children: take the frame's group back out
                g = stack_group[depth]
                depth -= 1
                if g < 0:
                    break
                for m in range(member_start[g + 1] - 1, member_start[g] - 1, -1):
                    u = member_node[m]
                    for k in range(node_edge_start[u], node_edge_start[u + 1]):
                        e = node_edge[k]
                        c = inside[e]
                        if pinned[e]:
                            if c == 1:
                                certain -= edge_weight[e]
                        else:
                            if c == edge_size[e]:
                                uncertain += edge_weight[e]
                                num_open = _open(open_list, open_at, num_open, e)
                            if c == 1:
                                uncertain -= edge_weight[e]
                                num_open = _close(open_list, open_at, num_open, e)
                        inside[e] = c - 1
                compute -= group_compute[g]
                memory -= group_memory[g]
                for k in range(successor_start[g], successor_start[g + 1]):
                    missing[successor[k]] += 1
                keys[count, g >> 6] &= ~(_ONE << np.uint64(g & 63))
                continue
            stack_next[depth] = found + 1
            g = found
            visits += 1
            compute += group_compute[g]
            memory += group_memory[g]
            for m in range(member_start[g], member_start[g + 1]):
                u = member_node[m]
                for k in range(node_edge_start[u], node_edge_start[u + 1]):
                    e = node_edge[k]
                    c = inside[e] + 1
                    inside[e] = c
                    if pinned[e]:
                        if c == 1:
                            certain += edge_weight[e]
                    else:
                        if c == 1:
                            uncertain += edge_weight[e]
                            num_open = _open(open_list, open_at, num_open, e)
                        if c == edge_size[e]:
                            uncertain -= edge_weight[e]
                            num_open = _close(open_list, open_at, num_open, e)
            keys[count, g >> 6] |= _ONE << np.uint64(g & 63)
            for k in range(successor_start[g], successor_start[g + 1]):
                missing[successor[k]] -= 1
            depth += 1
            stack_group[depth] = g
            stack_next[depth] = num_groups  # no children unless the bounds below allow them
            if compute + certain > level or memory > capacity:
                continue
            # An open edge with a group below g outside the block stays open in this subtree:
            # blocks grow by groups above their largest only.
            skipped = 0.0
            for q in range(num_open):
                e = open_list[q]
                for k in range(edge_group_start[e], edge_group_start[e + 1]):
                    v = edge_group[k]
                    if v >= g:
                        break
                    if ((keys[count, v >> 6] >> np.uint64(v & 63)) & _ONE) == 0:
                        skipped += edge_weight[e]
                        break
            if compute + certain + skipped > level:
                continue
            stack_next[depth] = g + 1
            for w in range(words):
                stack_ready[depth, w] = stack_ready[depth - 1, w]
            stack_ready[depth, g >> 6] &= ~(_ONE << np.uint64(g & 63))
            for k in range(successor_start[g], successor_start[g + 1]):
                s = successor[k]
                if missing[s] == 0:
                    stack_ready[depth, s >> 6] |= _ONE << np.uint64(s & 63)
            if compute + certain + uncertain <= level and find(seen_table, seen_keys, keys,
                                                               count) < 0:
                slot = find(table, keys, keys, count)
                if slot < 0:
                    table[-1 - slot] = count
                    parent[count] = j
                    count += 1
                    for w in range(words):
                        keys[count, w] = keys[count - 1, w]
                    everything = True
                    for w in range(words):
                        if keys[count - 1, w] != full_words[w]:
                            everything = False
                    if everything:
                        return REACHED_ALL, count, visits, f
                    if count + 2 > keys.shape[0]:
                        return NEED_ROOM, count, visits, f
            if visits > max_visits:
                return OUT_OF_VISITS, count, visits, f
    return DONE, count, visits, len(frontier)


@numba.njit(cache=True, nogil=True)
def merge(keys, count, table, parent, rows, row_count, row_parent):
    """Add the ideals ``rows[:row_count]`` that ``table`` lacks to ``keys`` with their parents;
    returns the new count, or -1 where ``keys`` has no room left (nothing added then)."""
    if count + row_count > keys.shape[0]:
        return -1
    for r in range(row_count):
        slot = find(table, keys, rows, r)
        if slot < 0:
            for w in range(keys.shape[1]):
                keys[count, w] = rows[r, w]
            table[-1 - slot] = count
            parent[count] = row_parent[r]
            count += 1
    return count
