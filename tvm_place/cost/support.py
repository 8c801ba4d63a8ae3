"""Which kernels each target can build, so that a kernel one target cannot build is placed on a
device whose target can (what OpenVINO's HETERO plugin and ONNX Runtime's execution providers do
by a fixed priority, here by cost: the solvers choose among the devices left).

Each kernel is built alone for each distinct target as its stage would build it
(:func:`tvm_place.passes.build.build_kernel`: a GPU kernel needs a dlight schedule); the outcome
is cached on disk beside the measured costs, keyed by TVM version, target and the kernel's
structural hash. Modules placed on devices of one target are not checked: a kernel that target
cannot build has nowhere else to go, and the build says so.
"""

from __future__ import annotations

from typing import Sequence

import tvm
import tvm_ffi

from .measured import CostCache

#: The cache file (in the measured-cost cache directory) of kernels' build outcomes.
SUPPORT_FILE = "kernel-support.json"


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def unbuildable(collected, devices: Sequence, cache_dir=None, progress=None) -> dict[int, dict[int, str]]:
    """``{operator: {device: why}}`` for every operator whose kernel a device's target cannot
    build (empty when all devices share one target). ``collected`` is a
    :class:`~tvm_place.passes.collect.CollectedGraph`; ``devices`` the resolved targets."""
    from tvm_place.passes.build import build_kernel

    targets = {str(device.target): device.target for device in devices}
    if len(targets) < 2:
        return {}
    cache = CostCache(cache_dir, SUPPORT_FILE)
    outcome: dict[tuple[str, str], str] = {}  # (kernel key, target) -> "" or why not
    found: dict[int, dict[int, str]] = {}
    kernels = list(dict.fromkeys(collected.kernel_keys))
    for u, (key, kernel) in enumerate(zip(collected.kernel_keys, collected.kernels)):
        if kernel is None:  # an external call: it runs where its function exists (costs say)
            continue
        for name, target in targets.items():
            if (key, name) not in outcome:
                cached_key = f"{tvm.__version__}|{name}|{tvm_ffi.structural_hash(kernel)}"
                why = cache.get(cached_key)
                if why is None:
                    if progress is not None:
                        progress(f"checking {key} builds for {target.kind.name}",
                                 kernels.index(key) / len(kernels))
                    try:
                        build_kernel(kernel, target)
                        why = ""
                    except Exception as err:  # noqa: BLE001 - any failure: the target cannot build it
                        why = _last_line(err)
                    cache.put(cached_key, why)
                outcome[(key, name)] = why
        for d, device in enumerate(devices):
            why = outcome[(key, str(device.target))]
            if why:
                found.setdefault(u, {})[d] = why
    return found
