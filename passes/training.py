"""Training graphs: a model's forward pass, a scalar loss, and the gradient of every weight.

Any inference module (a user's own or a registry model's) becomes a training step that placement
understands: :func:`training_module` turns an inference module (``main`` takes the data inputs, the weights are
constants inside it) into a training step:

1. every weight constant becomes a parameter of ``main`` (after the data inputs and the label),
   so that Relax can differentiate with respect to it; the function attribute ``num_input`` (TVM's
   convention) says how many leading parameters are runtime inputs, and
   :func:`tvm_place.passes.collect_op_graph` counts the bytes of the others as the weights of the
   first operator that reads each one;
2. a scalar loss is added: softmax cross-entropy against a probability label for a classifier
   (output ``(batch, classes)``), the mean squared error against a target of the output's shape
   otherwise;
3. ``relax.transform.DecomposeOpsForTraining`` (batch and layer norms in training mode), then
   ``relax.transform.Gradient``. ``main`` returns ``(loss, grad_1, ..., grad_k)``, one gradient per
   weight parameter, in order.

Backward operators are marked and tied to the forward operator they differentiate (Tarnawski et
al., NeurIPS 2020: a forward node and its backward nodes share a colour class). While the gradient
pass runs, every registered operator gradient is wrapped so that the partial derivatives of the
forward binding ``y`` are bound to named variables; each backward binding then belongs to the
forward binding whose gradient it was emitted for. The result is written into the variable names:
a backward binding of forward binding ``y`` is named ``y__grad<j>``, and ``main`` carries the
attribute ``tvm_place.training``. The names survive LegalizeOps; ``prepare_pipeline`` records the
members of each fused operator in its binding's name, and ``collect_op_graph`` reads them back into
``OpNode.is_backward`` and ``CollectedGraph.colour_classes``.

TVM 0.27 has no gradient for ``gelu``, ``gelu_tanh``, ``rms_norm``, ``conv2d_transpose``,
``adaptive_avg_pool2d`` and ``erf``; they are registered here (checked against finite differences in
tests/test_training.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from tvm_place.errors import UnsupportedModelError

from ._ir import substitute, var_operands
from .collect import GRAD_SEPARATOR, TRAINING_ATTR

LOSSES = ("auto", "cross-entropy", "mse")

_GRADIENT_ATTR = "FPrimalGradient"
_MARK_PREFIX = "tvmplace_partial"
_PASS_THROUGH_OPS = ("relax.grad.no_grad", "relax.null_value")


# -- gradients TVM 0.27 lacks ------------------------------------------------------------------
def _const(value: float, like: relax.Expr) -> tvm.ir.Constant:
    return relax.const(value, str(like.ty.dtype))


def _gelu_grad(orig_var, orig_call, output_grad, ctx):
    """d/dx x * Phi(x) = Phi(x) + x * phi(x)."""
    x = orig_call.args[0]
    cdf = _const(0.5, x) * (_const(1.0, x) + relax.op.erf(x * _const(1 / math.sqrt(2), x)))
    pdf = relax.op.exp(_const(-0.5, x) * x * x) * _const(1 / math.sqrt(2 * math.pi), x)
    return [output_grad * (cdf + x * pdf)]


def _gelu_tanh_grad(orig_var, orig_call, output_grad, ctx):
    """y = x/2 (1 + tanh(u)), u = c (x + a x^3): dy/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 a x^2)."""
    x = orig_call.args[0]
    c, a = math.sqrt(2 / math.pi), 0.044715
    t = relax.op.tanh(_const(c, x) * (x + _const(a, x) * x * x * x))
    half, one = _const(0.5, x), _const(1.0, x)
    du = _const(c, x) * (one + _const(3 * a, x) * x * x)
    return [output_grad * (half * (one + t) + half * x * (one - t * t) * du)]


def _rms_norm_grad(orig_var, orig_call, output_grad, ctx):
    """y = x r w with r = (mean(x^2) + eps)^-1/2: dw = sum(dy x r); dx = r (g - n mean(g n)),
    where n = x r and g = dy w."""
    x, weight = orig_call.args
    axes = [int(a) for a in orig_call.attrs.axes]
    eps = _const(float(orig_call.attrs.epsilon), x)
    one = _const(1.0, x)
    r = one / relax.op.sqrt(relax.op.mean(x * x, axis=axes, keepdims=True) + eps)
    normed = x * r
    g = output_grad * weight
    x_grad = r * (g - normed * relax.op.mean(g * normed, axis=axes, keepdims=True))
    weight_grad = relax.op.collapse_sum_to(output_grad * normed, weight.ty.shape)
    return [x_grad, weight_grad]


def _conv2d_transpose_grad(orig_var, orig_call, output_grad, ctx):
    """conv2d_transpose(x, W) is the data gradient of conv2d(., W): its data gradient is that
    conv2d of dy, and its weight gradient is conv2d's weight gradient with data dy and output
    gradient x."""
    from tvm.relax.op import _op_gradient

    attrs = orig_call.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "IOHW", "NCHW"):
        raise UnsupportedModelError(
            "the conv2d_transpose gradient supports NCHW data and IOHW kernels only, not "
            f"{attrs.data_layout}/{attrs.kernel_layout}/{attrs.out_layout}"
        )
    x, weight = orig_call.args
    forward_conv = relax.op.nn.conv2d(
        output_grad, weight, attrs.strides, attrs.padding, attrs.dilation, attrs.groups,
        out_dtype=attrs.out_dtype,
    )
    x_grad = ctx.normalize(forward_conv)
    # conv2d's own gradient rule, read for its weight part only (data = dy, output grad = x).
    _, weight_grad = _op_gradient.conv2d_grad(x, forward_conv, x, ctx)
    return [x_grad, weight_grad]


def _adaptive_weights(size: int, out: int) -> np.ndarray:
    """The (out, size) averaging matrix of a 1-D adaptive average pool (PyTorch's windows)."""
    matrix = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _adaptive_avg_pool2d_grad(orig_var, orig_call, output_grad, ctx):
    """An adaptive average pool is y = A_h x A_w^T per channel: dx = A_h^T dy A_w."""
    x = orig_call.args[0]
    attrs = orig_call.attrs
    if attrs.layout != "NCHW" or attrs.out_layout != "NCHW":
        raise UnsupportedModelError("the adaptive_avg_pool2d gradient supports NCHW only")
    height, width = (int(x.ty.shape[i]) for i in (2, 3))
    out_h, out_w = (int(orig_var.ty.shape[i]) for i in (2, 3))
    rows = relax.const(_adaptive_weights(height, out_h).T.copy(), str(x.ty.dtype))
    columns = relax.const(_adaptive_weights(width, out_w), str(x.ty.dtype))
    return [relax.op.matmul(relax.op.matmul(rows, output_grad), columns)]


def _erf_grad(orig_var, orig_call, output_grad, ctx):
    """d/dx erf(x) = 2 / sqrt(pi) exp(-x^2)."""
    x = orig_call.args[0]
    return [output_grad * _const(2 / math.sqrt(math.pi), x) * relax.op.exp(relax.op.negative(x * x))]


_EXTRA_GRADIENTS: dict[str, Callable] = {
    "relax.erf": _erf_grad,
    "relax.nn.gelu": _gelu_grad,
    "relax.nn.gelu_tanh": _gelu_tanh_grad,
    "relax.nn.rms_norm": _rms_norm_grad,
    "relax.nn.conv2d_transpose": _conv2d_transpose_grad,
    "relax.nn.adaptive_avg_pool2d": _adaptive_avg_pool2d_grad,
}


def register_missing_gradients() -> None:
    """Register the gradients above for the operators that have none (idempotent)."""
    for name, gradient in _EXTRA_GRADIENTS.items():
        if tvm.ir.Op.get(name).get_attr(_GRADIENT_ATTR) is None:
            tvm.ir.register_op_attr(name, _GRADIENT_ATTR, gradient, 10)


# -- building the training module ------------------------------------------------------------
def _bindings(func: relax.Function) -> list[relax.VarBinding]:
    body = func.body
    if not isinstance(body, relax.SeqExpr) or len(body.blocks) != 1 or not isinstance(
        body.blocks[0], relax.DataflowBlock
    ):
        raise UnsupportedModelError(
            "main must be one dataflow block to be differentiated (relax.transform.ConvertToDataflow)"
        )
    for binding in body.blocks[0].bindings:
        if not isinstance(binding, relax.VarBinding):
            raise UnsupportedModelError(f"main binds {binding.var.name!r} by match_cast; give static shapes")
    return list(body.blocks[0].bindings)


def _rebuild(func: relax.Function, params: list[relax.Var], mapping: dict,
             name_of: Callable[[int, relax.VarBinding], str], output=None,
             extra: Callable | None = None, attrs: dict | None = None) -> relax.Function:
    """``func``'s one dataflow block re-emitted with new variable names, constants or variables
    replaced through ``mapping``; ``extra(bb, result)`` may emit more bindings and returns the new
    result."""
    bb = relax.BlockBuilder()
    with bb.function("main", params, attrs=attrs):
        with bb.dataflow():
            for index, binding in enumerate(_bindings(func)):
                value = bb.normalize(substitute(binding.value, mapping))
                var = relax.DataflowVar(name_of(index, binding), value.ty)
                bb.emit_normalized(relax.VarBinding(var, value))
                mapping[binding.var] = var
            result = substitute(func.body.body if output is None else output, mapping)
            if extra is not None:
                result = extra(bb, result)
            result = bb.emit_output(result)
        bb.emit_func_output(result)
    return bb.get()["main"]


def _unique(name: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", name.replace(GRAD_SEPARATOR, "_grad")) or "v"
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _weight_constants(func: relax.Function, params: dict[str, np.ndarray] | None):
    """The constants of ``main`` that are weights, with names: those whose memory or values are a
    weight of ``params``; without ``params``, every floating-point constant of rank >= 1."""
    by_pointer = {}
    by_content: dict[tuple, list[str]] = {}
    for name, array in (params or {}).items():
        array = np.asarray(array)
        by_pointer[(array.__array_interface__["data"][0], array.shape)] = name
        by_content.setdefault((array.shape, str(array.dtype)), []).append(name)
    found: list[tuple[tvm.ir.Constant, str]] = []
    seen: set = set()
    for binding in _bindings(func):
        value = binding.value
        args = value.args if isinstance(value, relax.Call) else getattr(value, "fields", [])
        for arg in args:
            if not isinstance(arg, tvm.ir.Constant) or arg in seen:
                continue
            ty = arg.ty
            if not (str(ty.dtype).startswith(("float", "bfloat")) and len(ty.shape) >= 1):
                continue
            seen.add(arg)
            data = np.from_dlpack(arg.value)
            if params is None:
                found.append((arg, "weight"))
                continue
            name = by_pointer.get((data.__array_interface__["data"][0], data.shape))
            if name is None:
                name = next((n for n in by_content.get((data.shape, str(data.dtype)), [])
                             if np.array_equal(np.asarray(params[n]), data)), None)
            if name is not None:  # masks, rotary tables and the like stay constants
                found.append((arg, name))
    return found


def _loss_expr(kind: str, output: relax.Expr, label: relax.Expr) -> relax.Expr:
    if kind == "cross-entropy":
        return relax.op.nn.cross_entropy_with_logits(relax.op.nn.log_softmax(output, axis=-1), label)
    diff = relax.op.subtract(output, label)
    return relax.op.mean(relax.op.multiply(diff, diff))


def loss_kind(output_type, loss: str = "auto") -> str:
    """The loss used for an output type: ``auto`` is cross-entropy for ``(batch, classes)``
    outputs with more than one class, MSE otherwise."""
    if loss not in LOSSES:
        raise UnsupportedModelError(f"unknown loss {loss!r}; use one of {LOSSES}")
    if not isinstance(output_type, relax.TensorType) or not str(output_type.dtype).startswith("float"):
        raise UnsupportedModelError(
            f"main returns {output_type}; a training graph needs one floating-point tensor output"
        )
    if loss != "auto":
        return loss
    shape = [int(d) for d in output_type.shape]
    return "cross-entropy" if len(shape) == 2 and shape[1] > 1 else "mse"


def _differentiate(mod: tvm.IRModule, weights: list[relax.Var]):
    """Run Gradient with every registered operator gradient wrapped so that the partials of
    forward binding ``y`` are bound to ``tvmplace_partial<k>_<i>``; returns the adjoint function
    and the forward variable names in the order the partials were emitted (k)."""
    register_missing_gradients()
    marks: list[str] = []
    saved: dict[str, Callable] = {}

    def wrap(original):
        def wrapper(orig_var, orig_call, output_grad, ctx):
            k = len(marks)
            marks.append(orig_var.name)
            partials = original(orig_var, orig_call, output_grad, ctx)

            def bind(expr, i):
                if expr is None or (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)
                                    and expr.op.name in _PASS_THROUGH_OPS):
                    return expr
                if isinstance(expr, relax.Tuple):
                    return relax.Tuple([bind(f, f"{i}_{j}") for j, f in enumerate(expr.fields)])
                return ctx.emit(expr, name_hint=f"{_MARK_PREFIX}{k}_{i}")

            return [bind(p, i) for i, p in enumerate(partials)]

        return wrapper

    for name in tvm.ir.Op.list_op_names():
        op = tvm.ir.Op.get(name)
        original = op.get_attr(_GRADIENT_ATTR)
        if original is not None:
            saved[name] = original
    try:
        for name, original in saved.items():
            tvm.ir.Op.get(name).reset_attr(_GRADIENT_ATTR)
            tvm.ir.register_op_attr(name, _GRADIENT_ATTR, wrap(original), 10)
        try:
            differentiated = relax.transform.Gradient("main", require_grads=weights)(mod)
        except Exception as err:  # TVM's errors: say which operator, in one line
            lines = [line for line in str(err).strip().splitlines() if line.strip()]
            raise UnsupportedModelError(
                f"Relax cannot differentiate this model: {lines[-1] if lines else err!r}"
            ) from None
    finally:
        for name, original in saved.items():
            tvm.ir.Op.get(name).reset_attr(_GRADIENT_ATTR)
            tvm.ir.register_op_attr(name, _GRADIENT_ATTR, original, 10)
    return differentiated["main_adjoint"], marks


def _roles(adjoint: relax.Function, num_forward: int, marks: list[str]) -> dict[str, int]:
    """For each binding name of the adjoint function, the index of the forward binding it belongs
    to (a forward binding: itself; a backward one: the forward binding it differentiates)."""
    bindings = _bindings(adjoint)
    forward_index = {b.var.name: i for i, b in enumerate(bindings[:num_forward])}
    role: dict[str, int] = dict(forward_index)
    mark_pattern = re.compile(rf"^{_MARK_PREFIX}(\d+)_")
    segment_vars: dict[str, int] = {}
    pending: list[str] = []
    last = None
    for binding in bindings[num_forward:]:
        name = binding.var.name
        match = mark_pattern.match(name)
        if match:
            k = int(match.group(1))
            segment = forward_index.get(marks[k])
            segment_vars[name] = segment
            for earlier in pending:  # what was emitted before the partials: their operands
                role[earlier] = segment
            pending, last = [], segment
            role[name] = segment
            continue
        used = [segment_vars[v.name] for v in var_operands(binding.value) if v.name in segment_vars]
        if used:  # an adjoint accumulating partials
            role[name] = segment_vars[name] = used[-1]
        else:
            pending.append(name)
    for name in pending:  # output aliases and what trails the last partial
        role[name] = last
    return role


def training_module(
    mod: tvm.IRModule,
    params: dict[str, np.ndarray] | None = None,
    loss: str = "auto",
) -> tuple[tvm.IRModule, dict[str, np.ndarray], str]:
    """A training step of an inference module: see the module docstring.

    Parameters
    ----------
    mod : tvm.IRModule
        ``main`` takes the data inputs; the weights are constants in it.
    params : dict[str, numpy.ndarray] | None
        The weights by name (a registry model's ``Model.params``): constants whose memory or values
        match one become weight parameters named after it (others, such as attention masks, stay
        constants). None: every floating-point constant of rank >= 1 is a weight.
    loss : str
        ``"auto"``, ``"cross-entropy"`` or ``"mse"`` (see :func:`loss_kind`).

    Returns
    -------
    (module, weights, loss)
        ``main(*data, label, *weights) -> (loss, grad_1, ..., grad_k)``; ``weights`` are the
        weight parameters' values by parameter name, in order (views of the constants, no copy);
        ``loss`` is the loss used.

    Raises
    ------
    UnsupportedModelError
        When ``main`` has no single floating-point tensor output, no weight, or an operator Relax
        cannot differentiate (the message names it).
    """
    main = mod["main"]
    data_params = list(main.params)
    kind = loss_kind(main.body.body.ty, loss)
    constants = _weight_constants(main, params)
    if not constants:
        raise UnsupportedModelError("main has no weight constant to differentiate")
    taken = {p.name for p in data_params} | {"label"}
    weight_vars, weight_values, mapping = [], {}, {}
    shared: dict[str, relax.Var] = {}
    for constant, name in constants:
        if name in shared and params is not None:  # tied weights: one parameter
            mapping[constant] = shared[name]
            continue
        var = relax.Var(_unique(name, taken), constant.ty)
        shared[name] = mapping[constant] = var
        weight_vars.append(var)
        weight_values[var.name] = np.from_dlpack(constant.value)
    label = relax.Var("label", main.body.body.ty)
    taken_forward: set[str] = set()
    forward = _rebuild(
        main,
        data_params + [label] + weight_vars,
        mapping,
        lambda i, b: _unique(b.var.name, taken_forward),
        extra=lambda bb, result: bb.emit(_loss_expr(kind, result, label), name_hint=_unique("loss", taken_forward)),
    )
    forward_mod = relax.transform.DecomposeOpsForTraining("main")(tvm.IRModule({"main": forward}))
    # Decomposition names its bindings `lv...` again: make them unique for the role map.
    decomposed = forward_mod["main"]
    taken_forward = set()
    decomposed = _rebuild(decomposed, list(decomposed.params), {},
                          lambda i, b: _unique(b.var.name, taken_forward))
    used = set()
    for binding in _bindings(decomposed):
        used.update(v.name for v in var_operands(binding.value))
    weight_vars = [v for v in decomposed.params[len(data_params) + 1:] if v.name in used]
    weight_values = {v.name: weight_values[v.name] for v in weight_vars}
    decomposed = relax.Function(
        list(decomposed.params[: len(data_params) + 1]) + weight_vars,
        decomposed.body, decomposed.body.ty, decomposed.is_pure, decomposed.attrs,
    )
    num_forward = len(_bindings(decomposed))
    adjoint, marks = _differentiate(tvm.IRModule({"main": decomposed}), weight_vars)
    role = _roles(adjoint, num_forward, marks)
    # Name every binding after its role: forward ones keep their names, backward ones become
    # `<forward name>__grad<j>`; then return (loss, grad_1, ..., grad_k) flat.
    bindings = _bindings(adjoint)
    forward_names = [b.var.name for b in bindings[:num_forward]]
    counters: dict[int, int] = {}

    def name_of(index: int, binding: relax.VarBinding) -> str:
        owner = role.get(binding.var.name)
        if index < num_forward:
            return binding.var.name
        if owner is None:
            return f"backward{index}"
        counters[owner] = counters.get(owner, 0) + 1
        return f"{forward_names[owner]}{GRAD_SEPARATOR}{counters[owner]}"

    result = adjoint.body.body
    loss_value, grads = result.fields[0], list(result.fields[1].fields)
    attrs = {"num_input": len(data_params) + 1, TRAINING_ATTR: 1}
    final = _rebuild(adjoint, list(adjoint.params), {}, name_of,
                     output=relax.Tuple([loss_value, *grads]), attrs=attrs)
    final = final.with_attr("global_symbol", "main")
    return tvm.IRModule({"main": final}), weight_values, kind


def training_inputs(mod: tvm.IRModule, data: list[np.ndarray], weights: dict[str, np.ndarray],
                    loss: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The arguments of a training ``main``: ``data``, a random label (one-hot classes for
    cross-entropy, standard normal targets for MSE), then the weights in parameter order."""
    main = mod["main"]
    label_param = main.params[len(data)]
    shape = tuple(int(d) for d in label_param.ty.shape)
    if loss == "cross-entropy":
        label = np.zeros(shape, np.float32)
        label[np.arange(shape[0]), rng.integers(0, shape[1], size=shape[0])] = 1.0
    else:
        label = rng.standard_normal(shape).astype(np.float32)
    return [*data, label, *(weights[p.name] for p in main.params[len(data) + 1:])]
