"""Inception-v3 (Szegedy et al., 2016), laid out as torchvision's `inception_v3` at inference.

Every convolution is a bias-free conv + inference BatchNorm + ReLU. The auxiliary classifier is a
training-time head and is left out, as torchvision does in eval mode. Each Inception module runs
four parallel branches and concatenates them: the widest graphs among the CNNs here.
"""

import functools

import numpy as np
from tvm.relax.frontend import nn

from .layers import ConvBNAct, avg_pool2d, global_avg_pool, max_pool2d
from .nn_export import export_with_random_weights, operator_granularity
from .registry import ModelConfigError, Network, register


class Branch(nn.Module):
    """A chain of ConvBNAct; each step is ``(out_channels, kernel, stride, padding)``.

    `channels` scales every width (rounded, at least 1) to make small test networks.
    """

    def __init__(self, in_channels: int, steps: list[tuple], channels: float):
        convs = []
        for out_channels, kernel, stride, padding in steps:
            out_channels = max(1, round(out_channels * channels))
            convs.append(ConvBNAct(in_channels, out_channels, kernel, stride, padding=padding))
            in_channels = out_channels
        self.convs = nn.ModuleList(convs)
        self.out_channels = in_channels

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.convs(x)


# Asymmetric kernels with their "same" padding.
ROW7, COLUMN7 = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
ROW3, COLUMN3 = ((1, 3), 1, (0, 1)), ((3, 1), 1, (1, 0))
ONE = (1, 1, 0)  # 1x1, stride 1, no padding


def _concat(outputs: list[nn.Tensor]) -> nn.Tensor:
    return nn.op.concat(outputs, dim=1)


class InceptionA(nn.Module):
    """1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1 (35x35 grid)."""

    def __init__(self, in_channels: int, pool_features: int, channels: float):
        self.branch1x1 = Branch(in_channels, [(64, *ONE)], channels)
        self.branch5x5 = Branch(in_channels, [(48, *ONE), (64, 5, 1, 2)], channels)
        self.branch3x3dbl = Branch(
            in_channels, [(64, *ONE), (96, 3, 1, 1), (96, 3, 1, 1)], channels
        )
        self.branch_pool = Branch(in_channels, [(pool_features, *ONE)], channels)
        self.out_channels = sum(
            b.out_channels
            for b in (self.branch1x1, self.branch5x5, self.branch3x3dbl, self.branch_pool)
        )

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        pooled = self.branch_pool(avg_pool2d(x, 3, 1, 1))
        return _concat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x), pooled])


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | max pool/2."""

    def __init__(self, in_channels: int, channels: float):
        self.branch3x3 = Branch(in_channels, [(384, 3, 2, 0)], channels)
        self.branch3x3dbl = Branch(
            in_channels, [(64, *ONE), (96, 3, 1, 1), (96, 3, 2, 0)], channels
        )
        self.out_channels = (
            self.branch3x3.out_channels + self.branch3x3dbl.out_channels + in_channels
        )

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return _concat([self.branch3x3(x), self.branch3x3dbl(x), max_pool2d(x, 3, 2)])


class InceptionC(nn.Module):
    """Factorised 7x7 convolutions (17x17 grid): 1x1 | 1x7-7x1 | 7x1-1x7-7x1-1x7 | pool-1x1."""

    def __init__(self, in_channels: int, c7: int, channels: float):
        self.branch1x1 = Branch(in_channels, [(192, *ONE)], channels)
        self.branch7x7 = Branch(in_channels, [(c7, *ONE), (c7, *ROW7), (192, *COLUMN7)], channels)
        self.branch7x7dbl = Branch(
            in_channels,
            [(c7, *ONE), (c7, *COLUMN7), (c7, *ROW7), (c7, *COLUMN7), (192, *ROW7)],
            channels,
        )
        self.branch_pool = Branch(in_channels, [(192, *ONE)], channels)
        self.out_channels = sum(
            b.out_channels
            for b in (self.branch1x1, self.branch7x7, self.branch7x7dbl, self.branch_pool)
        )

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        pooled = self.branch_pool(avg_pool2d(x, 3, 1, 1))
        return _concat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x), pooled])


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2."""

    def __init__(self, in_channels: int, channels: float):
        self.branch3x3 = Branch(in_channels, [(192, *ONE), (320, 3, 2, 0)], channels)
        self.branch7x7x3 = Branch(
            in_channels, [(192, *ONE), (192, *ROW7), (192, *COLUMN7), (192, 3, 2, 0)], channels
        )
        self.out_channels = (
            self.branch3x3.out_channels + self.branch7x7x3.out_channels + in_channels
        )

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return _concat([self.branch3x3(x), self.branch7x7x3(x), max_pool2d(x, 3, 2)])


class InceptionE(nn.Module):
    """Expanded filter bank (8x8 grid): branches that fork into 1x3 and 3x1 convolutions."""

    def __init__(self, in_channels: int, channels: float):
        self.branch1x1 = Branch(in_channels, [(320, *ONE)], channels)
        self.branch3x3 = Branch(in_channels, [(384, *ONE)], channels)
        width = self.branch3x3.out_channels
        self.branch3x3_2a = Branch(width, [(384, *ROW3)], channels)
        self.branch3x3_2b = Branch(width, [(384, *COLUMN3)], channels)
        self.branch3x3dbl = Branch(in_channels, [(448, *ONE), (384, 3, 1, 1)], channels)
        width = self.branch3x3dbl.out_channels
        self.branch3x3dbl_3a = Branch(width, [(384, *ROW3)], channels)
        self.branch3x3dbl_3b = Branch(width, [(384, *COLUMN3)], channels)
        self.branch_pool = Branch(in_channels, [(192, *ONE)], channels)
        self.out_channels = sum(
            b.out_channels
            for b in (
                self.branch1x1,
                self.branch3x3_2a,
                self.branch3x3_2b,
                self.branch3x3dbl_3a,
                self.branch3x3dbl_3b,
                self.branch_pool,
            )
        )

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl(x)
        return _concat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(branch3x3),
                self.branch3x3_2b(branch3x3),
                self.branch3x3dbl_3a(branch3x3dbl),
                self.branch3x3dbl_3b(branch3x3dbl),
                self.branch_pool(avg_pool2d(x, 3, 1, 1)),
            ]
        )


class InceptionV3(nn.Module):
    """Stem of five convolutions and two max pools, 11 Inception modules, pool, classifier."""

    def __init__(self, channels: float, num_classes: int):
        self.stem = Branch(3, [(32, 3, 2, 0), (32, 3, 1, 0), (64, 3, 1, 1)], channels)
        self.stem2 = Branch(self.stem.out_channels, [(80, 1, 1, 0), (192, 3, 1, 0)], channels)
        mixed = []
        width = self.stem2.out_channels
        for make in (
            lambda c: InceptionA(c, 32, channels),
            lambda c: InceptionA(c, 64, channels),
            lambda c: InceptionA(c, 64, channels),
            lambda c: InceptionB(c, channels),
            lambda c: InceptionC(c, 128, channels),
            lambda c: InceptionC(c, 160, channels),
            lambda c: InceptionC(c, 160, channels),
            lambda c: InceptionC(c, 192, channels),
            lambda c: InceptionD(c, channels),
            lambda c: InceptionE(c, channels),
            lambda c: InceptionE(c, channels),
        ):
            mixed.append(make(width))
            width = mixed[-1].out_channels
        self.mixed = nn.ModuleList(mixed)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = max_pool2d(self.stem(images), 3, 2)
        x = max_pool2d(self.stem2(x), 3, 2)
        return self.fc(global_avg_pool(self.mixed(x)))


@register(
    "inception-v3",
    "cnn",
    "Inception-v3 (ImageNet, 299x299): 11 multi-branch Inception modules, 23.8 M weights",
)
def inception_v3(batch: int, rng: np.random.Generator, image_size: int = 299, channels: float = 1.0,
                 num_classes: int = 1000) -> Network:
    """Inception-v3 on `image_size` x `image_size` RGB images (at least 75).

    ===========  ===================  =========
    weights      input                output
    ===========  ===================  =========
    23,834,568   (B, 3, 299, 299)     (B, 1000)
    ===========  ===================  =========

    94 convolutions (torchvision's count without the auxiliary classifier). `channels` scales
    every convolution's width for small test networks.
    """
    if image_size < 75:
        raise ModelConfigError(f"inception-v3 needs images of at least 75 pixels, not {image_size}")
    model = InceptionV3(channels, num_classes)
    return export_with_random_weights(model, {"images": (batch, 3, image_size, image_size)}, rng)


@register(
    "inception-v3-ops",
    "cnn",
    "Inception-v3 at operator granularity: every Relax operator its own kernel (unfused)",
)
@functools.wraps(inception_v3)  # the same sizes, so the registry checks the same overrides
def inception_v3_ops(*args, **sizes) -> Network:
    return operator_granularity(inception_v3(*args, **sizes))


inception_v3_ops.__doc__ = """:func:`inception_v3` with each Relax operator lowered to a
kernel of its own that fusion leaves alone (:func:`.nn_export.operator_granularity`):
convolutions, BatchNorm multiplies and adds, ReLUs, pools and concatenations apart, the
operator graph of Tarnawski et al. 2020, whose exact program did not finish on it. Same weights,
sizes and output as ``inception-v3``."""
