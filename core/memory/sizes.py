"""Memory arithmetic: bytes from a model's config (weights, LoRA state, KV cache, one micro-batch's
forward + backward, a vLLM engine's sizes), with no device and no torch.

Owns: the sizes the planner (`planner.py`) adds up, the vLLM engine's limits and KV cache for a run
(`engine_sizes`), the sequences one HF `generate` call holds (`sequences_that_fit`) and the Model
tab's estimate of weights + adapter + optimizer (`estimate_memory`). Refuses to know: torch, the
free memory of a device (`device.py` reads it), engines' objects, the UI.

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

from dataclasses import dataclass

GIB = 2**30
MIB = 2**20

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# peft keeps LoRA weights in fp32 (it upcasts adapters of a bf16 base): weight + grad + AdamW m and v
LORA_BYTES_PER_PARAM = 16
# of which AdamW's m and v: in pinned host memory between updates in lowest-memory mode
# (core.rl.host_states), so not in that mode's device peak
LORA_MOMENT_BYTES = 8
# during the update alone: foreach AdamW's float32 temporary (sqrt of v) a LoRA parameter
ADAMW_UPDATE_TEMP_BYTES = 4


def moments_on_host(micro_batch_size: int, auto_micro_batch: str) -> bool:
    """Whether a GPU run keeps AdamW's moments on the host between updates: micro-batch 0 (auto)
    picking for the lowest memory, the mode whose peak is the point (the one rule: the planner
    counts by it, core.rl.host_states moves by it)."""
    return micro_batch_size <= 0 and auto_micro_batch == "lowest_memory"


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
# ... and the pass size past which a larger micro-batch buys no speed, in parameters x tokens: a GPU
# is saturated by then. H100, Qwen2.5-1.5B shape, 8 x 1,280 tokens, compiled layers (2026-12-06,
# bench/results/trl_compare_compiled_mb4.md against trl_compare_compiled.md): micro-batch 4 (7.9e12)
# 3.12 s a step, 6.53 GiB; micro-batch 8 3.12 s, 8.09 GiB; a single 1,280-token pass (2.0e12) is
# 0.136 s against 0.379 s for eight (bench/results/compile_layers_gpu.md): far from saturated
FASTEST_PASS_PARAM_TOKENS = 6e12
# A CPU step's resident memory beyond the tensors plan_cpu counts, in copies of the weights:
# bench/cpu_ram_check.py measured 1.0 GiB for SmolLM2-135M in float32 (0.50 GiB of weights) at
# micro-batch 4 and 8 and at 130- and 492-token sequences alike, 0.65 GiB for the same model cut
# to 15 layers (0.30 GiB), next to nothing for the tests' tiny model: it follows the weights,
# not the tokens. It appears during the first forward + backward and stays resident. Not
# attributed tensor by tensor (candidates: weight-sized scratch of the CPU matmuls' backward,
# what glibc's per-thread arenas keep after it).
CPU_STEP_WEIGHT_COPIES = 2


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


def fp8_copy_bytes(c) -> int:
    """Bytes of a vLLM engine's own fp8 copy of the base (run.vllm_weights_dtype fp8), beside the
    trainer's: the decoder's linear layers in fp8 (a scale each), the embedding and an untied LM head
    as the model's bf16.

    >>> from types import SimpleNamespace as C
    >>> fp8_copy_bytes(C(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    ...                  num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True))
    86528
    """
    linear = c.num_hidden_layers * sum(a * b for a, b in _projections(c).values())
    return linear + 2 * (param_count(c) - linear)


def lora_param_count(c, rank: int, targets: list[str]) -> int:
    per_layer = sum(rank * (a + b) for t, (a, b) in _projections(c).items() if t in targets)
    return per_layer * c.num_hidden_layers


def kv_bytes_per_token(c, fp8: bool = False, dtype_bytes: int = 2) -> int:
    return 2 * c.num_hidden_layers * c.num_key_value_heads * _head_dim(c) * (1 if fp8 else dtype_bytes)


def engine_kv_bytes(c, seq_len: int, num_sequences: int, fp8: bool = False) -> int:
    """The KV cache the vLLM engine asks for: one step's rollouts at full length + 10% (block
    rounding), never less than one full-length sequence's, in whole MiB (see engine_sizes)."""
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
    one sequence of the engine's context. The share covers the weights (which the trainer shares; with
    an fp8 copy, `weight_bytes` holds both, so the share only guards start-up more strictly),
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


# ---------------------------------------------------------------------------
# the Model tab's estimate, from a config.json as a dict (nothing is loaded)

_BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}


def estimate_memory(lora_r: int, lora_targets: list[str], dtype: str, load_in_4bit: bool = False,
                    n_params: int | None = None, hf_config: dict | None = None) -> dict:
    """Weights + LoRA adapter + its gradients and AdamW states, in GB, for a model in `dtype`
    ("float32", "bfloat16", "float16": the caller resolves "auto").

    `n_params` (the base model's parameter count) is taken as given when known (a loaded model),
    else estimated from `hf_config` (its config.json). Activations and the KV cache are not
    included: they grow with batch size and completion length.

    >>> est = estimate_memory(16, list(ALL_PROJECTIONS), "bfloat16", n_params=135_000_000, hf_config={
    ...     "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
    ...     "intermediate_size": 1536, "num_hidden_layers": 30, "vocab_size": 49152})
    >>> round(est["weights_gb"], 2), est["adapter_params"]
    (0.25, 4884480)
    """
    from types import SimpleNamespace

    hf_config = hf_config or {}
    layers = hf_config.get("num_hidden_layers") or hf_config.get("n_layer") or 0
    h = hf_config.get("hidden_size") or hf_config.get("n_embd") or 0
    heads = hf_config.get("num_attention_heads") or hf_config.get("n_head") or 1
    c = SimpleNamespace(hidden_size=h, num_attention_heads=heads, num_hidden_layers=layers,
                        num_key_value_heads=hf_config.get("num_key_value_heads") or heads,
                        head_dim=hf_config.get("head_dim") or (h // heads if heads else 0),
                        intermediate_size=hf_config.get("intermediate_size") or 4 * h,
                        vocab_size=hf_config.get("vocab_size", 0),
                        tie_word_embeddings=hf_config.get("tie_word_embeddings", True))
    if n_params is None and layers:  # the decoder's projections, its norms, the embeddings
        per_layer = sum(i * o for i, o in _projections(c).values()) + 2 * h
        n_params = layers * per_layer + c.vocab_size * h * (1 if c.tie_word_embeddings else 2) + h
    adapter_params = lora_param_count(c, lora_r, lora_targets or []) if layers else 0
    per_param = 0.55 if load_in_4bit else _BYTES_PER_PARAM[dtype]  # NF4 + its scales
    weights = (n_params or 0) * per_param / GIB
    adapter = adapter_params * 4 / GIB  # peft keeps adapter weights in float32
    grads = adapter_params * 4 / GIB
    optimizer = adapter_params * 8 / GIB  # AdamW: two float32 moments per weight
    return {
        "params": n_params, "adapter_params": adapter_params, "weights_gb": weights, "adapter_gb": adapter,
        "gradients_gb": grads, "optimizer_gb": optimizer, "total_gb": weights + adapter + grads + optimizer,
    }


def sequences_that_fit(model_config, free_bytes: int, seq_len: int, *, dtype_bytes: int = 2,
                       reserve: float = 0.8) -> int:
    """How many sequences of `seq_len` tokens one HF `generate` call can hold in `free_bytes`:
    each needs its KV cache (every layer's keys and values) plus one row of fp32 logits.

    >>> from types import SimpleNamespace as C
    >>> c = C(num_hidden_layers=28, num_key_value_heads=2, num_attention_heads=12, hidden_size=1536,
    ...       vocab_size=151936)  # Qwen2.5-1.5B: 28 KiB of KV cache per token in bf16
    >>> sequences_that_fit(c, free_bytes=8 << 30, seq_len=4096)
    57
    >>> sequences_that_fit(c, free_bytes=1 << 20, seq_len=4096)  # never below one
    1
    """
    kv = kv_bytes_per_token(model_config) * dtype_bytes // 2 * seq_len
    logits = 4 * model_config.vocab_size * 2  # fp32 logits of the last position + the sampling copy
    return max(1, int(free_bytes * reserve) // (kv + logits))
