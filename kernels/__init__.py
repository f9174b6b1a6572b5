"""Fused hidden-states -> per-token log-prob (and entropy), so [batch, seq, vocab] never exists.

Owns: `token_logprobs`, the one entry point the trainer calls, and the choice of backend:
  'triton'    fused kernels (`logprob_triton.py`), the default on CUDA when triton imports
  'reference' chunked PyTorch (`logprob_reference.py`), the default everywhere else
  'naive'     materialises all logits (`naive_token_logprobs`); for tests and benchmarks
Every fast backend has its test against 'naive' in `test_logprob.py`.
Refuses to know: models, completion masks, loss functions.

    >>> h, w = torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> token_logprobs(h, w, torch.tensor([0, 2]))
    tensor([-0.5514, -1.5514])

Tests: `python -m pytest -q kernels`. Benchmark: `python bench/logprob_kernel.py` (GPU).
"""

from __future__ import annotations

import torch  # noqa: F401  (the doctest above uses it)

from kernels.logprob_reference import naive_token_logprobs, reference_token_logprobs
from kernels.logprob_triton import HAVE_TRITON, TileConfig, triton_token_logprobs

__all__ = ["token_logprobs", "naive_token_logprobs", "TileConfig", "HAVE_TRITON"]

BACKENDS = ("auto", "reference", "triton", "naive")


def token_logprobs(hidden, weight, targets, temperature=1.0, *, return_entropy=False, backend="auto"):
    """log_softmax((hidden @ weight.T).float() / temperature)[targets], without [N, V] logits.

    hidden: (N, H) any float dtype (leading dims (..., H) are flattened and restored);
    weight: (V, H) the LM head, same dtype; targets: (N,) int64 in [0, V).
    Returns logps (N,) float32 and, if return_entropy, also the entropy (N,) float32 of that
    same tempered distribution. Logits are formed with float32 accumulation and never rounded
    to the input dtype.

    Gradients flow to hidden, and to weight when weight.requires_grad. The entropy is
    differentiable too (exact gradient, -p * (log p + entropy) per logit); the trainer only
    logs it, so detach it there and its backward costs nothing.

    backend: 'auto' (triton when hidden.is_cuda and triton imports, else 'reference'),
    'reference', 'triton' or 'naive'.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: must be one of {', '.join(BACKENDS)}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}: want (..., H) and (V, H)")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden is {hidden.dtype} but weight is {weight.dtype}; cast one")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets {tuple(targets.shape)} must match hidden's leading dims {tuple(hidden.shape[:-1])}")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    if backend == "auto":
        backend = "triton" if hidden.is_cuda and HAVE_TRITON else "reference"

    out_shape = targets.shape
    hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    targets = targets.reshape(-1).long()  # (N,)
    if hidden.shape[0] == 0:  # nothing to do; keep the graph connected for autograd
        empty = hidden.sum(-1).float()
        result = (empty, empty.clone()) if return_entropy else empty
    elif backend == "naive":
        result = naive_token_logprobs(hidden, weight, targets, temperature, return_entropy)
    elif backend == "reference":
        result = reference_token_logprobs(hidden, weight, targets, temperature, return_entropy)
    else:
        result = triton_token_logprobs(hidden, weight, targets, temperature, return_entropy)
    if return_entropy:
        return result[0].reshape(out_shape), result[1].reshape(out_shape)
    return result.reshape(out_shape)
