"""DenseNet-121 (Huang et al., 2017), laid out as torchvision's `densenet121`.

Inside a dense block every layer reads the concatenation of the block input and of all earlier
layers' outputs (BatchNorm-ReLU-1x1 conv-BatchNorm-ReLU-3x3 conv, adding `growth` channels), so
each layer's output feeds every later layer of its block: many long edges for placement.
Transitions halve channels and resolution.
"""

import numpy as np
from tvm.relax.frontend import nn

from .layers import ScaleShift, avg_pool2d, global_avg_pool, max_pool2d
from .nn_export import check_image_size, export_images
from .registry import Network, register


class BNReLUConv(nn.Module):
    """Pre-activation convolution: inference BatchNorm, ReLU, bias-free conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        self.norm = ScaleShift(in_channels)
        self.conv = nn.Conv2D(in_channels, out_channels, kernel, 1, kernel // 2, bias=False)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.conv(nn.op.relu(self.norm(x)))


class DenseLayer(nn.Module):
    """Bottleneck (1x1 to `bn_size` x `growth`) then 3x3 to `growth` channels."""

    def __init__(self, in_channels: int, growth: int, bn_size: int):
        self.bottleneck = BNReLUConv(in_channels, bn_size * growth, 1)
        self.conv = BNReLUConv(bn_size * growth, growth, 3)

    def forward(self, features: list[nn.Tensor]) -> nn.Tensor:
        # A block's first layer reads the block input as it is: no one-tensor concat (a copy,
        # and one that TVM 0.27's Gradient pass fails on).
        x = features[0] if len(features) == 1 else nn.op.concat(features, dim=1)
        return self.conv(self.bottleneck(x))


class DenseBlock(nn.Module):
    def __init__(self, num_layers: int, in_channels: int, growth: int, bn_size: int):
        self.layers = nn.ModuleList(
            [DenseLayer(in_channels + i * growth, growth, bn_size) for i in range(num_layers)]
        )
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return nn.op.concat(features, dim=1)


class Transition(nn.Module):
    """BatchNorm, ReLU, 1x1 conv halving the channels, 2x2 average pool."""

    def __init__(self, in_channels: int):
        self.conv = BNReLUConv(in_channels, in_channels // 2, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return avg_pool2d(self.conv(x), 2, 2)


class DenseNet(nn.Module):
    def __init__(self, growth, block_config, init_features, bn_size, num_classes):
        self.conv0 = nn.Conv2D(3, init_features, 7, 2, 3, bias=False)
        self.norm0 = ScaleShift(init_features)
        channels = init_features
        blocks, transitions = [], []
        for index, num_layers in enumerate(block_config):
            blocks.append(DenseBlock(num_layers, channels, growth, bn_size))
            channels = blocks[-1].out_channels
            if index != len(block_config) - 1:
                transitions.append(Transition(channels))
                channels //= 2
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.norm5 = ScaleShift(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = max_pool2d(nn.op.relu(self.norm0(self.conv0(images))), 3, 2, 1)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index < len(self.transitions):
                x = self.transitions[index](x)
        return self.classifier(global_avg_pool(nn.op.relu(self.norm5(x))))


@register(
    "densenet121",
    "cnn",
    "DenseNet-121 (ImageNet): dense blocks [6, 12, 24, 16], growth 32, 8.0 M weights",
)
def densenet121(batch: int, rng: np.random.Generator, image_size: int = 224, growth: int = 32,
                block_config: tuple[int, ...] = (6, 12, 24, 16), init_features: int = 64,
                num_classes: int = 1000) -> Network:
    """DenseNet-121 on `image_size` x `image_size` RGB images (at least 32).

    ==========  ===================  =========
    weights     input                output
    ==========  ===================  =========
    7,978,856   (B, 3, 224, 224)     (B, 1000)
    ==========  ===================  =========

    120 convolutions and 58 concatenations (one per dense layer but the first of each block,
    one per block).
    """
    check_image_size("densenet121", image_size, 32)
    model = DenseNet(growth, list(block_config), init_features, 4, num_classes)
    return export_images(model, batch, image_size, rng)
