"""Which trainer runs a config, which of its settings that trainer reads, and what the algorithms share.

Owns: `make_trainer(cfg, **kw)`, the one place that maps `cfg.algorithm.algorithm` to a trainer
class (grpo / gspo / rloo -> `GRPOTrainer`, online_dpo -> `OnlineDPOTrainer`, ppo ->
`PPOTrainer`), and `ignored_fields(algorithm)`, the one place that says which settings of the
`algorithm` section an algorithm's trainer never reads (the Train tab hides them). What their
steps share lives in `core/rl/rollouts.py`.

Refuses to know: any algorithm's loss (that is `core/rl/objectives.py` and each trainer's step).
Imports no torch: the page asks `ignored_fields` as the algorithm is picked.

    trainer = make_trainer(cfg)          # what scripts.train and the app construct
    trainer.train()

    >>> sorted(ignored_fields("ppo") & {"loss_type", "learning_rate", "epsilon"})
    ['loss_type']
"""

from __future__ import annotations

from core.config import field_spec

ALGORITHMS = tuple(field_spec("algorithm", "algorithm")["choices"])  # grpo, gspo, rloo, online_dpo, ppo
GROUP = ("grpo", "gspo", "rloo")  # GRPOTrainer's own (core.rl.trainer.GRPO_FAMILY; a test keeps them equal)
_CLIPPED = GROUP + ("ppo",)  # a clipped ratio over mu passes, a KL to the reference weighed by beta

# The `algorithm` fields only some algorithms read, and which ones; every other field (sampling, batch,
# lengths, optimizer, schedule, seed) is read by all. Read from the trainers' steps (trainer.py, ppo.py,
# online_dpo.py) and checked against them: tests/test_ui_algorithm_fields.py changes each field and
# sees whether a step's loss and update change.
READ_BY: dict[str, tuple[str, ...]] = {
    # GRPOTrainer's loss: PPO averages its token losses over the batch's tokens, DPO over its pairs
    "loss_type": GROUP,
    # group advantages: PPO whitens its GAE advantages over the batch, DPO has none
    "scale_rewards": GROUP,
    # the KL term of GRPO's loss: PPO's KL is a penalty in its per-token rewards, DPO's pull is dpo_beta
    "use_bias_correction_kl": GROUP,
    # DPO: one pass over its pairs, no importance ratio to clip, every token of the pair counted
    "num_iterations": _CLIPPED,
    "epsilon": _CLIPPED,
    "epsilon_high": _CLIPPED,
    "beta": _CLIPPED,
    "mask_truncated_completions": _CLIPPED,
    # the vLLM correction: GRPOTrainer asks the sampler's log-probs for grpo and gspo only (as TRL)
    "vllm_importance_sampling_correction": ("grpo", "gspo"),
    "vllm_importance_sampling_mode": ("grpo", "gspo"),
    "vllm_importance_sampling_clip_max": ("grpo", "gspo"),
    "vllm_importance_sampling_clip_min": ("grpo", "gspo"),
    # each algorithm's own
    "dpo_beta": ("online_dpo",),
    "dpo_pair_rule": ("online_dpo",),
    "judge": ("online_dpo",),
    "judge_model": ("online_dpo",),
    "gae_lambda": ("ppo",),
    "gamma": ("ppo",),
    "vf_coef": ("ppo",),
    "cliprange_value": ("ppo",),
}


def ignored_fields(algorithm: str) -> frozenset[str]:
    """Names of the `algorithm` section's fields that `algorithm`'s trainer never reads: a value
    there changes nothing in its run (the config keeps it; the Train tab hides its box).

    >>> sorted(ignored_fields("online_dpo"))[:4], "dpo_beta" in ignored_fields("grpo")
    (['beta', 'cliprange_value', 'epsilon', 'epsilon_high'], True)
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: one of {', '.join(ALGORITHMS)}")
    return frozenset(name for name, readers in READ_BY.items() if algorithm not in readers)


def trainer_class(algorithm: str):
    """The trainer class that runs `algorithm`."""
    from core.rl.trainer import GRPO_FAMILY, GRPOTrainer

    if algorithm in GRPO_FAMILY:
        return GRPOTrainer
    if algorithm == "online_dpo":
        from core.rl.online_dpo import OnlineDPOTrainer

        return OnlineDPOTrainer
    if algorithm == "ppo":
        from core.rl.ppo import PPOTrainer

        return PPOTrainer
    raise ValueError(f"unknown algorithm {algorithm!r}")


def make_trainer(cfg, **kwargs):
    """A trainer for `cfg` (same keyword arguments as `GRPOTrainer`)."""
    return trainer_class(cfg.algorithm.algorithm)(cfg, **kwargs)
