"""DLRM (Naumov et al., 2019), the deep learning recommendation model, in its Criteo Kaggle
configuration (facebookresearch/dlrm, `bench/dlrm_s_criteo_kaggle.sh`).

Dense features go through a bottom MLP (13-512-256-64-16, ReLU); each of the 26 categorical
features looks up one row of its own embedding table (`take`; the Criteo features are one-hot,
so an embedding bag is a single lookup); the dot-product interaction takes the pairwise dot
products of the 27 resulting 16-vectors (the strictly lower triangle, 351 values), concatenates
them with the bottom MLP's output, and a top MLP (367-512-256-1, ReLU, sigmoid at the end)
predicts the click probability.

The embedding tables have the row counts of the Criteo Kaggle data set: 33.8 M rows, 540 M
weights (2.2 GB), placed as constants like every other weight. `main` takes the dense features
(float32) and the categorical ids (int64, one column per table); ids out of a table's range are
clipped to its first or last row.
"""

import numpy as np
from tvm.relax.frontend import nn

from .layers import take
from .nn_export import export_with_random_weights
from .registry import ModelConfigError, Network, register

# Rows of each categorical feature's table in the Criteo Kaggle display advertising data set.
CRITEO_KAGGLE_TABLES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip


class MLP(nn.Module):
    """Linear layers with ReLU between them and `last` (``"relu"`` or ``"sigmoid"``) at the end."""

    def __init__(self, widths: list[int], last: str):
        self.layers = nn.ModuleList(
            [nn.Linear(widths[i], widths[i + 1]) for i in range(len(widths) - 1)]
        )
        self.last = last

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            final = index == len(self.layers) - 1
            x = nn.op.sigmoid(x) if final and self.last == "sigmoid" else nn.op.relu(x)
        return x


class DLRM(nn.Module):
    def __init__(self, num_dense, table_sizes, embedding_dim, bottom_mlp, top_mlp):
        self.bottom = MLP([num_dense, *bottom_mlp, embedding_dim], last="relu")
        self.tables = nn.ModuleList([nn.Embedding(rows, embedding_dim) for rows in table_sizes])
        num_vectors = len(table_sizes) + 1
        rows, columns = np.tril_indices(num_vectors, k=-1)  # i > j, row by row, as DLRM orders them
        self.pairs = (rows * num_vectors + columns).astype(np.int64)
        self.top = MLP([embedding_dim + len(self.pairs), *top_mlp, 1], last="sigmoid")

    def forward(self, dense: nn.Tensor, sparse: nn.Tensor) -> nn.Tensor:
        batch = dense.shape[0]
        bottom = self.bottom(dense)  # (batch, dim)
        columns = nn.op.split(sparse, len(self.tables), axis=1)
        # One-dimensional ids: the form whose gradient (take_backward) TVM can lower.
        embedded = [
            take(table.weight, nn.op.reshape(column, [batch]))  # (batch, dim)
            for table, column in zip(self.tables, columns)
        ]
        dim = bottom.shape[1]
        vectors = nn.op.concat([bottom, *embedded], dim=1)
        vectors = nn.op.reshape(vectors, [batch, len(embedded) + 1, dim])
        products = nn.op.matmul(vectors, nn.op.permute_dims(vectors, [0, 2, 1]))
        flat = nn.op.reshape(products, [batch, -1])
        interactions = take(flat, nn.Tensor.from_const(self.pairs), axis=1)
        return self.top(nn.op.concat([bottom, interactions], dim=1))


@register(
    "dlrm",
    "recommender",
    "DLRM (Criteo Kaggle): 26 embedding tables (33.8 M rows x 16), dot interaction, 541 M weights",
)
def dlrm(batch: int, rng: np.random.Generator, num_dense: int = 13,
         table_sizes: tuple[int, ...] = CRITEO_KAGGLE_TABLES, embedding_dim: int = 16,
         bottom_mlp: tuple[int, ...] = (512, 256, 64),
         top_mlp: tuple[int, ...] = (512, 256)) -> Network:
    """DLRM on `batch` samples of dense features and categorical ids.

    ============  ============================================  =======
    weights       inputs                                        output
    ============  ============================================  =======
    540,677,217   dense (B, 13) float32, sparse (B, 26) int64   (B, 1)
    ============  ============================================  =======

    540,201,232 of the weights are the embedding tables. `bottom_mlp` lists the hidden widths
    before the last layer (whose width is `embedding_dim`), `top_mlp` those before the output.
    """
    if not table_sizes or min(table_sizes) < 1:
        raise ModelConfigError(f"every embedding table needs at least one row: {table_sizes}")
    model = DLRM(num_dense, table_sizes, embedding_dim, list(bottom_mlp), list(top_mlp))
    return export_with_random_weights(
        model,
        {"dense": (batch, num_dense), "sparse": (batch, len(table_sizes))},
        rng,
        input_dtypes={"sparse": "int64"},
        input_bounds={"sparse": np.array(table_sizes)},
    )
