"""The Llama-architecture model with a KV cache (models/llama_kv.py): TVM's build of `prefill`
and `decode` equals the NumPy reference and Hugging Face's LlamaForCausalLM with the same
weights, decode continues prefill exactly, greedy generation gives the same tokens through a
Relax VM, NumPy, Hugging Face and tvm-place's placed functions."""

import numpy as np
import pytest
import tvm
from tvm import relax

from models import llama_kv
from models.llama_kv import cache_names, generate, reference_decode, reference_functions, reference_prefill

TINY = llama_kv.TINY  # 2 layers, 4 query heads over 2 key/value heads, head size 16, vocab 256


@pytest.fixture(scope="module")
def tiny():
    mod, params = llama_kv.build(TINY, seed=0)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    prefill, decode = llama_kv.vm_functions(vm, params)
    return mod, params, prefill, decode


def numpy_of(outputs):
    return [value.numpy() for value in outputs]


def assert_outputs_close(got, expected, atol=1e-4):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def test_module_has_prefill_and_decode_over_the_same_weights(tiny):
    mod, params, _, _ = tiny
    prefill, decode = mod["prefill"], mod["decode"]
    assert int(prefill.attrs["num_input"]) == 1 and int(decode.attrs["num_input"]) == 1 + 2 * TINY.num_layers
    assert [p.name for p in decode.params[:5]] == ["token", *cache_names(TINY.num_layers)]
    names = list(params)
    assert [p.name for p in prefill.params[1:]] == [p.name for p in decode.params[5:]] == names
    assert names[0] == "embed_tokens.weight" and names[-1] == "lm_head.kernel"
    assert "layers.1.self_attn.k_proj.kernel" in names and "layers.0.mlp.gate.kernel" in names
    assert params["layers.0.self_attn.k_proj.kernel"].shape == (64, 2 * 16)
    assert sum(p.size for p in params.values()) == TINY.num_weights()
    assert {str(k): int(v) for k, v in prefill.attrs["tir_var_upper_bound"].items()} == {"n": 64}
    assert {str(k): int(v) for k, v in decode.attrs["tir_var_upper_bound"].items()} == {"m": 63}
    assert str(prefill.ret_ty.fields[1].shape) == "R.shape([1, n, 2, 16])"
    assert str(decode.ret_ty.fields[1].shape) == "R.shape([1, m + 1, 2, 16])"


@pytest.mark.parametrize("length", [1, 6, 17])
def test_prefill_and_decode_equal_the_numpy_reference(tiny, length):
    _, params, prefill, decode = tiny
    rng = np.random.default_rng(length)
    tokens = rng.integers(0, TINY.vocab, (1, length))
    got = numpy_of(prefill(tokens))
    expected = reference_prefill(TINY, params, tokens)
    assert got[0].shape == (1, TINY.vocab) and got[1].shape == (1, length, 2, 16)
    assert_outputs_close(got, expected)
    token = rng.integers(0, TINY.vocab, (1, 1))
    got = numpy_of(decode(token, *[tvm.runtime.tensor(c) for c in got[1:]]))
    assert got[1].shape == (1, length + 1, 2, 16)
    assert_outputs_close(got, reference_decode(TINY, params, token, *expected[1:]))


def test_decode_after_prefill_equals_prefill_of_one_more_token(tiny):
    _, _, prefill, decode = tiny
    tokens = np.random.default_rng(3).integers(0, TINY.vocab, (1, 12))
    outputs = prefill(tokens[:, :9])
    for n in range(9, 12):  # three steps, each from the last one's caches (TVM tensors)
        outputs = decode(tokens[:, n:n + 1], *outputs[1:])
        assert_outputs_close(numpy_of(outputs), numpy_of(prefill(tokens[:, :n + 1])), atol=2e-5)


def test_greedy_generation_gives_the_same_tokens_in_tvm_and_numpy(tiny):
    _, params, prefill, decode = tiny
    prompt = np.random.default_rng(4).integers(0, TINY.vocab, (1, 5))
    tokens = generate(prefill, decode, prompt, 10)
    assert tokens.shape == (1, 10) and tokens.dtype == np.int64
    np.testing.assert_array_equal(tokens, generate(*reference_functions(TINY, params), prompt, 10))
    assert len(set(tokens[0].tolist())) > 1  # the logits are not degenerate
    generate(prefill, decode, prompt, TINY.max_len - 4, max_len=TINY.max_len)  # the longest: m = 63
    with pytest.raises(ValueError, match="need 65 positions; the model has 64"):
        generate(prefill, decode, prompt, TINY.max_len - 3, max_len=TINY.max_len)


def test_multi_head_attention_a_symbolic_batch_and_float16():
    config = llama_kv.config("tiny", num_layers=1, kv_heads=4, dtype="float16")
    mod, params = llama_kv.build(config, batch="b", max_batch=8, seed=1)
    assert {str(k): int(v) for k, v in mod["decode"].attrs["tir_var_upper_bound"].items()} == {"m": 63, "b": 8}
    assert {w.dtype for w in params.values()} == {np.dtype("float16")}
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    prefill, decode = llama_kv.vm_functions(vm, params)
    prompt = np.random.default_rng(5).integers(0, config.vocab, (3, 4))
    outputs = prefill(prompt)
    expected = reference_prefill(config, params, prompt)
    # float16 against the float64 reference: logits of order 3 within 0.03
    assert_outputs_close(numpy_of(outputs), expected, atol=3e-2)
    token = np.array([[1], [2], [3]])
    got = numpy_of(decode(token, *outputs[1:]))
    assert got[0].dtype == np.float16 and got[1].shape == (3, 5, 4, 16)
    assert_outputs_close(got, reference_decode(config, params, token, *expected[1:]), atol=3e-2)


def test_configs_have_the_published_sizes():
    assert llama_kv.LLAMA2_7B.num_weights() == 6_738_415_616  # Llama-2-7B
    assert llama_kv.TINYLLAMA_1B.num_weights() == 1_100_048_384  # TinyLlama-1.1B
    config = llama_kv.config("tinyllama-1.1b", num_layers=2)
    mod, shapes = llama_kv.export(config, batch=4)  # no weights drawn
    shapes = dict(shapes)
    assert shapes["layers.1.self_attn.k_proj.kernel"] == (2048, 4 * 64)
    assert shapes["layers.1.mlp.down.kernel"] == (5632, 2048) and shapes["lm_head.kernel"] == (2048, 32000)
    assert sum(np.prod(s) for s in shapes.values()) == config.num_weights()
    assert str(mod["decode"].params[1].ty.shape) == "R.shape([4, m, 4, 64])"
    assert config.cache_bytes(batch=1, length=2048) == 2 * 2 * 2048 * 4 * 64 * 4  # float32
    assert llama_kv.config("llama2-7b", dtype="float16").cache_bytes(1, 4096) == 2 * 2**30
    with pytest.raises(llama_kv.ModelConfigError, match="do not divide"):
        llama_kv.config("tiny", kv_heads=3)
    with pytest.raises(llama_kv.ModelConfigError, match="float32 or float16"):
        llama_kv.config("tiny", dtype="bfloat16")
    with pytest.raises(llama_kv.ModelConfigError, match="unknown configuration"):
        llama_kv.config("llama-70b")


def test_equals_hugging_face_llama_with_the_same_weights(tiny):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import importlib.util

    from models import hub

    if importlib.util.find_spec("torchvision") is not None:
        hub.torchvision_models()  # transformers imports torchvision: see models/hub.py
    from transformers import LlamaConfig, LlamaForCausalLM

    _, params, prefill, decode = tiny
    config = LlamaConfig(
        vocab_size=TINY.vocab, hidden_size=TINY.hidden, intermediate_size=TINY.ffn,
        num_hidden_layers=TINY.num_layers, num_attention_heads=TINY.heads,
        num_key_value_heads=TINY.kv_heads, max_position_embeddings=TINY.max_len,
        rms_norm_eps=TINY.norm_eps, rope_theta=TINY.rope_theta, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False,
    )
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in llama_kv.hf_state_dict(params).items()},
                          strict=True)
    prompt = np.random.default_rng(6).integers(0, TINY.vocab, (2, 7))
    with torch.no_grad():
        logits = model(torch.from_numpy(prompt)).logits[:, -1].numpy()
        hf_tokens = model.generate(torch.from_numpy(prompt), max_new_tokens=6, do_sample=False,
                                   pad_token_id=0)[:, 7:].numpy()
    for row in range(2):  # the tiny fixture is built for batch 1
        np.testing.assert_allclose(prefill(prompt[row:row + 1])[0].numpy(), logits[row:row + 1],
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(generate(prefill, decode, prompt[row:row + 1], 6), hf_tokens[row:row + 1])


def placed_generation(config, options, steps):
    import tvm_place

    mod, params = llama_kv.build(config, seed=2)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    prompt = np.random.default_rng(7).integers(0, config.vocab, (1, 6))
    placed = tvm_place.compile(mod, ["llvm", "llvm"], entries={"prefill": 1, "decode": 16},
                               shape_hints={"n": 32, "m": 48}, **options)
    try:
        assert sorted(placed.functions) == ["decode", "prefill"]
        # Both functions read every weight, each on one device for both.
        prefill, decode = placed.functions["prefill"], placed.functions["decode"]
        assert sorted(prefill.weights) == sorted(decode.weights) == sorted(params)
        for name in params:
            assert (prefill.placement.device_of[prefill.weights[name][0]]
                    == decode.placement.device_of[decode.weights[name][0]])
        tokens = generate(placed["prefill"], placed["decode"], prompt, steps, weights=params.values())
    finally:
        placed.close()
    np.testing.assert_array_equal(tokens, generate(*llama_kv.vm_functions(vm, params), prompt, steps))
    return placed


def test_tvm_place_places_prefill_and_decode_together_and_generates_the_same_tokens():
    placed = placed_generation(llama_kv.config("tiny", num_layers=1), {"method": "heft"}, steps=3)
    assert placed.functions["decode"].plan.symbols  # the cache length stays symbolic


@pytest.mark.slow
def test_tvm_place_auto_placement_of_the_tiny_model_generates_the_same_tokens():
    placed_generation(TINY, {"time_limit": 10}, steps=8)


@pytest.mark.slow
def test_tvm_place_places_on_a_cpu_and_a_described_gpu_and_exports_both_functions(tmp_path):
    """CUDA code is generated for the A100's architecture and exported, not run (no GPU)."""
    import json

    import tvm_place

    mod, _ = llama_kv.build(llama_kv.config("tiny", num_layers=1))
    placed = tvm_place.compile(mod, ["llvm", {"kind": "cuda", "arch": "sm_80"}], profiles=[None, "a100"],
                               entries={"prefill": 1, "decode": 16}, shape_hints={"n": 32, "m": 48},
                               time_limit=5)
    manifest = json.loads((placed.export(tmp_path / "export") / "manifest.json").read_text())
    assert sorted(manifest["functions"]) == ["decode", "prefill"]
    assert any(p.name.endswith("cuda0.so") for p in (tmp_path / "export").iterdir())
