"""Turn a `tvm.relax.frontend.nn` module into a :class:`~tvm_place.models.registry.Network`.

`nn.Module.export_tvm` gives a function `forward` whose parameters are the data inputs followed
by every weight. Placement wants a self-contained `main` with only the data inputs, so the weights
are drawn at random here and bound into the function as constants.
"""

import numpy as np
import tvm
from tvm.relax.frontend import nn

from .registry import Network
from .weights import random_weight


def export_with_random_weights(
    module: nn.Module, input_shapes: dict[str, tuple[int, ...]], rng: np.random.Generator
) -> Network:
    """Export `module.forward` as `main` with random weights bound as constants.

    Parameters
    ----------
    module : nn.Module
        The network; its `forward` takes one float32 tensor per entry of `input_shapes`.
    input_shapes : dict[str, tuple[int, ...]]
        The data inputs of `forward`, by argument name, in order.
    rng : numpy.random.Generator
        Source of the weights.
    """
    spec = {name: nn.spec.Tensor(shape, "float32") for name, shape in input_shapes.items()}
    exported, named_params = module.export_tvm(spec={"forward": spec})
    forward = exported["forward"]
    weights = {
        name: random_weight(name, tuple(int(dim) for dim in param.shape), rng)
        for name, param in named_params
    }
    # export_tvm lists the weights after the data inputs, in the order of `named_params`.
    weight_vars = forward.params[len(input_shapes) :]
    main = (
        forward.bind_params(dict(zip(weight_vars, weights.values(), strict=True)))
        .without_attr("num_input")
        .with_attr("global_symbol", "main")
    )
    # The modules here use no nn subroutines, so `forward` is the only function to carry over.
    return Network(mod=tvm.IRModule({"main": main}), params=weights)
