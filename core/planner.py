"""Memory planner: predict a run's peak GPU memory before step 1, and pick settings that fit.

Owns: arithmetic from a model's config and the run's settings to bytes — base weights (bf16 or
4-bit), LoRA adapter + gradient + AdamW state, the engine's KV cache for one step's rollouts,
activations of one micro-batch (with or without per-layer checkpointing / offload), and the
loss buffers of the fused log-prob (the [tokens, vocab] logits are never built). It then picks
the largest micro-batch and the engine's memory share that fit the free memory, and says so in
plain words (the UI shows `Plan.summary`).

Refuses to know: torch (it reads plain numbers), engines, the UI.

The per-token activation constants were calibrated on an H200 against measured peaks
(`bench/planner_check.py`, results in bench/results/planner_check.md).

    >>> from types import SimpleNamespace as NS
    >>> qwen15 = NS(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    ...             num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    >>> round(param_count(qwen15) / 1e9, 2)
    1.54
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2**30

# bytes saved for backward per token per decoder layer, bf16 base with fp32 LoRA on all seven
# projections and SDPA attention: c_hidden * hidden_size + c_inter * intermediate_size
ACT_C_HIDDEN = 50.0
ACT_C_INTER = 12.0
# peft keeps LoRA weights in fp32: weight + grad + AdamW m and v
LORA_BYTES_PER_PARAM = 16
CUDA_CONTEXT_BYTES = int(0.5 * GIB)  # the CUDA context and cuBLAS workspaces, outside torch's counter


def _head_dim(c) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def param_count(c) -> int:
    hd = _head_dim(c)
    attn = c.hidden_size * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    emb = c.vocab_size * c.hidden_size * (1 if getattr(c, "tie_word_embeddings", False) else 2)
    return c.num_hidden_layers * (attn + mlp) + emb


def lora_param_count(c, rank: int, targets: list[str]) -> int:
    hd = _head_dim(c)
    h, i = c.hidden_size, c.intermediate_size
    shapes = {  # (in, out)
        "q_proj": (h, c.num_attention_heads * hd), "k_proj": (h, c.num_key_value_heads * hd),
        "v_proj": (h, c.num_key_value_heads * hd), "o_proj": (c.num_attention_heads * hd, h),
        "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
    }
    per_layer = sum(rank * (a + b) for t, (a, b) in shapes.items() if t in targets)
    return per_layer * c.num_hidden_layers


def kv_bytes_per_token(c, fp8: bool = False) -> int:
    return 2 * c.num_hidden_layers * c.num_key_value_heads * _head_dim(c) * (1 if fp8 else 2)


def activation_bytes(c, tokens: int, *, checkpointing: bool, offload: bool) -> int:
    """Autograd's saved tensors for `tokens` tokens (one micro-batch) plus backward transients."""
    per_layer_token = ACT_C_HIDDEN * c.hidden_size + ACT_C_INTER * c.intermediate_size
    if not checkpointing and not offload:
        return int(tokens * c.num_hidden_layers * per_layer_token)
    kept = 0 if offload else tokens * c.num_hidden_layers * c.hidden_size * 2  # each layer's input
    return int(kept + tokens * per_layer_token)  # + one layer recomputed at a time


def loss_bytes(c, tokens: int, chunk_rows: int = 1024) -> int:
    """Fused log-prob: final hidden states and their gradient (fp32 accumulators) + one logits tile."""
    return int(tokens * c.hidden_size * (2 + 4 + 2) + min(tokens, chunk_rows) * c.vocab_size * 4 * 2)


@dataclass
class Plan:
    weights: int
    adapter_and_optimizer: int
    kv_cache: int
    activations: int
    loss_buffers: int
    micro_batch_size: int
    engine_share: float
    free: int
    notes: list[str] = field(default_factory=list)

    @property
    def training_peak(self) -> int:
        """Peak of the trainer's side (what torch's allocator sees) during backward."""
        return self.weights + self.adapter_and_optimizer + self.activations + self.loss_buffers

    @property
    def total_peak(self) -> int:
        return self.training_peak + self.kv_cache + CUDA_CONTEXT_BYTES

    @property
    def fits(self) -> bool:
        return self.total_peak <= self.free

    def summary(self) -> str:
        g = lambda b: f"{b / GIB:.1f} GB"  # noqa: E731
        lines = [
            f"Predicted peak {g(self.total_peak)} of {g(self.free)} free: weights {g(self.weights)}, "
            f"adapter + optimizer {g(self.adapter_and_optimizer)}, rollout KV cache {g(self.kv_cache)}, "
            f"activations {g(self.activations)} (micro-batch {self.micro_batch_size}), "
            f"loss buffers {g(self.loss_buffers)}.",
        ]
        lines += self.notes
        if not self.fits:
            lines.append("It does not fit: lower the completion length or G, turn on activation offload, "
                         "or load the base in 4-bit.")
        return " ".join(lines)


def plan(c, *, lora_rank: int, lora_targets: list[str], num_sequences: int, prompt_length: int,
         completion_length: int, micro_batch_size: int, load_in_4bit: bool = False,
         checkpointing: bool = False, offload: bool = False, free_bytes: int | None = None,
         total_bytes: int | None = None, fp8_kv: bool = False, engine: str = "vllm") -> Plan:
    """A plan for one step; shrinks the micro-batch (halving) until it fits `free_bytes`."""
    n = param_count(c)
    weights = int(n * (0.5625 if load_in_4bit else 2))  # NF4: 4 bits + fp8-ish scales
    adapter = lora_param_count(c, lora_rank, lora_targets) * LORA_BYTES_PER_PARAM
    seq = prompt_length + completion_length
    kv = kv_bytes_per_token(c, fp8_kv) * seq * num_sequences if engine == "vllm" else 0
    if engine != "vllm":  # HF generate: its KV cache lives while sampling, not during backward
        kv = 0
    free = free_bytes if free_bytes is not None else (total_bytes or 80 * GIB)
    notes = []
    mbs = max(1, micro_batch_size)
    while True:
        p = Plan(weights, adapter, kv, activation_bytes(c, mbs * seq, checkpointing=checkpointing, offload=offload),
                 loss_bytes(c, mbs * seq), mbs, 0.0, free, notes)
        if p.fits or mbs == 1:
            break
        mbs //= 2
    if mbs != micro_batch_size:
        notes.append(f"Micro-batch lowered from {micro_batch_size} to {mbs} to fit.")
    total = total_bytes or free
    p.engine_share = round(min(0.92, (weights + kv + GIB) / total), 3) if engine == "vllm" else 0.0
    return p


class DoesNotFit(RuntimeError):
    """The run cannot fit on this GPU even with the smallest micro-batch."""


def preflight(model_config, cfg, free_bytes: int, total_bytes: int | None = None, engine: str = "vllm") -> Plan:
    """Plan a run from its `Config` before anything is loaded; raise DoesNotFit with advice."""
    a, m = cfg.algorithm, cfg.model
    p = plan(model_config, lora_rank=m.lora_r, lora_targets=m.lora_target_modules,
             num_sequences=a.prompts_per_step * a.gradient_accumulation_steps * a.num_generations,
             prompt_length=a.max_prompt_length, completion_length=a.max_completion_length,
             micro_batch_size=a.micro_batch_size, load_in_4bit=m.load_in_4bit,
             checkpointing=m.gradient_checkpointing, offload=m.offload_activations,
             free_bytes=free_bytes, total_bytes=total_bytes, engine=engine)
    if not p.fits:
        raise DoesNotFit(f"The model is too large for this GPU with these settings. {p.summary()}")
    return p
