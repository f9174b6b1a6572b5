"""vLLM's importance-sampling correction in the GRPO loop, on the CPU: an engine that hands back the
sampler's log-probs (as vLLM does) gets asked for them, and the step weighs its loss by TRL's ratio.

The sampler here is the HF engine with log-probs read from the trainer's own forward and shifted by
a known amount, so the expected weights are known exactly (vLLM's own, on its CPU build:
tests/test_engine_conformance.py). TRL's formula itself: tests/test_objectives.py."""

from __future__ import annotations

import math

import pytest
import torch

from core.engines.hf import HFEngine
from core.rl.logprobs import completion_logprobs, pad_rollouts
from tests.test_trainer import TargetTokenReward, tiny_config, tiny_task


class FirstTokenReward(TargetTokenReward):
    """Pays by the first sampled token's id (mod 5): rewards that differ within every group."""

    def fn(self, prompts, completions, completion_ids, **kwargs):
        return [(ids[0] % 5) / 4 if ids else 0.0 for ids in completion_ids]


class ShiftedSampler(HFEngine):
    """HF sampling, plus each sampled token's log-probability under the trainer's current policy minus
    `shift` nats (a sampler that found every token `shift` nats less likely than the trainer does)."""

    gives_logprobs = True

    def __init__(self, model, tokenizer, shift: float):
        super().__init__(model, tokenizer)
        self.shift, self.asked = shift, []

    def rollout(self, prompts, sampling, adapter, **kw):
        self.asked.append(sampling.logprobs)
        groups = super().rollout(prompts, sampling, adapter, **kw)
        if sampling.logprobs:
            flat = [c for g in groups for c in g]
            ids, attn, comp, cmask = pad_rollouts([p for p, g in zip(prompts, groups) for _ in g],
                                                  [c.token_ids for c in flat], self.tokenizer.pad_token_id, "cpu")
            was = self.model.training
            self.model.eval()
            with torch.no_grad():
                lp = completion_logprobs(self.model, ids, attn, comp, cmask, sampling.temperature)
            self.model.train(was)
            for i, c in enumerate(flat):
                c.logprobs = [float(x) - self.shift for x in lp[i, :len(c.token_ids)]]
        return groups


def trainer_with(model_dir, tmp_path, shift: float, **algo):
    from core.models.loading import add_lora, load_base_model, load_tokenizer
    from core.rl.algorithms import make_trainer

    cfg = tiny_config(tmp_path, **algo)
    torch.manual_seed(cfg.algorithm.seed)
    cfg.model.name_or_path = str(model_dir)
    tok = load_tokenizer(str(model_dir))
    model = add_lora(load_base_model(cfg.model, "cpu"), cfg.model)
    engine = ShiftedSampler(model, tok, shift)
    trainer = make_trainer(cfg, model=model, tokenizer=tok, engine=engine, task=tiny_task(),
                           reward_set=FirstTokenReward(0), device="cpu")
    return trainer, engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from core.models.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("is") / "model", initializer_range=0.4)


def test_exact_sampler_log_probs_weigh_nothing(model_dir, tmp_path):
    """Log-probs equal to the trainer's: every ratio ~1, the step's loss that of the step without it."""
    on, engine = trainer_with(model_dir, tmp_path / "on", 0.0)
    off, off_engine = trainer_with(model_dir, tmp_path / "off", 0.0, vllm_importance_sampling_correction=False)
    m_on, m_off = on.train_step().metrics, off.train_step().metrics
    assert engine.asked == [True] and off_engine.asked == [False]
    assert m_on["sampling/sampling_logp_difference/max"] < 1e-4
    assert abs(m_on["sampling/importance_sampling_ratio/mean"] - 1.0) < 1e-3
    assert m_on["sampling/importance_sampling_ratio/min"] > 0.99  # no sequence left out
    assert not any(k.startswith("sampling/") for k in m_off)
    assert m_off["grad_norm"] > 1e-3 and abs(m_on["grad_norm"] / m_off["grad_norm"] - 1.0) < 1e-3


def test_token_ratios_scale_the_loss(model_dir, tmp_path):
    """A sampler 0.4 nats a token below the trainer: token_truncate weighs every token exp(0.4) (under
    the cap of 3), so the step's gradient is exp(0.4) times the uncorrected one, on the same rollouts
    (its norm before clipping)."""
    on, _ = trainer_with(model_dir, tmp_path / "on", 0.4, vllm_importance_sampling_mode="token_truncate")
    off, _ = trainer_with(model_dir, tmp_path / "off", 0.4, vllm_importance_sampling_correction=False)
    m_on, m_off = on.train_step().metrics, off.train_step().metrics
    assert abs(m_on["sampling/sampling_logp_difference/mean"] - 0.4) < 1e-3
    assert abs(m_on["sampling/importance_sampling_ratio/mean"] - math.exp(0.4)) < 1e-3
    assert m_off["grad_norm"] > 1e-3
    assert abs(m_on["grad_norm"] / m_off["grad_norm"] - math.exp(0.4)) < 1e-3


def test_sequence_mask_leaves_out_what_the_sampler_found_far_less_likely(model_dir, tmp_path):
    """TRL's default (sequence_mask, max 3): 0.4 nats a token below over a whole completion puts every
    completion of 3+ tokens at exp(0.4 n) > 3: left out of the loss, so with completions all that long
    the step learns nothing; its ratios' minimum is 0."""
    on, _ = trainer_with(model_dir, tmp_path / "on", 0.4)
    result = on.train_step()
    lengths = [len(s["completion_ids"]) if "completion_ids" in s else None for s in result.samples]
    m = result.metrics
    assert m["sampling/importance_sampling_ratio/min"] == 0.0
    assert m["completions/min_length"] >= 3, lengths
    assert m["loss"] == 0.0 and m["grad_norm"] == 0.0


@pytest.mark.parametrize("algo", ["rloo", "online_dpo", "ppo"])
def test_only_grpo_and_gspo_ask_for_the_sampler_log_probs(model_dir, tmp_path, algo):
    """TRL 1.16 corrects only in its GRPOTrainer (its RLOO, Online DPO and PPO trainers do not)."""
    trainer, engine = trainer_with(model_dir, tmp_path, 0.4, algorithm=algo)
    m = trainer.train_step().metrics
    assert engine.asked and not any(engine.asked)
    assert not any(k.startswith("sampling/") for k in m)
