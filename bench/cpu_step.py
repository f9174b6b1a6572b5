"""Where a CPU step goes (issue 30): a few GRPO steps of a config on the bundled SmolLM2-135M, with
the trainer's own clock (`time/<phase>`), rollout tokens/s and the rewards per step.

    python bench/cpu_step.py                         # the app's CPU defaults, 4 steps
    python bench/cpu_step.py --config configs/quickstart.yaml --steps 5 --set algorithm.seed=1
    python bench/cpu_step.py --json bench/results/cpu_step.json --label after

Prints one line per step and a summary (median step seconds, phase means, completion tokens/s).
Run it on idle cores: another process on a 2-core machine doubles every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="", help="a run config (YAML); empty = the app's CPU defaults")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--set", nargs="*", default=[], help="overrides, section.field=value")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", default="", help="append the summary to this JSON file")
    ap.add_argument("--label", default="")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from core.rl.algorithms import make_trainer
    from core.config import Config, cpu_defaults
    from core.config_text import apply_overrides
    from core.memory.sizes import sequences_per_step

    cfg = Config.load(args.config) if args.config else cpu_defaults()
    cfg.run.output_dir = tempfile.mkdtemp(prefix="cpu-step-")
    cfg.run.save_steps = 10_000
    cfg.algorithm.max_steps = args.steps
    cfg = apply_overrides(cfg, args.set)
    t0 = time.perf_counter()
    trainer = make_trainer(cfg)
    load_s = time.perf_counter() - t0
    rows = []

    def on_step(r):
        m = r.metrics
        rows.append(m)
        phases = " ".join(f"{k[5:]}={v:.2f}" for k, v in m.items() if k.startswith("time/"))
        print(f"step {len(rows)}: {m['step_time']:.2f} s  reward {m['reward']:.3f} std {m['reward_std']:.3f} "
              f"grad {m.get('grad_norm', 0):.3f} len {m['completions/mean_length']:.1f}  [{phases}]", flush=True)

    trainer.on_step = on_step
    trainer.train()
    steps = [m["step_time"] for m in rows]
    phases = sorted({k for m in rows for k in m if k.startswith("time/")})
    tokens = [m["completions/mean_length"] * sequences_per_step(cfg) for m in rows]  # x accumulation too
    sample_s = [m.get("time/rollout", 0.0) for m in rows]
    summary = {
        "label": args.label, "config": args.config or "app CPU defaults", "set": args.set,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "load_s": round(load_s, 1), "steps": len(rows),
        "median_step_s": round(statistics.median(steps), 2), "mean_step_s": round(statistics.mean(steps), 2),
        "phase_mean_s": {p[5:]: round(statistics.mean(m.get(p, 0.0) for m in rows), 3) for p in phases},
        "rollout_tokens_per_s": round(sum(tokens) / max(1e-9, sum(sample_s)), 1),
        "rewards": [round(m["reward"], 4) for m in rows],
        "reward_std": [round(m["reward_std"], 4) for m in rows],
        "grad_norm": [round(m.get("grad_norm", 0.0), 4) for m in rows],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(old + [summary], indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
