"""Which defaults make the bundled model learn on a CPU within the first steps? (issue 30)

Each candidate (a task, a system prompt, an answer prefix, rewards, a learning rate) trains the
bundled SmolLM2-135M-Instruct for `--steps` steps of the app's CPU batch (2 prompts x 4
completions, 64 tokens) from the app's CPU defaults, once per seed. Per run it records the reward
of every step, the reward spread at step 1 (std over the batch, and the share of groups whose
completions all scored alike), the gradient norm, and the means of steps 1-5 and 6-10. A
candidate passes when, for every seed, step 1 has spread, the mean of steps 6-10 is above that of
steps 1-5, and the gradient is non-zero.

    python bench/default_search.py                              # every candidate, seeds 1 2 3
    python bench/default_search.py --only decimal_example --seeds 1 2 3 4 5
    python bench/default_search.py --out bench/results/default_search   # .md and .json

Run it on idle cores (each run is ~1 minute there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = ("You are a careful assistant. Think step by step inside <think> and </think>, then give only the "
          "final answer inside <answer> and </answer>.")
DECIMAL_EXAMPLE = (PROMPT + "\nExample:\nQuestion: Which is bigger, 9.11 or 9.9?\n"
                   "<think>9.9 is 9.90, and 9.90 is more than 9.11.</think>\n<answer>9.9</answer>")
LARGEST_EXAMPLE = (PROMPT + "\nExample:\nQuestion: Which is the largest of 31, 74, 58, 19?\n"
                   "<think>74 is more than 31, 58 and 19.</think>\n<answer>74</answer>")
GENERIC_EXAMPLE = (PROMPT + "\nExample:\nQuestion: What is 2 + 3?\n<think>2 + 3 = 5.</think>\n<answer>5</answer>")
OTHER_DECIMAL_EXAMPLE = (PROMPT + "\nExample:\nQuestion: Which is bigger, 4.7 or 4.25?\n"
                         "<think>4.7 is 4.70, and 4.70 is more than 4.25.</think>\n<answer>4.7</answer>")
TAGS = ["correctness", "format_strict", "xml_tag_count"]



def tagged(system_prompt: str, learning_rate: float, source: str = "builtin:decimal_compare") -> dict:
    """A candidate: a worked example in the system prompt, <think> prefilled, the three tag rewards."""
    return {"data.source": source, "data.system_prompt": system_prompt, "data.response_prefix": "<think>",
            "rewards.names": TAGS, "rewards.weights": [1.0, 0.5, 0.5],
            "algorithm.learning_rate": learning_rate, "algorithm.lr_scheduler": "constant"}


# name -> overrides on top of core.config.cpu_defaults()
CANDIDATES = {
    "defaults": {},  # core.config.cpu_defaults() as it is now (= largest_example_lr3e-4 since 2026-12-06 15:40;
    # decimal_other_example_lr3e-4 before)
    # the defaults before issue 30: decimal_compare, no example, no prefix, format_soft + correctness, lr 5e-5
    "old_defaults": {"data.system_prompt": PROMPT, "data.response_prefix": "", "rewards.names": ["format_soft", "correctness"],
                     "rewards.weights": [], "algorithm.learning_rate": 5e-5, "algorithm.lr_scheduler": "constant_with_warmup"},
    "decimal_example": tagged(DECIMAL_EXAMPLE, 1e-4),
    "decimal_example_lr2e-4": tagged(DECIMAL_EXAMPLE, 2e-4),
    "decimal_example_lr3e-4": tagged(DECIMAL_EXAMPLE, 3e-4),
    "decimal_generic": tagged(GENERIC_EXAMPLE, 1e-4),
    "decimal_generic_lr3e-4": tagged(GENERIC_EXAMPLE, 3e-4),  # the defaults until 2026-12-06
    "largest_example": tagged(LARGEST_EXAMPLE, 1e-4, "builtin:largest"),
    "largest_example_lr2e-4": tagged(LARGEST_EXAMPLE, 2e-4, "builtin:largest"),
    "largest_example_lr3e-4": tagged(LARGEST_EXAMPLE, 3e-4, "builtin:largest"),  # the CPU defaults' rate
    # 2026-12-06: a new user's 15-step run of the defaults learned to answer the worked example
    # ("<think>2 + 3 = 5.</think><answer>5</answer>") to every question: the two format rewards pay 1.0
    # for it. Candidates where the format pays less, or there is no example to copy
    "defaults_format_quarter": {"rewards.weights": [1.0, 0.25, 0.25]},
    "no_example_lr3e-4": tagged(PROMPT, 3e-4),
    "decimal_other_example_lr3e-4": tagged(OTHER_DECIMAL_EXAMPLE, 3e-4),
    "decimal_other_example_lr1e-4": tagged(OTHER_DECIMAL_EXAMPLE, 1e-4),
    "decimal_other_example_t0.7": {**tagged(OTHER_DECIMAL_EXAMPLE, 3e-4), "algorithm.temperature": 0.7},
}


def run_one(name: str, overrides: dict, seed: int, steps: int, eval_n: int = 0) -> dict:
    from core.rl.algorithms import make_trainer
    from core.config import Config, cpu_defaults

    d = cpu_defaults().to_dict()
    for key, value in {**overrides, "algorithm.seed": seed, "algorithm.max_steps": steps,
                       "run.output_dir": tempfile.mkdtemp(prefix="search-"), "run.save_steps": 10_000}.items():
        section, field = key.split(".")
        d[section][field] = value
    cfg = Config.from_dict(d)
    rows: list[dict] = []
    t0 = time.perf_counter()
    trainer = make_trainer(cfg)
    trainer.on_step = lambda r: rows.append(r.metrics)
    trainer.train()
    rewards = [m["reward"] for m in rows]
    from core.evaluation.evaluate import evaluate_base_and_tuned
    from core.runs.adapter_change import model_change
    from reward_presets._common import extract_answer

    # what the reward rise bought: the right answers (not only the format), and whether the model
    # learned to copy the system prompt's worked example instead (its answer, whatever the question)
    report = evaluate_base_and_tuned(trainer, max_items=eval_n) if eval_n else None
    copied = extract_answer(cfg.data.system_prompt)  # the worked example's answer, if the prompt has one

    def copy_share(items):
        hits = [copied is not None and extract_answer(i["completion"]) == copied for i in items]
        return round(sum(hits) / max(1, len(hits)), 3)

    lora_b = model_change(trainer.model)["largest_b"]
    out = {
        "candidate": name, "seed": seed, "steps": len(rows), "seconds": round(time.perf_counter() - t0, 1),
        "rewards": [round(r, 4) for r in rewards],
        "step1_std": round(rows[0]["reward_std"], 4), "step1_zero_std": rows[0]["frac_reward_zero_std"],
        "grad_norm": [round(m.get("grad_norm", 0.0), 4) for m in rows],
        "mean_1_5": round(statistics.mean(rewards[:5]), 4), "mean_6_10": round(statistics.mean(rewards[5:10]), 4),
        "max_abs_lora_B": lora_b, "mean_step_s": round(statistics.mean(m["step_time"] for m in rows), 2),
        "correctness": [round(m.get("rewards/correctness/mean", float("nan")), 4) for m in rows],
    }
    if report:
        for side in ("base", "tuned"):
            r = report[side]
            out[side] = {"accuracy": r["accuracy"], "accuracy_flexible": r["accuracy_flexible"],
                         "format_rate": r["format_rate"], "copied_example": copy_share(r["items"]), "n": r["n"]}
    out["passes"] = bool(out["step1_std"] > 0 and out["mean_6_10"] > out["mean_1_5"] and max(out["grad_norm"]) > 0)
    print(json.dumps(out), flush=True)
    return out


def render(results: list[dict], steps: int) -> str:
    lines = [
        "# Defaults that learn on a CPU (issue 30): the search", "",
        f"`bench/default_search.py`, {time.strftime('%Y-%m-%d')}, bundled SmolLM2-135M-Instruct on the 2-core "
        f"CPU machine, {steps} steps of the app's CPU batch (2 prompts x 4 completions, 64 tokens) per seed.", "",
        "| candidate | seed | step-1 reward std | step-1 groups alike | mean reward 1-5 | mean 6-10 | "
        "grad norm > 0 | max abs LoRA B | s/step | passes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['candidate']} | {r['seed']} | {r['step1_std']:.3f} | {r['step1_zero_std']:.2f} | "
                     f"{r['mean_1_5']:.3f} | {r['mean_6_10']:.3f} | {sum(g > 0 for g in r['grad_norm'])}/{r['steps']} | "
                     f"{r['max_abs_lora_B']:.2e} | {r['mean_step_s']:.1f} | {'yes' if r['passes'] else 'no'} |")
    lines += ["", "Rewards per step:", ""]
    for r in results:
        lines.append(f"- {r['candidate']}, seed {r['seed']}: " + ", ".join(f"{x:.2f}" for x in r["rewards"]))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=[], help="candidate names (default: all)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="", help="write OUT.md and OUT.json")
    ap.add_argument("--eval-n", type=int, default=0, help="after training: base and tuned, greedy, on this many "
                    "held-out questions (accuracy, format, the share answering the worked example's answer)")
    args = ap.parse_args(argv)
    names = args.only or list(CANDIDATES)
    results = [run_one(n, CANDIDATES[n], s, args.steps, args.eval_n) for n in names for s in args.seeds]
    text = render(results, args.steps)
    print(text)
    if args.out:
        Path(args.out + ".md").write_text(text)
        Path(args.out + ".json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
