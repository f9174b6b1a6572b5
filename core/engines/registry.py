"""The one road from a run's config to its engine: which backend, sized how, built in which order.

Owns: `pick_backend` (vLLM on a CUDA GPU when installed, else Hugging Face `generate`),
`plan_for` (the one memory plan of a run start: the model's config and the device's free memory
read once, `core.memory.planner.plan_run`), `vllm_settings_for` (a run's `Config` and its plan's
engine sizes -> the vLLM engine's settings), `make_policy_and_engine` (the trainer's peft model, the tokenizer and the engine, built in
the order the backend needs), and, for a long-lived engine that serves many runs (the app's),
`engine_mismatch` (why a built engine cannot serve a run exactly, hence must be rebuilt for it)
and `close_engine`.

A CLI run builds its engine for itself (a plan without headroom). The app builds one with headroom
(`planner.HEADROOM_*`: LoRA rank 64, a 4,096-token context) so that the runs people start next
fit it; a run that needs more, or other build-time settings (4-bit, fp8 KV cache, eager mode,
prefix caching, a share the user chose), gets the engine rebuilt for it before its first step.

Refuses to know: what the engine samples for (rewards, losses), the UI.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch


def pick_backend(requested: str = "auto") -> str:
    if requested in ("hf", "vllm"):
        return requested
    has_vllm = importlib.util.find_spec("vllm") is not None
    return "vllm" if (torch.cuda.is_available() and has_vllm) else "hf"


def backend_for(cfg, device: str) -> str:
    """The backend a run on `device` uses: vLLM needs a CUDA device (or its CPU build, asked for
    by name), Hugging Face `generate` runs anywhere."""
    if str(device).startswith("cuda"):
        return pick_backend(cfg.run.engine)
    return "vllm" if cfg.run.engine == "vllm" and importlib.util.find_spec("vllm") is not None else "hf"


def make_engine(backend: str, model, tokenizer, **kwargs):
    """An engine over `model` (the trainer's peft model) for the chosen backend."""
    backend = pick_backend(backend)
    if backend == "hf":
        from core.engines.hf import HFEngine

        return HFEngine(model, tokenizer, **kwargs)
    raise ValueError(
        "the vLLM engine is created before the training model (it lends its weights to it): "
        "use core.engines.registry.make_policy_and_engine"
    )


# ---------------------------------------------------------------------------
# vLLM: settings from the run


def plan_for(cfg, device: str, *, hf_config=None, headroom: bool = False, count_reserved: bool = False,
             engine_sizes=None, weights_loaded: bool = False, free_bytes: int | None = None,
             total_bytes: int | None = None):
    """The one memory plan of a run of `cfg` on `device` (`core.memory.planner.RunPlan`): the
    model's config read once (or given), the device's free memory read once (`count_reserved`:
    what this process's torch holds counts as free, the app's model and engine that the plan
    counts itself), the backend this device runs it on. Every run start, the app's memory panel
    and the CLI go through here; the plan is then handed to `make_policy_and_engine` and the trainer.
    `engine_sizes`: the sizes of an engine already built that the run will use (the app's)."""
    from core.memory import device as device_memory
    from core.memory import ram
    from core.memory.planner import plan_run
    from core.models.loading import pick_dtype

    if hf_config is None:
        hf_config = model_config(cfg)
    engine = backend_for(cfg, device)
    if free_bytes is None and str(device).startswith("cuda"):
        free_bytes, total_bytes = device_memory.gpu_memory(count_reserved)
    if free_bytes is not None:  # a GPU (the plan assumes the trainer's bf16 base there)
        return plan_run(hf_config, cfg, engine=engine, free_bytes=free_bytes, total_bytes=total_bytes,
                        headroom=headroom, engine_sizes=engine_sizes)
    dtype = pick_dtype(cfg.model.dtype, device)  # a CPU: RAM, in the dtype the weights load in
    return plan_run(hf_config, cfg, engine=engine, headroom=headroom, engine_sizes=engine_sizes,
                    dtype=str(dtype).removeprefix("torch."), dtype_bytes=dtype.itemsize,
                    available_bytes=ram.available_bytes(), weights_loaded=weights_loaded)


def model_config(cfg):
    """The run's model's config (transformers' AutoConfig), read from its folder or the hub."""
    from transformers import AutoConfig

    from core.models.loading import resolve_model_path

    return AutoConfig.from_pretrained(resolve_model_path(cfg.model.name_or_path))


def vllm_settings_for(cfg, sizes):
    """The `VLLMSettings` a run's `Config` asks for, its engine sized by the run's plan (`sizes`:
    `RunPlan.engine_sizes`), then the run's own engine fields (0 / "auto" = planned)."""
    from core.engines.vllm.engine import VLLMSettings

    a, m, r = cfg.algorithm, cfg.model, cfg.run
    s = VLLMSettings(
        gpu_memory_utilization=sizes.gpu_memory_utilization, kv_cache_memory_bytes=sizes.kv_cache_bytes,
        max_model_len=sizes.max_model_len, max_num_seqs=sizes.max_num_seqs,
        max_num_batched_tokens=sizes.max_num_batched_tokens, max_lora_rank=sizes.max_lora_rank,
        enable_prefix_caching=r.vllm_enable_prefix_caching, enforce_eager=r.vllm_enforce_eager,
        cuda_graphs=r.vllm_cuda_graphs,
        kv_cache_dtype=r.vllm_kv_cache_dtype, release_kv=r.vllm_free_kv_between_steps, seed=a.seed,
        quantization="bitsandbytes" if m.load_in_4bit else "fp8" if r.vllm_weights_dtype == "fp8" else None)
    # the user's own numbers win (0 = planned); a share the user chose sizes the KV cache itself
    if r.vllm_gpu_memory_utilization:
        s.gpu_memory_utilization, s.kv_cache_memory_bytes = r.vllm_gpu_memory_utilization, None
    if r.vllm_max_num_seqs:
        s.max_num_seqs = r.vllm_max_num_seqs
    if r.vllm_max_num_batched_tokens:
        s.max_num_batched_tokens = r.vllm_max_num_batched_tokens
    return s


def sizes_of(settings):
    """The `EngineSizes` of a built engine's `VLLMSettings` (its KV cache and LoRA slots), for the
    plan of a run that uses that engine."""
    from core.memory.sizes import EngineSizes

    return EngineSizes(max_lora_rank=settings.max_lora_rank, max_model_len=settings.max_model_len,
                       kv_cache_bytes=settings.kv_cache_memory_bytes, max_num_seqs=settings.max_num_seqs,
                       max_num_batched_tokens=settings.max_num_batched_tokens,
                       gpu_memory_utilization=settings.gpu_memory_utilization)


# build-time settings a run must find exactly as it asks (the rest are limits: more is fine)
_EXACT = {
    "quantization": ("model.load_in_4bit / run.vllm_weights_dtype", "vLLM's weights"),
    "kv_cache_dtype": ("run.vllm_kv_cache_dtype", "the KV-cache precision"),
    "enforce_eager": ("run.vllm_enforce_eager", "eager mode"),
    "enable_prefix_caching": ("run.vllm_enable_prefix_caching", "prefix caching"),
}
_AT_LEAST = {
    "max_lora_rank": "LoRA rank limit",
    "max_model_len": "context length",
    "max_num_seqs": "sequences decoded at once",
    "max_num_batched_tokens": "tokens per scheduler step",
}


def engine_mismatch(engine, model_path: str, wanted) -> list[str]:
    """Why `engine` (a built VLLMEngine) cannot serve a run that asks for `wanted` (VLLMSettings)
    exactly: [] when it can. Each reason names what differs, in words for the status line."""
    from core.engines.vllm.engine import effective_settings

    have, wanted = engine.settings, effective_settings(wanted)
    reasons = []
    if engine.model_path != model_path:
        reasons.append("another base model")
    for name, (_field, words) in _EXACT.items():
        if getattr(have, name) != getattr(wanted, name):
            reasons.append(f"{words}: {getattr(wanted, name)} (engine: {getattr(have, name)})")
    for name, words in _AT_LEAST.items():
        if getattr(wanted, name) > getattr(have, name):
            reasons.append(f"{words} {getattr(wanted, name)} (engine: {getattr(have, name)})")
    if wanted.kv_cache_memory_bytes is None:  # a share the user chose: the same share
        if have.kv_cache_memory_bytes is not None or have.gpu_memory_utilization != wanted.gpu_memory_utilization:
            reasons.append(f"memory share {wanted.gpu_memory_utilization}")
    elif have.kv_cache_memory_bytes is not None and wanted.kv_cache_memory_bytes > have.kv_cache_memory_bytes:
        # a smaller cache than one step's rollouts would sample them in waves: slower than the CLI
        reasons.append(f"{KV_REASON}{wanted.kv_cache_memory_bytes / 2**30:.2f} GB for this run's rollouts "
                       f"(engine: {have.kv_cache_memory_bytes / 2**30:.2f} GB)")
    return reasons


KV_REASON = "KV cache "  # how engine_mismatch words the one reason that need not rebuild


def why_not_serve(engine, cfg, device: str, make_plan) -> list[str]:
    """Why a built `engine` cannot serve a run of `cfg` on `device` exactly ([] = it can): another
    backend, or (vLLM) build settings other than those the run's own plan (`make_plan()`, asked only
    then) gives. The app keeps or rebuilds its one engine by this."""
    backend = backend_for(cfg, device)
    if engine.info.backend != backend:
        return [f"the {backend} engine (loaded: {engine.info.backend})"]
    if backend != "vllm":
        return []
    return engine_mismatch(engine, engine.model_path, vllm_settings_for(cfg, make_plan().engine_sizes))


def built_sizes(engine):
    """The `EngineSizes` a built vLLM engine serves with (a run on it is planned with them); None
    for an engine that sizes nothing ahead (Hugging Face `generate`)."""
    return sizes_of(engine.settings) if engine.info.backend == "vllm" else None


def one_per_process(engine) -> bool:
    """Whether no second engine of this kind can be built in this process while it lives (vLLM's
    sleep mode: vllm_compat); a rebuild then keeps the memory it could not give back."""
    return bool(getattr(engine, "sleep_mode", False))


def must_rebuild(reasons: list[str], engine) -> list[str]:
    """Of `engine_mismatch`'s reasons, those that need another engine for the run.

    A KV cache smaller than one step's rollouts only makes vLLM sample them in waves (slower, the
    same numbers), so an engine that could not be rebuilt as it is keeps serving: one with sleep
    mode on, since vLLM 0.24 allows one sleep-mode engine per process (vllm_compat.
    cumem_bytes_in_use) and a rebuilt one would have to hold its KV cache through every step.

    >>> from types import SimpleNamespace as E
    >>> must_rebuild(["KV cache 2.32 GB for this run's rollouts (engine: 0.58 GB)"], E(sleep_mode=True))
    []
    >>> must_rebuild(["KV cache 2.32 GB (engine: 0.58 GB)", "LoRA rank 128 (engine: 64)"], E(sleep_mode=True))
    ['LoRA rank 128 (engine: 64)']
    >>> len(must_rebuild(["KV cache 2.32 GB (engine: 0.58 GB)"], E(sleep_mode=False)))
    1
    """
    if not one_per_process(engine):
        return list(reasons)
    return [r for r in reasons if not r.startswith(KV_REASON)]


def engine_refusals(cfg, hf_config, device: str) -> list[str]:
    """What in `cfg` no engine can serve exactly on `device`, each naming the field and what to
    do, so a run is refused before it starts rather than failing (or silently shortened) later.

    >>> from types import SimpleNamespace as C
    >>> from core.config import Config
    >>> cfg = Config(); cfg.run.engine = "hf"; cfg.algorithm.max_completion_length = 8000
    >>> print(engine_refusals(cfg, C(max_position_embeddings=8192), "cpu")[0])
    algorithm.max_prompt_length + algorithm.max_completion_length = 512 + 8000: more than the model's context of 8192 tokens; lower them to 8192 together
    """
    from core.memory import sizes

    a, m, r = cfg.algorithm, cfg.model, cfg.run
    out = []
    context = getattr(hf_config, "max_position_embeddings", None)
    if context and a.max_prompt_length + a.max_completion_length > context:
        out.append(f"algorithm.max_prompt_length + algorithm.max_completion_length = "
                   f"{a.max_prompt_length} + {a.max_completion_length}: more than the model's context of {context} "
                   f"tokens; lower them to {context} together")
    if r.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        out.append("run.engine = vllm: vLLM is not installed here (pip install -e \".[gpu]\" on a GPU); "
                   "set it to auto or hf")
    # vLLM's own fp8 copy (compat item 9); like every vLLM setting, nothing where runs sample with HF generate
    if r.vllm_weights_dtype == "fp8" and backend_for(cfg, device) == "vllm":
        if m.load_in_4bit:
            out.append("run.vllm_weights_dtype = fp8 with model.load_in_4bit: vLLM serves a 4-bit base as it is; "
                       "set one of them back (auto / off)")
        elif not str(device).startswith("cuda"):
            out.append("run.vllm_weights_dtype = fp8: vLLM's fp8 kernels need a CUDA GPU; set it to auto here")
    if backend_for(cfg, device) == "vllm" and sizes.engine_lora_rank(m.lora_r) is None:
        out.append(f"model.lora_r = {m.lora_r}: vLLM serves LoRA ranks up to {sizes.VLLM_LORA_RANKS[-1]}; "
                   "lower it, or set run.engine to hf")
    return out


def refuse_what_no_engine_serves(cfg, device: str, hf_config=None) -> None:
    """ConfigError naming the field (`engine_refusals`) before anything is loaded; a model whose
    config cannot be read says so itself, a moment later, when it loads."""
    from core.config import ConfigError

    if hf_config is None:
        try:
            hf_config = model_config(cfg)
        except Exception:
            return
    refusals = engine_refusals(cfg, hf_config, device)
    if refusals:
        raise ConfigError("; ".join(refusals))


def close_engine(engine) -> None:
    """Shut an engine down so another can be built in this process (vLLM: its engine core and
    distributed state, vllm_compat.shutdown); the caller drops every model that views its weights."""
    close = getattr(engine, "close", None)
    if close is not None:
        close()


# ---------------------------------------------------------------------------


def make_policy_and_engine(cfg, device: str, plan=None, *, headroom: bool = False):
    """(peft policy model, tokenizer, engine) for a run, built in the order the backend needs.

    hf: load the model, add LoRA, sample from it directly.
    vllm: start the engine first (sized by the run's `plan`, a RunPlan from `plan_for`; made here,
    with `headroom` for the runs after it, when not given), then build the trainer's model on views
    of the engine's weights, then add LoRA: one copy of the base.
    """
    from core.models.loading import add_lora, load_model_and_tokenizer, load_tokenizer, resolve_model_path

    from core.engines.vllm import compat
    from core.memory.device import use_expandable_segments

    # torch's reserved memory follows what it hands out; never where this vLLM's sleep-mode pool would
    # break (a later run of the app's process may build a vLLM engine)
    if str(device).startswith("cuda") and compat.cumem_pool_handles_expandable_segments():
        use_expandable_segments()
    if backend_for(cfg, device) == "hf":
        model, tok = load_model_and_tokenizer(cfg.model, device)
        from core.engines.hf import HFEngine

        return model, tok, HFEngine(model, tok)

    from core.engines.vllm.engine import VLLMEngine

    path = resolve_model_path(cfg.model.name_or_path)
    tok = load_tokenizer(path)
    plan = plan or plan_for(cfg, device, headroom=headroom)
    settings = vllm_settings_for(cfg, plan.engine_sizes)
    settings.max_loras = 2 if headroom else 1  # the app's Compare serves a checkpoint beside the training adapter
    engine = VLLMEngine(path, tok, settings)
    try:
        # 4-bit too: vLLM's packed nf4 shards become bitsandbytes Linear4bit weights (vllm_compat)
        base = engine.shared_hf_model()
    except (RuntimeError, ImportError, AttributeError, KeyError, TypeError, ValueError) as e:
        if not cfg.model.load_in_4bit:
            engine.close()
            raise
        # a vLLM whose 4-bit layout we do not know: the trainer keeps its own 4-bit copy
        warnings.warn(f"4-bit weights not shared with vLLM ({type(e).__name__}: {e}); loading a second 4-bit copy")
        from core.models.loading import load_base_model

        engine.info.details["weights_shared"] = False
        base = load_base_model(cfg.model, device)
    policy = add_lora(base, cfg.model)
    engine.bind(policy)  # an engine with its own weights (fp8) takes the base back from it after merged rollouts
    # what building the engine and the views left in torch's cache goes back to the driver: nothing
    # empties it before step 2's restore_memory, so step 1's training grew beside it (H100, 2026-12-05,
    # the 1.5B bench: 0.51 GiB, beside the 1.74 GiB its own weight check left: bench/trl_compare/ours.py)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return policy, tok, engine


__all__ = ["pick_backend", "backend_for", "make_engine", "plan_for", "model_config", "vllm_settings_for", "sizes_of",
           "why_not_serve", "built_sizes", "one_per_process",
           "engine_mismatch", "must_rebuild", "engine_refusals", "refuse_what_no_engine_serves", "close_engine",
           "make_policy_and_engine"]
