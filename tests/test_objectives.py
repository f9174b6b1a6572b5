"""Our advantages and losses equal TRL 1.16's GRPOTrainer term for term, on the same inputs."""

from __future__ import annotations

import pytest
import torch
import trl  # noqa: F401  a dependency (pyproject.toml): without it this module fails instead of being skipped

from core.rl.objectives import compute_advantages, policy_loss


def _trl_trainer(model_dir, tmp_path, **kw):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = GRPOConfig(output_dir=str(tmp_path), bf16=False, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, report_to=[], logging_steps=1, use_cpu=True, **kw)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                          args=args, train_dataset=Dataset.from_dict({"prompt": ["a b", "c d"]}),
                          processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def _inputs(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, Lp, T = 4, 5, 6
    prompt_ids = torch.randint(3, vocab, (B, Lp), generator=g)
    completion_ids = torch.randint(3, vocab, (B, T), generator=g)
    completion_mask = torch.ones(B, T, dtype=torch.long)
    completion_mask[1, 4:] = 0  # different lengths
    completion_mask[3, 2:] = 0
    return {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones(B, Lp, dtype=torch.long),
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": torch.tensor([1.0, -0.5, 0.7, -1.2]),
        "num_items_in_batch": completion_mask.sum(),
    }


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level,beta", [("token", 0.0), ("token", 0.04), ("sequence", 0.0)])
def test_loss_matches_trl(tiny_model_dir, tmp_path, loss_type, level, beta):
    trainer = _trl_trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=beta, epsilon=0.2,
                           epsilon_high=0.28, importance_sampling_level=level)
    inputs = _inputs(trainer.model.config.vocab_size)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    T = inputs["completion_ids"].size(1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, T)
    g = torch.Generator().manual_seed(1)
    # pi_old off by up to +-0.5 nats so that both clip sides are exercised
    inputs["old_per_token_logps"] = logps + (torch.rand(logps.shape, generator=g) - 0.5)
    if beta:
        inputs["ref_per_token_logps"] = logps + 0.3 * (torch.rand(logps.shape, generator=g) - 0.5)
    trl_loss = trainer._compute_loss(trainer.model, dict(inputs))

    ours, stats = policy_loss(
        logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"],
        loss_type=loss_type, importance_sampling_level=level, epsilon_low=0.2, epsilon_high=0.28, beta=beta,
        ref_per_token_logps=inputs.get("ref_per_token_logps"), max_completion_length=6,
        num_items_in_batch=float(inputs["num_items_in_batch"]),
    )
    assert abs(ours.item() - trl_loss.item()) < 1e-5, (ours.item(), trl_loss.item())
    assert stats.tokens == float(inputs["completion_mask"].sum())
    # the clipping statistics also agree with what TRL logged
    trl_region = trainer._metrics["train"]["clip_ratio/region_mean"][-1]
    assert 0 < trl_region < 1  # the perturbation really clips some, not all
    assert abs(stats.region_clip_sum / stats.clip_units - trl_region) < 1e-5


def test_hidden_state_logprobs_match_trl(tiny_model_dir, tmp_path):
    """Our decoder + fused log-prob path gives TRL's per-token log-probs (no padding in prompts)."""
    from core.rl.logprobs import completion_logprobs

    trainer = _trl_trainer(tiny_model_dir, tmp_path)
    inputs = _inputs(trainer.model.config.vocab_size, seed=3)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    T = inputs["completion_ids"].size(1)
    with torch.no_grad():
        ref, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, T)
        ours = completion_logprobs(trainer.model, ids, attn, inputs["completion_ids"], inputs["completion_mask"],
                                   temperature=trainer.temperature)
    m = inputs["completion_mask"].bool()
    assert torch.allclose(ours[m], ref[m], atol=1e-5), (ours[m] - ref[m]).abs().max()
    assert (ours[~m] == 0).all()


def test_group_advantages_match_trl_formula():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 0.0, 1.0, 1.0])
    a, zero = compute_advantages(r, 4, scale_rewards="group")
    g = r.view(2, 4)
    expect = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).flatten()
    assert torch.allclose(a, expect)
    assert zero.tolist() == [False] * 8
    a_none, _ = compute_advantages(r, 4, scale_rewards="none")
    assert torch.allclose(a_none, (g - g.mean(1, keepdim=True)).flatten())
    a_batch, _ = compute_advantages(r, 4, scale_rewards="batch")
    assert torch.allclose(a_batch, (g - g.mean(1, keepdim=True)).flatten() / (r.std() + 1e-4))


def test_rloo_leave_one_out_baseline():
    r = torch.tensor([3.0, 1.0, 2.0, 0.0])
    a, _ = compute_advantages(r, 4, estimator="rloo", scale_rewards="none")
    loo = torch.stack([(r.sum() - r[i]) / 3 for i in range(4)])
    assert torch.allclose(a, r - loo)


def test_dapo_summed_over_micro_batches_equals_whole_batch():
    g = torch.Generator().manual_seed(0)
    logps = torch.randn(6, 5, generator=g)
    old = logps + 0.1 * torch.randn(6, 5, generator=g)
    adv = torch.randn(6, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).long()
    kw = dict(epsilon_low=0.2, epsilon_high=0.28, max_completion_length=5)
    for lt in ("dapo", "grpo", "dr_grpo"):
        whole, _ = policy_loss(logps, old, adv, mask, loss_type=lt, num_items_in_batch=float(mask.sum()), **kw)
        parts = sum(policy_loss(logps[i:i + 3], old[i:i + 3], adv[i:i + 3], mask[i:i + 3], loss_type=lt,
                                num_items_in_batch=float(mask.sum()), num_micro_batches=2, **kw)[0]
                    for i in (0, 3))
        assert torch.allclose(whole, parts, atol=1e-6), lt


@pytest.mark.parametrize("mode", ["sequence_mask", "token_truncate", "sequence_truncate", "token_mask"])
@pytest.mark.parametrize("level,beta", [("token", 0.0), ("token", 0.04), ("sequence", 0.0)])
def test_vllm_importance_sampling_matches_trl(tiny_model_dir, tmp_path, mode, level, beta):
    _importance_sampling_against_trl(tiny_model_dir, tmp_path, mode, level, beta, clip_min=0.5, nan=False)


@pytest.mark.parametrize("mode", ["sequence_mask", "token_truncate"])
def test_vllm_importance_sampling_without_lower_bound_and_with_nan_matches_trl(tiny_model_dir, tmp_path, mode):
    """TRL's default lower bound None is ours 0.0; a token vLLM gave no log-prob for (NaN) counts as
    no difference on both sides."""
    _importance_sampling_against_trl(tiny_model_dir, tmp_path, mode, "token", 0.0, clip_min=None, nan=True)


def _importance_sampling_against_trl(tiny_model_dir, tmp_path, mode, level, beta, clip_min, nan):
    """TRL's GRPOTrainer with vLLM's sampled log-probs (its `_generate` handing back completions and
    the sampler's log-probs, as its vLLM path does) computes the IS ratio, the loss and its sampling/*
    metrics; ours, from the same log-probs and the training pass's own pi_old, gives the same."""
    from core.rl.logprobs import completion_logprobs
    from core.rl.objectives import is_metrics, sampling_is_weights

    trainer = _trl_trainer(tiny_model_dir, tmp_path, loss_type="dapo", beta=beta, epsilon=0.2, epsilon_high=0.28,
                           importance_sampling_level=level, vllm_importance_sampling_mode=mode,
                           vllm_importance_sampling_clip_max=1.5, vllm_importance_sampling_clip_min=clip_min)
    vocab = trainer.model.config.vocab_size
    g = torch.Generator().manual_seed(7)
    prompt_ids = [torch.randint(3, vocab, (3,), generator=g).tolist() for _ in range(2) for _ in range(2)]
    completion_ids = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (6, 4, 6, 2)]
    ids = torch.tensor([p + c + [0] * (6 - len(c)) for p, c in zip(prompt_ids, completion_ids)])
    cmask = torch.tensor([[1] * len(c) + [0] * (6 - len(c)) for c in completion_ids])
    attn = torch.cat([torch.ones(4, 3, dtype=torch.long), cmask], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, 6)
    # the sampler is off by up to +-0.6 nats a token: some ratios fall outside [0.5, 1.5], some inside
    sampled = (logps + 1.2 * (torch.rand(logps.shape, generator=g) - 0.5)) * cmask
    if nan:
        sampled[0, 1] = sampled[2, 3] = float("nan")
    sampled_lists = [sampled[i, :len(c)].tolist() for i, c in enumerate(completion_ids)]
    rewards = iter([[1.0, 0.0, 0.3, 0.9]])

    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
    trainer._generate = lambda prompts: (prompt_ids, completion_ids, None, ["x"] * 4, sampled_lists, {}, None, None)
    trainer.reward_funcs[0] = lambda completions, **_: next(rewards)
    trainer.reward_funcs[0].__name__ = "fixed"
    out = trainer._generate_and_score_completions([{"prompt": "a b"}, {"prompt": "a b"}, {"prompt": "c d"},
                                                   {"prompt": "c d"}])
    if beta:
        out["ref_per_token_logps"] = out["old_per_token_logps"] + 0.1
    trl_loss = trainer._compute_loss(trainer.model, dict(out))

    ours_logps = completion_logprobs(trainer.model, ids, attn, torch.tensor(
        [c + [0] * (6 - len(c)) for c in completion_ids]), cmask, temperature=trainer.temperature)
    w, st = sampling_is_weights(ours_logps.detach(), sampled, cmask, mode=mode, clip_min=clip_min or 0.0,
                                clip_max=1.5)
    ratio = out["importance_sampling_ratio"]
    assert w.shape == ratio.shape
    assert torch.allclose(w, ratio, atol=1e-5), (w, ratio)
    real = cmask.bool() if w.size(1) > 1 else torch.ones_like(w, dtype=torch.bool)
    cut = (w == 0) if mode.endswith("mask") else ((w - 1.5).abs() < 1e-6) | ((w - (clip_min or -1)).abs() < 1e-6)
    assert 0 < int(cut[real].sum()) < int(real.sum())  # some ratios cut, some kept
    ours, _ = policy_loss(ours_logps, None, out["advantages"], cmask, loss_type="dapo", importance_sampling_level=level,
                          epsilon_low=0.2, epsilon_high=0.28, beta=beta, ref_per_token_logps=out.get("ref_per_token_logps"),
                          num_items_in_batch=float(cmask.sum()), sampling_weights=w)
    assert abs(ours.item() - trl_loss.item()) < 1e-5, (ours.item(), trl_loss.item())
    without, _ = policy_loss(ours_logps, None, out["advantages"], cmask, loss_type="dapo",
                             importance_sampling_level=level, epsilon_low=0.2, epsilon_high=0.28, beta=beta,
                             ref_per_token_logps=out.get("ref_per_token_logps"), num_items_in_batch=float(cmask.sum()))
    assert abs(without.item() - trl_loss.item()) > 1e-4  # the weights matter on these inputs
    logged = trainer._metrics["train"]
    for name, value in is_metrics(st).items():
        assert abs(logged[name][-1] - value) < 1e-5, (name, logged[name][-1], value)
