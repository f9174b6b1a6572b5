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

import contextlib
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

    @triton.jit(do_not_specialize=["total", "tile0", "slot0"])
    def _fold_kernel(W, A, B, counts, written, offsets, kept_index, kept_value, prints, total, tile0, slot0, scale,
                     M, N, R, stride_w, stride_a, stride_b,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, WRITE: tl.constexpr):
        """WRITE=False: each tile's kept count into `counts`, W untouched. WRITE=True: the tile's
        count again into `written`, and only where it equals `counts` (else -1 and the tile is left
        as it is: the unfold skips it) W' and the kept (index, value) pairs at the tile's offset;
        d's fingerprint in every case. One kernel for both passes, so both decide "kept" with the
        same code. The per-tile buffers may hold many weights' tiles: this weight's start at `tile0`, and
        its pairs' slots at offsets[tile] - slot0 (0 and 0 for buffers of this weight alone)."""
        offs, inside, w, d, rows, cols = _tile(W, A, B, scale, M, N, R, stride_w, stride_a, stride_b,
                                               BLOCK_M, BLOCK_N, BLOCK_R)
        new = (w.to(tl.float32) + d).to(w.dtype, fp_downcast_rounding="rtne")
        back = (new.to(tl.float32) - d).to(w.dtype, fp_downcast_rounding="rtne")
        kept = (back.to(tl.int16, bitcast=True) != w.to(tl.int16, bitcast=True)) & inside
        tile = tile0 + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        count = tl.sum(tl.sum(kept.to(tl.int32), axis=1), axis=0)
        if WRITE:
            agree = count == tl.load(counts + tile)
            tl.store(written + tile, tl.where(agree, count, -1))
            fold = inside & (tl.zeros([BLOCK_M, BLOCK_N], tl.int32) + agree.to(tl.int32) > 0)  # (BM, BN)
            tl.store(W + offs, new, mask=fold)
            # the kept elements, compacted at this tile's offset in the tile's row-major order
            flat_kept = tl.reshape(kept.to(tl.int32), (BLOCK_M * BLOCK_N,))
            slot = tl.load(offsets + tile) - slot0 + tl.cumsum(flat_kept, axis=0) - 1  # (BM*BN,) int64
            ok = (tl.reshape(fold.to(tl.int32), (BLOCK_M * BLOCK_N,)) * flat_kept > 0) & (slot >= 0) & (slot < total)
            index = tl.reshape(rows[:, None] * N + cols[None, :], (BLOCK_M * BLOCK_N,))
            tl.store(kept_index + slot, index.to(kept_index.dtype.element_ty), mask=ok)
            tl.store(kept_value + slot, tl.reshape(w, (BLOCK_M * BLOCK_N,)), mask=ok)
            d_bits = d.to(tl.int32, bitcast=True).to(tl.int64)
            tl.store(prints + tile, tl.sum(tl.sum(tl.where(inside, d_bits, 0), axis=1), axis=0))
        else:
            tl.store(counts + tile, count)

    @triton.jit(do_not_specialize=["tile0"])
    def _unfold_kernel(W, A, B, written, prints, tile0, scale, M, N, R, stride_w, stride_a, stride_b,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
        offs, inside, w, d, rows, cols = _tile(W, A, B, scale, M, N, R, stride_w, stride_a, stride_b,
                                               BLOCK_M, BLOCK_N, BLOCK_R)
        tile = tile0 + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        folded = tl.load(written + tile) >= 0  # a tile the write pass left alone stays as it is
        unfold = inside & (tl.zeros([BLOCK_M, BLOCK_N], tl.int32) + folded.to(tl.int32) > 0)
        tl.store(W + offs, (w.to(tl.float32) - d).to(w.dtype, fp_downcast_rounding="rtne"), mask=unfold)
        d_bits = d.to(tl.int32, bitcast=True).to(tl.int64)
        tl.store(prints + tile, tl.sum(tl.sum(tl.where(inside, d_bits, 0), axis=1), axis=0))


MAX_RANK = 64  # one tl.dot holds the whole rank: 48 KiB of shared memory at 64 (r 256 needs 160)


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
    if A.shape[0] > MAX_RANK:
        return f"rank {A.shape[0]} > {MAX_RANK}"
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


def _on(W):
    """Launch on W's GPU (Triton launches on the current device)."""
    return torch.cuda.device(W.device) if W.is_cuda else contextlib.nullcontext()


def tiles(W: torch.Tensor) -> int:
    """How many [BLOCK_M, BLOCK_N] tiles the kernels cut W into (the length of its counts and prints)."""
    return triton.cdiv(W.shape[0], BLOCK_M) * triton.cdiv(W.shape[1], BLOCK_N)


def fold_count(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float,
               out: torch.Tensor | None = None, tile0: int = 0) -> torch.Tensor:
    """(tiles,) int32: how many elements of each tile of W would not round back (no host sync); or
    into `out`, a buffer of many weights' tiles (int32) whose [tile0, tile0 + tiles) are W's."""
    A, B = _adapter(W, A, B)
    grid = _grid(W)
    counts = torch.empty(grid[0] * grid[1], dtype=torch.int32, device=W.device) if out is None else out
    assert counts.numel() >= tile0 + grid[0] * grid[1], "W's tiles past the end of the counts buffer"
    args, meta = _args(W, A, B, scale)
    with _on(W):
        _fold_kernel[grid](W, A, B, counts, counts, counts, counts, counts, counts, 0, tile0, 0, *args, **meta,
                           WRITE=False)
    return counts


def index_dtype(W: torch.Tensor) -> torch.dtype:
    """The kept pairs' flat-index dtype for W: int32 below 2^31 elements, else int64."""
    return torch.int32 if W.numel() < 2**31 else torch.int64


def fold_buffers(W: torch.Tensor, counts: torch.Tensor, total: int):
    """The write pass's outputs, allocated before it runs (so nothing can fail between writing W'
    and the caller recording it): (written (tiles,) int32, kept index (total,) int32 below 2^31
    elements else int64, kept values (total,) W's dtype, prints (tiles,) int64)."""
    # -1 until the write pass runs: a fold that failed before it leaves every tile to be skipped
    return (torch.full_like(counts, -1), torch.full((total,), -1, dtype=index_dtype(W), device=W.device),
            torch.empty(total, dtype=W.dtype, device=W.device),
            torch.empty(counts.numel(), dtype=torch.int64, device=W.device))


def fold_write(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float, counts: torch.Tensor,
               buffers: tuple, offsets: torch.Tensor | None = None, tile0: int = 0, slot0: int = 0) -> None:
    """W <- round(W + d) in place, tile by tile where the recount equals `counts` (`fold_count`'s);
    fills `buffers` (`fold_buffers`): the recount (-1 for a tile left alone), the kept elements'
    flat indices and original values, d's fingerprint per tile. Shared buffers (many weights' tiles
    and pairs, the caller's): `counts`, `offsets` (int64, each tile's first pair), the recounts and
    prints hold W's tiles from `tile0`, and its pairs go to offsets - `slot0` in the index / value
    buffers. Default: buffers of W alone, `offsets` the exclusive cumsum of `counts`."""
    A, B = _adapter(W, A, B)
    written, index, value, prints = buffers
    if offsets is None:
        offsets = torch.cumsum(counts, 0, dtype=torch.int64) - counts  # exclusive
    args, meta = _args(W, A, B, scale)
    with _on(W):
        _fold_kernel[_grid(W)](W, A, B, counts, written, offsets, index, value, prints, index.numel(), tile0, slot0,
                               *args, **meta, WRITE=True)


def unfold(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float, written: torch.Tensor,
           index: torch.Tensor, value: torch.Tensor, *, clean: bool = True,
           prints: torch.Tensor | None = None, tile0: int = 0) -> torch.Tensor:
    """W' <- round(W' - d) on the tiles the write pass folded, then the kept values back in place;
    returns d's fingerprints per tile (into `prints` from `tile0`, like `written`, where those are
    buffers of many weights' tiles). `clean=False` (a fold that failed): slots never written (index -1)
    are skipped, at the cost of a host sync."""
    A, B = _adapter(W, A, B)
    grid = _grid(W)
    if prints is None:
        prints = torch.empty(grid[0] * grid[1], dtype=torch.int64, device=W.device)
    assert min(prints.numel(), written.numel()) >= tile0 + grid[0] * grid[1], "W's tiles past the buffers' end"
    args, meta = _args(W, A, B, scale)
    with _on(W):
        _unfold_kernel[grid](W, A, B, written.to(W.device), prints, tile0, *args, **meta)
    if index.numel():
        index = index.to(W.device, non_blocking=True)
        index = index if index.dtype == torch.int64 else index.long()
        value = value.to(W.device, non_blocking=True)
        if not clean:  # after a failed fold: skip the slots never written
            value, index = value[index >= 0], index[index >= 0]
        W.view(-1).index_copy_(0, index, value)
    return prints
