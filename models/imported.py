"""Models imported from other frameworks through TVM's frontends.

These exercise the graphs the importers produce (their operator names, their constant layout)
rather than the ones `tvm.relax.frontend.nn` produces. torch and onnx are optional: each is
imported only when its model is built. Every model carries the source framework's own forward
pass as `reference`, to check the import numerically.
"""

import importlib
from types import ModuleType

import numpy as np

from .registry import MissingDependencyError, Network, register
from .weights import random_weight


def _import_optional(module: str, requirement: str, model: str) -> ModuleType:
    """Import `module`, or say which package to install to build `model`."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"model {model!r} needs {module}, which is not installed: pip install {requirement}"
        ) from err


@register(
    "torch-cnn",
    "cnn",
    "small torch.nn CNN (conv-bn-relu-pool x2, linear) imported via torch.export",
)
def torch_cnn(batch: int, rng: np.random.Generator, image_size: int = 32, channels: int = 16,
              num_classes: int = 10) -> Network:
    """Two conv-BatchNorm-ReLU stages, max then global average pooling, and a classifier."""
    torch = _import_optional("torch", "torch==2.13.0", "torch-cnn")
    from tvm.relax.frontend.torch import from_exported_program  # needs torch itself

    class Classifier(torch.nn.Module):
        """Names the input `images` (torch.export names `main`'s parameters after `forward`'s)."""

        def __init__(self):
            super().__init__()
            layers = torch.nn
            self.layers = layers.Sequential(
                layers.Conv2d(3, channels, 3, padding=1, bias=False),
                layers.BatchNorm2d(channels),
                layers.ReLU(),
                layers.MaxPool2d(2),
                layers.Conv2d(channels, 2 * channels, 3, padding=1, bias=False),
                layers.BatchNorm2d(2 * channels),
                layers.ReLU(),
                layers.AdaptiveAvgPool2d(1),
                layers.Flatten(),
                layers.Linear(2 * channels, num_classes),
            )

        def forward(self, images):
            return self.layers(images)

    net = Classifier().eval()
    params = {}
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            # BatchNorm's integer batch counter is no weight.
            if tensor.is_floating_point():
                params[name] = random_weight(name, tuple(tensor.shape), rng)
                tensor.copy_(torch.from_numpy(params[name]))

    example = torch.zeros(batch, 3, image_size, image_size)
    exported = torch.export.export(net, (example,))
    mod = from_exported_program(exported, unwrap_unit_return_tuple=True)

    def reference(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(images)).numpy()

    return Network(mod=mod, params=params, reference=reference)


@register(
    "onnx-cnn",
    "cnn",
    "small CNN (conv-relu-maxpool, conv-relu-global-pool, gemm) built with onnx.helper",
)
def onnx_cnn(batch: int, rng: np.random.Generator, image_size: int = 32, channels: int = 16,
             num_classes: int = 10) -> Network:
    """An ONNX graph with random initializers, imported with `from_onnx`."""
    _import_optional("onnx", "onnx==1.23.2", "onnx-cnn")
    from onnx import helper

    shapes = {
        "conv1.weight": (channels, 3, 3, 3),
        "conv1.bias": (channels,),
        "conv2.weight": (2 * channels, channels, 3, 3),
        "conv2.bias": (2 * channels,),
        "fc.weight": (num_classes, 2 * channels),
        "fc.bias": (num_classes,),
    }
    params = {name: random_weight(name, shape, rng) for name, shape in shapes.items()}
    nodes = [
        helper.make_node("Conv", ["images", "conv1.weight", "conv1.bias"], ["conv1"], pads=[1] * 4),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"], pads=[1] * 4),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("GlobalAveragePool", ["relu2"], ["pool2"]),
        helper.make_node("Flatten", ["pool2"], ["features"]),
        helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    input_shape = (batch, 3, image_size, image_size)
    return onnx_network(nodes, "onnx_cnn", ("images", input_shape), ("logits", (batch, num_classes)),
                        params)


def onnx_network(nodes, name: str, data_input, output, params, constants=None) -> Network:
    """An ONNX graph (opset 17) of ``nodes`` with ``params`` and ``constants`` as initializers,
    checked and imported with `from_onnx`; its reference is ONNX's own evaluator.

    ``data_input`` and ``output`` are ``(name, shape)`` of the graph's one float input and output.
    """
    onnx = _import_optional("onnx", "onnx==1.23.2", name)
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    from tvm.relax.frontend.onnx import from_onnx  # needs onnx itself

    (input_name, input_shape), (output_name, output_shape) = data_input, output
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, input_shape)],
        outputs=[helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, output_shape)],
        initializer=[
            numpy_helper.from_array(value, key) for key, value in {**params, **(constants or {})}.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    mod = from_onnx(model, shape_dict={input_name: input_shape})
    evaluator = ReferenceEvaluator(model)

    def reference(data: np.ndarray) -> np.ndarray:
        return evaluator.run(None, {input_name: data})[0]

    return Network(mod=mod, params=params, reference=reference)
