"""The arithmetic of policy-gradient RL for LLMs: advantages and the clipped surrogate losses.

Owns: pure tensor functions with no model in sight — group-normalised advantages (GRPO), the
leave-one-out baseline (RLOO), and the per-token clipped surrogate with its four ways of
averaging (grpo, bnpo, dr_grpo, dapo), GSPO's sequence-level importance ratio, and the
correction of rollouts sampled by other kernels than the trainer's (vLLM's). They follow
TRL 1.16's `GRPOTrainer._compute_loss` term for term, and `tests/test_objectives.py` holds them
equal to TRL on the same inputs.

Refuses to know: where log-probs come from, optimizers, micro-batching policy (the caller says
how many micro-batches a step has and how many completion tokens the whole step holds).

Shapes: B = sequences (prompts x G), T = completion length (padded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch


# ---------------------------------------------------------------------------
# advantages


def _nanstd(x: torch.Tensor, dim=None) -> torch.Tensor:
    """Unbiased std (Bessel's correction), as TRL's `nanstd`; NaN-free inputs assumed."""
    if dim is None:
        return x.std(unbiased=True) if x.numel() > 1 else torch.zeros((), dtype=x.dtype)
    return x.std(dim=dim, unbiased=True)


def compute_advantages(
    rewards: torch.Tensor,  # (B,) total reward of each completion, grouped: G consecutive per prompt
    num_generations: int,
    *,
    estimator: str = "grpo",  # "grpo" (group mean baseline) or "rloo" (leave-one-out baseline)
    scale_rewards: str = "group",  # "group" | "batch" | "none"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages (B,) and a bool mask (B,) of completions whose group had zero reward std.

    grpo: A_i = (r_i - mean_group) / (std + 1e-4)                     (DeepSeekMath, TRL)
    rloo: A_i = r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean_group), then the same optional
          scaling (Ahmadian et al. 2024, "Back to Basics").

    >>> a, zero = compute_advantages(torch.tensor([1., 0., 1., 1.]), 2)
    >>> [round(v, 3) for v in a.tolist()], zero.tolist()
    ([0.707, -0.707, 0.0, 0.0], [False, False, True, True])
    """
    G = num_generations
    grouped = rewards.view(-1, G)  # (P, G)
    mean = grouped.mean(dim=1).repeat_interleave(G)  # (B,)
    if scale_rewards == "batch":
        std = _nanstd(rewards).expand_as(rewards)
    else:  # "group", and "none" still needs the group std for the zero-std statistic
        std = _nanstd(grouped, dim=1).repeat_interleave(G)
    if estimator == "grpo":
        advantages = rewards - mean
    elif estimator == "rloo":
        advantages = (rewards - mean) * G / (G - 1)
    else:
        raise ValueError(f"unknown advantage estimator {estimator!r}")
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    is_std_zero = torch.isclose(std, torch.zeros_like(std))
    return advantages, is_std_zero


# ---------------------------------------------------------------------------
# rollouts sampled by other kernels (vLLM) than the trainer's


IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def sampling_is_weights(
    old_per_token_logps: torch.Tensor,  # (B, T) log pi_old under the trainer's forward (no grad)
    sampling_per_token_logps: torch.Tensor,  # (B, T) what the sampler (vLLM) gave the same tokens
    completion_mask: torch.Tensor,  # (B, T)
    *,
    mode: str = "sequence_mask",
    clip_min: float = 0.0,
    clip_max: float = 3.0,
) -> tuple[torch.Tensor, dict]:
    """Importance weights that correct for sampling by other kernels than the trainer's: (B, T)
    per token or (B, 1) per sequence, and their statistics (sums, so a step adds micro-batches).

    TRL 1.16's `vllm_importance_sampling_correction` term for term: r = exp(log pi_old -
    log pi_sampler), per token or summed over each sequence's tokens; `*_truncate` clamps r to
    [clip_min, clip_max], `*_mask` sets r outside it to 0 (the sequence, or the token, drops out
    of the loss). clip_min 0 is TRL's None (r is never negative). NaN differences count as 0.

    >>> old = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]])
    >>> w, _ = sampling_is_weights(old, old - torch.tensor([[0.5, 0.7], [0.0, 0.1]]), torch.ones(2, 2))
    >>> [round(v, 3) for v in w.flatten().tolist()]  # exp(1.2) = 3.32 > 3: the first sequence drops out
    [0.0, 1.105]
    """
    if mode not in IS_MODES:
        raise ValueError(f"unknown importance-sampling mode {mode!r}: one of {', '.join(IS_MODES)}")
    mask = completion_mask.to(old_per_token_logps.dtype)
    diff = torch.nan_to_num((old_per_token_logps - sampling_per_token_logps) * mask, nan=0.0)  # (B, T)
    per_sequence = mode.startswith("sequence")
    ratio = torch.exp(diff.sum(-1, keepdim=True) if per_sequence else diff)  # (B, 1) or (B, T)
    if mode.endswith("truncate"):
        ratio = ratio.clamp(min=clip_min, max=clip_max)
    else:
        ratio = ratio.masked_fill((ratio < clip_min) | (ratio > clip_max), 0.0)
    with torch.no_grad():  # TRL's sampling/* metrics, as sums and extremes over this batch
        real = mask.bool()
        delta = (old_per_token_logps - sampling_per_token_logps).abs()[real]
        delta = delta[~torch.isnan(delta)]
        units = ratio.flatten() if per_sequence else ratio[real]
        stats = {"logp_diff_sum": float(delta.sum()), "logp_diff_n": float(delta.numel()),
                 "logp_diff_max": float(delta.max()) if delta.numel() else 0.0,
                 "ratio_sum": float(units.sum()), "ratio_n": float(units.numel()),
                 "ratio_min": float(units.min()) if units.numel() else math.inf,
                 "ratio_max": float(units.max()) if units.numel() else -math.inf}
    return ratio.detach(), stats


def merge_is_stats(a: dict | None, b: dict) -> dict:
    """Two micro-batches' `sampling_is_weights` statistics as one."""
    if not a:
        return dict(b)
    return {k: (min if k.endswith("_min") else max if k.endswith("_max") else float.__add__)(a[k], b[k]) for k in a}


def is_metrics(stats: dict | None) -> dict:
    """A step's `sampling_is_weights` statistics under TRL's metric names (none without it)."""
    if not stats:
        return {}
    return {"sampling/sampling_logp_difference/mean": stats["logp_diff_sum"] / max(stats["logp_diff_n"], 1.0),
            "sampling/sampling_logp_difference/max": stats["logp_diff_max"],
            "sampling/importance_sampling_ratio/min": stats["ratio_min"] if stats["ratio_n"] else 0.0,
            "sampling/importance_sampling_ratio/mean": stats["ratio_sum"] / max(stats["ratio_n"], 1.0),
            "sampling/importance_sampling_ratio/max": stats["ratio_max"] if stats["ratio_n"] else 0.0}


# ---------------------------------------------------------------------------
# losses


@dataclass
class LossStats:
    """Detached statistics of one micro-batch, summed so they can be averaged over a step."""

    kl_sum: float = 0.0
    low_clip_sum: float = 0.0
    high_clip_sum: float = 0.0
    region_clip_sum: float = 0.0
    tokens: float = 0.0
    clip_units: float = 0.0  # what the clip sums count: tokens, or sequences for GSPO (as TRL logs)

    def __add__(self, other: "LossStats") -> "LossStats":
        """Field by field: a step's statistics are the sum of its micro-batches'."""
        return LossStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def policy_loss(
    per_token_logps: torch.Tensor,  # (B, T) log pi_theta(token), with grad
    old_per_token_logps: torch.Tensor | None,  # (B, T) log pi_old; None = per_token_logps.detach()
    advantages: torch.Tensor,  # (B,)
    completion_mask: torch.Tensor,  # (B, T) 1 for real completion tokens
    *,
    loss_type: str = "dapo",
    importance_sampling_level: str = "token",  # "sequence" = GSPO
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.0,
    ref_per_token_logps: torch.Tensor | None = None,  # (B, T), needed when beta > 0
    bias_correction_kl: bool = True,  # multiply the KL by the ratio (DeepSeek-V3.2; TRL's default)
    max_completion_length: int | None = None,  # dr_grpo's constant normaliser
    num_items_in_batch: float | None = None,  # dapo: completion tokens in the whole step
    num_micro_batches: int = 1,  # grpo/bnpo/dr_grpo: each micro-batch's mean is divided by this
    sampling_weights: torch.Tensor | None = None,  # (B, T) or (B, 1) `sampling_is_weights`, or None
) -> tuple[torch.Tensor, LossStats]:
    """Clipped surrogate loss of one micro-batch, ready for `.backward()`.

    Summing the returned losses over a step's micro-batches gives the step's loss for every
    loss_type (dapo divides by the step's token count, the others by the micro-batch count).
    """
    mask = completion_mask.to(per_token_logps.dtype)
    adv = advantages.unsqueeze(1)  # (B, 1)
    if old_per_token_logps is None:
        old_per_token_logps = per_token_logps.detach()

    # 1) importance ratio, per token or (GSPO) per sequence
    log_ratio = per_token_logps - old_per_token_logps  # (B, T)
    if importance_sampling_level == "token":
        log_w = log_ratio
    elif importance_sampling_level == "sequence":
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)  # (B, 1)
    else:
        raise ValueError(f"unknown importance_sampling_level {importance_sampling_level!r}")
    coef_1 = torch.exp(log_w)
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)

    # 2) pessimistic clipped surrogate (PPO), per token
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)  # (B, T) or (B, 1)
    if sampling_weights is not None:  # rollouts sampled by vLLM: TRL weighs the surrogate, not the KL
        per_token_loss = per_token_loss * sampling_weights  # (B, T), or (B, 1) when both are per sequence

    # 3) optional KL to the reference, k3 estimator (Schulman 2020), as TRL
    per_token_kl = None
    if beta != 0.0:
        if ref_per_token_logps is None:
            raise ValueError("beta > 0 needs ref_per_token_logps")
        d = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(d) - d - 1
        if bias_correction_kl:  # unbiased reverse-KL gradient, arXiv:2512.02556
            per_token_kl = per_token_kl * coef_1
        per_token_loss = per_token_loss + beta * per_token_kl

    # 4) average: this is where the loss types differ
    masked = per_token_loss * mask  # broadcasts (B, 1) -> (B, T) for GSPO
    if loss_type == "grpo":
        loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / num_micro_batches
    elif loss_type == "bnpo":
        loss = masked.sum() / mask.sum().clamp(min=1.0) / num_micro_batches
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("dr_grpo needs max_completion_length")
        loss = masked.sum() / (per_token_loss.size(0) * max_completion_length) / num_micro_batches
    elif loss_type == "dapo":
        n = float(num_items_in_batch) if num_items_in_batch is not None else float(mask.sum())
        loss = masked.sum() / max(n, 1.0)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")

    # 5) statistics (detached)
    with torch.no_grad():
        stats = LossStats(tokens=float(mask.sum()))
        if per_token_kl is not None:
            stats.kl_sum = float((per_token_kl * mask).sum())
        low = ((coef_1 < 1 - epsilon_low) & (adv < 0)).to(mask.dtype)
        high = ((coef_1 > 1 + epsilon_high) & (adv > 0)).to(mask.dtype)
        region = ((low + high) > 0).to(mask.dtype)
        # per token, or one value per sequence when the ratio is sequence-level
        unit_mask = mask if coef_1.size(1) > 1 else torch.ones_like(coef_1)
        stats.clip_units = float(unit_mask.sum())
        stats.low_clip_sum = float((low * unit_mask).sum())
        stats.high_clip_sum = float((high * unit_mask).sum())
        stats.region_clip_sum = float((region * unit_mask).sum())
    return loss, stats


# ---------------------------------------------------------------------------
# DPO (online: the pairs are sampled from the policy itself)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,  # (K,) sum of log pi_theta over the chosen completion's tokens
    policy_rejected_logps: torch.Tensor,  # (K,)
    ref_chosen_logps: torch.Tensor,  # (K,) the same under the reference (adapter off)
    ref_rejected_logps: torch.Tensor,  # (K,)
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss (K,) and the implicit rewards (K,) of chosen and rejected (detached).

    loss = -log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r)))   (Rafailov et al. 2023, sigmoid
    loss; TRL's Online DPO, Guo et al. 2024). The implicit reward of a completion is
    beta * (logp - ref); their difference is the margin the loss widens.

    >>> z = torch.zeros(1)
    >>> loss, c, r = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), z - 2, z - 2, beta=0.5)
    >>> round(loss.item(), 4), c.item(), r.item()
    (0.3133, 0.5, -0.5)
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = -torch.nn.functional.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, (beta * chosen_logratios).detach(), (beta * rejected_logratios).detach()


# ---------------------------------------------------------------------------
# PPO: per-token advantages from a value head


def gae_advantages(
    rewards: torch.Tensor,  # (B, T) per-token rewards, 0 on padding
    values: torch.Tensor,  # (B, T) value of the state before each token
    mask: torch.Tensor,  # (B, T) 1 for real completion tokens (a prefix of each row)
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): (advantages, returns), each (B, T).

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1},  returns = A + V,
    with V = 0 after the last real token (the episode ends there). Zero on padding.

    >>> a, ret = gae_advantages(torch.tensor([[0., 1.]]), torch.tensor([[.5, .5]]), torch.ones(1, 2), 1.0, 1.0)
    >>> a.tolist(), ret.tolist()
    ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.size(1)
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)  # 0 past the end (masked)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real tokens, as TRL's `masked_whiten`; 0 on padding."""
    mask = mask.to(x.dtype)
    n = mask.sum().clamp(min=1.0)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


def ppo_losses(
    per_token_logps: torch.Tensor,  # (B, T) with grad
    old_per_token_logps: torch.Tensor,  # (B, T)
    advantages: torch.Tensor,  # (B, T) whitened
    values: torch.Tensor,  # (B, T) the value head now, with grad
    old_values: torch.Tensor,  # (B, T) the value head when the rollouts were scored
    returns: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T)
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    cliprange_value: float = 0.2,
    num_items_in_batch: float | None = None,  # real tokens in the whole step: sum over micro-batches = mean
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(policy loss, value loss, clipped-token count) of one micro-batch, token-averaged (TRL's PPO).

    Policy: max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), r = pi_theta / pi_old per token.
    Value: 0.5 max((V - R)^2, (clip(V, V_old +- cliprange_value) - R)^2).
    """
    mask = mask.to(per_token_logps.dtype)
    n = float(num_items_in_batch) if num_items_in_batch is not None else float(mask.sum())
    n = max(n, 1.0)
    ratio = torch.exp(per_token_logps - old_per_token_logps)
    pg = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high))
    v_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf = 0.5 * torch.max((values - returns) ** 2, (v_clipped - returns) ** 2)
    clipped = float(((ratio < 1 - epsilon_low) | (ratio > 1 + epsilon_high)).to(mask.dtype).mul(mask).sum())
    return (pg * mask).sum() / n, (vf * mask).sum() / n, clipped
