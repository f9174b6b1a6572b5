"""Online DPO: GRPOTrainer's loop with a DPO step on pairs the policy itself just sampled.

Owns: one Online DPO step —
  1) sample G completions per prompt through the engine, with the current adapter,
  2) score them with the reward functions (always logged; they rank the completions unless a
     judge is configured),
  3) choose one (chosen, rejected) pair per prompt: best vs worst, or a random pair, ranked by
     reward or by the judge (`core/rl/judges.py`); a prompt whose candidates tie gives no pair,
  4) sequence log-probs (summed over completion tokens) of every pair under the policy and
     under the reference, the same weights with the adapter switched off,
  5) DPO's loss -log sigmoid(beta x (chosen log-ratio - rejected log-ratio)), backward over
     micro-batches of pairs,
  6) average over ranks, clip, AdamW step, 7) push the adapter into the engine.
The start of the step (1 and 2), the skip of a NaN/inf loss, the smaller micro-batch after
out-of-memory and the loop around it — pause / stop / resume, checkpoints, the metrics file,
`on_step` — are GRPOTrainer's, unchanged.

Refuses to know: how a judge answers (`core/rl/judges.py`), the loss arithmetic
(`core.rl.objectives.dpo_loss`).

Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback" (arXiv:2402.04792);
TRL's OnlineDPOTrainer logs the same `rewards/chosen`-style statistics, here under `dpo/`.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from core.rl import distributed
from core.rl.judges import make_judge
from core.rl.logprobs import completion_logprobs, pad_rollouts
from core.rl.objectives import dpo_loss
from core.rl.rollouts import ScoredRollouts
from core.rl.trainer import GRPOTrainer, StepResult, halved_micro_batch

# a step's DPO metrics, in the order they are logged
DPO_METRICS = ("loss", "grad_norm", "kl", "entropy", "dpo/margin", "dpo/chosen_reward", "dpo/rejected_reward",
               "dpo/accuracy")


class OnlineDPOTrainer(GRPOTrainer):
    """Trains the LoRA adapter with Online DPO; see the module docstring for the step."""

    def __init__(self, cfg, **kwargs):
        super().__init__(cfg, **kwargs)
        self.judge = make_judge(cfg, self.engine, self.tokenizer)

    # -- one step ------------------------------------------------------------------
    def train_step(self) -> StepResult:
        a = self.cfg.algorithm

        # 1) + 2) sample G completions per prompt and score them (the start every algorithm shares)
        step, t0, batch = self.sample_and_score()

        # 3) one (chosen, rejected) pair per prompt
        rng = np.random.default_rng([a.seed, step, distributed.rank()])
        pairs, no_verdict = self.choose_pairs(batch, rng)
        pairs = [(c, r) for c, r in pairs if batch.completions[c].token_ids != batch.completions[r].token_ids]
        K = len(pairs)
        order = [c for c, _ in pairs] + [r for _, r in pairs]  # (2K,): chosen, then rejected

        # 4) + 5) + 6) log-probs, DPO loss, update; out of memory: redo with half the micro-batch (>= 1 pair)
        while True:
            try:
                self.optimizer.zero_grad(set_to_none=True)
                out, finite = dict.fromkeys(DPO_METRICS, math.nan), True
                if K:  # else every prompt tied: nothing to learn, but the ranks still meet in the all_reduce
                    ids, attn, comp, cmask = pad_rollouts([batch.flat_prompt_ids[i] for i in order],
                                                          [batch.completions[i].token_ids for i in order],
                                                          self.tokenizer.pad_token_id, self.device)  # (2K, Lp + T)
                    self.model.train()
                    k = max(1, self.micro_batch_size // 2)  # pairs per micro-batch
                    chunks = [torch.tensor(list(range(i, min(i + k, K))) + list(range(K + i, K + min(i + k, K))),
                                           device=self.device) for i in range(0, K, k)]  # rows of each micro-batch

                    # 4) the reference: the same weights, adapter off, no gradient; DPO's log-probs are
                    #    the model's own (temperature 1), as in TRL
                    with torch.no_grad(), self.model.disable_adapter():
                        ref = torch.zeros(2 * K, device=self.device)  # (2K,)
                        for rows in chunks:
                            ref[rows] = (completion_logprobs(self.model, ids[rows], attn[rows], comp[rows],
                                                             cmask[rows], 1.0) * cmask[rows]).sum(-1)

                    # 5) policy log-probs with gradient, DPO loss per pair, averaged over the step's pairs
                    loss_sum, ent_sum, kl_sum = 0.0, 0.0, 0.0
                    chosen_r, rejected_r = [], []
                    for rows in chunks:
                        logps, ent = completion_logprobs(self.model, ids[rows], attn[rows], comp[rows], cmask[rows],
                                                         1.0, return_entropy=True)  # (2b, T)
                        seq = (logps * cmask[rows]).sum(-1)  # (2b,)
                        b = len(rows) // 2
                        losses, c_r, r_r = dpo_loss(seq[:b], seq[b:], ref[rows][:b], ref[rows][b:], a.dpo_beta)  # (b,)
                        loss = losses.sum() / K
                        finite = bool(torch.isfinite(loss))
                        if not finite:
                            break
                        loss.backward()
                        loss_sum += loss.item()
                        ent_sum += float((ent * cmask[rows]).sum())
                        kl_sum += float((seq.detach() - ref[rows]).sum())
                        chosen_r.append(c_r)
                        rejected_r.append(r_r)
                if not finite:  # a NaN/inf loss would poison the adapter: this step updates nothing
                    self.skip_update()
                    break

                # 6) average over ranks, clip, AdamW step (none when the norm is inf/NaN), schedule
                grad_norm = self.optimizer_step()  # GRPOTrainer.optimizer_step: the same step 7
                out["grad_norm"] = grad_norm
                if K:
                    chosen_r, rejected_r = torch.cat(chosen_r), torch.cat(rejected_r)  # (K,)
                    tokens = float(cmask.sum())
                    out.update({
                        "loss": loss_sum,
                        "kl": kl_sum / max(tokens, 1.0),  # mean log(pi / ref) per token of the pair completions
                        "entropy": ent_sum / max(tokens, 1.0),
                        "dpo/margin": (chosen_r - rejected_r).mean().item(),
                        "dpo/chosen_reward": chosen_r.mean().item(),
                        "dpo/rejected_reward": rejected_r.mean().item(),
                        "dpo/accuracy": (chosen_r > rejected_r).float().mean().item(),
                    })
                break
            except torch.OutOfMemoryError as oom:
                self.optimizer.zero_grad(set_to_none=True)
                self.micro_batch_size = halved_micro_batch(self.micro_batch_size, oom, smallest=2)

        # 7) push the new adapter into the engine
        self.adapter = self.engine.update_adapter(self.model)
        self.step = step

        # metrics: the rollout ones every algorithm logs, then DPO's own
        m = self.step_metrics(batch, step, t0)
        total = batch.scored.total
        m.update(out)
        m["dpo/pairs"] = len(pairs)
        m["dpo/score_margin"] = (float(np.mean([total[c] - total[r] for c, r in pairs])) if pairs
                                 else float("nan"))
        if self.judge is not None:
            m["judge/no_verdict"] = no_verdict
        m["step_time"] = time.perf_counter() - t0
        roles = {c: {"dpo_role": "chosen"} for c, _ in pairs} | {r: {"dpo_role": "rejected"} for _, r in pairs}
        return StepResult(step, m, self.step_samples(batch, step, roles))

    # -- 3) pairs ------------------------------------------------------------------
    def choose_pairs(self, batch: ScoredRollouts, rng: np.random.Generator) -> tuple[list[tuple[int, int]], float]:
        """[(chosen, rejected)] as indices into `batch.completions`, and the fraction of judge
        calls that gave no verdict (then a coin decides)."""
        a = self.cfg.algorithm
        G = batch.num_generations
        groups = [list(range(p * G, (p + 1) * G)) for p in range(len(batch.rows))]
        if a.dpo_pair_rule == "random_pair":
            groups = [[int(i) for i in rng.choice(g, size=2, replace=False)] for g in groups]
        if self.judge is None:
            reward = batch.scored.total
            best = [max(g, key=lambda i: reward[i]) for g in groups]
            worst = [min(g, key=lambda i: reward[i]) for g in groups]
            return [(c, r) for c, r in zip(best, worst) if reward[c] > reward[r]], 0.0
        calls = [0, 0]  # judge calls, of which without a verdict
        if G == 2 or a.dpo_pair_rule == "random_pair":  # two candidates: one match decides the pair
            verdicts = self._judge(batch, [(g[0], g[1]) for g in groups], rng, calls)
            return [(g[v], g[1 - v]) for g, v in zip(groups, verdicts)], calls[1] / max(calls[0], 1)
        # a knockout tournament per prompt finds the best (G - 1 judge calls), another the worst
        best = self._knockout(batch, groups, rng, keep="winner", calls=calls)
        worst = self._knockout(batch, groups, rng, keep="loser", calls=calls)
        return [(c, r) for c, r in zip(best, worst) if c != r], calls[1] / max(calls[0], 1)

    def _knockout(self, batch, groups, rng, *, keep: str, calls: list[int]) -> list[int]:
        """The last one standing of each group after rounds of judged matches in which the
        winner (or the loser) goes through; all prompts' matches of a round in one judge call."""
        pools = [list(g) for g in groups]
        while any(len(pool) > 1 for pool in pools):
            matches, nxt = [], []
            for pi, pool in enumerate(pools):
                nxt.append([pool[-1]] if len(pool) % 2 else [])  # an odd one out goes through
                matches += [(pi, pool[k], pool[k + 1]) for k in range(0, len(pool) - 1, 2)]
            verdicts = self._judge(batch, [(x, y) for _, x, y in matches], rng, calls)
            for (pi, x, y), v in zip(matches, verdicts):
                winner, loser = (x, y) if v == 0 else (y, x)
                nxt[pi].append(winner if keep == "winner" else loser)
            pools = nxt
        return [pool[0] for pool in pools]

    def _judge(self, batch, matches: list[tuple[int, int]], rng, calls: list[int]) -> list[int]:
        """0 when the first of each match is better, 1 when the second; shown in random order
        (against position bias), a coin where the judge gave no verdict."""
        flat_rows = batch.flat_rows
        swap = rng.random(len(matches)) < 0.5
        shown = [(y, x) if s else (x, y) for (x, y), s in zip(matches, swap)]
        verdicts = self.judge.compare([flat_rows[x]["question"] for x, _ in shown],
                                      [batch.completions[x].text for x, _ in shown],
                                      [batch.completions[y].text for _, y in shown])
        out = []
        for v, s in zip(verdicts, swap):
            calls[0] += 1
            if v is None:
                calls[1] += 1
                v = int(rng.integers(2))
            out.append(1 - v if s else v)
        return out
