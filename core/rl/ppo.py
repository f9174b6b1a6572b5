"""PPO: GRPOTrainer's loop with a value head, per-token rewards and GAE instead of group baselines.

Owns: the value head (a `Linear(hidden, 1)` on the policy's final hidden states, trained with the
LoRA weights and saved in checkpoints as `value_head.pt`) and one PPO step —
  1) sample G completions per prompt through the engine (G only sets the batch size here: no
     group statistics are used),
  2) score them with the reward functions,
  3) old log-probs and values from one forward pass, and the reference's log-probs (adapter
     off) when beta > 0,
  4) per-token rewards: -beta x (log pi_old - log pi_ref) on every token, plus the sequence's
     reward on its last token,
  5) GAE (gamma, lambda) gives advantages and returns; advantages are whitened over the batch,
  6) mu passes of the clipped policy loss + vf_coef x the clipped value loss, backward over
     micro-batches, each pass then 7) averaged over ranks, clipped, one AdamW step,
  8) push the adapter into the engine.
The start of the step (1 and 2), the skip of a NaN/inf loss, the smaller micro-batch after
out-of-memory and the loop around it — pause / stop / resume, checkpoints, the metrics file,
`on_step` — are GRPOTrainer's, unchanged.

Refuses to know: the arithmetic (`gae_advantages`, `masked_whiten`, `ppo_losses` in
`core/rl/objectives.py`).

Schulman et al. 2017 (arXiv:1707.06347); the LLM recipe of Ouyang et al. 2022 and TRL's
PPOTrainer (k1 KL penalty per token, whitened advantages, clipped value loss).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from core.rl.logprobs import completion_hidden_states, logprobs_from_hidden, pad_rollouts
from core.rl.objectives import gae_advantages, masked_whiten, ppo_losses
from core.rl.trainer import GRPOTrainer, StepResult, halved_micro_batch

VALUE_HEAD_FILE = "value_head.pt"


def logps_and_values(model, value_head, input_ids, attention_mask, completion_ids, completion_mask, temperature,
                     return_entropy: bool = False):
    """Per-token log-probs (B, T) and values (B, T) from one decoder pass (entropy (B, T) too if asked).

    As `core.rl.logprobs.completion_logprobs`, plus the value head on the same hidden states: the
    value at position t is read from the state that predicts completion token t.
    """
    hidden, head = completion_hidden_states(model, input_ids, attention_mask, completion_ids.size(1))  # (B, T, H)
    out = logprobs_from_hidden(hidden, head, completion_ids, completion_mask, temperature, return_entropy)
    values = value_head(hidden.float()).squeeze(-1) * completion_mask  # (B, T), float32
    if not return_entropy:
        return out, values
    logps, ent = out
    return logps, values, ent


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over real tokens: 1 = the value head predicts the
    returns, 0 = no better than their mean, < 0 = worse. NaN when the returns do not vary."""
    sel = mask.bool()
    var = returns[sel].var(unbiased=False)
    if sel.sum() < 2 or var <= 0:
        return float("nan")
    return float(1 - (returns[sel] - values[sel]).var(unbiased=False) / var)


class PPOTrainer(GRPOTrainer):
    """Trains the LoRA adapter and a value head with PPO; see the module docstring for the step."""

    def __init__(self, cfg, **kwargs):
        from transformers import get_scheduler

        super().__init__(cfg, **kwargs)
        a = cfg.algorithm
        # the value head starts at zero (V = 0: the first advantages are the returns themselves)
        self.value_head = torch.nn.Linear(self.model.config.hidden_size, 1).to(self.device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        head = list(self.value_head.parameters())
        self.params = self.params + head  # clipped and averaged over ranks with the adapter
        self.optimizer.add_param_group({"params": head})
        # rebuilt so the schedule covers the value head's group too
        self.scheduler = get_scheduler(a.lr_scheduler, self.optimizer, num_warmup_steps=a.warmup_steps,
                                       num_training_steps=a.max_steps)

    # -- checkpoints: the value head beside the adapter ----------------------------------
    def save_extra_state(self, folder: Path) -> None:
        torch.save(self.value_head.state_dict(), Path(folder) / VALUE_HEAD_FILE)

    def load_extra_state(self, folder: Path) -> None:
        path = Path(folder) / VALUE_HEAD_FILE
        if path.exists():
            self.value_head.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))

    # -- one step ------------------------------------------------------------------
    def train_step(self) -> StepResult:
        a = self.cfg.algorithm

        # 1) + 2) sample and score (the start every algorithm shares: GRPOTrainer.sample_and_score)
        step, t0, batch = self.sample_and_score()
        rewards = batch.rewards.to(self.device)  # (B,)
        ids, attn, comp, cmask = pad_rollouts(batch.flat_prompt_ids, [c.token_ids for c in batch.completions],
                                              self.tokenizer.pad_token_id, self.device)  # (B, Lp + T), (B, T)
        truncated = torch.tensor([c.truncated for c in batch.completions], device=self.device)
        if a.mask_truncated_completions:
            cmask = cmask * (~truncated).unsqueeze(1).long()
        mask = cmask.float()
        self.model.train()

        # 3) old log-probs and values; the reference for the KL penalty
        old_logps, old_values = self._no_grad_pass(ids, attn, comp, cmask)  # (B, T) each
        kl = torch.zeros_like(old_logps)
        if a.beta > 0:
            with self.model.disable_adapter():
                ref_logps, _ = self._no_grad_pass(ids, attn, comp, cmask)
            kl = (old_logps - ref_logps) * mask  # k1 estimator per token, as TRL's PPO

        # 4) per-token rewards: the KL penalty everywhere, the sequence's reward on its last token
        token_rewards = -a.beta * kl  # (B, T)
        lengths = cmask.sum(-1)  # (B,)
        last = (lengths - 1).clamp(min=0)
        token_rewards[torch.arange(len(lengths), device=self.device), last] += rewards * (lengths > 0)

        # 5) GAE, then whitened advantages
        advantages, returns = gae_advantages(token_rewards, old_values, mask, a.gamma, a.gae_lambda)  # (B, T) each
        advantages = masked_whiten(advantages, mask)

        # 6) + 7) mu passes of the clipped policy loss + vf_coef x the clipped value loss (token means),
        #         backward per micro-batch, then one update; out of memory: redo with half the micro-batch
        n_tokens = float(cmask.sum())
        done = 0
        while done < a.num_iterations:
            try:
                mbs = self.micro_batch_size
                pg_sum = vf_sum = ent_sum = clipped = 0.0
                finite = True
                self.optimizer.zero_grad(set_to_none=True)
                for i in range(0, ids.size(0), mbs):
                    s = slice(i, i + mbs)
                    logps, values, ent = logps_and_values(self.model, self.value_head, ids[s], attn[s], comp[s],
                                                          cmask[s], a.temperature, return_entropy=True)  # (b, T)
                    pg, vf, n_clip = ppo_losses(logps, old_logps[s], advantages[s], values, old_values[s], returns[s],
                                                cmask[s], epsilon_low=a.epsilon, epsilon_high=a.epsilon_high,
                                                cliprange_value=a.cliprange_value, num_items_in_batch=n_tokens)
                    loss = pg + a.vf_coef * vf
                    finite = bool(torch.isfinite(loss))
                    if not finite:
                        break
                    loss.backward()
                    pg_sum += pg.item()
                    vf_sum += vf.item()
                    ent_sum += float((ent * cmask[s]).sum())
                    clipped += n_clip
                if finite:
                    # 7) average over ranks, clip, AdamW step (none when the norm is inf/NaN), schedule
                    grad_norm = self.optimizer_step()  # GRPOTrainer.optimizer_step: the same step 7
                    out = {"loss": pg_sum + a.vf_coef * vf_sum, "grad_norm": grad_norm,
                           "entropy": ent_sum / max(n_tokens, 1.0), "ppo/policy_loss": pg_sum, "ppo/value_loss": vf_sum,
                           "clip_ratio/region_mean": clipped / max(n_tokens, 1.0)}
                else:  # a NaN/inf loss would poison the adapter: this pass updates nothing
                    self.skip_update()
                    out = dict.fromkeys(("loss", "grad_norm", "entropy", "ppo/policy_loss", "ppo/value_loss",
                                         "clip_ratio/region_mean"), math.nan)
                done += 1
            except torch.OutOfMemoryError as oom:  # redo this pass with half the micro-batch
                self.optimizer.zero_grad(set_to_none=True)
                self.micro_batch_size = halved_micro_batch(self.micro_batch_size, oom)

        # 8) push the new adapter into the engine
        self.adapter = self.engine.update_adapter(self.model)
        self.step = step

        m = self.step_metrics(batch, step, t0)
        tokens = max(float(mask.sum()), 1.0)
        m.update(out)
        m["kl"] = float(kl.sum()) / tokens if a.beta > 0 else 0.0
        m["ppo/explained_variance"] = explained_variance(old_values, returns, cmask)
        m["ppo/value_mean"] = float((old_values * mask).sum()) / tokens
        m["ppo/returns_mean"] = float((returns * mask).sum()) / tokens
        m["step_time"] = time.perf_counter() - t0
        return StepResult(step, m, self.step_samples(batch, step))

    @torch.no_grad()
    def _no_grad_pass(self, ids, attn, comp, cmask) -> tuple[torch.Tensor, torch.Tensor]:
        logps, values = [], []
        for i in range(0, ids.size(0), self.micro_batch_size):
            s = slice(i, i + self.micro_batch_size)
            lp, v = logps_and_values(self.model, self.value_head, ids[s], attn[s], comp[s], cmask[s],
                                     self.cfg.algorithm.temperature)
            logps.append(lp)
            values.append(v)
        return torch.cat(logps), torch.cat(values)
