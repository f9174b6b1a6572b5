"""The vLLM engine's settings as planned from the GPU and the run, and the trainer's micro-batch.

CPU only: `plan_settings` reads plain numbers (no vLLM import), `resolve_micro_batch_size` a config.
    python -m pytest -q tests/test_engine_settings.py
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from core.memory import planner
from core.config import Config
from core.engines.vllm.engine import plan_settings
from core.rl.trainer import resolve_micro_batch_size

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
QWEN15 = SimpleNamespace(**json.loads((ROOT / "bench" / "configs" / "qwen2.5-1.5b.json").read_text()))


def _settings(**kw):
    args = dict(num_sequences=8, max_prompt_length=256, max_completion_length=1024, lora_rank=16,
                weight_bytes=planner.weight_bytes(QWEN15), training_bytes=1 * GIB,
                total_bytes=int(139.8 * GIB), free_bytes=int(139 * GIB))
    args.update(kw)
    return plan_settings(QWEN15, **args)


def test_kv_cache_is_sized_for_one_step_not_for_the_whole_share():
    s = _settings()
    need = planner.kv_bytes_per_token(QWEN15) * 1280 * 8  # 8 rollouts at full length
    assert need * 1.1 <= s.kv_cache_memory_bytes < need * 1.1 + 2**20 and s.kv_cache_memory_bytes % 2**20 == 0
    # on an H200 the share is a start-up guard near weights + KV + 1 GiB (no 5% = 7 GiB floor)
    want = (planner.weight_bytes(QWEN15) + s.kv_cache_memory_bytes + GIB) / (139.8 * GIB)
    assert abs(s.gpu_memory_utilization - want) < 0.001 and s.gpu_memory_utilization < 0.05
    assert s.max_model_len == 1280 and s.max_lora_rank == 16
    # fp8 halves it
    fp8 = _settings(kv_cache_dtype="fp8")
    assert abs(fp8.kv_cache_memory_bytes / s.kv_cache_memory_bytes - 0.5) < 0.01


def test_at_least_one_full_sequence_and_user_overrides():
    one = _settings(num_sequences=1, max_completion_length=16)
    assert one.kv_cache_memory_bytes >= planner.kv_bytes_per_token(QWEN15) * 272
    # a memory share the user chose: vLLM sizes the cache from it, as its docs say
    user = _settings(gpu_memory_utilization=0.4)
    assert user.gpu_memory_utilization == 0.4 and user.kv_cache_memory_bytes is None
    both = _settings(gpu_memory_utilization=0.4, kv_cache_memory_bytes=3 * GIB)
    assert both.kv_cache_memory_bytes == 3 * GIB


def test_micro_batch_auto_resolves_from_the_plan_or_to_8_on_cpu():
    cfg = Config()
    cfg.algorithm.micro_batch_size, cfg.algorithm.prompts_per_step, cfg.algorithm.num_generations = 0, 4, 8
    assert resolve_micro_batch_size(cfg) == 8
    cfg.algorithm.prompts_per_step, cfg.algorithm.num_generations = 1, 4
    assert resolve_micro_batch_size(cfg) == 4  # never more than the step's sequences
    plan = planner.plan(QWEN15, lora_rank=16, lora_targets=list(planner.ALL_PROJECTIONS), num_sequences=8,
                        prompt_length=256, completion_length=1024, micro_batch_size=0, checkpointing=True,
                        free_bytes=10**15)
    assert resolve_micro_batch_size(cfg, plan) == plan.micro_batch_size == 1
    cfg.algorithm.micro_batch_size = 2
    assert resolve_micro_batch_size(cfg, plan) == 2  # explicit wins


def test_plan_for_a_loaded_model_never_refuses(tiny_model_dir, monkeypatch):
    """The app hands the trainer a loaded model: with an auto micro-batch the plan comes from that
    model's config (not read again from disk), and a tight GPU is said, not refused."""
    import pytest
    import torch
    from transformers import AutoModelForCausalLM

    from core.memory.planner import DoesNotFit
    from core.rl.trainer import _preflight_on_gpu

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = Config()
    cfg.model.name_or_path = "/nonexistent"  # proves the loaded model's config is used
    cfg.algorithm.micro_batch_size = 0
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (16 * GIB, 16 * GIB))
    p = _preflight_on_gpu(cfg, model=model, strict=False)
    assert p.fits and p.micro_batch_size >= 1 and resolve_micro_batch_size(cfg, p) == p.micro_batch_size
    # what this process's torch already holds (the loaded weights, the engine's pool) is planned, so free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (10 * GIB, 24 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 6 * GIB)
    assert _preflight_on_gpu(cfg, model=model, strict=False).free == 16 * GIB
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2**20, 2**20))
    assert _preflight_on_gpu(cfg, model=model, strict=False).fits is False
    with pytest.raises(DoesNotFit):
        _preflight_on_gpu(cfg, model=model, strict=True)
