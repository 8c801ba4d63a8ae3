"""CollectOpGraph: read the operator graph of a fused Relax module."""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax

from tvm_place.errors import UnsupportedModelError
from tvm_place.graph import OpGraph, OpNode

from ._ir import (
    CALL_TIR,
    HINT_ON_DEVICE,
    bindings,
    is_call_to,
    main_function,
    static_shape,
    type_bytes,
    var_operands,
)

#: DLPack device type codes of ``R.device(device_type, index)`` in ``R.hint_on_device``.
DEVICE_KIND_OF_DL_TYPE = {1: "cpu", 2: "gpu"}


@dataclass
class CollectedGraph:
    """What :class:`CollectOpGraph` reads from a module.

    ``graph`` numbers the ``call_tir`` bindings of ``main`` in binding order; ``callees[u]`` is the
    name of the PrimFunc operator ``u`` calls; ``pins[u]`` is ``(kind, index)`` from a user's
    ``R.hint_on_device`` (kind ``"cpu"`` or ``"gpu"``, index among devices of that kind).
    """

    graph: OpGraph
    callees: list[str]
    pins: dict[int, tuple[str, int]] = field(default_factory=dict)
    input_names: list[str] = field(default_factory=list)


def collect_op_graph(mod: tvm.IRModule) -> CollectedGraph:
    """Read the fused ``call_tir`` operators of ``main`` into an :class:`OpGraph`.

    Per operator: FLOPs (``estimate_tir_flops`` of its PrimFunc), bytes read and written, output
    bytes, and bytes of constants it reads (weights). Edges join the producer of each tensor to its
    consumers, looking through tuples, tuple items and aliases. Every shape must be static.
    """
    from tvm.s_tir.analysis import estimate_tir_flops

    main = main_function(mod)
    producers: dict[relax.Var, set[int]] = {}
    pending_pins: dict[relax.Var, tuple[str, int]] = {}
    nodes: list[OpNode] = []
    callees: list[str] = []
    edges: set[tuple[int, int]] = set()
    pins: dict[int, tuple[str, int]] = {}
    flops_of: dict[str, float] = {}
    occurrences: dict[str, int] = {}

    for param in main.params:
        producers[param] = set()
    for binding in bindings(main):
        var, value = binding.var, binding.value
        if is_call_to(value, CALL_TIR):
            op_index = len(nodes)
            callee = value.args[0].name_hint
            if len(value.args) > 2:
                raise UnsupportedModelError(
                    f"operator {callee!r} takes symbolic shape arguments; dynamic shapes are not "
                    "supported: bind them to numbers first (relax.transform.BindSymbolicVars)"
                )
            arguments = list(value.args[1].fields)
            output_bytes = type_bytes(var.ty, f"the output of {callee!r}")
            input_bytes = 0
            constant_bytes = 0
            for arg in arguments:
                if isinstance(arg, tvm.ir.Constant):
                    constant_bytes += type_bytes(arg.ty, f"a constant of {callee!r}")
                else:
                    input_bytes += type_bytes(arg.ty, f"an input of {callee!r}")
                if isinstance(arg, relax.Var):
                    for producer in producers[arg]:
                        edges.add((producer, op_index))
                    if arg in pending_pins:
                        pins[op_index] = pending_pins[arg]
            if callee not in flops_of:
                prim_func = mod[value.args[0]]
                flops_of[callee] = float(estimate_tir_flops(tvm.IRModule({"main": prim_func})))
            count = occurrences.get(callee, 0)
            occurrences[callee] = count + 1
            nodes.append(
                OpNode(
                    name=callee if count == 0 else f"{callee}#{count}",
                    kind=callee,
                    flops=flops_of[callee],
                    bytes_accessed=float(input_bytes + constant_bytes + output_bytes),
                    output_bytes=float(output_bytes),
                    param_bytes=float(constant_bytes),
                )
            )
            callees.append(callee)
            producers[var] = {op_index}
        elif is_call_to(value, HINT_ON_DEVICE):
            source = value.args[0]
            device = value.attrs.device_type, value.attrs.index
            kind = DEVICE_KIND_OF_DL_TYPE.get(int(device[0]))
            if kind is None:
                raise UnsupportedModelError(
                    f"R.hint_on_device on {var.name!r} names device type {int(device[0])}; "
                    "tvm-place places on CPU (1) and CUDA (2) devices"
                )
            pin = (kind, int(device[1]))
            source_producers = producers.get(source, set()) if isinstance(source, relax.Var) else set()
            if source_producers:
                for producer in source_producers:
                    pins[producer] = pin
            else:
                # A hint on a function input pins the operators that read the hinted value.
                pending_pins[var] = pin
            producers[var] = set(source_producers)
        elif isinstance(value, (relax.Tuple, relax.TupleGetItem, relax.Var, tvm.ir.Constant)):
            producers[var] = set().union(*(producers.get(v, set()) for v in var_operands(value)))
        else:
            what = value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else type(value).__name__
            raise UnsupportedModelError(
                f"`main` binds {var.name!r} to {what}, which is not a TIR operator; tvm-place places "
                "`call_tir` operators: lower the module first (tvm_place.passes.prepare_pipeline(), "
                "or LegalizeOps + FuseOps + FuseTIR) or replace the unsupported operator"
            )
    for param in main.params:
        for tensor_type in [param.ty] if isinstance(param.ty, relax.TensorType) else []:
            static_shape(tensor_type, f"input {param.name!r}")
    return CollectedGraph(
        graph=OpGraph(nodes, sorted(edges)),
        callees=callees,
        pins=pins,
        input_names=[p.name for p in main.params],
    )


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.CollectOpGraph")
class CollectOpGraph:
    """Analysis pass: read the operator graph of ``main``; the module passes through unchanged.

    Reads: the fused ``call_tir`` bindings of ``main`` (run it after ``FuseOps`` + ``FuseTIR``, or
    after :func:`prepare_pipeline`), their PrimFuncs, and ``R.hint_on_device`` pins.
    Writes: nothing to the module; the result is :attr:`result`, a :class:`CollectedGraph`.
    """

    def __init__(self) -> None:
        self.result: CollectedGraph | None = None

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        self.result = collect_op_graph(mod)
        return mod


def prepare_pipeline() -> tvm.transform.Pass:
    """TVM's own lowering up to fused TIR operators: what :class:`CollectOpGraph` expects.

    ``R.hint_on_device`` survives it as a boundary that fusion does not cross.
    """
    return tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ],
        name="tvm_place.prepare",
    )
