"""Benchmark models for placement experiments, by name.

.. code-block:: python

    from tvm_place import models

    models.list()  # ['bert-base', 'bert-layer', 'gpt2-block', 'onnx-cnn', 'resnet18', ...]
    model = models.get("resnet18", image_size=64)
    model.mod["main"]  # takes only the images; the weights are constants inside it
    model.inputs  # [random float32 images of shape (1, 3, 64, 64)]

Every model's `main` has static float32 shapes and random weights drawn from `seed`. The
architecture families live in one module each and register their builders on import.
"""

from .registry import MissingDependencyError, Model, ModelConfigError, Network, get, list, register

# Imported for their registrations.
from . import imported, resnet, transformer  # noqa: E402,F401  isort: skip

__all__ = [
    "MissingDependencyError",
    "Model",
    "ModelConfigError",
    "Network",
    "get",
    "list",
    "register",
]
