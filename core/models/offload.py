"""Activation offload: keep only each decoder layer's input, in pinned CPU memory.

Owns: turning a decoder's forward into "checkpoint every layer, and park the one tensor each
checkpoint keeps (the layer's input) on the CPU". Peak activation memory then no longer grows
with the number of layers: during backward one layer is recomputed at a time from its input,
which is copied back just before it is needed.

How: `torch.utils.checkpoint` (non-reentrant) around each decoder layer keeps only the layer's
inputs; a `saved_tensors_hooks` pair moves every tensor that autograd saves inside the
decoder's forward to pinned CPU memory on a side CUDA stream (asynchronously, so the copy
overlaps the next layer's compute; a tensor every layer saves, like RoPE's cos / sin, goes out
once) and brings it back in backward one layer ahead, on that side stream, so the copy back
overlaps the current layer's recompute and backward (double buffering). On the CPU it is a
no-op; `simulate=True` runs the same bookkeeping on CPU copies, which keeps it testable there.

Refuses to know: losses, engines, LoRA.

    with offloaded_activations(model):
        loss = compute_loss(model(...)); loss.backward()
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.utils.checkpoint import checkpoint


class _Host:
    """One saved tensor's host copy; shared by every pack of the same tensor object at the same
    version (RoPE's cos / sin and the attention mask are saved by every layer: copied out once).
    `source` is a weak reference: a freed tensor whose address a new one reuses never matches."""

    __slots__ = ("cpu", "device", "event", "nbytes", "source", "version")

    def __init__(self, cpu, device, event, nbytes, source=None, version=0):
        self.cpu, self.device, self.event, self.nbytes = cpu, device, event, nbytes
        self.source, self.version = source, version


class _Slot:
    """One pack call: its host copy, its place in pack order, and a prefetched device copy."""

    __slots__ = ("host", "index", "ready", "ready_event", "used")

    def __init__(self, host: _Host, index: int):
        self.host, self.index, self.ready, self.ready_event, self.used = host, index, None, None, False


class _PinnedOffload:
    """pack: device tensor -> pinned CPU copy (async on a side stream); unpack: back to the device.

    Backward unpacks in reverse pack order (layer L-1's input first, then L-2's, ...). So each
    unpack also starts the copy back of the next big slot below it (the previous layer's input,
    and the small slots on the way) on the side stream (double buffering: that H2D runs while
    this layer's recompute and backward compute); the unpack of a prefetched slot only makes the
    compute stream wait for its copy, and nothing waits on the CPU. One extra layer input lives
    on the device for it. `simulate=True` runs the same bookkeeping on CPU tensors (tests).
    """

    def __init__(self, min_bytes: int = 1 << 16, params=(), *, prefetch: bool = True, simulate: bool = False):
        self.min_bytes = min_bytes  # small tensors (masks, scalars) are not worth a copy
        # weights stay on the GPU anyway: copying a saved weight (the LM head the log-prob kernel
        # keeps, a frozen projection) out and back would cost time and save nothing
        self.param_ptrs = {p.data_ptr() for p in params}
        self.stream = torch.cuda.Stream() if torch.cuda.is_available() and not simulate else None
        self.prefetch, self.simulate = prefetch, simulate
        self.offloaded_bytes = 0
        self.slots: list[_Slot] = []
        self._hosts: dict[tuple, _Host] = {}  # same tensor packed again -> its one host copy
        self._largest = 0
        self._lowest_used = None  # the lowest slot index unpacked so far
        self.counts = {"slots": 0, "shared": 0, "prefetched": 0, "waited": 0}

    def wants(self, t: torch.Tensor) -> bool:
        """Offload `t`? Activations yes; weights and small tensors no."""
        if isinstance(t, torch.nn.Parameter) or t.data_ptr() in self.param_ptrs:
            return False
        return t.numel() * t.element_size() >= self.min_bytes

    def pack(self, t: torch.Tensor):
        if not (t.is_cuda or self.simulate) or not self.wants(t):
            return t
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
        host = self._hosts.get(key)
        if host is not None and host.source() is t and host.version == t._version:
            self.counts["shared"] += 1
        else:
            host = self._copy_out(t)
            host.source, host.version = weakref.ref(t), t._version
            self._hosts[key] = host
        slot = _Slot(host, len(self.slots))
        self.slots.append(slot)
        self.counts["slots"] += 1
        self._largest = max(self._largest, host.nbytes)
        return slot

    def _copy_out(self, t: torch.Tensor) -> _Host:
        nbytes = t.numel() * t.element_size()
        self.offloaded_bytes += nbytes
        if self.stream is None:  # simulate: a plain CPU copy
            return _Host(t.detach().clone(), t.device, None, nbytes)
        cpu = torch.empty(t.shape, dtype=t.dtype, layout=t.layout, pin_memory=True)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            cpu.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        t.record_stream(self.stream)  # keep t alive until the copy finished
        return _Host(cpu, t.device, event, nbytes)

    def _copy_in(self, host: _Host, on_side_stream: bool):
        """(device tensor, event the consumer must wait for, or None)."""
        if self.stream is None:
            return host.cpu.clone(), None
        if not on_side_stream:
            torch.cuda.current_stream().wait_event(host.event)  # the copy out is done (no CPU wait)
            return host.cpu.to(host.device, non_blocking=True), None
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(host.event)
            out = host.cpu.to(host.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return out, ready

    def unpack(self, packed):
        if isinstance(packed, torch.Tensor):
            return packed
        slot = packed
        if slot.ready is not None:
            out, event = slot.ready, slot.ready_event
            slot.ready = slot.ready_event = None
            if event is not None:
                torch.cuda.current_stream().wait_event(event)
                out.record_stream(torch.cuda.current_stream())  # made on the side stream, used here
            self.counts["prefetched"] += 1
        else:
            out, _ = self._copy_in(slot.host, on_side_stream=False)
            self.counts["waited"] += 1
        slot.used = True
        self._lowest_used = slot.index if self._lowest_used is None else min(self._lowest_used, slot.index)
        if self.prefetch:
            self._prefetch_below(self._lowest_used)
        return out

    def _prefetch_below(self, index: int) -> None:
        """Start the copy back of the slots below `index` down to the next big one (a layer's input)."""
        big = self._largest // 2
        for slot in reversed(self.slots[:index]):
            if slot.used:
                continue
            if slot.ready is None:
                slot.ready, slot.ready_event = self._copy_in(slot.host, on_side_stream=True)
            if slot.host.nbytes >= big:
                return


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
def offloaded_activations(model, min_bytes: int = 1 << 16, *, prefetch: bool = True, simulate: bool = False):
    """Per-layer checkpointing plus pinned-CPU offload of what autograd keeps. Yields the hook
    object (`offloaded_bytes`: how much went to the CPU; `counts`: slots, shared, prefetched,
    waited)."""
    hooks = _PinnedOffload(min_bytes, params=model.parameters(), prefetch=prefetch, simulate=simulate)
    with checkpointed_layers(model), torch.autograd.graph.saved_tensors_hooks(hooks.pack, hooks.unpack):
        yield hooks
