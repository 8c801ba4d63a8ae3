"""Learned cost model: gradient-boosted regression trees on features of each TIR kernel.

A per-target model predicts the log of a kernel's measured time from :func:`kernel_features`
(sizes, work, block structure and how the innermost loop walks memory, read from the PrimFunc and
its operator node; no compile, no run): a linear function of the kernel's log FLOPs and bytes,
plus trees that correct it. Both are fitted by ``scripts/train_cost_model.py``, the trees with
XGBoost (Chen and Guestrin, "XGBoost: A Scalable Tree Boosting System", KDD 2016), on times
:class:`MeasuredCostModel` took on one machine, and saved in this module's own JSON format
(:data:`tvm_place.schemas.LEARNED_MODEL`): plain arrays per tree that :class:`BoostedTrees`
evaluates in plain Python, so placing with a learned model needs no boosting library (only
training does: ``pip install 'tvm-place[xgboost]'``).
Prediction costs O(trees x depth) per kernel.

Models shipped with the package live in ``tvm_place/cost/learned/``, one per target and CPU:
``<kind>-<cpu>.json`` (``llvm-znver4.json``). A device whose target has no model is costed by the
fallback model (the analytical roofline by default), and each number's source says which.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from ..graph import OpNode
from .analytical import AnalyticalCostModel

#: Where the package's trained models are.
MODEL_DIR = Path(__file__).resolve().parent / "learned"

#: What each TIR block computes, told by the words in its name (TOPI's and TVM's legalizers name
#: them, and fusion keeps the names): checked in this order; anything else is element-wise.
BLOCK_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("conv", ("conv",)),
    ("matmul", ("matmul", "dense")),
    ("pool", ("pool",)),
    ("pad", ("pad",)),
    ("softmax", ("softmax", "exp")),
    ("norm", ("norm",)),
    ("move", ("reshape", "transpose", "concat", "split", "take", "slice", "layout", "gather",
              "broadcast", "squeeze", "flatten")),
    ("elementwise", ()),
)

#: The features, in the order of :func:`kernel_features`' vector. ``log`` is ``log1p`` of a
#: count or size; iterations are the points of a block's iteration domain. The ``inner_``
#: features describe how the heaviest block's innermost loop walks the buffers it reads
#: (:func:`inner_read_strides`): a matmul by weights stored (in, out) strides through them and
#: runs up to several times slower than the same matmul reading weights (out, in) in place.
FEATURES: tuple[str, ...] = (
    "log_flops", "log_bytes", "log_output_bytes", "log_param_bytes", "log_intensity",
    "blocks", "reduction_blocks", "loops", "max_loop_depth", "params", "max_rank",
    "output_dtype_bits", "log_iterations", "log_max_block_iterations", "log_reduction_extent",
    "log_innermost_extent", "log_output_elements",
    "log_inner_read_stride", "inner_strided_reads", "log_inner_strided_bytes",
) + tuple(f"{kind}_blocks" for kind, _ in BLOCK_CLASSES) \
  + tuple(f"log_{kind}_iterations" for kind, _ in BLOCK_CLASSES)


def block_class(name: str) -> str:
    """The :data:`BLOCK_CLASSES` kind of a TIR block named ``name``."""
    lowered = name.lower()
    for kind, words in BLOCK_CLASSES:
        if any(word in lowered for word in words):
            return kind
    return BLOCK_CLASSES[-1][0]


def _blocks(stmt, loop_vars: list, out: list, loops: list, realize=None) -> None:
    """Every non-root block under ``stmt`` as ``(block, its realize, the loop variables around
    it, outermost first)``; ``loops`` collects the loop depth of every ``For``."""
    from tvm import tirx
    from tvm.s_tir import SBlock, SBlockRealize

    if isinstance(stmt, SBlockRealize):
        _blocks(stmt.block, loop_vars, out, loops, stmt)
    elif isinstance(stmt, SBlock):
        if stmt.name_hint != "root":
            out.append((stmt, realize, loop_vars))
        if stmt.init is not None:
            _blocks(stmt.init, loop_vars, out, loops)
        _blocks(stmt.body, loop_vars, out, loops)
    elif isinstance(stmt, tirx.For):
        loops.append(len(loop_vars) + 1)
        _blocks(stmt.body, loop_vars + [stmt.loop_var], out, loops)
    elif isinstance(stmt, tirx.SeqStmt):
        for child in stmt.seq:
            _blocks(child, loop_vars, out, loops)
    elif isinstance(stmt, tirx.IfThenElse):
        _blocks(stmt.then_case, loop_vars, out, loops)
        if stmt.else_case is not None:
            _blocks(stmt.else_case, loop_vars, out, loops)
    elif hasattr(stmt, "body"):
        _blocks(stmt.body, loop_vars, out, loops)


def _coefficients(expr, variables: list) -> list[float] | None:
    """The constant coefficients of ``variables`` in ``expr`` where it is linear in them with
    constant coefficients, else None. A variable or a constant alone, the usual index, is read
    here; anything else asks TVM's arithmetic (a call across to C++, the costly part)."""
    from tvm import sym, tirx

    if isinstance(expr, tirx.Var):
        return [1.0 if expr.same_as(v) else 0.0 for v in variables]
    if isinstance(expr, tirx.IntImm):
        return [0.0] * len(variables)
    found = sym.detect_linear_equation(expr, variables)
    if len(found) != len(variables) + 1:
        return None
    if not all(hasattr(c, "value") for c in found[:-1]):
        return None
    return [float(c.value) for c in found[:-1]]


def inner_read_strides(block, realize, loop_vars: list) -> list[tuple[float, float]]:
    """``(stride in elements, bytes)`` of each buffer ``block`` reads, the stride being how far
    one step of the innermost loop around the block moves the read (0: the read stays put; an
    index not linear in the block's variables, a gather's, counts one step of its dimension).
    O(reads x rank)."""
    if realize is None or not loop_vars:
        return []
    inner = loop_vars[-1]
    block_vars = [v.var for v in block.iter_vars]
    # How far one step of the innermost loop moves each block variable.
    moves = []
    for value in realize.iter_values:
        found = _coefficients(value, [inner])
        moves.append(found[0] if found is not None else 0.0)
    strides = []
    for region in block.reads:
        buffer = region.source  # a buffer-backed region: its source is the Buffer
        shape = [float(d.value) if hasattr(d, "value") else 1.0 for d in buffer.shape]
        elements = 1.0
        stride = 0.0
        for d in reversed(range(len(shape))):
            found = _coefficients(region.region[d].min, block_vars) if block_vars else []
            if found is None:
                stride = max(stride, elements)
            else:
                stride += abs(sum(c * m for c, m in zip(found, moves))) * elements
            elements *= shape[d]
        strides.append((stride, elements * np.dtype(str(buffer.dtype)).itemsize))
    return strides


def _extent(iter_var) -> float:
    extent = iter_var.dom.extent
    return float(extent.value) if hasattr(extent, "value") else 1.0


def kernel_features(prim_func, node: OpNode) -> np.ndarray:
    """The :data:`FEATURES` of one kernel: its node's FLOPs and bytes, and the PrimFunc's blocks
    (iteration domains, reduction extents, loop nests, what each block computes). Deterministic;
    O(statements of the PrimFunc)."""
    blocks, loops = [], []
    _blocks(prim_func.body, [], blocks, loops)
    classes = {kind: [0, 0.0] for kind, _ in BLOCK_CLASSES}
    total = heaviest = reduction = innermost = 0.0
    reduction_blocks = 0
    heaviest_block = None
    for block, realize, loop_vars in blocks:
        extents = [_extent(v) for v in block.iter_vars]
        iterations = float(np.prod(extents)) if extents else 1.0
        reduce = [e for v, e in zip(block.iter_vars, extents) if int(v.iter_type) == 2]
        reduction_blocks += bool(reduce)
        reduction = max(reduction, float(np.prod(reduce)) if reduce else 0.0)
        spatial = [e for v, e in zip(block.iter_vars, extents) if int(v.iter_type) == 0]
        if iterations >= heaviest:
            heaviest, innermost = iterations, (spatial[-1] if spatial else 1.0)
            heaviest_block = (block, realize, loop_vars)
        total += iterations
        entry = classes[block_class(block.name_hint)]
        entry[0] += 1
        entry[1] += iterations
    params = list(prim_func.params)
    shapes = [[int(d) if hasattr(d, "value") or isinstance(d, int) else 1 for d in p.shape]
              for p in params if hasattr(p, "shape")]
    strides = inner_read_strides(*heaviest_block) if heaviest_block else []
    output = params[-1] if params else None
    output_bits = float(np.dtype(str(output.dtype)).itemsize * 8) \
        if output is not None and hasattr(output, "dtype") else 0.0
    values = [
        math.log1p(node.flops), math.log1p(node.bytes_accessed), math.log1p(node.output_bytes),
        math.log1p(node.param_bytes), math.log((node.flops + 1.0) / (node.bytes_accessed + 1.0)),
        len(blocks), reduction_blocks, len(loops), max(loops, default=0), len(params),
        max((len(s) for s in shapes), default=0), output_bits,
        math.log1p(total), math.log1p(heaviest), math.log1p(reduction), math.log1p(innermost),
        math.log1p(float(np.prod(shapes[-1])) if shapes else 0.0),
        math.log1p(max((stride for stride, _ in strides), default=0.0)),
        sum(stride > 1 for stride, _ in strides),
        math.log1p(sum(size for stride, size in strides if stride > 1)),
    ]
    values += [classes[kind][0] for kind, _ in BLOCK_CLASSES]
    values += [math.log1p(classes[kind][1]) for kind, _ in BLOCK_CLASSES]
    return np.array(values, dtype=np.float64)


def linear_part(rows: np.ndarray, features, linear: dict | None, base_score: float) -> np.ndarray:
    """``base_score`` plus the ``linear`` part of a model (see :class:`BoostedTrees`) for each
    row of ``features``, computed from the rows rounded to float32, as the trees read them."""
    rows = np.asarray(rows, dtype=np.float32).astype(np.float64)
    out = np.full(len(rows), float(base_score))
    if linear:
        for name, coefficient in zip(linear["features"], linear["coefficients"]):
            out += coefficient * rows[:, list(features).index(name)]
    return out


class BoostedTrees:
    """Regression trees saved as plain arrays, evaluated in plain Python, on a linear base.

    The prediction is ``base_score``, plus the optional ``linear`` part (``{"features": names,
    "coefficients": numbers}``: a weighted sum of those features, fitted before the trees so
    they learn a kernel's rate rather than its size), plus the leaves reached. Each tree holds
    per node ``feature`` (-1 at a leaf), ``threshold``, ``left``, ``right``, ``default_left``
    (where a missing value goes) and ``value`` (a leaf's output). A row goes left where
    ``x[feature] < threshold`` (XGBoost's rule; the row is rounded to float32 first, as XGBoost
    reads it, and thresholds are float32 values). O(rows x trees x depth): about a
    millisecond per kernel for 300 trees of depth 5.
    """

    def __init__(self, data: dict):
        self.data = data
        self.features = tuple(data["features"])
        self.base_score = float(data["base_score"])
        self.trees = [tuple(zip(tree["feature"],
                                np.asarray(tree["threshold"], dtype=np.float32).tolist(),
                                tree["left"], tree["right"], tree["default_left"], tree["value"]))
                      for tree in data["trees"]]

    @classmethod
    def load(cls, path: Path | str) -> "BoostedTrees":
        """The model in ``path``, checked against :data:`tvm_place.schemas.LEARNED_MODEL`, its
        trees' items (:func:`tvm_place.schemas.learned_tree_error`) and for trees whose nodes
        point inside the tree (else a :class:`TvmPlaceError`)."""
        from .. import schemas

        data = schemas.load(path, "learned cost model", schemas.LEARNED_MODEL)
        source = f"learned cost model file {str(Path(path))!r}"
        linear = data.get("linear", {"features": [], "coefficients": []})
        if len(linear["features"]) != len(linear["coefficients"]) \
                or not set(linear["features"]) <= set(data["features"]):
            raise schemas.field_error(source, ("linear",), "names features the model has not, or "
                                      "differs in length from its coefficients",
                                      "write the file with scripts/train_cost_model.py")
        for t, tree in enumerate(data["trees"]):
            wrong = schemas.learned_tree_error(tree)
            if wrong is not None:
                key, index, kind = wrong
                raise schemas.field_error(source, ("trees", t, key, index), f"not a {kind}",
                                          "write the file with scripts/train_cost_model.py")
            n = len(tree["feature"])
            if any(len(tree[key]) != n for key in tree):
                raise schemas.field_error(source, ("trees", t), "its arrays differ in length",
                                          "write the file with scripts/train_cost_model.py")
            for u in range(n):
                inner = tree["feature"][u] >= 0
                if inner and not (tree["feature"][u] < len(data["features"])
                                  and u < tree["left"][u] < n and u < tree["right"][u] < n):
                    raise schemas.field_error(source, ("trees", t, "feature", u),
                                              "a split names a feature or a child that is not "
                                              "there", "write the file with "
                                              "scripts/train_cost_model.py")
        return cls(data)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ValueError(f"expected rows of {len(self.features)} features, got {rows.shape}")
        out = linear_part(rows, self.features, self.data.get("linear"), self.base_score)
        for r, row in enumerate(rows.tolist()):
            total = out[r]
            for tree in self.trees:
                feature, threshold, left, right, default_left, value = tree[0]
                while feature >= 0:  # children come after their parent: at most depth steps
                    x = row[feature]
                    go_left = default_left if x != x else x < threshold  # x != x: NaN
                    feature, threshold, left, right, default_left, value = \
                        tree[left if go_left else right]
                total += value
            out[r] = total
        return out


@functools.lru_cache(maxsize=8)
def _load(path: str, modified_ns: int) -> BoostedTrees:
    return BoostedTrees.load(path)


def load_model(path: Path) -> BoostedTrees:
    """The model file ``path``, read and checked once per process (and again once it changes)."""
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


def model_name(target) -> str:
    """The file stem of ``target``'s model: its kind and CPU (``llvm-znver4``), or the kind alone
    where the target names no CPU."""
    attrs = target.attrs if hasattr(target, "attrs") else {}
    cpu = str(attrs["mcpu"]) if "mcpu" in attrs and str(attrs["mcpu"]) else ""
    if not cpu and "arch" in attrs and str(attrs["arch"]):
        cpu = str(attrs["arch"])
    return f"{target.kind.name}-{cpu}" if cpu else target.kind.name


class LearnedCostModel:
    """Kernel times predicted by the target's trained trees; ``fallback`` for targets without.

    ``directory``: where models are looked up (default :data:`MODEL_DIR`). A CPU model is used
    at the thread count it was trained at only (``TVM_NUM_THREADS``; the shipped one: 1).
    """

    name = "learned"

    def __init__(self, directory: Path | str | None = None, fallback=None):
        self.directory = Path(directory) if directory is not None else MODEL_DIR
        self.fallback = fallback or AnalyticalCostModel()
        self._models: dict[str, BoostedTrees | None] = {}

    def trees_for(self, target) -> BoostedTrees | None:
        """The trained model for ``target``, None where there is none, or where a CPU model was
        trained at another thread count than TVM's CPU kernels run on in this process (a kernel's
        time depends on it, as in :class:`~tvm_place.cost.measured.CostCache`'s keys)."""
        from .measured import cpu_threads

        stem = model_name(target)
        if stem not in self._models:
            path = self.directory / f"{stem}.json"
            trees = load_model(path) if path.is_file() else None
            if trees is not None and target.kind.name in ("llvm", "c") \
                    and trees.data.get("threads", cpu_threads()) != cpu_threads():
                trees = None
            self._models[stem] = trees
        return self._models[stem]

    def has_model(self, device) -> bool:
        return self.trees_for(device.target) is not None

    def op_time(self, prim_func, node: OpNode, device) -> tuple[float, str]:
        trees = self.trees_for(device.target)
        if trees is None:
            seconds, source = self.fallback.op_time(prim_func, node, device)
            return seconds, source
        log_seconds = trees.predict(kernel_features(prim_func, node)[None, :])[0]
        return float(np.exp(log_seconds)), self.name
