"""Costs of external calls (``R.call_dps_packed`` of a function outside the module: a library
kernel, a function registered with ``tvm_ffi.register_global_func``).

An external function has no TIR to estimate or time by itself, and tvm-place cannot tell on
which devices it exists. Its time per call is the user's where given (``external_costs``:
``{symbol: seconds}`` for every device, or ``{symbol: {device name or kind: seconds}}``, a
device left out being one it does not run on); otherwise, on CPU devices, it is measured by
calling the function in this process on random arguments of its types (least of a few
repeats), and on other devices it is unsupported (infinite).
"""

from __future__ import annotations

import math
import time
from typing import Mapping

import numpy as np
import tvm

from ..errors import InvalidTargetError

#: Timed calls of an external function per device (after one warm-up); the least is its cost.
REPEATS = 5


def _given(name: str, value, device) -> tuple[float, str]:
    if isinstance(value, Mapping):
        for key in (device.name, device.kind):
            if key in value:
                value = value[key]
                break
        else:
            return math.inf, "no time given for this device"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise InvalidTargetError(
            f"external_costs[{name!r}] = {value!r}: give seconds per call, a number >= 0 (or a "
            "dict of them by device name or kind, e.g. {'cpu': 2e-4})"
        )
    return float(value), "given"


def _random_tensor(ty, rng: np.random.Generator) -> tvm.runtime.Tensor:
    shape = [int(d) for d in ty.shape.values]
    dtype = np.dtype(str(ty.dtype))
    array = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return tvm.runtime.tensor(array, tvm.cpu(0))


def external_time(call, device, given: Mapping | None = None) -> tuple[float, str]:
    """``(seconds, source)`` of one call of the external function ``call``
    (a :class:`~tvm_place.passes.collect.ExternalCall`) on ``device``."""
    if given and call.name in given:
        return _given(call.name, given[call.name], device)
    if device.kind != "cpu":
        return math.inf, "external: measured on CPU devices only; give its time to place it here"
    function = tvm.get_global_func(call.name, allow_missing=True)
    if function is None:
        return math.inf, "external: not registered in this process"
    rng = np.random.default_rng(0)
    arguments = [_random_tensor(ty, rng) for ty in call.argument_types]
    outputs = call.output_type.fields if isinstance(call.output_type, tvm.relax.TupleType) else [call.output_type]
    arguments += [_random_tensor(ty, rng) for ty in outputs]
    times = []
    for _ in range(REPEATS + 1):
        started = time.perf_counter()
        function(*arguments)
        times.append(time.perf_counter() - started)
    return min(times[1:]), "measured external call"
