"""The model registry: named builders that turn a name and a few sizes into a Relax module.

Builders register themselves with :func:`register`; :func:`get` calls one and wraps what it
returns into a :class:`Model`, drawing the random inputs from `main`'s signature so that every
model's inputs are made the same way.
"""

import builtins
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import tvm

from tvm_place.errors import MissingDependencyError, ModelConfigError


class Network(NamedTuple):
    """What a builder returns: the module and the weights bound into it.

    Attributes
    ----------
    mod : tvm.IRModule
        A module whose Relax function `main` takes only the data inputs, with static shapes
        (float32, or integer ids such as a recommender's table rows); the weights are constants
        inside it.
    params : dict[str, numpy.ndarray]
        The weights bound into `mod`, by the name the architecture gives them, so that a
        reference implementation can recompute the output. For models built with
        `tvm.relax.frontend.nn` they are views of the constants' memory, not copies: writing to
        them changes the module.
    reference : Callable[..., numpy.ndarray] | None
        The source framework's own forward pass (torch, the ONNX reference evaluator), taking
        the same inputs as `main`; None for models defined directly in Relax.
    input_bounds : dict[str, int | numpy.ndarray] | None
        For each integer input of `main`, by parameter name, the exclusive upper bound of its
        values: an int, or an array broadcast against the input's shape (one bound per column).
    """

    mod: tvm.IRModule
    params: dict[str, np.ndarray]
    reference: Callable[..., np.ndarray] | None = None
    input_bounds: dict[str, int | np.ndarray] | None = None


@dataclass(frozen=True)
class Model:
    """A benchmark model ready to be placed, compiled and run.

    Attributes
    ----------
    name : str
        The registry name, e.g. ``"resnet50"``.
    family : str
        The architecture family: ``"cnn"``, ``"transformer"`` or ``"recommender"``.
    mod : tvm.IRModule
        The module; `main` takes exactly the arrays in `inputs`.
    inputs : list[numpy.ndarray]
        Random inputs, one per parameter of `main`, in order: float32 standard normal, or, for
        integer inputs, uniform ids below the builder's `input_bounds`.
    description : str
        One line saying what the model is.
    params : dict[str, numpy.ndarray]
        The weights bound into `mod`, by name.
    reference : Callable[..., numpy.ndarray] | None
        For imported models, the source framework's forward pass: ``reference(*inputs)``
        returns what `main` should return.
    """

    name: str
    family: str
    mod: tvm.IRModule
    inputs: builtins.list[np.ndarray]
    description: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    reference: Callable[..., np.ndarray] | None = None


@dataclass(frozen=True)
class _Entry:
    build: Callable[..., Network]
    family: str
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, family: str, description: str) -> Callable:
    """Register a builder under `name`.

    The builder is called as ``build(batch=..., rng=..., **overrides)`` where `rng` is a
    :class:`numpy.random.Generator` for the weights, and returns a :class:`Network`. Its other
    keyword arguments (with defaults: the real sizes) are the overrides :func:`get` accepts.
    """

    def decorator(build: Callable[..., Network]) -> Callable[..., Network]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(build, family, description)
        return build

    return decorator


def list() -> builtins.list[str]:  # pylint: disable=redefined-builtin
    """The names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get(name: str, batch: int = 1, seed: int = 0, training: bool = False, loss: str = "auto",
        **overrides) -> Model:
    """Build the model registered as `name`.

    Parameters
    ----------
    name : str
        A name from :func:`list`.
    batch : int
        The batch size of the data inputs.
    seed : int
        Seeds the random weights and the random inputs (two independent streams, so the
        inputs of two models with the same input shape are the same).
    training : bool
        Return a training step instead (:func:`tvm_place.passes.training_module`):
        `main(*data, label, *weights) -> (loss, grad_1, ..., grad_k)`, backward operators marked
        and tied to their forward operators; `inputs` then holds the data, a random label and
        the weights, and `params` the weight parameters by name.
    loss : str
        The training loss: ``"auto"`` (cross-entropy for a classifier, else mean squared
        error), ``"cross-entropy"`` or ``"mse"``.
    **overrides
        Sizes to change from the real model's, e.g. ``image_size=32`` or ``seq_len=16``.

    Raises
    ------
    ModelConfigError
        When `name` is not registered, an override is not a size of that model, or the sizes
        do not fit together (e.g. a hidden size the number of heads does not divide).
    MissingDependencyError
        When the model is imported from a framework that is not installed.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ModelConfigError(f"unknown model {name!r}; available models: {', '.join(list())}")
    accepted = [p for p in inspect.signature(entry.build).parameters if p not in ("batch", "rng")]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ModelConfigError(
            f"model {name!r} has no size {', '.join(unknown)}; it accepts: {', '.join(accepted)}"
        )
    for key, value in sorted(overrides.items()):
        # Sizes and multipliers are above 0 (a seed may be 0).
        if isinstance(value, bool) or (isinstance(value, (int, float)) and
                                       (value < 0 if key.endswith("seed") else value <= 0)):
            raise ModelConfigError(f"size {key}={value!r} of model {name!r}: give a number above 0"
                                   + (" (a seed: at least 0)" if key.endswith("seed") else ""))
    weights_seed, inputs_seed = np.random.SeedSequence(seed).spawn(2)
    network = entry.build(batch=batch, rng=np.random.default_rng(weights_seed), **overrides)
    try:
        inputs = random_inputs(network.mod, np.random.default_rng(inputs_seed), network.input_bounds)
    except ModelConfigError as err:
        named = {key: value for key, value in overrides.items() if isinstance(value, str)}
        if not named:
            raise
        raise ModelConfigError(  # a name makes a dimension symbolic, and nothing bounds it here
            f"size {', '.join(f'{k}={v!r}' for k, v in named.items())} of model {name!r} is not a "
            f"number: give a whole number (this model takes no symbolic size there: {err})"
        ) from None
    if training:
        from tvm_place.passes.training import training_inputs, training_module

        mod, weights, kind = training_module(network.mod, network.params, loss)
        inputs = training_inputs(mod, inputs, weights, kind, np.random.default_rng([seed, 1]))
        return Model(name=name, family=entry.family, mod=mod, inputs=inputs,
                     description=f"{entry.description} (training step, {kind} loss)",
                     params=weights)
    return Model(
        name=name,
        family=entry.family,
        mod=network.mod,
        inputs=inputs,
        description=entry.description,
        params=network.params,
        reference=network.reference,
    )


def random_inputs(mod: tvm.IRModule, rng: np.random.Generator,
                  input_bounds: dict | None = None) -> builtins.list[np.ndarray]:
    """One random array per parameter of `mod["main"]`, from its shapes (a symbolic dimension at
    `main`'s ``tir_var_upper_bound``): standard normal floats, integers below the parameter's
    bound in `input_bounds` (zeros where it has none).

    Raises
    ------
    ModelConfigError
        When a parameter has no tensor shape, or a symbolic dimension no upper bound.
    """
    inputs = []
    main = mod["main"]
    upper = {str(k): int(v) for k, v in dict((main.attrs or {}).get("tir_var_upper_bound", {})).items()}
    for param in main.params:
        try:
            shape = [upper[str(dim.name)] if isinstance(dim, tvm.tirx.Var) else int(dim)
                     for dim in param.ty.shape]
        except (TypeError, AttributeError, KeyError):
            raise ModelConfigError(
                f"input {param.name!r} of main has no static tensor shape ({param.ty}) and no "
                "upper bound for its symbolic dimensions; give static shapes or bounds"
            ) from None
        dtype = np.dtype(str(param.ty.dtype))
        if np.issubdtype(dtype, np.integer):
            high = (input_bounds or {}).get(param.name)
            inputs.append(np.zeros(shape, dtype) if high is None
                          else rng.integers(0, high, size=shape).astype(dtype))
        else:
            inputs.append(rng.standard_normal(shape).astype(dtype))
    return inputs


def describe(name: str) -> dict[str, str]:
    """The family and description of the model registered as `name`, without building it."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ModelConfigError(f"unknown model {name!r}; available models: {', '.join(list())}")
    return {"family": entry.family, "description": entry.description}
