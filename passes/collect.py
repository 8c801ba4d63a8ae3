"""CollectOpGraph: read the operator graph of a fused Relax module."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from tvm_place.errors import UnsupportedModelError
from tvm_place.graph import OpGraph, OpNode

from ._ir import (
    CALL_TIR,
    HINT_ON_DEVICE,
    bindings,
    is_call_to,
    is_external_call,
    tensor_types,
    is_operator,
    main_function,
    operator_callee,
    static_shape,
    symbol_values,
    type_bytes,
    var_operands,
)
from .fold import FoldConstantCalls, FoldConstantReshapes
from .transposed_weights import FuseTransposedWeights

#: DLPack device type codes of ``R.device(device_type, index)`` in ``R.hint_on_device``.
DEVICE_KIND_OF_DL_TYPE = {1: "cpu", 2: "gpu"}

#: Function attribute of a training ``main`` (tvm_place.passes.training): its binding names say
#: which bindings are backward and which forward binding each one differentiates.
TRAINING_ATTR = "tvm_place.training"
#: A backward binding of forward binding ``y`` is named ``y__grad<j>``.
GRAD_SEPARATOR = "__grad"
#: After fusion, a fused operator's binding is named after its members, the anchor first.
MEMBER_SEPARATOR = "+"


@dataclass
class ExternalCall:
    """An operator that calls a function outside the module (``R.call_dps_packed``): its
    symbol, and the types of its arguments and of its output at the costed sizes."""

    name: str
    argument_types: list
    output_type: object


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
    #: The kernel each operator runs, as costed: its PrimFunc with every symbolic dimension at
    #: ``shape_values`` (the callee itself when all its shapes are static), and a key per kernel.
    kernels: list = field(default_factory=list)
    kernel_keys: list[str] = field(default_factory=list)
    #: The size each symbolic dimension of ``main`` was costed at ({} for a static module), and
    #: each operator's output bytes at the dimensions' upper bounds (what memory is sized at).
    shape_values: dict[str, int] = field(default_factory=dict)
    peak_output_bytes: list[float] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    #: The operators that call external functions (``kernels[u]`` is None for them).
    externals: dict[int, ExternalCall] = field(default_factory=dict)
    #: Each weight parameter of ``main`` (those after its ``num_input``) by name: the operator
    #: charged with its bytes (its first reader) and the bytes.
    weights: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: For a training graph: each forward operator with the backward operators that differentiate
    #: it (Tarnawski et al.'s colour classes); empty for an inference graph.
    colour_classes: list[list[int]] = field(default_factory=list)


def collect_op_graph(mod: tvm.IRModule, shape_hints=None) -> CollectedGraph:
    """Read the fused ``call_tir`` operators of ``main`` into an :class:`OpGraph`.

    Per operator: FLOPs (``estimate_tir_flops`` of its PrimFunc), bytes read and written, output
    bytes, and bytes of constants it reads (weights). Edges join the producer of each tensor to its
    consumers, looking through tuples, tuple items and aliases. Symbolic dimensions are sized by
    ``shape_hints`` ({name: int}), else by ``main``'s ``tir_var_upper_bound`` (then
    ``tir_var_lower_bound``) attribute; one with neither is an error naming it.
    """

    main = main_function(mod)
    values = symbol_values(main, shape_hints)
    if not values:
        return _collect(mod)
    # Costed at these sizes: TVM binds them into `main` and specialises each kernel at its call
    # site; the graph is the same, its operators keep the symbolic module's names.
    collected = _collect(at_sizes(mod, values))
    peak = symbol_values(main, shape_hints, bound="upper")
    if peak != values:
        collected.peak_output_bytes = [n.output_bytes for n in _collect(at_sizes(mod, peak)).graph.nodes]
    callees = [operator_callee(b.value) for b in bindings(main) if is_operator(b.value)]
    collected.graph = OpGraph(_named(collected.graph.nodes, callees), collected.graph.edges)
    collected.callees = callees
    collected.shape_values = values
    return collected


def at_sizes(mod: tvm.IRModule, values: dict[str, int]) -> tvm.IRModule:
    """``mod`` with ``main``'s symbolic dimensions at ``values`` and every kernel specialised to
    the static shapes it is called with (:func:`_specialised`)."""
    main = main_function(mod)
    bound = main.bind_symbolic_vars(values)
    builder = relax.BlockBuilder(tvm.IRModule(
        {gv: f for gv, f in mod.functions_items() if gv.name_hint != "main"},
        attrs=mod.attrs, global_infos=mod.global_infos))
    kernels: dict[tuple, relax.GlobalVar] = {}
    kernel_of: dict[relax.Var, relax.GlobalVar] = {}
    for binding in bindings(bound):
        value = binding.value
        if not is_call_to(value, CALL_TIR) or len(value.args) > 2:
            continue
        callee = value.args[0]
        # Per kernel parameter: a tensor's static shape, or a scalar argument's value.
        given = [_scalar(a) if _scalar(a) is not None
                 else static_shape(a.ty, f"an argument of {callee.name_hint!r}") for a in value.args[1].fields]
        given += [static_shape(t, f"the output of {callee.name_hint!r}") for t in tensor_types(binding.var.ty)]
        sizes = _kernel_sizes(mod[callee], given, callee.name_hint)
        key = (callee.name_hint, tuple(sorted((str(v), n) for v, n in sizes.items())))
        if key not in kernels:
            kernels[key] = builder.add_func(_specialised(mod[callee], sizes), f"{callee.name_hint}_at")
        kernel_of[binding.var] = kernels[key]

    def specialise(binding):
        value = binding.value
        if binding.var not in kernel_of:
            return binding.var.name, value
        # Scalar arguments are specialised into the kernel: the call keeps its tensors.
        tensors = relax.Tuple([a for a in value.args[1].fields if _scalar(a) is None])
        return binding.var.name, relax.Call(value.op, [kernel_of[binding.var], tensors],
                                           value.attrs, value.ty_args, value.span)

    builder.add_func(bound, "main")
    return _rebuild_main(builder.get(), specialise)


def _scalar(argument) -> int | None:
    """The value of a scalar argument of a kernel call (a bound symbolic size), else None."""
    if isinstance(argument.ty, relax.TensorType):
        return None
    value = getattr(argument, "value", None)
    return int(value) if isinstance(value, int) else None


def _kernel_sizes(prim_func, given: list, name: str) -> dict:
    """The value of each symbolic variable of ``prim_func``, given per parameter the static
    shape of its buffer at a call (or a scalar parameter's value): a scalar parameter and a
    dimension that is the variable itself give it; a dimension that is an expression of a
    variable nothing else gives (``n * 2``) is solved for it, the expression being linear."""
    sizes = {param: value for param, value in zip(prim_func.params, given) if isinstance(value, int)}
    dims = [(dim, int(size)) for param, shape in zip(prim_func.params, given) if not isinstance(shape, int)
            for dim, size in zip(getattr(param.ty, "shape", None) or [], shape)]
    sizes.update({dim: size for dim, size in dims if isinstance(dim, tvm.tirx.Var)})
    def value_at(expr, values: dict):
        analyzer = tvm.sym.Analyzer()
        for var, size in values.items():
            analyzer.bind(var, tvm.tirx.IntImm(var.ty.dtype, size))
        return analyzer.simplify(expr)

    for dim, size in dims:
        free = [v for v in tvm.tirx.analysis.undefined_vars(dim) if v not in sizes] \
            if not isinstance(dim, (tvm.tirx.Var, tvm.tirx.IntImm)) else []
        if len(free) != 1:
            continue
        var = free[0]
        at = [value_at(dim, {**sizes, var: k}) for k in (0, 1)]
        if all(isinstance(a, tvm.tirx.IntImm) for a in at) and at[1].value != at[0].value:
            solved, rest = divmod(size - at[0].value, at[1].value - at[0].value)
            if not rest:
                sizes[var] = solved
    unsized = {str(v) for dim, _ in dims if not isinstance(dim, tvm.tirx.IntImm)
               for v in tvm.tirx.analysis.undefined_vars(dim) if v not in sizes}
    if unsized:
        raise UnsupportedModelError(
            f"kernel {name!r}: cannot tell the size of its dimension(s) {sorted(unsized)} from the "
            "shapes it is called with; bind them before placing (relax.transform.BindSymbolicVars)"
        )
    return sizes


def _specialised(prim_func, sizes: dict):
    """``prim_func`` with its symbolic variables (and scalar parameters) at ``sizes``: each
    variable made a parameter, then all specialised away (``PrimFunc.specialize`` takes
    parameters only)."""
    if not sizes:
        return prim_func
    params = list(prim_func.params)
    variables = list(sizes)
    with_variables = tvm.tirx.PrimFunc(params + [v for v in variables if not any(v.same_as(p) for p in params)],
                                       prim_func.body, prim_func.ret_type, attrs=prim_func.attrs)
    return with_variables.specialize({v: tvm.tirx.IntImm(v.ty.dtype, sizes[v]) for v in variables})


def _named(nodes: list[OpNode], callees: list[str]) -> list[OpNode]:
    """``nodes`` named after ``callees`` as :func:`_collect` names operators."""
    from dataclasses import replace

    occurrences: dict[str, int] = {}
    named = []
    for node, callee in zip(nodes, callees):
        count = occurrences.get(callee, 0)
        occurrences[callee] = count + 1
        named.append(replace(node, name=callee if count == 0 else f"{callee}#{count}", kind=callee))
    return named


def _collect(mod: tvm.IRModule) -> CollectedGraph:
    """:func:`collect_op_graph` of a module whose shapes are all static."""
    from tvm.s_tir.analysis import estimate_tir_flops

    main = main_function(mod)
    producers: dict[relax.Var, set[int]] = {}
    pending_pins: dict[relax.Var, tuple[str, int]] = {}
    nodes: list[OpNode] = []
    callees: list[str] = []
    edges: set[tuple[int, int]] = set()
    pins: dict[int, tuple[str, int]] = {}
    flops_of: dict[str, float] = {}
    gathered_of: dict[str, dict[int, int]] = {}
    occurrences: dict[str, int] = {}

    for param in main.params:
        producers[param] = set()
    # Parameters after `num_input` (TVM's convention) are weights: their bytes count as the
    # weights of the first operator that reads each one, as a constant's do.
    num_input = (main.attrs or {}).get("num_input")
    weights = set(main.params[int(num_input):]) if num_input is not None else set()
    weight_readers: dict[str, tuple[int, float]] = {}
    externals: dict[int, ExternalCall] = {}
    op_vars: list[relax.Var] = []
    for binding in bindings(main):
        var, value = binding.var, binding.value
        if is_operator(value):
            op_index = len(nodes)
            callee = operator_callee(value)
            external = is_external_call(value)
            if not external and len(value.args) > 2:
                raise UnsupportedModelError(
                    f"operator {callee!r} takes symbolic shape arguments that tvm-place cannot "
                    "size: only dimensions of `main`'s inputs can be symbolic"
                )
            arguments = list(value.args[1].fields)
            output_bytes = type_bytes(var.ty, f"the output of {callee!r}")
            if external:  # its time is measured or given, not estimated from TIR
                externals[op_index] = ExternalCall(callee, [arg.ty for arg in arguments], var.ty)
                gathered_of[callee], flops_of[callee] = {}, 0.0
            if callee not in gathered_of:
                gathered_of[callee] = gathered_elements(mod[value.args[0]], len(arguments))
            input_bytes = 0
            constant_bytes = 0
            constant_accessed = 0
            for position, arg in enumerate(arguments):
                if isinstance(arg, tvm.ir.Constant) or arg in weights:
                    label = f"a constant of {callee!r}"
                    size = type_bytes(arg.ty, label)
                    if arg in weights:
                        weights.discard(arg)
                        weight_readers[arg.name] = (op_index, float(size))
                    constant_bytes += size
                    elements = int(np.prod(static_shape(arg.ty, label), dtype=np.int64))
                    gathered = gathered_of[callee].get(position)
                    # A gather reads the rows its indices pick, not the whole table.
                    constant_accessed += size if gathered is None or elements == 0 else min(
                        size, gathered * (size // elements)
                    )
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
                    bytes_accessed=float(input_bytes + constant_accessed + output_bytes),
                    output_bytes=float(output_bytes),
                    param_bytes=float(constant_bytes),
                )
            )
            callees.append(callee)
            op_vars.append(var)
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
            raise UnsupportedModelError(_not_an_operator(var, value))
    for param in main.params:
        for tensor_type in [param.ty] if isinstance(param.ty, relax.TensorType) else []:
            static_shape(tensor_type, f"input {param.name!r}")
    colour_classes: list[list[int]] = []
    if (main.attrs or {}).get(TRAINING_ATTR):
        nodes, colour_classes = _training_roles(nodes, [v.name for v in op_vars])
    return CollectedGraph(
        graph=OpGraph(nodes, sorted(edges)),
        callees=callees,
        pins=pins,
        kernels=[None if u in externals else mod[callee] for u, callee in enumerate(callees)],
        kernel_keys=[f"external:{callee}" if u in externals else callee for u, callee in enumerate(callees)],
        externals=externals,
        peak_output_bytes=[node.output_bytes for node in nodes],
        input_names=[p.name for p in main.params],
        weights=weight_readers,
        colour_classes=colour_classes,
    )


def _training_roles(nodes: list[OpNode], names: list[str]) -> tuple[list[OpNode], list[list[int]]]:
    """Backward flags and colour classes of a training graph, from its operators' binding names.

    A name lists the operator's members (``a+b+c``, the fusion anchor first); a member named
    ``y__grad<j>`` is backward, of forward binding ``y``. An operator is backward when all its
    members are; a forward operator's colour class holds it and every backward operator whose
    anchor differentiates one of its forward members. A backward operator whose forward binding
    is in no operator (folded away) is left without a class.
    """
    from dataclasses import replace

    owner: dict[str, int] = {}  # forward member name -> operator
    mates: list[str | None] = []
    backward: list[bool] = []
    for u, name in enumerate(names):
        members = name.split(MEMBER_SEPARATOR)
        forward = [m for m in members if GRAD_SEPARATOR not in m]
        for member in forward:
            owner.setdefault(member, u)
        backward.append(not forward)
        mates.append(None if forward else members[0].rsplit(GRAD_SEPARATOR, 1)[0])
    classes: dict[int, list[int]] = {}
    for u, mate in enumerate(mates):
        if mate is not None and mate in owner:
            classes.setdefault(owner[mate], [owner[mate]]).append(u)
    nodes = [replace(node, is_backward=flag) for node, flag in zip(nodes, backward)]
    return nodes, [members for _, members in sorted(classes.items())]


def gathered_elements(prim_func: tvm.tirx.PrimFunc, num_inputs: int) -> dict[int, int]:
    """The inputs of ``prim_func`` it only gathers from, with how many elements it gathers.

    An input is gathered from when every load of it has an index that itself loads from a buffer
    (``table[ids[i], j]``: ``take``, an embedding lookup, alone or fused with other operators).
    Each such load counts once per execution: the product of the trip counts of the loops around
    it (an upper bound; the caller caps it at the input's size). Returns ``{input position:
    elements}`` for those inputs only; an input read directly anywhere, or a load under a loop of
    unknown trip count, leaves the input out (it then counts whole, as before).
    """
    from tvm.s_tir import SBlock

    params = list(prim_func.params)[:num_inputs]
    # input position -> elements gathered so far; None: read directly (not a gather)
    executions: dict[int, int | None] = {}
    trip_counts: list[int | None] = []

    def position_of(source) -> int | None:
        for position, param in enumerate(params):
            if source.same_as(param):
                return position
        return None

    def loads_from_a_buffer(index) -> bool:
        found = []
        tvm_ffi.structural_walk(index, [(tvm.ir.TensorLoad, found.append)])
        return bool(found)

    def on_for(loop, visitor):
        extent, step = loop.extent, getattr(loop, "step", None)
        count = None
        static_step = step is None or isinstance(step, tvm.tirx.IntImm)
        if isinstance(extent, tvm.tirx.IntImm) and static_step:
            stride = 1 if step is None else max(int(step.value), 1)
            count = -(-int(extent.value) // stride)
        trip_counts.append(count)
        visitor.visit(loop.body)
        trip_counts.pop()

    def on_block(block, visitor):
        # The body and init only: the declared read regions repeat the loads symbolically.
        visitor.visit(block.body)
        if block.init is not None:
            visitor.visit(block.init)

    def on_load(load, visitor):
        position = position_of(load.source)
        if position is not None and executions.get(position, 0) is not None:
            indirect = any(loads_from_a_buffer(index) for index in load.indices)
            count = None if None in trip_counts else int(np.prod(trip_counts, dtype=np.int64))
            gathered = indirect and count is not None
            executions[position] = executions.get(position, 0) + count if gathered else None
        for index in load.indices:
            visitor.visit(index)

    tvm_ffi.structural_visit(
        prim_func.body,
        [
            (tvm.tirx.For, on_for),
            (SBlock, on_block),
            (tvm.ir.TensorLoad, on_load),
        ],
    )
    return {position: count for position, count in executions.items() if count is not None}


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


def _is_training(mod: tvm.IRModule) -> bool:
    names = [gv.name_hint for gv in mod.get_global_vars()]
    return "main" in names and isinstance(mod["main"], relax.Function) and bool(
        (mod["main"].attrs or {}).get(TRAINING_ATTR))


def _rebuild_main(mod: tvm.IRModule, rewrite) -> tvm.IRModule:
    """``mod`` with each binding of ``main`` replaced by ``rewrite(binding) -> (name, value)``."""
    from ._ir import replace_main, substitute

    main = mod["main"]
    var_map: dict = {}
    blocks = []
    for block in main.body.blocks:
        new_bindings = []
        for binding in block.bindings:
            name, value = rewrite(binding)
            value = substitute(value, var_map) if not isinstance(value, relax.Call) else relax.Call(
                value.op, [substitute(a, var_map) for a in value.args], value.attrs, value.ty_args,
                value.span)
            var = binding.var
            if name != var.name:
                var = type(var)(name, var.ty)
                var_map[binding.var] = var
            new_bindings.append(relax.VarBinding(var, value))
        blocks.append(type(block)(new_bindings))
    body = relax.BlockBuilder().normalize(relax.SeqExpr(blocks, substitute(main.body.body, var_map)))
    return replace_main(mod, relax.Function(main.params, body, body.ty, main.is_pure, main.attrs))


#: Call attribute naming the binding an operator came from (training graphs, around FuseOps).
MEMBER_ATTR = "tvm_place.member"


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.TagTrainingCalls")
def _tag_training_calls(mod: tvm.IRModule, ctx) -> tvm.IRModule:
    """Training graphs, before FuseOps: each ``call_tir`` carries its binding's name as a call
    attribute. FuseOps renames a fused group's output variable, and merges structurally equal
    groups into one function; the attribute survives the first and prevents the second."""
    if not _is_training(mod):
        return mod

    def tag(binding):
        value = binding.value
        if is_call_to(value, CALL_TIR):
            attrs = tvm.ir.make_node("ir.DictAttrs", **{MEMBER_ATTR: binding.var.name})
            value = relax.Call(value.op, value.args, attrs, value.ty_args, value.span)
        return binding.var.name, value

    return _rebuild_main(mod, tag)


def _member(call: relax.Call) -> str | None:
    attrs = call.attrs
    if isinstance(attrs, tvm.ir.attrs.DictAttrs) and MEMBER_ATTR in attrs:
        return str(attrs[MEMBER_ATTR])
    return None


@tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.NameFusedCalls")
def _name_fused_calls(mod: tvm.IRModule, ctx) -> tvm.IRModule:
    """Training graphs, after FuseOps: name each fused call after its members, the anchor (highest
    operator pattern) first, for :func:`collect_op_graph`; drop the member attributes of the calls
    left unfused."""
    if not _is_training(mod):
        return mod
    functions = {}
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function) and gv.name_hint != "main" and func.body.blocks:
            members = []
            bindings_ = list(func.body.blocks[0].bindings)
            for inner in bindings_:
                call = inner.value
                if is_call_to(call, CALL_TIR) and _member(call) is not None:
                    prim = mod[call.args[0]]
                    members.append((int((prim.attrs or {}).get("op_pattern", -1)), _member(call)))
            if members:
                anchor = max(range(len(members)), key=lambda i: (members[i][0], -i))
                functions[gv] = [members[anchor][1]] + [
                    m for i, (_, m) in enumerate(members) if i != anchor]

    def name(binding):
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar) \
                and value.op in functions:
            return MEMBER_SEPARATOR.join(functions[value.op]), value
        if is_call_to(value, CALL_TIR) and _member(value) is not None:
            return binding.var.name, relax.Call(value.op, value.args, None, value.ty_args, value.span)
        return binding.var.name, value

    return _rebuild_main(mod, name)


def _not_an_operator(var: relax.Var, value: relax.Expr) -> str:
    """Why a binding of ``main`` is not a placeable operator, and what to do."""
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        what = value.op.name
        if what in ("relax.call_dps_packed", "relax.call_pure_packed", "relax.call_packed"):
            callee = value.args[0]
            name = getattr(callee, "global_symbol", None) or getattr(callee, "name_hint", str(callee))
            return (f"`main` binds {var.name!r} to the external function {name!r} ({what}): "
                    "tvm-place places TIR operators and cannot yet cost or place an external "
                    "call; write it as a Relax operator, or keep it out of the placed function")
        return (f"`main` binds {var.name!r} to {what}, which is not a TIR operator. Lower the "
                "module with tvm_place.passes.prepare_pipeline() first (tvm_place.compile does); "
                f"if it was lowered, TVM's pipeline has no legalization for {what}: register one "
                "(LegalizeOps' customize_legalize_map) or replace the operator")
    what = type(value).__name__
    if isinstance(value, relax.Call):
        what = f"a call of {getattr(value.op, 'name_hint', what)}"
    return (f"`main` binds {var.name!r} to {what}, which is not a TIR operator; tvm-place places "
            "`call_tir` operators: run tvm_place.passes.prepare_pipeline() on the module first")


#: The target whose TVM pipeline lowers the module before placement: its TIR is target-generic
#: (no thread bindings), and each stage gets its own target's schedules when it is built.
PREPARE_TARGET = "llvm"


def prepare_pipeline() -> tvm.transform.Pass:
    """TVM's own lowering up to fused TIR operators: what :class:`CollectOpGraph` expects.

    The passes are TVM's, taken from its CPU pipeline
    (``relax.backend.cpu_generic``: the library dispatch passes, which lower sort, scan, top-k
    and sampling, then the legalize passes up to FuseTIR), so whatever TVM's pipeline lowers is
    lowered here too; then dead code elimination. Before legalization,
    :class:`~.transposed_weights.FuseTransposedWeights` makes each matmul by a transposed constant
    weight one kernel that reads the weight as stored (no transposed copy to fold). Then
    :class:`~.fold.FoldConstantCalls` runs before
    TVM's ``FoldConstant`` and folds the same calls to the same constants from one build (TVM's
    builds a module per folded kernel). ``R.hint_on_device`` survives it as a boundary
    that fusion does not cross. For a training graph (``main`` has the ``tvm_place.training``
    attribute) two name-keeping passes around FuseOps carry each operator's forward/backward role
    into the fused operators' names.
    """
    from tvm.relax.backend import cpu_generic

    target = tvm.target.Target(PREPARE_TARGET)
    passes = []
    for tvm_pass in cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target):
        # weights read in place, not folded transposed; reshaped constants folded, not built
        if tvm_pass.info.name == "LegalizeOps":
            passes += [FuseTransposedWeights, FoldConstantReshapes, tvm_pass]
        elif tvm_pass.info.name == "FuseOps":
            passes += [_tag_training_calls, tvm_pass, _name_fused_calls]
        elif tvm_pass.info.name == "FoldConstant":  # the same folding, one build for all kernels
            passes += [FoldConstantCalls, tvm_pass]
        else:
            passes.append(tvm_pass)
    if any(ours not in passes for ours in (FuseTransposedWeights, _name_fused_calls, FoldConstantCalls)):
        raise RuntimeError("TVM's CPU legalize passes have no LegalizeOps, FuseOps or FoldConstant: "
                           "this TVM is not supported")
    sequence = tvm.transform.Sequential(
        passes + [relax.transform.DeadCodeElimination()], name="tvm_place.prepare_passes"
    )

    @tvm.ir.transform.module_pass(opt_level=0, name="tvm_place.prepare")
    def prepare(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        with target:  # the dispatch passes choose their kernels for the current target
            return sequence(mod)

    return prepare
