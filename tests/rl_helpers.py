"""Shared by the Online DPO, PPO and data-parallel tests: a trainer of any algorithm on a tiny
model, rewarded for one token (the `TargetTokenReward` of test_trainer.py)."""

from __future__ import annotations

import torch
from test_trainer import TargetTokenReward, tiny_config, tiny_task  # noqa: F401  (re-exported)

from core.rl.algorithms import make_trainer


class FirstTokenParity:
    """1 when a completion's first token id is even: a reward with variance in every batch, even
    on the near-uniform tiny model (so every algorithm has something to learn from step 1)."""

    names = ["parity"]

    def __call__(self, prompts, completions, columns):
        from core.rewards.registry import RewardResult

        values = [float(ids[0] % 2 == 0) if ids else 0.0 for ids in columns["completion_ids"]]
        return RewardResult(total=values, per_reward={"parity": values})


def build_trainer(model_dir, cfg, target_id: int, run_dir=None, **kwargs):
    """`make_trainer(cfg)` on a fresh LoRA adapter over the tiny model in `model_dir` (seeded)."""
    from core.models.loading import add_lora, load_base_model, load_tokenizer

    torch.manual_seed(cfg.algorithm.seed)
    cfg.model.name_or_path = str(model_dir)
    tok = load_tokenizer(str(model_dir))
    model = add_lora(load_base_model(cfg.model, "cpu"), cfg.model)
    kwargs.setdefault("reward_set", TargetTokenReward(target_id))
    return make_trainer(cfg, model=model, tokenizer=tok, task=tiny_task(), device="cpu", run_dir=run_dir, **kwargs)


def most_frequent_token(model_dir, tmp_path) -> tuple[int, float]:
    """The token the untrained model samples most often, and its share of all sampled tokens."""
    from core.engines.base import SamplingSettings

    probe = build_trainer(model_dir, tiny_config(tmp_path / "probe"), target_id=0)
    ids = [probe.prompt_ids(r) for r in probe.task.train[:8]]
    counts = torch.zeros(len(probe.tokenizer))
    for group in probe.engine.generate(ids, SamplingSettings(n=8, max_tokens=12, seed=0)):
        for c in group:
            counts += torch.bincount(torch.tensor(c.token_ids), minlength=len(counts))[: len(counts)]
    target = int(counts.argmax())
    return target, float(counts[target] / counts.sum())


def mean(values) -> float:
    """Mean of the finite values (steps without a DPO pair log NaN)."""
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite)
