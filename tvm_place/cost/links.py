"""Links priced as they run: transfer times measured between attached workers, fitted as
latency + bytes / bandwidth per device, written into a problem's link model.

The problem's link model (:mod:`tvm_place.graph`) charges a copy of ``u``'s output from ``d`` to
``e`` as ``transfer_time[u, d]`` on the sender and ``transfer_time[u, e]`` on the receiver. The
runtime measures these two halves of each probe copy as a run pays them (the sender's export,
timed on the worker; the rest of the copy until the receiving call has its value: the engine's
dispatch and lookup, the receiver's import), so a device's link is fitted on the halves it paid,
as sender and as receiver, over all its partners.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..graph import PlacementProblem
from .profiles import LinkProfile

#: Probe sizes in bytes (1 KB to 64 MB): from latency-bound to bandwidth-bound copies.
PROBE_SIZES = (1 << 10, 1 << 16, 1 << 20, 1 << 24, 1 << 26)


@dataclass(frozen=True)
class LinkSample:
    """One probe copy: ``size`` bytes from device ``source`` to device ``destination``, with the
    seconds the sender spent (``send``) and the seconds from then until the receiver had the
    value (``receive``)."""

    source: int
    destination: int
    size: int
    send: float
    receive: float


def fit_link(sizes: Sequence[float], seconds: Sequence[float], name: str = "measured") -> LinkProfile:
    """Least-squares ``latency + size / bandwidth`` through the samples (both terms kept
    non-negative; a flat fit gets an effectively infinite bandwidth)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    seconds = np.asarray(seconds, dtype=np.float64)
    design = np.stack([np.ones_like(sizes), sizes], axis=1)
    # Weighted by 1/seconds so the small copies' latency counts as much as the big copies' time.
    weight = 1.0 / np.maximum(seconds, 1e-6)
    (latency, per_byte), *_ = np.linalg.lstsq(design * weight[:, None], seconds * weight, rcond=None)
    if per_byte <= 0:
        per_byte = 1e-15
    if latency < 0:
        latency = 0.0
        per_byte = float(np.sum(seconds * sizes * weight**2) / np.sum(sizes**2 * weight**2))
    return LinkProfile(name=name, bandwidth_gbs=1.0 / per_byte / 1e9, latency_us=latency * 1e6,
                       description="fitted to copies measured between the attached workers")


def fit_device_links(samples: Sequence[LinkSample], num_devices: int) -> dict[int, LinkProfile]:
    """Per device that took part in a probe: its link, fitted on the mean of its send and receive
    halves at each size (the model charges a device the same time for either half, so a copy
    ``d -> e`` is priced ``(send_d + receive_d + send_e + receive_e) / 2``: exact for symmetric
    pairs)."""
    halves: dict[tuple[int, int], dict[str, list[float]]] = {}
    for sample in samples:
        halves.setdefault((sample.source, sample.size), {"send": [], "receive": []})["send"].append(sample.send)
        halves.setdefault((sample.destination, sample.size), {"send": [], "receive": []})["receive"].append(sample.receive)
    points: dict[int, list[tuple[int, float]]] = {}
    for (d, size), taken in sorted(halves.items()):
        means = [float(np.mean(taken[side])) for side in ("send", "receive") if taken[side]]
        points.setdefault(d, []).append((size, float(np.mean(means))))
    return {
        d: fit_link([s for s, _ in pts], [t for _, t in pts], name=f"measured-{d}")
        for d, pts in points.items() if 0 <= d < num_devices
    }


def with_links(problem: PlacementProblem, links: dict[int, LinkProfile],
               call_overheads: dict[int, float] | None = None) -> PlacementProblem:
    """``problem`` with the transfer times of the devices in ``links`` priced by those links,
    and the devices in ``call_overheads`` starting each stage at that cost."""
    output_bytes = np.array([node.output_bytes for node in problem.graph.nodes], dtype=np.float64)
    transfer = problem.transfer_time.copy()
    for d, link in links.items():
        transfer[:, d] = link.transfer_seconds(output_bytes)
    devices = [dataclasses.replace(device, call_overhead=float((call_overheads or {}).get(d, device.call_overhead)))
               for d, device in enumerate(problem.devices)]
    return dataclasses.replace(problem, transfer_time=transfer, devices=devices)


def format_links(links: dict[int, LinkProfile], device_names: Sequence[str],
                 call_overheads: dict[int, float] | None = None) -> str:
    lines = ["links measured between the attached workers (each device's half of a copy):"]
    for d, link in links.items():
        started = (f"; {call_overheads[d] * 1e3:.2f} ms to start a stage"
                   if call_overheads and d in call_overheads else "")
        lines.append(f"  {device_names[d]:<8} latency {link.latency_us:9.1f} us, bandwidth "
                     f"{link.bandwidth_gbs:7.3f} GB/s (16 MB: {link.transfer_seconds(1 << 24) * 1e3:.2f} ms)"
                     + started)
    return "\n".join(lines)
