"""Randomly wired networks, RandWire (Xie et al., 2019), small regime, as DiviML uses them.

Three stages are random graphs drawn by a classical generator and turned into DAGs by pointing
every edge from the lower to the higher node index. A node sums its inputs weighted by
sigmoid(learned weight), then applies ReLU, a 3x3 separable convolution (depthwise, then 1x1) and
inference BatchNorm. Nodes without predecessors read the stage input with stride 2; the stage
output is the mean of the nodes without successors. Generators and their parameters are the
paper's best: Watts-Strogatz WS(K=4, P=0.75), Erdos-Renyi ER(P=0.2), Barabasi-Albert BA(M=5),
drawn with networkx from `graph_seed` (the weights come from `get`'s `seed`, so one graph
can carry many weight draws).

Small regime (Table 1 of the paper), for 224 x 224 images and C = 78, N = 32:
conv1 3x3/2 (C/2), conv2 3x3/2 (C), random stages of N/2, N, N nodes with C, 2C, 4C channels,
then a 1x1 convolution to 1280 channels, global average pooling and a 1000-way classifier.
"""

import networkx as nx
import numpy as np
from tvm.relax.frontend import nn

from .layers import ConvBN, ConvBNAct, global_avg_pool
from .nn_export import check_image_size, export_images
from .registry import ModelConfigError, Network, register

# The generators, with the parameters of the paper's best networks, and the fewest nodes each
# takes for the first stage's num_nodes // 2 (WS(K=4) and BA(M=5) need more than K and M).
GENERATORS = {
    "ws": lambda n, seed: nx.watts_strogatz_graph(n, 4, 0.75, seed=seed),
    "er": lambda n, seed: nx.erdos_renyi_graph(n, 0.2, seed=seed),
    "ba": lambda n, seed: nx.barabasi_albert_graph(n, 5, seed=seed),
}
MIN_NODES = {"ws": 10, "er": 2, "ba": 12}


def random_dag(generator: str, num_nodes: int, seed: int) -> list[list[int]]:
    """The predecessors of each node of a random graph, edges from lower to higher index."""
    graph = GENERATORS[generator](num_nodes, seed)
    predecessors = [[] for _ in range(num_nodes)]
    for u, v in graph.edges():
        low, high = sorted((u, v))
        predecessors[high].append(low)
    return [sorted(p) for p in predecessors]


class SeparableConvBN(nn.Module):
    """Depthwise 3x3 (strided), pointwise 1x1, inference BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        self.depthwise = nn.Conv2D(
            in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False
        )
        self.pointwise = ConvBN(in_channels, out_channels, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.pointwise(self.depthwise(x))


class Node(nn.Module):
    """Weighted sum of the inputs (sigmoid of a learned weight each), ReLU, separable conv, BN."""

    def __init__(self, in_channels: int, out_channels: int, num_inputs: int, stride: int):
        self.aggregate = nn.Parameter((num_inputs,)) if num_inputs > 1 else None
        self.transform = SeparableConvBN(in_channels, out_channels, stride)

    def forward(self, inputs: list[nn.Tensor]) -> nn.Tensor:
        if self.aggregate is None:
            x = inputs[0]
        else:
            weights = nn.op.split(nn.op.sigmoid(self.aggregate), len(inputs), axis=0)
            x = inputs[0] * weights[0]
            for value, weight in zip(inputs[1:], weights[1:]):
                x = x + value * weight
        return self.transform(nn.op.relu(x))


class RandomStage(nn.Module):
    def __init__(self, predecessors: list[list[int]], in_channels: int, out_channels: int):
        self.predecessors = predecessors
        self.nodes = nn.ModuleList(
            [
                Node(out_channels, out_channels, len(p), 1)
                if p
                else Node(in_channels, out_channels, 1, 2)
                for p in predecessors
            ]
        )
        has_successor = {u for p in predecessors for u in p}
        self.outputs = [v for v in range(len(predecessors)) if v not in has_successor]

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        values = []
        for node, predecessors in zip(self.nodes, self.predecessors):
            values.append(node([values[u] for u in predecessors] if predecessors else [x]))
        total = values[self.outputs[0]]
        for v in self.outputs[1:]:
            total = total + values[v]
        return total * (1.0 / len(self.outputs)) if len(self.outputs) > 1 else total


class RandWire(nn.Module):
    def __init__(self, generator, num_nodes, channels, graph_seed, num_classes):
        self.conv1 = ConvBNAct(3, channels // 2, 3, 2)
        self.conv2 = ConvBNAct(channels // 2, channels, 3, 2)
        stages = []
        in_channels = channels
        for index, (nodes, width) in enumerate(
            [(num_nodes // 2, channels), (num_nodes, 2 * channels), (num_nodes, 4 * channels)]
        ):
            dag = random_dag(generator, nodes, seed=1000 * graph_seed + index)
            stages.append(RandomStage(dag, in_channels, width))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(in_channels, 1280, 1)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = self.stages(self.conv2(self.conv1(images)))
        x = nn.op.relu(self.head(nn.op.relu(x)))
        return self.fc(global_avg_pool(x))


def _register_randwire(generator: str, label: str):
    name = f"randwire-{generator}"

    @register(
        name,
        "cnn",
        f"RandWire (small regime, C=78, N=32) on {label} random graphs, as in DiviML",
    )
    def build(batch: int, rng: np.random.Generator, image_size: int = 224, num_nodes: int = 32,
              channels: int = 78, graph_seed: int = 0, num_classes: int = 1000) -> Network:
        """RandWire, small regime, on `image_size` x `image_size` RGB images.

        ============  =========  ===================  =========
        model         weights    input                output
        ============  =========  ===================  =========
        randwire-ws   5,540,820  (B, 3, 224, 224)     (B, 1000)
        randwire-er   5,616,692  (B, 3, 224, 224)     (B, 1000)
        randwire-ba   5,818,517  (B, 3, 224, 224)     (B, 1000)
        ============  =========  ===================  =========

        Weights for graph_seed 0 with networkx 3.6 (the paper reports 5.6 M for WS); the count
        depends on the graphs: each node with several inputs has a weight per input, and each
        input node convolves the previous stage's width. `num_nodes` is N, `channels` C.
        """
        if num_nodes < MIN_NODES[generator]:
            raise ModelConfigError(
                f"{name} needs num_nodes of at least {MIN_NODES[generator]}, not {num_nodes}"
            )
        check_image_size(name, image_size, 32)
        model = RandWire(generator, num_nodes, channels, graph_seed, num_classes)
        return export_images(model, batch, image_size, rng)

    return build


randwire_ws = _register_randwire("ws", "Watts-Strogatz WS(4, 0.75)")
randwire_er = _register_randwire("er", "Erdos-Renyi ER(0.2)")
randwire_ba = _register_randwire("ba", "Barabasi-Albert BA(5)")
