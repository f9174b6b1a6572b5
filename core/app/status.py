"""How the active (or last) run looks from outside, safe from any thread: its state, step, ETA,
errors, notes, and the config it trains with now.

Owns: the run states (`ACTIVE_STATES`, `FINAL_STATES`), the ETA (`eta_seconds`) and `RunStatus`, a
part of `RunManager` (which sets the fields it reads: the attempt count, the runs found at start-up).
Refuses to know: how the run is driven (core/app/manager.py).
"""

from __future__ import annotations

import time

from core.config import Config
from core.models.bundled import DEFAULT_MODEL_NAME


# States of a run as `status()` reports them. The first four mean "active": a second start
# is refused until the run reaches one of the last five ("interrupted": its process died, found
# at start-up; Resume continues it).
ACTIVE_STATES = ("loading", "running", "paused", "stopping")
FINAL_STATES = ("idle", "finished", "stopped", "failed", "interrupted")


def eta_seconds(step_times: list[float], step: int, max_steps: int) -> float | None:
    """The time to go: the mean of the last 10 steps' times x the steps left. The run's first step
    (or a resume's) waits for the engine's warm-up and compiles (153 s against 32-50 s after it on a
    CPU, 2026-12-07: an ETA of 18 min for a run of 7.5), so it is left out once another is timed.

    >>> eta_seconds([150.0], 1, 8), eta_seconds([150.0, 40.0, 50.0], 3, 8)
    (1050.0, 225.0)
    """
    recent = step_times[-10:] if len(step_times) < 2 else step_times[1:][-10:]
    if not recent or not max_steps:
        return None
    return sum(recent) / len(recent) * max(0, max_steps - step)


class RunStatus:
    """The run as seen from outside (see the module docstring)."""

    # -- reading ------------------------------------------------------------------
    def status(self) -> dict:
        """Where the active (or last) run stands: safe to call from any thread, any time."""
        trainer, control = self._trainer, self._control
        state = self._state
        # "paused" once the loop holds between steps; a pause pressed mid-step lets that step end
        # first (its rewards, its metrics line), and until then the run says so while running
        pausing = state == "running" and control is not None and control.paused
        if pausing and control.holding:
            state, pausing = "paused", False
        step = trainer.step if trainer is not None else self._last_step
        max_steps = self._cfg.algorithm.max_steps if self._cfg is not None else 0
        pause_reason = control.pause_reason if (control is not None and control.paused) else ""
        if pausing:
            pause_reason = f"pausing once step {step + 1} ends" + (f" ({pause_reason})" if pause_reason else "")
        error, tb = self._error, self._traceback
        if state == "paused" and trainer is not None:
            disk = trainer.run.read_status()
            tb = disk.get("traceback", "") or tb
        # a paused run has no time to go
        eta = eta_seconds(self._step_times, step, max_steps) if state == "running" else None
        # the run's own job, still in the worker's queue behind another job (a chat answer, an evaluation)
        ahead = self.worker.ahead_of(self._job) if state in ACTIVE_STATES else None
        queued = max(0, self.worker.pending() - (ahead is not None)) if state in ACTIVE_STATES else 0  # (two reads)
        end = self._ended_at or time.time()
        return {
            "state": state,
            "run_name": self._run_name,
            "step": step,
            "max_steps": max_steps,
            "eta_seconds": eta,
            "eta_first_step": eta is not None and len(self._step_times) == 1,  # from the warm-up step alone: a bound
            "tokens_per_second": self._last_metrics.get("tokens_per_second"),
            "reward": self._last_metrics.get("reward"),
            # Online DPO's last step had no pair to learn from (every prompt's completions scored alike)
            "no_pairs_step": step if self._last_metrics.get("dpo/pairs") == 0 else None,
            # a resumed run goes on from the training time its status file held (RunDir.elapsed_so_far); time held
            # in a pause is not the run's (a new user saw a run paused at step 0 "elapse" 2 minutes)
            "elapsed": self._elapsed_before + (max(0.0, end - self._started_at - (
                control.held_seconds(end) if control is not None else 0.0)) if self._started_at else 0.0),
            "error": error,
            "traceback": tb,
            "pause_reason": pause_reason,
            "note": self._note,
            "model": (self._model_cfg.name_or_path or DEFAULT_MODEL_NAME) if self._model_cfg else None,
            # answers (chat, evaluation) waiting for the worker, the run's own job not counted: behind the
            # current step while it runs; while it loads, before it (`waiting_for`) or behind its first step
            "queued": queued,
            # while the run's job waits to begin: the jobs that run first (the one on the worker, those
            # queued ahead of it); 0 once it began
            "waiting_for": 0 if ahead is None else ahead + 1,
            # no trainer yet (loading, or stopping before it had one): a Stop ends it before its first step
            "before_first_step": state in ACTIVE_STATES and trainer is None,
            "engine_note": self._engine_note,
            "signal_warning": self._signal_warning,  # kept after the run: it explains a flat curve
            "checkpoint": self._ended_checkpoint(state),  # the page says Resume continues from it
            "earlier_runs": self._earlier_runs,  # runs in the folder at start-up
            "attempt": self._attempt,  # Starts and Resumes so far (the page's messages know which they follow)
        }

    def _ended_checkpoint(self, state: str) -> str:
        """The name of an ended run's last checkpoint ("" while it runs, or where it has none), read
        from its folder once per (run, state, step): an interrupted run found at start-up, or one
        whose trainer a model change dropped, has no trainer to ask, and the page polls every 2 s."""
        if state not in FINAL_STATES or not self._run_name:
            return ""
        key = (self._run_name, state, self._last_step if self._trainer is None else self._trainer.step)
        cached = self._checkpoint_seen
        if cached is None or cached[0] != key:
            from core.runs.folders import RunDir, sanitize_run_name

            try:
                last = RunDir(self.runs_dir / sanitize_run_name(self._run_name)).latest_checkpoint()
            except (OSError, ValueError):  # unreadable or odd: the line just names no checkpoint
                last = None
            self._checkpoint_seen = cached = (key, last.name if last is not None else "")
        return cached[1]

    def run_config(self) -> Config | None:
        """A copy of the active (or last) run's config, as the run uses it now (rewards swapped on
        a resume included); None before any run. The page shows it in its form after a reload."""
        from core.runs.folders import knows_reward_code

        cfg = self._cfg
        if cfg is None:
            return None
        cfg = cfg.copy()
        if not knows_reward_code(self.runs_dir, cfg.rewards.custom_code):
            # a run folder this app did not write (found interrupted at start-up): its code is never put
            # into the form, where a Start would run it without the question Resume asks (issue 29, case 4)
            cfg.rewards.custom_code = ""
        return cfg

    def _no_signal_warning(self) -> str:
        """no_signal_warning for the active run, with whether its adapter is still exactly zero
        (read from the live model, on the worker between steps)."""
        from core.runs.adapter_change import model_change
        from core.rl.rollouts import no_signal_warning, same_answer_warning

        cfg, trainer = self._cfg, self._trainer
        if cfg is None:
            return ""
        if not no_signal_warning(self._signal):  # a signal, but maybe one answer for every question
            return same_answer_warning(self._signal)
        try:
            zero = None if trainer is None else not model_change(trainer.model)["moved"]
        except Exception:  # a diagnostic never fails a run (an unusual adapter layout: say less)
            zero = None
        return no_signal_warning(self._signal, reward_names=cfg.rewards.names,
                                 response_prefix=cfg.data.response_prefix, adapter_zero=zero)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the active run's job ends; returns its final state (for scripts and tests)."""
        job = self._job
        if job is not None:
            job.result(timeout=timeout)
        return self._state
