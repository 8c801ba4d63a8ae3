"""Golden placement plans for compiler regression tests.

A *plan* is a small JSON file that records where each operator of a module goes on a list of
targets, the options that placed it, and the predicted objective. A regression test places the
module again and compares:

>>> from tvm_place.testing import assert_placement
>>> assert_placement(mod, ["llvm", {"kind": "cuda", "arch": "sm_80"}], "tests/golden/net.json")

fails with a readable diff (which operators moved from which device to which, the objective
before and after) when the placement changed or the predicted objective regressed beyond
``tolerance``. Rewrite the plans on purpose with ``TVM_PLACE_UPDATE_GOLDEN=1`` (or
``update=True``, or ``pytest --update-golden`` with the ``placement_golden`` fixture of the
``tvm_place.pytest_plugin`` plugin, registered for pytest on install).

Costs that do not move: golden plans are placed with ``cost_model="analytical"`` unless told
otherwise (:data:`GOLDEN_COST_MODEL`; ``tvm_place.compile``'s default, ``"auto"``, prices a
device by what this machine has: a learned model, a calibration), so the costs come from the
device profiles, the same on every machine. With measured costs (or any other cost model, ``"auto"``
included) the update writes a cost snapshot beside the plan (``<plan>.costs.json``, see
:class:`tvm_place.cost.Snapshot`) and every later check replays it, so no test depends on timings
taken on a noisy machine. Pin GPU targets to an architecture (``{"kind": "cuda", "arch":
"sm_80"}``) or a profile: a bare ``"cuda"`` takes the architecture of the machine's GPU, so it
would be costed differently on a machine with another GPU.

:func:`check_plan` is the library side of ``tvm-place check MODEL --plan PLAN.json``: it returns
``(exit code, message)``, 0 when the placement holds, 1 with the diff otherwise; bad input
(a missing or malformed plan, an unknown model) raises a :class:`~tvm_place.TvmPlaceError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import InvalidPlacementError, TvmPlaceError
from .formats import PLAN_OPTIONS, plan_cost_model, recorded_snapshot, target_to_json, write_plan
from .options import PlaceOptions

#: Environment variable that turns every comparison into an update of the golden plan.
UPDATE_ENV = "TVM_PLACE_UPDATE_GOLDEN"
#: The cost model of golden plans where none is given: the profiles' costs, the same on every
#: machine (not the compile default, which depends on the machine).
GOLDEN_COST_MODEL = "analytical"
#: Default relative tolerance on the predicted objective (only float noise passes).
DEFAULT_TOLERANCE = 1e-6


def update_requested(update: bool | None = None) -> bool:
    """``update`` if given, else whether ``$TVM_PLACE_UPDATE_GOLDEN`` is set to a true value."""
    if update is not None:
        return bool(update)
    return os.environ.get(UPDATE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _seconds(value: float) -> str:
    from .report import _seconds as show

    return show(value)


@dataclass
class PlanComparison:
    """A placement compared with a golden plan.

    ``moved``: ``(operator, golden device, device now)`` for each operator that changed device;
    ``added`` / ``removed``: operators only now / only in the plan; ``changed_setup``: targets or
    options that differ from the plan's; ``value_before`` / ``value_after``: the golden and the
    current predicted objective; ``golden_value_now``: the golden placement evaluated on today's
    costs (None where the operators differ). ``ok``: nothing moved and the objective did not
    regress beyond the tolerance.
    """

    plan_path: Path
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed_setup: list[str] = field(default_factory=list)
    objective: str = "latency"
    value_before: float = math.nan
    value_after: float = math.nan
    golden_value_now: float | None = None
    method_before: str = ""
    method_after: str = ""
    tolerance: float = DEFAULT_TOLERANCE
    num_ops: int = 0

    @property
    def regressed(self) -> bool:
        return self.value_after > self.value_before * (1 + self.tolerance) + 1e-15

    @property
    def placement_changed(self) -> bool:
        return bool(self.moved or self.added or self.removed or self.changed_setup)

    @property
    def ok(self) -> bool:
        return not self.placement_changed and not self.regressed

    def objective_line(self) -> str:
        before, after = self.value_before, self.value_after
        change = (after - before) / before if before > 0 else 0.0
        line = (f"objective ({self.objective}): golden {_seconds(before)}, now {_seconds(after)} "
                f"({change:+.2%}, tolerance {self.tolerance:.2g})")
        if self.golden_value_now is not None and not math.isclose(
            self.golden_value_now, before, rel_tol=1e-12
        ):
            line += f"; the golden placement costs {_seconds(self.golden_value_now)} today"
        return line

    def message(self) -> str:
        """The readable diff (or a one-line confirmation when :attr:`ok`)."""
        where = str(self.plan_path)
        if self.ok:
            return (f"placement matches {where}: {self.num_ops} operators, "
                    + self.objective_line())
        reasons = []
        if self.placement_changed:
            reasons.append("the placement changed")
        if self.regressed:
            reasons.append("the predicted objective regressed beyond the tolerance")
        lines = [f"{' and '.join(reasons)} against {where}:"]
        for item in self.changed_setup:
            lines.append(f"  {item}")
        if self.moved:
            lines.append(f"  {len(self.moved)} of {self.num_ops} operators moved:")
            width = max(len(name) for name, _, _ in self.moved)
            for name, before, after in self.moved:
                lines.append(f"    {name:<{width}}  {before} -> {after}")
        if self.removed:
            lines.append(f"  operators only in the golden plan: {', '.join(self.removed)}")
        if self.added:
            lines.append(f"  operators only now: {', '.join(self.added)}")
        lines.append("  " + self.objective_line())
        if self.method_before != self.method_after:
            lines.append(f"  method: golden {self.method_before}, now {self.method_after}")
        lines.append(
            f"  if this is intended, rewrite the plan: {UPDATE_ENV}=1 (or update=True, "
            "pytest --update-golden)"
        )
        return "\n".join(lines)


def read_golden_plan(plan_path: str | Path) -> dict:
    """A golden plan's content, checked against its schema (:func:`tvm_place.formats.read_plan`);
    a missing one says how to write it."""
    from .formats import read_plan as read

    path = Path(plan_path)
    if not path.exists():
        raise TvmPlaceError(
            f"no golden plan at {str(path)!r}; write it with {UPDATE_ENV}=1 (or update=True)"
        )
    return read(path)


def _options(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(PLAN_OPTIONS))
    if unknown:
        raise TypeError(f"unknown placement options {unknown}; the options are {sorted(PLAN_OPTIONS)}")
    given = {"cost_model": GOLDEN_COST_MODEL, **{k: v for k, v in given.items() if v is not None}}
    checked = PlaceOptions.of(**given)
    options = {name: getattr(checked, name) for name in PLAN_OPTIONS}
    options["time_limit"] = float(options["time_limit"])
    return options


def _build_model(model: str | Mapping, sizes: Mapping | None = None):
    from . import models

    if isinstance(model, str):
        spec = {"name": model, "sizes": dict(sizes or {})}
    else:
        spec = dict(model)
    built = models.get(
        spec["name"], batch=int(spec.get("batch", 1)), seed=int(spec.get("seed", 0)),
        **dict(spec.get("sizes") or {}),
    )
    return built.mod, {"name": spec["name"], "sizes": dict(spec.get("sizes") or {}),
                       "batch": int(spec.get("batch", 1)), "seed": int(spec.get("seed", 0))}


def compare_with_plan(plan: dict, placed, targets, options: dict, plan_path: Path,
                      tolerance: float) -> PlanComparison:
    """Compare a fresh placement (``tvm_place.compiler.Placed``) with a golden plan."""
    from .evaluate import evaluate

    problem, placement = placed.problem, placed.placement
    names = problem.graph.names
    device_names = problem.device_names
    now = [(name, device_names[int(d)]) for name, d in zip(names, placement.device_of)]
    golden = [(str(name), str(device)) for name, device in plan["ops"]]
    comparison = PlanComparison(
        plan_path=plan_path,
        objective=options["objective"],
        value_before=float(plan["value"]),
        value_after=float(placement.value),
        method_before=str(plan.get("method", "")),
        method_after=placement.method,
        tolerance=tolerance,
        num_ops=len(now),
    )
    if [target_to_json(t) for t in targets] != plan["targets"]:
        comparison.changed_setup.append(
            f"targets: golden {plan['targets']}, now {[target_to_json(t) for t in targets]}"
        )
    recorded = dict(plan["options"])
    current = {**options, "cost_model": plan_cost_model(options["cost_model"], plan_path)}
    for key in PLAN_OPTIONS:
        if key != "time_limit" and recorded.get(key) != current.get(key):
            comparison.changed_setup.append(f"{key}: golden {recorded.get(key)!r}, now {current.get(key)!r}")
    golden_names = [name for name, _ in golden]
    if golden_names == names:
        comparison.moved = [
            (name, before, after) for (name, before), (_, after) in zip(golden, now) if before != after
        ]
        index = {name: d for d, name in enumerate(device_names)}
        if all(device in index for _, device in golden):
            golden_device_of = [index[device] for _, device in golden]
            try:
                comparison.golden_value_now = evaluate(problem, golden_device_of).objective(
                    options["objective"]
                )
            except InvalidPlacementError:
                comparison.golden_value_now = None
    else:
        comparison.removed = [n for n in golden_names if n not in set(names)]
        comparison.added = [n for n in names if n not in set(golden_names)]
        if not comparison.removed and not comparison.added:
            comparison.changed_setup.append("the operators are the same but in another order")
        shared = set(golden_names) & set(names)
        golden_map, now_map = dict(golden), dict(now)
        comparison.moved = [(n, golden_map[n], now_map[n]) for n in names
                            if n in shared and golden_map[n] != now_map[n]]
    return comparison


@dataclass
class GoldenResult:
    """What :func:`run_golden` did: ``updated`` (the plan was rewritten) or ``comparison``."""

    plan_path: Path
    placement: Any
    problem: Any
    updated: bool
    comparison: PlanComparison | None

    @property
    def ok(self) -> bool:
        return self.updated or (self.comparison is not None and self.comparison.ok)

    def message(self) -> str:
        if self.updated:
            return f"wrote golden plan {self.plan_path} ({len(self.problem.graph)} operators, " \
                   f"{self.placement.objective} {_seconds(self.placement.value)})"
        return self.comparison.message()


def run_golden(
    mod,
    targets: Sequence[Any] | None,
    plan_path: str | Path,
    update: bool | None = None,
    tolerance: float | None = None,
    model_sizes: Mapping | None = None,
    **options,
) -> GoldenResult:
    """Place ``mod`` and compare with (or, in update mode, rewrite) the plan at ``plan_path``.

    ``mod``: an IRModule, or a registry model name (``model_sizes`` or the plan's sizes give its
    sizes). ``targets`` and ``options`` (objective, method, time_limit, cost_model, profiles,
    pins): ``None`` takes the plan's (or the defaults when writing a new plan).
    """
    from .compiler import place
    from .cost import Snapshot

    plan_path = Path(plan_path)
    update = update_requested(update)
    plan = None if update else read_golden_plan(plan_path)
    if plan is not None:
        recorded = dict(plan["options"])
        for key, value in recorded.items():
            if options.get(key) is None and key in PLAN_OPTIONS:
                options[key] = value
        if targets is None:
            targets = plan["targets"]
        if tolerance is None:
            tolerance = float(plan.get("tolerance", DEFAULT_TOLERANCE))
    if targets is None:
        raise TvmPlaceError(f"no targets for {str(plan_path)!r}: give them (e.g. ['llvm', 'cuda'])")
    tolerance = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    model = None
    if isinstance(mod, str) or isinstance(mod, Mapping):
        spec = mod
        if isinstance(mod, str) and model_sizes is None and plan is not None and plan.get("model"):
            if plan["model"].get("name") != mod:
                raise TvmPlaceError(
                    f"plan {str(plan_path)!r} is for model {plan['model'].get('name')!r}, not {mod!r}"
                )
            spec = plan["model"]
        mod, model = _build_model(spec, model_sizes)
    elif plan is not None:
        model = plan.get("model")
    options = _options(options)
    cost_model = options["cost_model"]
    # A plan placed with other costs than the analytical model's replays its snapshot (a check
    # never measures again); an update measures afresh.
    snapshot = None if update or cost_model == "analytical" else recorded_snapshot(plan, plan_path)
    if snapshot is not None:
        cost_model = Snapshot(snapshot)
    placed = place(
        mod,
        targets,
        objective=options["objective"],
        method=options["method"],
        time_limit=options["time_limit"],
        cost_model=cost_model,
        profiles=options["profiles"],
        pins=options["pins"],
        name=(model or {}).get("name", "module"),
    )
    if update:
        extra = {} if tolerance == DEFAULT_TOLERANCE else {"tolerance": tolerance}
        write_plan(plan_path, placed.problem, placed.placement, targets, options, model, extra,
                   placed.cost_sources)
        return GoldenResult(plan_path, placed.placement, placed.problem, True, None)
    comparison = compare_with_plan(plan, placed, targets, options, plan_path, tolerance)
    return GoldenResult(plan_path, placed.placement, placed.problem, False, comparison)


def assert_placement(
    mod,
    targets: Sequence[Any] | None,
    plan_path: str | Path,
    update: bool | None = None,
    tolerance: float | None = None,
    model_sizes: Mapping | None = None,
    **options,
):
    """Assert that ``mod`` is still placed as the golden plan at ``plan_path`` says.

    Places ``mod`` (an IRModule or a registry model name) on ``targets`` with ``options``
    (objective, method, time_limit, cost_model, profiles, pins; see ``tvm_place.compile``) and
    raises ``AssertionError`` with a readable diff when an operator moved, the operators, targets
    or options differ from the plan's, or the predicted objective rose more than ``tolerance``
    (relative; default 1e-6, the plan may set its own). In update mode (``update=True`` or
    ``$TVM_PLACE_UPDATE_GOLDEN=1``) it rewrites the plan instead (and, for measured costs, the
    cost snapshot beside it). Returns the placement.
    """
    result = run_golden(mod, targets, plan_path, update, tolerance, model_sizes, **options)
    if not result.ok:
        raise AssertionError(result.message())
    return result.placement


def check_plan(
    mod_or_model_name,
    plan_path: str | Path,
    targets: Sequence[Any] | None = None,
    tolerance: float | None = None,
    update: bool = False,
    **options,
) -> tuple[int, str]:
    """``tvm-place check MODEL --plan PLAN.json``: ``(0, confirmation)`` when the placement holds,
    ``(1, diff)`` when it changed or the predicted objective regressed beyond ``tolerance``.

    ``mod_or_model_name``: an IRModule or a registry model name (built with the sizes the plan
    records). ``targets``, ``tolerance`` and ``options``: ``None`` takes the plan's. ``update``
    rewrites the plan (exit 0). Bad input raises :class:`~tvm_place.TvmPlaceError` (the CLI's
    exit code 2).
    """
    result = run_golden(mod_or_model_name, targets, plan_path, update, tolerance, None, **options)
    return (0 if result.ok else 1), result.message()
