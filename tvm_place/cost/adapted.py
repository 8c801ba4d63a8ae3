"""A learned model of another CPU, adapted to this one from a few kernels measured here.

Learned models (:mod:`tvm_place.cost.learned`) are trained per CPU. A CPU without its own gets
another CPU's model scaled by one factor: the median, over :data:`REFERENCE_MODELS`' distinct
kernels timed on this CPU, of measured time / the model's prediction. The reference kernels are
those of small versions of two training architectures (a ResNet and a BERT layer: convolutions,
matmuls by weights read in place, norms, softmax, element-wise and layout kernels), so every
shipped model was trained on their kind. Where several models could serve, the one whose scaled
predictions agree best with the measured times (least median absolute log error) does. The
factor is cached per device (:func:`~tvm_place.cost.calibrate.cache_key`) and per set of source
models, as calibrated profiles are.

Why a factor from such kernels, and not the calibration's micro-benchmarks. Measured on one
AMD Zen 5 machine (session 13, docs/benchmarks.md), other CPUs emulated by compiling for another
``-mcpu`` (the code differs, the caches and the clock do not), the Zen 5 model predicting five
real-size held-out models (whole-model time, geometric mean of the error):

- ``-mcpu=x86-64`` (no AVX): raw 1.80x, scaled by these kernels 1.20x, calibrated roofline 1.64x;
- ``-mcpu=haswell`` (AVX2): raw 1.14x, scaled by these kernels 1.13x, calibrated roofline 1.39x;
- the calibration's one-operator micro-benchmarks as the reference instead: 2.94x and 1.89x (a
  matmul of two inputs is not a kernel the models were trained on: off by 6.8x on its own), and
  a factor per operator class was no better than one factor (1.20x and 1.13x).

And the Zen 4 model on the Zen 5 machine (both trained on the same small sizes): 1.14x on the
held-out models, against 1.13x for Zen 5's own. Between CPUs this far apart the kernels' relative
times carry over; their scale is what the factor measures. A CPU unlike both (another vendor, an
ARM core) is not measured here.

Time: one build and timing per reference kernel (29 kernels in 9.8 s on the development
machine's CPU, beside other work), within the time limit, checked between kernels; at least
:data:`MIN_KERNELS` run whatever the limit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import TvmPlaceError
from ..graph import OpNode
from .learned import MODEL_DIR, BoostedTrees, kernel_features, load_model, model_name

#: The registry models (and sizes) whose distinct kernels measure a CPU's speed.
REFERENCE_MODELS: tuple[tuple[str, dict], ...] = (
    ("resnet18", {"image_size": 64}),
    ("bert-layer", {"seq_len": 64}),
)

#: Kernels that must have been timed for a factor (a time limit that allows fewer fails).
MIN_KERNELS = 8

#: The folder (in the measured-cost cache directory) of the cached adaptations.
ADAPTED_DIR = "adapted-models"


@dataclass(frozen=True)
class Adaptation:
    """Which model (``source``, its file stem) prices a device, scaled by ``factor``;
    ``error``: the median absolute log error of the scaled predictions on the ``kernels``
    reference kernels timed, in ``seconds``."""

    source: str
    factor: float
    error: float
    kernels: int
    seconds: float


@functools.lru_cache(maxsize=1)
def reference_kernels() -> tuple[tuple[object, OpNode], ...]:
    """``(PrimFunc, node)`` of every distinct kernel of :data:`REFERENCE_MODELS`, the models'
    kernels interleaved (a time limit that stops early leaves some of each)."""
    from tvm_place import models
    from tvm_place.passes import collect_op_graph, prepare_pipeline

    per_model = []
    for name, sizes in REFERENCE_MODELS:  # lowered as tvm_place.compiler.prepare lowers a model
        collected = collect_op_graph(prepare_pipeline()(models.get(name, batch=1, **sizes).mod))
        kernels = {}
        for key, kernel, node in zip(collected.kernel_keys, collected.kernels,
                                     collected.graph.nodes):
            if kernel is not None and key not in kernels:
                kernels[key] = (kernel, node)
        per_model.append(list(kernels.values()))
    longest = max(len(kernels) for kernels in per_model)
    return tuple(kernels[i] for i in range(longest) for kernels in per_model if i < len(kernels))


def adapt(device, sources: dict[str, BoostedTrees], time_limit: float,
          progress=None) -> Adaptation:
    """Time the reference kernels on ``device`` (within ``time_limit`` seconds) and choose the
    model of ``sources`` (file stem -> model) and the factor that predict them best."""
    from .measured import time_kernel

    if not sources:
        raise TvmPlaceError(f"no learned model of another {device.target.kind.name} device to "
                            "adapt")
    started = time.perf_counter()
    references = reference_kernels()
    measured, rows = [], []
    rng = np.random.default_rng(0)
    for position, (kernel, node) in enumerate(references):
        if position >= MIN_KERNELS and time.perf_counter() - started >= time_limit:
            break
        if progress is not None:
            progress(f"adapting a learned model to {device.name}: reference kernel "
                     f"{position + 1} of {len(references)}", position / len(references))
        try:
            measured.append(time_kernel(kernel, device, rng=rng))
        except Exception as err:  # TVM's own failure to build or run it on this device
            from ..passes.build import error_line

            raise TvmPlaceError(f"cannot adapt a learned model to {device.name}: a reference "
                                f"kernel failed ({error_line(err)})") from None
        rows.append(kernel_features(kernel, node))
    logs = np.log(np.maximum(measured, 1e-9))
    fits = []  # (error, source, factor) per source model
    for stem, trees in sorted(sources.items()):
        residuals = logs - trees.predict(np.array(rows))
        shift = float(np.median(residuals))
        fits.append((float(np.median(np.abs(residuals - shift))), stem, float(np.exp(shift))))
    error, source, factor = min(fits)
    return Adaptation(source, factor, error, len(rows), time.perf_counter() - started)


class AdaptedCostModel:
    """Kernel times of another CPU's learned model, scaled to this device (see the module's
    docstring). ``cache_dir``: where adaptations are cached (default: the measured-cost cache
    directory); ``time_limit``: seconds an adaptation may take; ``learned_dir``: where the
    learned models are. Sources: ``learned (adapted from <model>)``."""

    name = "adapted"

    def __init__(self, cache_dir: Path | str | None = None, time_limit: float = 10.0,
                 learned_dir: Path | str | None = None):
        from .measured import default_cache_dir

        self.directory = Path(cache_dir or default_cache_dir()) / ADAPTED_DIR
        self.learned_dir = Path(learned_dir) if learned_dir is not None else MODEL_DIR
        self.time_limit = time_limit
        self.adaptations = 0  # run by this model (the rest came from the cache)
        self._chosen: dict[str, tuple[Adaptation, BoostedTrees] | None] = {}

    def sources(self, device) -> dict[str, BoostedTrees]:
        """The learned models of other devices of ``device``'s target kind, trained at the
        thread count this process runs CPU kernels at (see
        :meth:`~tvm_place.cost.learned.LearnedCostModel.trees_for`)."""
        from .measured import cpu_threads

        kind = device.target.kind.name
        own = model_name(device.target)
        found = {}
        for path in sorted(self.learned_dir.glob(f"{kind}-*.json")):
            if path.stem == own:
                continue
            trees = load_model(path)
            if kind in ("llvm", "c") and trees.data.get("threads", cpu_threads()) != cpu_threads():
                continue
            found[path.stem] = trees
        return found

    def path(self, device, sources: dict[str, BoostedTrees]) -> Path:
        """The cache file of ``device``'s adaptation from exactly these ``sources``."""
        from .calibrate import cache_key

        key = cache_key(device) + "|" + "|".join(
            f"{stem}:{hashlib.sha256((self.learned_dir / f'{stem}.json').read_bytes()).hexdigest()}"
            for stem in sorted(sources))
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.directory / f"{device.target.kind.name}-{digest}.json"

    def can_adapt(self, device) -> bool:
        return bool(self.sources(device))

    def has_adaptation(self, device) -> bool:
        """Whether ``device`` has a cached adaptation (read without measuring anything)."""
        return self._cached(device) is not None

    def _cached(self, device):
        key = str(device.target)
        if key not in self._chosen:
            sources = self.sources(device)
            path = self.path(device, sources) if sources else None
            self._chosen[key] = None
            if path is not None and path.exists():
                adaptation = read_adaptation(path)
                if adaptation is not None and adaptation.source in sources:
                    self._chosen[key] = (adaptation, sources[adaptation.source])
        return self._chosen[key]

    def adapt(self, device, progress=None) -> Adaptation:
        """``device``'s adaptation: cached, or measured now and cached."""
        cached = self._cached(device)
        if cached is not None:
            return cached[0]
        sources = self.sources(device)
        adaptation = adapt(device, sources, self.time_limit, progress)
        self.adaptations += 1
        write_adaptation(self.path(device, sources), adaptation)
        self._chosen[str(device.target)] = (adaptation, sources[adaptation.source])
        return adaptation

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        adaptation = self.adapt(device)
        trees = self._chosen[str(device.target)][1]
        log_seconds = trees.predict(kernel_features(prim_func, node)[None, :])[0]
        return float(np.exp(log_seconds)) * adaptation.factor, \
            f"learned (adapted from {adaptation.source})"


def write_adaptation(path: Path, adaptation: Adaptation) -> None:
    """Write ``adaptation`` to ``path`` whole (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps({"format": "tvm-place-adapted-model", **asdict(adaptation)},
                                  indent=1) + "\n")
    os.replace(partial, path)


class AdaptationCacheWarning(UserWarning):
    """A cached adaptation that cannot be read (the device is adapted again, the file rewritten)."""


def read_adaptation(path: Path) -> Adaptation | None:
    """The adaptation cached in ``path``; None, with a warning, where the file is not one."""
    try:
        data = json.loads(path.read_text())
        fields = {key: data[key] for key in ("source", "factor", "error", "kernels", "seconds")}
        valid = (data.get("format") == "tvm-place-adapted-model"
                 and isinstance(fields["source"], str)
                 and all(isinstance(fields[k], (int, float)) and not isinstance(fields[k], bool)
                         and np.isfinite(fields[k]) for k in ("factor", "error", "seconds"))
                 and fields["factor"] > 0 and isinstance(fields["kernels"], int))
    except (OSError, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        warnings.warn(f"cached adaptation {str(path)!r} is not one tvm-place wrote; adapting "
                      "again (the file is rewritten)", AdaptationCacheWarning, stacklevel=3)
        return None
    return Adaptation(**fields)
