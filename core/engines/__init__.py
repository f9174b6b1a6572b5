"""Engines: the protocol (`base.py`), one module per backend (`hf.py`, `vllm_engine.py` with its
`vllm_compat.py`), and the one road from a run's config to an engine (`factory.py`).

Refuses to know: rewards, losses, chat templates (see `base.py`).
"""

from __future__ import annotations

from core.engines.base import AdapterRef, Completion, Engine, EngineInfo, RolloutStopped, SamplingSettings
from core.engines.factory import (backend_for, close_engine, engine_mismatch, make_engine, must_rebuild, make_policy_and_engine,
                                  pick_backend, vllm_settings_for)

__all__ = ["AdapterRef", "Completion", "Engine", "EngineInfo", "RolloutStopped", "SamplingSettings", "backend_for", "close_engine",
           "engine_mismatch", "make_engine", "must_rebuild", "make_policy_and_engine", "pick_backend", "vllm_settings_for"]
