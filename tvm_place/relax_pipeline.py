"""``tvm_place.pipeline``: placement as a Relax pipeline that TVM itself runs (a module named
``relax_pipeline``, after ``tvm.compile``'s argument, so it does not shadow the function).

>>> ex = tvm.compile(mod, relax_pipeline=tvm_place.pipeline(["llvm", "cuda"]))
>>> vm = relax.VirtualMachine(ex, tvm_place.devices_of(ex))   # [tvm.cpu(0), tvm.cuda(0)]
>>> out = vm["main"](x)

The result is one multi-device executable, TVM's native form of heterogeneous execution (the
module's ``"vdevice"`` list, ``R.to_vdevice`` copies, each PrimFunc built for its device's target),
beside the per-target artifacts of :func:`tvm_place.compile`. Both place the same way: the same
lowering, costs and solver, so the same options give the same placement.

``relax_pipeline`` *replaces* ``tvm.compile``'s default Relax pipeline, so the pass also runs the
lowering that pipeline would (legalization, fusion, GPU schedules, VM lowering): pass it alone,
or inside a ``tvm.transform.Sequential`` after passes of your own (they see the high-level
module) and before passes that expect a VM-lowered module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import tvm
from tvm import relax

from .errors import InvalidPlacementError, InvalidTargetError, TvmPlaceError
from .graph import Placement
from .options import PlaceOptions

#: The options an IRModule attribute ``"tvm_place.<name>"`` (e.g. ``mod.with_attr(
#: "tvm_place.objective", "throughput")``) or, where TVM allows it, a PassContext config entry of
#: the same name may set: ``targets`` and placement options
#: (:class:`~tvm_place.options.PlaceOptions`) that are plain data.
OPTIONS = ("targets", "objective", "method", "time_limit", "cost_model", "profiles", "pins",
           "database", "shape_hints")

#: Prefix of the IRModule attributes and PassContext config keys the pass reads.
CONFIG_PREFIX = "tvm_place."


def _plain(value: Any) -> Any:
    """A TVM attribute value (String, IntImm, FloatImm, Array, Map) as plain Python data."""
    if value is None or isinstance(value, (str, bool, int, float, tvm.target.Target)):
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "value"):  # IntImm, FloatImm, StringImm
        return value.value
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value


def _context_options() -> dict[str, Any]:
    """``tvm_place.*`` entries of the current PassContext config.

    TVM 0.27 rejects unregistered config keys when a PassContext is made, and registers keys
    only from C++ (``TVM_REGISTER_PASS_CONFIG_OPTION``; no FFI function does it), so a plain
    ``PassContext(config={"tvm_place.objective": ...})`` fails with "Invalid config option". The
    pass still reads such entries, for TVM builds that register them; in 0.27 give options as
    arguments or as IRModule attributes.
    """
    config = tvm.transform.PassContext.current().config
    return {
        str(key)[len(CONFIG_PREFIX):]: _plain(value)
        for key, value in config.items()
        if str(key).startswith(CONFIG_PREFIX)
    }


def _module_options(mod: tvm.IRModule) -> dict[str, Any]:
    attrs = mod.attrs
    if attrs is None:
        return {}
    return {
        str(key)[len(CONFIG_PREFIX):]: _plain(attrs[key])
        for key in attrs.keys()
        if str(key).startswith(CONFIG_PREFIX)
    }


def _cost_model(value: Any):
    """A cost model from an option value: a snapshot file's path becomes a Snapshot."""
    from .cost import Snapshot

    if isinstance(value, Path) or (isinstance(value, str) and value.endswith(".json")):
        return Snapshot(value)
    return value


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.Pipeline")
class PlacementPipeline:
    """Place ``main``'s operators on several devices and lower the module for ``tvm.compile``.

    Reads: a Relax module with a ``main`` (high-level Relax operators, or already legalized and
    fused ones); options as arguments, else IRModule attributes ``tvm_place.<option>``, else
    PassContext config ``tvm_place.<option>`` where TVM allows it (not in 0.27, see
    :func:`_context_options`), else :class:`~tvm_place.options.PlaceOptions`' defaults.

    Does, in order: tvm-place's lowering to fused TIR operators (``passes.prepare_pipeline``),
    cost and solve (as :func:`tvm_place.compile` does), ``AnnotatePlacement`` (the module's
    ``"vdevice"`` list: one per target, in target order), ``SplitByDevice`` and inlining (one
    ``R.to_vdevice`` per value and destination device), constants copied to the device that reads
    them, each PrimFunc bound to its device's target, dlight schedules for GPU kernels, and TVM's
    VM lowering (see ``passes.multi_device``).

    Writes: a VM-lowered module, plus a Relax function ``tvm_place_devices`` that returns the device
    order as JSON (:func:`devices_of` reads it from the executable).

    After it ran, the pass object holds what it decided: :attr:`placement`, :attr:`problem` (the
    costs used: save them with ``tvm_place.cost.Snapshot.save``), :attr:`devices` (tvm runtime
    devices, in the order ``relax.VirtualMachine`` needs) and :meth:`report`.
    """

    def __init__(self, targets=None, options: PlaceOptions | None = None, progress: bool = False,
                 **keywords):
        given = {name: value for name, value in keywords.items() if value is not None}
        checked = PlaceOptions.of(options, **given)  # unknown names and bad values fail here
        if checked.entry != "main" or checked.entries is not None:
            raise TvmPlaceError(
                "tvm_place.pipeline places main only (one multi-device VM function); place other "
                "or several entry functions with tvm_place.compile(mod, targets, entry=...)"
            )
        # What the user chose: an options object settles every option, keywords only theirs.
        self.options = given if options is None else checked.as_dict()
        if targets is not None:
            self.options["targets"] = targets
        self.progress = progress
        self.placed = None
        self.placement: Placement | None = None
        self.problem = None
        self.devices: list | None = None
        self._report = None

    def resolved_options(self, mod: tvm.IRModule) -> dict[str, Any]:
        """The options this pass uses on ``mod``: arguments, then module attributes, then the
        PassContext config, then defaults."""
        resolved = {"targets": None, **PlaceOptions().as_dict()}
        for source in (_context_options(), _module_options(mod)):
            resolved.update((name, value) for name, value in source.items()
                            if name in OPTIONS and value is not None)
        resolved.update(self.options)
        if resolved["targets"] is None:
            raise InvalidTargetError(
                "tvm_place.pipeline needs targets: tvm_place.pipeline(['llvm', 'cuda']), or a "
                "module attribute 'tvm_place.targets'"
            )
        resolved["time_limit"] = float(resolved["time_limit"])
        return resolved

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from .compiler import _progress_printer, place, tuning_database
        from .passes import AnnotatePlacement, SplitByDevice
        from .passes.multi_device import (
            add_device_record,
            bind_prim_func_targets,
            copy_constants,
            inline_stages,
            multi_device_lowering,
        )
        from .passes._ir import TO_VDEVICE, bindings, is_call_to
        from .passes.split import DEVICE_ATTR
        from .report import format_report

        options = self.resolved_options(mod)
        database = None if options["database"] is None else tuning_database(options["database"])
        placed = place(
            mod,
            options.pop("targets"),
            PlaceOptions.of(**options).replace(cost_model=_cost_model(options["cost_model"]),
                                               database=database),
            progress=_progress_printer(self.progress),
        )
        if placed.placement.replicas:
            raise InvalidPlacementError(
                f"the placement replicates operators over device groups {placed.placement.replicas} "
                f"(method {placed.placement.method!r}); one VM module runs one input at a time, so "
                "replicas need tvm_place.compile's runtime: use it, or another method here"
            )
        targets = [d.target for d in placed.devices]
        split = tvm.transform.Sequential(
            [AnnotatePlacement(placed.placement.device_of, targets), SplitByDevice(placed.placement.order)]
        )(placed.prepared)
        num_stages = sum(
            1 for _, f in split.functions_items() if DEVICE_ATTR in (getattr(f, "attrs", None) or {})
        )
        flat = inline_stages(split)
        num_copies = sum(1 for b in bindings(flat["main"]) if is_call_to(b.value, TO_VDEVICE))
        flat = bind_prim_func_targets(copy_constants(flat))
        record = {
            "format": "tvm-place-devices",
            "devices": [
                {"name": d.name, "kind": d.kind, "index": d.index, "target": str(d.target.kind.name)}
                for d in placed.devices
            ],
            "objective": placed.placement.objective,
            "value": placed.placement.value,
            "method": placed.placement.method,
        }
        lowered = tvm.transform.Sequential(multi_device_lowering(targets, database))(flat)
        self.placed = placed
        self.placement = placed.placement
        self.problem = placed.problem
        self.devices = [d.runtime_device() for d in placed.devices]
        self._report = format_report(
            placed.problem, placed.placement, placed.cost_sources, num_stages, num_copies,
            placed.shape_values, placed.fallbacks,
        )
        return add_device_record(lowered, record)

    def report(self) -> str:
        """The placement report (as ``PlacedModule.report()``) of the last module placed."""
        if self._report is None:
            raise TvmPlaceError("the pipeline has not run yet: pass it to tvm.compile first")
        return self._report


def pipeline(
    targets: Sequence[Any] | None = None,
    options: PlaceOptions | None = None,
    *,
    progress: bool = False,
    **keywords,
) -> tvm.transform.Pass:
    """A Relax pipeline for ``tvm.compile(mod, relax_pipeline=...)`` that places ``main``'s
    operators on ``targets`` and lowers the module into one multi-device executable.

    The options are those of :func:`tvm_place.compile`, as one
    :class:`~tvm_place.options.PlaceOptions` (``options=``: it settles every option) or as
    keywords (``objective="throughput"``, which override it). An option not given comes from the
    module attribute ``tvm_place.<option>`` where :data:`OPTIONS` allows one, else the default.
    ``progress``: print progress on stderr.

    ``targets``: list of target strings, dicts or ``tvm.target.Target``; position ``i`` is
    vdevice ``i`` and must be device ``i`` of ``relax.VirtualMachine(ex, devices)``
    (``devices_of(ex)`` returns that list). A repeated kind is another device: ``["llvm",
    "llvm"]`` runs on ``[tvm.cpu(0), tvm.cpu(1)]``. ``cost_model``: as :func:`tvm_place.compile`'s,
    or the path of a cost snapshot's .json file (what a module attribute can hold).

    The target given to ``tvm.compile`` itself may be omitted (each kernel carries its own); if
    given, it only sets the host target. Weights read on a device other than the first are copied
    there at every call (TVM 0.27's VM loads all constants onto its first device), so list the
    device that holds most weights first when that matters.

    The returned pass keeps what it decided: ``p.placement``, ``p.problem``, ``p.devices``,
    ``p.report()``.
    """
    return PlacementPipeline(targets, options, progress=progress, **keywords)


def device_record(ex) -> dict:
    """The device record a :func:`pipeline` build wrote into executable ``ex`` (a built executable,
    or a module loaded from its exported library): ``devices`` (name, kind, index, target kind, in
    VM order), ``objective``, ``value``, ``method``."""
    from .passes.multi_device import read_device_record

    executable = ex if isinstance(ex, relax.VMExecutable) else relax.VMExecutable(ex)
    record = read_device_record(executable)
    if record is None:
        raise TvmPlaceError(
            "the executable has no tvm-place device record: it was not built with "
            "tvm.compile(mod, relax_pipeline=tvm_place.pipeline(...))"
        )
    return record


def devices_of(ex) -> list:
    """The devices ``relax.VirtualMachine(ex, devices)`` needs for an executable built with
    :func:`pipeline`, in order: ``[tvm.cpu(0), tvm.cuda(0)]`` for targets ``["llvm", "cuda"]``."""
    devices = []
    for device in device_record(ex)["devices"]:
        make = tvm.cpu if device["kind"] == "cpu" else tvm.cuda
        devices.append(make(int(device["index"])))
    return devices
