"""NASNet-A (Zoph, Vasudevan, Shlens, Le, "Learning Transferable Architectures for Scalable Image
Recognition", CVPR 2018), mobile (4 @ 1056) and large (6 @ 4032), at inference.

Laid out as the widely used PyTorch port (Cadene's ``pretrainedmodels``: ``nasnet_mobile``,
``nasnet``), auxiliary head left out: a 3x3/2 stem convolution, two reduction cells on the stem
(``CellStem0``, ``CellStem1``), then three stacks of ``repeats`` normal cells with a reduction cell
between stacks, ReLU, global average pooling and a classifier. Every cell reads the outputs of the
two cells before it, and a normal cell runs five pairs of branches (separable convolutions,
average pools, identities) and concatenates them with its left input: wide operator graphs whose
ideals no exact program can enumerate, the case issue 17 adds to the testbed.

Pieces, as in the port (BatchNorm in its inference form, see :mod:`models.layers`):

- ``Branch`` ("BranchSeparables"): ReLU, separable convolution (depthwise k x k, possibly strided,
  then pointwise 1x1), BN, ReLU, separable convolution, BN; the first pointwise convolution widens
  to the output already in the stem's branches ("BranchSeparablesStem");
- a cell's inputs are adapted by ReLU, 1x1 convolution, BN, or, where the previous cell's output
  has twice the spatial size, by the factorised reduction: two 1x1 convolutions of half the width
  on the strided input and on the input shifted by one pixel, concatenated, then BN;
- average pools in cells leave padded zeros out of the average (``count_include_pad=False``).
"""

import numpy as np
from tvm import relax
from tvm.relax.frontend import nn

from .layers import ConvBN, ScaleShift, avg_pool2d, global_avg_pool, max_pool2d
from .nn_export import export_with_random_weights
from .registry import ModelConfigError, Network, register


def _pool(x: nn.Tensor, kind: str, stride: int) -> nn.Tensor:
    """A 3 x 3 pool with "same" padding: ``"max"`` or ``"avg"`` (padding left out of the mean)."""
    if kind == "max":
        return max_pool2d(x, 3, stride, 1)
    return avg_pool2d(x, 3, stride, 1, count_include_pad=False)


class Separable(nn.Module):
    """Depthwise k x k convolution (strided), then a pointwise 1x1 convolution and BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        self.depthwise = nn.Conv2D(in_channels, in_channels, kernel, stride, kernel // 2,
                                   groups=in_channels, bias=False)
        self.pointwise = ConvBN(in_channels, out_channels, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.pointwise(self.depthwise(nn.op.relu(x)))


class Branch(nn.Module):
    """Two separable convolutions, the first strided by `stride`; the first widens to
    `out_channels` when `widen_first` (the stem's branches), else the second does."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 widen_first: bool = False):
        middle = out_channels if widen_first else in_channels
        self.first = Separable(in_channels, middle, kernel, stride)
        self.second = Separable(middle, out_channels, kernel, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.second(self.first(x))


class ReluConvBN(nn.Module):
    """ReLU, 1x1 convolution, BN: how a cell adapts an input of its own spatial size."""

    def __init__(self, in_channels: int, out_channels: int):
        self.conv = ConvBN(in_channels, out_channels, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.conv(nn.op.relu(x))


class FactorizedReduction(nn.Module):
    """ReLU, then two 1x1 convolutions of half the width, one on the input strided by 2, one on
    it shifted by one pixel and strided; concatenated and BN: halves the spatial size."""

    def __init__(self, in_channels: int, out_channels: int):
        half = out_channels // 2
        self.path1 = nn.Conv2D(in_channels, half, 1, bias=False)
        self.path2 = nn.Conv2D(in_channels, out_channels - half, 1, bias=False)
        self.bn = ScaleShift(out_channels)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = nn.op.relu(x)
        height, width = (int(d) for d in x.shape[2:])
        shifted = relax.op.nn.pad(x._expr, [0, 0, 0, 0, 0, 1, 0, 1])
        shifted = relax.op.strided_slice(shifted, axes=[2, 3], begin=[1, 1],
                                         end=[height + 1, width + 1])
        shifted = nn.wrap_nested(shifted, "shift")
        first = self.path1(avg_pool2d(x, 1, 2))
        second = self.path2(avg_pool2d(shifted, 1, 2))
        return self.bn(nn.op.concat([first, second], dim=1))


class NormalCell(nn.Module):
    """Five pairs of branches on the cell's two adapted inputs, summed pairwise and
    concatenated with the left input: ``6 * width`` channels out, the spatial size of `x`.

    `x` is the previous cell's output (adapted by ReLU-conv-BN: the right input), `x_prev` the
    one before it (the left input; by the factorised reduction when `reduce_prev`, the first
    cell after a reduction, whose `x_prev` has twice the spatial size)."""

    def __init__(self, prev_channels: int, channels: int, width: int, reduce_prev: bool):
        self.left = (FactorizedReduction if reduce_prev else ReluConvBN)(prev_channels, width)
        self.right = ReluConvBN(channels, width)
        self.branch0_right = Branch(width, width, 5, 1)
        self.branch0_left = Branch(width, width, 3, 1)
        self.branch1_a = Branch(width, width, 5, 1)
        self.branch1_b = Branch(width, width, 3, 1)
        self.branch4_right = Branch(width, width, 3, 1)
        self.out_channels = 6 * width

    def forward(self, x: nn.Tensor, x_prev: nn.Tensor) -> nn.Tensor:
        left, right = self.left(x_prev), self.right(x)
        combos = [
            self.branch0_right(right) + self.branch0_left(left),
            self.branch1_a(left) + self.branch1_b(left),
            _pool(right, "avg", 1) + left,
            _pool(left, "avg", 1) + _pool(left, "avg", 1),
            self.branch4_right(right) + right,
        ]
        return nn.op.concat([left] + combos, dim=1)


class ReductionCell(nn.Module):
    """Halves the spatial size: branches on the main input `main` (pools, 5x5 and 3x3 separable
    branches) and on the other input `other` (7x7, 7x7 and 5x5 separable branches), summed
    pairwise; the second pair's sum and two later combinations concatenated: ``4 * width``
    channels out.

    The inputs arrive adapted by the caller's modules: in the stacks, ReLU-conv-BN of the
    previous cell (main) and of the one before (other); on the stem, see :class:`NASNet`.
    `other_channels` is the width `other` arrives with (the stem's first cell reads the stem
    convolution directly, and its branches widen first)."""

    def __init__(self, other_channels: int, width: int):
        widen = other_channels != width
        self.branch0_main = Branch(width, width, 5, 2)
        self.branch0_other = Branch(other_channels, width, 7, 2, widen_first=widen)
        self.branch1_other = Branch(other_channels, width, 7, 2, widen_first=widen)
        self.branch2_other = Branch(other_channels, width, 5, 2, widen_first=widen)
        self.branch4 = Branch(width, width, 3, 1)
        self.out_channels = 4 * width

    def forward(self, main: nn.Tensor, other: nn.Tensor) -> nn.Tensor:
        combo0 = self.branch0_main(main) + self.branch0_other(other)
        combo1 = _pool(main, "max", 2) + self.branch1_other(other)
        combo2 = _pool(main, "avg", 2) + self.branch2_other(other)
        combo3 = _pool(combo0, "avg", 1) + combo1
        combo4 = self.branch4(combo0) + _pool(main, "max", 2)
        return nn.op.concat([combo1, combo2, combo3, combo4], dim=1)


class StackReduction(nn.Module):
    """A reduction cell between stacks: its main input is the previous cell's output, its other
    the one before, each adapted by ReLU-conv-BN to `width`."""

    def __init__(self, prev_channels: int, channels: int, width: int):
        self.main = ReluConvBN(channels, width)
        self.other = ReluConvBN(prev_channels, width)
        self.cell = ReductionCell(width, width)
        self.out_channels = self.cell.out_channels

    def forward(self, x: nn.Tensor, x_prev: nn.Tensor) -> nn.Tensor:
        return self.cell(self.main(x), self.other(x_prev))


class NASNet(nn.Module):
    """Stem convolution, two stem reduction cells, three stacks of `repeats` normal cells with a
    reduction cell between stacks (widths `filters`, 2x, 4x), ReLU, pooling, classifier."""

    def __init__(self, stem_filters: int, filters: int, repeats: int, num_classes: int):
        self.conv0 = ConvBN(3, stem_filters, 3, 2, padding=0)
        # CellStem0: main = ReLU-conv-BN of the stem convolution, other = the stem convolution.
        quarter, half = filters // 4, filters // 2
        self.stem0_main = ReluConvBN(stem_filters, quarter)
        self.stem0 = ReductionCell(stem_filters, quarter)
        # CellStem1: main = ReLU-conv-BN of CellStem0, other = the factorised stem convolution.
        self.stem1_main = ReluConvBN(self.stem0.out_channels, half)
        self.stem1_other = FactorizedReduction(stem_filters, half)
        self.stem1 = ReductionCell(half, half)
        cells = []
        prev, current = self.stem0.out_channels, self.stem1.out_channels
        for stack in range(3):
            width = filters * 2**stack
            for index in range(repeats):
                cells.append(NormalCell(prev, current, width, reduce_prev=index == 0))
                prev, current = current, cells[-1].out_channels
            if stack < 2:
                cells.append(StackReduction(prev, current, 2 * width))
                prev, current = current, cells[-1].out_channels
        self.cells = nn.ModuleList(cells)
        self.fc = nn.Linear(current, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        stem = self.conv0(images)
        prev = self.stem0(self.stem0_main(stem), stem)
        current = self.stem1(self.stem1_main(prev), self.stem1_other(stem))
        for cell in self.cells:
            prev, current = current, cell(current, prev)
        return self.fc(global_avg_pool(nn.op.relu(current)))


def _build(batch: int, rng: np.random.Generator, name: str, image_size: int, stem_filters: int,
           filters: int, repeats: int, num_classes: int) -> Network:
    if filters % 4:
        raise ModelConfigError(f"{name} needs filters divisible by 4 (the stem cells take a "
                               f"quarter and a half of them), not {filters}")
    if image_size < 32:
        raise ModelConfigError(f"{name} needs images of at least 32 pixels, not {image_size}")
    model = NASNet(stem_filters, filters, repeats, num_classes)
    return export_with_random_weights(model, {"images": (batch, 3, image_size, image_size)}, rng)


@register("nasnet-a-mobile", "cnn",
          "NASNet-A Mobile (4 @ 1056, 224x224): 12 normal and 4 reduction cells, wide cells")
def nasnet_a_mobile(batch: int, rng: np.random.Generator, image_size: int = 224,
                    stem_filters: int = 32, filters: int = 44, repeats: int = 4,
                    num_classes: int = 1000) -> Network:
    """NASNet-A Mobile on `image_size` x `image_size` RGB images.

    =========  ===================  =========
    weights    input                output
    =========  ===================  =========
    5,289,978  (B, 3, 224, 224)     (B, 1000)
    =========  ===================  =========

    The weights are the PyTorch port's count (``pretrainedmodels.nasnetamobile``, no auxiliary
    head). `filters` is the first stack's cell width (the penultimate layer has
    ``24 * filters`` channels), `repeats` the normal cells per stack.
    """
    return _build(batch, rng, "nasnet-a-mobile", image_size, stem_filters, filters, repeats,
                  num_classes)


@register("nasnet-a-large", "cnn",
          "NASNet-A Large (6 @ 4032, 331x331): 18 normal and 4 reduction cells, wide cells")
def nasnet_a_large(batch: int, rng: np.random.Generator, image_size: int = 331,
                   stem_filters: int = 96, filters: int = 168, repeats: int = 6,
                   num_classes: int = 1000) -> Network:
    """NASNet-A Large on `image_size` x `image_size` RGB images.

    ==========  ===================  =========
    weights     input                output
    ==========  ===================  =========
    88,753,150  (B, 3, 331, 331)     (B, 1000)
    ==========  ===================  =========

    Sizes as for :func:`nasnet_a_mobile`; the weights are the PyTorch port's count too.
    """
    return _build(batch, rng, "nasnet-a-large", image_size, stem_filters, filters, repeats,
                  num_classes)
