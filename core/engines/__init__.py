"""Engines: the protocol (`base.py`) and its backends, one module each (`hf.py`; `vllm` on a GPU).

`make_engine` picks the backend: vLLM when asked for, or on 'auto' when a CUDA GPU and the
`vllm` package are both present; Hugging Face `generate` otherwise.
"""

from __future__ import annotations

import importlib.util

import torch

from core.engines.base import AdapterRef, Completion, Engine, EngineInfo, SamplingSettings

__all__ = ["AdapterRef", "Completion", "Engine", "EngineInfo", "SamplingSettings", "make_engine", "pick_backend"]


def pick_backend(requested: str = "auto") -> str:
    if requested in ("hf", "vllm"):
        return requested
    has_vllm = importlib.util.find_spec("vllm") is not None
    return "vllm" if (torch.cuda.is_available() and has_vllm) else "hf"


def make_engine(backend: str, model, tokenizer, **kwargs) -> Engine:
    """An engine over `model` (the trainer's peft model) for the chosen backend."""
    backend = pick_backend(backend)
    if backend == "hf":
        from core.engines.hf import HFEngine

        return HFEngine(model, tokenizer, **kwargs)
    raise NotImplementedError(
        "the vLLM backend is not built yet; use engine='hf'"
    )
