"""The loaded model and engine of the app's process, on the worker thread: built for a run (or
the chat), reused when they serve it exactly, rebuilt when they cannot, and the memory plan a run
would start with, in words.

Owns: `LoadedModel`, a part of `RunManager` (its attributes `_model`, `_tokenizer`, `_engine`,
`_model_key`, `_model_cfg`, `_n_params`, `_hf_config`, `_adapters`, `_engine_note` live here), and
the model key helpers. Asks engines only through the protocol (core/engines/base.py) and the
registry (core/engines/registry.py). Refuses to know: runs, chat, the UI.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import traceback
from pathlib import Path

from core.errors import user_message
from core.config import Config, ModelConfig
from core.models.bundled import DEFAULT_MODEL_NAME
from core.app.messages import ManagerError


class LoadedModel:
    """The loaded model and engine (see the module docstring)."""

    # -- the model (worker thread) -----------------------------------------------
    def _engine_cfg(self, model_cfg: ModelConfig, run_cfg: Config | None = None) -> Config:
        """The config an engine is built for: the run's own, or (no run: preload, chat) the default
        run's with `model_cfg` as its model."""
        cfg = Config.from_dict(run_cfg.to_dict()) if run_cfg is not None else self.default_config()
        cfg.model = dataclasses.replace(model_cfg, lora_target_modules=list(model_cfg.lora_target_modules))
        return cfg

    def _engine_reasons(self, cfg: Config, free: dict | None = None) -> list[str]:
        """Why the engine loaded now cannot serve `cfg` exactly ([] = it can, or none is loaded):
        compared with the engine the run's own plan would build (`plan_for` with headroom, counting
        what this process's torch holds as free: a rebuild lets it go)."""
        from types import SimpleNamespace

        from core.engines.registry import plan_for, why_not_serve

        if self._engine is None:
            return []
        return why_not_serve(self._engine, cfg, self.device, lambda: plan_for(
            cfg, self.device, hf_config=SimpleNamespace(**self._hf_config), headroom=True, count_reserved=True,
            **(free or {})))

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
        key = model_key(model_cfg)
        if self._model is not None and key == self._model_key:
            from core.engines.registry import must_rebuild, one_per_process

            reasons = self._engine_reasons(cfg) if run_cfg is not None else []
            hard = must_rebuild(reasons, self._engine)
            if not hard:
                # a smaller KV cache than the run's rollouts on an engine that cannot be rebuilt
                # here (vLLM's sleep mode: one engine per process) samples them in waves
                self._engine_note = ("engine kept: " + "; ".join(reasons) + " - rollouts are sampled in waves"
                                     if reasons else "")
                return
            self._engine_note = "engine rebuilt for this run: " + "; ".join(hard)
            if one_per_process(self._engine):
                self._engine_note += (" (vLLM allows one sleep-mode engine per process: this one keeps its KV "
                                      "cache during training steps; restart the app to get that memory back)")
        else:
            self._engine_note = ""
        self._drop_model()
        try:
            # planned after the old engine let go, with headroom for the runs after this one
            self._model, self._tokenizer, self._engine = make_policy_and_engine(cfg, self.device, headroom=True)
        except BaseException:
            self._drop_model()  # nothing half-built stays: the next call starts clean
            raise
        base = self._model.get_base_model()
        # the base model's own weights: the peft layers wrapped around them hold the adapter too
        self._n_params = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
        self._hf_config = base.config.to_dict()
        self._model_key = key
        self._model_cfg = dataclasses.replace(model_cfg)

    def _drop_model(self) -> None:
        """Let go of the model, its adapters and the engine (shut down, so another can be built)."""
        from core.engines.registry import close_engine

        if self._trainer is not None:  # the last run's adapter goes with the old model
            self._last_step, self._trainer = self._trainer.step, None
        self._adapter_of = None
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
        from core.models.loading import add_lora

        for ref in self._adapters.values():
            self._engine.unload_adapter(ref)
        base = self._model.unload()  # the base weights without any LoRA layer, nothing merged
        if getattr(base, "is_gradient_checkpointing", False) and not model_cfg.gradient_checkpointing:
            base.gradient_checkpointing_disable()  # the last run's choice is not this run's
        self._model = add_lora(base, model_cfg)
        self._adapter_of = None  # untrained until this run's trainer takes it (_train_job)
        self._model_cfg = dataclasses.replace(model_cfg)
        self._adapters.clear()
        self._engine.bind(self._model)  # vLLM: the same engine serves it from its next update_adapter()

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
        if self.is_active() and self._model_key != model_key_safe(model_cfg):
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
        self._check_paths(model_cfg=model_cfg)  # as Load does: nothing read outside the allowed folders
        loaded = self._model_key is not None and self._model_key == model_key_safe(model_cfg)
        info = {"loaded": loaded, "device": self.device, "name": model_cfg.name_or_path or DEFAULT_MODEL_NAME,
                "note": ""}
        from core.memory.sizes import estimate_memory
        from core.models.loading import pick_dtype

        m = model_cfg
        dtype = "bfloat16" if self.has_gpu and m.dtype == "auto" else str(  # as load_base_model picks it
            pick_dtype(m.dtype, self.device)).removeprefix("torch.")
        if loaded:
            est = estimate_memory(m.lora_r, m.lora_target_modules, dtype, m.load_in_4bit, self._n_params,
                                  self._hf_config)
        else:
            hf_config, note = read_hf_config(model_cfg.name_or_path)
            info["note"] = note
            est = estimate_memory(m.lora_r, m.lora_target_modules, dtype, m.load_in_4bit,
                                  hf_config=hf_config) if hf_config else {}
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
        core.memory.words.say: what the UI translates), "device": "gpu" | "cpu", "fits", "peak_gb",
        "micro_batch_size", "engine"}.
        """
        from core.memory import words

        m = cfg.model
        self._check_paths(model_cfg=m)  # as Load does: no config.json read outside the allowed folders
        loaded = self._model_key is not None and self._model_key == model_key_safe(m)
        hf, note = (self._hf_config, "") if loaded and self._hf_config else read_hf_config(m.name_or_path)
        need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if not hf or any(not hf.get(k) for k in need):
            sentences = [[("unknown_note", {"note": note}) if note else ("unknown", {})]]
            return {"text": words.say(sentences), "sentences": sentences, "fits": None, "device": None}
        c = model_namespace(hf)
        free = {} if free_bytes is None else {"free_bytes": free_bytes, "total_bytes": total_bytes or free_bytes}
        sizes, engine_words = self._engine_for_plan(cfg, c, loaded, free)
        p = self._run_plan(cfg, c, loaded, sizes, free)
        sentences = p.sentences() + engine_words
        if m.lora_r > c.hidden_size:  # accepted (the HF engine serves it), but said: a LoRA update of a
            # layer has rank at most its width, so the rest is memory without capacity
            sentences.append([("note.rank_above_width", {"rank": m.lora_r, "width": c.hidden_size})])
        return {"text": words.say(sentences), "sentences": sentences, "device": p.device, "fits": p.fits,
                "peak_gb": p.peak_bytes / 2**30, "micro_batch_size": p.memory.micro_batch_size, "engine": p.engine}

    def _run_plan(self, cfg: Config, c, loaded: bool, engine_sizes=None, free: dict | None = None):
        """The one plan of a run of `cfg` in this app (`core.engines.registry.plan_for`): an engine
        with headroom for the runs after it, sized as `engine_sizes` when it is already built, and
        what this process's torch holds (the model, the engine) counted as free since the plan
        counts those itself. The Train tab shows it; the run's trainer is handed it."""
        from core.engines.registry import plan_for

        return plan_for(cfg, self.device, hf_config=c, headroom=True, count_reserved=True, engine_sizes=engine_sizes,
                        weights_loaded=loaded, **(free or {}))

    def _plan_for_loaded(self, cfg: Config):
        """`_run_plan` for a run about to start on the loaded model and engine (on the worker); None,
        with a warning, when this model's config cannot be planned for (the micro-batch then
        follows the config: auto means 8)."""
        import warnings

        from core.engines.registry import built_sizes

        try:
            return self._run_plan(cfg, model_namespace(self._hf_config), True, built_sizes(self._engine))
        except Exception as e:  # never worth failing a run over
            warnings.warn(f"no memory plan for this run ({type(e).__name__}: {e})")
            return None

    def _engine_for_plan(self, cfg: Config, hf_config, loaded: bool, free: dict):
        """(EngineSizes or None, sentences): the engine a run on vLLM will use — the loaded one when
        it serves the run exactly (its sizes), else one built (or rebuilt) for it (None: the run's
        plan sizes it) — and the words that say which."""
        from core.engines.registry import backend_for, built_sizes, must_rebuild, plan_for

        if backend_for(cfg, self.device) != "vllm":
            return None, []
        current = self._engine if self._engine is not None and built_sizes(self._engine) is not None else None
        reasons = (self._engine_reasons(self._engine_cfg(cfg.model, cfg), free) if loaded else ["another base model"]
                   ) if current is not None else []
        if current is not None and not must_rebuild(reasons, current):
            sizes = built_sizes(current)
            key = "engine.loaded_waves" if reasons else "engine.loaded"
            shown = sizes
        else:
            reasons = must_rebuild(reasons, current) if current is not None else reasons
            sizes = None
            shown = plan_for(cfg, self.device, hf_config=hf_config, headroom=True, count_reserved=True,
                             **free).engine_sizes
            key = "engine.rebuilt" if current is not None else "engine.built"
        values = {"rank": shown.max_lora_rank, "context": shown.max_model_len,
                  "kv": f"{(shown.kv_cache_bytes or 0) / 2**30:.2f} GB", "reasons": "; ".join(reasons)}
        if key != "engine.rebuilt":
            values.pop("reasons")
        return sizes, [[(key, values)]]

    def _engine_configure(self, cfg: Config) -> None:
        """The run's settings that a built engine takes as they are (no rebuild)."""
        self._engine.configure(release_kv=cfg.run.vllm_free_kv_between_steps)

    def _engine_recover(self) -> None:
        """After a run ends, however it ended: nothing of it stays queued in the engine, and its
        memory is back for the chat (on the worker)."""
        if self._engine is None:
            return
        try:
            self._engine.reset()
        except Exception:  # an engine that cannot even reset is rebuilt by the next call
            traceback.print_exc()
            self._drop_model()


def model_key(cfg: ModelConfig) -> tuple:
    """Settings that need the base model loaded again when they change (LoRA settings and
    gradient checkpointing do not: they are set on each run's fresh adapter)."""
    from core.models.loading import resolve_model_path

    return (resolve_model_path(cfg.name_or_path), cfg.dtype, cfg.load_in_4bit)


def model_key_safe(cfg: ModelConfig):
    try:
        return model_key(cfg)
    except Exception:  # the default model cannot be found: nothing can match it
        return None


def read_hf_config(name_or_path: str) -> tuple[dict, str]:
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


def model_namespace(hf: dict):
    """A model's config.json (a dict) as the planner reads it: attributes, with the two fields some
    configs leave out filled as transformers does (no separate KV heads; untied embeddings)."""
    from types import SimpleNamespace

    return SimpleNamespace(**{**hf, "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
                              "tie_word_embeddings": hf.get("tie_word_embeddings", False)})
