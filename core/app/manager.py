"""The run manager: one model, one worker thread, at most one active run, for the whole process.

Owns: the loaded model, tokenizer and engine, the active trainer and its control, and every
action the app offers on them — start / pause / resume / stop a run, read its status, metrics
and samples, chat with the base model, the current adapter or a checkpoint, held-out evaluation,
trying rewards on a few completions, and exporting an adapter (zip, merged 16-bit model, Hub).
State lives here, not in the browser: closing the tab never stops a run, and a reloaded page
re-attaches by reading `status()` and `metrics()`.

Every model call (training steps, generation, evaluation, chat, loading, merging) runs on ONE
thread, `ModelWorker`, because generation and training share the same weights and are not
thread-safe. Training is one long job on that worker; between steps (the trainer's `on_step`)
and while a run is paused, the worker runs whatever jobs are waiting, so a chat request is
answered after at most one training step, never dropped.

Refuses to know: gradio (the UI calls these methods and shows what they return or raise), the
GRPO arithmetic (`core.rl.trainer`), how rewards or data are read (`core.rewards`, `core.data`).
Every error meant for a person is a `ManagerError` whose message says what to do.

    >>> worker = ModelWorker()
    >>> worker.submit(lambda: 6 * 7).result()
    42
    >>> worker.close()
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import queue
import re
import shutil
import threading
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from core.errors import AhaError, user_message
from core.runs.access import AccessError, PathPolicy
from core.config import Config, ConfigError, DataConfig, ModelConfig, RewardsConfig, cpu_defaults

# States of a run as `status()` reports them. The first four mean "active": a second start
# is refused until the run reaches one of the last five ("interrupted": its process died, found
# at start-up; Resume continues it).
ACTIVE_STATES = ("loading", "running", "paused", "stopping")
FINAL_STATES = ("idle", "finished", "stopped", "failed", "interrupted")


class ManagerError(AhaError, RuntimeError):
    """Something the user asked for cannot be done; the message says why and what to do."""


# ---------------------------------------------------------------------------
# the worker thread


class ModelWorker:
    """One thread that runs every model call, in order. `submit(fn)` returns a Future.

    A job submitted from the worker thread itself runs at once (no deadlock). The long training
    job calls `drain()` between steps and `wait_and_drain()` while paused, so jobs queued behind
    it are served meanwhile.
    """

    _STOP = object()

    def __init__(self, name: str = "aha-model-worker"):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def in_worker(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.in_worker():
            self._run(fn, future)
        else:
            self._jobs.put((fn, future))
        return future

    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run `fn` on the worker and return its result (its exception is raised here)."""
        return self.submit(fn).result(timeout=timeout)

    @staticmethod
    def _run(fn, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as e:  # the caller sees it through the Future
            future.set_exception(e)

    def _next(self, timeout: float | None) -> bool:
        """Run one queued job; False when there was none within `timeout` (or on close)."""
        try:
            item = self._jobs.get(timeout=timeout) if timeout else self._jobs.get_nowait()
        except queue.Empty:
            return False
        if item is self._STOP:
            self._jobs.put(item)  # leave it for the main loop
            return False
        self._run(*item)
        return True

    def pending(self) -> int:
        """Jobs waiting for the worker (e.g. chat answers queued behind a training step)."""
        return self._jobs.qsize()

    def drain(self) -> int:
        """Run the jobs that were waiting when it was called, and no more (from the worker thread,
        between training steps): jobs that arrive meanwhile wait for the next step, so steady chat
        traffic cannot hold a run back by more than one round of answers per step."""
        n, limit = 0, self._jobs.qsize()
        while n < limit and self._next(None):
            n += 1
        return n

    def wait_and_drain(self, timeout: float = 0.2) -> None:
        """Block up to `timeout` for a job, run it and those waiting behind it (used while paused)."""
        if self._next(timeout):
            self.drain()

    def _loop(self) -> None:
        while True:
            item = self._jobs.get()
            if item is self._STOP:
                return
            self._run(*item)

    def close(self) -> None:
        self._jobs.put(self._STOP)


def _worker_control(worker: ModelWorker):
    """A TrainerControl whose pause keeps serving the worker's queue (chat while paused)."""
    from core.rl.control import TrainerControl, TrainingStopped

    class WorkerControl(TrainerControl):
        def wait_if_paused(self, on_pause=None) -> None:
            if self.paused and on_pause:
                on_pause()
            self.holding = self.paused
            try:
                while self.paused:
                    worker.wait_and_drain(0.2)
            finally:
                self.holding = False
            if self.stop_requested:
                raise TrainingStopped()

    return WorkerControl()


# ---------------------------------------------------------------------------
# memory estimate (arithmetic on the model's config; nothing is loaded)

_BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}


def _linear_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of one decoder layer of a Llama/Qwen-shaped model."""
    h = cfg.get("hidden_size") or cfg.get("n_embd") or 0
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or 1
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or (h // heads if heads else 0)
    inter = cfg.get("intermediate_size") or 4 * h
    return {
        "q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd), "o_proj": (heads * hd, h),
        "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h),
    }


def estimate_memory(model_cfg: ModelConfig, n_params: int | None = None, hf_config: dict | None = None,
                    on_gpu: bool = False) -> dict:
    """Weights + LoRA adapter + its gradients and AdamW states, in GB.

    `n_params` (the base model's parameter count) is taken as given when known (a loaded model),
    else estimated from `hf_config` (its config.json). Activations and the KV cache are not
    included: they grow with batch size and completion length.

    >>> est = estimate_memory(ModelConfig(lora_r=16, dtype="bfloat16"), n_params=135_000_000, hf_config={
    ...     "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
    ...     "intermediate_size": 1536, "num_hidden_layers": 30, "vocab_size": 49152})
    >>> round(est["weights_gb"], 2), est["adapter_params"]
    (0.25, 4884480)
    """
    hf_config = hf_config or {}
    layers = hf_config.get("num_hidden_layers") or hf_config.get("n_layer") or 0
    shapes = _linear_shapes(hf_config) if layers else {}
    if n_params is None and shapes:
        h = shapes["q_proj"][0]
        vocab = hf_config.get("vocab_size", 0)
        per_layer = sum(i * o for i, o in shapes.values()) + 2 * h
        tied = hf_config.get("tie_word_embeddings", True)
        n_params = layers * per_layer + vocab * h * (1 if tied else 2) + h
    targets = model_cfg.lora_target_modules or []
    adapter_params = layers * sum(model_cfg.lora_r * (i + o) for name, (i, o) in shapes.items() if name in targets)
    from core.models.loading import pick_dtype

    dtype = model_cfg.dtype
    if dtype == "auto":  # as load_base_model picks it (a planned GPU: bfloat16)
        dtype = "bfloat16" if on_gpu else str(pick_dtype("auto", "cpu")).removeprefix("torch.")
    per_param = 0.55 if model_cfg.load_in_4bit else _BYTES_PER_PARAM[dtype]  # NF4 + its scales
    gb = 1024**3
    weights = (n_params or 0) * per_param / gb
    adapter = adapter_params * 4 / gb  # peft keeps adapter weights in float32
    grads = adapter_params * 4 / gb
    optimizer = adapter_params * 8 / gb  # AdamW: two float32 moments per weight
    return {
        "params": n_params, "adapter_params": adapter_params, "weights_gb": weights, "adapter_gb": adapter,
        "gradients_gb": grads, "optimizer_gb": optimizer, "total_gb": weights + adapter + grads + optimizer,
    }


# ---------------------------------------------------------------------------


def _model_key(cfg: ModelConfig) -> tuple:
    """Settings that need the base model loaded again when they change (LoRA settings and
    gradient checkpointing do not: they are set on each run's fresh adapter)."""
    from core.models.loading import resolve_model_path

    return (resolve_model_path(cfg.name_or_path), cfg.dtype, cfg.load_in_4bit)


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


class RunManager:
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
        self._step_times: list[float] = []
        self._last_step = 0
        self._last_metrics: dict = {}
        self._signal: list[dict] = []  # per step of the active run: frac_reward_zero_std, rewards/<name>/mean
        self._signal_warning = ""  # what no_signal_warning said after the last step
        self._note = ""  # what a resume had to do (an older checkpoint, a changed learning rate)
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

    def _offer_interrupted(self) -> None:
        """At start-up: runs left `running` by a process that is gone become `interrupted`, and
        when the newest run is one of them the Train tab shows it with Resume ready."""
        from core.runs.folders import list_runs

        runs = list_runs(self.runs_dir)
        for run in runs:
            run.mark_if_interrupted()
        newest = runs[0] if runs else None
        status = newest.read_status() if newest is not None else {}
        if status.get("state") != "interrupted":
            return
        try:
            self._cfg = Config.load(newest.config_path)
        except Exception:  # a hand-edited config: Resume will say what is wrong with it
            self._cfg = None
        self._run_name, self._state = newest.name, "interrupted"
        self._last_step = int(status.get("step") or 0)
        self._note = status.get("reason", "")
        self._error = status.get("error", "")

    def _check_paths(self, data_cfg: DataConfig | None = None, model_cfg: ModelConfig | None = None) -> None:
        """Refuse a data source or model folder outside the folders requests may name (core/runs/access.py)."""
        try:
            if data_cfg is not None:
                self.paths.data_source(data_cfg.source)
            if model_cfg is not None:
                self.paths.model_source(model_cfg.name_or_path)
        except AccessError as e:
            raise ManagerError(str(e)) from None

    # -- the model (worker thread) -----------------------------------------------
    def _engine_cfg(self, model_cfg: ModelConfig, run_cfg: Config | None = None) -> Config:
        """The config an engine is built for: the run's own, or (no run: preload, chat) the default
        run's with `model_cfg` as its model."""
        cfg = Config.from_dict(run_cfg.to_dict()) if run_cfg is not None else self.default_config()
        cfg.model = dataclasses.replace(model_cfg, lora_target_modules=list(model_cfg.lora_target_modules))
        return cfg

    def _engine_reasons(self, cfg: Config) -> list[str]:
        """Why the engine loaded now cannot serve `cfg` exactly ([] = it can, or none is loaded)."""
        from core.engines.registry import backend_for, engine_mismatch, vllm_settings_for

        if self._engine is None:
            return []
        backend = backend_for(cfg, self.device)
        if self._engine.info.backend != backend:
            return [f"the {backend} engine (loaded: {self._engine.info.backend})"]
        if backend != "vllm":
            return []
        from types import SimpleNamespace

        wanted = vllm_settings_for(cfg, SimpleNamespace(**self._hf_config), headroom=True,
                                   **self._free_for_plan())
        return engine_mismatch(self._engine, self._engine.model_path, wanted)

    def _free_for_plan(self) -> dict:
        """GPU memory a rebuilt engine and its run could use: what is free plus what this process's
        torch holds now (the engine and model that a rebuild lets go)."""
        import torch

        if not torch.cuda.is_available():
            return {}
        free, total = torch.cuda.mem_get_info()
        return {"free_bytes": min(total, free + torch.cuda.memory_reserved()), "total_bytes": total}

    def _ensure_model(self, model_cfg: ModelConfig, run_cfg: Config | None = None) -> None:
        """Make sure the loaded base model and engine serve `model_cfg` and, for a run, `run_cfg`
        exactly; (re)build them otherwise. On the worker thread.

        With vLLM the engine comes first and the trainer's base model is built on its weights
        (`make_policy_and_engine`), with headroom (a LoRA rank up to 64, a 4,096-token context), so
        the one engine serves the chat and the runs after this one. A run it cannot serve exactly
        (a larger rank or context, more rollouts than its KV cache holds, 4-bit, fp8 KV, eager mode,
        another base model) gets an engine rebuilt for it here, before its first step; the reasons
        are kept for the status line.
        """
        from core.engines.registry import make_policy_and_engine

        cfg = self._engine_cfg(model_cfg, run_cfg)
        key = _model_key(model_cfg)
        if self._model is not None and key == self._model_key:
            from core.engines.registry import must_rebuild

            reasons = self._engine_reasons(cfg) if run_cfg is not None else []
            hard = must_rebuild(reasons, self._engine)
            if not hard:
                # a smaller KV cache than the run's rollouts on an engine that cannot be rebuilt
                # here (vLLM's sleep mode: one engine per process) samples them in waves
                self._engine_note = ("engine kept: " + "; ".join(reasons) + " - rollouts are sampled in waves"
                                     if reasons else "")
                return
            self._engine_note = "engine rebuilt for this run: " + "; ".join(hard)
            if getattr(self._engine, "sleep_mode", False):
                self._engine_note += (" (vLLM allows one sleep-mode engine per process: this one keeps its KV "
                                      "cache during training steps; restart the app to get that memory back)")
        else:
            self._engine_note = ""
        self._drop_model()
        try:
            self._model, self._tokenizer, self._engine = make_policy_and_engine(cfg, self.device, headroom=True)
        except BaseException:
            self._drop_model()  # nothing half-built stays: the next call starts clean
            raise
        base = self._model.get_base_model()
        self._n_params = sum(p.numel() for p in base.parameters())
        self._hf_config = base.config.to_dict()
        self._model_key = key
        self._model_cfg = dataclasses.replace(model_cfg)

    def _drop_model(self) -> None:
        """Let go of the model, its adapters and the engine (shut down, so another can be built)."""
        from core.engines.registry import close_engine

        if self._trainer is not None:  # the last run's adapter goes with the old model
            self._last_step, self._trainer = self._trainer.step, None
        engine, self._engine = self._engine, None
        self._model = None
        self._model_key = None
        self._adapters.clear()
        if engine is not None:
            close_engine(engine)
        del engine
        self._free_memory()

    def _fresh_adapter(self, model_cfg: ModelConfig) -> None:
        """Drop every adapter (the trained one and loaded checkpoints), add a new LoRA adapter."""
        from core.engines.registry import make_engine
        from core.models.loading import add_lora

        for ref in self._adapters.values():
            self._engine.unload_adapter(ref)
        base = self._model.unload()  # the base weights without any LoRA layer, nothing merged
        if getattr(base, "is_gradient_checkpointing", False) and not model_cfg.gradient_checkpointing:
            base.gradient_checkpointing_disable()  # the last run's choice is not this run's
        self._model = add_lora(base, model_cfg)
        self._model_cfg = dataclasses.replace(model_cfg)
        self._adapters.clear()
        if self._engine.info.backend == "vllm":
            return  # the same engine serves the new adapter from its next update_adapter()
        self._engine = make_engine("hf", self._model, self._tokenizer)

    @staticmethod
    def _free_memory() -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def load_model(self, model_cfg: ModelConfig | None = None) -> dict:
        """Load (or keep) the base model now; returns `model_info()`. Refused during a run."""
        model_cfg = model_cfg or self.default_model
        self._check_paths(model_cfg=model_cfg)
        if self.is_active() and self._model_key != _model_key_safe(model_cfg):
            raise ManagerError("a run is active: stop it before switching the model")
        try:
            self.worker.call(lambda: self._ensure_model(model_cfg))
        except ManagerError:
            raise
        except Exception as e:
            raise ManagerError(user_message(e)) from e
        if not self.is_active():
            self.default_model = dataclasses.replace(model_cfg)
        return self.model_info(model_cfg)

    def preload(self) -> concurrent.futures.Future:
        """Start loading the default model in the background (the first chat is then quick)."""
        return self.worker.submit(lambda: self._model is not None or self._ensure_model(self.default_model))

    def model_info(self, model_cfg: ModelConfig | None = None) -> dict:
        """What is loaded and a memory estimate for `model_cfg` (from its config.json if not loaded);
        on a CPU also the RAM available (`available_gb`)."""
        model_cfg = model_cfg or self.default_model
        loaded = self._model_key is not None and self._model_key == _model_key_safe(model_cfg)
        info = {"loaded": loaded, "device": self.device, "name": model_cfg.name_or_path or "SmolLM2-135M-Instruct",
                "note": ""}
        if loaded:
            est = estimate_memory(model_cfg, self._n_params, self._hf_config, self.has_gpu)
        else:
            hf_config, note = _read_hf_config(model_cfg.name_or_path)
            info["note"] = note
            est = estimate_memory(model_cfg, None, hf_config, self.has_gpu) if hf_config else {}
        info.update(est)
        if not self.has_gpu:  # a CPU run's memory is the machine's RAM: say what it has free
            from core.memory import ram

            available = ram.available_bytes()
            info["available_gb"] = available / 2**30 if available else None
        return info

    def memory_plan(self, cfg: Config, free_bytes: int | None = None, total_bytes: int | None = None) -> dict:
        """The memory planner's plan for `cfg` on this machine, before anything loads: on a GPU
        (or given its `free_bytes`) the GPU's memory, on a CPU the RAM.

        Returns {"text": plain words for the UI, "sentences": the same as keyed fragments (see
        core.memory.planner.say: what the UI translates), "device": "gpu" | "cpu", "fits", "peak_gb",
        "micro_batch_size", "engine"}.
        """
        from types import SimpleNamespace

        from core.memory import planner
        from core.engines.registry import pick_backend

        m = cfg.model
        loaded = self._model_key is not None and self._model_key == _model_key_safe(m)
        hf, note = (self._hf_config, "") if loaded and self._hf_config else _read_hf_config(m.name_or_path)
        need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if not hf or any(not hf.get(k) for k in need):
            sentences = [[("unknown_note", {"note": note}) if note else ("unknown", {})]]
            return {"text": planner.say(sentences), "sentences": sentences, "fits": None, "device": None}
        c = SimpleNamespace(**{**hf, "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
                               "tie_word_embeddings": hf.get("tie_word_embeddings", False)})
        if free_bytes is None and not self.has_gpu:
            return self._cpu_plan(cfg, c, loaded)
        if free_bytes is None:
            free = self._free_for_plan()
            free_bytes, total_bytes = free["free_bytes"], free["total_bytes"]
        engine = pick_backend(cfg.run.engine)
        settings, engine_words = None, []
        if engine == "vllm":
            settings, engine_words = self._engine_for_plan(cfg, c, loaded, free_bytes, total_bytes)
        p = planner.plan_config(c, cfg, free_bytes, total_bytes, engine, engine_settings=settings)
        sentences = p.sentences() + engine_words
        return {"text": planner.say(sentences), "sentences": sentences, "device": "gpu", "fits": p.fits,
                "peak_gb": p.total_peak / 2**30, "micro_batch_size": p.micro_batch_size, "engine": engine}

    def _cpu_plan(self, cfg: Config, hf_config, loaded: bool) -> dict:
        """The RAM a step of `cfg` needs on this CPU (core.memory.planner.plan_cpu), beside what is available."""
        from core.memory import planner, ram
        from core.models.loading import pick_dtype
        from core.rl.trainer import resolve_micro_batch_size

        dtype = pick_dtype(cfg.model.dtype, self.device)
        p = planner.plan_cpu(hf_config, cfg, micro_batch_size=resolve_micro_batch_size(cfg),
                             dtype_bytes=dtype.itemsize, dtype=str(dtype).removeprefix("torch."),
                             available_bytes=ram.available_bytes(), weights_loaded=loaded)
        sentences = p.sentences()
        return {"text": planner.say(sentences), "sentences": sentences, "device": "cpu", "fits": p.fits,
                "peak_gb": p.total_peak / 2**30, "micro_batch_size": p.micro_batch_size, "engine": "hf"}

    def _engine_for_plan(self, cfg: Config, hf_config, loaded: bool, free_bytes: int, total_bytes: int):
        """(VLLMSettings, sentences): the engine a run on vLLM will use — the loaded one when it
        serves the run exactly, else one built (or rebuilt) for it — for the memory plan."""
        from core.engines.registry import must_rebuild, vllm_settings_for

        current = self._engine if self._engine is not None and self._engine.info.backend == "vllm" else None
        reasons = (self._engine_reasons(self._engine_cfg(cfg.model, cfg)) if loaded else ["another base model"]
                   ) if current is not None else []
        if current is not None and not must_rebuild(reasons, current):
            s = current.settings
            key = "engine.loaded_waves" if reasons else "engine.loaded"
        else:
            reasons = must_rebuild(reasons, current) if current is not None else reasons
            s = vllm_settings_for(cfg, hf_config, headroom=True, free_bytes=free_bytes, total_bytes=total_bytes)
            key = "engine.rebuilt" if current is not None else "engine.built"
        values = {"rank": s.max_lora_rank, "context": s.max_model_len,
                  "kv": f"{(s.kv_cache_memory_bytes or 0) / 2**30:.2f} GB", "reasons": "; ".join(reasons)}
        if key != "engine.rebuilt":
            values.pop("reasons")
        return s, [[(key, values)]]

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
            raise ManagerError(_reward_message(e)) from e
        # 3) the model, a fresh adapter and the trainer, on the worker; then training there too
        ready: concurrent.futures.Future = concurrent.futures.Future()
        control = _worker_control(self.worker)
        with self._lock:
            self._state, self._error, self._traceback = "loading", "", ""
            self._note = " ".join(rewards.notes)  # said once, in the status: a custom reward replaced a preset
            self._control, self._cfg, self._task = control, cfg, task
            self._trainer, self._run_name, self._last_step = None, None, 0
            self._step_times, self._last_metrics, self._signal, self._signal_warning = [], {}, [], ""
            self._started_at, self._ended_at = time.time(), None
            self._job = self.worker.submit(lambda: self._train_job(cfg, task, rewards, control, ready, run_dir))
        try:
            return ready.result()
        except Exception as e:
            with self._lock:
                self._state = "failed"
                self._error = user_message(e)
            raise ManagerError(user_message(e)) from e

    def _refuse_what_no_engine_serves(self, cfg: Config) -> None:
        """Settings no engine can serve exactly (a context longer than the model's, a LoRA rank vLLM
        does not take) are refused here, before the run starts; the rest the engine is built for."""
        from types import SimpleNamespace

        from core.engines.registry import engine_refusals

        loaded = self._model_key is not None and self._model_key == _model_key_safe(cfg.model)
        hf = self._hf_config if loaded and self._hf_config else _read_hf_config(cfg.model.name_or_path)[0]
        refusals = engine_refusals(cfg, SimpleNamespace(**hf), self.device)
        if refusals:
            raise ManagerError("this run cannot start: " + "; ".join(refusals))

    def _train_job(self, cfg: Config, task, rewards, control, ready, run_dir) -> str:
        import torch

        from core.rl.algorithms import make_trainer

        try:
            self._ensure_model(cfg.model, run_cfg=cfg)
            self._engine_configure(cfg)
            torch.manual_seed(cfg.algorithm.seed)  # the adapter's initial weights
            self._fresh_adapter(cfg.model)
            trainer = make_trainer(cfg, model=self._model, tokenizer=self._tokenizer, engine=self._engine,
                                   task=task, reward_set=rewards, control=control, on_step=self._on_step,
                                   device=self.device, run_dir=run_dir)
            if run_dir is not None:
                trainer.resume()
                self._note = " ".join([*rewards.notes, *trainer.resume_notes])
        except BaseException as e:
            rewards.close()
            self._engine_recover()
            ready.set_exception(e)
            return "failed"
        with self._lock:
            self._trainer, self._run_name, self._state = trainer, trainer.run.name, "running"
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
            with self._lock:
                self._ended_at = time.time()
        with self._lock:
            self._state = final
        return final

    def _engine_configure(self, cfg: Config) -> None:
        """The run's settings that a built engine takes as they are (no rebuild)."""
        settings = getattr(self._engine, "settings", None)
        if settings is not None and hasattr(settings, "release_kv"):
            settings.release_kv = cfg.run.vllm_free_kv_between_steps

    def _engine_recover(self) -> None:
        """After a run ends, however it ended: nothing of it stays queued in the engine, and its
        memory is back for the chat (on the worker)."""
        reset = getattr(self._engine, "reset", None)
        if reset is None:
            return
        try:
            reset()
        except Exception:  # an engine that cannot even reset is rebuilt by the next call
            traceback.print_exc()
            self._drop_model()

    def _on_step(self, result) -> None:
        """Between two training steps, on the worker: note the step, then serve waiting jobs."""
        self._last_metrics = result.metrics
        self._step_times.append(result.metrics.get("step_time", 0.0))
        if "frac_reward_zero_std" in result.metrics:
            self._signal.append({k: v for k, v in result.metrics.items()
                                 if k == "frac_reward_zero_std" or (k.startswith("rewards/") and k.endswith("/mean"))})
            self._signal_warning = self._no_signal_warning()
        self.worker.drain()

    def _no_signal_warning(self) -> str:
        """no_signal_warning for the active run, with whether its adapter is still exactly zero
        (read from the live model, on the worker between steps)."""
        from core.runs.adapter_change import model_change
        from core.rl.rollouts import no_signal_warning

        cfg, trainer = self._cfg, self._trainer
        if cfg is None or not no_signal_warning(self._signal):
            return ""
        try:
            zero = None if trainer is None else not model_change(trainer.model)["moved"]
        except Exception:  # a diagnostic never fails a run (an unusual adapter layout: say less)
            zero = None
        return no_signal_warning(self._signal, reward_names=cfg.rewards.names,
                                 response_prefix=cfg.data.response_prefix, adapter_zero=zero)

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
                raise ManagerError("the run is not paused")
            if rewards is not None and self._cfg is not None and not same_rewards(rewards, self._cfg.rewards):
                return {**self.update_rewards(rewards), "rewards_changed": True}
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

    @staticmethod
    def _refuse_links_outside(folder: Path, what: str) -> None:
        """ManagerError when a link in `folder` leads outside it: the app would read, write or
        delete (keep_checkpoints) where the link points."""
        from core.runs.folders import links_outside

        outside = links_outside(folder)
        if outside:
            raise ManagerError(f"{what}: links in its folder lead outside it ({'; '.join(outside[:3])}); "
                               "replace them with the files themselves")

    def _trusted_run_config(self, run, run_code: bool, rewards: RewardsConfig | None = None) -> Config:
        """The config of a run folder about to be resumed, once the folder passed the checks of
        `resume`; ManagerError saying what to do otherwise. Rewards the person gave in place of the
        folder's (`rewards`, when they differ) are theirs: the folder's code then never runs."""
        from core.rewards.registry import same_rewards
        from core.runs.folders import knows_reward_code, remember_reward_code

        try:
            cfg = Config.load(run.config_path)
        except ConfigError as e:
            raise ManagerError(f"run '{run.name}': its config.yaml is not valid ({e})") from e
        self._check_paths(cfg.data, cfg.model)
        if rewards is not None and not same_rewards(rewards, cfg.rewards):
            remember_reward_code(self.runs_dir, rewards.custom_code)
        elif not knows_reward_code(self.runs_dir, cfg.rewards.custom_code):
            if not run_code:
                raise ManagerError(
                    f"run '{run.name}' holds custom reward code this app has not run (a folder copied in, or a "
                    f"config edited by hand), and Resume would run it on this server: read rewards.custom_code "
                    f"in {run.config_path.name} first, then resume with 'Run its reward code' ticked (Runs tab)")
            remember_reward_code(self.runs_dir, cfg.rewards.custom_code)
        return cfg

    def stop(self) -> dict:
        """Ask the run to stop after the current step; it saves a checkpoint first."""
        if not self.is_active() or self._control is None:
            raise ManagerError("nothing is running to stop")
        self._control.stop()
        with self._lock:
            if self._state in ("running", "paused"):
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
            raise ManagerError(_reward_message(e)) from e

        from core.runs.folders import remember_reward_code

        remember_reward_code(self.runs_dir, rewards_cfg.custom_code)

        def swap():
            old, self._trainer.rewards = self._trainer.rewards, new
            self._trainer.cfg.rewards = dataclasses.replace(rewards_cfg)
            self._trainer.cfg.save(self._trainer.run.config_path)
            if hasattr(old, "close"):
                old.close()

        self.worker.call(swap)
        if new.notes:
            self._note = " ".join(new.notes)
        self._control.resume()
        return self.status()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the active run's job ends; returns its final state (for scripts and tests)."""
        job = self._job
        if job is not None:
            job.result(timeout=timeout)
        return self._state

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
        recent = self._step_times[-10:]
        eta = None
        if recent and state in ("running", "paused") and max_steps:
            eta = (sum(recent) / len(recent)) * max(0, max_steps - step)
        end = self._ended_at or time.time()
        return {
            "state": state,
            "run_name": self._run_name,
            "step": step,
            "max_steps": max_steps,
            "eta_seconds": eta,
            "tokens_per_second": self._last_metrics.get("tokens_per_second"),
            "reward": self._last_metrics.get("reward"),
            "elapsed": (end - self._started_at) if self._started_at else 0.0,
            "error": error,
            "traceback": tb,
            "pause_reason": pause_reason,
            "note": self._note,
            "model": (self._model_cfg.name_or_path or "SmolLM2-135M-Instruct") if self._model_cfg else None,
            # answers (chat, evaluation) waiting for the current training step to end
            "queued": self.worker.pending() if state in ACTIVE_STATES else 0,
            "engine_note": self._engine_note,
            "signal_warning": self._signal_warning,  # kept after the run: it explains a flat curve
        }

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

    def _run_dir(self, run_name: str):
        from core.runs.folders import RunDir, sanitize_run_name

        if not run_name:
            raise ManagerError("no run given")
        path = self.runs_dir / sanitize_run_name(run_name)
        if not (path / "config.yaml").exists():
            raise ManagerError(f"no run named '{run_name}' in {self.runs_dir}")
        return RunDir(path)

    def _named_or_current(self, run_name: str | None):
        name = run_name or self._run_name
        if not name:
            return None
        return self._run_dir(name)

    def metrics(self, run_name: str | None = None) -> pd.DataFrame:
        """One row per step (TRL's metric names as columns); empty when there is no run."""
        run = self._named_or_current(run_name)
        rows = run.read_metrics() if run is not None else []
        return pd.DataFrame(rows)

    def samples(self, run_name: str | None = None, last: int = 20) -> pd.DataFrame:
        """The newest `last` logged samples, newest first, one column per reward function."""
        run = self._named_or_current(run_name)
        rows = run.read_samples()[-last:] if run is not None else []
        flat = []
        for r in reversed(rows):
            row = {k: r.get(k) for k in ("step", "question", "answer", "completion", "reward", "advantage")}
            for name, value in (r.get("rewards") or {}).items():
                row[name] = value
            flat.append(row)
        return pd.DataFrame(flat, columns=None if flat else
                            ["step", "question", "answer", "completion", "reward", "advantage"])

    def list_runs(self) -> list[dict]:
        """Runs in the runs folder, newest first, with what the runs table shows."""
        from core.runs.folders import list_runs

        out = []
        for run in list_runs(self.runs_dir):
            status = run.read_status()
            try:
                cfg = Config.load(run.config_path)
                model, task, rewards = (cfg.model.name_or_path or "SmolLM2-135M-Instruct", cfg.data.source,
                                        ", ".join(cfg.rewards.names))
            except Exception:  # a hand-edited config: still list the run
                model = task = rewards = "?"
            state = status.get("state", "unknown")
            if run.name == self._run_name:  # the manager's own run: its word is the newest
                state = self.status()["state"]
            elif run.mark_if_interrupted():  # its process died since start-up (a headless run, say)
                state = "interrupted"
            metrics = run.read_metrics()
            reward = metrics[-1].get("reward") if metrics and isinstance(metrics[-1], dict) else None
            if isinstance(reward, bool) or not isinstance(reward, (int, float)):
                reward = None  # a hand-edited log: the list shows no reward rather than failing
            out.append({
                "run": run.name, "state": state, "step": status.get("step", len(metrics)),
                "max_steps": status.get("max_steps"), "reward": reward,
                "model": model, "data": task, "rewards": rewards,
                "checkpoints": len(run.checkpoints()),
                "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.config_path.stat().st_mtime)),
            })
        return out

    def checkpoints(self, run_name: str | None = None) -> list[str]:
        """The run's complete checkpoint folders, oldest first."""
        run = self._named_or_current(run_name)
        return [str(p) for p in run.checkpoints()] if run is not None else []

    def config_path(self, run_name: str | None = None, checkpoint: str | None = None) -> str:
        """The config.yaml of the run `checkpoint` belongs to, else of `run_name` or the current run."""
        if checkpoint:
            path = self._checkpoint_path(checkpoint).parent.parent / "config.yaml"
            if path.exists():
                return str(path)
        run = self._named_or_current(run_name)
        if run is None:
            raise ManagerError("there is no run yet")
        return str(run.config_path)

    # -- chat and evaluation -----------------------------------------------------------
    def _checkpoint_path(self, checkpoint: str) -> Path:
        """A checkpoint folder inside the runs folder (runs/<run>/checkpoints/step-N): what the
        app reads, exports next to (<run>/exports) and serves the config of (<run>/config.yaml)."""
        try:
            path = self.paths.in_runs(checkpoint, "checkpoint")
            self.paths.in_runs(path.parent.parent, "checkpoint")  # a run folder holds it
        except AccessError as e:
            raise ManagerError(str(e)) from None
        if not (path / "adapter_model.safetensors").exists():
            raise ManagerError(f"{checkpoint} is not a checkpoint folder (no adapter_model.safetensors)")
        self._refuse_links_outside(path, path.name)  # an export would zip the file a link points to
        return path

    def _checkpoint_config(self, path: Path) -> Config | None:
        """The config of the run a checkpoint belongs to (runs/<run>/checkpoints/step-N)."""
        from core.evaluation.chat import checkpoint_run_config

        return checkpoint_run_config(path)

    def _checkpoint_model_cfg(self, path: Path) -> ModelConfig:
        cfg = self._checkpoint_config(path)
        if cfg is not None:
            return cfg.model
        adapter_cfg = json.loads((path / "adapter_config.json").read_text())
        return ModelConfig(name_or_path=adapter_cfg.get("base_model_name_or_path") or "")

    def _resolve_target(self, target: str):
        """(adapter ref or None) for 'base', 'current' or a checkpoint path; on the worker."""
        if target in (None, "", "base"):
            return None
        if target == "current":
            if self._trainer is not None and self._trainer.adapter is not None:
                return self._trainer.adapter
            return self._engine.update_adapter(self._model)  # the fresh (untrained) adapter
        path = self._checkpoint_path(target)
        key = str(path)
        if key not in self._adapters or not self._engine.has_adapter(self._adapters[key]):
            try:
                self._adapters[key] = self._engine.load_adapter(key)
            except Exception as e:
                raise ManagerError(f"could not load the checkpoint {path.name}: {user_message(e)}") from e
        return self._adapters[key]

    def _ensure_model_for(self, target: str) -> None:
        """Load the right base model for `target` (a checkpoint knows its base) unless a run holds it."""
        if target not in (None, "", "base", "current"):
            path = self._checkpoint_path(target)
            want = self._checkpoint_model_cfg(path)
            try:
                rank = int(json.loads((path / "adapter_config.json").read_text()).get("r") or 0)
            except (OSError, ValueError):
                rank = 0
            limit = getattr(getattr(self._engine, "settings", None), "max_lora_rank", None)
            fits = limit is None or rank <= limit
            if self._model is not None and _model_key(want)[0] == self._model_key[0] and fits:
                return
            if self.is_active() and self._model is not None:
                why = (f"was trained on {want.name_or_path or 'the bundled default model'}" if fits else
                       f"has LoRA rank {rank}, more than the engine holds ({limit})")
                raise ManagerError(f"this checkpoint {why}: it needs another engine than the active run's; "
                                   "wait for the run to finish")
            run_cfg = self._engine_cfg(dataclasses.replace(want, lora_r=max(rank, want.lora_r))) if not fits else None
            self._ensure_model(want, run_cfg=run_cfg)
            return
        if self._model is None:
            self._ensure_model(self.default_model)

    def chat_settings(self, target: str = "current") -> dict:
        """How `target` was trained to be asked: {system_prompt, response_prefix, chat_template} of
        its run's config.yaml (a checkpoint), of the active or last run ('current', 'base'), else
        the defaults; `source` says which (shown beside the Compare tab's boxes)."""
        from core.evaluation.chat import prompt_settings

        if target not in (None, "", "base", "current"):
            path = self._checkpoint_path(target)
            cfg = self._checkpoint_config(path)
            source = (f"the config.yaml of run `{path.parent.parent.name}` ({path.name})" if cfg is not None
                      else f"the defaults ({path.name} has no run config)")
        else:
            cfg = self.run_config()
            source = (f"the current run `{self._run_name or '(not started)'}`" if cfg is not None
                      else "the defaults (no run yet)")
        return {**prompt_settings(cfg or self.default_config()), "source": source}

    def chat(self, prompt: str, target: str = "base", system_prompt: str | None = None,
             max_tokens: int = 256, temperature: float = 0.0, response_prefix: str | None = None,
             asked_as: str | None = None) -> str:
        """One answer to `prompt` from the base model, the current adapter or a checkpoint, prefix included.

        The system prompt, answer prefix and chat template are those `asked_as` (default: `target`)
        was trained with (`chat_settings`); `system_prompt` and `response_prefix` replace theirs. The
        Compare tab asks base and tuned alike, both as the tuned checkpoint's run did. Served on the
        worker; during training it waits for the end of the current step.
        """
        from core.evaluation.chat import answer

        if not prompt or not prompt.strip():
            raise ManagerError("type a prompt first")
        asked = self.chat_settings(asked_as or target)
        if system_prompt is not None:
            asked["system_prompt"] = system_prompt
        if response_prefix is not None:
            asked["response_prefix"] = response_prefix

        def job() -> str:
            self._ensure_model_for(target)
            adapter = self._resolve_target(target)
            return answer(self._engine, self._tokenizer, prompt, adapter=adapter, system_prompt=asked["system_prompt"],
                          response_prefix=asked["response_prefix"], chat_template=asked["chat_template"],
                          max_tokens=int(max_tokens), temperature=float(temperature))

        return self._call(job)

    def adapter_change(self, target: str = "current") -> dict | None:
        """How far `target`'s adapter has moved the base model (core.runs.adapter_change): {matrices,
        nonzero, delta_norm, largest_b, moved}; `moved` False = every LoRA B matrix is exactly zero,
        the adapter is the base. None for 'base', or 'current' before any model is loaded."""
        from core.runs.adapter_change import checkpoint_change, model_change

        if target in (None, "", "base"):
            return None
        if target != "current":
            return checkpoint_change(self._checkpoint_path(target))  # a file read: no worker needed

        def job() -> dict | None:  # the trained adapter is the live model's "default" one (_resolve_target)
            return model_change(self._model) if self._model is not None else None

        return self._call(job)

    def _call(self, job):
        try:
            return self.worker.call(job)
        except ManagerError:
            raise
        except Exception as e:
            raise ManagerError(user_message(e)) from e

    def evaluate(self, target: str = "current", n: int = 20, data_cfg: DataConfig | None = None,
                 max_tokens: int | None = None) -> dict:
        """Greedy answers on `n` held-out rows from the base model and from `target`:
        {'base': {accuracy, format_rate, n}, 'tuned': {...}, 'items': [per-question rows]}."""
        from core.data import DataError, load_task_data
        from core.evaluation.evaluate import evaluate

        cfg = None
        if target not in (None, "", "base", "current"):
            cfg = self._checkpoint_config(self._checkpoint_path(target))
        cfg = cfg or self._cfg or self.default_config()
        rows = None
        if data_cfg is None and self._task is not None and cfg is self._cfg:
            rows = self._task.eval
        if rows is None:
            self._check_paths(data_cfg or cfg.data)  # a request's data, or a run folder's
            try:
                rows = load_task_data(data_cfg or cfg.data).eval
            except DataError as e:
                raise ManagerError(f"data: {e}") from e
        if not rows:
            raise ManagerError("the data has no held-out rows: set eval_size above 0")
        kw = dict(system_prompt=cfg.data.system_prompt, chat_template=cfg.data.chat_template,
                  response_prefix=cfg.data.response_prefix, max_items=int(n),
                  max_tokens=int(max_tokens or cfg.algorithm.max_completion_length),
                  max_prompt_length=cfg.algorithm.max_prompt_length)

        def job() -> dict:
            self._ensure_model_for(target)
            adapter = self._resolve_target(target)
            base = evaluate(self._engine, self._tokenizer, rows, adapter=None, **kw)
            tuned = evaluate(self._engine, self._tokenizer, rows, adapter=adapter, **kw)
            return base, tuned

        base, tuned = self._call(job)
        items = [{"question": b["question"], "answer": b["answer"], "base": b["completion"],
                  "base_correct": b["correct"], "tuned": t["completion"], "tuned_correct": t["correct"]}
                 for b, t in zip(base["items"], tuned["items"], strict=True)]
        pick = ("accuracy", "accuracy_flexible", "format_rate", "n")
        return {"base": {k: base[k] for k in pick}, "tuned": {k: tuned[k] for k in pick}, "items": items}

    def retention(self, target: str = "current", n_prompts: int = 60, n_task: int = 10, max_tokens: int = 128) -> dict:
        """Off the trained task, base vs `target` (core.evaluation.retention.measure_retention): the first
        `n_prompts` general prompts, `n_task` questions of each built-in task not trained on."""
        from core.evaluation.retention import GENERAL_PROMPTS, measure_retention

        cfg = None
        checkpoint = None
        if target not in (None, "", "base", "current"):
            checkpoint = self._checkpoint_path(target)
            cfg = self._checkpoint_config(checkpoint)
        cfg = cfg or self._cfg or self.default_config()

        def job() -> dict:
            self._ensure_model_for(target)
            adapter = self._resolve_target(target)
            return measure_retention(self._engine, self._tokenizer, self._model, adapter, source=cfg.data.source,
                                     prompts=GENERAL_PROMPTS[:max(1, int(n_prompts))], n_task=int(n_task),
                                     max_tokens=int(max_tokens), chat_template=cfg.data.chat_template,
                                     checkpoint=checkpoint)

        return self._call(job)

    def thinking_growth(self, run_name: str | None = None) -> dict | None:
        """A logged sample from early in the run and one from late (core.evaluation.evaluate.grown_thinking)."""
        from core.evaluation.evaluate import grown_thinking

        run = self._named_or_current(run_name)
        return grown_thinking(run.read_samples()) if run is not None else None

    def try_rewards(self, rewards_cfg: RewardsConfig, data_cfg: DataConfig, n: int = 4,
                    max_tokens: int = 128, temperature: float = 1.0,
                    progress: Callable[[float, str, dict], None] | None = None) -> pd.DataFrame:
        """Score `n` completions sampled from the current model, plus one ideally formatted
        reference answer per question, with each reward: one column per reward and the total.
        Completions reach the rewards as in training and TRL: `[{"role": "assistant", "content": ...}]`.
        `df.attrs["notes"]` holds what the rewards' notes say (a custom reward replaced a preset).

        `progress(fraction, stage, facts)` hears of each stage before it starts, on the calling
        thread: "data"; "sampling" ({"completions", "max_tokens", "load_model": the model loads
        first, "after_step": a training step finishes first}), the slow one on a CPU;
        "scoring" ({"completions", "rewards"}).
        """
        from core.data import DataError, build_messages, load_task_data, render_prompt
        from core.engines.base import SamplingSettings
        from core.rewards.base import RewardError
        from core.rewards.registry import RewardSet

        report = progress or (lambda fraction, stage, facts: None)
        report(0.0, "data", {})
        self._check_paths(data_cfg)
        try:
            task = load_task_data(dataclasses.replace(data_cfg, train_size=min(data_cfg.train_size, 200),
                                                      eval_size=min(data_cfg.eval_size, 20)))
        except DataError as e:
            raise ManagerError(f"data: {e}") from e
        rows = task.train[: max(1, int(n))]
        try:
            rewards = RewardSet.from_config(rewards_cfg)
        except RewardError as e:
            raise ManagerError(_reward_message(e)) from e
        template = data_cfg.chat_template

        # each question twice: the model's completion, then a reference in the target format
        references = [f"<think>\nThe answer is {r['answer']}.\n</think>\n<answer>\n{r['answer']}\n</answer>"
                      for r in rows]

        def job() -> list[tuple[str, list[int], list[int]]]:
            self._ensure_model_for("current")
            tok = self._tokenizer
            prompts = [tok(render_prompt(tok, build_messages(r["question"], data_cfg.system_prompt), template,
                                         data_cfg.response_prefix), add_special_tokens=False)["input_ids"]
                       for r in rows]
            adapter = self._resolve_target("current")
            groups = self._engine.generate(prompts, SamplingSettings(
                n=1, temperature=temperature, max_tokens=int(max_tokens), seed=0), adapter)
            return [(data_cfg.response_prefix + g[0].text, list(g[0].token_ids),
                     tok(ref, add_special_tokens=False)["input_ids"]) for g, ref in zip(groups, references)]

        try:
            report(0.1, "sampling", {"completions": len(rows), "max_tokens": int(max_tokens),
                                     "load_model": self._model is None, "after_step": self._state == "running"})
            sampled = self._call(job)
            report(0.9, "scoring", {"completions": 2 * len(rows), "rewards": len(rewards.names)})
            table = []  # (row, source, completion text, completion token ids)
            for r, (text, ids, ref_ids), ref in zip(rows, sampled, references, strict=True):
                table.append((r, "model", text, ids))
                table.append((r, "reference", ref, ref_ids))
            prompts = [build_messages(r["question"], data_cfg.system_prompt) for r, *_ in table]
            completions = [[{"role": "assistant", "content": c}] for _, _, c, _ in table]
            columns = {k: [r.get(k) for r, *_ in table] for k in rows[0] if k != "prompt"}
            columns["completion_ids"] = [ids for *_, ids in table]  # as training passes it (core/rl/rollouts.py)
            scored = rewards(prompts, completions, columns)
        except RewardError as e:
            raise ManagerError(_reward_message(e)) from e
        finally:
            rewards.close()
        df = pd.DataFrame({
            "question": [r["question"] for r, *_ in table],
            "answer": [r["answer"] for r, *_ in table],
            "source": [s for _, s, *_ in table],
            "completion": [c for _, _, c, _ in table],
        })
        for name, values in scored.per_reward.items():
            df[name] = values
        df["total"] = scored.total
        df.attrs["notes"] = list(rewards.notes)
        return df

    # -- data helpers for the UI -------------------------------------------------------
    def _tokenizer_for(self, model_cfg: ModelConfig | None):
        """The loaded tokenizer when it matches, else one loaded on its own (cheap, cached)."""
        from core.models.loading import load_tokenizer, resolve_model_path

        model_cfg = model_cfg or self.default_model
        path = resolve_model_path(model_cfg.name_or_path)
        if self._model_key is not None and self._model_key[0] == path and self._tokenizer is not None:
            return self._tokenizer
        if path not in self._tokenizers:
            self._tokenizers[path] = load_tokenizer(path)
        return self._tokenizers[path]

    def preview_data(self, data_cfg: DataConfig, model_cfg: ModelConfig | None = None, n: int = 5) -> dict:
        """{'table': the first rows as the model sees them, 'train': n, 'eval': n, 'columns', 'notes'}."""
        from core.data import DataError, load_task_data, preview

        self._check_paths(data_cfg)
        try:
            task = load_task_data(data_cfg)
            try:
                self._check_paths(model_cfg=model_cfg or self.default_model)
                tok = self._tokenizer_for(model_cfg)
            except Exception:  # no model reachable yet: render with the plain default template
                tok = None
            table = preview(task, tok, data_cfg.system_prompt, data_cfg.chat_template, n=n,
                            response_prefix=data_cfg.response_prefix)
        except DataError as e:
            raise ManagerError(f"data: {e}") from e
        return {"table": table, "train": len(task.train), "eval": len(task.eval), "columns": task.columns,
                "notes": task.notes}

    def table_columns(self, source: str, split: str = "train", subset: str = "") -> list[str]:
        """Column names of a file, folder or hub dataset (for the column-mapping dropdowns)."""
        from core.data import DataError, load_table

        self._check_paths(DataConfig(source=source))
        try:
            return [str(c) for c in load_table(source, split=split, subset=subset).columns]
        except DataError as e:
            raise ManagerError(f"data: {e}") from e

    def store_upload(self, path: str) -> str:
        """Copy an uploaded data file into the uploads folder under a name holding its content
        hash, so a run's data never changes under it (core/runs/access.py). Past the uploads quota the
        oldest uploads that no run (nor the active one) uses are deleted first."""
        from core.runs.folders import data_sources

        in_use = data_sources(self.runs_dir)
        if self._cfg is not None:
            in_use.add(self._cfg.data.source)
        try:
            return str(self.paths.store_upload(path, in_use=in_use))
        except AccessError as e:
            raise ManagerError(str(e)) from None

    # -- past runs ------------------------------------------------------------------
    def load_run(self, run_name: str, checkpoint: str | None = None) -> dict:
        """Make an old run's checkpoint (its latest by default) ready to chat with in Compare."""
        run = self._run_dir(run_name)
        cps = run.checkpoints()
        if not cps:
            raise ManagerError(f"run '{run_name}' has no checkpoint yet")
        path = self._checkpoint_path(checkpoint) if checkpoint else cps[-1]
        key = str(path.resolve())
        self._call(lambda: (self._ensure_model_for(key), self._resolve_target(key)))
        return {"run_name": run.name, "checkpoint": key, "checkpoints": [str(p.resolve()) for p in cps]}

    # -- export ------------------------------------------------------------------------
    def export_adapter_zip(self, checkpoint: str) -> str:
        """A zip of the adapter (peft format) and the run's config, ready to download."""
        path = self._checkpoint_path(checkpoint)
        run_dir = path.parent.parent
        out_dir = run_dir / "exports"
        out_dir.mkdir(exist_ok=True)
        out = out_dir / f"{run_dir.name}-{path.name}-adapter.zip"
        from core.export.model_card import export_files

        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in export_files(path, self._checkpoint_model_cfg(path).name_or_path).items():
                zf.writestr(name, data)
        return str(out)

    def merge_and_save(self, checkpoint: str, out_dir: str | None = None, dtype: str = "bfloat16") -> str:
        """Base + adapter merged into one model (peft merge_and_unload), saved as 16-bit safetensors."""
        import torch

        from core.models.loading import load_base_model, load_tokenizer, resolve_model_path

        path = self._checkpoint_path(checkpoint)
        model_cfg = dataclasses.replace(self._checkpoint_model_cfg(path), dtype="float32", load_in_4bit=False,
                                        gradient_checkpointing=False)
        out = Path(out_dir) if out_dir else path.parent.parent / "exports" / f"{path.name}-merged"
        torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]

        def job() -> str:
            from peft import PeftModel

            # a separate copy on the CPU, in float32 for the merge arithmetic: the live model stays untouched
            base = load_base_model(model_cfg, "cpu")
            merged = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
            merged.config.use_cache = True
            tmp = out.with_name(f".tmp-{out.name}")
            shutil.rmtree(tmp, ignore_errors=True)
            merged.to(torch_dtype).save_pretrained(tmp, safe_serialization=True)
            load_tokenizer(resolve_model_path(model_cfg.name_or_path)).save_pretrained(tmp)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            del base, merged
            self._free_memory()
            return str(out)

        return self._call(job)

    def push_to_hub(self, checkpoint: str, repo_id: str, token: str, merged: bool = False,
                    private: bool = True) -> str:
        """Upload the adapter (or the merged model) to a Hub model repo; returns its URL.

        The token is used for this call only: never stored, logged or put in an error message.
        """
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo_id or ""):
            raise ManagerError("repo id must look like 'your-name/model-name'")
        if not token or not token.strip():
            raise ManagerError("a Hugging Face token with write access is needed (huggingface.co/settings/tokens)")
        token = token.strip()
        path = self._checkpoint_path(checkpoint)
        try:
            if merged:
                folder = Path(self.merge_and_save(str(path)))
            else:
                folder = path.parent.parent / "exports" / f"{path.name}-adapter"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                from core.export.model_card import export_files

                for name, data in export_files(path, self._checkpoint_model_cfg(path).name_or_path).items():
                    (folder / name).write_bytes(data)
            from huggingface_hub import HfApi

            api = HfApi(token=token)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                              commit_message=f"Aha Studio: {path.parent.parent.name} {path.name}")
            return str(url)
        except ManagerError as e:
            raise ManagerError(_redact(str(e), token)) from None
        except Exception as e:
            # `from None`: the original exception (and any token inside it) is not chained
            raise ManagerError(_redact(f"push to the Hub failed: {user_message(e)}", token)) from None

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


# ---------------------------------------------------------------------------
# helpers


def _model_key_safe(cfg: ModelConfig):
    try:
        return _model_key(cfg)
    except Exception:  # the default model cannot be found: nothing can match it
        return None


def _read_hf_config(name_or_path: str) -> tuple[dict, str]:
    """A model's config.json without loading it: a local folder, the bundled default, or the hub."""
    from core.models.loading import resolve_model_path

    try:
        path = Path(resolve_model_path(name_or_path))
        if path.is_dir():
            return json.loads((path / "config.json").read_text()), ""
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(str(path), "config.json")).read_text()), ""
    except Exception as e:
        return {}, f"no estimate before the model loads ({user_message(e)[:160]})"


def _reward_message(e) -> str:
    tb = getattr(e, "traceback_text", "")
    return f"rewards: {e}" + (f"\n\n{tb}" if tb else "")


# ---------------------------------------------------------------------------
# the process-global manager

_MANAGER: RunManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_manager(**kwargs) -> RunManager:
    """The process's one RunManager (created on first use with `kwargs`)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = RunManager(**kwargs)
        return _MANAGER


def set_manager(manager: RunManager) -> RunManager:
    global _MANAGER
    with _MANAGER_LOCK:
        _MANAGER = manager
    return manager


def format_seconds(seconds: float | None) -> str:
    """'1h 02m', '3m 05s', '42s'; '-' when unknown.

    >>> format_seconds(3725), format_seconds(185), format_seconds(None)
    ('1h 02m', '3m 05s', '-')
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"
