"""Does the app's engine sizing slow a run's steps? The same recipe, the same trainer, one step's
work fixed (every completion runs to max_completion_length), on a vLLM engine sized three ways:
as the CLI sizes it for the run (`run`), as the app sizes its long-lived engine (`headroom`:
LoRA rank 64, a 4,096-token context, 128 sequences, a KV cache with room), and the app's with one
size set back to the run's (`headroom:FIELD`), so the field that costs is the one whose variant
is as fast as `run`. Each variant in its own process (vLLM's sleep-mode pool allows one engine per
process).

Why: on 2026-12-06 (H100) the app's step took 1.20x the CLI's for the same recipe; on a CPU with
vLLM's CPU build the app's sizing made a step 4.7x slower, all of it the LoRA rank (vLLM's CPU
LoRA kernels compute the padded rank; `headroom:max_lora_rank` was as fast as `run`).

    python -m bench.app_engine_sizing --config configs/smollm2-largest.yaml \\
        --set model.lora_r=32 model.lora_alpha=64 algorithm.max_completion_length=64 --steps 8 --out DIR
    python -m bench.app_engine_sizing --tiny --steps 6        # CPU (vLLM's CPU build), a tiny model

Prints a table (mean step over steps 2..n, the phases, the ratio to `run`) and writes
app_engine_sizing.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIELDS = ("max_lora_rank", "max_model_len", "max_num_seqs", "kv_cache_bytes")
VARIANTS = ("run", "headroom", *(f"headroom:{f}" for f in FIELDS))


def _config(args):
    from core.config import Config
    from core.config_text import apply_overrides

    if args.tiny:
        from core.models.loading import build_tiny_model

        folder = Path(args.out) / "tiny-model"
        if not (folder / "config.json").exists():
            build_tiny_model(folder, hidden_size=128, num_heads=2, num_kv_heads=1, initializer_range=0.4)
        cfg = Config()
        cfg.model.name_or_path, cfg.model.lora_r, cfg.model.lora_alpha = str(folder), 8, 16
        a = cfg.algorithm
        a.num_generations, a.prompts_per_step, a.micro_batch_size = 8, 4, 32
        a.max_completion_length, a.max_prompt_length = 24, 128
    else:
        cfg = Config.load(args.config)
    cfg = apply_overrides(cfg, [*args.set, f"algorithm.max_steps={args.steps}", "run.engine=vllm",
                                f"run.output_dir={Path(args.out) / 'runs'}", "run.save_steps=1000000"])
    return cfg


def child(args) -> dict:
    """One variant: build its engine and the trainer on it, train `steps` steps at full length."""
    import dataclasses

    import torch

    from core.engines.registry import make_policy_and_engine, plan_for
    from core.rl.algorithms import make_trainer

    cfg = _config(args)
    cfg.run.run_name = args.child.replace(":", "-")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = plan_for(cfg, device, headroom=args.child != "run")
    if args.child.startswith("headroom:"):
        field = args.child.split(":", 1)[1]
        own = plan_for(cfg, device).engine_sizes  # the run's own size of that field
        plan.engine_sizes = dataclasses.replace(plan.engine_sizes, **{field: getattr(own, field)})
    model, tok, engine = make_policy_and_engine(cfg, device, plan, headroom=args.child != "run")  # (its LoRA slots)
    trainer = make_trainer(cfg, model=model, tokenizer=tok, engine=engine, device=device, plan=plan)
    trainer.ignore_eos = True  # every completion runs to max_completion_length: the same work in every variant
    t0 = time.perf_counter()
    trainer.train()
    rows = trainer.run.read_metrics()
    keys = ["step_time", *sorted({k for r in rows for k in r if k.startswith("time/")}),
            "rollout/kv_map_s", "rollout/kv_release_s"]
    steady = rows[1:] or rows  # step 1 carries warm-ups (CUDA graphs, Triton)
    return {"variant": args.child, "device": device, "steps": len(rows), "wall_s": round(time.perf_counter() - t0, 2),
            "engine": {k: v for k, v in vars(engine.settings).items() if isinstance(v, (int, float, str, bool))},
            "mean": {k: round(statistics.mean(r[k] for r in steady), 4) for k in keys if all(k in r for r in steady)},
            "completion_tokens": steady[-1].get("completions/mean_length")}


def table(results: list[dict]) -> str:
    base = next((r for r in results if r.get("variant") == "run" and "mean" in r), None)
    phases = ["step_time", "time/sample", "time/fold", "time/unfold", "time/forward_backward", "time/optimizer",
              "rollout/kv_map_s"]
    lines = ["| variant | " + " | ".join(p.split("/")[-1] for p in phases) + " | step / run's |",
             "|---|" + "---:|" * (len(phases) + 1)]
    for r in results:
        if "mean" not in r:
            lines.append(f"| {r.get('variant')} | {r.get('error', 'failed')[:200]} |")
            continue
        m = r["mean"]
        ratio = m["step_time"] / base["mean"]["step_time"] if base else float("nan")
        lines.append(f"| {r['variant']} | " + " | ".join(f"{m[p]:.3f}" if p in m else "" for p in phases)
                     + f" | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/smollm2-largest.yaml")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--tiny", action="store_true", help="a tiny random model (CPU)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--budget-s", type=float, default=540, help="launch no variant past this (each is recorded)")
    ap.add_argument("--out", default="/tmp/app_engine_sizing")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0

    from bench.common import spawn_child, stop_group

    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    results, start = [], time.time()
    for variant in args.variants.split(","):
        left = args.budget_s - (time.time() - start)
        if left < 30:
            results.append({"variant": variant, "error": "not run: budget"})
            continue
        cmd = [sys.executable, "-m", "bench.app_engine_sizing", "--child", variant, "--steps", str(args.steps),
               "--out", args.out, "--config", args.config, *(["--tiny"] if args.tiny else []),
               *(["--set", *args.set] if args.set else [])]
        log = Path(args.out) / f"{variant.replace(':', '-')}.log"
        with open(log, "w") as f:
            # its own process group: stop_group stops the child and whatever it started (compile workers)
            proc = spawn_child(cmd, stdout=f, stderr=f, env=env, start_new_session=True)
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:  # past the budget: stopped; its log says how far it got
                stop_group(proc)
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("RESULT ")]
        results.append(json.loads(lines[-1][7:]) if lines else
                       {"variant": variant, "error": "no result: " + " / ".join(log.read_text(errors="replace")
                                                                             .strip().splitlines()[-3:])})
        print(results[-1].get("variant"), results[-1].get("mean", results[-1].get("error")), flush=True)
    (Path(args.out) / "app_engine_sizing.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
