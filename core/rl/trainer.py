"""The GRPO training loop, top to bottom in one file (after nano-aha-moment).

Owns: one optimizer step of GRPO / GSPO / RLOO, read top to bottom in `GRPOTrainer.train_step` —
  1) pick this step's prompts and sample G completions each through the engine,
  2) score them with the reward functions (each function's values kept for plotting),
  3) turn rewards into group-normalised advantages,
  4) pad them into tensors, 5) old / reference log-probs from hidden states (no [B, T, V] logits),
  6) the clipped surrogate loss (+ KL to the adapter-off reference) and backward per micro-batch,
  7) clip, AdamW step, 8) push the new adapter into the engine —
what every algorithm's step shares (the start: clock, memory peaks, sampling and scoring; the
skip of a NaN/inf loss; a smaller micro-batch after out-of-memory), and the loop around it:
metrics and samples per step, atomic checkpoints, pause / stop / resume. The arithmetic lives in
`core/rl/objectives.py`, log-probs and padding in `core/rl/logprobs.py`, the run folder in
`core/runs/folders.py`; Online DPO and PPO subclass this trainer with their own step
(`core/rl/algorithms.py` picks the class), and data parallel over several GPUs is a few calls
into `core/rl/distributed.py` (no-ops when alone).

Refuses to know: the UI (it reports through `on_step`, is steered through `core/rl/control.py`),
tokenizer internals beyond the chat template, how the engine samples.

    python -m scripts.train --config configs/quickstart.yaml     # headless, with a progress bar
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.runs import checkpoints
from core.rl import distributed
from core.config import Config
from core.engines.base import RolloutStopped
from core.engines.registry import make_engine
from core.memory import ram
from core.rl.host_states import HostOptimizerStates, wanted as host_states_wanted
from core.rl.control import TrainerControl, TrainingStopped
from core.rl.logprobs import (Rollouts, completion_logprobs, logps_no_grad, pad_rollouts, pass_rows,
                             sampling_logps)
from core.rl.objectives import (LossStats, compute_advantages, is_metrics, merge_is_stats, policy_loss,
                                 sampling_is_weights)
from core.rewards.base import RewardError
from core.rl.rollouts import ScoredRollouts, StepClock, rollout_and_score, rollout_metrics, sample_rows
from core.runs.folders import RunDir, checkpoint_step, default_run_name, free_run_name


GRPO_FAMILY = ("grpo", "gspo", "rloo")  # the other algorithms subclass GRPOTrainer: core.rl.algorithms.make_trainer


# ---------------------------------------------------------------------------


def halved_micro_batch(size: int, oom: torch.OutOfMemoryError, smallest: int = 1) -> int:
    """The micro-batch to redo a pass with after it ran out of memory: half of `size`; `oom`
    raised again once `size` is `smallest` (train() then pauses the run and says what to change)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if size <= smallest:
        raise oom
    return max(smallest, size // 2)


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
            if self.plan is None and on_gpu:  # (a vLLM engine on a CPU is sized by the registry itself)
                self.plan = plan_for(cfg, self.device)
            if self.plan is not None:
                self.plan.refuse_if_too_large()  # a clear "too large" before anything is loaded
            model, tokenizer, engine = make_policy_and_engine(cfg, self.device, self.plan)
        if self.plan is None and cfg.algorithm.micro_batch_size <= 0:  # a CPU's (the CLI's), or a model given
            try:  # an auto micro-batch: the plan picks it, from the loaded model's config (on a CPU, by its RAM)
                self.plan = plan_for(cfg, self.device, hf_config=model.config, count_reserved=True, weights_loaded=True)
            except Exception as e:  # never worth failing a run: auto then falls back to 8
                warnings.warn(f"no memory plan for the auto micro-batch ({type(e).__name__}: {e})")
        if self.plan is not None and self.plan.device == "cpu":  # far past the RAM (CLI or app): refused before
            self.plan.refuse_if_too_large()  # the run's folder, not ended by the OS
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
        # lowest-memory mode on a GPU: AdamW's moments wait in pinned host memory between updates
        self.host_states = HostOptimizerStates(self.optimizer) if host_states_wanted(cfg, self.device) else None
        self.scheduler = get_scheduler(a.lr_scheduler, self.optimizer, num_warmup_steps=a.warmup_steps,
                                       num_training_steps=a.max_steps)
        self.step = 0
        # rollouts from the base with the adapter folded in (core/engines/merged_lora.py): 16/32-bit base
        self.merged_rollouts = cfg.run.merged_rollouts and not cfg.model.load_in_4bit
        # rollouts from other kernels (vLLM): TRL's importance-sampling correction, weights from the training pass
        self.sampling_is = (a.vllm_importance_sampling_correction and a.algorithm in ("grpo", "gspo")
                            and getattr(self.engine, "gives_logprobs", False))
        self.clock, self.rollout_stats = StepClock(), {}  # where the step's time went; the last rollout's stats
        self.micro_batch_size = micro_batch_size(cfg, self.plan)
        self.ignore_eos = False  # benchmarks set it: every rollout runs to max_completion_length
        self.skipped_steps = 0
        self.adapter = None
        self.resume_notes: list[str] = []
        if run_dir is None:  # a new run: a folder of its own (rank 0 picks the name)
            name = cfg.run.run_name or default_run_name(cfg.data.source, algorithm=cfg.algorithm.algorithm)
            if distributed.is_main():
                name = free_run_name(cfg.run.output_dir, name)
            run_dir = RunDir.create(cfg.run.output_dir, distributed.broadcast_object(name))
        self.run = distributed.run_dir_for_rank(run_dir)
        cfg.run.run_name = self.run.name
        if not self.run.config_path.exists():
            cfg.save(self.run.config_path)
        self._prompt_cache: dict[int, list[int]] = {}
        self._levels: list[float] | None = None  # the curriculum column's values, once

    # -- data order: a pure function of the step (core/data/order.py), so a resumed run asks the same
    def prompt_rows(self, step: int) -> list[dict]:
        from core.data.order import step_rows

        d, a = self.cfg.data, self.cfg.algorithm
        if d.curriculum_column.strip() and self._levels is None:
            from core.data.order import curriculum_levels

            self._levels = curriculum_levels(self.task.train, d.curriculum_column.strip())
        rows = step_rows(self.task.train, step, a.prompts_per_step * a.gradient_accumulation_steps, a.seed,
                         curriculum_column=d.curriculum_column.strip(), curriculum_steps=d.curriculum_steps,
                         levels=self._levels)
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

        # 1) + 2) this step's prompts (prompts_per_step x gradient_accumulation_steps), G completions
        #         each from the engine, scored by each reward function, then the weighted total
        step, t0, rollouts = self.sample_and_score()
        completions = rollouts.completions  # (B = P * G,): G consecutive per prompt

        # 3) advantages, normalised within each group of G (RLOO: against the other G - 1)
        advantages, is_std_zero = compute_advantages(rollouts.rewards, G, scale_rewards=a.scale_rewards,
                                                     estimator="rloo" if a.algorithm == "rloo" else "grpo")  # (B,)

        # 4) tensors: prompt left-padded, completion right-padded
        ids, attn, comp, cmask = pad_rollouts(rollouts.flat_prompt_ids, [c.token_ids for c in completions],
                                              self.tokenizer.pad_token_id, self.device)  # (B, Lp + T), (B, T)
        if a.mask_truncated_completions:  # DAPO: a completion cut at the length limit teaches nothing
            truncated = torch.tensor([c.truncated for c in completions], device=self.device)  # (B,)
            cmask = cmask * (~truncated).unsqueeze(1).long()
        batch = Rollouts(ids, attn, comp, cmask, advantages.to(self.device))
        if self.sampling_is:  # what the sampler (vLLM) gave the same tokens: (B, T)
            batch.sampling_logps = sampling_logps([c.logprobs for c in completions], comp.size(1), self.device)
        self.model.train()

        # 5) log-probs without gradient: pi_old and the reference
        with self.clock("logps"):
            if a.num_iterations > 1:  # pi_old for the ratio; with one pass it equals pi_theta
                batch.old_logps = self._logps_no_grad(batch)  # (B, T)
            if a.beta > 0:  # the reference is the same weights with the adapter switched off
                with self.model.disable_adapter():
                    batch.ref_logps = self._logps_no_grad(batch)  # (B, T)

        # 6) + 7) mu passes over the rollouts, each: loss and backward per micro-batch, then one update;
        #         a pass that runs out of memory is redone with half the micro-batch
        loss_settings = dict(  # how policy_loss (core/rl/objectives.py) reads this config
            loss_type=a.loss_type, importance_sampling_level="sequence" if a.algorithm == "gspo" else "token",
            epsilon_low=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta, bias_correction_kl=a.use_bias_correction_kl,
            max_completion_length=a.max_completion_length, num_items_in_batch=float(cmask.sum()))  # dapo: step's tokens
        is_settings = dict(mode=a.vllm_importance_sampling_mode, clip_min=a.vllm_importance_sampling_clip_min,
                           clip_max=a.vllm_importance_sampling_clip_max)
        done, passes = 0, []
        while done < a.num_iterations:
            try:
                passes = self.passes(batch)  # micro-batches, or whole multiples of them where the step is short
                loss_value, entropy_sum, stats, finite, is_stats = 0.0, 0.0, LossStats(), True, None
                self.optimizer.zero_grad(set_to_none=True)
                # 6) the clipped surrogate (+ beta x KL) of each micro-batch, backward: the gradients add up
                for i, j in passes:
                    mb = batch.slice(i, j)  # (b, ...) without the columns that are padding in all b rows
                    with self.clock("forward_backward"), self._activation_context():
                        logps, ent = completion_logprobs(self.model, mb.input_ids, mb.attention_mask, mb.completion_ids,
                                                         mb.completion_mask, a.temperature, return_entropy=True)  # (b, t)
                        w = None  # vLLM's rollouts: pi_old / pi_sampler, pi_old from this very pass when mu = 1
                        if mb.sampling_logps is not None:
                            w, ist = sampling_is_weights(logps.detach() if mb.old_logps is None else mb.old_logps,
                                                         mb.sampling_logps, mb.completion_mask, **is_settings)
                            is_stats = merge_is_stats(is_stats, ist)
                        loss, st = policy_loss(logps, mb.old_logps, mb.advantages, mb.completion_mask,
                                               ref_per_token_logps=mb.ref_logps, num_micro_batches=len(passes),
                                               sampling_weights=w, **loss_settings)  # summed: the step's loss
                        finite = bool(torch.isfinite(loss))
                        if finite:
                            loss.backward()
                    if not finite:
                        break
                    loss_value += loss.item()
                    entropy_sum += float((ent * mb.completion_mask).sum())
                    stats = stats + st
                if finite:
                    # 7) average over ranks, clip, AdamW step (none when the norm is inf/NaN), schedule
                    grad_norm = self.optimizer_step()  # (below: every algorithm's step 7)
                    entropy = entropy_sum / max(stats.tokens, 1.0)
                else:  # a NaN/inf loss would poison the adapter: this pass updates nothing
                    self.skip_update()
                    loss_value = entropy = grad_norm = math.nan
                done += 1
            except torch.OutOfMemoryError as oom:
                self.optimizer.zero_grad(set_to_none=True)
                self.micro_batch_size = halved_micro_batch(self.micro_batch_size, oom)

        # 8) push the new adapter into the engine
        with self.clock("adapter_push"):
            self.adapter = self.engine.update_adapter(self.model)
        self.step = step

        # metrics, named as TRL logs them
        m = self.step_metrics(rollouts, step, t0)
        m.update({
            "frac_reward_zero_std": is_std_zero.float().mean().item(),  # by the std the advantages used
            "loss": loss_value,
            "kl": stats.kl_sum / (stats.tokens or 1.0) if a.beta > 0 else 0.0,
            "entropy": entropy,
            "grad_norm": grad_norm,
            "clip_ratio/low_mean": stats.low_clip_sum / max(stats.clip_units, 1.0),
            "clip_ratio/high_mean": stats.high_clip_sum / max(stats.clip_units, 1.0),
            "clip_ratio/region_mean": stats.region_clip_sum / max(stats.clip_units, 1.0),
            "train/passes": float(len(passes)),  # forward/backward passes of the last update (GRPOTrainer.passes)
            **is_metrics(is_stats),  # sampling/*: the vLLM correction, under TRL's names
        })
        extra = {i: {"advantage": float(advantages[i])} for i in range(len(completions))}
        return StepResult(step, m, self.step_samples(rollouts, step, extra))

    # -- what every algorithm's step shares ---------------------------------------------
    def sample_and_score(self) -> tuple[int, float, ScoredRollouts]:
        """Steps 1) and 2) of every algorithm: a fresh clock and memory peaks, then this step's
        prompts sampled G times each through the engine and scored (core/rl/rollouts.py).
        Returns (the step's number, when it started, the scored rollouts)."""
        step, t0 = self.step + 1, time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.clock = StepClock()  # a step starts with its rollouts
        ram.reset_peak()  # so `peak_ram_gb` is this step's own peak (the process's RAM)
        rows = self.prompt_rows(step - 1)
        prompt_ids = [self.prompt_ids(r) for r in rows]  # (P, Lp_i)
        if self.adapter is None:  # train_step() called without train(): push the adapter first
            with self.clock("adapter_push"):
                self.adapter = self.engine.update_adapter(self.model)
        rollouts, self.rollout_stats = rollout_and_score(
            self.engine, self.rewards, self.cfg, rows, prompt_ids, step=step, adapter=self.adapter, model=self.model,
            merged=self.merged_rollouts, ignore_eos=self.ignore_eos, clock=self.clock, logprobs=self.sampling_is,
            should_stop=lambda: self.control.stop_requested)  # Stop ends a large step between batches
        return step, t0, rollouts

    def optimizer_step(self) -> float:
        """Step 7 of every algorithm, after its backward passes: the mean gradient over ranks,
        clipped to max_grad_norm, one AdamW step (none when the norm is inf/NaN: counted in
        skipped_steps), the schedule's step, gradients zeroed. Returns the gradient norm."""
        a = self.cfg.algorithm
        with self.clock("optimizer"):
            distributed.all_reduce_grads(self.params)  # data parallel: the mean gradient on every rank
            max_norm = a.max_grad_norm if a.max_grad_norm > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            if math.isfinite(grad_norm):
                try:
                    with self.host_states.on_device() if self.host_states else contextlib.nullcontext():
                        self.optimizer.step()
                except torch.OutOfMemoryError:
                    # never retried with the pass (its handler halves the micro-batch and runs it again): AdamW
                    # updates in place, so a retry would apply what it already wrote twice; counted as skipped
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    warnings.warn("out of memory in the optimizer update: this update was skipped (or left "
                                  "partial), never redone")
                    self.skipped_steps += 1
            else:
                self.skipped_steps += 1
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def skip_update(self) -> None:
        """A pass whose loss is NaN/inf: drop its gradients, count it in `skipped_steps`, and send
        NaN to the other ranks so they skip the same update (data parallel)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        distributed.all_reduce_grads(self.params, poison=True)

    def step_metrics(self, rollouts: ScoredRollouts, step: int, t0: float) -> dict:
        """The metrics every algorithm logs for a step (rollouts, time, memory, this trainer's state)."""
        return rollout_metrics(rollouts, step, t0, clock=self.clock, rollout_stats=self.rollout_stats,
                               learning_rate=self.scheduler.get_last_lr()[0], skipped_steps=self.skipped_steps,
                               micro_batch_size=self.micro_batch_size)

    def step_samples(self, rollouts: ScoredRollouts, step: int, extra: dict[int, dict] | None = None) -> list[dict]:
        """A few of the step's completions for the samples table (`extra[i]`: fields for completion i)."""
        return sample_rows(rollouts, step, count=self.cfg.run.log_samples,
                           response_prefix=self.cfg.data.response_prefix, extra=extra)

    def passes(self, batch: Rollouts) -> list[tuple[int, int]]:
        """Rows [i, j) of each forward/backward pass over a step's rollouts (`core.rl.logprobs.pass_rows`:
        the micro-batch, or whole multiples of it where this step's sequences are short)."""
        a = self.cfg.algorithm
        return pass_rows(batch, self.micro_batch_size, a.max_prompt_length + a.max_completion_length,
                         grow=a.loss_type != "bnpo")

    def _logps_no_grad(self, batch: Rollouts) -> torch.Tensor:
        return logps_no_grad(self.model, batch, self.passes(batch), self.cfg.algorithm.temperature)  # (B, T)

    def _activation_context(self):
        if self.cfg.model.offload_activations:
            from core.models.offload import offloaded_activations

            return offloaded_activations(self.model)
        return contextlib.nullcontext()

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
        return self._resumed_at(ckpt)

    def _resumed_at(self, ckpt) -> list[str]:
        """Adapter, optimizer, schedule, RNG and counters from `ckpt` (read and checked by
        core/runs/checkpoints.py); the notes to show (an edited learning rate that now applies)."""
        from peft.utils import set_peft_model_state_dict

        state = ckpt.state
        set_peft_model_state_dict(self.model, ckpt.adapter)
        self.optimizer.load_state_dict(state["optimizer"])  # (its moments land on the GPU: back to the host)
        if self.host_states is not None:
            self.host_states.to_host()
        self.scheduler.load_state_dict(state["scheduler"])
        checkpoints.restore_rng(state["rng"])
        self.micro_batch_size = state.get("micro_batch_size", self.micro_batch_size)
        self.skipped_steps = state.get("skipped_steps", 0)
        notes = checkpoints.edited_optimizer_settings(self.optimizer, self.scheduler, self.cfg.algorithm, ckpt.step)
        self.load_extra_state(ckpt.path)
        self.step = ckpt.step
        self.run.truncate_logs(self.step)
        self.adapter = self.engine.update_adapter(self.model)
        return notes

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
        ckpt, skipped = checkpoints.newest_intact(self.run.checkpoints(), self.model)
        if ckpt is None:
            return False
        self.resume_notes = skipped + self._resumed_at(ckpt)
        return True

    def use_rewards(self, reward_set, rewards_cfg) -> None:
        """Score with `reward_set` (built from `rewards_cfg`) from the next step on, and say so in the
        run's config.yaml; the old set's worker process ends. Called between steps (a paused run)."""
        old, self.rewards = self.rewards, reward_set
        self.cfg.rewards = dataclasses.replace(rewards_cfg)
        self.cfg.save(self.run.config_path)
        if hasattr(old, "close"):
            old.close()

    # -- the loop --------------------------------------------------------------------
    def train(self, max_steps: int | None = None) -> str:
        """Run to `max_steps` (default: the config's): 'finished', 'stopped' or 'failed' (its error in status.json)."""
        max_steps = max_steps or self.cfg.algorithm.max_steps
        self.run.start_clock(self.control.held_seconds, resumed=self.step > 0)  # "elapsed" in each status
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
