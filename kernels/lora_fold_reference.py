"""The maths of folding a LoRA delta into a weight exactly, in PyTorch: what `lora_fold_triton.py` fuses.

Owns: `fold_reference(W, A, B, scale)` -> (W', kept mask, d) for one weight, with
  d  = scale * (B @ A)                    float32, (out, in)
  W' = round(W + d)                       the sum in float32, rounded once to W's dtype
  kept = round(W' - d) != W               as bit patterns (-0.0 and +0.0 differ): the elements whose
                                          original value an unfold must put back itself
and `unfold_reference(W', kept values, d)`. `core/engines/merged_lora.py` runs these maths
chunk by chunk; the Triton kernels run them tile by tile without any float32 copy of a layer and
without a host sync per chunk. `test_lora_fold.py` holds the kernels to this file.
Refuses to know: peft, engines, where kept values live.
"""

from __future__ import annotations

import torch

BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(BITS[t.element_size()])


def lora_delta(A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * (B @ A) in float32: A (r, in), B (out, r) -> (out, in)."""
    return torch.mm(B.float(), A.float()).mul_(float(scale))


def fold_reference(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float):
    """(W', kept, d): W' = round(W + d) and the mask of elements that do not round back to W.

    >>> W = torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16)
    >>> new, kept, d = fold_reference(W, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5]]), 1.0)
    >>> new.tolist(), kept.tolist()
    ([[1.5, 2.0]], [[False, False]])
    """
    d = lora_delta(A, B, scale)
    new = (W.float() + d).to(W.dtype)
    kept = bits((new.float() - d).to(W.dtype)) != bits(W)
    return new, kept, d


def unfold_reference(new: torch.Tensor, d: torch.Tensor, kept: torch.Tensor, original_values: torch.Tensor):
    """W back from W', the same d and the kept elements' original values (in the mask's order)."""
    back = (new.float() - d).to(new.dtype)
    back[kept] = original_values
    return back
