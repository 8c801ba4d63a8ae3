"""The pictures: the operator graph coloured by device and the pipeline Gantt chart render, are
valid PNG/SVG files, and show one colour per device used."""

import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from tvm_place.errors import MissingDependencyError  # noqa: E402
from tvm_place.evaluate import evaluate  # noqa: E402
from tvm_place.graph import Device, OpGraph, OpNode, Placement, PlacementProblem  # noqa: E402
from tvm_place.plot import (  # noqa: E402
    PlotError,
    device_colours,
    gantt_figure,
    placement_figure,
    plot_gantt,
    plot_placement,
    write_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def six_op_problem() -> PlacementProblem:
    """conv -> (relu, pool) -> add -> matmul -> softmax on a CPU and two GPUs, one op pinned."""
    names = ["fused_conv2d_add_relu", "relu", "max_pool2d", "add", "fused_matmul_add", "softmax"]
    edges = [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (4, 5)]
    rng = np.random.default_rng(7)
    compute = rng.uniform(1e-4, 1e-3, size=(6, 3))
    transfer = rng.uniform(1e-5, 1e-4, size=(6, 3))
    devices = [Device("cpu:0", "cpu"), Device("gpu:0", "gpu", profile="a100"),
               Device("gpu:1", "gpu", profile="a100")]
    return PlacementProblem(OpGraph([OpNode(n) for n in names], edges), devices, compute,
                            transfer, pins={5: (0,)}, name="six")


def placed(problem: PlacementProblem, device_of, replicas=()) -> Placement:
    return Placement(device_of=np.asarray(device_of), objective="throughput", value=0.0,
                     lower_bound=0.0, method="given", replicas=list(replicas))


def random_dag(n: int, num_devices: int, seed: int = 0) -> tuple[PlacementProblem, Placement]:
    """A chain with random skip edges (up to 12 back), placed in contiguous blocks."""
    rng = np.random.default_rng(seed)
    edges = [(u - 1, u) for u in range(1, n)]
    for v in range(2, n):
        for _ in range(int(rng.integers(0, 3))):
            edges.append((int(rng.integers(max(0, v - 12), v - 1)), v))
    problem = PlacementProblem(
        OpGraph([OpNode(f"fused_op_{u}") for u in range(n)], edges),
        [Device(f"gpu:{d}", "gpu") for d in range(num_devices)],
        rng.uniform(1e-5, 1e-3, size=(n, num_devices)),
        rng.uniform(0.0, 1e-4, size=(n, num_devices)), name=f"random-{n}")
    device_of = np.minimum(np.arange(n) * num_devices // n, num_devices - 1)
    return problem, placed(problem, device_of)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_svg(path) -> None:
    root = ElementTree.parse(path).getroot()
    assert root.tag.endswith("svg")


def bar_colours(figure, panel: str) -> set[tuple[float, ...]]:
    """Distinct face colours of the Gantt bars of one panel ("latency" or "pipeline")."""
    colours = set()
    for ax in figure.axes:
        for collection in ax.collections:
            if (collection.get_gid() or "").startswith(f"bars:{panel}:"):
                colours.update(tuple(np.round(c[:3], 4)) for c in collection.get_facecolor())
    return colours


def device_legend(figure):
    (legend,) = [legend for legend in figure.legends if legend.get_gid() == "devices"]
    return [text.get_text() for text in legend.get_texts()]


def test_small_problem_writes_valid_png_and_svg(tmp_path):
    problem = six_op_problem()
    placement = placed(problem, [1, 1, 2, 1, 2, 0])
    written = write_plots(problem, placement, tmp_path / "plots")
    assert [p.name for p in written] == ["placement.png", "placement.svg", "gantt.png"]
    width, height = png_size(tmp_path / "plots" / "placement.png")
    assert width > 600 and height > 300
    width, height = png_size(tmp_path / "plots" / "gantt.png")
    assert width > 1000 and height > 400
    check_svg(tmp_path / "plots" / "placement.svg")
    # Single pictures, by suffix.
    check_svg(plot_placement(problem, placement, tmp_path / "graph.svg"))
    png_size(plot_placement(problem, placement, tmp_path / "graph.png"))
    png_size(plot_gantt(problem, placement, tmp_path / "g.png", inputs=2))
    with pytest.raises(PlotError, match="suffix"):
        plot_placement(problem, placement, tmp_path / "graph.jpg")
    with pytest.raises(PlotError, match="at least one input"):
        plot_gantt(problem, placement, tmp_path / "g.png", inputs=0)


def test_one_colour_and_legend_entry_per_device_used():
    problem = six_op_problem()
    colours = device_colours(problem.num_devices)
    for device_of in ([1, 1, 2, 1, 2, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]):
        placement = placed(problem, device_of)
        used = sorted(set(device_of))
        names = device_legend(placement_figure(problem, placement))
        assert len(names) == len(used)
        assert [name.split(" ")[0] for name in names] == [problem.devices[d].name for d in used]
        figure = gantt_figure(problem, placement, inputs=3)
        expected = {tuple(np.round(colours[d][:3], 4)) for d in used}
        assert bar_colours(figure, "latency") == expected
        assert bar_colours(figure, "pipeline") == expected
        # The node markers carry the same colours.
        nodes = [c for c in placement_figure(problem, placement).axes[0].collections
                 if c.get_gid() == "nodes"]
        node_colours = {tuple(np.round(c[:3], 4)) for coll in nodes for c in coll.get_facecolor()}
        assert node_colours == expected


def test_gantt_marks_the_bottleneck_and_repeats_each_device_per_input():
    problem = six_op_problem()
    placement = placed(problem, [1, 1, 2, 1, 2, 0])
    evaluation = evaluate(problem, placement)
    bottleneck = int(np.argmax(evaluation.load))
    figure = gantt_figure(problem, placement, inputs=5)
    latency_ax, pipeline_ax = figure.axes[:2]
    for ax in (latency_ax, pipeline_ax):
        label = ax.get_yticklabels()[bottleneck]
        assert label.get_fontweight() == "bold"
        assert problem.devices[bottleneck].name in label.get_text()
    assert f"bottleneck {problem.devices[bottleneck].name}" in pipeline_ax.get_title(loc="left")
    assert "time (" in latency_ax.get_xlabel() and "time (" in pipeline_ax.get_xlabel()
    # Pipeline: the compute part of each device's bar appears once per input, T apart.
    for d in range(problem.num_devices):
        spans = [path.get_extents().x0 for coll in pipeline_ax.collections
                 if coll.get_gid() == f"bars:pipeline:{d}" and coll.get_hatch() is None
                 for path in coll.get_paths()]
        assert len(spans) == 5
        steps = np.diff(sorted(spans))
        assert np.allclose(steps, steps[0])
    # Latency panel: one bar per operator.
    bars = sum(len(coll.get_paths()) for coll in latency_ax.collections
               if (coll.get_gid() or "").startswith("bars:latency:"))
    assert bars == problem.num_ops


def test_replicas_show_every_member_in_the_pipeline(tmp_path):
    problem = six_op_problem()
    problem.pins = {}
    placement = placed(problem, [1, 1, 1, 1, 1, 1], replicas=[(1, 2)])
    figure = gantt_figure(problem, placement, inputs=4)
    colours = device_colours(problem.num_devices)
    assert bar_colours(figure, "pipeline") == {tuple(np.round(colours[d][:3], 4)) for d in (1, 2)}
    assert "replicated on gpu:1" in device_legend(placement_figure(problem, placement))[0]
    png_size(write_plots(problem, placement, tmp_path)[2])


def test_thousand_operators_render_without_labels(tmp_path):
    problem, placement = random_dag(1000, 4)
    figure = placement_figure(problem, placement)
    assert len(device_legend(figure)) == 4
    assert not [t for t in figure.axes[0].texts if t.get_text().startswith("fused_op")]
    written = write_plots(problem, placement, tmp_path)
    width, height = png_size(written[0])
    assert 1000 < width <= 4000 and 500 < height <= 4000
    check_svg(written[1])
    png_size(written[2])
    assert len(bar_colours(gantt_figure(problem, placement), "latency")) == 4


def test_plot_module_imports_without_matplotlib():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import numpy as np, tvm_place, tvm_place.plot as plot\n"
        "from tvm_place.errors import MissingDependencyError\n"
        "from tvm_place.graph import *\n"
        "p = PlacementProblem(OpGraph([OpNode('a')], []), [Device('cpu:0')], [[1.0]], [[0.0]])\n"
        "pl = Placement(device_of=[0], objective='latency', value=1, lower_bound=1, method='x')\n"
        "try:\n"
        "    plot.plot_placement(p, pl, 'x.png')\n"
        "except MissingDependencyError as e:\n"
        "    print('missing:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "missing:" in result.stdout and "pip install matplotlib" in result.stdout
    assert issubclass(MissingDependencyError, ImportError)
