"""Planner vs measurement, and activation offload's saving and cost, on one GPU in one run.

For each setting (model shape x completion length x activation mode) it builds the model with
random weights from a real configuration (bench/configs/), adds LoRA r16 on all projections,
takes one AdamW step so the optimizer state exists, then measures the peak of one micro-batch's
forward + backward through the trainer's own loss path (decoder -> fused log-prob -> GRPO loss)
and compares it with `core.planner`'s prediction of the same quantity.

    python bench/planner_check.py            # on a GPU, ~3 minutes; writes bench/results/planner_check.{json,md}
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import planner  # noqa: E402
from core.objectives import policy_loss  # noqa: E402
from core.trainer import completion_logprobs  # noqa: E402

GIB = 2**30
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(config_name: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(ROOT / "bench" / "configs" / f"{config_name}.json")
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, task_type="CAUSAL_LM"))
    return cfg, model


def one_step(model, cfg, mbs, prompt_len, comp_len, mode):
    from core.offload import checkpointed_layers, offloaded_activations

    V = cfg.vocab_size
    ids = torch.randint(0, V, (mbs, prompt_len + comp_len), device="cuda")
    attn = torch.ones_like(ids)
    comp = ids[:, prompt_len:]
    mask = torch.ones_like(comp)
    adv = torch.randn(mbs, device="cuda")
    ctx = {"none": contextlib.nullcontext(), "checkpoint": checkpointed_layers(model),
           "offload": offloaded_activations(model)}[mode]
    with ctx:
        logps = completion_logprobs(model, ids, attn, comp, mask, 1.0)
        loss, _ = policy_loss(logps, None, adv, mask, loss_type="dapo")
        loss.backward()


def measure(config_name, comp_len, mode, mbs=2, prompt_len=256):
    cfg, model = build(config_name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    one_step(model, cfg, 1, 16, 16, "none")  # allocate grads + optimizer state
    opt.step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    one_step(model, cfg, mbs, prompt_len, comp_len, mode)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated()
    p = planner.plan(cfg, lora_rank=16, lora_targets=TARGETS, num_sequences=mbs, prompt_length=prompt_len,
                     completion_length=comp_len, micro_batch_size=mbs, checkpointing=mode != "none",
                     offload=mode == "offload", engine="hf", free_bytes=10**15)
    del model, opt, params
    torch.cuda.empty_cache()
    return {"model": config_name, "completion_length": comp_len, "micro_batch": mbs, "mode": mode,
            "measured_peak_gb": peak / GIB, "static_gb": base / GIB, "predicted_peak_gb": p.training_peak / GIB,
            "error": p.training_peak / peak - 1, "seconds": dt}


def main():
    settings = [("qwen2.5-0.5b", L, m) for L in (1024, 4096) for m in ("none", "checkpoint")]
    settings += [("qwen2.5-1.5b", L, m) for L in (1024, 4096) for m in ("none", "checkpoint", "offload")]
    rows = []
    for name, L, mode in settings:
        try:
            r = measure(name, L, mode)
        except torch.OutOfMemoryError as e:
            r = {"model": name, "completion_length": L, "mode": mode, "error": f"OOM: {e}"}
        rows.append(r)
        print(json.dumps(r), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    (out / "planner_check.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Planner vs measured peak ({meta['gpu']}, torch {meta['torch']}, {meta['date']})", "",
             "One micro-batch of 2 sequences (256-token prompt + completion), LoRA r16, bf16, random weights.", "",
             "| model | completion | activations | measured peak GB | predicted GB | error | step s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if isinstance(r.get("error"), str):
            lines.append(f"| {r['model']} | {r['completion_length']} | {r['mode']} | {r['error'][:40]} | | | |")
            continue
        lines.append(f"| {r['model']} | {r['completion_length']} | {r['mode']} | {r['measured_peak_gb']:.2f} | "
                     f"{r['predicted_peak_gb']:.2f} | {r['error']:+.0%} | {r['seconds']:.2f} |")
    (out / "planner_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
