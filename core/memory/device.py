"""The one reader of a GPU's free memory, for the planner and the engines.

Owns: `gpu_memory` — (free, total) bytes of the current CUDA device, optionally counting what this
process's torch holds as free (memory a rebuild or a plan that counts it itself would reuse).
Refuses to know: the arithmetic (`sizes.py`, `planner.py`); RAM (`ram.py`). Imports torch inside
the function only, so the arithmetic rooms stay free of it.
"""

from __future__ import annotations


def gpu_memory(count_reserved: bool = False, device=None) -> tuple[int, int] | None:
    """(free, total) bytes of the CUDA device, or None without one. With `count_reserved`, what
    torch's allocator holds for this process counts as free (the model and engine a plan counts
    itself, or a rebuild lets go)."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device)
    if count_reserved:
        free = min(total, free + torch.cuda.memory_reserved(device))
    return int(free), int(total)


def memory_snapshot(device=None) -> dict | None:
    """Where the GPU's memory is at this moment, in GiB, or None without a GPU: the device's used
    memory (every allocator, vLLM's own pool and the CUDA context included) beside what torch's
    caching allocator has reserved and handed out. The engines put one at each edge of a rollout
    into `rollout_stats`, so a record says which part of the rollout holds the step's peak."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device)
    gib = 2**30
    return {"device_used": round((total - free) / gib, 3),
            "torch_reserved": round(torch.cuda.memory_reserved(device) / gib, 3),
            "torch_allocated": round(torch.cuda.memory_allocated(device) / gib, 3)}
