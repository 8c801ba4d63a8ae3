"""A two-tower retrieval model (Yi et al., RecSys 2019, "Sampling-Bias-Corrected Neural Modeling
for Large Corpus Item Recommendations"; the YouTube candidate-generation towers).

A query tower and an item tower, each an ID embedding concatenated with dense features and
passed through an MLP (ReLU between layers, none after the last), end in L2-normalised
embeddings; the score of each (query, item) pair of the batch is their dot product. The two
towers share nothing until the dot product, so they are two independent branches of equal
shape: the case latency placement across devices is made for.
"""

import numpy as np
from tvm.relax.frontend import nn

from .layers import take
from .nn_export import export_with_random_weights
from .registry import ModelConfigError, Network, register


class Tower(nn.Module):
    def __init__(self, rows: int, id_dim: int, num_dense: int, widths: list[int]):
        self.table = nn.Embedding(rows, id_dim)
        sizes = [id_dim + num_dense, *widths]
        self.layers = nn.ModuleList([nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(widths))])

    def forward(self, ids: nn.Tensor, dense: nn.Tensor) -> nn.Tensor:
        batch = ids.shape[0]
        x = nn.op.concat([take(self.table.weight, nn.op.reshape(ids, [batch])), dense], dim=1)
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = nn.op.relu(x)
        norm = nn.op.sqrt(nn.op.sum(x * x, axis=1, keepdims=True) + 1e-12)
        return x / norm


class TwoTower(nn.Module):
    def __init__(self, query_rows, item_rows, id_dim, query_dense, item_dense, widths):
        self.query = Tower(query_rows, id_dim, query_dense, widths)
        self.item = Tower(item_rows, id_dim, item_dense, widths)

    def forward(self, query_ids, query_dense, item_ids, item_dense):
        q = self.query(query_ids, query_dense)
        v = self.item(item_ids, item_dense)
        return nn.op.sum(q * v, axis=1, keepdims=True)


@register(
    "two-tower",
    "recommender",
    "two-tower retrieval (Yi et al. 2019): query and item towers, 1M-row ID tables x 64, "
    "MLP 1024-512-256, dot-product score",
)
def two_tower(batch: int, rng: np.random.Generator, query_rows: int = 1_000_000,
              item_rows: int = 1_000_000, id_dim: int = 64, query_dense: int = 256,
              item_dense: int = 256, widths: tuple[int, ...] = (1024, 512, 256)) -> Network:
    """Scores of `batch` (query, item) pairs.

    ==========  ======================================================  =======
    weights     inputs                                                  output
    ==========  ======================================================  =======
    129,969,664 query_ids (B, 1) int64, query_dense (B, 256) float32,  (B, 1)
                item_ids (B, 1) int64, item_dense (B, 256) float32
    ==========  ======================================================  =======
    """
    if min(query_rows, item_rows) < 1 or not widths:
        raise ModelConfigError("two-tower needs at least one row per table and one layer")
    model = TwoTower(query_rows, item_rows, id_dim, query_dense, item_dense, list(widths))
    return export_with_random_weights(
        model,
        {"query_ids": (batch, 1), "query_dense": (batch, query_dense),
         "item_ids": (batch, 1), "item_dense": (batch, item_dense)},
        rng,
        input_dtypes={"query_ids": "int64", "item_ids": "int64"},
        input_bounds={"query_ids": query_rows, "item_ids": item_rows},
    )
