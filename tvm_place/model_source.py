"""Where a model comes from on the command line: a registry name, an ONNX file, or a Python file.

``load_model(spec)`` accepts

- a name from :func:`tvm_place.models.list` (``resnet18``), with ``batch`` and size overrides;
- ``model.onnx``: imported with TVM's Relax ONNX frontend (static input shapes; ``pip install
  tvm-place[onnx]``);
- ``file.py``: a TVMScript file defining an ``IRModule`` (``@I.ir_module class Module``), or a
  Python file with a function returning one; ``file.py:name`` names the function or module, else
  the file must define exactly one ``IRModule`` or a function ``get_module()``.

Inputs for a file's ``main`` are drawn at random from its static parameter shapes (integer inputs
are zeros: ids in range for any table).
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelConfigError, UnsupportedModelError

#: The function a Python model file is asked for when the spec names none.
DEFAULT_FUNCTION = "get_module"


@dataclass
class LoadedModel:
    """A module ready to place: its name, the module, and one input per parameter of ``main``."""

    name: str
    mod: object
    inputs: list[np.ndarray]


def load_model(spec: str, batch: int = 1, sizes: dict | None = None, seed: int = 0,
               training: bool = False, layout: str = "NCHW") -> LoadedModel:
    """The model ``spec`` names (see the module docstring); ``training``: a registry model's
    training step (:mod:`tvm_place.passes.training`); ``layout``: its convolutions' layout
    (:func:`tvm_place.passes.convert_conv_layout`; inputs keep their shapes)."""
    from tvm_place.passes import convert_conv_layout

    loaded = _load_model(spec, batch, sizes, seed, training)
    return LoadedModel(loaded.name, convert_conv_layout(loaded.mod, layout), loaded.inputs)


def _load_model(spec: str, batch: int, sizes: dict | None, seed: int, training: bool) -> LoadedModel:
    path, member = spec.rsplit(":", 1) if ".py:" in spec else (spec, "")
    file = Path(path)
    if training and file.suffix in (".onnx", ".py"):
        raise ModelConfigError("--training applies to registry models only, not to files")
    if file.suffix == ".onnx":
        return _onnx_model(file, seed)
    if file.suffix == ".py":
        return _python_model(file, member or None, seed)
    from . import models

    if spec not in models.list():
        raise ModelConfigError(
            f"{spec!r} is neither a registry model ({', '.join(models.list())}) nor an .onnx or "
            ".py file; see `tvm-place models`"
        )
    model = models.get(spec, batch=batch, seed=seed, training=training, **(sizes or {}))
    return LoadedModel(spec, model.mod, model.inputs)


def _checked(name: str, mod, seed: int) -> LoadedModel:
    import tvm
    from tvm import relax

    functions = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, relax.Function)] \
        if isinstance(mod, tvm.IRModule) else []
    if not functions:
        raise UnsupportedModelError(
            f"{name} gives a {type(mod).__name__}, not an IRModule with a Relax function"
        )
    from .models.registry import random_inputs

    # Inputs of `main` (what `run --from-source` feeds); a module placed by other entry
    # functions (--entry) is run on inputs of the types its export records.
    inputs = random_inputs(mod, np.random.default_rng(seed)) if "main" in functions else []
    return LoadedModel(name, mod, inputs)


def _onnx_model(file: Path, seed: int) -> LoadedModel:
    try:
        import onnx
    except ImportError:
        raise ModelConfigError(
            "reading .onnx files needs the onnx package: pip install 'tvm-place[onnx]'"
        ) from None
    from tvm.relax.frontend.onnx import from_onnx

    if not file.is_file():
        raise ModelConfigError(f"{file} does not exist")
    try:
        graph = onnx.load(str(file))
        onnx.checker.check_model(graph)
    except Exception as err:  # onnx raises several types for a bad file
        raise ModelConfigError(f"{file} is not a valid ONNX model ({str(err).splitlines()[0]})") from None
    try:
        mod = from_onnx(graph, keep_params_in_input=False)
    except Exception as err:  # the frontend's errors for unsupported operators vary
        raise UnsupportedModelError(
            f"TVM's ONNX frontend cannot import {file}: {str(err).strip().splitlines()[-1]}"
        ) from None
    return _checked(str(file), mod, seed)


def _python_model(file: Path, member: str | None, seed: int) -> LoadedModel:
    import tvm

    if not file.is_file():
        raise ModelConfigError(f"{file} does not exist")
    try:
        namespace = runpy.run_path(str(file))
    except SystemExit as err:  # a script, not a model file
        raise ModelConfigError(
            f"{file} exited (sys.exit({err.code!r})) while tvm-place read it: a model file defines "
            f"an IRModule or a function {DEFAULT_FUNCTION}() returning one, and runs no program"
        ) from err
    except Exception as err:  # the user's file may raise anything while it runs
        raise ModelConfigError(
            f"running {file} failed: {type(err).__name__}: {err} (use --debug for the traceback)"
        ) from err
    if member is None:
        modules = [name for name, value in namespace.items() if isinstance(value, tvm.IRModule)]
        if len(modules) == 1:
            member = modules[0]
        elif DEFAULT_FUNCTION in namespace:
            member = DEFAULT_FUNCTION
        else:
            raise ModelConfigError(
                f"{file} defines {len(modules)} IRModules ({modules}) and no {DEFAULT_FUNCTION}(); "
                f"name one as {file}:NAME"
            )
    if member not in namespace:
        raise ModelConfigError(f"{file} defines no {member!r}")
    value = namespace[member]
    if callable(value) and not isinstance(value, tvm.IRModule):
        try:
            value = value()
        except (Exception, SystemExit) as err:  # the user's function may raise anything
            raise ModelConfigError(
                f"calling {member}() of {file} failed: {type(err).__name__}: {err} (tvm-place calls "
                "it with no arguments: give its parameters defaults; --debug shows the traceback)"
            ) from err
    return _checked(f"{file}:{member}", value, seed)
