"""Fold a LoRA delta into bf16/fp16 weights in place, and undo it bit for bit, in fused Triton kernels.

Owns: two kernels (the fold, compiled as count and as write, and the unfold) and their launchers,
for one weight W (out, in) with its adapter A (r, in),
B (out, r) and scale; the maths is `lora_fold_reference.py`'s, per [BLOCK_M, BLOCK_N] tile:
  d = scale * (B[rows] @ A[:, cols]) float32 (tl.dot in IEEE fp32, r padded to >= 16 with zeros),
  W' = round(W + d), kept = bits(round(W' - d)) != bits(W).
  count:  writes each tile's number of kept elements (nothing else; W untouched).
  write:  writes W' and, for the kept elements, (flat index, original value) at the tile's offset
          (an exclusive cumsum of the counts, made by the caller), in the tile's own order; each
          tile's count again (the caller holds it equal to the count pass's) and fingerprint of d
          (the sum of d's bit patterns as int64).
  unfold: writes round(W' - d) and the tiles' fingerprints; the caller then puts the kept values
          back (`index_copy_`) and compares fingerprints (the same kernel on the same inputs:
          the same d, bit for bit).
Why: the chunked PyTorch fold (`core/engines/merged_lora.py`) made a float32 copy of each chunk,
ran about a dozen kernels on it and synchronised with the host once per chunk (`nonzero`):
0.14-0.16 s a fold and 0.04-0.06 s an unfold for a 1.5B model on an H100 (2026-12-05), in every
step. Here: two launches a weight plus one host sync for the whole fold, no float32 copies.
Refuses to know: peft, engines, where the kept values are stored, float32 weights (the PyTorch
path folds those).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # CPU-only installs: merged_lora's PyTorch path serves them
    triton = tl = None
    HAVE_TRITON = False

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_M, BLOCK_N = 32, 128
DTYPES = (torch.bfloat16, torch.float16)

if HAVE_TRITON:

    @triton.jit
    def _tile(W, A, B, scale, M, N, R, stride_w, stride_a, stride_b,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
        """(offsets into W, in-bounds mask, W tile, d tile float32) of this program's tile."""
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # (BM,)
        cols = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)  # (BN,)
        ks = tl.arange(0, BLOCK_R)  # (BR,)
        b = tl.load(B + rows[:, None] * stride_b + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < R),
                    other=0.0).to(tl.float32)  # (BM, BR)
        a = tl.load(A + ks[:, None] * stride_a + cols[None, :], mask=(ks[:, None] < R) & (cols[None, :] < N),
                    other=0.0).to(tl.float32)  # (BR, BN)
        d = tl.dot(b, a, input_precision="ieee") * scale  # (BM, BN) float32
        inside = (rows[:, None] < M) & (cols[None, :] < N)
        offs = rows[:, None] * stride_w + cols[None, :]
        w = tl.load(W + offs, mask=inside, other=0.0)  # (BM, BN) W's dtype
        return offs, inside, w, d, rows, cols

    @triton.jit
    def _fold_kernel(W, A, B, counts, offsets, kept_index, kept_value, prints, total, scale, M, N, R,
                     stride_w, stride_a, stride_b,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, WRITE: tl.constexpr):
        """WRITE=False: each tile's kept count into `counts`, W untouched. WRITE=True: W', the kept
        (index, value) pairs at the tile's offset, the tile's count again and d's fingerprint.
        One kernel for both, so the count and the write decide "kept" with the same code."""
        offs, inside, w, d, rows, cols = _tile(W, A, B, scale, M, N, R, stride_w, stride_a, stride_b,
                                               BLOCK_M, BLOCK_N, BLOCK_R)
        new = (w.to(tl.float32) + d).to(w.dtype, fp_downcast_rounding="rtne")
        back = (new.to(tl.float32) - d).to(w.dtype, fp_downcast_rounding="rtne")
        kept = (back.to(tl.int16, bitcast=True) != w.to(tl.int16, bitcast=True)) & inside
        tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        tl.store(counts + tile, tl.sum(tl.sum(kept.to(tl.int32), axis=1), axis=0))
        if WRITE:
            tl.store(W + offs, new, mask=inside)
            # the kept elements, compacted at this tile's offset in the tile's row-major order
            flat_kept = tl.reshape(kept.to(tl.int32), (BLOCK_M * BLOCK_N,))
            slot = tl.load(offsets + tile) + tl.cumsum(flat_kept, axis=0) - 1  # (BM*BN,) int64
            ok = (flat_kept > 0) & (slot < total)  # never past the buffer, whatever happens
            index = tl.reshape(rows[:, None] * N + cols[None, :], (BLOCK_M * BLOCK_N,))
            tl.store(kept_index + slot, index, mask=ok)
            tl.store(kept_value + slot, tl.reshape(w, (BLOCK_M * BLOCK_N,)), mask=ok)
            d_bits = d.to(tl.int32, bitcast=True).to(tl.int64)
            tl.store(prints + tile, tl.sum(tl.sum(tl.where(inside, d_bits, 0), axis=1), axis=0))

    @triton.jit
    def _unfold_kernel(W, A, B, prints, scale, M, N, R, stride_w, stride_a, stride_b,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
        offs, inside, w, d, rows, cols = _tile(W, A, B, scale, M, N, R, stride_w, stride_a, stride_b,
                                               BLOCK_M, BLOCK_N, BLOCK_R)
        tl.store(W + offs, (w.to(tl.float32) - d).to(w.dtype, fp_downcast_rounding="rtne"), mask=inside)
        tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        d_bits = d.to(tl.int32, bitcast=True).to(tl.int64)
        tl.store(prints + tile, tl.sum(tl.sum(tl.where(inside, d_bits, 0), axis=1), axis=0))


def supported(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> str | None:
    """None when the kernels can fold this weight; else why not (the caller folds it in PyTorch)."""
    if not HAVE_TRITON:
        return "triton is not installed"
    if not (W.is_cuda or INTERPRETED):
        return "not on a CUDA device"
    if W.dtype not in DTYPES:
        return f"weight dtype {W.dtype} (the kernels fold bf16 and fp16)"
    if W.dim() != 2 or W.stride(1) != 1 or not W.is_contiguous():
        return "weight is not a contiguous row-major matrix"
    if A.stride(1) != 1 or B.stride(1) != 1 or A.shape[1] != W.shape[1] or B.shape[0] != W.shape[0]:
        return "adapter shapes or strides do not fit the weight"
    return None


def _grid(W):
    M, N = W.shape
    return (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))


def _args(W, A, B, scale):
    M, N = W.shape
    R = A.shape[0]
    # enable_fp_fusion=False: no multiply-add contraction, so d is rounded to float32 before it is
    # added (as in the reference), and every kernel rounds the same way whatever the compiler does
    return (float(scale), M, N, R, W.stride(0), A.stride(0), B.stride(0)), \
        dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_R=max(16, triton.next_power_of_2(R)), enable_fp_fusion=False)


def _adapter(W, A, B):
    """A and B on W's device, contiguous; their dtype as they are (loaded as float32 in the kernel)."""
    return A.detach().to(W.device).contiguous(), B.detach().to(W.device).contiguous()


def fold_count(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """(tiles,) int32: how many elements of each tile of W would not round back (no host sync)."""
    A, B = _adapter(W, A, B)
    grid = _grid(W)
    counts = torch.empty(grid[0] * grid[1], dtype=torch.int32, device=W.device)
    args, meta = _args(W, A, B, scale)
    _fold_kernel[grid](W, A, B, counts, counts, counts, counts, counts, 0, *args, **meta, WRITE=False)
    return counts


def fold_write(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float, counts: torch.Tensor, total: int):
    """W <- round(W + d) in place; returns (kept flat indices int64 (total,), their original values
    (total,) in W's dtype, per-tile fingerprints of d (tiles,) int64, the per-tile kept counts this
    pass found (tiles,) int32: equal to `counts`, which the caller checks with its other checks).
    `counts` is `fold_count`'s, `total` its sum (the caller's one host sync covers every layer)."""
    A, B = _adapter(W, A, B)
    offsets = torch.cumsum(counts, 0, dtype=torch.int64) - counts  # exclusive
    index = torch.empty(total, dtype=torch.int64, device=W.device)
    value = torch.empty(total, dtype=W.dtype, device=W.device)
    prints = torch.empty(counts.numel(), dtype=torch.int64, device=W.device)
    written = torch.empty_like(counts)
    args, meta = _args(W, A, B, scale)
    _fold_kernel[_grid(W)](W, A, B, written, offsets, index, value, prints, total, *args, **meta, WRITE=True)
    return index, value, prints, written


def unfold(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float, index: torch.Tensor,
           value: torch.Tensor) -> torch.Tensor:
    """W' <- round(W' - d), then the kept values back in place; returns the per-tile fingerprints of d."""
    A, B = _adapter(W, A, B)
    grid = _grid(W)
    prints = torch.empty(grid[0] * grid[1], dtype=torch.int64, device=W.device)
    args, meta = _args(W, A, B, scale)
    _unfold_kernel[grid](W, A, B, prints, *args, **meta)
    if index.numel():
        W.view(-1).index_copy_(0, index.to(W.device, non_blocking=True), value.to(W.device, non_blocking=True))
    return prints
