"""Tuned schedules from a MetaSchedule database: read, applied to the kernels a stage will run.

A :class:`TuningDatabase` is a directory holding one MetaSchedule JSON database per TVM version
and target (MetaSchedule's own query ignores the target, so targets must not share one).
:class:`ApplyTunedSchedules` is the pass that reads it: every PrimFunc with a tuning record gets
the record's schedule and ``tirx.is_scheduled``; the others are left as they are and named in
:attr:`ApplyTunedSchedules.untuned` so that the build can warn about them.

A kernel is looked up by its *workload*: the PrimFunc without its ``target`` and
``global_symbol`` attributes, as ``main`` of its own module. :func:`workload` is the one
definition, used when tuning, compiling and costing, so the three always agree.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import tvm

#: PrimFunc attributes that say where or under which name a kernel is built, not what it computes.
PLACEMENT_ATTRS = ("target", "global_symbol")

#: Target fields that change the code a schedule produces; the rest of the export is hashed.
TARGET_KEY_FIELDS = ("mcpu", "mtriple", "arch", "num-cores")


def workload(prim_func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The module MetaSchedule tunes and looks up for ``prim_func``."""
    for attr in PLACEMENT_ATTRS:
        if prim_func.attrs is not None and attr in prim_func.attrs:
            prim_func = prim_func.without_attr(attr)
    return tvm.IRModule({"main": prim_func.with_attr("global_symbol", "main")})


def target_key(target: tvm.target.Target) -> str:
    """A directory name for ``target``: readable fields, then a hash of its whole export."""
    export = target.export()
    fields = [str(target.kind.name)] + [
        f"{name}={export[name]}" for name in TARGET_KEY_FIELDS if export.get(name) not in (None, "", -1)
    ]
    digest = hashlib.sha256(json.dumps(export, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", "-".join(fields)) + "-" + digest


class TuningDatabase:
    """Tuning records of several targets under one directory (created on first write)."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self._databases: dict[str, object] = {}

    def path(self, target: tvm.target.Target) -> Path:
        return self.directory / f"tvm-{tvm.__version__}" / target_key(target)

    def for_target(self, target: tvm.target.Target):
        """The MetaSchedule ``JSONDatabase`` of ``target`` (files created if absent)."""
        from tvm.s_tir import meta_schedule as ms

        key = target_key(target)
        if key not in self._databases:
            path = self.path(target)
            path.mkdir(parents=True, exist_ok=True)
            self._databases[key] = ms.database.JSONDatabase(work_dir=str(path))
        return self._databases[key]

    def has_records(self, target: tvm.target.Target) -> bool:
        return (self.path(target) / "database_tuning_record.json").is_file()

    def record(self, prim_func: tvm.tirx.PrimFunc, target: tvm.target.Target):
        """The best tuning record of ``prim_func`` on ``target``, or None."""
        if not self.has_records(target):
            return None
        database = self.for_target(target)
        module = workload(prim_func)
        if not database.has_workload(module):
            return None
        return database.query_tuning_record(module, target, "main")

    def record_count(self, prim_func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> int:
        """How many schedules of ``prim_func`` on ``target`` the database holds records of,
        failed measurements included (each search that ran adds some)."""
        if not self.has_records(target):
            return 0
        database = self.for_target(target)
        module = workload(prim_func)
        if not database.has_workload(module):
            return 0
        # Not get_top_k(w, huge): TVM reserves top_k slots up front (2^30 is 16 GiB).
        key = database.commit_workload(module)
        return sum(1 for record in database.get_all_tuning_records() if record.workload.same_as(key))

    def seconds(self, prim_func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> float | None:
        """The measured run time of ``prim_func``'s best tuned schedule, or None."""
        record = self.record(prim_func, target)
        if record is None or not record.run_secs:
            return None
        return float(sum(float(s) for s in record.run_secs) / len(record.run_secs))

    def schedule(self, prim_func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tvm.tirx.PrimFunc | None:
        """``prim_func`` with its best tuned schedule and its own attributes, or None."""
        if self.record(prim_func, target) is None:
            return None
        schedule = self.for_target(target).query_schedule(workload(prim_func), target, "main")
        if schedule is None:
            return None
        scheduled = schedule.mod["main"].without_attr("global_symbol")
        for attr in PLACEMENT_ATTRS:
            if prim_func.attrs is not None and attr in prim_func.attrs:
                scheduled = scheduled.with_attr(attr, prim_func.attrs[attr])
        return scheduled.with_attr("tirx.is_scheduled", True)


@tvm.transform.module_pass(opt_level=0, name="tvm_place.ApplyTunedSchedules")
class ApplyTunedSchedules:
    """Give every PrimFunc that ``database`` has tuned for ``target`` its tuned schedule.

    Reads: the module's PrimFuncs. Writes: the tuned ones replaced by their scheduled form
    (``tirx.is_scheduled`` set, so dlight and later passes leave them alone). A kernel's target is
    its ``target`` attribute, else ``target``. With ``database=None`` nothing changes. After the pass,
    :attr:`tuned` and :attr:`untuned` name the PrimFuncs of each kind (already-scheduled ones
    count as tuned).
    """

    def __init__(self, database: TuningDatabase | None, target: tvm.target.Target | None = None):
        self.database = database
        self.target = target
        self.tuned: list[str] = []
        self.untuned: list[str] = []

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        self.tuned, self.untuned = [], []
        functions = {}
        for global_var, func in mod.functions_items():
            functions[global_var] = func
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
                self.tuned.append(global_var.name_hint)
                continue
            target = func.attrs["target"] if func.attrs is not None and "target" in func.attrs else self.target
            scheduled = None if self.database is None else self.database.schedule(func, target)
            if scheduled is None:
                self.untuned.append(global_var.name_hint)
            else:
                functions[global_var] = scheduled
                self.tuned.append(global_var.name_hint)
        # A new module: IRModule.__setitem__ would change the caller's module in place.
        return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


#: Untuned over tuned latency of ResNet-50 (batch 1) on llvm for the host CPU, 32 MetaSchedule
#: trials per kernel, on the 2-core development machine: 4,509 ms vs 216 ms
#: (scripts/bench_tuning.py, docs/benchmarks.md).
UNTUNED_CPU_SLOWDOWN = 4.5086 / 0.2161
#: dlight's default GPU schedules against PyTorch eager: ResNet-50 on an H100, 5.0 ms vs 3.6 ms
#: (measured in the previous session on an H100; docs/gpu-results.md).
DLIGHT_VS_EAGER_GPU = 5.0 / 3.6


def expected_slowdown(kind: str) -> str:
    """What an untuned kernel of target ``kind`` costs, as measured here."""
    if kind == "cuda":
        return (f"they get dlight's default GPU schedules (ResNet-50 with them ran "
                f"{DLIGHT_VS_EAGER_GPU:.1f}x slower than PyTorch eager on an H100)")
    return (f"they run TVM's default loop nests (ResNet-50 ran {UNTUNED_CPU_SLOWDOWN:.0f}x slower "
            "untuned than after 32 tuning trials per kernel on a 2-core CPU)")


def warn_untuned(untuned: dict[str, tuple[str, list[str], int]], database: TuningDatabase | None) -> None:
    """One :class:`UntunedKernelWarning` for the kernels built without a tuned schedule.

    ``untuned``: device name -> (target kind, untuned kernel names, kernels on that device).
    """
    from tvm_place.errors import UntunedKernelWarning

    lines = [
        f"{len(names)} of {total} kernels on {device} ({kind}) have no tuned schedule: {expected_slowdown(kind)}"
        for device, (kind, names, total) in untuned.items()
        if names
    ]
    if not lines:
        return
    where = "no tuning database was given" if database is None else f"the database {database.directory} lacks them"
    warnings.warn(
        "; ".join(lines) + f" ({where}). Tune them with tvm_place.tune(mod, targets, "
        "database=DIR) or `tvm-place tune`, then compile with database=DIR.",
        UntunedKernelWarning,
        stacklevel=3,
    )
