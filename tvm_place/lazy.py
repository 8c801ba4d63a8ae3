"""Names of a package that load their module on first use (PEP 562), so that importing the
package does not import TVM (plain-data work such as ``tvm-place solve``) and a Ray actor can set
its affinity and thread count before anything loads TVM."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``names[name]`` is ``"module"`` (relative to
    ``package``; the attribute has the name asked for) or ``"module:attribute.path"``."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, path = names[name].partition(":")
        value = importlib.import_module(f".{module}", package)
        for part in (path or name).split("."):
            value = getattr(value, part)
        return value

    return __getattr__
