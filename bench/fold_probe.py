"""The merged rollout's fold and unfold alone: milliseconds a call, with the fused fold's kept pairs in
groups (core/engines/merged_lora.GROUP_BYTES, the default) and one group a layer (two buffers and two
pinned host copies a layer, as before 2026-12-07; the per-tile numbers stay in one buffer either way,
so the ratio understates the change: compare `time/fold` in the records of before and after too).

Why (issue 31): on the H100 (2026-12-07, bench/results/2026-12-07_h100_l) a fast-mode step at the
1.5B shape spent 0.15-0.22 s folding and 0.04 s unfolding 196 weights, and the app's steps on the
135M model 0.115 s + 0.05 s of a 1.18 s median step, against ~0.5 ms of kernel time for the largest
weight: host work a layer, not bandwidth. This times both layouts on the same model, same adapter, with
torch's cache emptied before each fold as the engine does (and once kept, for what that costs).

    python bench/fold_probe.py [--profile]           # GPU: bench/configs/qwen2.5-1.5b.json, LoRA r16 on all projections
    python bench/fold_probe.py --config bench/configs/qwen2.5-0.5b.json
    python bench/fold_probe.py --tiny --out /tmp/fp   # CPU smoke: 2 layers, PyTorch fold (no Triton on a CPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(config: dict, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.config import ModelConfig
    from core.models.loading import add_lora

    torch.manual_seed(0)
    with torch.device(device):  # built where it runs: a 1.5B model's random init on the GPU, not the host
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16)
    model = add_lora(model, ModelConfig(lora_r=16, lora_alpha=32, name_or_path="unused"))
    with torch.no_grad():  # a trained-looking adapter: B non-zero
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    return model


def time_layout(model, group_bytes: int, reps: int, empty_cache: bool = True) -> dict:
    """`empty_cache`: torch's cached blocks go back to the driver before each fold, as
    VLLMEngine.rollout does (so every buffer the fold asks for is a fresh cudaMalloc there)."""
    import core.engines.merged_lora as ml

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    real, ml.GROUP_BYTES = ml.GROUP_BYTES, group_bytes
    fold_ms, unfold_ms = [], []
    try:
        for _ in range(reps + 1):  # the first call compiles the kernels: left out
            if cuda and empty_cache:
                torch.cuda.empty_cache()
            sync()
            t0 = time.perf_counter()
            record = ml.fold_adapter(model)
            sync()
            t1 = time.perf_counter()
            ml.unfold_adapter(record)
            sync()
            fold_ms.append((t1 - t0) * 1e3)
            unfold_ms.append((time.perf_counter() - t1) * 1e3)
    finally:
        ml.GROUP_BYTES = real
    stats = record.stats()
    return {"group_bytes": group_bytes, "empty_cache": empty_cache, "groups": len(record.groups), "fused_layers": stats["fused_layers"],
            "layers": stats["layers"], "kept_share": round(stats["kept_share"], 5), "kept_on": stats["kept_on"],
            "fold_ms_median": round(statistics.median(fold_ms[1:]), 2),
            "unfold_ms_median": round(statistics.median(unfold_ms[1:]), 2),
            "fold_ms": [round(x, 2) for x in fold_ms], "unfold_ms": [round(x, 2) for x in unfold_ms]}


def profile_fold(model, top: int = 12) -> dict:
    """One fold + unfold under torch.profiler: the host's top ops by self CPU time, and the device's busy time
    (where the time goes when the wall time is far above the kernels': launches, allocations, copies, syncs)."""
    import core.engines.merged_lora as ml
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # as the engine does before a fold
    with profile(activities=acts) as prof:
        ml.unfold_adapter(ml.fold_adapter(model))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    events = prof.key_averages()
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    device_us = sum(getattr(e, "self_device_time_total", 0) or 0 for e in events)
    return {"host_top": [{"op": e.key[:60], "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2)}
                         for e in rows],
            "host_ms": round(sum(e.self_cpu_time_total for e in events) / 1e3, 2), "device_ms": round(device_us / 1e3, 2)}


def main(argv=None) -> dict:
    import core.engines.merged_lora as ml

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "bench" / "configs" / "qwen2.5-1.5b.json"))
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="CPU smoke: the config cut to 2 narrow layers")
    p.add_argument("--out", default=None, help="folder for fold_probe.json")
    p.add_argument("--profile", action="store_true", help="also one fold + unfold under torch.profiler")
    args = p.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    if args.tiny:
        config.update(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build(config, device)
    rec = {"config": Path(args.config).name, "tiny": args.tiny, "device": torch.cuda.get_device_name()
           if device == "cuda" else "cpu", "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "layouts": [time_layout(model, ml.GROUP_BYTES, args.reps), time_layout(model, 1, args.reps),
                       time_layout(model, ml.GROUP_BYTES, args.reps, empty_cache=False)]}
    grouped, per_layer, _ = rec["layouts"]
    rec["fold_ratio"] = round(grouped["fold_ms_median"] / max(1e-9, per_layer["fold_ms_median"]), 3)
    rec["unfold_ratio"] = round(grouped["unfold_ms_median"] / max(1e-9, per_layer["unfold_ms_median"]), 3)
    for lay in rec["layouts"]:
        print(f"groups {lay['groups']:4d}, cache {'emptied' if lay['empty_cache'] else 'kept   '} "
              f"({lay['fused_layers']} of {lay['layers']} layers fused, kept "
              f"{lay['kept_share']:.4f} on {lay['kept_on']}): fold {lay['fold_ms_median']:.2f} ms, "
              f"unfold {lay['unfold_ms_median']:.2f} ms")
    print(f"grouped / one group a layer: fold {rec['fold_ratio']}x, unfold {rec['unfold_ratio']}x")
    if args.profile:
        rec["profile"] = prof = profile_fold(model)
        print(f"profiled fold + unfold: host ops {prof['host_ms']} ms, device {prof['device_ms']} ms; top host ops:")
        for row in prof["host_top"]:
            print(f"  {row['self_cpu_ms']:8.2f} ms  {row['calls']:5d} x  {row['op']}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fold_probe.json").write_text(json.dumps(rec, indent=1))
    return rec


if __name__ == "__main__":
    main()
