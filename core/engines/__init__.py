"""Engines: the protocol (`base.py`) and its backends, one module each (`hf.py`; `vllm` on a GPU).

`make_engine` picks the backend: vLLM when asked for, or on 'auto' when a CUDA GPU and the
`vllm` package are both present; Hugging Face `generate` otherwise.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch

from core.engines.base import AdapterRef, Completion, Engine, EngineInfo, SamplingSettings

__all__ = ["AdapterRef", "Completion", "Engine", "EngineInfo", "SamplingSettings", "make_engine", "pick_backend"]


def pick_backend(requested: str = "auto") -> str:
    if requested in ("hf", "vllm"):
        return requested
    has_vllm = importlib.util.find_spec("vllm") is not None
    return "vllm" if (torch.cuda.is_available() and has_vllm) else "hf"


def make_engine(backend: str, model, tokenizer, **kwargs) -> Engine:
    """An engine over `model` (the trainer's peft model) for the chosen backend."""
    backend = pick_backend(backend)
    if backend == "hf":
        from core.engines.hf import HFEngine

        return HFEngine(model, tokenizer, **kwargs)
    raise ValueError(
        "the vLLM engine is created before the training model (it lends its weights to it): "
        "use core.engines.vllm_engine.VLLMEngine and VLLMEngine.shared_hf_model()"
    )


def make_policy_and_engine(cfg, device: str):
    """(peft policy model, tokenizer, engine) for a run, built in the order the backend needs.

    hf: load the model, add LoRA, sample from it directly.
    vllm: start the engine first (it sizes its memory share from what is free), then build the
    trainer's model on views of the engine's weights, then add LoRA: one copy of the base.
    """
    from core import planner
    from core.models import add_lora, load_model_and_tokenizer, load_tokenizer, resolve_model_path

    backend = pick_backend(cfg.run.engine) if str(device).startswith("cuda") else "hf"
    if backend == "hf":
        model, tok = load_model_and_tokenizer(cfg.model, device)
        from core.engines.hf import HFEngine

        return model, tok, HFEngine(model, tok)

    from transformers import AutoConfig

    from core.engines.vllm_engine import VLLMEngine, plan_settings

    path = resolve_model_path(cfg.model.name_or_path)
    tok = load_tokenizer(path)
    hf_config = AutoConfig.from_pretrained(path)
    a = cfg.algorithm
    # what the trainer needs beside the (shared) weights: adapter + AdamW state, one micro-batch
    # of activations and the loss buffers, as the memory planner counts them
    plan = planner.plan_config(hf_config, cfg, torch.cuda.mem_get_info()[0], engine="vllm")
    weight_bytes, training_bytes = plan.weights, plan.training_peak - plan.weights
    r = cfg.run
    overrides = {k: v for k, v in {
        "gpu_memory_utilization": r.vllm_gpu_memory_utilization, "max_num_seqs": r.vllm_max_num_seqs,
        "max_num_batched_tokens": r.vllm_max_num_batched_tokens}.items() if v}  # 0 = planned
    overrides.update(enable_prefix_caching=r.vllm_enable_prefix_caching, enforce_eager=r.vllm_enforce_eager,
                     kv_cache_dtype=r.vllm_kv_cache_dtype, release_kv=r.vllm_free_kv_between_steps)
    settings = plan_settings(
        hf_config, num_sequences=a.prompts_per_step * a.gradient_accumulation_steps * a.num_generations,
        max_prompt_length=a.max_prompt_length, max_completion_length=a.max_completion_length,
        lora_rank=cfg.model.lora_r, weight_bytes=weight_bytes, training_bytes=training_bytes,
        seed=a.seed, quantization="bitsandbytes" if cfg.model.load_in_4bit else None, **overrides)
    engine = VLLMEngine(path, tok, settings)
    try:
        # 4-bit too: vLLM's packed nf4 shards become bitsandbytes Linear4bit weights (vllm_compat)
        base = engine.shared_hf_model()
    except (RuntimeError, ImportError, AttributeError, KeyError, TypeError, ValueError) as e:
        if not cfg.model.load_in_4bit:
            raise
        # a vLLM whose 4-bit layout we do not know: the trainer keeps its own 4-bit copy
        warnings.warn(f"4-bit weights not shared with vLLM ({type(e).__name__}: {e}); loading a second 4-bit copy")
        from core.models import load_base_model

        engine.info.details["weights_shared"] = False
        base = load_base_model(cfg.model, device)
    return add_lora(base, cfg.model), tok, engine

