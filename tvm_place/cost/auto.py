"""The default cost model: the best one available for each device (``cost_model="auto"``).

Each device of a placement is priced by the first of these that it has (a device whose profile
the user gave, by name or in a device file, is described by it: the last):

1. **learned** (:class:`~tvm_place.cost.learned.LearnedCostModel`): a model trained for the
   device's target, by the learned model's own match rule (target kind and CPU, and for a CPU
   the thread count it was trained at: :meth:`~tvm_place.cost.learned.LearnedCostModel.trees_for`).
   On the development machine's CPU (AMD Zen 5) it was the most accurate: six real-size models
   predicted at 0.93x to 1.08x of their measured whole-model time, against 0.50x to 1.12x for
   the calibrated profile (docs/benchmarks.md, "Cost models on AMD Zen 5").
2. **learned, adapted** (:class:`~tvm_place.cost.adapted.AdaptedCostModel`): a device present
   on this machine without a model of its own but with one of another device of its kind (a
   CPU the package has no model for), priced by that model scaled by a factor measured on
   reference kernels here (emulated other CPUs: whole-model error 1.13x and 1.20x, against 1.39x
   and 1.64x for the calibrated roofline; the module's docstring).
3. **calibrated** (:class:`~tvm_place.cost.calibrate.CalibratedCostModel`): a device present on
   this machine, priced by its profile fitted to micro-benchmarks (held-out MAPE 130% against
   258% for the profile as written, same table).

An adaptation or a profile cached by an earlier compile is used as is (an adaptation first);
without one, a placement over several devices adapts the device on its first use where a
model of its kind exists, else calibrates it, within :data:`CALIBRATION_SECONDS` and the solve's
time limit (at least the adaptation's :data:`~tvm_place.cost.adapted.MIN_KERNELS` kernels, or
the fit's three essential benchmarks, run whatever the limit), with progress reported, and
caches the result for later compiles (``tvm-place calibrate`` runs the whole set of benchmarks
and replaces the profile). A one-device placement has one answer whatever the costs, and a given
placement is priced, not chosen, so neither measures anything: costs only fill the report.

4. **analytical** (:class:`~tvm_place.cost.analytical.AnalyticalCostModel`): the device's profile
   as written, for a device this machine lacks (a GPU on a CPU-only host), a described device
   (``profiles=[None, "server-cpu"]``: the user says what it is, whatever this machine has), or
   where a calibration failed (with a :class:`CalibrationFailedWarning`).

The measured model is never chosen: it compiles and times every kernel (most of ResNet-50's
first placement), so it is for when a user asks. Tuned kernels keep their tuning database's
times (:class:`~tvm_place.cost.tuned.TunedCostModel` wraps this model). Every cost's source is
the chosen model's (``learned``, ``learned (adapted from llvm-znver5)``, ``calibrated``,
``calibrated (cached)``, ``analytical``), so the
report says per device which model priced it. Choosing costs a file lookup per device.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from ..errors import TvmPlaceError
from ..graph import OpNode
from .adapted import AdaptedCostModel
from .analytical import AnalyticalCostModel
from .calibrate import CalibratedCostModel, cache_key, is_present
from .learned import LearnedCostModel

#: Seconds a device's calibration on its first use may take at most (and at most the solve's
#: time limit). On the development machine's CPU (2 cores, load 2-5) 10 s ran 24 of the 32
#: micro-benchmarks; all 32 took 22 s.
CALIBRATION_SECONDS = 10.0


class CalibrationFailedWarning(UserWarning):
    """A device could not be adapted to or calibrated on its first use: it is priced by its
    profile as written."""


class AutoCostModel:
    """Per device, the best cost model available (see the module's docstring for the order).

    ``cache_dir``: where calibrated profiles are cached (default: the measured-cost cache
    directory); ``time_limit``: the solve's seconds, which bound a calibration on first use with
    :data:`CALIBRATION_SECONDS` (0: never calibrate); ``learned_dir``: where learned models are
    looked up (default: the package's)."""

    name = "auto"

    def __init__(self, cache_dir: Path | str | None = None, time_limit: float = CALIBRATION_SECONDS,
                 learned_dir: Path | str | None = None):
        self.calibration_seconds = min(CALIBRATION_SECONDS, float(time_limit))
        self.learned = LearnedCostModel(learned_dir)
        self.adapted = AdaptedCostModel(cache_dir, self.calibration_seconds, learned_dir)
        self.calibrated = CalibratedCostModel(cache_dir, self.calibration_seconds)
        self.analytical = AnalyticalCostModel()
        self._chosen: dict[tuple, object] = {}  # (device name, target, profile) -> model
        self._failed: set[str] = set()  # calibration keys whose calibration failed

    def prepare_devices(self, devices: Sequence, progress=None) -> None:
        """Choose each device's model before costing starts, calibrating where the module's
        docstring says, and report each choice through ``progress``."""
        for device in devices:
            model = self._choose(device, may_calibrate=len(devices) > 1, progress=progress)
            if progress is not None:
                progress(f"costing {device.name} with the {model.name} model", None)

    def _choose(self, device, may_calibrate: bool = False, progress=None):
        key = (device.name, str(device.target), device.profile.name)
        if key in self._chosen:
            return self._chosen[key]
        may_measure = may_calibrate and self.calibration_seconds > 0 and is_present(device) \
            and cache_key(device) not in self._failed
        if device.described:
            model = self.analytical
        elif self.learned.has_model(device):
            model = self.learned
        elif is_present(device) and self.adapted.has_adaptation(device):
            model = self.adapted
        elif may_measure and self.adapted.can_adapt(device):
            model = self._measured(device, self.adapted.adapt, self.adapted, progress)
        elif self.calibrated.has_profile(device):
            model = self.calibrated
        elif may_measure:
            model = self._measured(device, self.calibrated.profile, self.calibrated, progress)
        else:
            model = self.analytical
        self._chosen[key] = model
        return model

    def _measured(self, device, measure, model, progress):
        """``model`` once ``measure(device, progress)`` has adapted or calibrated ``device``;
        the analytical model, with a warning, where that failed."""
        try:
            measure(device, progress)
            return model
        except TvmPlaceError as err:  # e.g. a kernel TVM cannot build for this device
            self._failed.add(cache_key(device))  # its twin devices are not tried again
            warnings.warn(f"{err}; {device.name} is priced by its profile as written "
                          f"({device.profile.name})", CalibrationFailedWarning, stacklevel=5)
            return self.analytical

    def chosen(self, device):
        """The model that prices ``device`` (chosen without calibrating, if not chosen yet)."""
        return self._choose(device)

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        return self.chosen(device).op_time(prim_func, node, device)
