"""Per-token log-probs from hidden states in fused Triton kernels: logits live only in tiles.

Owns: the forward and backward Triton kernels and `triton_token_logprobs`, their autograd
wrapper. It computes exactly what `logprob_reference.py` computes (that file has the maths);
`test_logprob.py` holds the two equal, on CUDA and through Triton's CPU interpreter. It refuses
to know about models, masks or losses.

Layout of the work (both kernels): program (i, s) owns row block i (BLOCK_N rows of hidden)
and the s-th slice of the vocabulary. It walks that slice in [BLOCK_N, BLOCK_V] logits tiles;
each tile is `hidden_block @ W_tile.T`, summed over H in BLOCK_H steps with tl.dot (float32
accumulation), so any H works. The vocabulary is split into several slices only when there are
too few row blocks to fill the GPU; the slices' partial log-sum-exps are merged in PyTorch.

  forward:  online max / sum-exp / sum exp*z over the tiles, plus the target's z. Writes per
            (slice, row) that slice's lse, entropy and target z; nothing [N, V]-sized.
  backward: one kernel. Recomputes each tile, dz = g_logp * (onehot - p) - g_ent * p * (z - lse + H),
            dlogits = dz / T cast to the input dtype, then for each BLOCK_H slice of H:
              grad_hidden[rows, h] += dlogits @ W[tile, h]            float32 atomics
              grad_weight[tile, h] += dlogits.T @ hidden[rows, h]     float32 atomics, compiled
                                                                      in only when the weight
                                                                      needs a gradient
            Both accumulators are float32 [N, H] / [V, H] scratch, cast to the input dtype at
            the end. The atomics make the sums' order, so the last bits, vary run to run.

Tiles: DEFAULT_TILES below, one list per kernel, falling back to smaller tiles on GPUs with
less shared memory; `config=TileConfig(...)` forces one for every kernel.

Run the tests with `python -m pytest -q kernels` (the interpreter test needs only a CPU) and
the benchmark with `python bench/logprob_kernel.py` on a GPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # CPU-only installs: the reference serves them, and the tests skip
    triton = tl = None
    HAVE_TRITON = False

# Triton decides at @triton.jit time whether to interpret, from this variable.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class TileConfig:
    """Block sizes and launch knobs of one kernel launch.

    Blocks must be powers of two >= 16 (tl.dot). block_h is clipped to next_power_of_2(H)
    for small H. vocab_splits=None gives every SM at least one program.
    """

    block_n: int = 128  # rows of hidden per program
    block_v: int = 256  # vocab columns per logits tile
    block_h: int = 64  # slice of H per tl.dot
    num_warps: int = 8
    num_stages: int = 3
    vocab_splits: int | None = None


# Tried in order; the next is taken when a GPU lacks the shared memory or registers for one
# (128 x 256 x 64 in 3 stages wants ~150-270 KiB: an H100/H200 has 227 KiB, a 4090 99 KiB).
# Picked by a sweep on an H200 at 16384 x 1536 x 151936 bf16: forward 19 ms (~410 TFLOP/s,
# cuBLAS's bare logits matmul is 11 ms), backward to hidden 55 ms, backward to hidden and
# weight ~103 ms with block_h=32 in 4 stages (block_h=64 overflows shared memory there).
# Smaller tiles were slower; 2 vocab slices (256 programs on 132 SMs) beat 1.
DEFAULT_TILES = {
    "forward": (TileConfig(), TileConfig(64, 128, 64, 4, 3), TileConfig(32, 64, 32, 4, 2)),
    "backward": (TileConfig(), TileConfig(64, 128, 64, 4, 3), TileConfig(32, 64, 32, 4, 2)),
    "backward_weight": (
        TileConfig(block_h=32, num_stages=4), TileConfig(64, 128, 32, 4, 3), TileConfig(32, 64, 32, 4, 2)
    ),
}


# ---------------------------------------------------------------------------- kernels

if HAVE_TRITON:

    @triton.jit
    def _logits_tile(
        hidden_rows, weight_cols, row_ok, col_ok, H,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
        DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
    ):
        """hidden[rows] @ weight[cols].T for one tile, float32, summed over H in BLOCK_H steps."""
        acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
        for h0 in range(0, H, BLOCK_H):
            ks = h0 + tl.arange(0, BLOCK_H)
            k_ok = ks < H
            h = tl.load(hidden_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(weight_cols + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            if DOT_UPCAST:  # interpreter only, see _dot_upcast
                h, w = h.to(tl.float32), w.to(tl.float32)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=DOT_PRECISION)
        return acc

    @triton.jit
    def _logprob_fwd_kernel(
        hidden_ptr, weight_ptr, targets_ptr,
        lse_part_ptr, entropy_part_ptr, target_z_part_ptr,  # (splits, N) float32 each
        N, V, H, stride_hidden, stride_weight, inv_temperature, tiles_per_split,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
        DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1)
        hidden_rows = hidden_ptr + rows.to(tl.int64)[:, None] * stride_hidden  # (BLOCK_N, 1)

        # running max m (finite start, so exp(m - m_new) never sees -inf - -inf),
        # s = sum e^(z - m), t = sum e^(z - m) * z, and the target's z
        m = tl.full((BLOCK_N,), -1.0e30, dtype=tl.float32)
        s = tl.zeros((BLOCK_N,), dtype=tl.float32)
        t = tl.zeros((BLOCK_N,), dtype=tl.float32)
        target_z = tl.zeros((BLOCK_N,), dtype=tl.float32)
        v_begin = pid_s * tiles_per_split * BLOCK_V
        n_tiles = tl.minimum(tiles_per_split, tl.cdiv(V - v_begin, BLOCK_V))
        for tile in range(0, n_tiles):
            cols = v_begin + tile * BLOCK_V + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            weight_cols = weight_ptr + cols.to(tl.int64)[:, None] * stride_weight
            z = _logits_tile(hidden_rows, weight_cols, row_ok, col_ok, H,
                             BLOCK_N, BLOCK_V, BLOCK_H, DOT_PRECISION, DOT_UPCAST) * inv_temperature
            z_live = tl.where(col_ok[None, :], z, float("-inf"))  # (BLOCK_N, BLOCK_V)
            m_new = tl.maximum(m, tl.max(z_live, axis=1))
            scale = tl.exp(m - m_new)
            e = tl.exp(z_live - m_new[:, None])  # 0 on masked columns
            s = s * scale + tl.sum(e, axis=1)
            t = t * scale + tl.sum(e * z, axis=1)  # masked z is 0, never inf
            target_z += tl.sum(tl.where(cols[None, :] == targets[:, None], z, 0.0), axis=1)
            m = m_new

        out = pid_s * N + rows
        lse_part = m + tl.log(s)
        tl.store(lse_part_ptr + out, lse_part, mask=row_ok)
        tl.store(entropy_part_ptr + out, lse_part - t / s, mask=row_ok)  # this slice's own entropy
        tl.store(target_z_part_ptr + out, target_z, mask=row_ok)

    @triton.jit
    def _logprob_bwd_kernel(
        hidden_ptr, weight_ptr, targets_ptr, lse_ptr, entropy_ptr,
        grad_logp_ptr, grad_entropy_ptr,
        grad_hidden_ptr, grad_weight_ptr,  # float32 scratch: (N, H) and (V, H)
        N, V, H, stride_hidden, stride_weight, inv_temperature, tiles_per_split,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
        DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
        HAS_GRAD_LOGP: tl.constexpr, HAS_GRAD_ENTROPY: tl.constexpr,
        GRAD_HIDDEN: tl.constexpr, GRAD_WEIGHT: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        rows64 = rows.to(tl.int64)
        targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        # rows past N get zero upstream gradient, so their dlogits are 0
        if HAS_GRAD_LOGP:
            g_logp = tl.load(grad_logp_ptr + rows, mask=row_ok, other=0.0)
        if HAS_GRAD_ENTROPY:
            g_ent = tl.load(grad_entropy_ptr + rows, mask=row_ok, other=0.0)
            ent = tl.load(entropy_ptr + rows, mask=row_ok, other=0.0)
        hidden_rows = hidden_ptr + rows64[:, None] * stride_hidden
        grad_hidden_rows = grad_hidden_ptr + rows64[:, None] * H

        v_begin = pid_s * tiles_per_split * BLOCK_V
        n_tiles = tl.minimum(tiles_per_split, tl.cdiv(V - v_begin, BLOCK_V))
        for tile in range(0, n_tiles):
            cols = v_begin + tile * BLOCK_V + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            cols64 = cols.to(tl.int64)
            weight_cols = weight_ptr + cols64[:, None] * stride_weight
            # 1) recompute the tile's z and p exactly as the forward did
            z = _logits_tile(hidden_rows, weight_cols, row_ok, col_ok, H,
                             BLOCK_N, BLOCK_V, BLOCK_H, DOT_PRECISION, DOT_UPCAST) * inv_temperature
            p = tl.where(col_ok[None, :], tl.exp(z - lse[:, None]), 0.0)  # (BLOCK_N, BLOCK_V)
            # 2) d loss / dz, then / T for d loss / d logits
            dz = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
            if HAS_GRAD_LOGP:
                onehot = tl.where(cols[None, :] == targets[:, None], 1.0, 0.0)
                dz += g_logp[:, None] * (onehot - p)
            if HAS_GRAD_ENTROPY:
                dz -= g_ent[:, None] * p * (z - lse[:, None] + ent[:, None])
            dlogits = (dz * inv_temperature).to(hidden_ptr.dtype.element_ty)
            if DOT_UPCAST:
                dlogits = dlogits.to(tl.float32)
            # 3) push dlogits back through the matmul, one BLOCK_H slice of H at a time
            for h0 in range(0, H, BLOCK_H):
                ks = h0 + tl.arange(0, BLOCK_H)
                k_ok = ks < H
                if GRAD_HIDDEN:
                    w = tl.load(weight_cols + ks[None, :],
                                mask=col_ok[:, None] & k_ok[None, :], other=0.0)
                    if DOT_UPCAST:
                        w = w.to(tl.float32)
                    gh = tl.dot(dlogits, w, input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_H)
                    # atomics even when this program alone owns the rows: a fire-and-forget
                    # reduction at L2 measured faster on an H200 than load + add + store
                    tl.atomic_add(grad_hidden_rows + ks[None, :], gh,
                                  mask=row_ok[:, None] & k_ok[None, :], sem="relaxed")
                if GRAD_WEIGHT:
                    h = tl.load(hidden_rows + ks[None, :],
                                mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                    if DOT_UPCAST:
                        h = h.to(tl.float32)
                    gw = tl.dot(tl.trans(dlogits), h, input_precision=DOT_PRECISION)  # (BLOCK_V, BLOCK_H)
                    tl.atomic_add(grad_weight_ptr + cols64[:, None] * H + ks[None, :], gw,
                                  mask=col_ok[:, None] & k_ok[None, :], sem="relaxed")


# ---------------------------------------------------------------------------- launch helpers


def _dot_precision(dtype) -> str:
    # fp32 inputs: full-precision dots, as torch's fp32 matmul (TF32 would cost ~1e-3 relative)
    return "ieee" if dtype == torch.float32 else "tf32"


def _dot_upcast(dtype) -> bool:
    # The interpreter keeps bf16 as uint16 and tl.dot multiplies the bit patterns
    # (https://github.com/triton-lang/triton/issues/11584), so there, and only there, bf16
    # tiles are widened to float32 first: exact, so the maths under test is unchanged.
    return INTERPRETED and dtype == torch.bfloat16


def _plan(n_rows: int, vocab: int, hidden_size: int, device, cfg: TileConfig):
    """Clip the block sizes to the problem and choose the vocab split."""
    block_h = min(cfg.block_h, max(16, triton.next_power_of_2(hidden_size)))
    row_blocks = triton.cdiv(n_rows, cfg.block_n)
    n_tiles = triton.cdiv(vocab, cfg.block_v)
    splits = cfg.vocab_splits
    if splits is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        splits = triton.cdiv(sms, row_blocks) if row_blocks < sms else 1
    splits = max(1, min(int(splits), n_tiles))
    tiles_per_split = triton.cdiv(n_tiles, splits)
    splits = triton.cdiv(n_tiles, tiles_per_split)  # no empty slice
    return block_h, row_blocks, splits, tiles_per_split


# (kernel role, device index, dtype, constexprs) -> index of the tile in its list that ran
_CHOSEN_TILES: dict = {}


def _resource_errors():
    # what Triton raises, at compile or load time, for a tile this GPU cannot hold
    # (PTXASError: "insufficient registers"; it has no such class before triton 3.3)
    names = ("OutOfResources", "PTXASError")
    return tuple(getattr(triton.runtime.errors, n) for n in names if hasattr(triton.runtime.errors, n))


def _launch(role, kernel, tiles, shape, device, dtype, args_for, **constexprs):
    """Launch kernel with the first of `tiles` this GPU can run; returns the vocab splits used.

    args_for(splits) gives the kernel's leading arguments. A tile too big for the GPU fails
    while compiling or loading, before anything runs, so moving on to the next is safe.
    """
    n_rows, vocab, hidden_size = shape
    key = (role, device.index, dtype, tuple(sorted(constexprs.items())))
    for i in range(_CHOSEN_TILES.get(key, 0), len(tiles)):
        cfg = tiles[i]
        block_h, row_blocks, splits, tiles_per_split = _plan(n_rows, vocab, hidden_size, device, cfg)
        try:
            # Triton launches on the current device, which need not be the tensors'
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                kernel[(row_blocks, splits)](
                    *args_for(splits), tiles_per_split,
                    BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v, BLOCK_H=block_h,
                    num_warps=cfg.num_warps, num_stages=cfg.num_stages, **constexprs,
                )
        except _resource_errors():
            if i + 1 == len(tiles):
                raise
            continue
        _CHOSEN_TILES[key] = i
        return splits
    raise AssertionError("no tiles to try")


class _TritonTokenLogprobs(torch.autograd.Function):
    """Returns (logps, entropy), both (N,) float32 and both differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, config):
        hidden, weight, targets = hidden.contiguous(), weight.contiguous(), targets.contiguous()
        n_rows, hidden_size = hidden.shape
        vocab = weight.shape[0]
        inv_t = 1.0 / temperature
        parts = {}  # per vocab slice and row: lse, entropy and target z of that slice

        def args_for(splits):
            parts["t"] = torch.empty((3, splits, n_rows), dtype=torch.float32, device=hidden.device)
            return (hidden, weight, targets, *parts["t"],
                    n_rows, vocab, hidden_size, hidden.stride(0), weight.stride(0), inv_t)

        _launch(
            "forward", _logprob_fwd_kernel, (config,) if config else DEFAULT_TILES["forward"],
            (n_rows, vocab, hidden_size), hidden.device, hidden.dtype, args_for,
            DOT_PRECISION=_dot_precision(hidden.dtype), DOT_UPCAST=_dot_upcast(hidden.dtype),
        )
        # merge the vocab slices. With slice weights w_s = e^(lse_s - lse), entropy is
        # sum_s w_s * (H_s - log w_s): no lse - E[z] cancellation at the scale of z, so a
        # confident row's near-zero entropy stays accurate.
        lse_part, entropy_part, target_z_part = parts["t"]  # (splits, N) each
        lse = torch.logsumexp(lse_part, dim=0)  # (N,)
        log_w = lse_part - lse  # (splits, N)
        entropy = (log_w.exp() * (entropy_part - log_w)).sum(0)
        logps = target_z_part.sum(0) - lse
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.inv_t, ctx.config = inv_t, config
        ctx.set_materialize_grads(False)
        return logps, entropy

    @staticmethod
    def backward(ctx, grad_logps, grad_entropy):
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_logps is None and grad_entropy is None) or not (want_hidden or want_weight):
            return None, None, None, None, None
        n_rows, hidden_size = hidden.shape
        vocab = weight.shape[0]
        f32 = dict(dtype=torch.float32, device=hidden.device)
        # float32 scratch the kernel adds into; unused pointers get any float32 tensor
        grad_hidden = torch.zeros((n_rows, hidden_size), **f32) if want_hidden else lse
        grad_weight = torch.zeros((vocab, hidden_size), **f32) if want_weight else lse
        role = "backward_weight" if want_weight else "backward"
        args = (hidden, weight, targets, lse, entropy,
                grad_logps.contiguous() if grad_logps is not None else lse,
                grad_entropy.contiguous() if grad_entropy is not None else lse,
                grad_hidden, grad_weight,
                n_rows, vocab, hidden_size, hidden.stride(0), weight.stride(0), ctx.inv_t)
        _launch(
            role, _logprob_bwd_kernel, (ctx.config,) if ctx.config else DEFAULT_TILES[role],
            (n_rows, vocab, hidden_size), hidden.device, hidden.dtype, lambda splits: args,
            DOT_PRECISION=_dot_precision(hidden.dtype), DOT_UPCAST=_dot_upcast(hidden.dtype),
            HAS_GRAD_LOGP=grad_logps is not None, HAS_GRAD_ENTROPY=grad_entropy is not None,
            GRAD_HIDDEN=want_hidden, GRAD_WEIGHT=want_weight,
        )
        grad_hidden = grad_hidden.to(hidden.dtype) if want_hidden else None
        grad_weight = grad_weight.to(weight.dtype) if want_weight else None
        return grad_hidden, grad_weight, None, None, None


def triton_token_logprobs(hidden, weight, targets, temperature=1.0, return_entropy=False, *, config=None):
    """Fused log_softmax(hidden @ weight.T / T)[targets] (and entropy) in Triton.

    hidden (N, H) and weight (V, H) of one float dtype, on CUDA (or CPU tensors under
    TRITON_INTERPRET=1); targets (N,) int64 in [0, V). Returns float32 (N,) log-probs and,
    with return_entropy, the entropy; both are differentiable (entropy's gradient is exact).
    """
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed; use backend='reference'")
    for name in ("block_n", "block_v", "block_h") if config else ():
        size = getattr(config, name)
        if size < 16 or size & (size - 1):
            raise ValueError(f"TileConfig.{name}={size}: must be a power of two >= 16 (tl.dot)")
    logps, entropy = _TritonTokenLogprobs.apply(hidden, weight, targets, float(temperature), config)
    return (logps, entropy) if return_entropy else logps
