"""ImageNet ResNets (He et al., 2016) built with `tvm.relax.frontend.nn`.

The layout follows torchvision's ResNet v1.5 (the stride of a bottleneck sits on its 3x3
convolution). BatchNorm is in its inference form (:class:`~.layers.ScaleShift`).
"""

import numpy as np
from tvm.relax.frontend import nn

from .layers import ConvBN, global_avg_pool, max_pool2d
from .nn_export import export_images
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


def resnet_stages(
    blocks_per_stage: list[int], width: int, expansion: int
) -> tuple[list[list[tuple[int, int, int]]], int]:
    """The blocks of a ResNet's stages as ``(in_channels, width, stride)``, and the channels the
    last stage outputs.

    Stage ``s`` has width ``width * 2**s`` (its blocks output `expansion` times that); its first
    block halves the resolution, but in the first stage, whose input the stem's max pool already
    halved. torchvision's layout, which :mod:`.imported_zoo`'s torch ResNets follow too.
    """
    stages = []
    in_channels = width
    for index, num_blocks in enumerate(blocks_per_stage):
        stage_width = width * 2**index
        blocks = []
        for stride in [1 if index == 0 else 2] + [1] * (num_blocks - 1):
            blocks.append((in_channels, stage_width, stride))
            in_channels = stage_width * expansion
        stages.append(blocks)
    return stages, in_channels


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
        stages, channels = resnet_stages(blocks_per_stage, width, block.expansion)
        self.layer1, self.layer2, self.layer3, self.layer4 = [
            nn.ModuleList([block(*sizes) for sizes in stage]) for stage in stages
        ]
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = max_pool2d(nn.op.relu(self.conv1(images)), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(global_avg_pool(x))


def _register_resnet(name: str, block: type, blocks_per_stage: tuple[int, int, int, int],
                     weights: int, description: str):
    """Register a ResNet of `block`s; its sizes, `blocks_per_stage` among them, are the overrides."""

    @register(name, "cnn", description)
    def build(batch: int, rng: np.random.Generator, image_size: int = 224, width: int = 64,
              num_classes: int = 1000,
              blocks_per_stage: tuple[int, int, int, int] = blocks_per_stage) -> Network:
        model = ResNet(block, list(blocks_per_stage), width, num_classes)
        return export_images(model, batch, image_size, rng)

    build.__doc__ = f"""{description}, on `image_size` x `image_size` RGB images.

    ============  ===================  =========
    weights       input                output
    ============  ===================  =========
    {weights:<12,}  (B, 3, 224, 224)     (B, 1000)
    ============  ===================  =========

    `blocks_per_stage` changes the depth (for small tests).
    """
    return build


resnet18 = _register_resnet("resnet18", BasicBlock, (2, 2, 2, 2), 11_689_512,
                            "ResNet-18 (ImageNet): basic blocks [2, 2, 2, 2], 11.7 M weights")
resnet50 = _register_resnet("resnet50", Bottleneck, (3, 4, 6, 3), 25_557_032,
                            "ResNet-50 v1.5 (ImageNet): bottlenecks [3, 4, 6, 3], 25.6 M weights")
resnet152 = _register_resnet(
    "resnet152", Bottleneck, (3, 8, 36, 3), 60_192_808,
    "ResNet-152 v1.5 (ImageNet): bottlenecks [3, 8, 36, 3], 60.2 M weights",
)
