"""Memory planner: predict a run's peak GPU memory (or, on a CPU, RAM) before step 1, and pick
settings that fit; the one plan a run starts with (`plan_run`).

Owns: adding up the sizes (`sizes.py`) into a plan — base weights, LoRA adapter + gradient + AdamW
state, the engine's KV cache for one step's rollouts and the peak of one micro-batch's forward +
backward through the trainer's loss path (the [tokens, vocab] logits are never built). It picks the
largest micro-batch and the engine's memory share that fit the free memory, and says so in keyed
sentences (`words.py`). With micro_batch_size 0 (auto) it picks for the lowest peak instead: the
largest micro-batch whose forward/backward needs no more than the rollouts' KV cache, which the
engine frees while the trainer runs. On a CPU, `plan_cpu` counts the same tensors in the CPU's
dtype, in RAM. `plan_run` makes the one plan a run starts with (device, engine and its sizes,
micro-batch), handed to the engine registry and the trainer.

Refuses to know: torch (it reads plain numbers; the caller reads the device's free memory with
`device.py`), engines' objects, the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import AhaError
from core.memory.sizes import (ALLOCATOR_FIXED_BYTES, CPU_STEP_WEIGHT_COPIES, CUDA_CONTEXT_BYTES,
                               FASTEST_PASS_PARAM_TOKENS, FASTEST_SHARE, GIB, HEADROOM_NUM_SEQS, LORA_BYTES_PER_PARAM, LORA_MOMENT_BYTES,
                               ADAMW_UPDATE_TEMP_BYTES, EngineSizes, MicroBatchPeak, engine_sizes, fp8_copy_bytes,
                               VLLM_OUTSIDE_TORCH_BYTES, engine_extra_bytes, engine_kv_bytes,
                               kv_bytes_per_token, lora_param_count, micro_batch_peak, moments_on_host, param_count,
                               sequences_per_step, weight_bytes)
from core.memory.words import FAR_BEYOND, Sentence, gb, say


@dataclass
class Plan:
    weights: int
    adapter_and_optimizer: int
    kv_cache: int
    activations: int  # one micro-batch's decoder activations at their peak
    loss_buffers: int  # what the fused log-prob's backward needs above that, when it is the higher moment
    micro_batch_size: int
    engine_share: float
    free: int
    notes: list[Sentence] = field(default_factory=list)  # one sentence each (see `say`)
    workspace: int = ALLOCATOR_FIXED_BYTES  # cuBLAS workspaces etc., counted by torch's allocator
    engine_extra: int = 0  # a vLLM engine's LoRA slots, CUDA graphs, sampler (engine_extra_bytes)
    release_kv: bool = True  # the engine frees its KV cache while the trainer runs
    outside_torch: int = CUDA_CONTEXT_BYTES  # + VLLM_OUTSIDE_TORCH_BYTES with a vLLM engine
    update_extra: int = 0  # what the optimizer update adds on the device (moments back, AdamW's temporary)
    moments_on_host: int = 0  # AdamW's moments kept in host memory between updates (lowest-memory mode)

    @property
    def training_peak(self) -> int:
        """Peak of the trainer's side (what torch's allocator sees) during one micro-batch."""
        return self.weights + self.adapter_and_optimizer + self.activations + self.loss_buffers + self.workspace

    @property
    def update_peak(self) -> int:
        """The trainer's side during the optimizer update (activations gone, gradients alive)."""
        return self.weights + self.adapter_and_optimizer + self.update_extra + self.workspace

    @property
    def rollout_peak(self) -> int:
        """While the engine samples: weights, the trainer's adapter state, KV cache, engine extras."""
        return self.weights + self.adapter_and_optimizer + self.workspace + self.kv_cache + self.engine_extra

    @property
    def sampling_is_peak(self) -> bool:
        """With the KV cache released for training: whether sampling, not training, is the peak."""
        return self.release_kv and self.rollout_peak >= self.training_peak + self.engine_extra

    @property
    def total_peak(self) -> int:
        """The step's device peak: the higher of its two phases when the KV cache is released
        for training, their sum of KV and activations otherwise; plus what lies outside torch's
        allocator (the CUDA context, and a vLLM engine's own kernels)."""
        if self.sampling_is_peak:
            step = self.rollout_peak
        elif self.release_kv:
            step = self.training_peak + self.engine_extra
        else:
            step = self.training_peak + self.kv_cache + self.engine_extra
        # the update: activations gone, gradients alive, the moments on the device (a high rank on short
        # sequences: it can be the step's peak)
        update = self.update_peak + self.engine_extra + (0 if self.release_kv else self.kv_cache)
        return max(step, update) + self.outside_torch

    @property
    def fits(self) -> bool:
        return self.total_peak <= self.free

    def sentences(self, with_free: bool = True) -> list[Sentence]:
        """The summary as keyed fragments (see `say`): the peak and its parts, then the notes."""
        freed = bool(self.kv_cache and self.release_kv)
        first = [("peak", {"peak": gb(self.total_peak)})]
        if freed:
            first.append(("phase.sampling" if self.sampling_is_peak else "phase.training", {}))
        if with_free:
            first.append(("of_free", {"free": gb(self.free)}))
        first.append(("parts", {"weights": gb(self.weights), "adapter": gb(self.adapter_and_optimizer),
                                "kv": gb(self.kv_cache)}))
        if freed:
            first.append(("kv_freed", {}))
        if self.moments_on_host:
            first.append(("moments_host", {"moments": gb(self.moments_on_host)}))
        first.append(("activations", {"activations": gb(self.activations), "mbs": self.micro_batch_size}))
        if self.loss_buffers:
            first.append(("loss_buffers", {"loss": gb(self.loss_buffers)}))
        if self.engine_extra:
            first.append(("engine_extras", {"extra": gb(self.engine_extra)}))
        first.append(("cuda_vllm" if self.outside_torch > CUDA_CONTEXT_BYTES else "cuda",
                      {"outside": gb(self.outside_torch)}))
        out = [first, *self.notes]
        if with_free and not self.fits:
            out.append([("does_not_fit", {})])
        return out

    def summary(self, with_free: bool = True) -> str:
        return say(self.sentences(with_free))


def plan(c, *, lora_rank: int, lora_targets: list[str], num_sequences: int, prompt_length: int,
         completion_length: int, micro_batch_size: int, load_in_4bit: bool = False,
         checkpointing: bool = False, offload: bool = False, free_bytes: int | None = None,
         total_bytes: int | None = None, fp8_kv: bool = False, engine: str = "vllm",
         padded: bool = True, release_kv: bool = True, auto_micro_batch: str = "lowest_memory",
         engine_kv_cache_bytes: int | None = None, engine_max_lora_rank: int | None = None,
         moments_on_host_as: bool | None = None, fp8_weights: bool = False) -> Plan:
    """A plan for one step; shrinks the micro-batch (halving) until it fits `free_bytes`.

    micro_batch_size 0 = auto: the largest micro-batch (a power of two, at most the step's
    sequences) whose forward/backward needs no more than the rollouts' KV cache, which the engine
    frees while the trainer runs. The step's peak is then the rollout's, so a larger micro-batch
    would only raise it and a smaller one would only cost speed. At least 1, then shrunk to fit.
    auto_micro_batch "fastest" makes auto pick for speed instead: the largest micro-batch (a power
    of two, at most the step's sequences) whose step fits FASTEST_SHARE of the free memory, stopping
    at the first whose pass reaches FASTEST_PASS_PARAM_TOKENS (parameters x tokens): a larger one
    there costs memory and no time.
    padded: whether micro-batches carry padding (the trainer's do: prompts and completions of
    different lengths), which costs an attention mask and repeated k/v heads in every layer.
    moments_on_host_as: whether AdamW's moments wait on the host (None: the rule,
    `sizes.moments_on_host`; a record of a run from before that rule says False).
    """
    # fp8_weights: vLLM's own fp8 copy beside the trainer's base (run.vllm_weights_dtype), held throughout
    weights = weight_bytes(c, load_in_4bit) + (fp8_copy_bytes(c) if fp8_weights and engine == "vllm" else 0)
    # lowest-memory mode keeps AdamW's moments on the host between updates (core.rl.host_states)
    on_host = moments_on_host(micro_batch_size, auto_micro_batch) if moments_on_host_as is None else moments_on_host_as
    n_lora = lora_param_count(c, lora_rank, lora_targets)
    adapter = n_lora * (LORA_BYTES_PER_PARAM - (LORA_MOMENT_BYTES if on_host else 0))
    update_extra = n_lora * (ADAMW_UPDATE_TEMP_BYTES + (LORA_MOMENT_BYTES if on_host else 0))
    seq = prompt_length + completion_length
    # the rollouts' KV cache as the engine asks vLLM for it; it is freed while the trainer runs
    # (HF generate's too, which lives only while sampling, so the plan holds none for it)
    rollout_kv = engine_kv_bytes(c, seq, num_sequences, fp8_kv)
    # the engine's own sizes where it is built already (the app's, with headroom), else the run's
    kv = (engine_kv_cache_bytes or rollout_kv) if engine == "vllm" else 0
    extra = engine_extra_bytes(c, engine_max_lora_rank or lora_rank) if engine == "vllm" else 0
    free = free_bytes if free_bytes is not None else (total_bytes or 80 * GIB)
    notes = []

    def peak_of(n: int) -> MicroBatchPeak:
        return micro_batch_peak(c, sequences=n, seq_len=seq, completion_len=completion_length, lora_rank=lora_rank,
                                lora_targets=lora_targets, checkpointing=checkpointing, offload=offload,
                                padded=padded, load_in_4bit=load_in_4bit)

    def plan_of(mbs: int) -> Plan:
        mb = peak_of(mbs)
        return Plan(weights, adapter, kv, mb.layers, max(0, mb.loss - mb.layers), mbs, 0.0, free, notes,
                    engine_extra=extra, release_kv=release_kv, update_extra=update_extra,
                    moments_on_host=n_lora * LORA_MOMENT_BYTES if on_host else 0,
                    outside_torch=CUDA_CONTEXT_BYTES + (VLLM_OUTSIDE_TORCH_BYTES if engine == "vllm" else 0))

    if micro_batch_size <= 0 and auto_micro_batch == "fastest":
        mbs, n_params = 1, param_count(c)
        while (mbs * 2 <= num_sequences and mbs * seq * n_params < FASTEST_PASS_PARAM_TOKENS
               and plan_of(mbs * 2).total_peak <= FASTEST_SHARE * free):
            mbs *= 2
        micro_batch_size = mbs
        saturated = mbs * seq * n_params >= FASTEST_PASS_PARAM_TOKENS and mbs < num_sequences
        notes.append([("note.fastest_saturated" if saturated else "note.fastest",
                       {"mbs": mbs, "share": f"{FASTEST_SHARE:.0%}", "free": f"{free / GIB:.1f} GB",
                        "tokens": f"{mbs * seq:,}"})])
    elif micro_batch_size <= 0:  # auto, lowest memory
        budget = rollout_kv
        mbs = 1
        while mbs * 2 <= num_sequences and peak_of(mbs * 2).peak <= budget:
            mbs *= 2
        micro_batch_size = mbs
        one = peak_of(1).peak
        if one <= budget:
            notes.append([("note.lowest", {"mbs": mbs, "budget": f"{budget / GIB:.2f} GB"})])
        else:
            notes.append([("note.one_too_big_offload" if offload else "note.one_too_big",
                           {"one": f"{one / GIB:.2f} GB", "budget": f"{budget / GIB:.2f} GB"})])
    mbs = max(1, micro_batch_size)
    while True:
        p = plan_of(mbs)
        if p.fits or mbs == 1:
            break
        mbs //= 2
    if mbs != micro_batch_size:
        notes.append([("note.lowered", {"before": micro_batch_size, "mbs": mbs})])
    total = total_bytes or free
    p.engine_share = round(min(0.92, (weights + kv + GIB) / total), 3) if engine == "vllm" else 0.0
    return p


@dataclass
class CpuPlan:
    """A step on the CPU, in RAM: the weights and the adapter's training state stay, and sampling's
    KV cache (HF generate's, gone when it returns) and training's activations take turns."""

    weights: int
    adapter_and_optimizer: int
    kv_cache: int
    activations: int  # one micro-batch's forward + backward at its peak, with the attention probabilities
    micro_batch_size: int
    dtype: str
    sequence_length: int  # prompt limit + completion limit: what the plan assumes of every sequence
    available: int | None = None  # RAM the machine has available now (None: unknown)
    weights_loaded: bool = False  # the weights are in RAM already, so not counted against `available`
    besides: int = 0  # what a CPU step holds beyond these tensors (CPU_STEP_WEIGHT_COPIES x weights)
    checkpointing: bool = True  # gradient checkpointing on (off: a plan that does not fit says to turn it on)

    @property
    def total_peak(self) -> int:
        return self.weights + self.adapter_and_optimizer + max(self.kv_cache, self.activations) + self.besides

    @property
    def fits(self) -> bool | None:
        if self.available is None:
            return None
        return self.total_peak - (self.weights if self.weights_loaded else 0) <= self.available

    @property
    def times_available(self) -> float:
        """What the step needs beyond the weights already loaded, in multiples of the RAM available (0: unknown);
        more than FAR_BEYOND (`far_beyond`): the run is refused, not only warned of."""
        return (self.total_peak - (self.weights if self.weights_loaded else 0)) / self.available if self.available else 0.0

    far_beyond = property(lambda self: self.times_available > FAR_BEYOND)

    def sentences(self) -> list[Sentence]:
        first = [("cpu.peak", {"peak": gb(self.total_peak)})]
        if self.available is not None:
            first.append(("cpu.of_available", {"available": gb(self.available)}))
        first.append(("cpu.parts", {"weights": gb(self.weights), "dtype": self.dtype,
                                    "adapter": gb(self.adapter_and_optimizer), "kv": gb(self.kv_cache),
                                    "activations": gb(self.activations), "mbs": self.micro_batch_size,
                                    "tokens": self.sequence_length, "besides": gb(self.besides)}))
        if self.fits is not False:
            return [first]
        # off, every layer keeps its activations and attention probabilities for backward: on, one layer's
        advice = [] if self.checkpointing else [("cpu.try_checkpointing", {})]
        # far beyond the machine (a million completion tokens: thousands of times its RAM): said firmly
        if self.far_beyond:
            times = self.times_available
            return [first, [("cpu.will_not_fit", {"times": f"{times:,.0f}" if times >= 10 else f"{times:.1f}"}),
                            *advice]]
        return [first, [("cpu.does_not_fit", {}), *advice]]

    def summary(self) -> str:
        return say(self.sentences())


def plan_cpu(c, cfg, *, micro_batch_size: int, dtype_bytes: int = 4, dtype: str = "float32",
             available_bytes: int | None = None, weights_loaded: bool = False) -> CpuPlan:
    """RAM for one step of `cfg` on the CPU (`c`: the model's config), with the base in a dtype of
    `dtype_bytes` bytes (float32 on most CPUs) and LoRA in float32.

    The sampling side is HF generate's KV cache for the step's rollouts at full length (it samples
    them in one batch); the training side one micro-batch's forward + backward, tensor by tensor as
    on a GPU (micro_batch_peak) with the base's activations in its dtype, plus what the CPU keeps
    that a GPU does not: with padding, torch's CPU attention runs the math kernel, which keeps each
    layer's attention probabilities [B, heads, S, S] for backward. Then CPU_STEP_WEIGHT_COPIES.
    Checked against the measured peak by bench/cpu_ram_check.py.

    >>> from types import SimpleNamespace as C
    >>> c = C(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    ...       num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True)
    >>> cfg = C(model=C(lora_r=8, lora_target_modules=["q_proj", "v_proj"], gradient_checkpointing=False,
    ...                 offload_activations=False),
    ...         algorithm=C(prompts_per_step=2, gradient_accumulation_steps=1, num_generations=4,
    ...                     max_prompt_length=32, max_completion_length=16))
    >>> p = plan_cpu(c, cfg, micro_batch_size=8)
    >>> p.weights == 2 * weight_bytes(c), p.kv_cache == 8 * 48 * kv_bytes_per_token(c, dtype_bytes=4)
    (True, True)
    """
    a, m = cfg.algorithm, cfg.model
    seq = a.max_prompt_length + a.max_completion_length
    weights = param_count(c) * dtype_bytes
    adapter = lora_param_count(c, m.lora_r, m.lora_target_modules) * LORA_BYTES_PER_PARAM
    kv = kv_bytes_per_token(c, dtype_bytes=dtype_bytes) * seq * sequences_per_step(cfg)
    act = micro_batch_peak(c, sequences=micro_batch_size, seq_len=seq, completion_len=a.max_completion_length,
                           lora_rank=m.lora_r, lora_targets=m.lora_target_modules,
                           checkpointing=m.gradient_checkpointing, offload=False, padded=True,
                           base_bytes=dtype_bytes).peak
    layers_kept = 1 if m.gradient_checkpointing else c.num_hidden_layers  # a checkpoint recomputes one at a time
    probs = layers_kept * micro_batch_size * c.num_attention_heads * seq * seq * dtype_bytes
    return CpuPlan(weights, adapter, kv, act + probs, micro_batch_size, dtype, seq, available_bytes, weights_loaded,
                   besides=CPU_STEP_WEIGHT_COPIES * weights, checkpointing=bool(m.gradient_checkpointing))


class DoesNotFit(AhaError, RuntimeError):
    """The run cannot fit on this GPU even with the smallest micro-batch."""


def plan_config(model_config, cfg, free_bytes: int | None, total_bytes: int | None = None,
                engine: str = "vllm", engine_settings=None, moments_on_host_as: bool | None = None) -> Plan:
    """`plan` for a run's `Config` (its model, algorithm and engine settings); `engine_settings`:
    the `EngineSizes` of the engine the run will use, when it is known (its KV cache and LoRA slots)."""
    a, m = cfg.algorithm, cfg.model
    return plan(model_config, lora_rank=m.lora_r, lora_targets=m.lora_target_modules,
                num_sequences=sequences_per_step(cfg), prompt_length=a.max_prompt_length,
                completion_length=a.max_completion_length,
                micro_batch_size=a.micro_batch_size, load_in_4bit=m.load_in_4bit,
                checkpointing=m.gradient_checkpointing, offload=m.offload_activations,
                free_bytes=free_bytes, total_bytes=total_bytes, engine=engine,
                fp8_kv=str(cfg.run.vllm_kv_cache_dtype).startswith("fp8"),
                release_kv=cfg.run.vllm_free_kv_between_steps,
                auto_micro_batch=a.auto_micro_batch,
                engine_kv_cache_bytes=getattr(engine_settings, "kv_cache_bytes", None),
                engine_max_lora_rank=getattr(engine_settings, "max_lora_rank", None),
                moments_on_host_as=moments_on_host_as, fp8_weights=cfg.run.vllm_weights_dtype == "fp8")


# ---------------------------------------------------------------------------
# the size of one step, against the machine, before Start (issue 29: group 256 x 4,096 prompts
# was accepted; step 0 never finished)

# Host memory one step's rollouts hold per token until the step ends: the token ids in Python
# lists (~36 bytes an int in a list), the padded id and mask tensors, old and reference log-probs
# and advantages (float32). A round figure on the high side.
HOST_BYTES_PER_TOKEN = 96
# Tokens one step may sample: on a CPU about a million (the bundled 135M model decodes a few
# thousand tokens a second on a laptop: minutes a step); on a GPU 2^27 (an hour-long step of a
# small model on an H100 at ~40k tokens a second).
MAX_SAMPLED_TOKENS = {"cpu": 1 << 20, "gpu": 1 << 27}


def step_size_refusal(cfg, *, on_gpu: bool, available_bytes: int | None) -> str | None:
    """Why one optimizer step of `cfg` is too large for this machine, in words, or None: it
    samples more tokens than MAX_SAMPLED_TOKENS allows, or its rollouts would hold more than half
    the host memory that is `available_bytes` now.

    >>> from core.config import Config
    >>> cfg = Config(); cfg.algorithm.num_generations, cfg.algorithm.prompts_per_step = 256, 4096
    >>> step_size_refusal(cfg, on_gpu=True, available_bytes=64 * GIB)[:60]
    'one step samples 1,048,576 completions (prompts_per_step 409'
    >>> step_size_refusal(Config(), on_gpu=False, available_bytes=8 * GIB) is None
    True
    """
    a = cfg.algorithm
    sequences = sequences_per_step(cfg)
    sampled = sequences * a.max_completion_length
    held = sequences * (a.max_prompt_length + a.max_completion_length) * HOST_BYTES_PER_TOKEN
    what = (f"one step samples {sequences:,} completions (prompts_per_step {a.prompts_per_step} x "
            f"gradient_accumulation_steps {a.gradient_accumulation_steps} x num_generations {a.num_generations}) "
            f"of up to {a.max_completion_length:,} tokens")
    fix = "lower prompts_per_step, num_generations or max_completion_length"
    limit = MAX_SAMPLED_TOKENS["gpu" if on_gpu else "cpu"]
    if sampled > limit:
        return (f"{what}: {sampled:,} tokens, more than the {limit:,} a step may sample on "
                f"{'a GPU' if on_gpu else 'this CPU'}; {fix}")
    if available_bytes and held > available_bytes // 2:
        return (f"{what}: its rollouts would hold about {held / GIB:.1f} GB of host memory, more than half "
                f"of the {available_bytes / GIB:.1f} GB free; {fix}")
    return None


# ---------------------------------------------------------------------------
# the one plan a run starts with


def micro_batch_size(cfg, plan=None) -> int:
    """The config's micro-batch, or for 0 (auto) the planner's pick on a GPU (`plan`); on a CPU
    (no plan) auto means 8, memory there being the cheap kind, never more than a step's sequences
    (gradient accumulation's included).

    >>> from core.config import Config
    >>> cfg = Config(); cfg.algorithm.micro_batch_size = 0
    >>> cfg.algorithm.prompts_per_step, cfg.algorithm.num_generations = 2, 2
    >>> micro_batch_size(cfg)
    4
    """
    a = cfg.algorithm
    if a.micro_batch_size > 0:
        return a.micro_batch_size
    if plan is not None:
        return plan.micro_batch_size
    return min(8, sequences_per_step(cfg))


def run_engine_sizes(c, cfg, weights: int, training_peak: int, free_bytes: int, total_bytes: int,
                     headroom: bool = False) -> EngineSizes:
    """The vLLM engine's sizes for a run of `cfg` (with `headroom`: for it and the runs after it,
    the app's long-lived engine), given the trainer's side of the plan (`weights`, `training_peak`)."""
    a, m, r = cfg.algorithm, cfg.model, cfg.run
    sizes = engine_sizes(
        c, num_sequences=sequences_per_step(cfg), prompt_length=a.max_prompt_length,
        completion_length=a.max_completion_length, lora_rank=m.lora_r, weight_bytes=weights,
        training_bytes=training_peak - weights, free_bytes=free_bytes, total_bytes=total_bytes,
        fp8_kv=str(r.vllm_kv_cache_dtype).startswith("fp8"), headroom=headroom,
        model_max_len=getattr(c, "max_position_embeddings", None))
    if headroom:
        sizes.max_num_seqs = max(sizes.max_num_seqs, HEADROOM_NUM_SEQS)
    return sizes


@dataclass
class RunPlan:
    """The one memory plan a run starts with: made once (`plan_run`), handed to the engine
    registry (the vLLM engine's sizes) and to the trainer (the micro-batch), and said to the person
    (`sentences`). On a CPU, `memory` is a `CpuPlan` (RAM) and there is no engine to size."""

    device: str  # "gpu" | "cpu"
    engine: str  # "hf" | "vllm"
    memory: Plan | CpuPlan
    micro_batch_size: int
    engine_sizes: EngineSizes | None = None  # vLLM: what its engine is (to be) built with
    free_bytes: int | None = None
    total_bytes: int | None = None

    @property
    def fits(self) -> bool:
        return self.memory.fits

    @property
    def peak_bytes(self) -> int:
        return self.memory.total_peak

    def sentences(self) -> list[Sentence]:
        return self.memory.sentences()

    def refuse_if_too_large(self) -> "RunPlan":
        """DoesNotFit with the plan's advice when the run does not fit this GPU, or needs more than FAR_BEYOND
        times a CPU's RAM available (past RAM the OS ends the app; below, shorter answers may fit: a warning)."""
        if self.device == "gpu" and not self.fits:
            raise DoesNotFit(f"The model is too large for this GPU with these settings. {self.memory.summary()}")
        if self.device == "cpu" and self.memory.far_beyond:
            raise DoesNotFit(f"This run cannot start on this machine's RAM. {self.memory.summary()}")
        return self


# vLLM's CPU build (CI's) has no device memory to read: its engine is sized as on a device this large
CPU_VLLM_NOMINAL_BYTES = 64 * GIB


def plan_run(c, cfg, *, engine: str, free_bytes: int | None = None, total_bytes: int | None = None,
             headroom: bool = False, engine_sizes: EngineSizes | None = None, dtype: str = "float32",
             dtype_bytes: int = 4, available_bytes: int | None = None, weights_loaded: bool = False) -> RunPlan:
    """The memory plan of a run of `cfg` (`c`: the model's config) on a GPU with `free_bytes` of
    `total_bytes`, or on a CPU (`free_bytes` None: the RAM plan, in `dtype`, against
    `available_bytes`). On vLLM the engine's sizes are planned here too (with `headroom` for the
    app's engine), unless the run uses an engine already built (`engine_sizes`: its sizes).

    >>> from types import SimpleNamespace as C
    >>> from core.config import Config
    >>> c = C(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    ...       num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True)
    >>> cfg = Config(); cfg.algorithm.micro_batch_size = 0
    >>> p = plan_run(c, cfg, engine="vllm", free_bytes=2**34, total_bytes=2**34)
    >>> p.device, p.fits, p.engine_sizes.max_model_len == cfg.algorithm.max_prompt_length + cfg.algorithm.max_completion_length
    ('gpu', True, True)
    >>> p.micro_batch_size == p.memory.micro_batch_size
    True
    >>> plan_run(c, cfg, engine="hf", available_bytes=2**33).device
    'cpu'
    >>> cfg.algorithm.max_completion_length = 4096  # auto on a CPU halves its micro-batch until the step fits
    >>> [plan_run(c, cfg, engine="hf", available_bytes=gib * GIB).micro_batch_size for gib in (8, 2, 0.5)]
    [8, 2, 1]
    >>> cfg.algorithm.micro_batch_size = 4  # one the user set stays theirs
    >>> plan_run(c, cfg, engine="hf", available_bytes=GIB).micro_batch_size
    4
    """
    if free_bytes is None:
        mbs = micro_batch_size(cfg)
        p = plan_cpu(c, cfg, micro_batch_size=mbs, dtype_bytes=dtype_bytes, dtype=dtype,
                     available_bytes=available_bytes, weights_loaded=weights_loaded)
        # auto on a CPU: the largest micro-batch of 8, 4, 2, 1 whose step fits the RAM (7,000 tokens: 319 GB at 8)
        while cfg.algorithm.micro_batch_size <= 0 and p.fits is False and mbs > 1:
            smaller = plan_cpu(c, cfg, micro_batch_size=mbs // 2, dtype_bytes=dtype_bytes, dtype=dtype,
                               available_bytes=available_bytes, weights_loaded=weights_loaded)
            if smaller.total_peak >= p.total_peak:  # sampling's KV cache is the peak: a smaller one only slows
                break
            mbs, p = mbs // 2, smaller
        if engine == "vllm" and engine_sizes is None:  # vLLM's CPU build: the plan only sizes its KV cache
            first = plan_config(c, cfg, CPU_VLLM_NOMINAL_BYTES, CPU_VLLM_NOMINAL_BYTES, engine="vllm",
                                moments_on_host_as=False)  # a CPU never moves them
            engine_sizes = run_engine_sizes(c, cfg, first.weights, max(first.training_peak, first.update_peak),
                                            CPU_VLLM_NOMINAL_BYTES,
                                            CPU_VLLM_NOMINAL_BYTES, headroom)
        return RunPlan("cpu", engine, p, mbs, engine_sizes if engine == "vllm" else None)
    total_bytes = total_bytes or free_bytes
    if engine == "vllm" and engine_sizes is None:
        first = plan_config(c, cfg, free_bytes, total_bytes, engine="vllm")
        engine_sizes = run_engine_sizes(c, cfg, first.weights, max(first.training_peak, first.update_peak), free_bytes,
                                        total_bytes, headroom)
    p = plan_config(c, cfg, free_bytes, total_bytes, engine, engine_settings=engine_sizes if engine == "vllm" else None)
    return RunPlan("gpu", engine, p, micro_batch_size(cfg, p), engine_sizes if engine == "vllm" else None,
                   free_bytes, total_bytes)

