"""Targets as the user gives them, resolved into devices with profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import tvm

from .cost.profiles import (DeviceProfile, default_profile, device_profile, profile_for_arch,
                             profile_from_dict)
from .errors import InvalidTargetError

#: Target kinds tvm-place can place on, and the device kind each one is.
DEVICE_KIND_OF_TARGET = {"llvm": "cpu", "cuda": "gpu"}


@dataclass(frozen=True)
class TargetDevice:
    """One device of a placement: its TVM target, ``name`` (``cpu:0``, ``gpu:1``), and profile.

    ``index`` counts devices of the same kind, in the order given; it is the vdevice id and the
    runtime device id (``tvm.cpu(index)``, ``tvm.cuda(index)``). ``described``: the user gave its
    profile (a name, a device file's), so the profile, not this machine, says what the device is
    (the default cost model prices it as written).
    """

    target: tvm.target.Target
    kind: str
    index: int
    profile: DeviceProfile
    described: bool = False

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.index}"

    def runtime_device(self):
        return tvm.cpu(self.index) if self.kind == "cpu" else tvm.cuda(self.index)


def _target_config(item: Any) -> dict | tvm.target.Target:
    """The user's target item as a config dict (or the Target itself), checked for form."""
    if isinstance(item, tvm.target.Target):
        return item
    if isinstance(item, str):
        if " " in item.strip() or not item.strip():
            raise InvalidTargetError(
                f"target {item!r}: give a bare kind ('llvm', 'cuda'); TVM 0.27 rejects flags inside "
                "a target string: in Python give a dict, e.g. {'kind': 'llvm', 'num-cores': 2}; on "
                "the command line a device file (--devices FILE, whose target may be such a table)"
            )
        return {"kind": item.strip()}
    if isinstance(item, dict):
        if "kind" not in item:
            raise InvalidTargetError(f"target {item!r} has no 'kind'; e.g. {{'kind': 'cuda'}}")
        return dict(item)
    raise InvalidTargetError(
        f"target {item!r} is a {type(item).__name__}; give a target string such as 'llvm' or "
        "'cuda', a dict such as {'kind': 'cuda', 'arch': 'sm_80'}, or a tvm.target.Target"
    )


def _make_target(config: dict) -> tvm.target.Target:
    try:
        return tvm.target.Target(config)
    except Exception as err:  # TVM raises several error types for a bad target
        lines = str(err).strip().splitlines()
        raise InvalidTargetError(
            f"TVM cannot make a target of {config!r} ({lines[-1] if lines else type(err).__name__}); "
            "use 'llvm', 'cuda', or a dict such as {'kind': 'cuda', 'arch': 'sm_80'}"
        ) from None


def local_gpu_arch(index: int) -> str | None:
    """``sm_XY`` of this machine's CUDA GPU ``index``; None where there is none (or no driver)."""
    device = tvm.cuda(index)
    if not device.exist:
        return None
    return "sm_" + str(device.compute_version).replace(".", "")


def host_cpu() -> str | None:
    """LLVM's name of this machine's CPU (``znver3``, ``skylake-avx512``), None if unknown."""
    detect = tvm.get_global_func("target.llvm_get_system_cpu", allow_missing=True)
    name = str(detect()) if detect is not None else ""
    return None if name in ("", "generic") else name


def resolve_targets(
    targets: Sequence[Any], profiles: Sequence[str | None] | None = None
) -> list[TargetDevice]:
    """Turn the user's target list into devices.

    A repeated target is another device of that kind (``["llvm", "llvm"]`` is cpu:0 and cpu:1).
    ``profiles`` optionally names a device profile per target (or gives a ``DeviceProfile``, e.g.
    from a device file); otherwise a CUDA target's ``arch``
    picks the GPU of that architecture, and each kind has a default (see ``devices.json``). A CUDA
    target without an ``arch`` (and without a profile) gets the architecture of this machine's GPU
    of that index when there is one, else its profile's, so TVM does not fall back to sm_50. An
    llvm target without ``mcpu`` or ``mtriple`` is compiled for this machine's CPU
    (:func:`host_cpu`); give ``{"kind": "llvm", "mcpu": "x86-64"}`` for portable CPU code.
    """
    if isinstance(targets, (str, dict, tvm.target.Target)):
        raise InvalidTargetError(
            f"targets must be a list, e.g. ['llvm', 'cuda']; got a single {type(targets).__name__}"
        )
    targets = list(targets)
    if not targets:
        raise InvalidTargetError("the target list is empty; give at least one, e.g. ['llvm']")
    if profiles is not None and len(profiles) != len(targets):
        raise InvalidTargetError(
            f"{len(profiles)} profiles for {len(targets)} targets; give one per target (or None)"
        )
    devices = []
    counts: dict[str, int] = {}
    for position, item in enumerate(targets):
        config = _target_config(item)
        if isinstance(config, tvm.target.Target):
            kind_name = config.kind.name
            arch = str(config.attrs["arch"]) if "arch" in config.attrs else None
        else:
            kind_name, arch = str(config["kind"]), config.get("arch")
        if kind_name not in DEVICE_KIND_OF_TARGET:
            if isinstance(config, dict):
                _make_target(config)  # a kind TVM does not know gets TVM's own diagnosis first
            raise InvalidTargetError(
                f"target {position} is of kind {kind_name!r}; tvm-place places on "
                f"{sorted(DEVICE_KIND_OF_TARGET)} targets"
            )
        profile_name = profiles[position] if profiles is not None else None
        if kind_name == "cuda" and arch is None and profile_name is None and isinstance(config, dict):
            # Where a GPU is present, TVM compiles the CUDA code for the target's arch when it
            # builds, and a cubin for another one does not load (sm_80 on an H100:
            # CUDA_ERROR_NO_BINARY_FOR_GPU), so this machine's GPU sets the default.
            arch = local_gpu_arch(counts.get("gpu", 0))
            if arch is not None:
                config["arch"] = arch
        if kind_name == "llvm" and isinstance(config, dict) and not {"mcpu", "mtriple"} & set(config):
            # TVM's plain llvm target is generic x86-64 (128-bit SSE): ResNet-50's heaviest conv,
            # tuned with 32 trials, ran in 11.2 ms for it and 4.1 ms for this host's CPU (znver3).
            # Kernels run on this machine, so they are compiled for its CPU, as -march=native.
            host = host_cpu()
            if host is not None:
                config["mcpu"] = host
        if profile_name is None and arch is not None:
            profile_name = profile_for_arch(arch)
        if isinstance(profile_name, DeviceProfile):
            profile = profile_name
        elif isinstance(profile_name, Mapping):  # a plan's record of a device file's profile
            fields = {k: v for k, v in profile_name.items() if k != "name"}
            profile = profile_from_dict(str(profile_name.get("name", f"profile {position}")), fields)
        else:
            profile = device_profile(profile_name or default_profile(kind_name))
        kind = DEVICE_KIND_OF_TARGET[kind_name]
        if profile.kind != kind:
            raise InvalidTargetError(
                f"profile {profile.name!r} describes a {profile.kind}, but target {position} "
                f"({kind_name}) is a {kind}"
            )
        if isinstance(config, tvm.target.Target):
            target = config
        else:
            if kind_name == "cuda" and arch is None:
                if profile.arch is None:
                    raise InvalidTargetError(
                        f"target {position} (cuda) names no architecture and neither does its "
                        f"profile {profile.name!r}; give one, e.g. {{'kind': 'cuda', 'arch': "
                        "'sm_80'}, or 'arch' in the profile"
                    )
                config["arch"] = profile.arch
            target = _make_target(config)
        index = counts.get(kind, 0)
        counts[kind] = index + 1
        devices.append(TargetDevice(target, kind, index, profile,
                                    described=profiles is not None and profiles[position] is not None))
    return devices
