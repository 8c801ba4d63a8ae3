"""Benchmark models for placement experiments, by name.

.. code-block:: python

    from tvm_place import models

    models.list()  # ['bert-base', 'bert-large', 'densenet121', 'dlrm', 'efficientnet-b0', ...]
    model = models.get("resnet18", image_size=64)
    model.mod["main"]  # takes only the images; the weights are constants inside it
    model.inputs  # [random float32 images of shape (1, 3, 64, 64)]

Every model's `main` has static shapes (float32 data, int64 ids for DLRM's categorical
features) and random weights drawn from `seed`; its defaults are the real architecture's sizes,
and keyword overrides shrink it for tests. The architecture families live in one module each and
register their builders on import:

=============  ===================================================================
module         models
=============  ===================================================================
resnet         resnet18, resnet50, resnet152
mobilenet      mobilenet-v2, efficientnet-b0
inception      inception-v3, inception-v3-ops (every Relax operator its own: unfused)
nasnet         nasnet-a-mobile, nasnet-a-large (NASNet-A cells)
vgg            vgg16
densenet       densenet121
unet           unet
randwire       randwire-ws, randwire-er, randwire-ba (random graphs, networkx)
transformer    bert-layer, bert-base, bert-large, gpt2-block, gpt2-small, gpt2-medium
vit            vit-b16
llama          llama2-7b-4layers, llama2-7b (Llama-2-7B layer shapes)
llama_kv       not registered (two entry functions, weights as parameters): llama_kv.build(config)
               gives a whole Llama-architecture LM, prefill and decode with a KV cache, and
               llama_kv.generate a greedy loop (configs: llama2-7b, tinyllama-1.1b, tiny)
t5             t5-base (encoder-decoder)
moe            moe-block (top-2 of 8 experts, computed densely)
dlrm           dlrm (Criteo Kaggle embedding tables)
two_tower      two-tower (query and item towers, dot-product score)
imported       torch-cnn (torch.export), onnx-cnn (ONNX)
imported_zoo   torch-resnet18, torch-resnet50, torch-bert-layer, torch-bert-base, torch-gpt2-block, onnx-bert-layer
               (torch_eager_module: the PyTorch eager module of a torch-* model, for timing)
=============  ===================================================================

Each builder's docstring has its weights, inputs and output at full size.
"""

from .registry import (
    MissingDependencyError,
    Model,
    ModelConfigError,
    Network,
    describe,
    get,
    list,
    register,
)

# Imported for their registrations.
from . import (  # noqa: E402,F401  isort: skip
    densenet,
    dlrm,
    imported,
    imported_zoo,
    inception,
    nasnet,
    llama,
    mobilenet,
    moe,
    randwire,
    resnet,
    t5,
    transformer,
    two_tower,
    unet,
    vgg,
    vit,
)

__all__ = [
    "MissingDependencyError",
    "Model",
    "ModelConfigError",
    "Network",
    "describe",
    "get",
    "list",
    "register",
]
