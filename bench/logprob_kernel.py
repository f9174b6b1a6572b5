"""Benchmark: per-token log-probs from hidden states, naive vs chunked reference vs Triton.

Owns: one measurement. For 8 x 2048 tokens of Qwen2.5-1.5B (H=1536, V=151936) in bf16, each
backend runs forward + backward of sum(g * logp) (entropy returned and detached, as the
trainer logs it), twice: with a frozen LM head (LoRA: grad to hidden only) and with a trained
one (grad to weight too). For each it reports
  peak memory: torch.cuda.max_memory_allocated() during the step minus what was allocated
               before it (the inputs), so gradients and every temporary count;
  time:        CUDA events around the step, after warm-up; the median of --iters runs;
  time of the forward alone under no_grad (old-policy and reference-model log-probs);
  max |logp - exact|, exact being log_softmax of float32 logits, as a check of what was timed.
It prints a markdown table with ratios against naive and writes bench/results/logprob_kernel.json
and .md with the torch and triton versions and the GPU's name.

Run:  python bench/logprob_kernel.py                 (on a GPU)
      python bench/logprob_kernel.py --cpu-smoke     (tiny shapes on the CPU; writes to a temp
                                                     dir unless --out-dir; with TRITON_INTERPRET=1
                                                     it runs the Triton kernels interpreted too)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from kernels import HAVE_TRITON, TileConfig, naive_token_logprobs, token_logprobs  # noqa: E402
from kernels.logprob_triton import DEFAULT_TILES, INTERPRETED, triton_token_logprobs  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ---------------------------------------------------------------------------- one step


def make_step(backend, hidden, weight, targets, upstream, temperature, tile_config, train=True):
    """A closure running forward (+ backward when train) once; returns the detached logps."""

    def logprobs():
        if backend == "triton" and tile_config is not None:
            return triton_token_logprobs(hidden, weight, targets, temperature, return_entropy=True,
                                         config=tile_config)
        return token_logprobs(hidden, weight, targets, temperature, return_entropy=True, backend=backend)

    def step():
        hidden.grad = None
        weight.grad = None
        if not train:  # old-policy / reference-model log-probs: no graph at all
            with torch.no_grad():
                return logprobs()[0]
        logps, entropy = logprobs()
        entropy = entropy.detach()  # logged, not trained on
        (logps * upstream).sum().backward()
        return logps.detach()

    step.clear = lambda: setattr(hidden, "grad", None) or setattr(weight, "grad", None)
    return step


def measure(step, device, warmup, iters):
    """(median ms, peak extra MiB or None, last logps) of step()."""
    for _ in range(warmup):
        logps = step()
    del logps
    step.clear()  # the last run's gradients are not inputs: they count in the peak
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        logps = step()
        torch.cuda.synchronize()
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            logps = step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        peak_mib = None
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            logps = step()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), peak_mib, logps


# ---------------------------------------------------------------------------- the table


def parse_tile_config(text):
    """'64,128,64,8,3' -> TileConfig(block_n, block_v, block_h, num_warps, num_stages)."""
    bn, bv, bh, warps, stages = (int(x) for x in text.split(","))
    return TileConfig(block_n=bn, block_v=bv, block_h=bh, num_warps=warps, num_stages=stages)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--tokens", type=int, default=8 * 2048)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--methods", default="naive,reference,triton")
    parser.add_argument("--tile-config", action="append", default=[], metavar="BN,BV,BH,WARPS,STAGES",
                        help="extra triton rows with these tiles (repeatable); default tiles always run")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default bench/results (GPU) or a temp dir (--cpu-smoke)")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        device = torch.device("cpu")
        args.tokens, args.hidden, args.vocab, args.dtype = 64, 64, 1000, "fp32"
        args.warmup, args.iters = 1, 2
        out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="logprob_bench_"))
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA GPU here; use --cpu-smoke for a CPU check")
        device = torch.device("cuda")
        out_dir = args.out_dir or REPO_ROOT / "bench" / "results"
    dtype = DTYPES[args.dtype]
    n, h, v = args.tokens, args.hidden, args.vocab

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen).to(device, dtype)
    weight = (torch.randn(v, h, generator=gen) * (3.0 / h**0.5)).to(device, dtype)
    targets = torch.randint(0, v, (n,), generator=gen).to(device)
    upstream = torch.randn(n, generator=gen).to(device)

    runs = []  # (label, backend, tile_config)
    for method in args.methods.split(","):
        if method == "triton" and not HAVE_TRITON:
            print("triton: skipped (not importable)")
            continue
        if method == "triton" and device.type == "cpu" and not INTERPRETED:
            print("triton: skipped on CPU (set TRITON_INTERPRET=1 to run it interpreted)")
            continue
        runs.append((method, method, None))
        if method == "triton":
            for text in args.tile_config:
                runs.append((f"triton[{text}]", "triton", parse_tile_config(text)))

    # the exact answer the fused paths aim at: float32 logits from the same inputs (naive
    # itself rounds logits to the input dtype first, ~5e-2 off at |logit| ~ 10 in bf16)
    with torch.no_grad():
        exact = naive_token_logprobs(hidden.float(), weight.float(), targets, args.temperature)

    rows = []
    for weight_grad in (False, True):
        naive = None
        for label, backend, tile_config in runs:
            h_leaf = hidden.clone().requires_grad_(True)
            w_leaf = weight.clone().requires_grad_(weight_grad)
            step = make_step(backend, h_leaf, w_leaf, targets, upstream, args.temperature, tile_config)
            forward_only = make_step(backend, h_leaf, w_leaf, targets, upstream, args.temperature,
                                     tile_config, train=False)
            try:
                ms, peak_mib, logps = measure(step, device, args.warmup, args.iters)
                fwd_ms, _, _ = measure(forward_only, device, args.warmup, args.iters)
            except torch.cuda.OutOfMemoryError as err:
                print(f"{label}: out of memory ({err})")
                continue
            if naive is None and backend == "naive":
                naive = {"ms": ms, "fwd_ms": fwd_ms, "peak_mib": peak_mib}
            rows.append({
                "method": label,
                "grad": "hidden+weight" if weight_grad else "hidden",
                "ms": ms,
                "fwd_no_grad_ms": fwd_ms,
                "peak_mib": peak_mib,
                "time_vs_naive": ms / naive["ms"] if naive else None,
                "fwd_time_vs_naive": fwd_ms / naive["fwd_ms"] if naive else None,
                "mem_vs_naive": peak_mib / naive["peak_mib"] if naive and peak_mib else None,
                "max_abs_logp_err": (logps - exact).abs().max().item(),
            })
            del h_leaf, w_leaf, step, forward_only, logps
            print(f"{label:>24} grad={rows[-1]['grad']:<13} {ms:9.2f} ms  fwd {fwd_ms:8.2f} ms  peak "
                  + (f"{peak_mib:9.1f} MiB" if peak_mib is not None else "n/a"), flush=True)

    meta = {
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "triton": __import__("triton").__version__ if HAVE_TRITON else None,
        "tokens": n, "hidden": h, "vocab": v, "dtype": args.dtype, "temperature": args.temperature,
        "warmup": args.warmup, "iters": args.iters,
        "default_tiles": {role: [vars(t) for t in tiles] for role, tiles in DEFAULT_TILES.items()},
    }
    markdown = render_markdown(meta, rows)
    print()
    print(markdown)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "logprob_kernel.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    (out_dir / "logprob_kernel.md").write_text(markdown)
    print(f"wrote {out_dir / 'logprob_kernel.json'} and {out_dir / 'logprob_kernel.md'}")


def render_markdown(meta, rows):
    def fmt(x, spec):
        return "n/a" if x is None else format(x, spec)

    lines = [
        f"# Per-token log-prob kernel: {meta['tokens']} tokens, H={meta['hidden']}, V={meta['vocab']}, "
        f"{meta['dtype']}",
        "",
        f"{meta['device']}; torch {meta['torch']}; triton {meta['triton']}; mode {meta['mode']}. "
        f"Step = forward + backward of sum(g * logp), entropy returned and detached; fwd = the "
        f"forward alone under no_grad (old-policy / reference log-probs). Median of "
        f"{meta['iters']} after {meta['warmup']} warm-up. Peak = max allocated during the step "
        f"minus the inputs (gradients included). logp err = max |logp - log_softmax of float32 "
        f"logits|; naive's comes from rounding logits to {meta['dtype']} first.",
        "",
        "| method | grad to | step ms | step / naive | fwd ms | fwd / naive | peak MiB | memory / naive "
        "| max logp err |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['grad']} | {r['ms']:.2f} | {fmt(r['time_vs_naive'], '.2f')} | "
            f"{r['fwd_no_grad_ms']:.2f} | {fmt(r['fwd_time_vs_naive'], '.2f')} | "
            f"{fmt(r['peak_mib'], '.1f')} | {fmt(r['mem_vs_naive'], '.3f')} | "
            f"{r['max_abs_logp_err']:.2e} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
