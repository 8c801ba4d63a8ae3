"""U-Net (Ronneberger et al., 2015) for segmentation, with "same" padding and BatchNorm as in the
widely used PyTorch re-implementation (milesial/Pytorch-UNet, bilinear=False).

Four 2x downsampling stages (double 3x3 conv, max pool), a 1024-channel bottom, four
transposed-convolution upsampling stages, each concatenated with the skip connection of its
resolution: long edges from the encoder to the decoder, with the largest activations of all
the CNNs here.
"""

import numpy as np
from tvm import relax
from tvm.relax.frontend import nn

from .layers import ConvBNAct, max_pool2d
from .nn_export import export_images
from .registry import ModelConfigError, Network, register


class DoubleConv(nn.Module):
    """(3x3 conv, BatchNorm, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int):
        self.conv1 = ConvBNAct(in_channels, out_channels, 3)
        self.conv2 = ConvBNAct(out_channels, out_channels, 3)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.conv2(self.conv1(x))


class ConvTranspose2x2(nn.Module):
    """2x2 transposed convolution with stride 2 (doubles the resolution), with bias."""

    def __init__(self, in_channels: int, out_channels: int):
        # IOHW, as torch's ConvTranspose2d stores it.
        self.weight = nn.Parameter((in_channels, out_channels, 2, 2))
        self.bias = nn.Parameter((out_channels,))

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = nn.wrap_nested(
            relax.op.nn.conv2d_transpose(x._expr, self.weight._expr, strides=2), "conv2d_transpose"
        )
        return y + nn.op.reshape(self.bias, [1, self.bias.shape[0], 1, 1])


class Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        self.up = ConvTranspose2x2(in_channels, in_channels // 2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: nn.Tensor, skip: nn.Tensor) -> nn.Tensor:
        return self.conv(nn.op.concat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int):
        widths = [width * 2**i for i in range(5)]  # 64 ... 1024
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList([DoubleConv(widths[i], widths[i + 1]) for i in range(4)])
        self.up = nn.ModuleList([Up(widths[i + 1], widths[i]) for i in reversed(range(4))])
        self.outc = nn.Conv2D(widths[0], num_classes, 1)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        skips = [self.inc(images)]
        for down in self.down:
            skips.append(down(max_pool2d(skips[-1], 2, 2)))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.outc(x)


@register(
    "unet",
    "cnn",
    "U-Net (segmentation, 512x512): 4 down and 4 up stages, skip concatenations, 31.0 M weights",
)
def unet(batch: int, rng: np.random.Generator, image_size: int = 512, in_channels: int = 3,
         num_classes: int = 2, width: int = 64) -> Network:
    """U-Net on `image_size` x `image_size` images with `in_channels` channels.

    ===========  ===================  =================
    weights      input                output
    ===========  ===================  =================
    31,037,698   (B, 3, 512, 512)     (B, 2, 512, 512)
    ===========  ===================  =================

    19 convolutions and 4 transposed convolutions; `image_size` must be a multiple of 16.
    `width` (64) is the first stage's channels; each stage doubles it.
    """
    if image_size % 16:
        raise ModelConfigError(
            f"unet needs an image size that is a multiple of 16, not {image_size}"
        )
    model = UNet(in_channels, num_classes, width)
    return export_images(model, batch, image_size, rng, channels=in_channels)
