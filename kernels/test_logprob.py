"""Every fast log-prob path equals the naive log_softmax + gather, in value and gradient.

Three tiers:
  CPU (CI):          the chunked reference vs naive, fp32 and bf16, real vocab sizes.
  CPU interpreter:   the Triton kernels run by Triton's interpreter in a child process
                     (TRITON_INTERPRET must be set before triton is imported, and only there),
                     on small shapes that are not multiples of any block.
  CUDA (-m gpu):     the compiled Triton kernels at Qwen2.5-1.5B's vocab and width.
bf16 results are compared with naive run in float32 on the same bf16 inputs, which is what
the fast paths compute (float32 accumulation, logits never rounded to bf16).

Run: `python -m pytest -q kernels` (add `-m gpu` on a GPU machine for the CUDA tier only).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kernels import HAVE_TRITON, naive_token_logprobs, token_logprobs
from kernels.interpreted import print_results, run_interpreted
from kernels.logprob_reference import reference_token_logprobs

REPO_ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()

# Gradient tolerances are relative Frobenius errors. fp32: naive itself is ~1e-5 off a float64
# answer at V=151936 (the chunked paths are closer). bf16/fp16 round the returned gradient
# and, in the kernel, the float32 dlogits before the matmul back.
GRAD_RTOL = {torch.float32: 5e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


# ---------------------------------------------------------------------------- helpers


def make_inputs(n, h, v, dtype, device="cpu", seed=0):
    """hidden, weight and targets whose logits spread like an LM's (std ~ 3, a few peaks)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen)
    weight = torch.randn(v, h, generator=gen) * (3.0 / h**0.5)
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[0], targets[-1] = 0, v - 1  # both ends of the vocabulary
    # make every fourth row confident in its target (logit ~20 above the rest), as a trained
    # model is on most tokens
    direction = weight[targets[1::4]]
    hidden[1::4] += 7.0 * direction / direction.norm(dim=1, keepdim=True)
    return (
        hidden.to(device=device, dtype=dtype),
        weight.to(device=device, dtype=dtype),
        targets.to(device),
    )


def run_with_grads(fn, hidden, weight, targets, temperature, upstream):
    """Value and gradients of sum(g1 * logp + g2 * entropy) through fn, on leaf copies."""
    hidden = hidden.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    logps, entropy = fn(hidden, weight, targets, temperature)
    g_logp, g_ent = upstream
    (logps * g_logp + entropy * g_ent).sum().backward()
    return logps.detach(), entropy.detach(), hidden.grad, weight.grad


def naive_fp32(hidden, weight, targets, temperature):
    return naive_token_logprobs(hidden.float(), weight.float(), targets, temperature, return_entropy=True)


def rel_err(got, want):
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def assert_matches_naive(got, want, dtype):
    logps, entropy, grad_hidden, grad_weight = got
    n_logps, n_entropy, n_grad_hidden, n_grad_weight = want
    assert logps.dtype == torch.float32 and entropy.dtype == torch.float32
    assert grad_hidden.dtype == dtype and grad_weight.dtype == dtype
    # values: both sides compute float32 logits from the same inputs, so only summation order differs
    assert (logps - n_logps).abs().max().item() < 2e-4
    assert (entropy - n_entropy).abs().max().item() < 2e-4
    assert rel_err(grad_hidden, n_grad_hidden) < GRAD_RTOL[dtype]
    assert rel_err(grad_weight, n_grad_weight) < GRAD_RTOL[dtype]


def upstream_grads(n, device="cpu", seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen).to(device), torch.randn(n, generator=gen).to(device)


# ---------------------------------------------------------------------------- CPU: reference


@pytest.mark.parametrize("temperature", [0.7, 1.0])
@pytest.mark.parametrize("vocab", [32000, 128256, 151936])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_matches_naive(dtype, vocab, temperature):
    n, h = 32, 64
    hidden, weight, targets = make_inputs(n, h, vocab, dtype)
    upstream = upstream_grads(n)
    # uneven chunks: 2 row chunks (the second short) and, except at the largest vocab, which
    # takes it whole, 3 vocab chunks (the last short)
    chunk_vocab = None if vocab == 151936 else vocab // 3 + 7
    chunked = lambda *a: reference_token_logprobs(  # noqa: E731
        *a, return_entropy=True, chunk_rows=20, chunk_vocab=chunk_vocab
    )
    got = run_with_grads(chunked, hidden, weight, targets, temperature, upstream)
    want = run_with_grads(naive_fp32, hidden, weight, targets, temperature, upstream)
    assert_matches_naive(got, want, dtype)


def test_reference_whole_vocab_chunk_and_public_api():
    hidden, weight, targets = make_inputs(33, 48, 5000, torch.float32)
    logps, entropy = token_logprobs(hidden, weight, targets, 0.9, return_entropy=True)  # auto: CPU -> reference
    n_logps, n_entropy = naive_token_logprobs(hidden, weight, targets, 0.9, return_entropy=True)
    torch.testing.assert_close(logps, n_logps, rtol=0, atol=2e-5)
    torch.testing.assert_close(entropy, n_entropy, rtol=0, atol=2e-5)


def test_entropy_value_and_logprob_sum_identities():
    # entropy of a peaked, a flat and a two-way distribution, against the naive formula
    weight = torch.zeros(1000, 8)
    weight[0, 0], weight[1, 1], weight[2, 1] = 40.0, 5.0, 5.0
    hidden = torch.tensor([[1.0] + [0.0] * 7, [0.0] * 8, [0.0, 10.0] + [0.0] * 6])
    targets = torch.tensor([0, 7, 2])
    logps, entropy = token_logprobs(hidden, weight, targets, return_entropy=True, backend="reference")
    n_logps, n_entropy = naive_token_logprobs(hidden, weight, targets, return_entropy=True)
    torch.testing.assert_close(entropy, n_entropy, rtol=0, atol=1e-5)
    assert abs(entropy[0].item()) < 1e-6  # all mass on token 0
    assert abs(entropy[1].item() - torch.log(torch.tensor(1000.0)).item()) < 1e-5  # uniform
    assert abs(entropy[2].item() - torch.log(torch.tensor(2.0)).item()) < 1e-5  # two tied tokens
    assert abs(logps[1].item() + torch.log(torch.tensor(1000.0)).item()) < 1e-5
    torch.testing.assert_close(logps, n_logps, rtol=0, atol=1e-5)


def test_entropy_only_gradient_and_detached_entropy():
    hidden, weight, targets = make_inputs(24, 32, 700, torch.float32, seed=3)

    def grad_of(backend, loss_of):
        h = hidden.clone().requires_grad_(True)
        logps, entropy = token_logprobs(h, weight, targets, 0.8, return_entropy=True, backend=backend)
        loss_of(logps, entropy).backward()
        return h.grad

    # entropy alone: logps' gradient slot is None inside the autograd Function
    entropy_only = lambda logps, entropy: entropy.sum()  # noqa: E731
    torch.testing.assert_close(
        grad_of("reference", entropy_only), grad_of("naive", entropy_only), rtol=0, atol=1e-5
    )
    # entropy detached, as the trainer logs it: the gradient is that of logps alone
    detached = lambda logps, entropy: logps.sum() + entropy.detach().sum()  # noqa: E731
    logps_only = lambda logps, entropy: logps.sum()  # noqa: E731
    torch.testing.assert_close(
        grad_of("reference", detached), grad_of("naive", logps_only), rtol=0, atol=1e-5
    )


def test_leading_dims_frozen_weight_and_validation():
    hidden, weight, targets = make_inputs(12, 16, 300, torch.float32)
    h = hidden.reshape(3, 4, 16).clone().requires_grad_(True)
    logps = token_logprobs(h, weight, targets.reshape(3, 4), backend="reference")
    assert logps.shape == (3, 4)
    logps.sum().backward()
    assert weight.grad is None and h.grad.shape == (3, 4, 16)
    torch.testing.assert_close(logps.reshape(-1), naive_token_logprobs(hidden, weight, targets), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        token_logprobs(hidden, weight, targets, backend="cuda")
    with pytest.raises(ValueError, match="cast one"):
        token_logprobs(hidden, weight.bfloat16(), targets)


# ---------------------------------------------------------------------------- Triton interpreter

# (dtype, N, H, V, vocab_splits, grad_weight): no size a multiple of its block (16 x 64 x 16)
INTERPRETER_CASES = [
    ("float32", 20, 32, 300, 1, True),
    ("float32", 20, 40, 300, 3, True),
    ("bfloat16", 20, 32, 300, 1, True),
    ("bfloat16", 20, 32, 300, 3, False),
    ("float16", 20, 32, 300, 2, True),
]


def _interpreter_child():
    """Runs in a child process with TRITON_INTERPRET=1; prints one JSON line of errors."""
    from kernels.logprob_triton import INTERPRETED, TileConfig, triton_token_logprobs

    assert INTERPRETED
    results = []
    for dtype_name, n, h, v, splits, grad_weight in INTERPRETER_CASES:
        dtype = getattr(torch, dtype_name)
        hidden, weight, targets = make_inputs(n, h, v, dtype)
        upstream = upstream_grads(n)
        cfg = TileConfig(block_n=16, block_v=64, block_h=16, vocab_splits=splits)
        fused = lambda *a: triton_token_logprobs(*a, return_entropy=True, config=cfg)  # noqa: E731
        got = run_with_grads(fused, hidden, weight, targets, 0.7, upstream)
        want = run_with_grads(naive_fp32, hidden, weight, targets, 0.7, upstream)
        results.append({
            "logp_err": (got[0] - want[0]).abs().max().item(),
            "entropy_err": (got[1] - want[1]).abs().max().item(),
            "grad_hidden_rel": rel_err(got[2], want[2]),
            "grad_weight_rel": rel_err(got[3], want[3]),
            "grad_dtype_ok": got[2].dtype == dtype and got[3].dtype == dtype,
        })
        # frozen weight: only grad_hidden, through the same kernel with GRAD_WEIGHT off
        if not grad_weight:
            h_leaf = hidden.clone().requires_grad_(True)
            triton_token_logprobs(h_leaf, weight, targets, 0.7, config=cfg).sum().backward()
            h_naive = hidden.float().requires_grad_(True)
            naive_token_logprobs(h_naive, weight.float(), targets, 0.7).sum().backward()
            results[-1]["frozen_weight_grad_hidden_rel"] = rel_err(h_leaf.grad, h_naive.grad)
    print_results(results)


@pytest.fixture(scope="module")
def interpreter_results():
    if not HAVE_TRITON:
        pytest.skip("triton is not importable here, so its interpreter cannot run the kernels")
    return run_interpreted("kernels.test_logprob", "_interpreter_child")


@pytest.mark.parametrize("case", range(len(INTERPRETER_CASES)), ids=lambda i: "-".join(map(str, INTERPRETER_CASES[i])))
def test_triton_interpreter_matches_naive(interpreter_results, case):
    dtype = getattr(torch, INTERPRETER_CASES[case][0])
    result = interpreter_results[case]
    assert result["grad_dtype_ok"]
    assert result["logp_err"] < 2e-5, result
    assert result["entropy_err"] < 2e-5, result
    assert result["grad_hidden_rel"] < GRAD_RTOL[dtype], result
    assert result["grad_weight_rel"] < GRAD_RTOL[dtype], result
    if "frozen_weight_grad_hidden_rel" in result:
        assert result["frozen_weight_grad_hidden_rel"] < GRAD_RTOL[dtype], result


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_triton_cuda_matches_naive_qwen_shape(temperature):
    n, h, v = 512, 1536, 151936
    hidden, weight, targets = make_inputs(n, h, v, torch.bfloat16, device="cuda")
    upstream = upstream_grads(n, device="cuda")
    fused = lambda *a: token_logprobs(*a, return_entropy=True, backend="auto")  # noqa: E731
    got = run_with_grads(fused, hidden, weight, targets, temperature, upstream)
    want = run_with_grads(naive_fp32, hidden, weight, targets, temperature, upstream)
    assert_matches_naive(got, want, torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_cuda_other_dtypes_and_frozen_weight(dtype):
    n, h, v = 300, 520, 20011  # nothing a multiple of a block; fp32 dots are slow, keep it small
    hidden, weight, targets = make_inputs(n, h, v, dtype, device="cuda")
    upstream = upstream_grads(n, device="cuda")
    fused = lambda *a: token_logprobs(*a, return_entropy=True, backend="triton")  # noqa: E731
    got = run_with_grads(fused, hidden, weight, targets, 0.7, upstream)
    want = run_with_grads(naive_fp32, hidden, weight, targets, 0.7, upstream)
    assert_matches_naive(got, want, dtype)
    # frozen LM head (LoRA): logps only, no grad_weight pass
    h_leaf = hidden.clone().requires_grad_(True)
    token_logprobs(h_leaf, weight, targets, 0.7, backend="triton").sum().backward()
    h_naive = hidden.float().requires_grad_(True)
    naive_token_logprobs(h_naive, weight.float(), targets, 0.7).sum().backward()
    assert rel_err(h_leaf.grad, h_naive.grad) < GRAD_RTOL[dtype]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
def test_triton_cuda_wide_hidden():
    n, h, v = 70, 8192, 32003  # H of a 70B model: 128 steps of the H loop per tile
    hidden, weight, targets = make_inputs(n, h, v, torch.bfloat16, device="cuda")
    upstream = upstream_grads(n, device="cuda")
    fused = lambda *a: token_logprobs(*a, return_entropy=True, backend="triton")  # noqa: E731
    got = run_with_grads(fused, hidden, weight, targets, 1.0, upstream)
    want = run_with_grads(naive_fp32, hidden, weight, targets, 1.0, upstream)
    assert_matches_naive(got, want, torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_reference_cuda_matches_naive():
    n, h, v = 512, 1536, 151936
    hidden, weight, targets = make_inputs(n, h, v, torch.bfloat16, device="cuda")
    upstream = upstream_grads(n, device="cuda")
    chunked = lambda *a: reference_token_logprobs(*a, return_entropy=True, chunk_rows=200)  # noqa: E731
    got = run_with_grads(chunked, hidden, weight, targets, 0.7, upstream)
    want = run_with_grads(naive_fp32, hidden, weight, targets, 0.7, upstream)
    assert_matches_naive(got, want, torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAVE_TRITON, reason="needs triton")
def test_triton_cuda_falls_back_to_a_tile_that_fits(monkeypatch):
    from kernels import logprob_triton

    # 256 x 512 x 128 in 3 stages wants ~590 KiB of shared memory: no GPU has that
    too_big = logprob_triton.TileConfig(256, 512, 128, 8, 3)
    tiles = {role: (too_big, *options) for role, options in logprob_triton.DEFAULT_TILES.items()}
    monkeypatch.setattr(logprob_triton, "DEFAULT_TILES", tiles)
    monkeypatch.setattr(logprob_triton, "_CHOSEN_TILES", {})
    n, h, v = 200, 256, 20000
    hidden, weight, targets = make_inputs(n, h, v, torch.bfloat16, device="cuda")
    upstream = upstream_grads(n, device="cuda")
    fused = lambda *a: token_logprobs(*a, return_entropy=True, backend="triton")  # noqa: E731
    got = run_with_grads(fused, hidden, weight, targets, 1.0, upstream)
    want = run_with_grads(naive_fp32, hidden, weight, targets, 1.0, upstream)
    assert_matches_naive(got, want, torch.bfloat16)
    assert sorted(role for role, *_ in logprob_triton._CHOSEN_TILES) == ["backward_weight", "forward"]
    assert set(logprob_triton._CHOSEN_TILES.values()) == {1}
