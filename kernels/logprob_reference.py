"""Per-token log-probs from hidden states, in chunks, in plain PyTorch: the reference.

Owns: `naive_token_logprobs` (the obvious version, which materialises the full logits; for
tests and benchmarks only) and `reference_token_logprobs` (a `torch.autograd.Function` that
walks row chunks, and optionally vocab chunks, so the [N, V] logits never exist at once). The
reference is what runs on the CPU and what the Triton kernel in `logprob_triton.py` is held
equal to. It refuses to know about models, masks or losses: hidden states and an LM head in,
one float32 number per token out.

The maths, with z = (hidden @ weight.T) / T computed in float32:
    lse      = logsumexp(z)                      saved for backward, one float per row
    logp     = z[target] - lse
    entropy  = lse - sum(p * z)                   p = softmax(z); saved too
    d logp    / dz = onehot - p
    d entropy / dz = -p * (z - lse + entropy)      i.e. -p * (log p + entropy)

Backward recomputes each chunk's z from hidden and weight, forms dz, and multiplies it back:
grad_hidden = dz / T @ W, grad_weight = (dz / T).T @ hidden. Peak extra memory is a few
[chunk_rows, chunk_vocab] float32 tensors, plus a float32 [V, H] accumulator when the weight
wants a gradient.

Run its tests with `python -m pytest -q kernels`.
"""

from __future__ import annotations

import torch

# Rows per chunk are picked so one float32 [rows, chunk_vocab] logits tile is about this big.
DEFAULT_CHUNK_BYTES = 256 * 2**20


# ---------------------------------------------------------------------------- naive version


def naive_token_logprobs(hidden, weight, targets, temperature=1.0, return_entropy=False):
    """log_softmax((hidden @ weight.T).float() / T)[targets], materialising all [N, V] logits.

    The slow, obvious version the fast paths are checked against; never use it in training.

    >>> h, w = torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> naive_token_logprobs(h, w, torch.tensor([0, 2]))
    tensor([-0.5514, -1.5514])
    """
    logits = (hidden @ weight.T).float() / temperature  # (N, V)
    logps_all = torch.log_softmax(logits, dim=-1)  # (N, V)
    logps = logps_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
    if not return_entropy:
        return logps
    entropy = -(logps_all.exp() * logps_all).sum(-1)  # (N,)
    return logps, entropy


# ---------------------------------------------------------------------------- chunked version


def _matmul_fp32(a, b):
    """a @ b with a float32 result; low-precision inputs keep their tensor-core speed on CUDA.

    On CUDA, `torch.mm(..., out_dtype=float32)` multiplies bf16/fp16 with float32 accumulation
    and returns the float32 sum unrounded (torch >= 2.8). Elsewhere we upcast, which is exact.
    """
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return a @ b
    if a.is_cuda and b.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.mm(a.to(b.dtype), b, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # older torch: no out_dtype overload
            pass
    return a.float() @ b.float()


def _chunk_rows_for(vocab_per_chunk: int) -> int:
    return max(16, DEFAULT_CHUNK_BYTES // (4 * vocab_per_chunk))


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """Returns (logps, entropy), both (N,) float32 and both differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_rows, chunk_vocab):
        n_rows, vocab = hidden.shape[0], weight.shape[0]
        inv_t = 1.0 / temperature
        lse = torch.empty(n_rows, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty_like(lse)
        target_z = torch.empty_like(lse)
        for r0 in range(0, n_rows, chunk_rows):
            h = hidden[r0 : r0 + chunk_rows]  # (R, H)
            tgt = targets[r0 : r0 + chunk_rows]  # (R,)
            # online log-sum-exp over vocab chunks: running max m, s = sum e^(z-m), t = sum e^(z-m) z
            m = torch.full((h.shape[0],), float("-inf"), device=h.device)
            s = torch.zeros_like(m)
            t = torch.zeros_like(m)
            zt = torch.zeros_like(m)
            for v0 in range(0, vocab, chunk_vocab):
                z = _matmul_fp32(h, weight[v0 : v0 + chunk_vocab].T).mul_(inv_t)  # (R, Cv)
                m_new = torch.maximum(m, z.amax(dim=1))
                scale = torch.exp(m - m_new)  # exp(-inf) = 0 on the first chunk
                e = torch.exp(z - m_new[:, None])  # (R, Cv)
                s = s * scale + e.sum(1)
                t = t * scale + (e * z).sum(1)
                m = m_new
                in_chunk = (tgt >= v0) & (tgt < v0 + z.shape[1])
                local = (tgt - v0).clamp(0, z.shape[1] - 1)
                zt = torch.where(in_chunk, z.gather(1, local[:, None]).squeeze(1), zt)
                del z, e
            chunk_lse = m + torch.log(s)
            lse[r0 : r0 + chunk_rows] = chunk_lse
            entropy[r0 : r0 + chunk_rows] = chunk_lse - t / s
            target_z[r0 : r0 + chunk_rows] = zt
        logps = target_z - lse
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.inv_t, ctx.chunk_rows, ctx.chunk_vocab = inv_t, chunk_rows, chunk_vocab
        ctx.set_materialize_grads(False)
        return logps, entropy

    @staticmethod
    def backward(ctx, grad_logps, grad_entropy):
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if grad_logps is None and grad_entropy is None:
            return None, None, None, None, None, None
        inv_t, chunk_rows, chunk_vocab = ctx.inv_t, ctx.chunk_rows, ctx.chunk_vocab
        n_rows, vocab = hidden.shape[0], weight.shape[0]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if want_weight
            else None
        )
        for r0 in range(0, n_rows, chunk_rows):
            h = hidden[r0 : r0 + chunk_rows]  # (R, H)
            tgt = targets[r0 : r0 + chunk_rows]
            row_lse = lse[r0 : r0 + chunk_rows, None]  # (R, 1)
            g_logp = None if grad_logps is None else grad_logps[r0 : r0 + chunk_rows, None]
            g_ent = None if grad_entropy is None else grad_entropy[r0 : r0 + chunk_rows, None]
            row_ent = entropy[r0 : r0 + chunk_rows, None]
            gh = torch.zeros(h.shape, dtype=torch.float32, device=h.device) if want_hidden else None
            for v0 in range(0, vocab, chunk_vocab):
                w = weight[v0 : v0 + chunk_vocab]  # (Cv, H)
                z = _matmul_fp32(h, w.T).mul_(inv_t)  # (R, Cv)
                p = torch.exp(z - row_lse)  # (R, Cv)
                dz = torch.zeros_like(z)
                if g_logp is not None:
                    dz -= g_logp * p
                    in_chunk = (tgt >= v0) & (tgt < v0 + z.shape[1])
                    local = (tgt - v0).clamp(0, z.shape[1] - 1)
                    dz.scatter_add_(1, local[:, None], g_logp * in_chunk[:, None])
                if g_ent is not None:
                    dz -= g_ent * p * (z - row_lse + row_ent)
                dz.mul_(inv_t)  # now d loss / d logits
                del z, p
                if want_hidden:
                    gh += _matmul_fp32(dz, w)  # (R, H)
                if want_weight:
                    grad_weight[v0 : v0 + chunk_vocab] += _matmul_fp32(dz.T, h)  # (Cv, H)
            if want_hidden:
                grad_hidden[r0 : r0 + chunk_rows] = gh.to(hidden.dtype)
        if want_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def reference_token_logprobs(
    hidden, weight, targets, temperature=1.0, return_entropy=False, *, chunk_rows=None, chunk_vocab=None
):
    """Chunked log_softmax(hidden @ weight.T / T)[targets] (and entropy), never holding [N, V].

    hidden (N, H), weight (V, H), targets (N,) int64 in [0, V). chunk_vocab=None takes the
    whole vocabulary per chunk (one pass); chunk_rows=None picks rows so a float32
    [chunk_rows, chunk_vocab] tile is about 256 MiB. Entropy is differentiable.

    >>> h, w = torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> reference_token_logprobs(h, w, torch.tensor([0, 2]), chunk_vocab=2)
    tensor([-0.5514, -1.5514])
    """
    vocab = weight.shape[0]
    chunk_vocab = vocab if chunk_vocab is None else max(1, min(int(chunk_vocab), vocab))
    chunk_rows = _chunk_rows_for(chunk_vocab) if chunk_rows is None else max(1, int(chunk_rows))
    logps, entropy = _ChunkedTokenLogprobs.apply(
        hidden, weight, targets, float(temperature), chunk_rows, chunk_vocab
    )
    return (logps, entropy) if return_entropy else logps
