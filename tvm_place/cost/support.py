"""Which kernels each target can build, so that a kernel one target cannot build is placed on a
device whose target can (what OpenVINO's HETERO plugin and ONNX Runtime's execution providers do
by a fixed priority, here by cost: the solvers choose among the devices left).

Each kernel is checked for each distinct target as its stage would build it
(:func:`tvm_place.passes.build.build_failures`: a GPU kernel needs a dlight schedule; the kernels
are built together, and alone only where that fails); the outcome is cached on disk beside the
measured costs, keyed by TVM version, target and the kernel's structural hash. Modules placed
on devices of one target are not checked: a kernel that target cannot build has nowhere else to
go, and the build says so.
"""

from __future__ import annotations

from typing import Sequence

import tvm
import tvm_ffi

from .measured import CostCache

#: The cache file (in the measured-cost cache directory) of kernels' build outcomes.
SUPPORT_FILE = "kernel-support.json"


def unbuildable(collected, devices: Sequence, cache_dir=None, progress=None) -> dict[int, dict[int, str]]:
    """``{operator: {device: why}}`` for every operator whose kernel a device's target cannot
    build (empty when all devices share one target). ``collected`` is a
    :class:`~tvm_place.passes.collect.CollectedGraph`; ``devices`` the resolved targets. The
    kernels the cache does not know are checked per target together
    (:func:`~tvm_place.passes.build.build_failures`: one build for all where all build)."""
    from tvm_place.passes.build import build_failures

    targets = {str(device.target): device.target for device in devices}
    if len(targets) < 2:
        return {}
    cache = CostCache(cache_dir, SUPPORT_FILE)
    kernels = {}  # kernel key -> kernel; external calls run where their function exists (costs say)
    for key, kernel in zip(collected.kernel_keys, collected.kernels):
        if kernel is not None:
            kernels.setdefault(key, kernel)
    hashes = {key: tvm_ffi.structural_hash(kernel) for key, kernel in kernels.items()}
    outcome: dict[tuple[str, str], str] = {}  # (kernel key, target) -> "" or why not
    for number, (name, target) in enumerate(targets.items()):
        cached_key = {key: f"{tvm.__version__}|{name}|{hashes[key]}" for key in kernels}
        known = {key: cache.get(cached_key[key]) for key in kernels}
        unknown = {key: kernels[key] for key, why in known.items() if why is None}
        if unknown:
            if progress is not None:
                progress(f"checking {len(unknown)} kernels build for {target.kind.name}",
                         number / len(targets))
            checked = build_failures(unknown, target)
            cache.put_many({cached_key[key]: why for key, why in checked.items()})
            known.update(checked)
        outcome.update({(key, name): why for key, why in known.items()})
    found: dict[int, dict[int, str]] = {}
    for u, key in enumerate(collected.kernel_keys):
        if key not in kernels:
            continue
        for d, device in enumerate(devices):
            why = outcome[(key, str(device.target))]
            if why:
                found.setdefault(u, {})[d] = why
    return found
