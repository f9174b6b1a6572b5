"""What every algorithm's step shares: rollouts sampled and scored, the step's clock, the metrics.

Owns: sampling G completions per prompt through the engine and scoring them with the reward
functions (`rollout_and_score`; folded into the base weights when `merged`), the clock that says
where a step's time goes (`StepClock`, logged as `time/<phase>`), and the metrics and samples
every run logs under TRL's names (`rollout_metrics`, `sample_rows`), so the plots read every
algorithm the same way. Every function here takes what it needs and returns values: none holds
or changes a trainer.

Refuses to know: any algorithm's advantages, loss or update (`core/rl/objectives.py` and each
trainer's step), the trainer's state.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from core.rl import distributed
from core.memory import ram
from core.engines.base import Completion, SamplingSettings, stop_texts
from core.rewards.registry import RewardResult


# ---------------------------------------------------------------------------
# where a step's time goes


class StepClock:
    """Wall seconds per phase of one step, logged as `time/<phase>`: rollout (and inside it fold,
    sample, unfold), scoring, logps (pi_old / reference), forward_backward, optimizer,
    adapter_push; `time/other` is the rest of the step. On a GPU each phase starts and ends with
    a synchronize, so its kernels count in it (the step already waits at each micro-batch's
    loss.item(), so this costs next to nothing)."""

    PARTS = ("fold", "sample", "unfold")  # of the rollout, from the engine's rollout_stats

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        _sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.seconds[phase] += time.perf_counter() - t0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def metrics(self, step_seconds: float) -> dict:
        m = {f"time/{k}": v for k, v in self.seconds.items()}
        top = sum(v for k, v in self.seconds.items() if k not in self.PARTS)
        m["time/other"] = max(0.0, step_seconds - top)
        return m


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------
# sampling and scoring one step's rollouts


@dataclass
class ScoredRollouts:
    """A step's prompts, their G completions each (grouped: G consecutive per prompt), and rewards."""

    rows: list[dict]  # (P,) this rank's prompts
    prompt_ids: list[list[int]]  # (P, Lp_i)
    completions: list[Completion]  # (B = P * G,)
    scored: RewardResult  # total and per function, one value per completion
    num_generations: int
    generation_time: float

    @property
    def rewards(self) -> torch.Tensor:
        return torch.tensor(self.scored.total, dtype=torch.float32)  # (B,)

    @property
    def flat_rows(self) -> list[dict]:
        return [r for r in self.rows for _ in range(self.num_generations)]

    @property
    def flat_prompt_ids(self) -> list[list[int]]:
        return [p for p in self.prompt_ids for _ in range(self.num_generations)]


def rollout_and_score(engine, rewards, cfg, rows: list[dict], prompt_ids: list[list[int]], *, step: int, adapter,
                      model, merged: bool, ignore_eos: bool, should_stop, clock: StepClock,
                      logprobs: bool = False) -> tuple[ScoredRollouts, dict]:
    """1) sample G completions for each of `rows` (tokenised: `prompt_ids`) through `engine` with
    `adapter` (with the sampler's log-probs of each token when `logprobs`), 2) score them with
    `rewards`. The time goes to `clock` (rollout and its fold /
    sample / unfold parts, scoring). Returns the scored rollouts and the engine's rollout stats."""
    from core.data import build_messages

    a = cfg.algorithm
    G = a.num_generations
    t0 = time.perf_counter()
    with clock("rollout"):  # restore the engine's memory, [fold,] sample, [unfold,] release it
        groups = engine.rollout(
            prompt_ids,
            SamplingSettings(n=G, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_completion_length,
                             seed=a.seed * 100_003 + step + 1_000_003 * distributed.rank(), ignore_eos=ignore_eos,
                             stop=stop_texts(cfg.data.stop_at), logprobs=logprobs),
            adapter, model=model, merged=merged,
            should_stop=should_stop,  # Stop ends a large step between batches
        )  # (P, G)
    t_gen = time.perf_counter() - t0
    rollout_stats = dict(getattr(engine, "rollout_stats", None) or {})
    for part in StepClock.PARTS:
        if f"{part}_s" in rollout_stats:
            clock.add(part, rollout_stats[f"{part}_s"])
    completions = [c for g in groups for c in g]  # (B,)
    flat_rows = [r for r in rows for _ in range(G)]
    prompts_msgs = [build_messages(r["question"], cfg.data.system_prompt) for r in flat_rows]
    prefix = cfg.data.response_prefix  # the answer starts with it (in the prompt), so rewards see it
    completions_msgs = [[{"role": "assistant", "content": prefix + c.text}] for c in completions]
    columns = {k: [r.get(k) for r in flat_rows] for k in flat_rows[0] if k != "prompt"}
    columns["completion_ids"] = [c.token_ids for c in completions]  # as TRL passes it
    with clock("scoring"):
        scored = rewards(prompts_msgs, completions_msgs, columns)
    return ScoredRollouts(rows, prompt_ids, completions, scored, G, t_gen), rollout_stats


# ---------------------------------------------------------------------------
# metrics every algorithm logs


NO_SIGNAL_STEPS = 10  # steps in a row with no group of differing rewards before the run says so
FORMAT_REWARDS = ("format_strict", "format_soft", "xml_tag_count")  # pay for the <think>/<answer> tags
PARTIAL_CREDIT = ("format_soft", "xml_tag_count")  # pay something for a near miss


def no_signal_warning(history: list[dict], *, reward_names=(), response_prefix: str = "",
                      adapter_zero: bool | None = None) -> str:
    """What to tell the user when the last NO_SIGNAL_STEPS steps each had every group's
    completions scored alike (`frac_reward_zero_std` 1.0): GRPO's advantages are then zero and
    the adapter does not move. Names what is actually missing, from the steps' own metrics
    (`history`: one metrics dict per step, `rewards/<name>/mean` per reward): the rewards that
    never paid, an answer format that never matched (and the prefix, when none is set), and a
    partial-credit reward only when it is not already selected. "" while there is signal.

    >>> flat = [{"frac_reward_zero_std": 1.0, "rewards/correctness/mean": 0.0,
    ...          "rewards/format_soft/mean": 0.0}] * 10
    >>> w = no_signal_warning(flat, reward_names=["format_soft", "correctness"], adapter_zero=True)
    >>> w[:21], "format_soft" in w.split("To fix:")[-1], "never matched" in w, "exactly zero" in w
    ('Nothing to learn from', False, True, True)
    >>> no_signal_warning(flat[:9])
    ''
    >>> no_signal_warning(flat[:9] + [{"frac_reward_zero_std": 0.5}])
    ''
    """
    recent = history[-NO_SIGNAL_STEPS:]
    if len(recent) < NO_SIGNAL_STEPS or min(m.get("frac_reward_zero_std", 0.0) for m in recent) < 1.0:
        return ""
    names = list(reward_names)
    means = {n: [m.get(f"rewards/{n}/mean") for m in recent] for n in names}
    never = [n for n, v in means.items() if v and all(x == 0.0 for x in v)]
    flat_paid = [n for n, v in means.items() if v and None not in v and n not in never and max(v) == min(v)]
    parts = [f"Nothing to learn from: in each of the last {NO_SIGNAL_STEPS} steps every prompt's completions got "
             "the same reward, so the advantages are zero and the model does not change"]
    if adapter_zero:
        parts[0] += " (the adapter is still exactly zero: the tuned model is the base)"
    parts[0] += "."
    if never:
        parts.append(f"{', '.join(never)} paid 0 to every completion.")
    if flat_paid:
        parts.append(f"{', '.join(flat_paid)} paid every completion the same.")
    advice = []
    formats = [n for n in names if n in FORMAT_REWARDS]
    if formats and all(n in never for n in formats):
        fix = "the answer format never matched: a small model rarely writes the tags on its own; put one worked " \
              "example in the system prompt"
        fix += " and set the answer prefix to <think> (Data tab)" if not response_prefix.strip() else ""
        advice.append(fix)
    missing = [n for n in PARTIAL_CREDIT if n not in names]
    if missing:
        advice.append(f"add a reward that gives partial credit ({' or '.join(missing)})")
    advice.append("sample more completions per prompt, raise the temperature, or pick an easier task")
    parts.append("To fix: " + "; ".join(advice) + ".")
    return " ".join(parts)


SAME_ANSWER_STEPS, SAME_ANSWER_SHARE = 3, 0.75  # one answer to most questions, steps in a row


def same_answer_share(rows: list[dict], completions: list[Completion]) -> float:
    """The share of a step's completions that give its most common wrong answer (`<answer>`
    content that is not their own question's answer), when the step's questions have at least
    two different right answers; else nan (one answer could then be right for all). High: the
    model answers alike whatever it is asked. Right answers never count, so a model that is
    always right on yes/no questions scores 0. On several GPUs each rank counts its own prompts
    (`reduce_metrics` averages the ranks' figures; a rank with one question gives nan).

    >>> c = lambda t: Completion(token_ids=[1], text=t, finish_reason="stop")
    >>> rows = [{"answer": "9.9"}, {"answer": "4.7"}]  # G = 2: completions 0-1 for row 0, 2-3 for row 1
    >>> same_answer_share(rows, [c("<answer>5</answer>")] * 3 + [c("<answer>4.7</answer>")])
    0.75
    >>> same_answer_share([{"answer": "yes"}, {"answer": "no"}], [c("<answer>yes</answer>")] * 2 + [c("<answer>no</answer>")] * 2)
    0.0
    >>> math.isnan(same_answer_share([{"answer": "5"}] * 2, [c("<answer>5</answer>")] * 4))
    True
    """
    from reward_presets._common import extract_answer, normalize_answer

    if len({str(r.get("answer")) for r in rows}) < 2 or not completions or len(completions) % len(rows):
        return math.nan
    per_row = len(completions) // len(rows)
    counts: dict[str, int] = defaultdict(int)
    for i, c in enumerate(completions):
        a = extract_answer(c.text)
        if a is not None and normalize_answer(a) != normalize_answer(str(rows[i // per_row].get("answer"))):
            counts[normalize_answer(a)] += 1
    return max(counts.values(), default=0) / len(completions)


def same_answer_warning(history: list[dict]) -> str:
    """What to tell the user when the last SAME_ANSWER_STEPS steps each gave one answer in most
    completions (`completions/same_answer_share` >= SAME_ANSWER_SHARE) to questions whose right
    answers differ: a reward pays for an answer whatever the question. "" otherwise.

    2026-12-06, the CPU defaults at seed 42: after 20 steps the model answered the system prompt's
    worked example ("<answer>5</answer>") to 95% of held-out questions: the format rewards paid
    1.0 for it (bench/results/default_search.md).

    >>> same_answer_warning([{"completions/same_answer_share": 0.875}] * 3)[:38]
    'The model gives one answer to most que'
    >>> same_answer_warning([{"completions/same_answer_share": 0.5}] * 3)
    ''
    """
    recent = [m.get("completions/same_answer_share", math.nan) for m in history[-SAME_ANSWER_STEPS:]]
    if len(recent) < SAME_ANSWER_STEPS or not all(v >= SAME_ANSWER_SHARE for v in recent):  # nan: False
        return ""
    return (f"The model gives one answer to most questions ({recent[-1]:.0%} of the last step's completions), "
            "though their right answers differ: a reward pays for that answer whatever the question, often "
            "the format rewards for a copy of the system prompt's worked example. To fix: lower the format "
            "rewards' weights (Rewards tab), or show a worked example of this task on a question it does not "
            "ask (Data tab), and start again from a checkpoint before it began.")


def rollout_metrics(batch: ScoredRollouts, step: int, t0: float, *, clock: StepClock, rollout_stats: dict,
                    learning_rate: float, skipped_steps: int, micro_batch_size: int) -> dict:
    """The rollout half of a step's metrics, under the names GRPO logs (the plots read these);
    `t0`: when the step started."""
    from reward_presets.reflection_bonus import count_reflections

    rewards = batch.rewards
    G = batch.num_generations
    lengths = torch.tensor([len(c.token_ids) for c in batch.completions], dtype=torch.float32)
    group_std = rewards.view(-1, G).std(dim=1)  # (P,)
    zero_std = torch.isclose(group_std, torch.zeros_like(group_std))
    m = {
        "step": step,
        "reward": rewards.mean().item(),
        "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "frac_reward_zero_std": zero_std.float().mean().item(),
        "completions/mean_length": lengths.mean().item(),
        "completions/min_length": lengths.min().item(),
        "completions/max_length": lengths.max().item(),
        "completions/clipped_ratio": float(np.mean([c.truncated for c in batch.completions])),
        "completions/same_answer_share": same_answer_share(batch.rows, batch.completions),
        "learning_rate": learning_rate,
        "reflections_per_completion": float(np.mean([count_reflections(c.text) for c in batch.completions])),
        "tokens_per_second": float(lengths.sum().item() / max(batch.generation_time, 1e-9)),
        "generation_time": batch.generation_time,
        "step_time": time.perf_counter() - t0,
        "peak_memory_gb": (torch.cuda.max_memory_allocated() / 2**30) if torch.cuda.is_available() else 0.0,
        "peak_ram_gb": (ram.peak_bytes() or 0) / 2**30,  # the process's resident memory at its peak
        "skipped_steps": skipped_steps,
        "micro_batch_size": micro_batch_size,
    }
    m.update(clock.metrics(m["step_time"]))
    stats = rollout_stats
    if stats:
        m["rollout/merged"] = float(bool(stats.get("merged")))
        if stats.get("merged"):
            m["rollout/kept_share"] = float(stats.get("kept_share", 0.0))  # elements the fold kept aside
            # how much of the fold ran in the fused kernels (kernels/lora_fold_triton.py; GPU, bf16/fp16)
            m["rollout/fused_share"] = stats.get("fused_layers", 0) / max(1, stats.get("folded_layers", 1))
        for part in ("kv_map", "kv_release"):  # vLLM: the KV cache mapped back before sampling, freed after
            if f"{part}_s" in stats:
                m[f"rollout/{part}_s"] = float(stats[f"{part}_s"])
    correct = correct_mask(batch.scored.per_reward)
    if correct is not None:  # the aha panel: does thinking longer pay? (nan: none of that kind this step)
        m["completions/mean_length_correct"] = lengths[correct].mean().item() if correct.any() else math.nan
        m["completions/mean_length_incorrect"] = lengths[~correct].mean().item() if (~correct).any() else math.nan
    for name, values in batch.scored.per_reward.items():
        v = torch.tensor(values, dtype=torch.float32)
        m[f"rewards/{name}/mean"] = v.mean().item()
        m[f"rewards/{name}/std"] = v.std().item() if len(v) > 1 else 0.0
    return m


# the rewards that say whether an answer is right, the first one a run uses deciding
CORRECTNESS_REWARDS = ("correctness", "countdown_equation", "math_equivalence", "numeric_match", "exact_match")


def correct_mask(per_reward: dict[str, list[float]]) -> torch.Tensor | None:
    """(B,) bool: the completion's correctness reward is at least 1; None when no reward says.

    >>> correct_mask({"format_strict": [1.0, 1.0], "correctness": [0.0, 1.0]}).tolist()
    [False, True]
    """
    name = next((n for n in CORRECTNESS_REWARDS if n in per_reward), None)
    return None if name is None else torch.tensor(per_reward[name], dtype=torch.float32) >= 1.0


def sample_rows(batch: ScoredRollouts, step: int, *, count: int, response_prefix: str,
                extra: dict[int, dict] | None = None) -> list[dict]:
    """`count` completions for the samples table, spread over the groups, shown after the
    `response_prefix` they continue; `extra[i]` adds fields to completion i."""
    n = len(batch.completions)
    k = min(count, n)
    flat_rows = batch.flat_rows
    out = []
    for idx in range(0, n, max(1, n // max(k, 1)))[:k]:
        out.append({
            "step": step,
            "question": flat_rows[idx]["question"],
            "answer": flat_rows[idx].get("answer"),
            "completion": response_prefix + batch.completions[idx].text,
            "reward": batch.scored.total[idx],
            "rewards": {name: v[idx] for name, v in batch.scored.per_reward.items()},
            **((extra or {}).get(idx, {})),
        })
    return out
