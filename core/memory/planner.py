"""Memory planner: predict a run's peak GPU memory (or, on a CPU, RAM) before step 1, and pick
settings that fit.

Owns: arithmetic from a model's config and the run's settings to bytes — base weights (bf16 or
4-bit), LoRA adapter + gradient + AdamW state, the engine's KV cache for one step's rollouts,
and the peak of one micro-batch's forward + backward (with or without per-layer checkpointing /
offload) through the trainer's loss path: decoder -> fused log-prob from hidden states (the
[tokens, vocab] logits are never built) -> loss. It then picks the largest micro-batch and the
engine's memory share that fit the free memory, and says so in plain words (the UI shows
`Plan.summary`). With micro_batch_size 0 (auto) it picks for the lowest peak instead: the largest
micro-batch whose forward/backward needs no more than the rollouts' KV cache, which the engine
frees while the trainer runs. On a CPU, `plan_cpu` counts the same tensors in the CPU's dtype, in
RAM. The words are keyed fragments (`WORDS`, `say`) so that the UI can translate them.

Refuses to know: torch (it reads plain numbers), engines, the UI.

How the micro-batch peak is counted: not with fitted per-token constants but tensor by tensor —
what autograd saves in each decoder layer (`layer_saved_bytes_per_token`), what is alive besides
at the moment the peak happens (`micro_batch_peak`), and a small fixed term for what torch's
allocator holds besides (cuBLAS workspaces). The list was read off a CPU trace of every tensor
the bench's step allocates and frees, op by op (it agrees with that trace to 0.1% for Qwen2.5
0.5B-7B and Llama-3.1-8B shapes in all three modes), and checked against the H200 measurements
in bench/results/planner_check.md (`python bench/planner_check.py --compare` prints the table on
a CPU). It assumes what the trainer runs: a bf16 base, peft LoRA (adapters kept in fp32), SDPA
attention, a Llama/Qwen2-style layer (RMSNorm, RoPE, SwiGLU MLP). Not measured: 4-bit bases
(their activations are counted as for bf16) and padded micro-batches (the mask terms below come
from the code of transformers and torch; bench/planner_check.py now measures two such rows).

    >>> from types import SimpleNamespace as NS
    >>> qwen15 = NS(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    ...             num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    >>> round(param_count(qwen15) / 1e9, 2)
    1.54
    >>> round(layer_saved_bytes_per_token(qwen15, 16, ALL_PROJECTIONS) / 1024, 1)  # KiB per token per layer
    143.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import AhaError

GIB = 2**30
MIB = 2**20

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# peft keeps LoRA weights in fp32 (it upcasts adapters of a bf16 base): weight + grad + AdamW m and v
LORA_BYTES_PER_PARAM = 16
# What torch's allocator holds on top of the tensors counted here. Measured: 67-73 MiB above
# weights + adapter state before the first micro-batch (static_gb in
# bench/results/planner_check.json). Most likely two cuBLAS workspaces of 32 MiB (Hopper's size;
# one per thread that runs matmuls: the forward's and autograd's backward thread), plus a few MiB
# of small buffers (the norm weights and biases param_count skips, RoPE tables, 512-byte rounding
# of ~1,500 small LoRA/optimizer tensors).
ALLOCATOR_FIXED_BYTES = 70 * MIB
# Device memory outside torch's allocator (NVML sees it, torch.cuda.memory_reserved does not), both
# measured on the H200 (bench/results/trl_compare.json, 2026-11-28/29):
# - any CUDA process: the context and the kernels' code. TRL without vLLM peaked 0.74 GiB above
#   torch's reserved memory at 1024 and at 4096 tokens.
# - a process with an in-process vLLM engine, on top of that: 8 runs of ours (1.5B bf16 and 4-bit,
#   1K-32K; 8B at 20K) held 1.42-1.86 GiB on the device beyond torch's allocated memory right after
#   start-up, i.e. 0.7-1.1 GiB beyond the context: torch.compile's and vLLM's own kernels (custom
#   ops, FlashInfer/Triton modules), cuBLAS/cuBLASLt handles of its threads and CUDA-graph
#   bookkeeping. With 1.0 GiB the planner predicts those 8 device peaks within +0% to +10%
#   (bench/results/planner_check_device.md).
CUDA_CONTEXT_BYTES = int(0.75 * GIB)
VLLM_OUTSIDE_TORCH_BYTES = 1 * GIB
# auto_micro_batch "fastest": the share of the free memory its step may plan to use (the rest is
# headroom for what the plan does not count: fragmentation, a longer-than-planned prompt)
FASTEST_SHARE = 0.9
# A CPU step's resident memory beyond the tensors plan_cpu counts, in copies of the weights:
# bench/cpu_ram_check.py measured 1.0 GiB for SmolLM2-135M in float32 (0.50 GiB of weights) at
# micro-batch 4 and 8 and at 130- and 492-token sequences alike, 0.65 GiB for the same model cut
# to 15 layers (0.30 GiB), next to nothing for the tests' tiny model: it follows the weights,
# not the tokens. It appears during the first forward + backward and stays resident. Not
# attributed tensor by tensor (candidates: weight-sized scratch of the CPU matmuls' backward,
# what glibc's per-thread arenas keep after it).
CPU_STEP_WEIGHT_COPIES = 2


# ---------------------------------------------------------------------------
# The plan in words. Each sentence is a list of fragments (key, values); `say` renders them in
# English with WORDS. The keys are what the UI translates (ui/zh.py PLAN_ZH holds the same keys
# with the same {placeholders}), so the words are written once here and the numbers never twice.
WORDS = {
    # a GPU plan's first sentence, fragment by fragment
    "peak": "Predicted peak {peak}",
    "phase.sampling": " (sampling)",
    "phase.training": " (training)",
    "of_free": " of {free} free",
    "parts": ": weights {weights}, adapter + optimizer {adapter}, rollout KV cache {kv}",
    "kv_freed": " (freed while training)",
    "activations": ", activations {activations} (micro-batch {mbs})",
    "loss_buffers": ", loss buffers {loss}",
    "engine_extras": ", engine extras {extra}",
    "cuda": ", CUDA context {outside}.",
    "cuda_vllm": ", CUDA context and vLLM kernels {outside}.",
    # notes on the micro-batch
    "note.fastest": "Micro-batch {mbs} (auto, fastest: the largest whose step fits {share} of the free {free}).",
    "note.lowest": "Micro-batch {mbs} (auto: training needs no more than the rollouts' {budget} KV cache, "
                   "which is freed while it runs).",
    "note.one_too_big": "Micro-batch 1 (auto); even one sequence's forward/backward ({one}) needs more than the "
                        "rollouts' {budget} KV cache: activation offload would lower it.",
    "note.one_too_big_offload": "Micro-batch 1 (auto); even one sequence's forward/backward ({one}) needs more "
                                "than the rollouts' {budget} KV cache.",
    "note.lowered": "Micro-batch lowered from {before} to {mbs} to fit.",
    "does_not_fit": "It does not fit: lower the completion length or G, turn on activation offload, "
                    "or load the base in 4-bit.",
    # a CPU plan (RAM)
    "cpu.peak": "CPU run: about {peak} of RAM at the step's peak",
    "cpu.of_available": " ({available} available)",
    "cpu.parts": ": weights {weights} ({dtype}), adapter + optimizer {adapter}, the larger of sampling's KV cache "
                 "{kv} and training's activations {activations} (micro-batch {mbs}, sequences of up to {tokens} "
                 "tokens), and {besides} that training holds besides.",
    "cpu.does_not_fit": "It may not fit: lower the completion length, G or the micro-batch.",
    # the run's engine (core/app/manager.py), and what the planner cannot know
    "engine.loaded": "It runs on the loaded vLLM engine (LoRA rank up to {rank}, a context of {context} tokens, "
                     "KV cache {kv}).",
    "engine.loaded_waves": "It runs on the loaded vLLM engine (LoRA rank up to {rank}, a context of {context} "
                           "tokens, KV cache {kv}) - its rollouts are sampled in waves.",
    "engine.built": "Its vLLM engine is built for it: LoRA rank up to {rank}, a context of {context} tokens, "
                    "KV cache {kv}.",
    "engine.rebuilt": "Its vLLM engine is rebuilt for it ({reasons}): LoRA rank up to {rank}, a context of "
                      "{context} tokens, KV cache {kv}.",
    "unknown": "Memory plan: unknown for this model.",
    "unknown_note": "Memory plan: unknown for this model. {note}",
}

Sentence = list  # [(key, values), ...]: fragments read in order


def say(sentences: list[Sentence], words: dict[str, str] | None = None, sep: str = " ") -> str:
    """The sentences in words (English unless another table with the same keys is given).

    >>> say([[("peak", {"peak": "1.00 GB"}), ("phase.training", {})], [("note.lowered", {"before": 8, "mbs": 4})]])
    'Predicted peak 1.00 GB (training) Micro-batch lowered from 8 to 4 to fit.'
    """
    words = words or WORDS
    return sep.join("".join(words[key].format(**values) for key, values in sentence) for sentence in sentences)


def gb(b: float) -> str:
    """Bytes in GB the way the plan writes them: one decimal from 10 GB up, two below."""
    return f"{b / GIB:.1f} GB" if b >= 10 * GIB else f"{b / GIB:.2f} GB"


def _head_dim(c) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def _projections(c) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of one decoder layer."""
    hd = _head_dim(c)
    h, i = c.hidden_size, c.intermediate_size
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def param_count(c) -> int:
    attn_mlp = sum(a * b for a, b in _projections(c).values())
    emb = c.vocab_size * c.hidden_size * (1 if getattr(c, "tie_word_embeddings", False) else 2)
    return c.num_hidden_layers * attn_mlp + emb


def weight_bytes(c, load_in_4bit: bool = False) -> int:
    """Bytes of the base weights: bf16, or NF4 for the decoder's linear layers (4 bits plus one fp32
    absmax per 64 weights, as vLLM keeps them; the embeddings and LM head stay bf16).

    >>> from types import SimpleNamespace as C
    >>> c = C(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    ...       num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True)
    >>> weight_bytes(c), weight_bytes(c, True)
    (160256, 54272)
    """
    if not load_in_4bit:
        return 2 * param_count(c)
    linear = c.num_hidden_layers * sum(a * b for a, b in _projections(c).values())
    return int(linear * 0.5625) + 2 * (param_count(c) - linear)


def lora_param_count(c, rank: int, targets: list[str]) -> int:
    per_layer = sum(rank * (a + b) for t, (a, b) in _projections(c).items() if t in targets)
    return per_layer * c.num_hidden_layers


def kv_bytes_per_token(c, fp8: bool = False, dtype_bytes: int = 2) -> int:
    return 2 * c.num_hidden_layers * c.num_key_value_heads * _head_dim(c) * (1 if fp8 else dtype_bytes)


def engine_kv_bytes(c, seq_len: int, num_sequences: int, fp8: bool = False) -> int:
    """The KV cache the vLLM engine asks for: one step's rollouts at full length + 10% (block
    rounding), never less than one full-length sequence's, in whole MiB (see plan_settings)."""
    per_seq = kv_bytes_per_token(c, fp8) * seq_len
    b = int(per_seq * max(1, num_sequences) * 1.1)
    return -(-b // MIB) * MIB


# The ranks vLLM accepts for `max_lora_rank` (vllm/config/lora.py `MaxLoRARanks`, 0.24 and 0.31).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# A long-lived engine (the app's: one per process, serving many runs and the chat) is built with
# room for the runs people usually start after the first, so changing the LoRA rank or the
# completion length does not cost a rebuild: LoRA slots up to this rank (their memory is counted
# in engine_extra_bytes) and a context of at least this many tokens (what vLLM then needs is one
# such sequence of KV cache). A run beyond them gets an engine rebuilt for it.
HEADROOM_LORA_RANK = 64
HEADROOM_MODEL_LEN = 4096
HEADROOM_NUM_SEQS = 128  # sequences decoded at once (e.g. 16 prompts x G = 8)
# ... and a KV cache for that many sequences of this many tokens (512 prompt + 1,024 completion),
# at most a quarter of what the trainer leaves free: vLLM 0.24 cannot rebuild a sleep-mode engine
# in the same process, and a short cache samples a step's rollouts in waves (3.26 vs 0.91 s a
# step on the H200, bench/results/gpu_session_2026-12-04.md)
HEADROOM_KV_TOKENS = 1536


def sequences_per_step(cfg) -> int:
    """Completions one optimizer step samples: prompts x accumulation x G."""
    a = cfg.algorithm
    return a.prompts_per_step * a.gradient_accumulation_steps * a.num_generations


def engine_lora_rank(lora_rank: int) -> int | None:
    """The smallest `max_lora_rank` vLLM accepts that holds `lora_rank`; None above 512.

    >>> engine_lora_rank(16), engine_lora_rank(17), engine_lora_rank(300), engine_lora_rank(513)
    (16, 32, 320, None)
    """
    return next((r for r in VLLM_LORA_RANKS if r >= lora_rank), None)


@dataclass
class EngineSizes:
    """What a vLLM engine is built with for a run: limits it can serve and the memory it takes."""

    max_lora_rank: int
    max_model_len: int
    kv_cache_bytes: int  # the KV cache, in bytes (vLLM's kv_cache_memory_bytes)
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float  # a start-up guard once the KV cache is given in bytes


def engine_sizes(c, *, num_sequences: int, prompt_length: int, completion_length: int, lora_rank: int,
                 weight_bytes: int, training_bytes: int, free_bytes: int, total_bytes: int,
                 fp8_kv: bool = False, headroom: bool = False, model_max_len: int | None = None) -> EngineSizes:
    """The engine's limits and memory for one run (the CLI's), or for a run and those after it
    (`headroom`: the app's engine, see HEADROOM_*).

    The KV cache holds one step's rollouts at full length + 10% (engine_kv_bytes), never less than
    one sequence of the engine's context. The share covers the weights (which the trainer shares),
    that cache and ~1 GiB for sampling activations and CUDA graphs, capped so that what the trainer
    needs on top (`training_bytes`) fits in what remains.

    >>> from types import SimpleNamespace as C
    >>> c = C(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    ...       num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True)
    >>> s = engine_sizes(c, num_sequences=8, prompt_length=256, completion_length=512, lora_rank=32,
    ...                  weight_bytes=1, training_bytes=1, free_bytes=2**34, total_bytes=2**34)
    >>> s.max_lora_rank, s.max_model_len, s.max_num_seqs
    (32, 768, 16)
    >>> h = engine_sizes(c, num_sequences=8, prompt_length=256, completion_length=512, lora_rank=32,
    ...                  weight_bytes=1, training_bytes=1, free_bytes=2**34, total_bytes=2**34,
    ...                  headroom=True, model_max_len=2048)
    >>> h.max_lora_rank, h.max_model_len
    (64, 2048)
    """
    need_len = prompt_length + completion_length
    rank = engine_lora_rank(lora_rank) or lora_rank
    max_len = need_len
    if headroom:
        rank = max(rank, HEADROOM_LORA_RANK)
        room = HEADROOM_MODEL_LEN if model_max_len is None else min(HEADROOM_MODEL_LEN, model_max_len)
        max_len = max(need_len, room)
    kv = max(engine_kv_bytes(c, need_len, num_sequences, fp8_kv), engine_kv_bytes(c, max_len, 1, fp8_kv))
    if headroom:
        spare = (free_bytes - weight_bytes - training_bytes - 2 * GIB) // 4
        kv = max(kv, min(engine_kv_bytes(c, HEADROOM_KV_TOKENS, HEADROOM_NUM_SEQS, fp8_kv), spare // MIB * MIB))
    want = weight_bytes + kv + GIB  # + ~1 GiB for activations of sampling, graphs
    cap = free_bytes - training_bytes - GIB
    share = min(want, max(cap, weight_bytes + GIB)) / total_bytes
    return EngineSizes(
        max_lora_rank=rank, max_model_len=max_len, kv_cache_bytes=kv,
        max_num_seqs=max(16, min(1024, num_sequences)), max_num_batched_tokens=max(8192, max_len),
        # 3 decimals round to 0.14 GiB on an H200, so the floor only keeps it above zero
        gpu_memory_utilization=round(min(max(share, 0.01), 0.92), 3))


def engine_extra_bytes(c, lora_rank: int, max_loras: int = 2) -> int:
    """What a vLLM engine holds besides weights and KV cache while it samples: its LoRA slots
    (`max_loras` adapters at the engine's max rank, bf16, on every projection vLLM wraps) and an
    estimate of 256 MiB for CUDA graphs, the sampler and prefill activations (an estimate, to be
    checked against bench/results/trl_compare.md's measured peaks)."""
    max_rank = max(8, 1 << (max(lora_rank, 1) - 1).bit_length())
    return max_loras * 2 * lora_param_count(c, max_rank, ALL_PROJECTIONS) + 256 * MIB


def layer_saved_bytes_per_token(c, rank: int, targets, padded_seq_len: int = 0, base_bytes: int = 2) -> int:
    """Bytes autograd keeps per token for one decoder layer's backward (bf16 base, fp32 LoRA).

    The frozen base projections keep nothing but their own weight (the input's gradient needs
    only the weight) and the residual adds keep nothing. What is kept, tensor by tensor (`bb`:
    bytes of the base's dtype, 2 for bf16; a float32 base on a CPU keeps 4):
    """
    h, i, bb = c.hidden_size, c.intermediate_size, base_bytes
    hd, nh = _head_dim(c), c.num_attention_heads
    q, kv = nh * hd, c.num_key_value_heads * hd
    proj = _projections(c)
    # 2 RMSNorms: each keeps the fp32 copy of its input [N, h] and its fp32 1/rms [N, 1]
    b = 2 * (4 * h + 4)
    # each LoRA'd projection: peft casts the input to the adapter's dtype, fp32 (q, k and v each
    # make their own copy), kept for lora_A's weight gradient: 4 x in_features; and lora_A's
    # fp32 output [N, r], kept for lora_B's
    b += sum(4 * proj[t][0] + 4 * rank for t in targets if t in proj)
    # SDPA keeps its inputs and output: RoPE'd queries and the output (bf16 [N, q] each) and the
    # fp32 logsumexp per head ...
    b += bb * q + bb * q + 4 * nh
    if padded_seq_len:
        # ... with padding there is an attention mask: transformers repeats k and v to all heads
        # (bf16 [N, q] each) and SDPA runs the memory-efficient kernel, which keeps the mask as a
        # bf16 bias [B, 1, S, S] of its own in every layer: 2 S bytes per token
        b += bb * q + bb * q + bb * padded_seq_len
    else:
        # ... without, flash attention takes k and v as they are (bf16 [N, kv] each)
        b += bb * kv + bb * kv
    # SwiGLU MLP: SiLU keeps its input (gate_proj's output), the product keeps both factors
    # (SiLU's output, up_proj's output): bf16 [N, i] each
    b += 3 * bb * i
    return b


def _mlp_transient_per_token(c, rank: int, targets, recompute: bool, base_bytes: int = 2) -> int:
    """Per token, what the last layer's MLP holds at its peak beyond that layer's saved tensors.

    Two candidate moments. Inside up_proj: the LoRA branch's output lora_B(lora_A(x)) and its
    `* scaling` copy, fp32 [N, i] each, while down_proj's fp32 input copy (part of the saved
    bytes) does not exist yet. Inside down_proj: its bf16 input [N, i] (the SiLU product, a
    local), its base output (bf16 [N, h]) and the LoRA branch's output and scaled copy (fp32
    [N, h] each). Which is higher depends on i / h (Qwen2: up_proj; Llama: down_proj). A
    checkpoint's recompute stops as soon as the last saved tensor exists (down_proj's lora_A
    output), so there only the first counts.
    """
    h, i = c.hidden_size, c.intermediate_size
    proj = _projections(c)
    if "gate_proj" in targets or "up_proj" in targets:
        up = 8 * i - ((4 * i + 4 * rank) if "down_proj" in targets else 0)
    else:
        up = 8 * max([proj[t][1] for t in targets if t in proj], default=0)
    down = base_bytes * (i + h) + (8 * h if "down_proj" in targets else 0)
    return up if recompute else max(up, down)


@dataclass
class MicroBatchPeak:
    """The two moments one micro-batch's memory peaks at, in bytes above the static state."""

    layers: int  # inside the last decoder layer (its forward, or its recompute in backward)
    loss: int  # in the fused log-prob's backward, before any decoder layer's backward

    @property
    def peak(self) -> int:
        return max(self.layers, self.loss)


def micro_batch_peak(c, *, sequences: int, seq_len: int, completion_len: int, lora_rank: int = 16,
                     lora_targets=ALL_PROJECTIONS, checkpointing: bool = False, offload: bool = False,
                     padded: bool = False, load_in_4bit: bool = False, base_bytes: int = 2) -> MicroBatchPeak:
    """Peak bytes of one micro-batch's forward + backward (trainer's loss path), by tensor.

    Shapes: N = sequences x seq_len tokens go through the decoder, Nc = sequences x
    completion_len rows through the fused log-prob. h, i: hidden and intermediate size. bb
    (`base_bytes`): bytes per element of the base's activations (bf16: 2; a float32 CPU run: 4).
    """
    h, L, hd, bb = c.hidden_size, c.num_hidden_layers, _head_dim(c), base_bytes
    n, nc = sequences * seq_len, sequences * completion_len
    saved = layer_saved_bytes_per_token(c, lora_rank, lora_targets, seq_len if padded else 0, bb)
    rope = 2 * bb * hd  # RoPE's cos and sin tables (bf16 [N, head_dim]), shared by all layers
    once = sequences * seq_len * seq_len if padded else 0  # the bool [B, 1, S, S] mask, shared
    if load_in_4bit:  # bitsandbytes dequantizes the widest frozen weight to bf16 for each matmul
        once += bb * max(a * b for a, b in _projections(c).values())
    # the loss path's backward: the kernel keeps a bf16 copy of the completion rows' hidden states
    # (hidden[mask]); its backward adds an fp32 [Nc, h] gradient accumulator and its bf16 cast
    kernel_bwd = nc * (bb + 4 + bb) * h
    if not checkpointing and not offload:
        # every layer's saved tensors, less layer 0's input-norm copy (its input, the frozen
        # embedding, needs no gradient); in the last layer's MLP, its transient and four bf16
        # [N, h] tensors: the embedding output (kept by the decoder), the layer's input, the
        # post-attention residual and the normed MLP input
        trans = _mlp_transient_per_token(c, lora_rank, lora_targets, recompute=False, base_bytes=bb)
        layers = n * (L * saved - 4 * h + trans + 4 * bb * h + rope) + once
        # at the kernel's backward: all saved tensors still, and the final norm's fp32 input copy
        loss = n * (L * saved - 4 * h + rope + 4 * h) + kernel_bwd + once
    else:
        # each layer's input is all that the forward keeps (checkpoint: on the GPU, bf16 [N, h]
        # per layer; offload: in pinned CPU memory, copied back one layer at a time, and the next
        # layer's already on its way back: core/models/offload.py prefetches one layer ahead)
        kept = L * bb * h if not offload else 2 * bb * h
        trans = _mlp_transient_per_token(c, lora_rank, lora_targets, recompute=True, base_bytes=bb)
        # the last layer's recompute: its saved tensors, the MLP transient, two bf16 [N, h]
        # locals (post-attention residual, normed MLP input) and the gradients in flight when the
        # recompute starts (output grad and base-branch grad, bf16; LoRA-branch grad, fp32)
        layers = n * (kept + saved + trans + 2 * bb * h + (bb + bb + 4) * h + rope) + once
        if offload:
            # the offload hook also sends the kernel's saved head weight (vocab x h, bf16) to the
            # CPU with the hidden rows, and both come back for the kernel's backward
            loss = bb * c.vocab_size * h + kernel_bwd
        else:
            loss = n * (kept + rope + 4 * h) + kernel_bwd + once
    return MicroBatchPeak(int(layers), int(loss))


def activation_bytes(c, tokens: int, *, checkpointing: bool, offload: bool, lora_rank: int = 16,
                     lora_targets=ALL_PROJECTIONS, seq_len: int | None = None,
                     completion_len: int | None = None, padded: bool = False) -> int:
    """Peak bytes of one micro-batch of `tokens` tokens above the static state (see micro_batch_peak)."""
    seq_len = seq_len or tokens
    return micro_batch_peak(c, sequences=max(1, tokens // seq_len), seq_len=seq_len,
                            completion_len=completion_len if completion_len is not None else seq_len,
                            lora_rank=lora_rank, lora_targets=lora_targets, checkpointing=checkpointing,
                            offload=offload, padded=padded).peak


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

    @property
    def training_peak(self) -> int:
        """Peak of the trainer's side (what torch's allocator sees) during one micro-batch."""
        return self.weights + self.adapter_and_optimizer + self.activations + self.loss_buffers + self.workspace

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
        return step + self.outside_torch

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
         engine_kv_cache_bytes: int | None = None, engine_max_lora_rank: int | None = None) -> Plan:
    """A plan for one step; shrinks the micro-batch (halving) until it fits `free_bytes`.

    micro_batch_size 0 = auto: the largest micro-batch (a power of two, at most the step's
    sequences) whose forward/backward needs no more than the rollouts' KV cache, which the engine
    frees while the trainer runs. The step's peak is then the rollout's, so a larger micro-batch
    would only raise it and a smaller one would only cost speed. At least 1, then shrunk to fit.
    auto_micro_batch "fastest" makes auto pick for speed instead: the largest micro-batch (a power
    of two, at most the step's sequences) whose step fits FASTEST_SHARE of the free memory.
    padded: whether micro-batches carry padding (the trainer's do: prompts and completions of
    different lengths), which costs an attention mask and repeated k/v heads in every layer.
    """
    weights = weight_bytes(c, load_in_4bit)
    adapter = lora_param_count(c, lora_rank, lora_targets) * LORA_BYTES_PER_PARAM
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
                    engine_extra=extra, release_kv=release_kv,
                    outside_torch=CUDA_CONTEXT_BYTES + (VLLM_OUTSIDE_TORCH_BYTES if engine == "vllm" else 0))

    if micro_batch_size <= 0 and auto_micro_batch == "fastest":
        mbs = 1
        while mbs * 2 <= num_sequences and plan_of(mbs * 2).total_peak <= FASTEST_SHARE * free:
            mbs *= 2
        micro_batch_size = mbs
        notes.append([("note.fastest", {"mbs": mbs, "share": f"{FASTEST_SHARE:.0%}", "free": f"{free / GIB:.1f} GB"})])
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

    @property
    def total_peak(self) -> int:
        return self.weights + self.adapter_and_optimizer + max(self.kv_cache, self.activations) + self.besides

    @property
    def fits(self) -> bool | None:
        if self.available is None:
            return None
        return self.total_peak - (self.weights if self.weights_loaded else 0) <= self.available

    def sentences(self) -> list[Sentence]:
        first = [("cpu.peak", {"peak": gb(self.total_peak)})]
        if self.available is not None:
            first.append(("cpu.of_available", {"available": gb(self.available)}))
        first.append(("cpu.parts", {"weights": gb(self.weights), "dtype": self.dtype,
                                    "adapter": gb(self.adapter_and_optimizer), "kv": gb(self.kv_cache),
                                    "activations": gb(self.activations), "mbs": self.micro_batch_size,
                                    "tokens": self.sequence_length, "besides": gb(self.besides)}))
        return [first] + ([[("cpu.does_not_fit", {})]] if self.fits is False else [])

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
    >>> cfg = C(model=C(lora_r=8, lora_target_modules=list(ALL_PROJECTIONS), gradient_checkpointing=False,
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
                   besides=CPU_STEP_WEIGHT_COPIES * weights)


class DoesNotFit(AhaError, RuntimeError):
    """The run cannot fit on this GPU even with the smallest micro-batch."""


def plan_config(model_config, cfg, free_bytes: int | None, total_bytes: int | None = None,
                engine: str = "vllm", engine_settings=None) -> Plan:
    """`plan` for a run's `Config` (its model, algorithm and engine settings); `engine_settings`:
    the VLLMSettings of the engine the run will use, when it is known (its KV cache and LoRA slots)."""
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
                engine_kv_cache_bytes=getattr(engine_settings, "kv_cache_memory_bytes", None),
                engine_max_lora_rank=getattr(engine_settings, "max_lora_rank", None))


def preflight(model_config, cfg, free_bytes: int, total_bytes: int | None = None, engine: str = "vllm") -> Plan:
    """Plan a run from its `Config` before anything is loaded; raise DoesNotFit with advice."""
    p = plan_config(model_config, cfg, free_bytes, total_bytes, engine)
    if not p.fits:
        raise DoesNotFit(f"The model is too large for this GPU with these settings. {p.summary()}")
    return p


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


