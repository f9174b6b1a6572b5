"""The one reader of a GPU's free memory, for the planner and the engines.

Owns: `gpu_memory` — (free, total) bytes of the current CUDA device, optionally counting what this
process's torch holds as free (memory a rebuild or a plan that counts it itself would reuse);
`memory_snapshot`; and `use_expandable_segments`, the process's choice of torch's allocator mode.
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


def use_expandable_segments() -> bool:
    """Turn on torch's expandable segments for this process's CUDA allocations, unless the user's
    PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF names the setting (theirs wins); True when it is on.

    Why: torch's default segments cannot give back a partly used block, so what it reserves stays
    above what it hands out. On the H100 (2026-12-06, the 1.5B bench) that gap was 0.67 GiB at the
    fast mode's training peak (7.19 reserved, 6.52 allocated) and 0.48 GiB at the lowest-memory mode's
    rollout (4.26 / 3.78), all of it in the device peak. Expandable segments map memory in 2 MB pages
    and unmap what is free, so reserved follows allocated.
    The variable is written to the environment too: vLLM's sleep-mode pool reads it and turns the
    setting off inside its own pool, whose allocator cannot map such segments (pytorch#147851;
    `vllm_compat.cumem_pool_handles_expandable_segments` says whether this vLLM does). No-op without CUDA.
    """
    import os

    import torch

    if not torch.cuda.is_available():
        return False
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    if "expandable_segments" in conf:
        return "expandable_segments:True" in conf
    other = os.environ.get("PYTORCH_ALLOC_CONF", "")  # torch's newer name, which vLLM's pool does not read
    if "expandable_segments" in other:
        if "expandable_segments:True" not in other:
            return False
        # the user's choice, said where vLLM's sleep-mode pool looks too (else it would map inside it)
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = f"{conf},expandable_segments:True" if conf else "expandable_segments:True"
        return True
    conf = f"{conf},expandable_segments:True" if conf else "expandable_segments:True"
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = conf
    # the allocator may have started already (it reads the variable once): new segments follow this.
    # The whole string: torch resets every option absent from what it is handed (vLLM 0.31's cumem.py)
    torch.cuda.memory._set_allocator_settings(conf)
    return True
