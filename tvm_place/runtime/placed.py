"""PlacedModule: run the per-target artifacts of a split module, one input at a time (latency mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tvm
from tvm import relax

from ..errors import TvmPlaceError
from ..graph import FORMAT_VERSION, Placement

MANIFEST = "manifest.json"


class DeviceUnavailableError(TvmPlaceError, RuntimeError):
    """A stage's device does not exist on this machine."""


def runtime_device(kind: str, index: int):
    return tvm.cpu(index) if kind == "cpu" else tvm.cuda(index)


class PlacedModule:
    """A placed, compiled model: stage executables, the plan that joins them, and the placement.

    ``placed(*inputs)`` runs one input through the stages in plan order, copying values between
    devices exactly where the plan says; inputs may be NumPy arrays or TVM tensors, outputs are TVM
    tensors (a tuple when the model returns several). ``devices`` is a list of dicts with ``name``,
    ``kind`` and ``index`` per placement device.
    """

    def __init__(
        self,
        plan,
        executables: dict[str, Any],
        devices: Sequence[dict],
        placement: Placement | None = None,
        report_text: str = "",
        problem=None,
        split_module=None,
    ):
        self.plan = plan
        self.executables = dict(executables)
        self.devices = [dict(d) for d in devices]
        self.placement = placement
        self._report_text = report_text
        #: The PlacementProblem and the split IRModule, when built in this process (not loaded).
        self.problem = problem
        self.split_module = split_module
        self._vms: dict[str, relax.VirtualMachine] = {}

    def _device(self, index: int):
        spec = self.devices[index]
        device = runtime_device(spec["kind"], spec["index"])
        if not device.exist:
            raise DeviceUnavailableError(
                f"the placement runs a stage on {spec['name']}, which this machine does not have; "
                "the artifacts can be built and exported here, but run them where that device "
                "exists (or place on the devices you have, e.g. ['llvm', 'llvm'])"
            )
        return device

    def _vm(self, stage: str, device_index: int) -> relax.VirtualMachine:
        if stage not in self._vms:
            self._vms[stage] = relax.VirtualMachine(self.executables[stage], self._device(device_index))
        return self._vms[stage]

    def __call__(self, *inputs):
        if len(inputs) != len(self.plan.inputs):
            raise TypeError(
                f"the model takes {len(self.plan.inputs)} inputs ({self.plan.inputs}), "
                f"got {len(inputs)}"
            )
        host = self._device(0)
        values: dict[str, Any] = {}
        for name, value in zip(self.plan.inputs, inputs):
            values[name] = tvm.runtime.tensor(np.asarray(value), host) if isinstance(value, np.ndarray) else value
        for step in self.plan.steps:
            if step["kind"] == "copy":
                values[step["result"]] = values[step["source"]].copyto(self._device(step["device"]))
            else:
                results = self._vm(step["stage"], step["device"])["main"](
                    *[values[name] for name in step["args"]]
                )
                for name, result in zip(step["outputs"], results):
                    values[name] = result
        outputs = tuple(values[name] for name in self.plan.outputs)
        return outputs if self.plan.output_is_tuple else outputs[0]

    def report(self) -> str:
        """Which operator runs where, predicted time per device, copies, bound and gap."""
        return self._report_text

    # -- artifacts ----------------------------------------------------------------------------
    def export(self, directory: str | Path) -> Path:
        """Write one shared library per stage and a manifest that :meth:`load` reads back."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        libraries = {}
        for stage, executable in self.executables.items():
            library = f"{stage}.so"
            executable.export_library(str(directory / library))
            libraries[stage] = library
        manifest = {
            "format": "tvm-place-artifacts",
            "version": FORMAT_VERSION,
            "tvm_version": tvm.__version__,
            "devices": self.devices,
            "plan": self.plan.to_dict(),
            "libraries": libraries,
            "placement": None if self.placement is None else self.placement.to_dict(),
            "report": self._report_text,
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PlacedModule":
        """Load artifacts written by :meth:`export`."""
        from tvm_place.passes.build import StagePlan

        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
        except FileNotFoundError:
            raise TvmPlaceError(
                f"{directory} has no {MANIFEST}: it is not a directory written by PlacedModule.export"
            ) from None
        except json.JSONDecodeError as err:
            raise TvmPlaceError(f"{directory / MANIFEST} is not valid JSON ({err.msg})") from None
        if manifest.get("format") != "tvm-place-artifacts" or manifest.get("version") != FORMAT_VERSION:
            raise TvmPlaceError(
                f"{directory / MANIFEST} is not a tvm-place artifact manifest of version "
                f"{FORMAT_VERSION}; re-export it with this tvm-place"
            )
        executables = {
            stage: tvm.runtime.load_module(str(directory / library))
            for stage, library in manifest["libraries"].items()
        }
        placement = manifest.get("placement")
        return cls(
            plan=StagePlan.from_dict(manifest["plan"]),
            executables=executables,
            devices=manifest["devices"],
            placement=None if placement is None else Placement.from_dict(placement),
            report_text=manifest.get("report", ""),
        )
