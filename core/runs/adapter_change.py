"""How far a LoRA adapter has moved its base model, read from the adapter's own weights.

Owns: one number set per adapter — how many LoRA B matrices it has, how many hold anything but
zeros, and the size of the weight change it adds, ‖ΔW‖ with ΔW = scale · B · A per adapted layer.
PEFT starts every B at exactly zero, so an adapter whose B matrices are all still zero *is* the
base model: a "tuned" answer identical to the base's then says nothing about the prompt, it says
training never moved (no reward spread in any group: no advantage, no gradient; issue 30). The
arithmetic never forms ΔW: ‖s·B·A‖²_F = s² · Σ (BᵀB ⊙ AAᵀ), two r x r products per layer, so a
checkpoint of a 1.5B model is summarised in well under a second.

Refuses to know: which answers were compared, the UI, the trainer.

    >>> import torch
    >>> zero = [("q_proj", torch.ones(2, 4), torch.zeros(3, 2), 2.0)]
    >>> summarise(zero)
    {'matrices': 1, 'nonzero': 0, 'delta_norm': 0.0, 'largest_b': 0.0, 'moved': False}
    >>> moved = [("q_proj", torch.ones(2, 4), torch.full((3, 2), 0.5), 2.0)]  # ΔW = 2 · 1.0 everywhere (3 x 4)
    >>> summarise(moved)["delta_norm"], summarise(moved)["moved"]
    (6.928203230275509, True)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import torch

from core.runs.checkpoints import ADAPTER_CONFIG, ADAPTER_FILE  # peft's file names, named once


def summarise(layers: Iterable[tuple[str, torch.Tensor, torch.Tensor, float]]) -> dict:
    """{matrices, nonzero, delta_norm, largest_b, moved} of (layer name, A (r, in), B (out, r), scale) tuples."""
    matrices = nonzero = 0
    squared, largest = 0.0, 0.0
    for _, a, b, scale in layers:
        a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
        matrices += 1
        top = float(b.abs().max()) if b.numel() else 0.0
        largest = max(largest, top)
        if top == 0.0:
            continue  # ΔW = 0 exactly
        nonzero += 1
        squared += scale * scale * float(((b.T @ b) * (a @ a.T)).sum())  # ‖s·B·A‖²_F, (r, r) products
    return {"matrices": matrices, "nonzero": nonzero, "delta_norm": math.sqrt(max(squared, 0.0)),
            "largest_b": largest, "moved": nonzero > 0}


def _pattern(patterns: dict, layer: str, default):
    """PEFT's per-layer override (`rank_pattern`, `alpha_pattern`): a key naming the layer or its tail."""
    for key, value in (patterns or {}).items():
        if layer == key or layer.endswith("." + key):
            return value
    return default


def checkpoint_change(folder: str | Path) -> dict:
    """`summarise` of a saved adapter (peft's adapter_model.safetensors + adapter_config.json)."""
    from safetensors import safe_open

    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    alpha, rslora = float(config.get("lora_alpha") or 8), bool(config.get("use_rslora"))
    layers = []
    with safe_open(str(folder / ADAPTER_FILE), framework="pt") as f:
        keys = set(f.keys())
        for b_key in sorted(k for k in keys if ".lora_B." in k):
            a_key = b_key.replace(".lora_B.", ".lora_A.")
            if a_key not in keys:
                continue
            layer = b_key.split(".lora_B.")[0]
            a, b = f.get_tensor(a_key), f.get_tensor(b_key)
            r = a.shape[0]
            layer_alpha = float(_pattern(config.get("alpha_pattern"), layer, alpha))
            scale = layer_alpha / (math.sqrt(r) if rslora else r)
            layers.append((layer, a, b, scale))
    return summarise(layers)


def model_change(model, adapter_name: str = "default") -> dict:
    """`summarise` of an adapter held by a live peft model (the run being trained)."""
    layers = []
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if lora_b is None or adapter_name not in lora_b:
            continue
        layers.append((name, lora_a[adapter_name].weight, lora_b[adapter_name].weight,
                       float(module.scaling[adapter_name])))
    return summarise(layers)
