"""Turn a `tvm.relax.frontend.nn` module into a :class:`~tvm_place.models.registry.Network`
(:func:`export_images` for the image networks, which :func:`check_image_size` guards).

`nn.Module.export_tvm` gives a function `forward` whose parameters are the data inputs followed
by every weight. Placement wants a self-contained `main` with only the data inputs, so the weights
are drawn at random here and bound into the function as constants.
"""

from collections.abc import Callable

import numpy as np
import tvm
from tvm.relax.frontend import nn

from .registry import ModelConfigError, Network
from .weights import random_weight_tensor


def export_with_random_weights(
    module: nn.Module,
    input_shapes: dict[str, tuple[int, ...]],
    rng: np.random.Generator,
    *,
    input_dtypes: dict[str, str] | None = None,
    input_bounds: dict[str, int | np.ndarray] | None = None,
    shared_with: Callable[[str], str] | None = None,
    upper_bounds: dict[str, int] | None = None,
) -> Network:
    """Export `module.forward` as `main` with random weights bound as constants.

    Parameters
    ----------
    module : nn.Module
        The network; its `forward` takes one tensor per entry of `input_shapes`.
    input_shapes : dict[str, tuple[int, ...]]
        The data inputs of `forward`, by argument name, in order.
    rng : numpy.random.Generator
        Source of the weights.
    input_dtypes : dict[str, str] | None
        The dtype of the inputs that are not float32 (e.g. ``"int64"`` token or row ids).
    input_bounds : dict[str, int | numpy.ndarray] | None
        For each integer input, the exclusive upper bound of its values (see
        :class:`~tvm_place.models.registry.Network`).
    shared_with : Callable[[str], str] | None
        Maps a weight's name to the name of the weight whose values it reuses (itself when it
        has its own). Shared weights are drawn once and their constants point to the same
        memory; every operator still reads a constant of its own, so the graph and the weight
        bytes that placement sees are those of the unshared model.
    upper_bounds : dict[str, int] | None
        For each symbolic dimension (a name in `input_shapes`), its largest size: `main`'s
        ``tir_var_upper_bound`` attribute.
    """
    input_dtypes = input_dtypes or {}
    spec = {
        name: nn.spec.Tensor(shape, input_dtypes.get(name, "float32"))
        for name, shape in input_shapes.items()
    }
    exported, named_params = module.export_tvm(spec={"forward": spec})
    forward = exported["forward"]
    tensors: dict[str, tvm.runtime.Tensor] = {}
    weights: dict[str, np.ndarray] = {}
    for name, param in named_params:
        shape = tuple(int(dim) for dim in param.shape)
        source = shared_with(name) if shared_with is not None else name
        if source not in tensors:
            tensors[source], weights[source] = random_weight_tensor(source, shape, rng)
        if tuple(tensors[source].shape) != shape:
            raise ValueError(f"weight {name!r} {shape} cannot share the values of {source!r}")
        tensors[name], weights[name] = tensors[source], weights[source]
    # export_tvm lists the weights after the data inputs, in the order of `named_params`.
    weight_vars = forward.params[len(input_shapes) :]
    bound = {var: tensors[name] for var, (name, _) in zip(weight_vars, named_params, strict=True)}
    main = forward.bind_params(bound).without_attr("num_input").with_attr("global_symbol", "main")
    if upper_bounds:
        main = main.with_attr("tir_var_upper_bound", dict(upper_bounds))
    # The modules here use no nn subroutines, so `forward` is the only function to carry over.
    return Network(
        mod=tvm.IRModule({"main": main}),
        params={name: weights[name] for name, _ in named_params},
        input_bounds=input_bounds,
    )


def export_images(
    module: nn.Module, batch: int, image_size: int, rng: np.random.Generator, channels: int = 3
) -> Network:
    """:func:`export_with_random_weights` for a network on square images: its `forward` takes
    ``images`` of shape ``(batch, channels, image_size, image_size)``."""
    shapes = {"images": (batch, channels, image_size, image_size)}
    return export_with_random_weights(module, shapes, rng)


def check_image_size(model: str, image_size: int, at_least: int) -> None:
    """Refuse images smaller than a network's downsampling allows."""
    if image_size < at_least:
        raise ModelConfigError(
            f"{model} needs images of at least {at_least} pixels, not {image_size}"
        )


#: TVM's operator pattern kind that fusion never merges (``kOpaque``).
_OPAQUE_PATTERN = 8


def operator_granularity(network: Network) -> Network:
    """`network` with every Relax operator lowered to its own TIR kernel that fusion leaves alone.

    The operators are legalized here (``LegalizeOps``) and each kernel is marked opaque
    (``op_pattern``), which TVM's ``AnnotateTIROpPattern`` keeps and ``FuseOps`` never fuses:
    placement then sees one operator per Relax call (a convolution, its BatchNorm multiply and
    add and its ReLU apart), the operator granularity of Tarnawski et al.'s graphs. The module
    still compiles and runs as before; what a kernel computes does not change.
    """
    from tvm import relax, tirx

    mod = relax.transform.LegalizeOps()(network.mod)
    for var, func in list(mod.functions.items()):
        if isinstance(func, tirx.PrimFunc):
            mod[var] = func.with_attr("op_pattern", _OPAQUE_PATTERN)
    return network._replace(mod=mod)
