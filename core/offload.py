"""Activation offload: keep only each decoder layer's input, in pinned CPU memory.

Owns: turning a decoder's forward into "checkpoint every layer, and park the one tensor each
checkpoint keeps (the layer's input) on the CPU". Peak activation memory then no longer grows
with the number of layers: during backward one layer is recomputed at a time from its input,
which is copied back just before it is needed.

How: `torch.utils.checkpoint` (non-reentrant) around each decoder layer keeps only the layer's
inputs; a `saved_tensors_hooks` pair moves every tensor that autograd saves inside the
decoder's forward to pinned CPU memory on a side CUDA stream (asynchronously, so the copy
overlaps the next layer's compute) and brings it back on unpack. On the CPU it is a no-op
copy, which keeps the code path testable without a GPU.

Refuses to know: losses, engines, LoRA.

    with offloaded_activations(model):
        loss = compute_loss(model(...)); loss.backward()
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.checkpoint import checkpoint


class _PinnedOffload:
    """pack: device tensor -> pinned CPU copy (async on a side stream); unpack: back to device."""

    def __init__(self, min_bytes: int = 1 << 16, params=()):
        self.min_bytes = min_bytes  # small tensors (masks, scalars) are not worth a copy
        # weights stay on the GPU anyway: copying a saved weight (the LM head the log-prob kernel
        # keeps, a frozen projection) out and back would cost time and save nothing
        self.param_ptrs = {p.data_ptr() for p in params}
        self.stream = torch.cuda.Stream() if torch.cuda.is_available() else None
        self.offloaded_bytes = 0

    def wants(self, t: torch.Tensor) -> bool:
        """Offload `t`? Activations yes; weights and small tensors no."""
        if isinstance(t, torch.nn.Parameter) or t.data_ptr() in self.param_ptrs:
            return False
        return t.numel() * t.element_size() >= self.min_bytes

    def pack(self, t: torch.Tensor):
        if not t.is_cuda or not self.wants(t):
            return t
        cpu = torch.empty(t.shape, dtype=t.dtype, layout=t.layout, pin_memory=True)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            cpu.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        t.record_stream(self.stream)  # keep t alive until the copy finished
        self.offloaded_bytes += t.numel() * t.element_size()
        return (cpu, t.device, event)

    def unpack(self, packed):
        if isinstance(packed, torch.Tensor):
            return packed
        cpu, device, event = packed
        event.synchronize()
        return cpu.to(device, non_blocking=True)


def _decoder_layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return decoder.layers


@contextlib.contextmanager
def checkpointed_layers(model):
    """Checkpoint every decoder layer: only each layer's input is kept for backward."""
    layers = _decoder_layers(model)
    originals = []
    for layer in layers:
        fwd = layer.forward
        # an instance attribute of its own, if the layer had one; else None: the class's method
        originals.append(layer.__dict__.get("forward"))

        def wrapped(*args, __fwd=fwd, **kwargs):
            if not torch.is_grad_enabled():
                return __fwd(*args, **kwargs)
            return checkpoint(__fwd, *args, use_reentrant=False, **kwargs)

        layer.forward = wrapped
    try:
        yield
    finally:
        for layer, own in zip(layers, originals):
            if own is None:
                # remove the wrapper rather than store the bound method on the layer: a bound
                # method kept in the layer's own __dict__ is a reference cycle, and the model
                # (its weights, LoRA and gradients) would outlive `del model` until a full gc
                del layer.forward
            else:
                layer.forward = own


@contextlib.contextmanager
def offloaded_activations(model, min_bytes: int = 1 << 16):
    """Per-layer checkpointing plus pinned-CPU offload of what autograd keeps. Yields the hook
    object (its `offloaded_bytes` says how much went to the CPU)."""
    hooks = _PinnedOffload(min_bytes, params=model.parameters())
    with checkpointed_layers(model), torch.autograd.graph.saved_tensors_hooks(hooks.pack, hooks.unpack):
        yield hooks
