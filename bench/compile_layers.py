"""A micro-batch's forward + backward, eager against `model.compile_layers` (issue 31, part 2).

Why: at the 1.5B shape on an H100 (2026-12-06) lowest-memory mode (micro-batch 1) spends 1.71 s of
its step in forward/backward against 0.65 s for all 8 sequences in one pass: about 0.15 s of every
micro-batch is fixed cost (kernel launches and Python dispatch, ~18,000 aten ops a pass with LoRA
on all projections and checkpointing), the rest scales with tokens. Compiling the decoder layers
fuses most of those ops. This measures what it buys, on the trainer's own loss path (decoder ->
fused log-prob), LoRA r16 on every projection, checkpointing on, bf16.

    python bench/compile_layers.py                      # GPU: bench/configs/qwen2.5-1.5b.json, 1 and 8 x 1,280 tokens
    python bench/compile_layers.py --out bench/results/compile_layers_cpu    # CPU: the same 28 layers, narrow
    python bench/compile_layers.py --load-in-4bit       # GPU: the base in NF4 (bitsandbytes), as ours-4bit trains it

On a CPU the model keeps the 1.5B config's 28 layers and heads layout but is 64 wide, so the
time is mostly the per-op cost the compile removes (a proxy for launch-bound GPU passes, not a GPU
figure). Prints eager and compiled seconds per pass, their ratio and the first compile's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(config: dict, device: str, compiled: bool, folder: str = ""):
    """The model with its adapter; `folder`: load the base from there in 4-bit (the trainer's loader)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.config import ModelConfig
    from core.models.loading import add_lora, load_base_model

    torch.manual_seed(0)
    mc = ModelConfig(lora_r=16, lora_alpha=32, gradient_checkpointing=True, compile_layers=compiled,
                     load_in_4bit=bool(folder), name_or_path=folder or "unused")
    if folder:
        model = load_base_model(mc, device)
    else:
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16).to(device)
    model = add_lora(model, mc)
    with torch.no_grad():  # a trained-looking adapter: B non-zero
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    return model.train()


def one_pass(model, ids, completion: int) -> float:
    from core.rl.logprobs import completion_logprobs

    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    model.zero_grad(set_to_none=True)
    sync()
    t = time.perf_counter()
    mask = torch.ones(ids.size(0), completion, device=ids.device)
    lp = completion_logprobs(model, ids, torch.ones_like(ids), ids[:, -completion:], mask, 1.0)
    lp.sum().backward()
    sync()
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "bench/configs/qwen2.5-1.5b.json"))
    ap.add_argument("--prompt", type=int, default=0, help="prompt tokens (default: 256 on a GPU, 64 on a CPU)")
    ap.add_argument("--completion", type=int, default=0, help="completion tokens (default: 1,024 on a GPU, 256 on a CPU)")
    ap.add_argument("--micro-batches", type=int, nargs="*", default=[], help="default: 1 8 on a GPU, 1 4 on a CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="", help="write OUT.json and OUT.md")
    ap.add_argument("--load-in-4bit", action="store_true", help="GPU only: the base in NF4, loaded by the trainer's "
                    "loader from a folder of the random weights (written to a temporary folder first)")
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    if args.load_in_4bit and not gpu:
        ap.error("--load-in-4bit needs a CUDA GPU (bitsandbytes' NF4)")
    config = json.loads(Path(args.config).read_text())
    folder = ""
    if args.load_in_4bit:  # the random bf16 weights on disk, for from_pretrained's quantizing load
        import tempfile

        from transformers import AutoConfig, AutoModelForCausalLM

        folder = tempfile.mkdtemp(prefix="compile-4bit-")
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16).save_pretrained(folder)
    if not gpu:  # keep the layer count and the op structure, not the width
        config.update(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                      vocab_size=2048)
    P, T = args.prompt or (256 if gpu else 64), args.completion or (1024 if gpu else 256)
    sizes = args.micro_batches or ([1, 8] if gpu else [1, 4])
    rows = []
    for compiled in (False, True):
        model = build(config, device, compiled, folder)
        for b in sizes:
            ids = torch.randint(0, config["vocab_size"], (b, P + T), device=device)
            row = {"compiled": compiled, "micro_batch": b, "tokens": b * (P + T)}
            try:
                first = one_pass(model, ids, T)  # the compile (dynamic shapes: once) or eager's warm-up
                times = [one_pass(model, ids, T) for _ in range(args.repeats)]
                row.update(first_s=round(first, 3), median_s=round(statistics.median(times), 4))
            except Exception as e:  # e.g. a graph that does not compile: recorded, the rest still runs
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            if gpu:
                row["max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
                torch.cuda.reset_peak_memory_stats()
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
        if gpu:
            torch.cuda.empty_cache()
    by = {(r["compiled"], r["micro_batch"]): r for r in rows}
    where = torch.cuda.get_device_name() if gpu else f"CPU, {os.cpu_count()} cores (the 1.5B layout, 64 wide: per-op cost)"
    lines = [f"# Eager vs compiled decoder layers, one micro-batch's forward + backward ({time.strftime('%Y-%m-%d')})", "",
             f"{where}; torch {torch.__version__}; `{Path(args.config).name}`{'' if gpu else ' narrowed'}, LoRA r16 on all "
             f"projections, checkpointing, {'base in NF4 (bitsandbytes), ' if folder else ''}bf16; {P} + {T} tokens a "
             f"sequence; median of {args.repeats}.", "",
             "| micro-batch | eager s | compiled s | compiled / eager | first compiled pass s |", "|---:|---:|---:|---:|---:|"]
    for b in sizes:
        e, c = by[(False, b)], by[(True, b)]
        if "median_s" in e and "median_s" in c:
            lines.append(f"| {b} | {e['median_s']:.3f} | {c['median_s']:.3f} | {c['median_s'] / e['median_s']:.2f}x | "
                         f"{c['first_s']:.1f} |")
        else:
            lines.append(f"| {b} | {e.get('median_s', e.get('error'))} | {c.get('median_s', c.get('error'))} | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out + ".md").write_text(text)
        Path(args.out + ".json").write_text(json.dumps({"device": where, "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
