"""The placement options: one object shared by every entry point.

``tvm_place.compile``, ``place``, ``tune``, ``pipeline``, ``testing.assert_placement`` and the CLI
take the same options. Each entry point accepts them as keywords (``objective="throughput"``) or
as one :class:`PlaceOptions` (``options=PlaceOptions(objective="throughput")``, keywords then
override it), checks them here once, and passes the one object on.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import TvmPlaceError
from .graph import Placement, check_objective

#: The cost models named by a string (``cost_model=``, ``--cost-model``), the default first:
#: ``auto`` picks the best of the others available for each device (:mod:`tvm_place.cost.auto`).
COST_MODELS = ("auto", "analytical", "calibrated", "learned", "measured")


@dataclass(frozen=True)
class PlaceOptions:
    """How to place a module (see :func:`tvm_place.compile` for what each option does).

    ``objective``: ``"latency"`` or ``"throughput"``; ``method``: a solver (``tvm-place solve
    --help`` lists them) or ``"auto"``; ``time_limit``: seconds for the solve; ``cost_model``:
    one of :data:`COST_MODELS` (``"auto"``, the default: per device the learned model where one
    was trained for it, else its calibrated profile, else its profile as written), a snapshot or
    a CostModel; ``profiles``: a device profile
    name per target (None: each target's default); ``pins``: operator-name glob -> device name;
    ``placement``: a placement to apply instead of solving; ``name``: the problem's name;
    ``database``: a tuning database directory; ``shape_hints``: sizes of symbolic dimensions for
    costing; ``entry``: the function to place; ``entries``: several functions placed together
    (names, or names -> calls per round); ``external_costs``: seconds per call of external
    functions.
    """

    objective: str = "latency"
    method: str = "auto"
    time_limit: float = 60.0
    cost_model: Any = COST_MODELS[0]
    profiles: Sequence[str | None] | None = None
    pins: Mapping[str, str] | None = None
    placement: Placement | Sequence[int] | None = None
    name: str = "module"
    database: Any = None
    shape_hints: Mapping[str, int] | None = None
    entry: str = "main"
    entries: Sequence[str] | Mapping[str, float] | None = None
    external_costs: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_objective(self.objective)
        if isinstance(self.time_limit, bool) or not isinstance(self.time_limit, (int, float)) \
                or not self.time_limit >= 0:
            raise TvmPlaceError(f"time_limit must be a number of seconds >= 0, not {self.time_limit!r}")

    @classmethod
    def of(cls, options: "PlaceOptions | None" = None, **overrides) -> "PlaceOptions":
        """``options`` (default: the defaults) with ``overrides`` (option names) applied; an
        unknown name is an error that suggests the nearest option."""
        if options is not None and not isinstance(options, PlaceOptions):
            raise TvmPlaceError(
                f"options must be a tvm_place.PlaceOptions, not {type(options).__name__}: pass "
                "single options by keyword (objective='throughput')"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        for key in overrides:
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                raise TvmPlaceError(f"unknown option {key!r}"
                                    + (f"; did you mean {near[0]!r}?" if near else "")
                                    + f" (options: {', '.join(names)})")
        return dataclasses.replace(options or cls(), **overrides)

    def replace(self, **changes) -> "PlaceOptions":
        return PlaceOptions.of(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Every option by name, the values as they are (unlike ``dataclasses.asdict``, which
        would copy a given Placement into a dict)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
