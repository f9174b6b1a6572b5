"""The policy's weights as a stream of (checkpoint name, tensor), the adapter merged in or not.

Owns: `model_weights`, for an engine that keeps its own copy of the base (vLLM serving fp8
weights, which the trainer's bf16 base cannot be a view of): each merged rollout sends it the
tuned model, and before anything else samples it gets the base back. The stream walks the
base model in module order, so an engine that loads layer by layer holds one layer's tensors at
a time; names are the checkpoint's (`model.layers.0.self_attn.q_proj.weight`, peft's wrappers
left out); a weight tied to another goes once, under its first name (the embedding, not a tied
LM head). A LoRA layer's weight is, with `merged`, W + scale x B @ A computed as
`merged_lora.fold_adapter` computes it (in fp32 row chunks, rounded once to W's dtype), so a
quantizing engine quantizes the very bits a bf16 fold would serve; without `merged`, W itself.

Refuses to know: engines, vLLM, quantization, when a stream is needed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from core.engines.merged_lora import CHUNK_ELEMENTS, TRAIN_ADAPTER, _chunks, _delta


def _merged(layer, adapter: str) -> torch.Tensor:
    W = layer.get_base_layer().weight
    out = torch.empty_like(W)
    for r0, r1 in _chunks(W, CHUNK_ELEMENTS):
        out[r0:r1] = (W[r0:r1] + _delta(layer, adapter, r0, r1)).to(W.dtype)  # fp32 sum, one rounding
    return out


@torch.no_grad()  # on a generator function torch sets it around each step, not for the consumer
def model_weights(model, adapter: str = TRAIN_ADAPTER, *, merged: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, tensor) for every parameter of `model`'s base (a peft model or a plain
    transformers one), LoRA layers holding `adapter` merged when `merged` (see the module docstring).
    Frozen parameters go as they are (no copy); a merged weight is a new tensor, made when reached."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    seen: set[int] = set()

    def walk(module, prefix: str):
        if isinstance(module, LoraLayer):
            inner = module.get_base_layer()
            if merged and adapter in module.lora_A and module.merged_adapters == []:
                yield prefix + "weight", _merged(module, adapter)
            else:
                yield prefix + "weight", inner.weight.detach()
            seen.add(id(inner.weight))
            if inner.bias is not None:
                yield prefix + "bias", inner.bias.detach()
            return  # lora_A / lora_B / dropout are the adapter's, not the checkpoint's
        for name, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield prefix + name, p.detach()
        for name, child in module.named_children():
            yield from walk(child, f"{prefix}{name}.")

    yield from walk(base, "")


__all__ = ["model_weights"]
