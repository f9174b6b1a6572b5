"""AdamW's moments in pinned host memory between updates (lowest-memory mode on a GPU).

Owns: moving an optimizer's per-parameter state tensors (AdamW's `exp_avg`, `exp_avg_sq`) to
pinned CPU buffers after each update and back to the parameters' device just before the next,
and the rule for when a run does it (`wanted`). For LoRA the moments are 8 bytes a trainable
parameter (0.14 GiB for Qwen2.5-1.5B at rank 16): memory the rollout and the forward/backward
never read, held on the GPU through both. The update itself still runs on the GPU (the same
kernels, so the same numbers); the copies are ~2 x the moments' size over PCIe a step (~15 ms at
1.5B, rank 16), against a step of seconds in that mode.

Refuses to know: which optimizer or schedule, losses, engines, checkpoints (a saved state holds
host tensors; a loaded one is put back on the host by calling `to_host` again).

    states = HostOptimizerStates(optimizer)
    with states.on_device():
        optimizer.step()
"""

from __future__ import annotations

import contextlib

import torch


def wanted(cfg, device) -> bool:
    """A run keeps its optimizer's moments on the host: a GPU, and micro-batch 0 (auto) picking
    for the lowest memory (`algorithm.auto_micro_batch`), the mode whose peak is the point."""
    from core.memory.sizes import moments_on_host

    a = cfg.algorithm
    return torch.device(device).type == "cuda" and moments_on_host(a.micro_batch_size, a.auto_micro_batch)


class HostOptimizerStates:
    """The state tensors of `optimizer` live in pinned host buffers except inside `on_device()`.

    Only tensors on a CUDA device move (a scalar `step` stays where torch keeps it: the CPU);
    the host buffers are allocated once and reused. `bytes_on_host` says how much moved (torch's
    pinned allocator rounds each buffer up to a power of two: the host holds up to ~1.7x that).
    `simulate=True` moves CPU tensors into separate CPU buffers by the same bookkeeping (the
    tests' CPU path).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, simulate: bool = False):
        self.optimizer = optimizer
        self.simulate = simulate
        self._host: dict[tuple[int, str], torch.Tensor] = {}  # (param id, key) -> pinned buffer
        self._device: dict[tuple[int, str], torch.device] = {}  # where each one goes back to

    @property
    def bytes_on_host(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._host.values())

    def _moves(self, t) -> bool:
        return torch.is_tensor(t) and t.dim() > 0 and (t.device.type == "cuda" or self.simulate)

    def to_host(self) -> None:
        """Every state tensor on the device copied into its host buffer and replaced by it; the
        device copies are dropped (their memory goes back to torch's cache). The copies are queued
        together and waited for once: a checkpoint may read the host tensors right after."""
        moved = False
        for p, state in self.optimizer.state.items():
            for key, t in list(state.items()):
                slot = (id(p), key)
                buf = self._host.get(slot)
                if t is buf or not self._moves(t):
                    continue
                if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
                    buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=not self.simulate)
                    self._host[slot] = buf
                buf.copy_(t, non_blocking=not self.simulate)
                self._device[slot] = t.device
                state[key] = buf
                moved = True
        if moved and not self.simulate:  # one wait for all the copies: the buffers are whole when this returns
            torch.cuda.current_stream().synchronize()

    def to_device(self) -> None:
        """Each state tensor `to_host` moved back on its device (asynchronous from pinned memory:
        the update's kernels run after the copies, on the same stream)."""
        for p, state in self.optimizer.state.items():
            for key, t in list(state.items()):
                slot = (id(p), key)
                if t is not None and t is self._host.get(slot):
                    state[key] = t.clone() if self.simulate else t.to(self._device[slot], non_blocking=True)

    @contextlib.contextmanager
    def on_device(self):
        """The update's moments on the GPU inside, on the host after (also when the update raises).

        torch's cache goes back to the driver first: it holds the forward/backward's freed
        activations in the large-block pool, and the moments and the update's temporaries (one
        small tensor a LoRA matrix) come from the small-block pool, which cannot reuse them, so
        they would be mapped on top (on 2026-12-06 11:54, H100, 1.5B r16: the moments left the
        GPU, 0.17 GiB off the peak allocated, but the peak reserved fell only 0.04). The
        forward/backward maps its pages again next step either way where the vLLM rollout hands
        the cache back before it (it does when it releases its KV cache, as in this mode)."""
        if not self.simulate and torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            self.to_device()  # (a failure half-way: what came back goes out again below)
            yield
        finally:
            self.to_host()
