"""The fused LoRA fold (`lora_fold_triton.py`) held to its PyTorch maths (`lora_fold_reference.py`).

What must hold, per weight: after fold + unfold every element is W's bit pattern again, the kept
values are W's at the kept indices, and the unfold's fingerprints of d equal the fold's; the
folded W' is `round(W + d)` (the reference's W', bit for bit, where both compute the same d).
On the CPU the kernels run in Triton's interpreter (a child process with TRITON_INTERPRET=1).
The interpreter rounds float32 -> float16 as numpy does (to nearest even, as a GPU does) but
float32 -> bfloat16 by its own approximation (it truncates, or rounds half away from zero), so on
the CPU W' and the kept counts are compared with the reference for float16 only; bfloat16 is held
to the restore properties there, and to the reference on a GPU (`test_cuda_*`).
`tests/test_merged_lora.py` holds `core/engines/merged_lora.fold_adapter` with these kernels to its
chunked PyTorch fold (same W', both restore a peft model bit for bit, failures part way undone).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from kernels.lora_fold_reference import bits, fold_reference, unfold_reference
from kernels.interpreted import print_results, run_interpreted
from kernels.lora_fold_triton import HAVE_TRITON

REPO_ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()

# (dtype, out, in, rank, B's std): no size a multiple of a tile (32 x 128); r 8 is padded to 16;
# B's std 0.5 makes most elements kept (the dense case), 0.001 almost none
CASES = [
    ("float16", 70, 200, 8, 0.001),
    ("float16", 33, 130, 16, 0.5),
    ("float16", 40, 96, 20, 0.01),
    ("bfloat16", 70, 200, 8, 0.001),
    ("bfloat16", 33, 130, 16, 0.5),
    ("bfloat16", 65, 300, 64, 0.01),
]


def make(dtype, m, n, r, b_std, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g).mul_(0.05).to(dtype)
    W[0, :4] = torch.tensor([-0.0, 0.0, -0.0, 0.0])  # signed zeros must come back as they were
    A = torch.randn(r, n, generator=g) * 0.1
    B = torch.randn(m, r, generator=g) * b_std
    return W.to(device), A.to(device), B.to(device)


def test_reference_fold_and_unfold_restore_bit_for_bit():
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        W, A, B = make(dtype, 50, 70, 8, 0.05)
        new, kept, d = fold_reference(W, A, B, 2.0)
        assert int((bits(new) != bits(W)).sum()) > 0.5 * W.numel()  # it folded something
        back = unfold_reference(new, d, kept, W[kept])
        assert torch.equal(bits(back), bits(W))
        # without the kept values it would not: those are the elements that do not round back
        if kept.any():
            assert not torch.equal(bits((new.float() - d).to(dtype)), bits(W))


def _run_case(dtype, m, n, r, b_std, device):
    from kernels import lora_fold_triton as fused

    W, A, B = make(dtype, m, n, r, b_std, device=device)
    orig = W.clone()
    new_ref, kept_ref, _ = fold_reference(W, A, B, 2.0)
    counts = fused.fold_count(W, A, B, 2.0)
    untouched = torch.equal(bits(W), bits(orig))
    total = int(counts.sum())
    buffers = fused.fold_buffers(W, counts, total)
    fused.fold_write(W, A, B, 2.0, counts, buffers)
    written, index, values, prints = buffers
    index = index.long()
    out = {"untouched_by_count": untouched, "total": total, "ref_kept": int(kept_ref.sum()),
           "recount_equal": torch.equal(counts, written),
           "w_diff_vs_ref": int((bits(W) != bits(new_ref)).sum()), "n": W.numel(),
           "indices_unique": int(index.unique().numel()) == total,
           "values_are_originals": torch.equal(bits(values), bits(orig.view(-1)[index]))}
    prints_again = fused.unfold(W, A, B, 2.0, written, index, values)
    out["restored"] = torch.equal(bits(W), bits(orig))
    out["prints_equal"] = torch.equal(prints, prints_again)
    # a count pass that disagrees with the write pass on tile 0 (forged here): that tile is left
    # alone and flagged (-1), the others fold, and a careful unfold (clean=False) restores it all
    forged = counts.clone()
    forged[0] += 1
    buffers = fused.fold_buffers(W, forged, int(forged.sum()))
    fused.fold_write(W, A, B, 2.0, forged, buffers)
    out["forged_flagged"] = int(buffers[0][0]) == -1 and bool((buffers[0][1:] >= 0).all())
    out["forged_tile0_untouched"] = torch.equal(bits(W[:32, :128]), bits(orig[:32, :128]))
    fused.unfold(W, A, B, 2.0, buffers[0], buffers[1], buffers[2], clean=False)
    out["forged_restored"] = torch.equal(bits(W), bits(orig))
    return out


def _interpreter_child():
    from kernels.lora_fold_triton import INTERPRETED

    assert INTERPRETED
    results = [_run_case(getattr(torch, c[0]), *c[1:], device="cpu") for c in CASES]
    print_results({"cases": results})


@pytest.fixture(scope="module")
def interpreted():
    if not HAVE_TRITON:
        pytest.skip("triton is not importable here, so its interpreter cannot run the kernels")
    return run_interpreted("kernels.test_lora_fold", "_interpreter_child")


@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda i: "-".join(map(str, CASES[i])))
def test_interpreter_fold_restores_and_matches_the_reference(interpreted, case):
    r = interpreted["cases"][case]
    assert r["untouched_by_count"] and r["restored"] and r["prints_equal"] and r["recount_equal"], r
    assert r["indices_unique"] and r["values_are_originals"], r
    assert r["forged_flagged"] and r["forged_tile0_untouched"] and r["forged_restored"], r
    if CASES[case][0] == "float16":  # the interpreter rounds as a GPU does: the reference's W' exactly
        assert r["w_diff_vs_ref"] == 0 and r["total"] == r["ref_kept"], r
    if CASES[case][4] >= 0.5:
        assert r["total"] > W_SHARE * r["n"], r  # the dense case really keeps most elements


W_SHARE = 0.5


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda i: "-".join(map(str, CASES[i])))
def test_cuda_fold_restores_and_matches_the_reference(case):
    r = _run_case(getattr(torch, CASES[case][0]), *CASES[case][1:], device="cuda")
    assert r["untouched_by_count"] and r["restored"] and r["prints_equal"] and r["recount_equal"], r
    assert r["indices_unique"] and r["values_are_originals"], r
    assert r["forged_flagged"] and r["forged_tile0_untouched"] and r["forged_restored"], r
    # tl.dot (IEEE fp32) and cuBLAS sum B @ A in their own orders: a d a last bit apart can
    # round W + d the other way, in a few elements at most
    assert r["w_diff_vs_ref"] <= max(2, 1e-3 * r["n"]), r


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
def test_cuda_fold_of_a_qwen_sized_layer_is_exact_and_faster():
    """Qwen2.5-1.5B's MLP weight (8960 x 1536, bf16, r 16): restore exact; the fused fold + unfold
    timed against the chunked PyTorch one (printed; the kernels must not be slower)."""
    from kernels import lora_fold_triton as fused

    W, A, B = make(torch.bfloat16, 8960, 1536, 16, 0.002, device="cuda")
    orig = W.clone()
    new_ref, _, _ = fold_reference(W, A, B, 2.0)

    def fused_round():
        counts = fused.fold_count(W, A, B, 2.0)
        total = int(counts.sum())
        buffers = fused.fold_buffers(W, counts, total)
        fused.fold_write(W, A, B, 2.0, counts, buffers)
        written, index, values, prints = buffers
        assert torch.equal(counts, written)
        folded = W.clone()
        assert torch.equal(prints, fused.unfold(W, A, B, 2.0, written, index, values))
        return folded

    folded = fused_round()  # compiles
    assert torch.equal(bits(W), bits(orig))
    assert int((bits(folded) != bits(new_ref)).sum()) <= 1e-4 * W.numel()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        fused_round()
    torch.cuda.synchronize()
    t_fused = (time.perf_counter() - t0) / 5
    t0 = time.perf_counter()
    for _ in range(5):
        new, kept, d = fold_reference(W, A, B, 2.0)
        kept_values = W[kept]
        W.copy_(unfold_reference(new, d, kept, kept_values))
    torch.cuda.synchronize()
    t_torch = (time.perf_counter() - t0) / 5
    print(f"lora fold+unfold 8960x1536 r16 bf16: fused {t_fused * 1e3:.2f} ms, PyTorch (whole layer) "
          f"{t_torch * 1e3:.2f} ms")  # timing only: the step's fold_s / unfold_s are in bench/trl_compare
    assert torch.equal(bits(W), bits(orig))
