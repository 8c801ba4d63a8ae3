"""ImageNet ResNets (He et al., 2016) built with `tvm.relax.frontend.nn`.

The layout follows torchvision's ResNet v1.5 (the stride of a bottleneck sits on its 3x3
convolution). BatchNorm is in its inference form (:class:`~.layers.ScaleShift`).
"""

import numpy as np
from tvm.relax.frontend import nn

from .layers import ConvBN, global_avg_pool, max_pool2d
from .nn_export import export_with_random_weights
from .registry import Network, register


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18 and -34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        self.conv1 = ConvBN(in_channels, width, 3, stride)
        self.conv2 = ConvBN(width, width, 3)
        self.downsample = _shortcut(in_channels, width * self.expansion, stride)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        out = self.conv2(nn.op.relu(self.conv1(x)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return nn.op.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a residual connection (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        self.conv1 = ConvBN(in_channels, width, 1)
        self.conv2 = ConvBN(width, width, 3, stride)
        self.conv3 = ConvBN(width, width * self.expansion, 1)
        self.downsample = _shortcut(in_channels, width * self.expansion, stride)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        out = nn.op.relu(self.conv1(x))
        out = self.conv3(nn.op.relu(self.conv2(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return nn.op.relu(out + shortcut)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> ConvBN | None:
    """The projection a block needs when it changes resolution or width, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return ConvBN(in_channels, out_channels, 1, stride)


class ResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max pool), four stages, global average pool, classifier.

    Parameters
    ----------
    block : type[BasicBlock] | type[Bottleneck]
        The residual block.
    blocks_per_stage : list[int]
        How many blocks each of the four stages has.
    width : int
        Channels of the stem and of the first stage's blocks; each later stage doubles it.
    num_classes : int
        Outputs of the classifier.
    """

    def __init__(self, block: type, blocks_per_stage: list[int], width: int, num_classes: int):
        self.conv1 = ConvBN(3, width, 7, stride=2)
        in_channels = width
        stages = []
        for index, num_blocks in enumerate(blocks_per_stage):
            stage_width = width * 2**index
            # The first stage keeps the resolution the max pool already halved.
            strides = [1 if index == 0 else 2] + [1] * (num_blocks - 1)
            blocks = []
            for stride in strides:
                blocks.append(block(in_channels, stage_width, stride))
                in_channels = stage_width * block.expansion
            stages.append(nn.ModuleList(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = max_pool2d(nn.op.relu(self.conv1(images)), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(global_avg_pool(x))


def _build(
    block: type,
    blocks_per_stage: list[int],
    batch: int,
    rng: np.random.Generator,
    image_size: int,
    width: int,
    num_classes: int,
) -> Network:
    model = ResNet(block, blocks_per_stage, width, num_classes)
    return export_with_random_weights(model, {"images": (batch, 3, image_size, image_size)}, rng)


@register("resnet18", "cnn", "ResNet-18 (ImageNet): basic blocks [2, 2, 2, 2], 11.7 M weights")
def resnet18(
    batch: int,
    rng: np.random.Generator,
    image_size: int = 224,
    width: int = 64,
    num_classes: int = 1000,
) -> Network:
    """ResNet-18 on `image_size` x `image_size` RGB images."""
    return _build(BasicBlock, [2, 2, 2, 2], batch, rng, image_size, width, num_classes)


@register("resnet50", "cnn", "ResNet-50 v1.5 (ImageNet): bottlenecks [3, 4, 6, 3], 25.6 M weights")
def resnet50(
    batch: int,
    rng: np.random.Generator,
    image_size: int = 224,
    width: int = 64,
    num_classes: int = 1000,
) -> Network:
    """ResNet-50 on `image_size` x `image_size` RGB images."""
    return _build(Bottleneck, [3, 4, 6, 3], batch, rng, image_size, width, num_classes)


@register(
    "resnet152", "cnn", "ResNet-152 v1.5 (ImageNet): bottlenecks [3, 8, 36, 3], 60.2 M weights"
)
def resnet152(
    batch: int,
    rng: np.random.Generator,
    image_size: int = 224,
    width: int = 64,
    num_classes: int = 1000,
    blocks_per_stage: tuple[int, int, int, int] = (3, 8, 36, 3),
) -> Network:
    """ResNet-152 on `image_size` x `image_size` RGB images.

    ===========  ===================  =========
    weights      input                output
    ===========  ===================  =========
    60,192,808   (B, 3, 224, 224)     (B, 1000)
    ===========  ===================  =========

    155 convolutions. `blocks_per_stage` shrinks the depth for tests.
    """
    return _build(Bottleneck, list(blocks_per_stage), batch, rng, image_size, width, num_classes)
