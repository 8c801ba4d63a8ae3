"""Architectures from torchvision's and Hugging Face's own code, as users import them.

The models are built from their libraries' builders and configs with random weights (seeded),
nothing downloaded, at small sizes, exported with ``torch.export`` and imported with TVM's
``from_exported_program``; each comes with its eager torch forward pass to compare against.
torchvision and transformers are optional (the ``hub`` extra).

torchvision's PyPI wheel is a CUDA build: its native extension (``torchvision._C``, the
detection operators) does not load beside a CPU-only torch, and ``import torchvision`` fails
("operator torchvision::nms does not exist"). The classification models use no extension
operator, so :func:`torchvision_models` imports ``torchvision.models`` under a package object
that skips ``torchvision/__init__.py`` (which loads the extension) when the plain import fails
(before transformers is imported too, which imports torchvision when it is installed).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from tvm_place.errors import MissingDependencyError

#: torchvision classification builders, with keyword arguments that keep them small or make
#: them build without pretrained-weight defaults.
TORCHVISION = {
    "resnet18": {},
    "resnet50": {},
    "resnext50_32x4d": {},
    "wide_resnet50_2": {},
    "mobilenet_v2": {},
    "mobilenet_v3_small": {},
    "efficientnet_b0": {},
    "densenet121": {},
    "squeezenet1_1": {},
    "shufflenet_v2_x0_5": {},
    "mnasnet0_5": {},
    "regnet_y_400mf": {},
    "vgg11_bn": {},
    "googlenet": {"aux_logits": False, "init_weights": True},
    "convnext_tiny": {},
    "vit_b_16": {"image_size": 32},
    "alexnet": {},
}
#: Architectures whose pooling needs larger images than the default 32 x 32.
MIN_IMAGE_SIZE = {"alexnet": 64}

#: Hugging Face architectures: (config class, model class, config sizes). Small: two layers,
#: hidden size 32; every other setting is the library's default for that architecture. The
#: decoders (gpt2, llama, qwen2) are called without an attention mask: with one, TVM 0.27's
#: importer fails on the mask Hugging Face builds ("Concat expects all input tensors to have
#: same ndim"); without one they take a cumsum over booleans, which TVM 0.27 cannot compile
#: (tvm_place.compile says so).
_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "vocab_size": 128}
HUGGING_FACE = {
    "bert": ("BertConfig", "BertModel", _SMALL),
    "roberta": ("RobertaConfig", "RobertaModel", {**_SMALL, "pad_token_id": 1}),
    "distilbert": ("DistilBertConfig", "DistilBertModel",
                   {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "vocab_size": 128}),
    "albert": ("AlbertConfig", "AlbertModel", {**_SMALL, "embedding_size": 16}),
    "electra": ("ElectraConfig", "ElectraModel", {**_SMALL, "embedding_size": 16}),
    "gpt2": ("GPT2Config", "GPT2Model", {"n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 128}),
    "llama": ("LlamaConfig", "LlamaModel", {**_SMALL, "num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", "Qwen2Model", {**_SMALL, "num_key_value_heads": 2}),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", {**_SMALL, "pad_token_id": 1}),
    "mpnet": ("MPNetConfig", "MPNetModel", {**_SMALL, "pad_token_id": 1}),
    "mobilebert": ("MobileBertConfig", "MobileBertModel",
                   {**_SMALL, "embedding_size": 16, "intra_bottleneck_size": 16,
                    "true_hidden_size": 16, "num_feedforward_networks": 2}),
    "squeezebert": ("SqueezeBertConfig", "SqueezeBertModel", {**_SMALL, "embedding_size": 32}),
    "t5-encoder": ("T5Config", "T5EncoderModel",
                   {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
                    "vocab_size": 128}),
}


#: Architectures called with token ids only (see above).
DECODERS = {"gpt2", "llama", "qwen2"}


@dataclass
class HubModel:
    """An imported architecture: the Relax module, its inputs, and torch eager's output."""

    name: str
    mod: Any
    inputs: list[np.ndarray]
    expected: np.ndarray


def _require(name: str, pin: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependencyError(
            f"{name} is not installed ({err}); pip install 'tvm-place[hub]' (or {pin})"
        ) from None


def torchvision_models():
    """``torchvision.models`` (see the module docstring for why it may skip the package's
    ``__init__``)."""
    _require("torch", "torch==2.13.0")
    if "torchvision.models" in sys.modules:
        return sys.modules["torchvision.models"]
    try:
        import torchvision.models as found  # noqa: F401 - a torchvision whose extension loads

        return found
    except RuntimeError:  # the CUDA wheel's extension beside a CPU torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    except ImportError:
        raise MissingDependencyError(
            "torchvision is not installed; pip install 'tvm-place[hub]' (or torchvision==0.28.0)"
        ) from None
    spec = importlib.util.find_spec("torchvision")
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["torchvision"] = package
    return importlib.import_module("torchvision.models")


def _export(name: str, torch, net, examples: tuple, call: Callable | None = None) -> HubModel:
    from tvm.relax.frontend.torch import from_exported_program

    net = net.eval()
    with torch.no_grad():
        expected = (call or net)(*examples)
    exported = torch.export.export(net, examples)
    mod = from_exported_program(exported, unwrap_unit_return_tuple=True)
    return HubModel(name, mod, [e.numpy() for e in examples], expected.numpy())


def torchvision_model(arch: str, image_size: int = 32, batch: int = 1, seed: int = 0) -> HubModel:
    """torchvision's ``arch`` with random weights, 10 classes, on ``image_size`` images (at
    least :data:`MIN_IMAGE_SIZE`)."""
    import torch

    builders = torchvision_models()
    torch.manual_seed(seed)
    net = getattr(builders, arch)(weights=None, num_classes=10, **TORCHVISION[arch])
    size = max(image_size, MIN_IMAGE_SIZE.get(arch, 0))
    images = torch.from_numpy(
        np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype("float32"))
    return _export(f"torchvision-{arch}", torch, net, (images,))


def hugging_face_model(arch: str, seq_len: int = 8, batch: int = 1, seed: int = 0) -> HubModel:
    """Hugging Face's ``arch`` from a small config with random weights: token ids and, for an
    encoder, an attention mask (a padded second half of the last sequence) in, the last hidden
    state out."""
    torch = _require("torch", "torch==2.13.0")
    if importlib.util.find_spec("torchvision") is not None:
        torchvision_models()  # transformers imports torchvision when it is installed
    transformers = _require("transformers", "transformers==5.25.0")
    config_class, model_class, sizes = HUGGING_FACE[arch]
    config = getattr(transformers, config_class)(**sizes)
    config._attn_implementation = "eager"  # plain matmul attention: what TVM imports
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config)

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask=None):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state

    rng = np.random.default_rng(seed)
    vocab = int(getattr(config, "vocab_size"))
    ids = torch.from_numpy(rng.integers(2, vocab, size=(batch, seq_len)).astype("int64"))
    if arch in DECODERS:
        return _export(f"hf-{arch}", torch, LastHiddenState(), (ids,))
    mask = np.ones((batch, seq_len), dtype="int64")
    mask[-1, seq_len // 2:] = 0
    return _export(f"hf-{arch}", torch, LastHiddenState(), (ids, torch.from_numpy(mask)))
