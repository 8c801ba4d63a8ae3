"""Training graphs (tvm_place.passes.training): gradients, backward marks, colour classes, placement.

Small sizes only: a two-layer MLP built here, and registry models shrunk with their size
overrides. The gradients TVM 0.27 lacks (registered by tvm_place.passes.training) are checked
against central finite differences in float64; a registry model's weight gradients are checked the
same way through its training module; a placed, split and compiled training step is compared with
the unsplit module built by tvm.compile.
"""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_place
from tvm_place import models
from tvm_place.compiler import place
from tvm_place.errors import UnsupportedModelError
from tvm_place.evaluate import validate
from tvm_place.passes.training import register_missing_gradients, training_module
from tvm_place.passes import collect_op_graph, prepare_pipeline
from tvm_place.passes._ir import CALL_TIR, is_call_to
from tvm_place.solvers.grouping import colocation_groups

FAST_LLVM = tvm.target.Target({"kind": "llvm", "opt-level": 0})
TINY_BERT = {"seq_len": 8, "hidden": 32, "heads": 4, "ffn": 64}


def _run(mod: tvm.IRModule, function: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(tvm.compile(mod, target=FAST_LLVM), tvm.cpu())
    out = vm[function](*[tvm.runtime.tensor(x) for x in inputs])

    def flat(value):
        return [value.numpy()] if hasattr(value, "numpy") else [a for v in value for a in flat(v)]

    return flat(out)


# -- the registered gradients against finite differences --------------------------------------
def _op_cases():
    rng = np.random.default_rng(0)
    conv_t = dict(strides=(2, 2), padding=(1, 1, 1, 1), output_padding=(1, 1))
    return {
        "gelu": ([(2, 5)], lambda x: relax.op.nn.gelu(x)),
        "gelu_tanh": ([(2, 5)], lambda x: relax.op.nn.gelu_tanh(x)),
        "erf": ([(2, 5)], lambda x: relax.op.erf(x)),
        "rms_norm": ([(2, 3, 6), (6,)], lambda x, w: relax.op.nn.rms_norm(x, w, axes=[-1])),
        "conv2d_transpose": (
            [(1, 3, 4, 4), (3, 2, 3, 3)],
            lambda x, w: relax.op.nn.conv2d_transpose(x, w, **conv_t),
        ),
        "adaptive_avg_pool2d_uneven": (
            [(1, 2, 5, 7)], lambda x: relax.op.nn.adaptive_avg_pool2d(x, (3, 2))),
        "adaptive_avg_pool2d_upsampling": (
            [(1, 2, 1, 2)], lambda x: relax.op.nn.adaptive_avg_pool2d(x, (3, 3))),
    }, rng


@pytest.mark.parametrize("case", sorted(_op_cases()[0]))
def test_registered_gradient_matches_finite_differences(case):
    register_missing_gradients()
    shapes, build = _op_cases()[0][case]
    rng = np.random.default_rng(sum(map(ord, case)))
    params = [relax.Var(f"x{i}", relax.TensorType(shape, "float64")) for i, shape in enumerate(shapes)]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit(build(*params))
            weights = relax.const(rng.standard_normal([int(d) for d in out.ty.shape]), "float64")
            loss = bb.emit_output(relax.op.sum(relax.op.multiply(out, weights)))
        bb.emit_func_output(loss)
    mod = relax.transform.Gradient("main")(bb.get())
    inputs = [rng.standard_normal(shape) for shape in shapes]
    _, *grads = _run(mod, "main_adjoint", inputs)
    forward = relax.VirtualMachine(tvm.compile(mod, target=FAST_LLVM), tvm.cpu())["main"]
    # TVM's rms_norm rounds through float32 (1e-7 off NumPy in float64), which a difference
    # quotient with step 1e-3 turns into 1e-4: its tolerance is wider.
    eps = 1e-3
    rtol = 2e-3 if case == "rms_norm" else 1e-5
    for i, grad in enumerate(grads):
        for _ in range(3):
            direction = rng.standard_normal(shapes[i])
            plus = [x + eps * direction if j == i else x for j, x in enumerate(inputs)]
            minus = [x - eps * direction if j == i else x for j, x in enumerate(inputs)]
            numeric = (forward(*map(tvm.runtime.tensor, plus)).numpy()
                       - forward(*map(tvm.runtime.tensor, minus)).numpy()) / (2 * eps)
            np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=rtol, atol=1e-6)


# -- a two-layer MLP whose operators are known ---------------------------------------------------
def _mlp() -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    params = {"w1": rng.standard_normal((8, 16)).astype("float32") / 3,
              "b1": rng.standard_normal(16).astype("float32") / 10,
              "w2": rng.standard_normal((16, 4)).astype("float32") / 4}
    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(params["w1"])))
            h = bb.emit(relax.op.nn.relu(relax.op.add(h, relax.const(params["b1"]))))
            out = bb.emit_output(relax.op.matmul(h, relax.const(params["w2"])))
        bb.emit_func_output(out)
    return bb.get(), params


def _mlp_reference(x, label, w1, b1, w2):
    """NumPy loss and gradients of the MLP under softmax cross-entropy (mean over the batch)."""
    pre = x @ w1 + b1
    hidden = np.maximum(pre, 0)
    logits = hidden @ w2
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -(label * log_probs).sum() / len(x)
    d_logits = (np.exp(log_probs) - label) / len(x)
    d_hidden = d_logits @ w2.T * (pre > 0)
    return [loss, x.T @ d_hidden, d_hidden.sum(axis=0), hidden.T @ d_logits]


def test_mlp_training_module_matches_numpy():
    mod, params = _mlp()
    train, weights, loss = training_module(mod, params)
    assert loss == "cross-entropy"
    main = train["main"]
    assert [p.name for p in main.params] == ["x", "label", "w1", "b1", "w2"]
    assert int(main.attrs["num_input"]) == 2
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8)).astype("float32")
    label = np.eye(4, dtype="float32")[[1, 3]]
    got = _run(train, "main", [x, label, *weights.values()])
    want = _mlp_reference(x, label, params["w1"], params["b1"], params["w2"])
    assert len(got) == len(want) == 4
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_backward_operators_are_marked_and_tied_to_their_forward_operator():
    mod, params = _mlp()
    train, _, _ = training_module(mod, params)
    prepared = prepare_pipeline()(train)
    collected = collect_op_graph(prepared)
    nodes = collected.graph.nodes
    calls = [b.value for b in prepared["main"].body.blocks[0].bindings if is_call_to(b.value, CALL_TIR)]
    assert len(calls) == len(nodes)
    backward = [u for u, n in enumerate(nodes) if n.is_backward]
    assert backward and len(backward) < len(nodes)
    # Backward operators come after every forward one (binding order is topological).
    assert min(backward) > max(u for u, n in enumerate(nodes) if not n.is_backward)
    classes = collected.colour_classes
    # Every class: one forward operator and only backward operators besides.
    for colour in classes:
        assert sum(not nodes[u].is_backward for u in colour) == 1, [nodes[u].name for u in colour]
    colour_of = {u: i for i, colour in enumerate(classes) for u in colour}
    # The forward operator reading a weight counts its bytes; the backward operator writing the
    # weight's gradient (an output of main of the weight's shape) is in its colour class.
    result = prepared["main"].body.body
    outputs = next(b.value for b in prepared["main"].body.blocks[0].bindings if b.var.same_as(result)).fields
    producer = {b.var: u for u, b in enumerate(
        b for b in prepared["main"].body.blocks[0].bindings if is_call_to(b.value, CALL_TIR))}
    for position, name in enumerate(["w1", "b1", "w2"]):
        readers = [u for u, call in enumerate(calls)
                   if any(getattr(a, "name", None) == name for a in call.args[1].fields)]
        first = readers[0]
        assert not nodes[first].is_backward and nodes[first].param_bytes >= params[name].nbytes
        grad = producer[outputs[1 + position]]
        assert nodes[grad].is_backward
        assert colour_of.get(grad) == colour_of[first], (name, nodes[grad].name, nodes[first].name)
    # Each weight counted once, however many operators read it (the rest: scalar constants such
    # as relu's zero; the smallest weight, b1, has 64 bytes).
    extra = sum(n.param_bytes for n in nodes) - sum(a.nbytes for a in params.values())
    assert 0 <= extra < params["b1"].nbytes


# -- registry models -----------------------------------------------------------------------------
def test_registry_training_model_inputs_and_problem_colours():
    model = models.get("resnet18", training=True, image_size=32, width=8, num_classes=10)
    main = model.mod["main"]
    assert len(main.params) == len(model.inputs) == 2 + len(model.params)
    for param, value in zip(main.params, model.inputs):
        assert tuple(int(d) for d in param.ty.shape) == value.shape
    label = model.inputs[1]
    assert label.shape == (1, 10) and label.sum() == 1.0  # one-hot: cross-entropy
    placed = place(model.mod, ["llvm", "llvm"], method="greedy", time_limit=5)
    problem = placed.problem
    assert problem.colour_classes and any(n.is_backward for n in problem.graph.nodes)
    validate(problem, placed.placement)  # colour classes share a device
    for colour in problem.colour_classes:
        assert len({int(placed.placement.device_of[u]) for u in colour}) == 1


def test_training_step_placed_on_two_devices_matches_unsplit():
    model = models.get("bert-layer", training=True, **TINY_BERT)
    unsplit = _run(model.mod, "main", model.inputs)
    placed = place(model.mod, ["llvm", "llvm"], method="greedy", time_limit=5)
    problem = placed.problem
    # Alternate the colocation groups over the two devices: many cuts, colour classes kept.
    device_of = np.zeros(problem.num_ops, dtype=int)
    for i, group in enumerate(colocation_groups(problem)):
        device_of[group] = i % 2
    compiled = tvm_place.compile(model.mod, ["llvm", "llvm"], placement=device_of)
    assert set(compiled.placement.device_of.tolist()) == {0, 1}
    out = compiled(*model.inputs)
    got = [o.numpy() for o in out]
    assert len(got) == len(unsplit) == 1 + len(model.params)  # loss, one gradient per weight
    for a, b in zip(got, unsplit):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_registry_model_gradient_matches_finite_differences():
    model = models.get("bert-layer", training=True, **TINY_BERT)
    main = model.mod["main"]
    vm = relax.VirtualMachine(tvm.compile(model.mod, target=FAST_LLVM), tvm.cpu())
    inputs = [x.astype(np.float64).astype(np.float32) for x in model.inputs]

    def run(args):
        return [o.numpy() for o in vm["main"](*[tvm.runtime.tensor(a) for a in args])]

    loss, *grads = run(inputs)
    rng = np.random.default_rng(3)
    names = [p.name for p in main.params[2:]]
    for name in ("layers_0_attention_query_weight", "layers_0_feed_forward_fc1_weight",
                 "layers_0_attention_norm_weight"):
        i = names.index(name)
        direction = rng.standard_normal(inputs[2 + i].shape).astype(np.float32)
        eps = 1e-2
        plus, minus = list(inputs), list(inputs)
        plus[2 + i] = inputs[2 + i] + eps * direction
        minus[2 + i] = inputs[2 + i] - eps * direction
        numeric = (float(run(plus)[0]) - float(run(minus)[0])) / (2 * eps)
        analytic = float(np.sum(grads[i].astype(np.float64) * direction))
        assert abs(numeric - analytic) <= 1e-2 * max(1.0, abs(analytic)), (name, numeric, analytic)


def test_model_without_weights_or_gradient_is_refused_clearly():
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(out)
    with pytest.raises(UnsupportedModelError, match="no weight"):
        training_module(bb.get())
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.floor(relax.op.multiply(x, relax.const(np.ones((2, 3), "float32")))))
        bb.emit_func_output(out)
    with pytest.raises(UnsupportedModelError, match="floor"):
        training_module(bb.get())
