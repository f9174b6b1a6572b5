"""PPO on a tiny model on the CPU: GAE by hand, the clipped losses, a value head that checkpoints
and resumes exactly, and a reward that rises; plus the factory that picks each algorithm's trainer."""

from __future__ import annotations

import pytest
import torch
from rl_helpers import FirstTokenParity, build_trainer, mean, most_frequent_token, tiny_config

from core.rl.objectives import gae_advantages, masked_whiten, ppo_losses
from core.rl.ppo import VALUE_HEAD_FILE, PPOTrainer, explained_variance


@pytest.fixture(scope="module")
def peaked_model_dir(tmp_path_factory):
    from core.models.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("peaked") / "model", initializer_range=0.4)


# ---------------------------------------------------------------------------
# the arithmetic


def test_gae_matches_a_hand_computed_example():
    # row 0: three real tokens, reward on the last; row 1: two real tokens then padding (garbage
    # values there must not leak in). gamma = 0.9, lambda = 0.8, so gamma * lambda = 0.72.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.2, 0.5, 9.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [0.1, 0.2, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: delta_2 = 1 - 0.3 = 0.7                 A_2 = 0.7
    #        delta_1 = 0.9 * 0.3 - 0.4 = -0.13        A_1 = -0.13 + 0.72 * 0.7 = 0.374
    #        delta_0 = 0.9 * 0.4 - 0.5 = -0.14        A_0 = -0.14 + 0.72 * 0.374 = 0.12928
    # row 1: delta_1 = 0.5 - 0.2 = 0.3 (V after the last token is 0)   A_1 = 0.3
    #        delta_0 = 0.2 + 0.9 * 0.2 - 0.1 = 0.28                    A_0 = 0.28 + 0.72 * 0.3 = 0.496
    assert torch.allclose(adv, torch.tensor([[0.12928, 0.374, 0.7], [0.496, 0.3, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.62928, 0.774, 1.0], [0.596, 0.5, 0.0]]), atol=1e-6)
    # lambda = 1, gamma = 1: the advantage is the return-to-go minus the value
    adv1, ret1 = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(ret1, torch.tensor([[1.0, 1.0, 1.0], [0.7, 0.5, 0.0]]))
    assert torch.allclose(adv1, ret1 - values * mask)


def test_whitening_clipping_and_explained_variance():
    mask = torch.tensor([[1, 1, 1, 0]])
    w = masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), mask)
    assert torch.allclose(w, torch.tensor([[-1.2247, 0.0, 1.2247, 0.0]]), atol=1e-4)  # padding ignored
    # policy: ratio 1.5 with A = 1 is clipped at 1 + 0.2; value: 0.5 from 0 is clipped to 0.2
    logp, old = torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1)
    pg, vf, clipped = ppo_losses(logp, old, torch.ones(1, 1), torch.tensor([[0.5]]), torch.zeros(1, 1),
                                 torch.ones(1, 1), torch.ones(1, 1), epsilon_low=0.2, epsilon_high=0.2,
                                 cliprange_value=0.2)
    assert pg.item() == pytest.approx(-1.2) and clipped == 1.0
    assert vf.item() == pytest.approx(0.5 * 0.8 ** 2)  # max((0.5-1)^2, (0.2-1)^2) / 2
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    assert explained_variance(ret, ret, torch.ones(1, 3)) == pytest.approx(1.0)
    assert explained_variance(torch.full((1, 3), 2.0), ret, torch.ones(1, 3)) == pytest.approx(0.0)


# ---------------------------------------------------------------------------
# the trainer


def test_ppo_raises_the_reward(peaked_model_dir, tmp_path):
    target, share = most_frequent_token(peaked_model_dir, tmp_path)
    assert share < 0.1
    cfg = tiny_config(tmp_path, algorithm="ppo", max_steps=30, learning_rate=6e-3, num_generations=4,
                      prompts_per_step=2)
    cfg.run.save_steps = 100
    trainer = build_trainer(peaked_model_dir, cfg, target)
    assert isinstance(trainer, PPOTrainer)
    assert trainer.train() == "finished"
    m = trainer.run.read_metrics()
    assert [r["step"] for r in m] == list(range(1, 31))
    for key in ("reward", "rewards/target_token/mean", "completions/mean_length", "loss", "grad_norm",
                "learning_rate", "entropy", "kl", "ppo/value_loss", "ppo/explained_variance", "ppo/policy_loss"):
        assert key in m[-1], key
    rewards = [r["reward"] for r in m]
    first, last = mean(rewards[:5]), mean(rewards[-5:])
    print(f"PPO reward: first 5 steps {first:.4f}, last 5 steps {last:.4f}")
    assert last >= 3 * first and last > 0.2, (first, last)
    # the value head learned something: it predicts positive returns once rewards are positive
    assert m[-1]["ppo/value_mean"] > 0.05
    assert trainer.value_head.weight.abs().sum() > 0


def test_value_head_checkpoints_and_resumes_exactly(tiny_model_dir, tmp_path):
    keys = ("reward", "loss", "grad_norm", "ppo/value_loss", "ppo/explained_variance", "ppo/value_mean", "kl")

    def config(where):
        cfg = tiny_config(where, algorithm="ppo", max_steps=4, beta=0.05, num_generations=4, prompts_per_step=2)
        cfg.run.save_steps = 2
        return cfg

    full = build_trainer(tiny_model_dir, config(tmp_path / "a"), 0, reward_set=FirstTokenParity())
    full.train()
    ref = full.run.read_metrics()
    assert ref[-1]["kl"] > 0  # beta > 0: the per-token KL penalty sees the adapter move
    ck = full.run.latest_checkpoint()
    saved = torch.load(ck / VALUE_HEAD_FILE)
    assert torch.equal(saved["weight"], full.value_head.weight.detach())

    first = build_trainer(tiny_model_dir, config(tmp_path / "b"), 0, reward_set=FirstTokenParity())
    first.on_step = lambda result: first.control.stop() if result.step == 2 else None
    assert first.train() == "stopped"
    second = build_trainer(tiny_model_dir, config(tmp_path / "b"), 0, run_dir=first.run, reward_set=FirstTokenParity())
    assert second.value_head.weight.abs().sum() == 0  # fresh, until resumed
    assert second.resume() and second.step == 2
    assert torch.equal(second.value_head.weight, first.value_head.weight)
    assert second.train() == "finished"
    got = second.run.read_metrics()
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for r_ref, r_got in zip(ref[2:], got[2:]):
        for k in keys:
            assert r_got[k] == pytest.approx(r_ref[k], rel=1e-4, abs=1e-6), (r_got["step"], k)


def test_make_trainer_picks_the_class_and_grpo_refuses_the_others(tiny_model_dir, tmp_path):
    from core.rl.algorithms import trainer_class
    from core.rl.online_dpo import OnlineDPOTrainer
    from core.rl.trainer import GRPOTrainer

    assert [trainer_class(a) for a in ("grpo", "gspo", "rloo", "online_dpo", "ppo")] == [
        GRPOTrainer, GRPOTrainer, GRPOTrainer, OnlineDPOTrainer, PPOTrainer]
    cfg = tiny_config(tmp_path, algorithm="ppo")
    with pytest.raises(ValueError, match="make_trainer"):
        GRPOTrainer(cfg, model=object(), tokenizer=None, task=None, reward_set=None, device="cpu")
