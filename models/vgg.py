"""VGG-16 (Simonyan and Zisserman, 2015), configuration D without BatchNorm, as torchvision's
`vgg16`: thirteen 3x3 convolutions with biases and ReLU in five max-pooled stages, then three
fully connected layers. Few operators, 138 M weights, most of them in the first classifier layer.
"""

import numpy as np
from tvm.relax.frontend import nn

from .layers import adaptive_avg_pool2d, max_pool2d
from .nn_export import check_image_size, export_images
from .registry import Network, register

# Output channels of each convolution; "M" is a 2x2 max pool (configuration D).
VGG16_LAYERS = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"
]  # fmt: skip


class VGG(nn.Module):
    """Convolutional stages, a 7x7 adaptive average pool, and the three-layer classifier.

    `width` is the first stage's channels (64); every stage scales with it.
    """

    def __init__(self, width: int, hidden: int, num_classes: int):
        convs = []
        in_channels = 3
        self.pool_after = []
        for item in VGG16_LAYERS:
            if item == "M":
                self.pool_after.append(len(convs) - 1)
                continue
            out_channels = item * width // 64
            convs.append(nn.Conv2D(in_channels, out_channels, 3, 1, 1))
            in_channels = out_channels
        self.features = nn.ModuleList(convs)
        self.fc1 = nn.Linear(in_channels * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = images
        for index, conv in enumerate(self.features):
            x = nn.op.relu(conv(x))
            if index in self.pool_after:
                x = max_pool2d(x, 2, 2)
        if x.shape[2] != 7 or x.shape[3] != 7:  # a no-op at 224 x 224, left out there
            x = adaptive_avg_pool2d(x, 7)
        x = nn.op.reshape(x, [x.shape[0], x.shape[1] * 49])
        # Dropout is the identity at inference.
        x = nn.op.relu(self.fc1(x))
        x = nn.op.relu(self.fc2(x))
        return self.fc3(x)


@register("vgg16", "cnn", "VGG-16 (ImageNet): 13 convs, 3 fully connected layers, 138.4 M weights")
def vgg16(batch: int, rng: np.random.Generator, image_size: int = 224, width: int = 64,
          hidden: int = 4096, num_classes: int = 1000) -> Network:
    """VGG-16 on `image_size` x `image_size` RGB images (at least 32).

    ============  ===================  =========
    weights       input                output
    ============  ===================  =========
    138,357,544   (B, 3, 224, 224)     (B, 1000)
    ============  ===================  =========

    `width` (first-stage channels) and `hidden` (classifier width) shrink it for tests.
    """
    check_image_size("vgg16", image_size, 32)
    return export_images(VGG(width, hidden, num_classes), batch, image_size, rng)
