"""Inverted-residual networks: MobileNetV2 (Sandler et al., 2018) and EfficientNet-B0 (Tan and
Le, 2019), laid out as in torchvision.

Both stack blocks that expand the channels with a 1x1 convolution, filter each channel with a
depthwise convolution and project back with a linear 1x1 convolution, adding the input when the
shape allows. EfficientNet adds squeeze-and-excitation and uses SiLU instead of ReLU6.
"""

import math

import numpy as np
from tvm.relax.frontend import nn

from .layers import ConvBNAct, global_avg_pool
from .nn_export import check_image_size, export_images
from .registry import Network, register


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of `divisor`, at most 10% down (torchvision)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcitation(nn.Module):
    """Scale each channel by a gate from the image's mean: ``x * sigmoid(fc2(silu(fc1(mean))))``."""

    def __init__(self, channels: int, squeeze_channels: int):
        self.fc1 = nn.Conv2D(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2D(squeeze_channels, channels, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        mean = global_avg_pool(x, keepdims=True)
        return x * nn.op.sigmoid(self.fc2(nn.op.silu(self.fc1(mean))))


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (k x k, strided), optional squeeze-and-excitation, project (1x1).

    Parameters
    ----------
    activation : str
        ``"relu6"`` (MobileNetV2) or ``"silu"`` (EfficientNet).
    squeeze_channels : int | None
        Width of the squeeze-and-excitation bottleneck; None for none.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel: int,
        stride: int,
        activation: str,
        squeeze_channels: int | None = None,
    ):
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (
            ConvBNAct(in_channels, hidden, 1, activation=activation) if expand_ratio != 1 else None
        )
        self.depthwise = ConvBNAct(
            hidden, hidden, kernel, stride, groups=hidden, activation=activation
        )
        self.se = SqueezeExcitation(hidden, squeeze_channels) if squeeze_channels else None
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Stem, 17 inverted residual blocks (ReLU6), 1x1 conv to 1280, pool, classifier."""

    # expansion t, output channels c, repeats n, first stride s (Sandler et al., Table 2).
    SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self, width_mult: float, num_classes: int):
        in_channels = _make_divisible(32 * width_mult)
        last_channels = _make_divisible(1280 * max(1.0, width_mult))
        self.stem = ConvBNAct(3, in_channels, 3, 2, activation="relu6")
        blocks = []
        for expand_ratio, channels, repeats, stride in self.SETTINGS:
            out_channels = _make_divisible(channels * width_mult)
            for index in range(repeats):
                blocks.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        expand_ratio,
                        3,
                        stride if index == 0 else 1,
                        "relu6",
                    )
                )
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBNAct(in_channels, last_channels, 1, activation="relu6")
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = self.head(self.blocks(self.stem(images)))
        return self.classifier(global_avg_pool(x))


class EfficientNet(nn.Module):
    """Stem, seven stages of MBConv blocks with squeeze-and-excitation (SiLU), head, classifier."""

    # expansion, kernel, first stride, input channels, output channels, layers (B0).
    STAGES = [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ]

    def __init__(self, width_mult: float, depth_mult: float, num_classes: int):
        stem_channels = _make_divisible(32 * width_mult)
        self.stem = ConvBNAct(3, stem_channels, 3, 2, activation="silu")
        blocks = []
        in_channels = stem_channels
        for expand_ratio, kernel, stride, _, channels, layers in self.STAGES:
            out_channels = _make_divisible(channels * width_mult)
            for index in range(int(math.ceil(layers * depth_mult))):
                blocks.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        expand_ratio,
                        kernel,
                        stride if index == 0 else 1,
                        "silu",
                        # The squeeze width is a quarter of the block's input, not its expansion.
                        squeeze_channels=max(1, in_channels // 4),
                    )
                )
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        last_channels = 4 * in_channels
        self.head = ConvBNAct(in_channels, last_channels, 1, activation="silu")
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = self.head(self.blocks(self.stem(images)))
        return self.classifier(global_avg_pool(x))


@register(
    "mobilenet-v2",
    "cnn",
    "MobileNetV2 (ImageNet): 17 inverted residual blocks, depthwise convs, 3.5 M weights",
)
def mobilenet_v2(batch: int, rng: np.random.Generator, image_size: int = 224,
                 width_mult: float = 1.0, num_classes: int = 1000) -> Network:
    """MobileNetV2 on `image_size` x `image_size` RGB images.

    ==========  ===================  =========
    weights     input                output
    ==========  ===================  =========
    3,504,872   (B, 3, 224, 224)     (B, 1000)
    ==========  ===================  =========

    52 convolutions (17 depthwise). `width_mult` scales the channels as in the paper.
    """
    check_image_size("mobilenet-v2", image_size, 32)
    return export_images(MobileNetV2(width_mult, num_classes), batch, image_size, rng)


@register(
    "efficientnet-b0",
    "cnn",
    "EfficientNet-B0 (ImageNet): 16 MBConv blocks with squeeze-and-excitation, 5.3 M weights",
)
def efficientnet_b0(batch: int, rng: np.random.Generator, image_size: int = 224,
                    width_mult: float = 1.0, depth_mult: float = 1.0,
                    num_classes: int = 1000) -> Network:
    """EfficientNet-B0 on `image_size` x `image_size` RGB images.

    ==========  ===================  =========
    weights     input                output
    ==========  ===================  =========
    5,288,548   (B, 3, 224, 224)     (B, 1000)
    ==========  ===================  =========

    81 convolutions (16 depthwise, 3x3 and 5x5; 32 in the squeeze-and-excitation gates).
    `width_mult` and `depth_mult` scale channels and layers per stage as the B1-B7 variants do
    (their resolutions aside).
    """
    check_image_size("efficientnet-b0", image_size, 32)
    model = EfficientNet(width_mult, depth_mult, num_classes)
    return export_images(model, batch, image_size, rng)
