"""The run manager: one model, one worker thread, at most one active run, for the whole process.

Owns: a run's life — start (config, data and rewards checked before any model work), pause,
resume (a paused run, or a stopped one from its checkpoint, its reward code trusted first), stop,
shutdown on SIGTERM — and the active trainer and its control. State lives here, not in the browser:
closing the tab never stops a run, and a reloaded page re-attaches by reading `status()` and
`metrics()`. `RunManager` is made of one part per job, each in its own file of core/app/:
the loaded model and engine (loaded.py), the run library (library.py), chat / evaluation / reward
trials (playground.py), exports (exports.py), the status (status.py); every model call runs on
the one worker thread (worker.py); messages and `ManagerError` (messages.py).

Training is one long job on the worker; between steps (the trainer's `on_step`) and while a run
is paused, the worker runs whatever jobs are waiting, so a chat request is answered after at most
one training step, never dropped.

Refuses to know: gradio (the UI calls these methods and shows what they return or raise), the
RL step (`core.rl`), how rewards or data are read (`core.rewards`, `core.data`).
Every error meant for a person is an `AhaError` (here `ManagerError`) whose message says what to do.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from core.errors import user_message
from core.runs.access import PathPolicy
from core.config import Config, ConfigError, ModelConfig, RewardsConfig, cpu_defaults
from core.app.loaded import LoadedModel, model_key_safe, read_hf_config
from core.app.library import RunLibrary
from core.app.playground import Playground
from core.app.exports import Exports
from core.app.status import ACTIVE_STATES, RunStatus
from core.app.worker import ModelWorker, worker_control
from core.app.messages import ManagerError, reward_message


class StartCalledOff(ManagerError):
    """Stop was pressed before the run's first step: it ended as "stopped" with nothing trained."""

    message = "Stopped before the first step, as asked: nothing was trained"
    none, kept = " and no run folder was written.", "; the run's folder is as it was (Resume continues it)."
    removed = " and its new run folder was removed."


class RunManager(LoadedModel, RunLibrary, Playground, Exports, RunStatus):
    """The one owner of the model and the active run. See the module docstring."""

    def __init__(self, runs_dir: str | Path = "runs", model_cfg: ModelConfig | None = None,
                 device: str | None = None, engine: str = "auto", data_dirs: list[str | Path] | tuple = (),
                 uploads_quota_mb: float | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.default_model = model_cfg or ModelConfig()
        self.default_engine = engine  # run.engine of the default config (preload, chat, the form)
        # the paths a request may name: runs, uploads, the operator's data roots (core/runs/access.py)
        self.paths = PathPolicy(self.runs_dir, data_dirs, models=[self.default_model.name_or_path],
                                uploads_quota_mb=uploads_quota_mb)
        self.worker = ModelWorker()
        self._lock = threading.RLock()
        self._device = device
        # touched on the worker thread only
        self._model = None  # a peft model; its "default" adapter is the one being trained
        self._tokenizer = None
        self._engine = None
        self._model_key: tuple | None = None
        self._model_cfg: ModelConfig | None = None
        self._n_params: int | None = None
        self._hf_config: dict = {}
        self._adapters: dict[str, Any] = {}  # checkpoint path -> AdapterRef loaded in the engine
        self._engine_note = ""  # why the engine was last rebuilt (shown in the status)
        self._tokenizers: dict[str, Any] = {}  # path -> tokenizer, for previews before a load
        # the run
        self._state = "idle"
        # Start, and Resume, each count one: the page tells a status read after them from one read before
        self._attempt = 0
        self._earlier_runs = 0  # runs in the runs folder at start-up (`_offer_interrupted`)
        self._starting = False
        self._trainer = None
        self._control = None
        self._job: concurrent.futures.Future | None = None
        self._cfg: Config | None = None  # the active (or last) run's config
        self._task = None
        self._run_name: str | None = None
        self._error = ""
        self._traceback = ""
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._elapsed_before = 0.0  # a resumed run's training time before this session of it
        self._step_times: list[float] = []
        self._last_step = 0
        self._last_metrics: dict = {}
        self._signal: list[dict] = []  # per step of the active run: frac_reward_zero_std, rewards/<name>/mean
        self._signal_warning = ""  # what no_signal_warning said after the last step
        self._note = ""  # what a resume had to do (an older checkpoint, a changed learning rate)
        self._checkpoint_seen = None  # ((run, state, step), its last checkpoint's name): core/app/status.py
        self._offer_interrupted()

    # -- properties --------------------------------------------------------------
    @property
    def device(self) -> str:
        if self._device is None:
            from core.models.loading import default_device

            self._device = default_device()
        return self._device

    @property
    def has_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def default_config(self) -> Config:
        """A fresh config with this manager's default model and runs folder; without a GPU, the
        settings a CPU finishes in minutes (`config.cpu_defaults`)."""
        cfg = Config() if self.has_gpu else cpu_defaults()
        cfg.model = dataclasses.replace(self.default_model, lora_target_modules=list(
            self.default_model.lora_target_modules))
        cfg.run.output_dir = str(self.runs_dir)
        cfg.run.engine = self.default_engine
        return cfg

    def is_active(self) -> bool:
        return self._starting or self._state in ACTIVE_STATES


    # -- starting a run ---------------------------------------------------------------
    def start(self, cfg: Config) -> str:
        """Validate, load data and rewards, then train on the worker; returns the run's name.

        Raises ManagerError (and starts nothing) for a bad config, data or reward, a model that
        does not load, or while another run is active.
        """
        with self._lock:
            if self._starting:  # another client's Start (or Resume) is loading data and the model
                raise ManagerError("another Start is being prepared right now: wait for it, then follow "
                                   "that run on the Train tab (or stop it to start yours)")
            if self.is_active():
                raise ManagerError(
                    f"run '{self._run_name or '...'}' is {self._state}: stop it (or wait for it to finish) "
                    "before starting another")
            self._starting = True
        try:
            return self._start(cfg, run_dir=None)
        finally:
            self._starting = False

    def _start(self, cfg: Config, run_dir) -> str:
        from core.data import DataError, load_task_data
        from core.rewards.base import RewardError
        from core.rewards.registry import RewardSet
        from core.runs.folders import RunDir, sanitize_run_name

        # 1) the config: every field in range (a copy, so the caller's object is left alone)
        try:
            cfg = Config.from_dict(cfg.to_dict())
        except ConfigError as e:
            raise ManagerError(f"config: {e}") from e
        if run_dir is None:
            cfg.run.output_dir = str(self.runs_dir)
            if cfg.run.run_name:
                name = sanitize_run_name(cfg.run.run_name)
                if RunDir(self.runs_dir / name).config_path.exists():
                    raise ManagerError(f"a run named '{name}' exists already: pick another name or leave it empty")
        if cfg.model.load_in_4bit and not self.has_gpu:
            raise ManagerError("4-bit (QLoRA) needs a CUDA GPU; switch it off on this machine")
        from core.memory.planner import step_size_refusal
        from core.memory.ram import available_bytes

        too_large = step_size_refusal(cfg, on_gpu=self.has_gpu, available_bytes=available_bytes())
        if too_large:
            raise ManagerError(f"this run cannot start: {too_large}")
        self._check_paths(cfg.data, cfg.model)  # a request's config, or a resumed run folder's
        self._refuse_what_no_engine_serves(cfg)
        # 2) data and rewards before any model work: bad input gives a message, not a crash
        try:
            task = load_task_data(cfg.data)
        except DataError as e:
            raise ManagerError(f"data: {e}") from e
        if run_dir is None:  # code typed into this app: resuming its run later asks nothing
            from core.runs.folders import remember_reward_code

            remember_reward_code(self.runs_dir, cfg.rewards.custom_code)
        try:
            rewards = RewardSet.from_config(cfg.rewards)
        except RewardError as e:
            raise ManagerError(reward_message(e)) from e
        # 3) the model, a fresh adapter and the trainer, on the worker; then training there too
        from core.engines.registry import backend_for

        ready: concurrent.futures.Future = concurrent.futures.Future()
        control = worker_control(self.worker)
        with self._lock:
            self._state, self._error, self._traceback = "loading", "", ""
            self._attempt += 1
            self._note = " ".join(task.notes + rewards.notes + (  # said once, in the status: a small task's
                # size, a custom reward that replaced a preset
                ["The layers are compiled (model.compile_layers): the first step waits for it, tens of seconds."]
                if cfg.model.compile_layers else []) + (
                ["vLLM samples from its own fp8 copy of the base (run.vllm_weights_dtype): rollouts, chat and "
                 "evaluation; the trainer keeps the base in full precision and sends the tuned weights each step."
                 + (" Its probabilities differ from the trainer's a little on every token: a per-sequence correction "
                    f"({cfg.algorithm.vllm_importance_sampling_mode}) can leave long completions out of the loss; "
                    "token_truncate keeps them." if cfg.algorithm.vllm_importance_sampling_mode.startswith("sequence")
                    else "")]
                if cfg.run.vllm_weights_dtype == "fp8" and backend_for(cfg, self.device) == "vllm" else []))
            self._control, self._cfg, self._task = control, cfg, task
            self._trainer, self._run_name, self._last_step = None, None, 0
            if run_dir is not None:  # a Resume names its run, at the step it left, while it loads (not "step 0/4")
                self._run_name, self._last_step = run_dir.name, int(run_dir.read_status().get("step") or 0)
            self._step_times, self._last_metrics, self._signal, self._signal_warning = [], {}, [], ""
            # elapsed is training time: while the model loads it stays where the run left it (0, or a Resume's)
            self._started_at, self._ended_at = None, None
            self._elapsed_before = run_dir.elapsed_so_far() if run_dir is not None else 0.0
            self._job = self.worker.submit(lambda: self._train_job(cfg, task, rewards, control, ready, run_dir))
        try:
            return ready.result()
        except Exception as e:
            with self._lock:
                if not isinstance(e, StartCalledOff):  # a Stop before the first step: "stopped", set by the job
                    self._state = "failed"
                    self._error = user_message(e)
            raise ManagerError(user_message(e)) from e

    def _refuse_what_no_engine_serves(self, cfg: Config) -> None:
        """Settings no engine can serve exactly (a context longer than the model's, a LoRA rank vLLM
        does not take) are refused here, before the run starts; the rest the engine is built for."""
        from types import SimpleNamespace

        from core.engines.registry import engine_refusals

        loaded = self._model_key is not None and self._model_key == model_key_safe(cfg.model)
        hf = self._hf_config if loaded and self._hf_config else read_hf_config(cfg.model.name_or_path)[0]
        refusals = engine_refusals(cfg, SimpleNamespace(**hf), self.device)
        if refusals:
            raise ManagerError("this run cannot start: " + "; ".join(refusals))

    def _train_job(self, cfg: Config, task, rewards, control, ready, run_dir) -> str:
        import torch

        from core.rl.algorithms import make_trainer

        try:
            # a Stop pressed while the job waited (behind a chat answer) or while the model loaded calls
            # the run off here, before its trainer and run folder exist (a load in progress ends first)
            self._call_off_if_stopped(control, run_dir)
            self._ensure_model(cfg.model, run_cfg=cfg)
            self._engine_configure(cfg)
            self._call_off_if_stopped(control, run_dir)
            torch.manual_seed(cfg.algorithm.seed)  # the adapter's initial weights
            self._fresh_adapter(cfg.model)
            plan = self._plan_for_loaded(cfg)  # the run's one plan: what the Train tab showed, handed over
            trainer = make_trainer(cfg, model=self._model, tokenizer=self._tokenizer, engine=self._engine,
                                   task=task, reward_set=rewards, control=control, on_step=self._on_step,
                                   device=self.device, run_dir=run_dir, plan=plan)
            self._adapter_of = trainer  # the adapter's weights are this run's from here (Compare names it)
            if run_dir is not None:
                trainer.resume()
                self._note = " ".join([*task.notes, *rewards.notes, *trainer.resume_notes])
                if not trainer.step:  # no checkpoint to go on from: it trains from zero, so does its clock
                    self._elapsed_before = 0.0
        except BaseException as e:
            rewards.close()
            self._engine_recover()
            ready.set_exception(e)
            return "failed"
        with self._lock:  # a Stop pressed since the last check: the trainer stops before its first step
            self._trainer, self._run_name = trainer, trainer.run.name
            self._state = "stopping" if control.stop_requested else "running"
            self._started_at = time.time()
        ready.set_result(trainer.run.name)
        try:
            final = trainer.train()
        except Exception as e:
            final = "failed"
            self._error = user_message(e)
            self._traceback = traceback.format_exc()
        finally:
            if hasattr(trainer.rewards, "close"):
                trainer.rewards.close()
            self._engine_recover()
            # the run's activations stay in torch's cache after it ends: back to the driver, so the
            # app holds weights + engine between runs (H100, 2026-12-05: 36.8 GiB kept after a
            # micro-batch-64 run of a 135M model, 7.5 before it)
            self._free_memory()
            elapsed = trainer.run.elapsed_so_far()  # "elapsed" from here: the run's status file's (Resume goes on)
            with self._lock:
                self._ended_at = self._started_at = time.time()
                self._elapsed_before = elapsed
        with self._lock:  # the folder goes before a reader can see "stopped" beside its name
            if final == "stopped" and run_dir is None and trainer.step == 0 and trainer.run.created:
                self._discard_untrained(trainer.run.path)
            self._state = final
        return final

    def _discard_untrained(self, folder: Path) -> None:
        """A new run stopped before its first step ended (Stop in the gap after its trainer was built,
        or during its first rollouts): nothing was trained, so its folder goes, as a call-off's does,
        and no Resume is offered for a run with no step. Only a folder its trainer made (`RunDir.created`):
        a user's run name can land on a folder that was there before. Under the lock."""
        import shutil

        folder = Path(folder).resolve()
        if folder.parent == self.runs_dir and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        self._run_name, self._last_step, self._adapter_of = None, 0, None  # the adapter: as fresh as it began
        self._elapsed_before = 0.0  # nothing trained: no training time either
        self._note = StartCalledOff.message + StartCalledOff.removed


    def _call_off_if_stopped(self, control, run_dir) -> None:
        """On the worker, before the trainer exists: if Stop was pressed, end as "stopped" with nothing
        trained and raise StartCalledOff (Start's or Resume's answer). A resumed run's folder is left as
        it was, and the status names it again (Resume continues it)."""
        if not control.stop_requested:
            return
        with self._lock:
            self._state, self._ended_at = "stopped", time.time()
            self._started_at = self._ended_at  # "elapsed" is training time: the wait and the load add none
            # (a Resume's name, step and elapsed are the folder's, as `start` set them)
            self._note = StartCalledOff.message + (StartCalledOff.kept if run_dir is not None else StartCalledOff.none)
        raise StartCalledOff(self._note)

    def _on_step(self, result) -> None:
        """Between two training steps, on the worker: note the step, then serve waiting jobs."""
        self._last_metrics = result.metrics
        self._step_times.append(result.metrics.get("step_time", 0.0))
        if "frac_reward_zero_std" in result.metrics:
            self._signal.append({k: v for k, v in result.metrics.items()
                                 if k in ("frac_reward_zero_std", "completions/same_answer_share")
                                 or (k.startswith("rewards/") and k.endswith("/mean"))})
            self._signal_warning = self._no_signal_warning()
        self.worker.drain()


    # -- controlling the run --------------------------------------------------------
    def pause(self) -> dict:
        if self._state != "running" or self._control is None:
            raise ManagerError("nothing is running to pause")
        self._control.pause("paused by you")
        return self.status()

    def resume(self, run_name: str | None = None, rewards: RewardsConfig | None = None,
               run_code: bool = False) -> dict:
        """Unpause the active run; or, with no active run, continue a stopped or failed run (the
        last one by default) from its latest checkpoint.

        `rewards`, when given, are the rewards the person has on screen: a run keeps its own unless
        they differ (`core.rewards.registry.same_rewards`), then they replace the run's from here on (and in
        its config.yaml). The status returned says which it used: `rewards_changed`.

        A run folder is trusted no more than a request (issue 29): its data source and model must
        lie where a request's may, no link in it may lead outside it, and custom reward code this
        app has not run before (a folder copied in, a config edited by hand) runs only with
        `run_code=True`, the person's yes after reading it."""
        from core.rewards.registry import same_rewards

        if self.is_active():
            if self._control is None or not self._control.paused:
                active = self._run_name
                if active is None or self._state == "loading":
                    raise ManagerError("a run is starting: there is nothing to resume")
                if run_name and run_name != active:
                    raise ManagerError(f"run '{active}' is running: stop it before resuming '{run_name}'")
                raise ManagerError(f"run '{active}' is running already, not paused: there is nothing to resume")
            if rewards is not None and self._cfg is not None and not same_rewards(rewards, self._cfg.rewards):
                return {**self.update_rewards(rewards), "rewards_changed": True}
            self._attempt += 1
            self._control.resume()
            return {**self.status(), "rewards_changed": False}
        from core.runs.folders import RunDir

        name = run_name or self._run_name
        if not name:
            raise ManagerError("there is no run to resume: start one (or pick a run on the Runs tab)")
        run = self._run_dir(name)
        self._refuse_links_outside(run.path, f"run '{name}' is not resumed")
        state = run.read_status().get("state")
        if state == "finished":
            raise ManagerError(f"run '{name}' has finished; start a new run to train more")
        if run.latest_checkpoint() is None:
            raise ManagerError(f"run '{name}' has no checkpoint to resume from")
        with self._lock:
            if self.is_active():
                raise ManagerError("a run is active already")
            self._starting = True
        try:
            cfg = self._trusted_run_config(run, run_code, rewards)
            changed = rewards is not None and not same_rewards(rewards, cfg.rewards)
            if changed:
                cfg.rewards = dataclasses.replace(rewards)
            self._start(cfg, run_dir=RunDir(run.path))
            if changed:  # the run's own record of what it trains with, from this step on
                self._cfg.save(run.config_path)
        finally:
            self._starting = False
        return {**self.status(), "rewards_changed": changed}


    def stop(self) -> dict:
        """Ask the run to stop after the current step; it saves a checkpoint first. Pressed while the
        run is loading (its job waiting behind a chat answer, or its model loading), the run is called
        off before its first step: nothing trained, no run folder written (`before_first_step` in the
        status returned)."""
        with self._lock:  # the control and the state read and set together (Start swaps them under the lock)
            if not self.is_active() or self._control is None:
                raise ManagerError("nothing is running to stop")
            self._control.stop()
            if self._state in ("loading", "running", "paused"):
                self._state = "stopping"
        return self.status()

    def update_rewards(self, rewards_cfg: RewardsConfig) -> dict:
        """Swap the reward functions of a paused run (after a reward failed, say), then resume it;
        the run's config (`run_config`, config.yaml) holds the new rewards from then on."""
        from core.rewards.base import RewardError
        from core.rewards.registry import RewardSet

        if not self.is_active() or self._trainer is None or not self._control.paused:
            raise ManagerError("rewards can be changed only while a run is paused")
        try:
            new = RewardSet.from_config(rewards_cfg)
        except RewardError as e:
            raise ManagerError(reward_message(e)) from e

        from core.runs.folders import remember_reward_code

        remember_reward_code(self.runs_dir, rewards_cfg.custom_code)

        self.worker.call(lambda: self._trainer.use_rewards(new, rewards_cfg))
        if new.notes:
            self._note = " ".join(new.notes)
        self._attempt += 1
        self._control.resume()
        return self.status()


    def close(self) -> None:
        if self._control is not None and self.is_active():
            self._control.stop()
        self.worker.close()

    def shutdown(self, timeout_s: float = 120.0) -> str:
        """The process is asked to end (SIGTERM: docker stop, a Space restart): stop the active run
        as Stop does (a checkpoint of the last whole step, status "stopped"; a rollout in progress
        ends at its next generation batch), wait up to `timeout_s` for that, end the reward
        worker and every process its code started, and close. Returns the run's final state; a run
        that did not stop in time is found "interrupted" at the next start (issue 29)."""
        job, trainer = self._job, self._trainer
        if self._control is not None and self.is_active():
            self._control.stop()
            with contextlib.suppress(Exception):
                job.result(timeout=timeout_s)
        rewards = getattr(trainer, "rewards", None)
        if hasattr(rewards, "close"):  # _train_job closed it unless the run outlived the timeout
            rewards.close()
        self.close()
        return self._state


def stop_on_sigterm(manager: RunManager, then: Callable[[], None] | None = None) -> None:
    """From now on SIGTERM runs `manager.shutdown()`, then `then()` (app.py: end the server).
    Call it from the main thread of an entry point, never at import."""
    import signal

    stopping = threading.Event()

    def on_sigterm(signum, frame):
        if stopping.is_set():  # a second SIGTERM while the first one's stop runs: that one finishes it
            print("SIGTERM again: already stopping", flush=True)
            return
        stopping.set()
        print("SIGTERM: stopping the run with a checkpoint, then exiting (give docker stop a --time of "
              "at least one step: the step in progress ends first)", flush=True)
        manager.shutdown()
        if then is not None:
            then()

    signal.signal(signal.SIGTERM, on_sigterm)
