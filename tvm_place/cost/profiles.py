"""Device and link profiles: the hardware facts the analytical cost model reads, kept as data.

The numbers live in ``profiles/devices.json`` (one place per fact); this module loads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import schemas
from ..errors import InvalidTargetError

PROFILE_FILE = Path(__file__).parent / "profiles" / "devices.json"


@dataclass(frozen=True)
class LinkProfile:
    name: str
    bandwidth_gbs: float
    latency_us: float
    description: str = ""

    def transfer_seconds(self, num_bytes: float) -> float:
        """Time to move ``num_bytes`` over this link (latency + bytes / bandwidth)."""
        return self.latency_us * 1e-6 + num_bytes / (self.bandwidth_gbs * 1e9)


@dataclass(frozen=True)
class ClassFigures:
    """One operator class's figures in a profile; None: the profile's own figure."""

    compute_efficiency: float | None = None
    memory_efficiency: float | None = None
    launch_overhead_us: float | None = None


@dataclass(frozen=True)
class DeviceProfile:
    """A device's hardware facts. ``operator_classes`` (optional, e.g. from ``tvm-place
    calibrate``) gives some operator classes (:data:`tvm_place.schemas.OPERATOR_CLASSES`) their
    own efficiencies and launch overhead, as ``(class, figures)`` pairs."""

    name: str
    kind: str
    peak_gflops: float
    memory_bandwidth_gbs: float
    memory_bytes: float
    compute_efficiency: float
    memory_efficiency: float
    launch_overhead_us: float
    link: LinkProfile
    arch: str | None = None
    description: str = ""
    operator_classes: tuple[tuple[str, ClassFigures], ...] = ()

    def figures(self, op_class: str) -> tuple[float, float, float]:
        """``(compute efficiency, memory efficiency, launch overhead in us)`` for an operator of
        class ``op_class``: the class's own figures where the profile gives them, else the
        profile's."""
        own = dict(self.operator_classes).get(op_class, ClassFigures())
        return tuple(default if mine is None else mine for mine, default in (
            (own.compute_efficiency, self.compute_efficiency),
            (own.memory_efficiency, self.memory_efficiency),
            (own.launch_overhead_us, self.launch_overhead_us)))


@lru_cache(maxsize=1)
def _profile_data() -> dict:
    return json.loads(PROFILE_FILE.read_text())


def link_profile(name: str) -> LinkProfile:
    links = _profile_data()["links"]
    if name not in links:
        raise InvalidTargetError(schemas.unknown_name("link profile", name, links))
    entry = links[name]
    return LinkProfile(name, entry["bandwidth_gbs"], entry["latency_us"], entry.get("description", ""))


def device_profile(name: str) -> DeviceProfile:
    """The profile called ``name`` (see :func:`profile_names`)."""
    devices = _profile_data()["devices"]
    if name not in devices:
        raise InvalidTargetError(schemas.unknown_name("device profile", name, devices))
    return profile_from_dict(name, devices[name])


#: The fields a device profile must give (``devices.json`` or a user's device file).
PROFILE_FIELDS = schemas.PROFILE_FIELDS


def profile_from_dict(name: str, entry: Mapping, source: str | None = None,
                      prefix: tuple = ()) -> DeviceProfile:
    """A profile from its fields, checked against :data:`tvm_place.schemas.PROFILE` (no unknown
    keys, positive peaks and bandwidths, efficiencies in (0, 1]); ``link`` is a link profile's
    name or a dict with ``bandwidth_gbs`` and ``latency_us``. ``source`` names the data in
    errors (default: the profile's name), ``prefix`` the path to it there."""
    source = source or f"device profile {name!r}"
    schemas.validate(entry, schemas.PROFILE, source, InvalidTargetError, prefix)
    link = entry["link"]
    if isinstance(link, Mapping):
        schemas.validate(link, schemas.LINK, source, InvalidTargetError, (*prefix, "link"))
        link = LinkProfile(f"{name}-link", float(link["bandwidth_gbs"]), float(link["latency_us"]),
                           link.get("description", ""))
    else:
        link = link_profile(link)
    numbers = {key: float(entry[key]) for key in PROFILE_FIELDS[1:-1]}
    classes = tuple((op_class, ClassFigures(**{key: float(value) for key, value in figures.items()}))
                    for op_class, figures in sorted(entry.get("operator_classes", {}).items()))
    return DeviceProfile(name=name, kind=entry["kind"], link=link, arch=entry.get("arch"),
                         description=entry.get("description", ""), operator_classes=classes,
                         **numbers)


def profile_to_dict(profile: DeviceProfile) -> dict:
    """The fields of ``profile`` as :func:`profile_from_dict` reads them (its link as a dict)."""
    fields = {key: getattr(profile, key) for key in PROFILE_FIELDS[:-1]}
    fields["link"] = {"bandwidth_gbs": profile.link.bandwidth_gbs, "latency_us": profile.link.latency_us}
    if profile.arch is not None:
        fields["arch"] = profile.arch
    if profile.operator_classes:
        fields["operator_classes"] = {
            op_class: {key: value for key, value in vars(figures).items() if value is not None}
            for op_class, figures in profile.operator_classes}
    return fields


def profile_names() -> list[str]:
    return sorted(_profile_data()["devices"])


def default_profile(target_kind: str) -> str:
    """The profile a target kind gets when the user names none (``llvm`` -> this machine's CPU)."""
    defaults = _profile_data()["default_profile"]
    if target_kind not in defaults:
        raise InvalidTargetError(
            f"tvm-place has no device profile for target kind {target_kind!r}; supported kinds: "
            f"{sorted(defaults)}"
        )
    return defaults[target_kind]


def profile_for_arch(arch: str) -> str | None:
    """The GPU profile whose architecture is ``arch`` (e.g. ``sm_80`` -> ``a100``), if any."""
    for name, entry in sorted(_profile_data()["devices"].items()):
        if entry.get("arch") == arch:
            return name
    return None
