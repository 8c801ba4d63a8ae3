"""Building blocks shared by the model families: inference BatchNorm, convolutions, pooling.

BatchNorm is in its inference form, a per-channel scale and shift: that is what a trained
BatchNorm computes once its running statistics are folded in, and it keeps the graph to operators
every backend supports. `nn.op` has no pooling, so the Relax pooling operators are emitted into
the trace directly.
"""

import numpy as np
from tvm import relax
from tvm.relax.frontend import nn

class ScaleShift(nn.Module):
    """Inference BatchNorm: ``x * scale[c] + shift[c]`` over the channels of an NCHW tensor."""

    def __init__(self, channels: int):
        self.scale = nn.Parameter((channels,))
        self.shift = nn.Parameter((channels,))

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        channels = self.scale.shape[0]
        scale = nn.op.reshape(self.scale, [1, channels, 1, 1])
        shift = nn.op.reshape(self.shift, [1, channels, 1, 1])
        return x * scale + shift


class ConvBN(nn.Module):
    """A bias-free convolution followed by inference BatchNorm.

    `kernel` is an int or a (height, width) pair (Inception's 1x7 and 7x1); the padding is
    "same" for odd kernels unless `padding` says otherwise; `groups` makes it grouped
    (depthwise when it equals the channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        *,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
    ):
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        if padding is None:
            padding = (kernel[0] // 2, kernel[1] // 2)
        # nn.Conv2D hands its padding to the conv2d operator, which takes a pair too.
        self.conv = nn.Conv2D(
            in_channels, out_channels, list(kernel), stride, padding, groups=groups, bias=False
        )
        self.bn = ScaleShift(out_channels)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.bn(self.conv(x))


def relu6(x: nn.Tensor) -> nn.Tensor:
    """``min(relu(x), 6)``: as `nn.op.relu6` computes, but with operators that TVM 0.27's
    Gradient pass differentiates (it has no gradient for `clip`)."""
    return nn.op.minimum(nn.op.relu(x), nn.Tensor.from_const(np.array(6.0, dtype=np.float32)))


# The activations the families use after a ConvBN, by the name their papers give them.
ACTIVATIONS = {
    "relu": nn.op.relu,
    "relu6": relu6,
    "silu": nn.op.silu,
    None: lambda x: x,
}


class ConvBNAct(ConvBN):
    """:class:`ConvBN` followed by an activation (``"relu"``, ``"relu6"``, ``"silu"`` or None)."""

    def __init__(self, *args, activation: str | None = "relu", **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = activation

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return ACTIVATIONS[self.activation](super().forward(x))


class Dense(nn.Module):
    """``x @ kernel + bias`` with the matrix stored ``(in_features, out_features)``.

    `nn.Linear` stores ``(out, in)`` and transposes it in the graph, which `FoldConstant` then
    materialises as a second copy of every weight; the multi-gigabyte models avoid that copy.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.kernel = nn.Parameter((in_features, out_features))
        self.bias = nn.Parameter((out_features,)) if bias else None

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = nn.op.matmul(x, self.kernel)
        return y if self.bias is None else y + self.bias


def max_pool2d(x: nn.Tensor, size: int, stride: int, padding: int = 0) -> nn.Tensor:
    return nn.wrap_nested(relax.op.nn.max_pool2d(x._expr, size, stride, padding), "max_pool2d")


def avg_pool2d(
    x: nn.Tensor, size: int, stride: int, padding: int = 0, count_include_pad: bool = True
) -> nn.Tensor:
    """Average pooling; like torch, padded zeros count in the average unless told otherwise."""
    pooled = relax.op.nn.avg_pool2d(
        x._expr, size, stride, padding, count_include_pad=count_include_pad
    )
    return nn.wrap_nested(pooled, "avg_pool2d")


def adaptive_avg_pool2d(x: nn.Tensor, size: int) -> nn.Tensor:
    return nn.wrap_nested(relax.op.nn.adaptive_avg_pool2d(x._expr, size), "avg_pool2d")


def global_avg_pool(x: nn.Tensor, keepdims: bool = False) -> nn.Tensor:
    """``(N, C, H, W) -> (N, C)`` (or ``(N, C, 1, 1)`` with `keepdims`): the mean over the image.

    A `mean` rather than an adaptive average pool to 1 x 1: the same values, and an operator
    that TVM 0.27's Gradient pass differentiates.
    """
    return nn.wrap_nested(relax.op.mean(x._expr, axis=[2, 3], keepdims=keepdims), "mean")


def take(x: nn.Tensor, indices: nn.Tensor, axis: int = 0) -> nn.Tensor:
    """``x`` indexed by `indices` along `axis`, out-of-range ids clipped to the first or last.

    Clipping (instead of TVM's default "fast" mode, undefined out of range) keeps any integer
    input safe, e.g. the arbitrary ids a cost model may time an operator with.
    """
    return nn.wrap_nested(relax.op.take(x._expr, indices._expr, axis=axis, mode="clip"), "take")
