"""Random weights for the benchmark models, drawn by parameter name and shape.

Placement only needs the weights' shapes and sizes, but the tests compare numerics with other
frameworks, so the values must keep activations of order one through deep networks.
"""

import numpy as np

# One-dimensional parameters that multiply (norm and BatchNorm scales) or must be positive
# (BatchNorm variances): drawn near one. Every other vector (biases, shifts, means) is near zero.
_NEAR_ONE_SUFFIXES = ("weight", "scale", "running_var")


def random_weight(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw one float32 weight.

    Matrices and kernels use LeCun initialisation (variance 1 / fan-in, fan-in being the product
    of all but the first dimension): with ReLUs in between, a residual branch then adds less
    variance than it receives, so a 50-layer ResNet without real normalisation statistics still
    ends with outputs of order one.
    """
    if len(shape) >= 2:
        mean, std = 0.0, 1.0 / np.sqrt(np.prod(shape[1:]))
    elif name.endswith(_NEAR_ONE_SUFFIXES):
        mean, std = 1.0, 0.1
    else:
        mean, std = 0.0, 0.1
    # Drawn in float32 directly: BERT-base has 85 M weights.
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)
