"""The GRPO training loop, top to bottom in one file (after nano-aha-moment).

Owns: one optimizer step of GRPO / GSPO / RLOO and the loop around it —
  1) pick this step's prompts and sample G completions each through the engine,
  2) score them with the reward functions (each function's values kept for plotting),
  3) turn rewards into group-normalised advantages,
  4) compute per-token log-probs from hidden states (the [B, T, V] logits never exist),
  5) the clipped surrogate loss for the configured loss type, optional KL to the adapter-off
     reference, backward over micro-batches,
  6) clip, AdamW step, push the new adapter into the engine,
and then the bookkeeping: metrics and samples per step, atomic checkpoints, pause / stop /
resume. The arithmetic lives in `core/rl/objectives.py`, the run folder in `core/runs/folders.py`; Online
DPO and PPO subclass this trainer with their own step (`core/rl/algorithms.py` picks the class), and
data parallel over several GPUs is a few calls into `core/rl/distributed.py` (no-ops when alone).

Refuses to know: the UI (it reports through `on_step`), tokenizer internals beyond the chat
template, how the engine samples.

    python -m scripts.train --config configs/quickstart.yaml     # headless, with a progress bar
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.runs import checkpoints
from core.rl import distributed
from core.config import Config
from core.engines.base import RolloutStopped
from core.engines.registry import backend_for, make_engine
from core.rl.objectives import LossStats, compute_advantages, policy_loss
from core.rewards.base import RewardError
from core.rl.rollouts import StepClock, apply_update, padding_trim, retry_on_oom, rollout_metrics, sample_and_score, sample_rows
from core.runs.folders import RunDir, checkpoint_step, default_run_name, free_run_name
from kernels import token_logprobs


GRPO_FAMILY = ("grpo", "gspo", "rloo")  # the other algorithms subclass GRPOTrainer: core.rl.algorithms.make_trainer


class TrainingStopped(Exception):
    """Raised inside the loop when the user asked to stop."""


# ---------------------------------------------------------------------------
# control: pause / resume / stop from another thread (the UI) between steps


class TrainerControl:
    """Pause / resume / stop from another thread. `stop_on_pause` is for headless runs (CLI,
    benchmarks): nobody is there to press Resume, so a pause (a failing reward, out of memory at
    micro-batch 1) stops the run with its checkpoint and the reason instead of waiting forever."""

    def __init__(self, stop_on_pause: bool = False):
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self.stop_requested = False
        self.stop_on_pause = stop_on_pause
        self.pause_reason = ""
        # True while the loop is held between steps: a pause asked for mid-step is not yet one
        self.holding = False

    def pause(self, reason: str = "", announce=None) -> None:
        """Pause; `announce()` (e.g. writing the status file with the traceback) runs first, under
        the same lock as `resume`: whoever sees the pause also finds its reason, and a Resume
        pressed as soon as the status says "paused" is never lost."""
        with self._lock:
            if announce is not None:
                announce()
            self.pause_reason = reason
            self._running.clear()

    def resume(self) -> None:
        with self._lock:
            self.pause_reason = ""
            self._running.set()

    def stop(self) -> None:
        self.stop_requested = True
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_if_paused(self, on_pause=None) -> None:
        if self.paused and on_pause:
            on_pause()
        self.holding = self.paused
        try:
            self._running.wait()
        finally:
            self.holding = False
        if self.stop_requested:
            raise TrainingStopped()


# ---------------------------------------------------------------------------
# log-probs from hidden states


def _decoder_and_head(model):
    """(decoder that returns hidden states, LM head weight) of a (peft-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return decoder, base.get_output_embeddings().weight


def completion_logprobs(
    model,
    input_ids: torch.Tensor,  # (B, Lp + T): left-padded prompt then right-padded completion
    attention_mask: torch.Tensor,  # (B, Lp + T)
    completion_ids: torch.Tensor,  # (B, T)
    completion_mask: torch.Tensor,  # (B, T)
    temperature: float,
    return_entropy: bool = False,
):
    """Per-token log-probs (B, T) of the completion tokens (and entropy (B, T) if asked).

    Runs the decoder only (no LM head), then the fused kernel gathers each target's log-prob
    from hidden states and the head weight chunk by chunk: peak memory is O(rows x chunk), not
    O(B x T x V) as with `model(...).logits`.
    """
    decoder, head = _decoder_and_head(model)
    # left padding: positions count real tokens only, as in generation
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).last_hidden_state  # (B, Lp + T, H)
    T = completion_ids.size(1)
    hidden = hidden[:, -T - 1:-1]  # (B, T, H): the state before each completion token predicts it
    sel = completion_mask.bool()  # only real tokens go through the head
    out = token_logprobs(hidden[sel], head, completion_ids[sel], temperature, return_entropy=return_entropy)
    logps_flat, ent_flat = out if return_entropy else (out, None)
    logps = torch.zeros(completion_ids.shape, dtype=torch.float32, device=hidden.device)
    logps = logps.masked_scatter(sel, logps_flat)  # (B, T)
    if not return_entropy:
        return logps
    ent = torch.zeros_like(logps).masked_scatter(sel, ent_flat.detach().float())
    return logps, ent


# ---------------------------------------------------------------------------
# a batch of rollouts as tensors


@dataclass
class Rollouts:
    input_ids: torch.Tensor  # (B, Lp + T)
    attention_mask: torch.Tensor  # (B, Lp + T)
    completion_ids: torch.Tensor  # (B, T)
    completion_mask: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)
    old_logps: torch.Tensor | None = None  # (B, T), when num_iterations > 1
    ref_logps: torch.Tensor | None = None  # (B, T), when beta > 0

    def slice(self, i: int, j: int) -> "Rollouts":
        """Rows [i, j), without the columns that are padding in all of them (rollouts.padding_trim)."""
        T = self.completion_ids.size(1)
        k, t = padding_trim(self.attention_mask[i:j], T)
        L = self.input_ids.size(1)

        def s(x):
            return None if x is None else x[i:j, :t]
        return Rollouts(self.input_ids[i:j, k:L - T + t], self.attention_mask[i:j, k:L - T + t], s(self.completion_ids),
                        s(self.completion_mask), self.advantages[i:j], s(self.old_logps), s(self.ref_logps))


def pad_rollouts(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                 device) -> tuple[torch.Tensor, ...]:
    """Left-pad prompts, right-pad completions: (input_ids, attention_mask, completion_ids, completion_mask)."""
    B = len(prompt_ids)
    Lp = max(len(p) for p in prompt_ids)
    T = max(1, max(len(c) for c in completion_ids))
    ids = torch.full((B, Lp + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, Lp + T), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, Lp - len(p):Lp] = torch.tensor(p, dtype=torch.long)
        attn[i, Lp - len(p):Lp] = 1
        if c:
            ids[i, Lp:Lp + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[i, Lp:Lp + len(c)] = 1
    comp = ids[:, Lp:].clone()
    cmask = attn[:, Lp:].clone()
    return ids.to(device), attn.to(device), comp.to(device), cmask.to(device)


# ---------------------------------------------------------------------------


@dataclass
class StepResult:
    step: int
    metrics: dict
    samples: list[dict] = field(default_factory=list)


class GRPOTrainer:
    """Trains a LoRA adapter with GRPO-family updates. See the module docstring for the story."""

    def __init__(self, cfg: Config, *, model=None, tokenizer=None, engine=None, task=None,
                 reward_set=None, control: TrainerControl | None = None, on_step=None,
                 device: str | None = None, run_dir: RunDir | None = None, plan=None):
        """`plan`: the run's one memory plan (`core.engines.registry.plan_for`), made by whoever
        starts the run (the app, the CLI); made here from the config when not given."""
        from core.engines.registry import make_policy_and_engine, plan_for, refuse_what_no_engine_serves
        from core.memory.planner import micro_batch_size
        from core.models.loading import default_device

        if type(self) is GRPOTrainer and cfg.algorithm.algorithm not in GRPO_FAMILY:
            raise ValueError(f"algorithm {cfg.algorithm.algorithm!r} has its own trainer: "
                             "build it with core.rl.algorithms.make_trainer(cfg, ...)")
        self.cfg = cfg
        self.device = device or default_device()
        self.control = control or TrainerControl()
        self.on_step = on_step
        # model + tokenizer (a peft model with a fresh adapter), and the engine that samples
        on_gpu = str(self.device).startswith("cuda")
        self.plan = plan
        if model is None:
            refuse_what_no_engine_serves(cfg, self.device)
            if self.plan is None and (on_gpu or backend_for(cfg, self.device) == "vllm"):
                self.plan = plan_for(cfg, self.device)
            if self.plan is not None:
                self.plan.refuse_if_too_large()  # a clear "too large" before anything is loaded
            model, tokenizer, engine = make_policy_and_engine(cfg, self.device, self.plan)
        elif self.plan is None and on_gpu and cfg.algorithm.micro_batch_size <= 0:
            try:  # a loaded model and an auto micro-batch: the plan picks it, from that model's config
                self.plan = plan_for(cfg, self.device, hf_config=model.config, count_reserved=True)
            except Exception as e:  # never worth failing a run: auto then falls back to 8
                warnings.warn(f"no memory plan for the auto micro-batch ({type(e).__name__}: {e})")
        self.model, self.tokenizer = model, tokenizer
        # data
        if task is None:
            from core.data import load_task_data

            task = load_task_data(cfg.data)
        self.task = task
        # rewards
        if reward_set is None:
            from core.rewards.registry import RewardSet

            reward_set = RewardSet.from_config(cfg.rewards)
        self.rewards = reward_set
        # engine
        self.engine = engine or make_engine("hf", self.model, self.tokenizer)  # a given model: HF sampling
        # optimizer + schedule over the adapter's parameters only
        from transformers import get_scheduler

        a = cfg.algorithm
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        distributed.broadcast_params(self.params)  # data parallel: every rank starts from rank 0's adapter
        self.optimizer = torch.optim.AdamW(self.params, lr=a.learning_rate, weight_decay=a.weight_decay)
        self.scheduler = get_scheduler(a.lr_scheduler, self.optimizer, num_warmup_steps=a.warmup_steps,
                                       num_training_steps=a.max_steps)
        self.step = 0
        # rollouts from the base with the adapter folded in (core/engines/merged_lora.py): 16/32-bit base
        self.merged_rollouts = cfg.run.merged_rollouts and not cfg.model.load_in_4bit
        self.clock, self.rollout_stats = StepClock(), {}  # where the step's time went; the last rollout's stats
        self.micro_batch_size = micro_batch_size(cfg, self.plan)
        self.ignore_eos = False  # benchmarks set it: every rollout runs to max_completion_length
        self.skipped_steps = 0
        self.adapter = None
        self.resume_notes: list[str] = []
        if run_dir is None:  # a new run: a folder of its own (rank 0 picks the name)
            name = cfg.run.run_name or default_run_name(cfg.data.source)
            if distributed.is_main():
                name = free_run_name(cfg.run.output_dir, name)
            run_dir = RunDir.create(cfg.run.output_dir, distributed.broadcast_object(name))
        self.run = distributed.run_dir_for_rank(run_dir)
        cfg.run.run_name = self.run.name
        if not self.run.config_path.exists():
            cfg.save(self.run.config_path)
        self._prompt_cache: dict[int, list[int]] = {}

    # -- data order: a seeded permutation per epoch, so any step's prompts can be recomputed
    def prompt_rows(self, step: int) -> list[dict]:
        n = len(self.task.train)
        P = self.cfg.algorithm.prompts_per_step * self.cfg.algorithm.gradient_accumulation_steps
        rows = []
        for k in range(P):
            i = step * P + k
            epoch, j = divmod(i, n)
            perm = np.random.default_rng(self.cfg.algorithm.seed + 7919 * epoch).permutation(n)
            rows.append(self.task.train[int(perm[j])])
        return distributed.shard(rows)  # data parallel: this rank's share

    def prompt_ids(self, row: dict) -> list[int]:
        from core.data import build_messages, prompt_ids

        key = id(row)
        if key not in self._prompt_cache:
            d = self.cfg.data
            self._prompt_cache[key] = prompt_ids(self.tokenizer, build_messages(row["question"], d.system_prompt),
                                                 d.chat_template, d.response_prefix,
                                                 max_length=self.cfg.algorithm.max_prompt_length)  # cut from the left
        return self._prompt_cache[key]

    # -- one step ------------------------------------------------------------------
    def train_step(self) -> StepResult:
        a = self.cfg.algorithm
        G = a.num_generations
        step = self.step + 1
        t0 = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

        # 1) + 2) sample G completions for each of this step's prompts and score them: each
        #         reward function's values, then the weighted total (core/rl/rollouts.py)
        rollouts = sample_and_score(self, step)
        completions = rollouts.completions  # (B = P * G)
        rewards = rollouts.rewards  # (B,)

        # 3) advantages, normalised within each group of G
        advantages, is_std_zero = compute_advantages(
            rewards, G, estimator="rloo" if a.algorithm == "rloo" else "grpo", scale_rewards=a.scale_rewards)

        # 4) tensors: prompt left-padded, completion right-padded
        ids, attn, comp, cmask = pad_rollouts(rollouts.flat_prompt_ids, [c.token_ids for c in completions],
                                              self.tokenizer.pad_token_id, self.device)
        if a.mask_truncated_completions:
            truncated = torch.tensor([c.truncated for c in completions], device=self.device)
            cmask = cmask * (~truncated).unsqueeze(1).long()
        batch = Rollouts(ids, attn, comp, cmask, advantages.to(self.device))
        self.model.train()
        with self.clock("logps"):
            if a.num_iterations > 1:  # pi_old for the ratio; with one pass it equals pi_theta
                batch.old_logps = self._logps_no_grad(batch)
            if a.beta > 0:  # the reference is the same weights with the adapter switched off
                with self.model.disable_adapter():
                    batch.ref_logps = self._logps_no_grad(batch)

        # 5) + 6) loss, backward over micro-batches, clip, step; mu passes over the rollouts
        for _ in range(a.num_iterations):
            loss_value, stats, entropy, grad_norm = retry_on_oom(self, self._optimize_once, batch)
        with self.clock("adapter_push"):
            self.adapter = self.engine.update_adapter(self.model)
        self.step = step

        # metrics, named as TRL logs them
        m = rollout_metrics(self, rollouts, step, t0)
        m.update({
            "frac_reward_zero_std": is_std_zero.float().mean().item(),  # by the std the advantages used
            "loss": loss_value,
            "kl": stats.kl_sum / (stats.tokens or 1.0) if a.beta > 0 else 0.0,
            "entropy": entropy,
            "grad_norm": grad_norm,
            "clip_ratio/low_mean": stats.low_clip_sum / max(stats.clip_units, 1.0),
            "clip_ratio/high_mean": stats.high_clip_sum / max(stats.clip_units, 1.0),
            "clip_ratio/region_mean": stats.region_clip_sum / max(stats.clip_units, 1.0),
        })
        extra = {i: {"advantage": float(advantages[i])} for i in range(len(completions))}
        return StepResult(step, m, sample_rows(self, rollouts, step, extra))

    @torch.no_grad()
    def _logps_no_grad(self, batch: Rollouts) -> torch.Tensor:
        out = []
        for i in range(0, batch.input_ids.size(0), self.micro_batch_size):
            mb = batch.slice(i, i + self.micro_batch_size)
            lp = completion_logprobs(self.model, mb.input_ids, mb.attention_mask, mb.completion_ids,
                                     mb.completion_mask, self.cfg.algorithm.temperature)  # (b, t <= T)
            out.append(torch.nn.functional.pad(lp, (0, batch.completion_ids.size(1) - lp.size(1))))
        return torch.cat(out)

    def _optimize_once(self, batch: Rollouts) -> tuple[float, LossStats, float, float]:
        a = self.cfg.algorithm
        B = batch.input_ids.size(0)
        mbs = self.micro_batch_size
        n_micro = math.ceil(B / mbs)
        total_tokens = float(batch.completion_mask.sum())
        total = LossStats()
        loss_sum, ent_sum = 0.0, 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for i in range(0, B, mbs):
            mb = batch.slice(i, i + mbs)
            with self.clock("forward_backward"), self._activation_context():
                logps, ent = completion_logprobs(self.model, mb.input_ids, mb.attention_mask, mb.completion_ids,
                                                 mb.completion_mask, a.temperature, return_entropy=True)  # (b, T)
                loss, st = self._micro_batch_loss(logps, mb, total_tokens, n_micro)
                if torch.isfinite(loss):
                    loss.backward()
            if not torch.isfinite(loss):
                # a NaN/inf loss would poison the adapter: skip this update, count it
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                distributed.all_reduce_grads(self.params, poison=True)  # the other ranks skip it too
                return float("nan"), total, float("nan"), float("nan")
            loss_sum += loss.item()
            ent_sum += float((ent * mb.completion_mask).sum())
            for f in ("kl_sum", "low_clip_sum", "high_clip_sum", "region_clip_sum", "tokens", "clip_units"):
                setattr(total, f, getattr(total, f) + getattr(st, f))
        grad_norm = apply_update(self)  # average over ranks, clip, AdamW, schedule
        return loss_sum, total, ent_sum / max(total.tokens, 1.0), grad_norm

    def _activation_context(self):
        if self.cfg.model.offload_activations:
            from core.models.offload import offloaded_activations

            return offloaded_activations(self.model)
        return contextlib.nullcontext()

    def _micro_batch_loss(self, logps: torch.Tensor, mb: Rollouts, total_tokens: float, n_micro: int):
        a = self.cfg.algorithm
        return policy_loss(
            logps, mb.old_logps, mb.advantages, mb.completion_mask,
            loss_type=a.loss_type,
            importance_sampling_level="sequence" if a.algorithm == "gspo" else "token",
            epsilon_low=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta,
            ref_per_token_logps=mb.ref_logps, bias_correction_kl=a.use_bias_correction_kl,
            max_completion_length=a.max_completion_length,
            num_items_in_batch=total_tokens, num_micro_batches=n_micro,
        )

    # -- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        tmp, final = self.run.new_checkpoint_dir(self.step)
        checkpoints.save_trainer_files(self, tmp)  # adapter + plain-data trainer state
        self.save_extra_state(tmp)
        return self.run.commit_checkpoint(tmp, final, {"step": self.step, "time": time.time()},
                                          keep=self.cfg.run.keep_checkpoints)

    def load_checkpoint(self, path: str | Path) -> list[str]:
        """Resume from `path` exactly (core/runs/checkpoints.py: safe loading, a config that must fit);
        returns the notes to show (an edited learning rate that now applies)."""
        ckpt = checkpoints.read_checkpoint(path)
        checkpoints.check_adapter_fits(ckpt, self.model)
        notes = checkpoints.apply_checkpoint(self, ckpt)
        self._resumed_at(ckpt)
        return notes

    def _resumed_at(self, ckpt) -> None:
        self.load_extra_state(ckpt.path)
        self.step = ckpt.step
        self.run.truncate_logs(self.step)
        self.adapter = self.engine.update_adapter(self.model)

    def save_extra_state(self, folder: Path) -> None:
        """What a subclass adds to a checkpoint folder (PPO: its value head). GRPO adds nothing."""

    def load_extra_state(self, folder: Path) -> None:
        """Read back what `save_extra_state` wrote."""

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Load `checkpoint`, or the run's newest checkpoint that reads back whole; False when
        there is none. What it had to do (skip a damaged checkpoint, apply an edited learning
        rate) is in `resume_notes`. Half-written checkpoint folders of this run are removed."""
        if distributed.is_main():
            self.run.remove_partial_checkpoints()  # this trainer is the run's only writer now
        if checkpoint:
            self.resume_notes = self.load_checkpoint(checkpoint)
            return True
        ckpt, self.resume_notes = checkpoints.load_newest_intact(self, self.run.checkpoints())
        if ckpt is None:
            return False
        self._resumed_at(ckpt)
        return True

    # -- the loop --------------------------------------------------------------------
    def train(self, max_steps: int | None = None) -> str:
        """Run until `max_steps` (default: the config's). Returns the final state:
        'finished', 'stopped' or 'failed' (the error is in status.json)."""
        max_steps = max_steps or self.cfg.algorithm.max_steps
        if self.adapter is None:
            self.adapter = self.engine.update_adapter(self.model)
        self.run.write_status("running", step=self.step, max_steps=max_steps)
        try:
            while self.step < max_steps:
                if self.control.paused and self.control.stop_on_pause:
                    raise TrainingStopped()
                if self.control.paused and self.run.read_status().get("state") != "paused":
                    self.run.write_status("paused", step=self.step, max_steps=max_steps,
                                          reason=self.control.pause_reason)
                self.control.wait_if_paused()
                self.run.write_status("running", step=self.step, max_steps=max_steps)
                try:
                    result = self.train_step()
                except RewardError as e:
                    # a broken reward function pauses the run; fix it (set `self.rewards`) and resume
                    reason, tb = f"reward '{e.reward_name}' failed: {e}", e.traceback_text
                    self.control.pause(reason, announce=lambda: self.run.write_status(
                        "paused", step=self.step, max_steps=max_steps, reason=reason, traceback=tb))
                    continue
                except torch.OutOfMemoryError:
                    # even a micro-batch of 1 did not fit: keep the run, say what to change, wait
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    reason = ("out of memory even with a micro-batch of 1: lower max_completion_length "
                              "or num_generations, turn on activation offload or 4-bit, then Resume")
                    self.control.pause(reason, announce=lambda: self.run.write_status(
                        "paused", step=self.step, max_steps=max_steps, reason=reason))
                    continue
                result.metrics = distributed.reduce_metrics(result.metrics)  # data parallel: over ranks
                self.run.append_metrics(result.metrics)
                self.run.append_samples(result.samples)
                if self.step % self.cfg.run.save_steps == 0 or self.step == max_steps:
                    self.save_checkpoint()
                if self.on_step:
                    self.on_step(result)
                if self.control.stop_requested:
                    raise TrainingStopped()
        except (TrainingStopped, RolloutStopped):  # between steps, or inside a step's rollouts
            latest = self.run.latest_checkpoint()
            if self.step and (latest is None or checkpoint_step(latest) != self.step):
                self.save_checkpoint()
            self.run.write_status("stopped", step=self.step, max_steps=max_steps,
                                  **({"reason": self.control.pause_reason} if self.control.pause_reason else {}))
            return "stopped"
        except Exception as e:  # keep the work: checkpoint what we have, then report
            tb = traceback.format_exc()
            try:
                if self.step:
                    self.save_checkpoint()
            finally:
                self.run.write_status("failed", step=self.step, max_steps=max_steps,
                                      error=f"{type(e).__name__}: {e}", traceback=tb)
            raise
        self.run.write_status("finished", step=self.step, max_steps=max_steps)
        return "finished"
