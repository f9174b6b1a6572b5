"""Where a rollout's decode time goes, on the engine a finished `ours` child has built (`--decode-probe`).

Owns: three measurements of `engine.generate`, the call every rollout and chat answer goes
through, made after the child's steps on the same engine (the base model, no adapter):
  1. `per_step_ms`: wall time per decode step at n = 1, 8 and 32 sequences (one prompt, every
     completion forced to `tokens` tokens). Flat in n means a fixed cost per step (launches, the
     scheduler, Python), not the weights' bytes, sets the pace. `per_step_ms_unseeded`: n = 8
     again without a request seed (vLLM then samples through its own generator, not one per sequence).
  2. `device_busy`: the same n = 8 call under `torch.profiler` (CPU + CUDA activities): the sum of
     device kernel time over the wall time. CUPTI sees kernels replayed inside CUDA graphs, so
     this is the GPU's busy share also with vLLM's graphs on; a share well under 1 means the GPU
     waits on the host between steps.
     `kernels_top`: the device events of that call grouped by name, the largest first, each with
     its microseconds and count per decode step: which kernels a step's time is made of.
  3. `host_top`: the same call under cProfile, the functions with the most own (tottime) host
     time, with the call that waits for the device's result among them.
  4. `hf_static` (optional, `model` given): the same n = 8 sampling through transformers'
     `generate` with a static KV cache, which transformers compiles (torch.compile with CUDA
     graphs, its `CompileConfig` default) on the trainer's own model with the adapter off: the
     base weights are the same tensors vLLM decodes. Timed twice, the first call holding the
     compile. It asks whether a graph-replayed decode loop beats vLLM's step at this batch.
A memory-bandwidth floor per step (the weights' bytes over the GPU's bandwidth, given by the
caller) sits beside the measured step, so the record says how far the decode is from it.

Refuses to know: which system built the engine, the training step, rendering.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import time


def _timed(engine, prompt_ids, n: int, tokens: int, sync, seed: int | None = 0) -> float:
    from core.engines.base import SamplingSettings

    s = SamplingSettings(n=n, temperature=1.0, top_p=1.0, max_tokens=tokens, seed=seed, ignore_eos=True)
    sync()
    t = time.perf_counter()
    out = engine.generate([list(prompt_ids)], s)
    sync()
    wall = time.perf_counter() - t
    got = sorted(len(c.token_ids) for c in out[0])
    if got[0] != tokens or got[-1] != tokens:
        raise RuntimeError(f"decode probe: asked {n} x {tokens} tokens, got {got[0]}-{got[-1]}")
    return wall


def _device_events(prof) -> list[tuple[str, float]]:
    """(name, microseconds) of each device event: kernels, copies and sets, not the user-annotation
    ranges that span them (as torch's own tables leave them out)."""
    out = []
    for e in prof.events():
        dev = getattr(e, "device_type", None)
        if dev is None or not str(dev).endswith("CUDA") or getattr(e, "is_user_annotation", False):
            continue
        out.append((e.name, e.self_device_time_total if hasattr(e, "self_device_time_total") else e.cuda_time_total))
    return out


def kernel_table(events: list[tuple[str, float]], steps: int, k: int = 20) -> list[dict]:
    """Device events grouped by name, the k with the most time: {"kernel", "us_per_step", "per_step"}.

    >>> kernel_table([("gemm", 30.0), ("norm", 2.0), ("gemm", 30.0), ("norm", 2.0)], steps=2)
    [{'kernel': 'gemm', 'us_per_step': 30.0, 'per_step': 1.0}, {'kernel': 'norm', 'us_per_step': 2.0, 'per_step': 1.0}]
    """
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    for name, us in events:
        total[name] = total.get(name, 0.0) + us
        count[name] = count.get(name, 0) + 1
    rows = [{"kernel": name[:120], "us_per_step": round(us / steps, 2), "per_step": round(count[name] / steps, 2)}
            for name, us in total.items()]
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:k]


def host_top(stats: pstats.Stats, k: int = 15) -> list[dict]:
    """The k functions with the most own host time: {"fn", "tottime_s", "calls"}."""
    rows = []
    for (path, line, name), (_cc, calls, tottime, _cum, _callers) in stats.stats.items():
        rows.append({"fn": f"{'/'.join(path.rsplit('/', 2)[-2:])}:{line}({name})",
                     "tottime_s": round(tottime, 4), "calls": calls})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:k]


def hf_static(model, prompt_ids, n: int, tokens: int, pad_id: int) -> dict:
    """Two timed `generate` calls of n x `tokens` sampled tokens with a static cache (module docstring, 4)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)] * n, device=device)
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
              use_cache=True, cache_implementation="static", pad_token_id=pad_id,
              attention_mask=torch.ones_like(ids))
    rec: dict = {"n": n, "tokens": tokens}
    was_training = model.training
    model.eval()
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    try:
        with ctx, torch.no_grad():
            for key in ("first_s", "second_s"):
                sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
                sync()
                t = time.perf_counter()
                out = model.generate(ids, **kw)
                sync()
                rec[key] = round(time.perf_counter() - t, 3)
        rec["new_tokens"] = int(out.shape[1] - ids.shape[1])
        rec["per_step_ms"] = round(rec["second_s"] / tokens * 1e3, 3)
    finally:
        model.train(was_training)
    return rec


def decode_probe(engine, prompt_ids, tokens: int = 256, ns=(1, 8, 32), floor_ms: float | None = None,
                 model=None, pad_id: int = 0) -> dict:
    """The record described in the module docstring. `floor_ms`: the bandwidth floor of one decode step."""
    import torch

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rec: dict = {"tokens": tokens, "prompt_tokens": len(prompt_ids), "per_step_ms": {}}
    _timed(engine, prompt_ids, ns[0], 8, sync)  # warm: any first-call work out of the timings
    for n in ns:
        rec["per_step_ms"][str(n)] = round(_timed(engine, prompt_ids, n, tokens, sync) / tokens * 1e3, 3)
    n_mid = 8 if 8 in ns else ns[0]
    # a request with a seed samples through its own generators (vLLM: one per sequence, a kernel each
    # a step); without one, through the engine's: what that costs a step
    rec["per_step_ms_unseeded"] = {str(n_mid): round(_timed(engine, prompt_ids, n_mid, tokens, sync, None)
                                                     / tokens * 1e3, 3)}
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        wall = _timed(engine, prompt_ids, n_mid, tokens, sync)
    events = _device_events(prof)
    busy = sum(us for _, us in events) / 1e6
    kernel_ms = busy / tokens * 1e3
    copies = sum(1 for name, _ in events if "memcpy" in name.lower() or "memset" in name.lower())
    rec["device_busy"] = {
        "n": n_mid, "wall_s": round(wall, 4), "kernel_s": round(busy, 4),
        # the profiler slows the host: its wall is longer than the step without it
        "share_of_profiled_wall": round(busy / wall, 3) if cuda and wall > 0 else None,
        "kernel_ms_per_step": round(kernel_ms, 3) if cuda else None,
        "share_of_unprofiled_step": round(kernel_ms / rec["per_step_ms"][str(n_mid)], 3) if cuda else None,
        "device_events_per_step": round((len(events) - copies) / tokens, 1) if cuda else None,
        "copies_per_step": round(copies / tokens, 1) if cuda else None,
        "kernels_top": kernel_table(events, tokens) if cuda else None}
    pr = cProfile.Profile()
    pr.enable()
    wall = _timed(engine, prompt_ids, n_mid, tokens, sync)
    pr.disable()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    rec["host_profile"] = {"n": n_mid, "wall_s_under_cprofile": round(wall, 4), "top": host_top(st)}
    if model is not None:
        try:
            rec["hf_static"] = hf_static(model, prompt_ids, n_mid, tokens, pad_id)
        except Exception as e:  # noqa: BLE001 - an answer too: this path does not run here
            rec["hf_static"] = {"error": f"{type(e).__name__}: {e}"[:400]}
    if floor_ms is not None:
        rec["bandwidth_floor_ms_per_step"] = round(floor_ms, 3)
        rec["per_step_over_floor"] = {n: round(v / floor_ms, 2) for n, v in rec["per_step_ms"].items()}
    return rec
