"""Vision Transformer ViT-B/16 (Dosovitskiy et al., 2021), laid out as torchvision's `vit_b_16`.

A 16x16 stride-16 convolution cuts the image into patch embeddings; a learned class token is
prepended and learned position embeddings added; then BERT-base-sized pre-LayerNorm encoder
blocks (exact GELU) from :mod:`.transformer`, a final LayerNorm, and a linear head on the class
token.
"""

import dataclasses

import numpy as np
from tvm.relax.frontend import nn

from .nn_export import export_images
from .registry import ModelConfigError, Network, register
from .transformer import BERT_BASE, TransformerConfig, TransformerStack, check_heads

VIT_B16 = dataclasses.replace(BERT_BASE, pre_norm=True, norm_eps=1e-6, seq_len=197)


class VisionTransformer(nn.Module):
    def __init__(self, config: TransformerConfig, patch: int, num_classes: int):
        hidden = config.hidden
        self.conv_proj = nn.Conv2D(3, hidden, patch, patch)
        self.class_token = nn.Parameter((1, 1, hidden))
        self.pos_embedding = nn.Parameter((1, config.seq_len, hidden))
        self.encoder = TransformerStack(config)
        self.norm = nn.LayerNorm(hidden, eps=config.norm_eps)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, images: nn.Tensor) -> nn.Tensor:
        x = self.conv_proj(images)  # (B, hidden, H/p, W/p)
        batch, hidden = x.shape[0], x.shape[1]
        x = nn.op.permute_dims(nn.op.reshape(x, [batch, hidden, -1]), [0, 2, 1])
        class_token = nn.op.broadcast_to(self.class_token, [batch, 1, hidden])
        x = nn.op.concat([class_token, x], dim=1) + self.pos_embedding
        x = self.norm(self.encoder(x))
        # split rather than strided_slice: TVM 0.27's Gradient has no gradient for the latter.
        first, _ = nn.op.split(x, [1], axis=1)
        return self.head(nn.op.reshape(first, [batch, hidden]))


@register(
    "vit-b16",
    "transformer",
    "ViT-B/16 (ImageNet): 16x16 patches, 12 layers, hidden 768, 12 heads, 86.6 M weights",
)
def vit_b16(batch: int, rng: np.random.Generator, image_size: int = 224, patch: int = 16,
            hidden: int = VIT_B16.hidden, heads: int = VIT_B16.heads, ffn: int = VIT_B16.ffn,
            num_layers: int = VIT_B16.num_layers, num_classes: int = 1000) -> Network:
    """ViT-B/16 on `image_size` x `image_size` RGB images.

    ===========  ===================  =========  ===================================
    weights      input                output     encoder
    ===========  ===================  =========  ===================================
    86,567,656   (B, 3, 224, 224)     (B, 1000)  12 layers, 197 tokens, 768 x 12 heads
    ===========  ===================  =========  ===================================
    """
    if image_size % patch:
        raise ModelConfigError(f"image size {image_size} is not a multiple of the patch {patch}")
    check_heads(hidden, heads)
    config = dataclasses.replace(VIT_B16, hidden=hidden, heads=heads, ffn=ffn,
                                 num_layers=num_layers, seq_len=(image_size // patch) ** 2 + 1)
    model = VisionTransformer(config, patch, num_classes)
    return export_images(model, batch, image_size, rng)
