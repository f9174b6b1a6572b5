"""Which trainer runs a config, and what the algorithms beside GRPO share.

Owns: `make_trainer(cfg, **kw)`, the one place that maps `cfg.algorithm.algorithm` to a trainer
class (grpo / gspo / rloo -> `GRPOTrainer`, online_dpo -> `OnlineDPOTrainer`, ppo ->
`PPOTrainer`). What their steps share lives in `core/rl/rollouts.py`.

Refuses to know: any algorithm's loss (that is `core/rl/objectives.py` and each trainer's step).

    trainer = make_trainer(cfg)          # what scripts.train and the app construct
    trainer.train()
"""

from __future__ import annotations


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
