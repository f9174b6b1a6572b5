"""The vLLM engine's settings as planned from the GPU and the run, and the trainer's micro-batch.

CPU only: the run's one plan (`core.memory.planner.plan_run`, through `core.engines.registry.plan_for`)
reads plain numbers, `vllm_settings_for` maps its engine sizes and the config to `VLLMSettings`
(no vLLM import).
    python -m pytest -q tests/test_engine_settings.py
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from core.config import Config
from core.engines.registry import plan_for, vllm_settings_for
from core.memory import planner, sizes

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
QWEN15 = SimpleNamespace(**json.loads((ROOT / "bench" / "configs" / "qwen2.5-1.5b.json").read_text()))


def _settings(prompts=1, G=8, completion=1024, **run):
    cfg = Config()
    a = cfg.algorithm
    a.prompts_per_step, a.num_generations, a.max_prompt_length, a.max_completion_length = prompts, G, 256, completion
    cfg.model.lora_r = 16
    for k, v in run.items():
        setattr(cfg.run, k, v)
    p = planner.plan_run(QWEN15, cfg, engine="vllm", free_bytes=int(139 * GIB), total_bytes=int(139.8 * GIB))
    return vllm_settings_for(cfg, p.engine_sizes), p


def test_kv_cache_is_sized_for_one_step_not_for_the_whole_share():
    s, p = _settings()
    need = sizes.kv_bytes_per_token(QWEN15) * 1280 * 8  # 8 rollouts at full length
    assert need * 1.1 <= s.kv_cache_memory_bytes < need * 1.1 + 2**20 and s.kv_cache_memory_bytes % 2**20 == 0
    # on an H200 the share is a start-up guard near weights + KV + 1 GiB (no 5% = 7 GiB floor)
    want = (sizes.weight_bytes(QWEN15) + s.kv_cache_memory_bytes + GIB) / (139.8 * GIB)
    assert abs(s.gpu_memory_utilization - want) < 0.001 and s.gpu_memory_utilization < 0.05
    assert s.max_model_len == 1280 and s.max_lora_rank == 16
    # the plan the trainer gets counts the engine it sizes: its KV cache is the engine's
    assert p.memory.kv_cache == s.kv_cache_memory_bytes
    # fp8 halves it
    fp8, _ = _settings(vllm_kv_cache_dtype="fp8")
    assert abs(fp8.kv_cache_memory_bytes / s.kv_cache_memory_bytes - 0.5) < 0.01


def test_at_least_one_full_sequence_and_user_overrides():
    one, _ = _settings(G=1, completion=16)
    assert one.kv_cache_memory_bytes >= sizes.kv_bytes_per_token(QWEN15) * 272
    # a memory share the user chose: vLLM sizes the cache from it, as its docs say
    user, _ = _settings(vllm_gpu_memory_utilization=0.4, vllm_max_num_seqs=7)
    assert user.gpu_memory_utilization == 0.4 and user.kv_cache_memory_bytes is None and user.max_num_seqs == 7


def test_cuda_graphs_setting_reaches_the_engines_arguments():
    """run.vllm_cuda_graphs: "decode" asks vLLM for decode-only whole-step graphs at the batch sizes
    a decode of this run can have (the sequences decoded at once), "all" for its default."""
    from core.engines.vllm import compat

    s, _ = _settings(vllm_cuda_graphs="decode")
    assert s.cuda_graphs == "decode" and s.max_num_seqs == 16
    assert compat.cuda_graph_kwargs(s.cuda_graphs, s.max_num_seqs, s.enforce_eager) == {
        "compilation_config": {"cudagraph_mode": "FULL_DECODE_ONLY", "cudagraph_capture_sizes": [1, 2, 4, 8, 16]}}
    default, _ = _settings()
    assert default.cuda_graphs == "all"
    assert compat.cuda_graph_kwargs(default.cuda_graphs, default.max_num_seqs, default.enforce_eager) == {}
    import pytest
    from core.config import ConfigError, validate

    cfg = Config()
    cfg.run.vllm_cuda_graphs = "some"
    with pytest.raises(ConfigError, match="vllm_cuda_graphs"):
        validate(cfg)


def test_compile_sizes_reach_vllms_compilation_config_beside_the_graphs():
    """VLLMSettings.compile_sizes (bench/decode_variants.py's autotune lever): vLLM's
    compilation_config.compile_sizes, beside the CUDA-graph settings; nothing in eager mode or by default."""
    from core.engines.vllm import compat
    from core.engines.vllm.engine import VLLMSettings

    assert VLLMSettings().compile_sizes == () and _settings()[0].compile_sizes == ()
    assert compat.compile_sizes_kwargs(compat.cuda_graph_kwargs("decode", 16, False), (8, 8), False) == {
        "compilation_config": {"cudagraph_mode": "FULL_DECODE_ONLY", "cudagraph_capture_sizes": [1, 2, 4, 8, 16],
                               "compile_sizes": [8]}}
    assert compat.compile_sizes_kwargs(compat.cuda_graph_kwargs("all", 16, False), (8,), False) == {
        "compilation_config": {"compile_sizes": [8]}}
    assert compat.compile_sizes_kwargs({}, (8,), True) == {} and compat.compile_sizes_kwargs({}, (), False) == {}


def test_micro_batch_auto_resolves_from_the_plan_or_to_8_on_cpu():
    cfg = Config()
    cfg.algorithm.micro_batch_size, cfg.algorithm.prompts_per_step, cfg.algorithm.num_generations = 0, 4, 8
    assert planner.micro_batch_size(cfg) == 8
    cfg.algorithm.prompts_per_step, cfg.algorithm.num_generations = 1, 4
    assert planner.micro_batch_size(cfg) == 4  # never more than the step's sequences
    plan = planner.plan(QWEN15, lora_rank=16, lora_targets=list(sizes.ALL_PROJECTIONS), num_sequences=8,
                        prompt_length=256, completion_length=1024, micro_batch_size=0, checkpointing=True,
                        free_bytes=10**15)
    assert planner.micro_batch_size(cfg, plan) == plan.micro_batch_size == 1
    cfg.algorithm.micro_batch_size = 2
    assert planner.micro_batch_size(cfg, plan) == 2  # explicit wins


def test_plan_for_a_loaded_model_never_reads_it_again(tiny_model_dir, monkeypatch):
    """The app plans with a loaded model's config (not read again from disk) and counts what its
    torch already holds as free; a tight GPU is said by the plan, and refused only when asked."""
    import pytest
    import torch
    from transformers import AutoModelForCausalLM

    from core.memory.planner import DoesNotFit

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = Config()
    cfg.model.name_or_path = "/nonexistent"  # proves the loaded model's config is used
    cfg.algorithm.micro_batch_size = 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (16 * GIB, 16 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 0)
    p = plan_for(cfg, "cuda", hf_config=model.config, count_reserved=True)
    assert p.device == "gpu" and p.fits and p.micro_batch_size == p.memory.micro_batch_size >= 1
    assert p.free_bytes == 16 * GIB
    # what this process's torch already holds (the loaded weights, the engine's pool) is planned, so free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (10 * GIB, 24 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 6 * GIB)
    assert plan_for(cfg, "cuda", hf_config=model.config, count_reserved=True).free_bytes == 16 * GIB
    assert plan_for(cfg, "cuda", hf_config=model.config).free_bytes == 10 * GIB
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2**20, 2**20))
    tight = plan_for(cfg, "cuda", hf_config=model.config, count_reserved=True)
    assert tight.fits is False
    with pytest.raises(DoesNotFit, match="too large for this GPU"):
        tight.refuse_if_too_large()


def test_expandable_segments_are_asked_for_unless_the_user_chose(monkeypatch):
    """core.memory.device.use_expandable_segments: on a GPU, the allocator setting and the variable
    vLLM's sleep-mode pool reads; the user's own PYTORCH_CUDA_ALLOC_CONF wins; nothing on a CPU."""
    import torch

    from core.memory.device import use_expandable_segments

    calls = []
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", calls.append)
    for key in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert use_expandable_segments() is False and calls == []
    assert "PYTORCH_CUDA_ALLOC_CONF" not in __import__("os").environ

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert use_expandable_segments() is True
    assert calls == ["max_split_size_mb:128,expandable_segments:True"]  # the whole string: torch resets the rest
    import os

    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128,expandable_segments:True"
    # the user said no: left alone, reported off
    calls.clear()
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    assert use_expandable_segments() is False and calls == []
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "expandable_segments:True")  # torch's newer name
    assert use_expandable_segments() is True and calls == []
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"  # where vLLM's pool reads it
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "expandable_segments:False")
    assert use_expandable_segments() is False and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ


def test_the_vllm_guard_reads_what_its_pool_does():
    """vllm_compat.cumem_pool_handles_expandable_segments: True without vLLM (the HF engine), else
    whether CuMemAllocator.use_memory_pool turns expandable segments off (read from its source)."""
    import importlib.util

    from core.engines.vllm import compat

    if importlib.util.find_spec("vllm") is None:
        assert compat.cumem_pool_handles_expandable_segments() is True
    else:
        import vllm

        if vllm.__version__ in ("0.24.0", "0.31.0"):  # both read: each turns them off inside its pool
            assert compat.cumem_pool_handles_expandable_segments() is True


def test_fp8_weights_reach_the_engine_and_the_plan_counts_vllms_own_copy():
    """run.vllm_weights_dtype fp8: vLLM quantizes its own copy (VLLMSettings.quantization "fp8"), the
    trainer keeps its bf16 base, so the plan's weights are both: bf16 base + fp8 linears + bf16 embedding
    (tied in Qwen2.5-1.5B), ~1.78 GB more for 1.5B, and the engine's share covers them."""
    auto, p_auto = _settings()
    fp8, p_fp8 = _settings(vllm_weights_dtype="fp8")
    assert auto.quantization is None and fp8.quantization == "fp8"
    extra = p_fp8.memory.weights - p_auto.memory.weights
    assert extra == sizes.fp8_copy_bytes(QWEN15)
    linear = QWEN15.num_hidden_layers * (2 * 1536 * 1536 + 2 * 1536 * 256 + 3 * 1536 * 8960)
    assert extra == linear + 2 * QWEN15.vocab_size * 1536 and 1.7e9 < extra < 1.9e9
    assert p_fp8.peak_bytes - p_auto.peak_bytes == extra
    assert fp8.gpu_memory_utilization > auto.gpu_memory_utilization


def test_fp8_weights_are_refused_where_no_engine_serves_them_and_a_switch_rebuilds(monkeypatch):
    from core.engines import registry
    from core.engines.registry import engine_mismatch, engine_refusals
    from core.engines.vllm.engine import effective_settings

    cfg = Config()
    cfg.run.vllm_weights_dtype = "fp8"
    hf = SimpleNamespace(max_position_embeddings=4096)
    fp8_refusals = lambda device: [r for r in engine_refusals(cfg, hf, device) if "vllm_weights_dtype" in r]  # noqa: E731
    # where runs sample with Hugging Face generate, a vLLM setting changes nothing (the Train tab hides it)
    cfg.run.engine = "hf"
    assert fp8_refusals("cuda") == [] and fp8_refusals("cpu") == []
    # vLLM on a GPU serves it; vLLM's CPU build has no fp8 kernels; a 4-bit base is served as it is
    monkeypatch.setattr(registry, "backend_for", lambda cfg, device: "vllm")
    assert fp8_refusals("cuda") == []
    assert fp8_refusals("cpu") == ["run.vllm_weights_dtype = fp8: vLLM's fp8 kernels need a CUDA GPU; set it to auto here"]
    cfg.model.load_in_4bit = True
    assert any("fp8 with model.load_in_4bit" in r for r in fp8_refusals("cuda"))
    monkeypatch.undo()
    # an engine built with the model's own weights cannot serve an fp8 run (nor the other way): rebuilt
    auto, _ = _settings()
    fp8, _ = _settings(vllm_weights_dtype="fp8")
    built = SimpleNamespace(settings=effective_settings(auto), model_path="m")  # as this machine built it
    assert engine_mismatch(built, "m", fp8) == ["vLLM's weights: fp8 (engine: None)"]
    assert engine_mismatch(SimpleNamespace(settings=effective_settings(fp8), model_path="m"), "m", fp8) == []
