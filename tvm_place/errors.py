"""Errors tvm-place raises for bad input, and the warnings it gives.

Every message says what is wrong and how to fix it; callers (the CLI, a user's script) can catch
:class:`TvmPlaceError` to handle all of them at once.
"""


class TvmPlaceError(Exception):
    """Base class of every error tvm-place raises on purpose."""


class InvalidGraphError(TvmPlaceError, ValueError):
    """The operator graph is empty, cyclic, or refers to nodes that do not exist."""


class InvalidTargetError(TvmPlaceError, ValueError):
    """A target is unknown, malformed, or cannot be mapped to a device profile."""


class UnsupportedModelError(TvmPlaceError, ValueError):
    """The Relax module cannot be placed as given (no `main`, dynamic shapes, unknown operators)."""


class InfeasibleError(TvmPlaceError):
    """No placement satisfies the constraints (memory caps, pins, unsupported operators)."""


class InvalidPlacementError(TvmPlaceError, ValueError):
    """A placement violates its problem's constraints."""


class UnknownMethodError(TvmPlaceError, ValueError):
    """A solver method name that tvm-place does not have."""


class ModelConfigError(TvmPlaceError, ValueError):
    """An unknown model name, an override the model does not take, or sizes that do not fit."""


class MissingDependencyError(TvmPlaceError, ImportError):
    """A feature needs an optional package (torch, onnx) that is not installed."""


class UntunedKernelWarning(UserWarning):
    """Kernels are built without a tuned schedule, so they run slower than TVM can make them."""


class InvalidArtifactError(TvmPlaceError, ValueError):
    """An export directory that cannot be loaded as it is (a missing, changed or outside library,
    a manifest that does not follow its format)."""


class ArtifactVersionWarning(UserWarning):
    """An export was written with another TVM version than the one loading it."""
