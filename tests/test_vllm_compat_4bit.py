"""4-bit weight sharing with vLLM, on the CPU: the trainer's QLoRA base is views of vLLM's packed bytes.

vLLM 0.24's bitsandbytes loader quantizes each HF weight on its own (`quantize_4bit`, nf4,
compress_statistics=True, blocksize 64), stacks the packed bytes of q/k/v and gate/up into one
fused parameter, undoes the double quantization of the statistics (fp32 absmax) and hangs the
states and shard offsets on the parameter. This test builds exactly that layout from a tiny
Qwen2 model with bitsandbytes' CPU backend, then checks what `vllm_compat` makes of it:

  - every 4-bit linear of the trainer's model points into the fused packed tensor (no copy);
  - its weights dequantize to exactly what transformers' own 4-bit loading (nested statistics)
    gives for the same bf16 weight, i.e. the trainer trains the model vLLM serves;
  - the model's logits equal a plain model holding those dequantized weights;
  - peft puts its 4-bit LoRA on top, only the adapter gets gradients, and no base weight moved.

The same path on a real vLLM engine: tests/test_vllm_engine.py::test_qlora_shares_vllm_4bit_weights (GPU).
"""

from __future__ import annotations

import bitsandbytes as bnb  # the test extra installs it (its CPU backend is what this test uses)
import torch

from core.config import ModelConfig
from core.engines.vllm import compat_weights


def _qwen2(vocab=96):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      max_position_embeddings=64, initializer_range=0.2)
    torch.manual_seed(0)
    return cfg, AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()


def _vllm_like_4bit(model, pad_vocab_to=128):
    """(named weights, quant states) laid out as vLLM 0.24's bitsandbytes loader leaves them."""
    from bitsandbytes.functional import dequantize_blockwise, quantize_4bit

    sd = {k: v.detach() for k, v in model.state_dict().items()}
    weights, quant = {}, {}

    def pack(vllm_name, hf_names):
        packed, states, offsets = [], {}, [0]
        for i, n in enumerate(hf_names):
            p, qs = quantize_4bit(sd[n].contiguous(), compress_statistics=True, quant_type="nf4")
            qs.absmax = (dequantize_blockwise(qs.absmax, qs.state2) + qs.offset).float()  # vLLM's _dequantize_dq
            qs.nested, qs.offset, qs.state2 = False, None, None
            packed.append(p)
            states[i] = qs
            offsets.append(offsets[-1] + p.shape[0])
        weights[vllm_name] = torch.cat(packed)
        quant[vllm_name] = (states, offsets)

    emb = sd["model.embed_tokens.weight"]
    weights["model.embed_tokens.weight"] = torch.cat([emb, emb.new_zeros(pad_vocab_to - emb.shape[0], emb.shape[1])])
    weights["model.norm.weight"] = sd["model.norm.weight"]
    for i in range(model.config.num_hidden_layers):
        a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        pack(a + "qkv_proj.weight", [a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"])
        weights[a + "qkv_proj.bias"] = torch.cat([sd[a + f"{x}_proj.bias"] for x in "qkv"])
        pack(a + "o_proj.weight", [a + "o_proj.weight"])
        pack(m + "gate_up_proj.weight", [m + "gate_proj.weight", m + "up_proj.weight"])
        pack(m + "down_proj.weight", [m + "down_proj.weight"])
        for norm in ("input_layernorm", "post_attention_layernorm"):
            weights[f"model.layers.{i}.{norm}.weight"] = sd[f"model.layers.{i}.{norm}.weight"]
    return weights, quant


def _inside(t: torch.Tensor, owners) -> bool:
    p = t.data_ptr()
    return any(o.data_ptr() <= p < o.data_ptr() + o.numel() * o.element_size() for o in owners)


def test_4bit_views_share_vllm_bytes_and_match_transformers_quantization():
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    cfg, model = _qwen2()
    weights, quant = _vllm_like_4bit(model)
    shared = compat_weights.build_hf_model_on_views(cfg, compat_weights.hf_views_of_vllm_weights(weights, cfg, quant), "cpu")

    layers = {n: m for n, m in shared.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == 7 * cfg.num_hidden_layers and shared.is_loaded_in_4bit
    owners = list(weights.values())
    assert all(_inside(p, owners) for p in shared.parameters()), "a parameter was copied"
    # each 4-bit weight is its own shard of the fused tensor, in HF order
    q = layers["model.layers.1.self_attn.k_proj"].weight
    states, offsets = quant["model.layers.1.self_attn.qkv_proj.weight"]
    assert q.data_ptr() == weights["model.layers.1.self_attn.qkv_proj.weight"][offsets[1]:].data_ptr()
    assert q.quant_state is states[1] and tuple(q.quant_state.shape) == (64, 128)

    # the trainer's weights are bit for bit what transformers' 4-bit loading (nested stats) gives
    for name, layer in layers.items():
        w = model.get_submodule(name).weight.detach()
        p, qs = quantize_4bit(w.contiguous(), compress_statistics=True, quant_type="nf4")
        ours = dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        torch.testing.assert_close(ours, dequantize_4bit(p, qs), rtol=0, atol=0)
        assert (ours - w).abs().max() > 0  # it is quantized, not the bf16 weight

    # logits equal those of a plain model holding the dequantized weights
    _, plain = _qwen2()
    with torch.no_grad():
        for name, layer in layers.items():
            plain.get_submodule(name).weight.copy_(dequantize_4bit(layer.weight.data, layer.weight.quant_state))
    ids = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = shared(input_ids=ids).logits.float(), plain(input_ids=ids).logits.float()
    assert a.shape == (2, 12, cfg.vocab_size)
    torch.testing.assert_close(a, b, rtol=0.02, atol=0.02)


def test_peft_lora_on_shared_4bit_base_trains_only_the_adapter():
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    from core.models.loading import add_lora

    cfg, model = _qwen2()
    weights, quant = _vllm_like_4bit(model)
    base = compat_weights.build_hf_model_on_views(cfg, compat_weights.hf_views_of_vllm_weights(weights, cfg, quant), "cpu")
    before = {n: p.data_ptr() for n, p in base.named_parameters()}
    policy = add_lora(base, ModelConfig(lora_r=8, lora_alpha=16, load_in_4bit=True))
    assert sum(isinstance(m, LoraLinear4bit) for m in policy.modules()) == 7 * cfg.num_hidden_layers
    # no parameter of the base was upcast or copied by wrapping it
    after = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
             for n, p in policy.named_parameters() if "lora_" not in n}
    assert {n: after[n].data_ptr() for n in before} == before
    assert all(p.dtype in (torch.bfloat16, torch.uint8) for p in after.values())

    ids = torch.randint(0, cfg.vocab_size, (2, 10), generator=torch.Generator().manual_seed(2))
    policy.train()
    loss = torch.nn.functional.cross_entropy(policy(input_ids=ids).logits[:, :-1].flatten(0, 1).float(),
                                             ids[:, 1:].flatten())
    loss.backward()
    grads = {n: p.grad for n, p in policy.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)
    assert all(g is not None for n, g in grads.items() if "lora_B" in n)
    assert sum(g.abs().sum().item() for n, g in grads.items() if "lora_B" in n) > 0


def test_weight_fingerprints_are_the_int64_sum_of_the_bits_in_bounded_chunks():
    """worker_weight_fingerprints sums each weight's bit patterns in chunks of 2**24 elements (a
    whole-tensor sum(dtype=int64) widened the embedding first: 1.74 GiB cached, H100 2026-12-05):
    the same number as the whole sum, and one flipped bit changes it."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    big = torch.nn.Parameter(torch.randn(2**24 + 5, generator=g).to(torch.bfloat16), requires_grad=False)
    small = torch.nn.Parameter(torch.randn(3, 7, generator=g), requires_grad=False)
    model = torch.nn.Module()
    model.big, model.small = big, small
    worker = SimpleNamespace(model_runner=SimpleNamespace(model=model))
    fp = compat_weights.worker_weight_fingerprints(worker)
    assert fp == {"big": int(big.data.view(torch.int16).sum(dtype=torch.int64)),
                  "small": int(small.data.view(torch.int32).sum(dtype=torch.int64))}
    big.data.view(torch.int16)[2**24 + 1] ^= 1  # one bit, in the last chunk
    after = compat_weights.worker_weight_fingerprints(worker)["big"]
    assert after != fp["big"] and after == int(big.data.view(torch.int16).sum(dtype=torch.int64))
