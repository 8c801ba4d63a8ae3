"""Pictures of a placement: the operator graph coloured by device, and a pipeline Gantt chart.

Pure functions over the plain data of :mod:`tvm_place.graph`; every time shown comes from the one
evaluator (:func:`tvm_place.evaluate.evaluate`). matplotlib is imported on first use, so the rest of
the package works without it, and only through its object API with the non-interactive Agg canvas:
nothing here touches ``pyplot`` or changes the caller's matplotlib backend.

- :func:`plot_placement`: operators laid out in layers by topological depth (long graphs wrap into
  rows that run alternately left to right and right to left, so each row continues where the last
  one ended), filled with their device's colour; cross-device edges (copies) drawn thick and black.
- :func:`plot_gantt`: one row per device; above, one input's latency schedule (a bar per operator
  from the evaluator's ``start``/``finish``); below, the steady-state pipeline: each device busy
  ``load[d]`` per input (transfers in, compute, transfers out), a new input every max-stage time
  ``T``; the bottleneck device is marked.
- :func:`write_plots`: both, into a directory (``placement.png``, ``placement.svg``,
  ``gantt.png``), as ``tvm-place ... --plot DIR`` writes them.

The ``*_figure`` functions return the :class:`matplotlib.figure.Figure` without saving it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, TvmPlaceError
from .evaluate import Evaluation, evaluate
from .graph import Placement, PlacementProblem

#: File suffixes the pictures can be written as.
FORMATS = (".png", ".svg", ".pdf")

#: Graphs up to this many operators get names and arrowheads; larger ones get dots and lines.
LABEL_LIMIT = 120
#: At most this many edges are drawn: cross-device ones first, then same-device ones, each thinned
#: evenly when there are more (a dense graph's edges would only paint the picture over).
EDGE_LIMIT = 6000

_CROSS_COLOUR = "#111111"
_EDGE_COLOUR = "#9a9a9a"


class PlotError(TvmPlaceError, ValueError):
    """A picture cannot be written as asked (unknown file suffix)."""


# -- matplotlib, on first use ---------------------------------------------------------------------
def _matplotlib():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency
        raise MissingDependencyError(
            "pictures need matplotlib, which is not installed: `pip install matplotlib` "
            "(tvm-place pins matplotlib==3.11.2)"
        ) from error
    return matplotlib, Figure, FigureCanvasAgg


def _new_figure(width: float, height: float):
    _, Figure, FigureCanvasAgg = _matplotlib()
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no GUI, no global backend switch
    return figure


def _save(figure, path: str | Path, dpi: float) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise PlotError(
            f"cannot write a picture as {path.name!r}: name the file with one of the suffixes "
            f"{', '.join(FORMATS)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, facecolor="white")
    return path


# -- colours, units, names --------------------------------------------------------------------------
def device_colours(num_devices: int) -> list[tuple[float, float, float, float]]:
    """One RGBA colour per device index, the same in every picture: tab10; up to 20 devices, tab10's
    colours then their light versions (tab20's odd entries); more, a ramp."""
    matplotlib, _, _ = _matplotlib()
    if num_devices <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(d) for d in range(num_devices)]
    if num_devices <= 20:
        cmap = matplotlib.colormaps["tab20"]
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [cmap(order[d]) for d in range(num_devices)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(0.05 + 0.9 * d / (num_devices - 1)) for d in range(num_devices)]


def used_devices(problem: PlacementProblem, placement: Placement) -> list[int]:
    """Devices that hold an operator or replicate a device that does, sorted."""
    used = {int(d) for d in np.unique(placement.device_of)}
    for group in placement.replicas:
        if group[0] in used:
            used.update(group)
    return sorted(used)


def _time_unit(span: float) -> tuple[str, float]:
    """``(unit, scale)`` to show times up to ``span`` seconds: value / scale in unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if span >= scale:
            return unit, scale
    return "ns", 1e-9


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if value == 0:
        return "0 s"
    unit, scale = _time_unit(value)
    shown = value / scale
    return f"{shown:.3g} {unit}" if shown < 1000 else f"{shown:.0f} {unit}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _short(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _thin(pairs: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` rows of ``pairs``, evenly spaced."""
    if len(pairs) <= limit:
        return pairs
    return pairs[np.linspace(0, len(pairs) - 1, max(limit, 0)).astype(np.int64)]


def _is_light(colour) -> bool:
    r, g, b = colour[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b > 0.6


# -- the layered layout ------------------------------------------------------------------------------
def layered_layout(problem: PlacementProblem, columns: int | None = None):
    """Positions ``(x, y)`` of every operator and the layout's ``(columns, height, rows)``.

    An operator's layer is its depth (longest path from a source); layers are columns, nodes in a
    layer ordered by the mean position of their predecessors (one barycentre sweep). More layers than
    ``columns`` wrap into rows, alternately left to right and right to left (a snake), so a chain
    continues next to where it left off. ``y`` grows downwards.
    """
    graph = problem.graph
    n = len(graph)
    depth = np.zeros(n, dtype=np.int64)
    for u in graph.topological_order:
        for p in graph.predecessors[u]:
            if depth[p] + 1 > depth[u]:
                depth[u] = depth[p] + 1
    num_layers = int(depth.max()) + 1
    layers: list[list[int]] = [[] for _ in range(num_layers)]
    for u in range(n):
        layers[depth[u]].append(u)
    local = np.zeros(n)  # centred position within the layer
    for k, layer in enumerate(layers):
        if k:
            def key(u: int) -> tuple[float, int]:
                preds = graph.predecessors[u]
                return (float(np.mean(local[preds])) if preds else 0.0, u)

            layer.sort(key=key)
        local[layer] = np.arange(len(layer)) - (len(layer) - 1) / 2.0
    widths = np.array([len(layer) for layer in layers])
    if columns is None:
        mean_width = n / num_layers
        columns = int(math.ceil(math.sqrt(1.6 * num_layers * (mean_width + 1.5))))
        columns = max(12, columns)
        if num_layers <= 1.5 * columns:
            columns = num_layers
    columns = max(1, min(columns, num_layers))
    num_rows = int(math.ceil(num_layers / columns))
    gap = 1.2
    x = np.zeros(n)
    y = np.zeros(n)
    top = 0.0
    for row in range(num_rows):
        band = widths[row * columns:(row + 1) * columns]
        height = float(band.max())
        for i in range(len(band)):
            k = row * columns + i
            column = i if row % 2 == 0 else columns - 1 - i
            layer = layers[k]
            x[layer] = column
            y[layer] = top + (height - 1) / 2.0 + local[layer]
        top += height + gap
    return x, y, (columns, top - gap, num_rows)


def _label_sides(names: list[str], x_in: np.ndarray, y_in: np.ndarray, radius_in: float,
                 font_pt: float) -> list[tuple[str, bool] | None]:
    """Where each node's name goes: ``(text, below)`` or None, greedily without overlaps.

    Positions in inches (``y`` down). Each name is tried whole, then shortened, above then below its
    node (below first in odd columns, so neighbours alternate); a candidate is kept when its box
    meets no box kept before and no other node.
    """
    char_in, line_in = font_pt * 0.62 / 72, font_pt * 1.3 / 72
    boxes: list[tuple[float, float, float, float]] = []
    nodes = np.stack([x_in, y_in], 1)
    column = np.round(x_in / max(np.diff(np.unique(x_in)).min(initial=1.0), 1e-9)).astype(int)

    def free(box) -> bool:
        x0, y0, x1, y1 = box
        for b in boxes:
            if x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1:
                return False
        inside = ((nodes[:, 0] + radius_in > x0) & (nodes[:, 0] - radius_in < x1)
                  & (nodes[:, 1] + radius_in > y0) & (nodes[:, 1] - radius_in < y1))
        return int(inside.sum()) == 0

    sides: list[tuple[str, bool] | None] = []
    for u, name in enumerate(names):
        choice = None
        first_below = column[u] % 2 == 1
        for limit in sorted({len(name), *(k for k in (26, 18, 12) if k < len(name))},
                            reverse=True):
            text = _short(name, limit)
            half = len(text) * char_in / 2 + 0.03
            for below in (first_below, not first_below):
                if below:
                    box = (x_in[u] - half, y_in[u] + radius_in, x_in[u] + half,
                           y_in[u] + radius_in + line_in)
                else:
                    box = (x_in[u] - half, y_in[u] - radius_in - line_in, x_in[u] + half,
                           y_in[u] - radius_in)
                if free(box):
                    choice = (text, below)
                    boxes.append(box)
                    break
            if choice:
                break
        sides.append(choice)
    return sides


# -- the operator graph -----------------------------------------------------------------------------
def placement_figure(problem: PlacementProblem, placement: Placement,
                     evaluation: Evaluation | None = None):
    """The operator graph coloured by device, as a matplotlib Figure (not saved)."""
    _matplotlib()
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    evaluation = evaluation or evaluate(problem, placement)
    n = problem.num_ops
    device_of = placement.device_of
    colours = device_colours(problem.num_devices)
    labelled = n <= LABEL_LIMIT
    x, y, (columns, height, num_rows) = layered_layout(problem)

    # Inches per layout unit. Labelled: names alternate above (even columns) and below (odd
    # columns) their nodes, so a name may take almost two columns.
    if labelled:
        longest = max(len(name) for name in problem.graph.names)
        unit_x = min(0.9, max(0.5, 0.0255 * min(longest, 34)))
        unit_y = 0.62
    else:
        unit_x, unit_y = 0.32, 0.26
    width_in = max(columns - 1, 1) * unit_x + 1.2
    height_in = max(height - 1, 0) * unit_y + 1.2
    shrink = min(1.0, 30.0 / width_in, 24.0 / height_in)  # keep within ~30 x 24 inches
    width_in, height_in = width_in * shrink, height_in * shrink
    unit_x, unit_y = unit_x * shrink, unit_y * shrink
    # The device legend: as many columns as fit the figure's width.
    counts = np.bincount(device_of, minlength=problem.num_devices)
    replica_of = {group[0]: group for group in placement.replicas}
    entries = []
    for d in used_devices(problem, placement):
        if counts[d] == 0:
            continue  # a replica member: named in its group's entry
        device = problem.devices[d]
        label = f"{device.name} ({device.kind}{', ' + device.profile if device.profile else ''})" \
                f": {_count(int(counts[d]), 'op')}, load {_seconds(evaluation.load[d])}"
        if d in replica_of:
            others = [problem.devices[e].name for e in replica_of[d][1:]]
            label += f", replicated on {', '.join(others)}"
        entries.append((d, label))
    figure_width = max(width_in, 7.0)
    entry_in = max(len(label) for _, label in entries) * 8 * 0.58 / 72 + 0.5
    legend_columns = max(1, min(4, len(entries), int(figure_width // entry_in)))
    legend_in = 0.75 + 0.2 * math.ceil(len(entries) / legend_columns)
    figure = _new_figure(figure_width, height_in + 0.6 + legend_in)
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.set_xlim(-0.6, columns - 0.4)
    ax.set_ylim(height - (0.25 if labelled else 0.4), -0.75 if labelled else -0.6)

    # Node size: a fraction of the smaller spacing, in points.
    diameter_pt = max(1.5, min(16.0, 0.55 * min(unit_x, unit_y) * 72))
    edges = problem.graph.edges
    cross = device_of[edges[:, 0]] != device_of[edges[:, 1]] if len(edges) else np.zeros(0, bool)
    same_edges, cross_edges = edges[~cross], edges[cross]
    num_same, num_cross = len(same_edges), len(cross_edges)
    cross_edges = _thin(cross_edges, EDGE_LIMIT)
    same_edges = _thin(same_edges, EDGE_LIMIT - len(cross_edges))
    dropped = num_same + num_cross - len(same_edges) - len(cross_edges)

    def segments(pairs: np.ndarray) -> np.ndarray:
        return np.stack([np.stack([x[pairs[:, 0]], y[pairs[:, 0]]], 1),
                         np.stack([x[pairs[:, 1]], y[pairs[:, 1]]], 1)], 1)

    if labelled and len(edges) <= 600:
        for pairs, cross_device in ((same_edges, False), (cross_edges, True)):
            for u, v in pairs:
                span = abs(x[u] - x[v])
                bend = 0.25 if span > 1.5 and y[u] == y[v] else 0.0
                ax.add_patch(FancyArrowPatch(
                    (x[u], y[u]), (x[v], y[v]), arrowstyle="-|>", mutation_scale=7,
                    connectionstyle=f"arc3,rad={bend}", shrinkA=diameter_pt / 2 + 1,
                    shrinkB=diameter_pt / 2 + 1,
                    color=_CROSS_COLOUR if cross_device else _EDGE_COLOUR,
                    linewidth=1.6 if cross_device else 0.8, zorder=3 if cross_device else 1))
    else:
        thin = max(0.2, min(0.8, diameter_pt / 10))
        if len(same_edges):
            ax.add_collection(LineCollection(segments(same_edges), colors=_EDGE_COLOUR,
                                             linewidths=thin, alpha=0.6, zorder=1))
        if len(cross_edges):
            # Many copies would paint the picture black: the more there are, the fainter.
            ax.add_collection(LineCollection(
                segments(cross_edges), colors=_CROSS_COLOUR, linewidths=1.5 * thin + 0.2,
                alpha=float(np.clip(150.0 / len(cross_edges), 0.15, 0.85)), zorder=3))

    pinned = np.zeros(n, dtype=bool)
    pinned[list(problem.pins)] = True
    for marker, mask in (("o", ~pinned), ("s", pinned)):
        if mask.any():
            ax.scatter(x[mask], y[mask], s=diameter_pt ** 2,
                       c=[colours[d] for d in device_of[mask]], marker=marker,
                       edgecolors="#333333", linewidths=0.6 if labelled else 0.2,
                       zorder=4).set_gid("nodes")
    if labelled:
        name_pt = 6.0 if shrink > 0.8 else 5.0
        sides = _label_sides(problem.graph.names, x * unit_x, y * unit_y,
                             (diameter_pt / 2 + 1) / 72, name_pt)
        for u, node in enumerate(problem.graph.nodes):
            colour = colours[device_of[u]]
            ax.text(x[u], y[u], str(u), ha="center", va="center", fontsize=5.5, zorder=5,
                    color="black" if _is_light(colour) else "white")
            if sides[u] is None:
                continue  # no room: the number in the node still names it
            text, below = sides[u]
            ax.annotate(text, (x[u], y[u]),
                        xytext=(0, -(diameter_pt / 2 + 1) if below else diameter_pt / 2 + 1),
                        textcoords="offset points", ha="center", va="top" if below else "bottom",
                        fontsize=name_pt, color="#222222", zorder=5,
                        bbox=dict(boxstyle="square,pad=0.05", facecolor="white", edgecolor="none",
                                  alpha=0.7))

    handles = [Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=colours[d],
                      markeredgecolor="#333333", label=label) for d, label in entries]
    device_legend = figure.legend(handles=handles, loc="outside lower center", title="devices",
                                  ncols=legend_columns, fontsize=8, title_fontsize=8,
                                  frameon=False)
    device_legend.set_gid("devices")
    edge_handles = [
        Line2D([], [], color=_EDGE_COLOUR, linewidth=1, label=f"same device ({num_same})"),
        Line2D([], [], color=_CROSS_COLOUR, linewidth=2,
               label=f"cross-device ({num_cross} edges, {len(evaluation.copies)} copies)"),
    ]
    if pinned.any():
        edge_handles.append(Line2D([], [], marker="s", linestyle="", markersize=6,
                                   markerfacecolor="white", markeredgecolor="#333333",
                                   label=f"pinned operator ({int(pinned.sum())})"))
    ax.legend(handles=edge_handles, loc="lower center",
              bbox_to_anchor=(0.5, 1.0), ncols=len(edge_handles), fontsize=7, frameon=False,
              title="edges" + (f" (only {len(edges) - dropped} of {len(edges)} drawn)"
                               if dropped else ""),
              title_fontsize=7).set_gid("edges")
    rows_note = "\nlayers by depth wrap in rows, left to right then right to left" \
        if num_rows > 1 else ""
    figure.suptitle(
        f"{problem.name}: {_count(n, 'operator')} on {len(used_devices(problem, placement))} of "
        f"{_count(problem.num_devices, 'device')} ({placement.objective}, {placement.method}); "
        f"latency {_seconds(evaluation.latency)}, max-stage time {_seconds(evaluation.max_load)}"
        + rows_note, fontsize=9)
    return figure


def plot_placement(problem: PlacementProblem, placement: Placement, path: str | Path) -> Path:
    """Write the operator graph coloured by device to ``path`` (``.png``, ``.svg`` or ``.pdf``)."""
    figure = placement_figure(problem, placement)
    return _save(figure, path, dpi=150 if problem.num_ops <= LABEL_LIMIT else 110)


# -- the Gantt chart ---------------------------------------------------------------------------------
def gantt_figure(problem: PlacementProblem, placement: Placement, inputs: int = 4,
                 evaluation: Evaluation | None = None):
    """One input's schedule and the steady-state pipeline, one row per device (not saved)."""
    _matplotlib()
    from matplotlib.patches import Patch, Rectangle

    if inputs < 1:
        raise PlotError(f"the Gantt chart needs at least one input, not {inputs}")
    evaluation = evaluation or evaluate(problem, placement)
    n, num_devices = problem.num_ops, problem.num_devices
    device_of = placement.device_of
    colours = device_colours(num_devices)
    load = evaluation.load
    period = evaluation.max_load
    bottleneck = int(np.argmax(load))
    group_of = {d: group for group in placement.replicas for d in group}

    # Pipeline stages: devices by the start of their first operator in the latency schedule;
    # replica members share their group's stage.
    first_start = {}
    for d in np.unique(device_of):
        first_start[int(d)] = float(evaluation.start[device_of == d].min())
    stage_devices = sorted(first_start, key=lambda d: (first_start[d], d))
    stage_of = {d: k for k, d in enumerate(stage_devices)}
    for group in placement.replicas:
        for d in group[1:]:
            stage_of[d] = stage_of[group[0]]
    num_stages = len(stage_devices)

    rows = list(range(num_devices))  # every device, idle ones too: the picture says which idle
    pipeline_end = (inputs - 1 + num_stages) * period if period > 0 else 0.0
    for d, group in group_of.items():
        pipeline_end = max(pipeline_end, (inputs - 1 + stage_of[d]) * period + len(group) * load[d])
    unit, scale = _time_unit(max(evaluation.latency, 1e-12))
    pipe_unit, pipe_scale = _time_unit(max(pipeline_end, 1e-12))

    height_rows = 0.42 * num_devices
    figure = _new_figure(12.0, 2.3 + 2 * height_rows + 0.5)
    top, bottom = figure.subplots(2, 1, height_ratios=[1, 1])

    def device_axis(ax, title: str, unit: str) -> None:
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_yticks(rows)
        labels = []
        for d in rows:
            device = problem.devices[d]
            count = int((device_of == d).sum())
            text = f"{device.name}" + (f" ({_count(count, 'op')})" if count else
                                       " (replica)" if d in group_of else " (idle)")
            labels.append(text)
        ax.set_yticklabels(labels, fontsize=8)
        if period > 0:
            tick = ax.get_yticklabels()[bottleneck]
            tick.set_color("#c00000")
            tick.set_fontweight("bold")
        ax.set_ylim(num_devices - 0.4, -0.6)
        ax.set_xlabel(f"time ({unit})", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="#dddddd", linewidth=0.5)
        ax.set_axisbelow(True)

    # One input: a bar per operator at its start..finish.
    width_in = 10.5  # roughly the axes' width, to judge which bar labels fit
    span = max(evaluation.latency, 1e-300) * 1.02
    edge = "white" if n <= 300 else "none"
    for d in rows:
        ops = np.flatnonzero(device_of == d)
        if not len(ops):
            continue
        bars = top.broken_barh(
            [(evaluation.start[u] / scale, (evaluation.finish[u] - evaluation.start[u]) / scale)
             for u in ops], (d - 0.35, 0.7), facecolors=colours[d], edgecolors=edge,
            linewidths=0.5)
        bars.set_gid(f"bars:latency:{d}")
        if n <= 300:
            for u in ops:
                duration = evaluation.finish[u] - evaluation.start[u]
                room = duration / span * width_in * 72 / (6 * 0.6)  # characters that fit
                name = problem.graph.nodes[u].name
                text = name if room >= len(name) + 1 else str(u) if room >= len(str(u)) + 0.5 else ""
                if text:
                    top.text((evaluation.start[u] + duration / 2) / scale, d, text, ha="center",
                             va="center", fontsize=6, clip_on=True,
                             color="black" if _is_light(colours[d]) else "white")
    if len(evaluation.copies) <= 200:
        transfer = problem.transfer_time
        for u, e in evaluation.copies:
            d = int(device_of[u])
            sent = evaluation.finish[u]
            arrival = sent + transfer[u, d] + transfer[u, e]
            top.annotate("", xy=(arrival / scale, e - 0.37 * np.sign(e - d)),
                         xytext=(sent / scale, d + 0.37 * np.sign(e - d)),
                         arrowprops=dict(arrowstyle="->", color="#444444", linewidth=0.6,
                                         shrinkA=0, shrinkB=0))
    top.axvline(evaluation.latency / scale, color="#c00000", linestyle="--", linewidth=1)
    top.set_xlim(0, evaluation.latency / scale * 1.02 or 1)
    device_axis(top, f"one input (latency schedule): latency {_seconds(evaluation.latency)}"
                + (f"; arrows: {len(evaluation.copies)} copies, sender and receiver transfer time"
                   if evaluation.copies and len(evaluation.copies) <= 200 else ""), unit)

    # The pipeline: per input, each device busy load[d] (in, compute, out) in its stage's slot.
    for d in rows:
        if load[d] <= 0:
            continue
        share = len(group_of.get(d, (d,)))
        member = group_of[d].index(d) if d in group_of else 0
        parts = [(evaluation.transfer_in[d] * share, "////"), (evaluation.compute[d] * share, None),
                 (evaluation.transfer_out[d] * share, "\\\\\\\\")]
        for hatch_index, (length, hatch) in enumerate(parts):
            if length <= 0:
                continue
            offset = sum(p[0] for p in parts[:hatch_index])
            spans = [(((i + stage_of[d]) * period + offset) / pipe_scale, length / pipe_scale)
                     for i in range(inputs) if i % share == member]
            bars = bottom.broken_barh(spans, (d - 0.35, 0.7), facecolors=colours[d],
                                      edgecolors="white", linewidths=0.5, hatch=hatch)
            bars.set_gid(f"bars:pipeline:{d}")
        for i in range(inputs):
            if i % share != member:
                continue
            begin = (i + stage_of[d]) * period
            if load[d] * share / max(pipeline_end * 1.02, 1e-300) * width_in * 72 >= 14:
                bottom.text((begin + load[d] * share / 2) / pipe_scale, d, f"#{i + 1}", ha="center",
                            va="center", fontsize=6.5, clip_on=True,
                            color="black" if _is_light(colours[d]) else "white")
    if period > 0:
        for k in range(inputs + num_stages + 1):
            bottom.axvline(k * period / pipe_scale, color="#999999", linewidth=0.6, linestyle=":")
        bottom.add_patch(Rectangle((0, bottleneck - 0.48), pipeline_end / pipe_scale * 1.02, 0.96,
                                   fill=False, edgecolor="#c00000", linewidth=1.2))
    bottom.set_xlim(0, pipeline_end / pipe_scale * 1.02 or 1)
    throughput = f"{1.0 / period:.4g} inputs/s" if period > 0 else "unbounded"
    device_axis(bottom, f"pipeline, {inputs} inputs (#1..#{inputs}) in steady state: a new input "
                f"every T = max-stage time {_seconds(period)}, throughput 1/T = {throughput}; "
                + (f"bottleneck {problem.devices[bottleneck].name} (red)" if period > 0 else
                   "no device has any load"), pipe_unit)
    handles = [Patch(facecolor="#bbbbbb", edgecolor="white", hatch="////", label="transfers in"),
               Patch(facecolor="#bbbbbb", label="compute"),
               Patch(facecolor="#bbbbbb", edgecolor="white", hatch="\\\\\\\\",
                     label="transfers out")]
    figure.legend(handles=handles, loc="outside lower center", fontsize=7, ncols=3, frameon=False)
    figure.suptitle(f"{problem.name}: {placement.objective} placement by {placement.method}, "
                    f"{_count(n, 'operator')}", fontsize=10)
    return figure


def plot_gantt(problem: PlacementProblem, placement: Placement, path: str | Path,
               inputs: int = 4) -> Path:
    """Write the pipeline Gantt chart (one input's schedule, then ``inputs`` pipelined) to ``path``."""
    return _save(gantt_figure(problem, placement, inputs), path, dpi=130)


def write_plots(problem: PlacementProblem, placement: Placement, directory: str | Path,
                inputs: int = 4) -> list[Path]:
    """Write ``placement.png``, ``placement.svg`` and ``gantt.png`` into ``directory``."""
    directory = Path(directory)
    evaluation = evaluate(problem, placement)
    graph = placement_figure(problem, placement, evaluation)
    dpi = 150 if problem.num_ops <= LABEL_LIMIT else 110
    written = [_save(graph, directory / "placement.png", dpi), _save(graph, directory / "placement.svg", dpi)]
    written.append(_save(gantt_figure(problem, placement, inputs, evaluation),
                         directory / "gantt.png", 130))
    return written
