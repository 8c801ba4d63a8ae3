"""Random weights for the benchmark models, drawn by parameter name and shape.

Placement only needs the weights' shapes and sizes, but the tests compare numerics with other
frameworks, so the values must keep activations of order one through deep networks.
"""

import numpy as np
import tvm

# One-dimensional parameters that multiply (norm and BatchNorm scales) or must be positive
# (BatchNorm variances): drawn near one. Every other vector (biases, shifts, means) is near zero.
_NEAR_ONE_SUFFIXES = ("weight", "scale", "running_var")


def random_weight(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw one float32 weight.

    Matrices and convolution weights use LeCun initialisation (variance 1 / fan-in, fan-in being
    the product of all but the first dimension, or the first dimension of a matrix named
    ``*kernel``, stored ``(in_features, out_features)``): with ReLUs in between, a residual
    branch then adds less variance than it receives, so a 50-layer ResNet without real
    normalisation statistics still ends with outputs of order one.
    """
    mean, std = _mean_and_std(name, shape)
    # Drawn in float32 directly: BERT-base has 85 M weights.
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)


def random_weight_tensor(
    name: str, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[tvm.runtime.Tensor, np.ndarray]:
    """Draw the same values as :func:`random_weight`, straight into a TVM tensor.

    Returns the tensor and a NumPy view of its memory (no copy): a model's weights then exist
    once, as the constants of its module, which matters for the models of a gigabyte or more.
    """
    mean, std = _mean_and_std(name, shape)
    tensor = tvm.runtime.empty(shape, "float32")
    view = np.from_dlpack(tensor)
    rng.standard_normal(dtype=np.float32, out=view)
    view *= np.float32(std)
    view += np.float32(mean)
    return tensor, view


def _mean_and_std(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    if len(shape) == 2 and name.endswith("kernel"):
        # A matrix stored (in_features, out_features), as Flax names it: the fan-in comes first.
        return 0.0, 1.0 / np.sqrt(shape[0])
    if len(shape) >= 2:
        return 0.0, 1.0 / np.sqrt(np.prod(shape[1:]))
    if name.endswith(_NEAR_ONE_SUFFIXES):
        return 1.0, 0.1
    return 0.0, 0.1
