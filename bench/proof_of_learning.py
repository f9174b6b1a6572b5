"""Proof of learning: a real model learns a built-in task; held-out accuracy before, during, after.

Why: a loss going down proves little; greedy accuracy on questions the model never trained on,
measured the same way before and after, does. This script runs one recipe (a config file in
configs/), evaluates the base model (adapter off) on the held-out split first, then the adapter
every `--eval-every` steps, and writes the before/after figures, the curve and a plot.

How: the same trainer the app and `python -m scripts.train` use (vLLM rollouts on a GPU when vLLM
is installed, HF generate otherwise), the same `core.evaluation.evaluate.evaluate` as the Compare tab.
A run longer than one sitting continues where it stopped: `--deadline-s` stops cleanly with a
checkpoint, and the next call with the same `--runs-dir` resumes it (the evaluations so far are
kept in the run folder's `proof.json`).

Beside accuracy (issue 22): the completion length of the correct answers at each evaluation and
in training (does thinking grow?), the share of thoughts whose stated equations are right
(`core.evaluation.evaluate.thought_check`), one logged sample from early and one from late in the run, and
after training the retention figures of `core.evaluation.retention` (general prompts and the built-in tasks
not trained on: degenerate-answer rate, KL of tuned from base on the base's greedy answers).
`<name>_partial.json` is rewritten after every evaluation, so a run cut off by a time limit
still leaves its figures.

    python bench/proof_of_learning.py --config configs/smollm2-decimal-compare.yaml
    python bench/proof_of_learning.py --config ... --deadline-s 540 --runs-dir runs   # resumable
    # writes bench/results/proof_of_learning.{json,md,png} (or --out)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def versions() -> dict:
    import torch

    from bench.common import versions as package_versions

    return {**package_versions(("torch", "transformers", "peft", "vllm", "trl")),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


EVAL_KEYS = ("accuracy", "accuracy_flexible", "format_rate", "n", "mean_tokens_correct", "thought_with_steps",
             "thought_check_share", "by_steps")


def summarise(eval_result: dict, step: int) -> dict:
    return {"step": step, **{k: eval_result.get(k) for k in EVAL_KEYS if k in eval_result}}


def held_out_length(evals: list[dict]) -> dict:
    """The mean length of correct held-out answers at the first evaluation that has one and at the last.

    >>> held_out_length([{"step": 0, "mean_tokens_correct": None}, {"step": 50, "mean_tokens_correct": 30.0},
    ...                  {"step": 100, "mean_tokens_correct": 36.0}])
    {'first_step': 50, 'first': 30.0, 'last_step': 100, 'last': 36.0, 'rising': True}
    """
    have = [e for e in evals if e.get("mean_tokens_correct") is not None]
    if len(have) < 2:
        return {"first_step": None, "first": None, "last_step": None, "last": None, "rising": None}
    first, last = have[0], have[-1]
    return {"first_step": first["step"], "first": first["mean_tokens_correct"], "last_step": last["step"],
            "last": last["mean_tokens_correct"], "rising": last["mean_tokens_correct"] > first["mean_tokens_correct"]}


def rolling(values: list[float], k: int = 10) -> list[float]:
    """Mean of the last `k` finite values at each point (nan before the first one).

    >>> rolling([1.0, float("nan"), 3.0], k=2)
    [1.0, 1.0, 3.0]
    """
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - k + 1): i + 1] if v is not None and math.isfinite(v)]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def length_trend(metrics: list[dict], key: str = "completions/mean_length_correct", k: int = 50) -> dict:
    """Mean of a per-step metric over the first and the last `k` steps that have it."""
    values = [m[key] for m in metrics if m.get(key) is not None and math.isfinite(m[key])]
    if not values:
        return {"first": None, "last": None}
    return {"first": sum(values[:k]) / len(values[:k]), "last": sum(values[-k:]) / len(values[-k:])}


def plot(metrics: list[dict], evals: list[dict], path: Path, title: str, retention: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((ax1, ax2), (ax3, ax4)) = plt.subplots(2, 2, figsize=(12, 8))
    steps = [m["step"] for m in metrics]
    reward = [m["reward"] for m in metrics]
    ax1.plot(steps, reward, color="#bbb", lw=0.8, label="reward (per step)")
    ax1.plot(steps, rolling(reward), color="#1f77b4", lw=2, label="reward (10-step mean)")
    for name in sorted({k.split("/")[1] for m in metrics for k in m if k.startswith("rewards/") and k.endswith("/mean")}):
        ax1.plot(steps, [m.get(f"rewards/{name}/mean", math.nan) for m in metrics], lw=1, alpha=0.7, label=name)
    ax1.set_xlabel("step")
    ax1.set_title("training reward")
    ax1.legend(fontsize=8)
    es = [e["step"] for e in evals]
    ax2.plot(es, [e["accuracy"] for e in evals], "o-", label="accuracy (answer in tags)")
    if all(e.get("accuracy_flexible") is not None for e in evals):
        ax2.plot(es, [e["accuracy_flexible"] for e in evals], "s--", label="accuracy (last number, flexible)")
    ax2.plot(es, [e["format_rate"] for e in evals], "^-", label="format compliance")
    shares = [e.get("thought_check_share") for e in evals]
    if any(v is not None for v in shares):
        ax2.plot(es, [math.nan if v is None else v for v in shares], "d:", label="thoughts whose equations check out")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("step (0 = base model)")
    ax2.set_title(f"held-out, greedy (n = {evals[0]['n']})")
    ax2.legend(fontsize=8)
    # does thinking grow where it pays? the length of correct and of wrong completions
    for key, label, color in (("completions/mean_length_correct", "correct (training, 10-step mean)", "#2ca02c"),
                              ("completions/mean_length_incorrect", "wrong (training, 10-step mean)", "#d62728"),
                              ("completions/mean_length", "all (training, 10-step mean)", "#999")):
        if any(key in m for m in metrics):
            ax3.plot(steps, rolling([m.get(key, math.nan) for m in metrics]), color=color, lw=1.5, label=label)
    held = [(e["step"], e.get("mean_tokens_correct")) for e in evals if e.get("mean_tokens_correct") is not None]
    if held:
        ax3.plot(*zip(*held), "ko", label="correct (held-out, greedy)")
    ax3.set_xlabel("step")
    ax3.set_ylabel("tokens")
    ax3.set_title("completion length")
    ax3.legend(fontsize=8)
    _plot_retention(ax4, retention)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_retention(ax, retention: dict | None) -> None:
    """Bars base vs tuned off the trained task: degenerate and tagged general answers, task accuracy."""
    if not retention:
        ax.axis("off")
        ax.text(0.5, 0.5, "retention not measured", ha="center", va="center")
        return
    g = retention["general"]
    labels = ["general: degenerate", "general: with tags"]
    base = [g["base"]["degenerate_rate"], g["base"]["tag_rate"]]
    tuned = [g["tuned"]["degenerate_rate"], g["tuned"]["tag_rate"]]
    for name, r in retention.get("tasks", {}).items():
        key = "accuracy_flexible" if r["base"].get("accuracy_flexible") is not None else "accuracy"
        labels.append(f"{name}: accuracy")
        base.append(r["base"][key])
        tuned.append(r["tuned"][key])
    x = range(len(labels))
    ax.barh([i + 0.2 for i in x], base, height=0.4, label="base", color="#aaa")
    ax.barh([i - 0.2 for i in x], tuned, height=0.4, label="tuned", color="#1f77b4")
    ax.set_yticks(list(x), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(f"retention off the task\nKL(base || tuned) {g['kl']:.4f} per token on {g['n']} general prompts",
                 fontsize=10)
    ax.legend(fontsize=8)


def wait_for(path: str | None, timeout_s: float = 900) -> None:
    t0 = time.perf_counter()
    while path and not Path(path).exists():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "smollm2-decimal-compare.yaml"))
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-items", type=int, default=200)
    ap.add_argument("--deadline-s", type=float, default=0, help="stop with a checkpoint after this long (0 = never)")
    ap.add_argument("--report-partial", action="store_true",
                    help="at the deadline, evaluate and write the results files for the steps done (marked unfinished)")
    ap.add_argument("--runs-dir", default=None, help="where the run folder lives (default: the config's output_dir)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for the results files")
    ap.add_argument("--name", default="proof_of_learning")
    ap.add_argument("--retention-items", type=int, default=50,
                    help="after training: questions per built-in task not trained on (0 = no retention at all)")
    ap.add_argument("--retention-tokens", type=int, default=128, help="max tokens of each retention answer")
    ap.add_argument("--retention-prompts", type=int, default=60, help="how many of the 60 general prompts")
    # two recipes side by side on one GPU: vLLM's start-up memory profiling must not overlap
    # another process's allocations, so engines start one after the other, then both train
    ap.add_argument("--after", help="wait for this file before building the engine")
    ap.add_argument("--ready", help="touch this file once the engine is built")
    ap.add_argument("--go", help="wait for this file before the first step")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the results files in --out")
    args = ap.parse_args(argv)
    if args.plot_only:
        out = Path(args.out)
        result = json.loads((out / f"{args.name}.json").read_text())
        metrics = [json.loads(x) for x in (out / f"{args.name}_metrics.jsonl").read_text().splitlines() if x.strip()]
        plot(metrics, result["evals"], out / f"{args.name}.png",
             f"{result['model']} on {result['task']} ({result['engine']}, {result['versions']['gpu'] or 'CPU'})",
             result.get("retention"))
        return 0

    from core.rl.algorithms import make_trainer
    from core.config import Config
    from core.evaluation.evaluate import evaluate
    from core.runs.folders import RunDir
    from core.config_text import apply_overrides

    t_start = time.perf_counter()
    cfg = apply_overrides(Config.load(args.config), args.set)
    runs_dir = Path(args.runs_dir or cfg.run.output_dir)
    run = RunDir.create(runs_dir, cfg.run.run_name or args.name, exist_ok=True)
    wait_for(args.after)
    try:
        trainer = make_trainer(cfg, run_dir=run)
    finally:  # also when it fails: the next recipe must not wait for an engine that never comes
        if args.ready:
            Path(args.ready).touch()
    wait_for(args.go)
    resumed = trainer.resume()
    state_path = run.path / "proof.json"
    state = json.loads(state_path.read_text()) if resumed and state_path.exists() else {"evals": [], "wall_s": 0.0}
    rows = trainer.task.eval[: args.eval_items]
    c = cfg
    kw = dict(system_prompt=c.data.system_prompt, chat_template=c.data.chat_template,
              response_prefix=c.data.response_prefix, max_items=args.eval_items,
              max_tokens=c.algorithm.max_completion_length, max_prompt_length=c.algorithm.max_prompt_length,
              stop_at=c.data.stop_at)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save_state():
        state["wall_s"] = state.get("wall_s", 0.0) + (time.perf_counter() - save_state.t0)
        save_state.t0 = time.perf_counter()
        state_path.write_text(json.dumps(state, indent=1))

    def write_partial():
        """The figures so far, in --out: a run killed by a time limit still leaves them."""
        result = build_result(args, c, trainer, state, run.read_metrics(), finished=False)
        (out / f"{args.name}_partial.json").write_text(json.dumps(result, indent=1))

    save_state.t0 = time.perf_counter()
    print(f"engine: {trainer.engine.info.backend}; run {run.path} at step {trainer.step}", flush=True)
    if not state["evals"]:
        base = evaluate(trainer.engine, trainer.tokenizer, rows, adapter=None, **kw)
        state["evals"].append(summarise(base, 0))
        state["base_examples"] = base["items"][:5]
        print("base:", state["evals"][-1], flush=True)
        save_state()
        write_partial()

    def evaluate_tuned():
        r = evaluate(trainer.engine, trainer.tokenizer, rows, adapter=trainer.adapter, **kw)
        state["evals"].append(summarise(r, trainer.step))
        state["tuned_examples"] = r["items"][:5]
        print("eval:", state["evals"][-1], flush=True)
        save_state()
        write_partial()

    def on_step(result):
        m = result.metrics
        if trainer.step % 10 == 0:
            per = {k.split("/")[1]: round(v, 3) for k, v in m.items() if k.startswith("rewards/") and k.endswith("/mean")}
            ok = m.get("completions/mean_length_correct", math.nan)
            print(f"step {trainer.step}: reward {m['reward']:.3f} {per} len {m['completions/mean_length']:.0f} "
                  f"(correct {ok:.0f}) step {m.get('step_time', 0):.2f}s", flush=True)
        if trainer.step % args.eval_every == 0 or trainer.step == c.algorithm.max_steps:
            evaluate_tuned()
        if args.deadline_s and time.perf_counter() - t_start > args.deadline_s and trainer.step < c.algorithm.max_steps:
            print(f"deadline reached at step {trainer.step}: stopping with a checkpoint; run again to resume", flush=True)
            trainer.control.stop()

    trainer.on_step = on_step
    trainer.control.stop_on_pause = True  # no one is there to press Resume
    final_state = trainer.train()
    if trainer.control.pause_reason:
        print(f"stopped because: {trainer.control.pause_reason}", flush=True)
        return 1
    save_state()
    if final_state != "finished":
        print(f"run {final_state} at step {trainer.step}")
        if final_state != "stopped" or not args.report_partial:
            return 0 if final_state == "stopped" else 1
        # --report-partial: the device time is spent, so report what was reached (marked partial)
        if state["evals"][-1]["step"] != trainer.step:
            evaluate_tuned()

    # -- retention: off the trained task, is the tuned model still the base? -----------------
    if args.retention_items > 0 and state.get("retention_step") != trainer.step:
        from core.evaluation.retention import GENERAL_PROMPTS, measure_retention

        t0 = time.perf_counter()
        r = measure_retention(trainer.engine, trainer.tokenizer, trainer.model, trainer.adapter,
                              source=c.data.source, prompts=GENERAL_PROMPTS[:args.retention_prompts],
                              n_task=args.retention_items, max_tokens=args.retention_tokens,
                              chat_template=c.data.chat_template, micro_batch=max(1, min(trainer.micro_batch_size, 32)),
                              stop_at=c.data.stop_at)
        state["retention"], state["retention_step"] = compact_retention(r), trainer.step
        print(f"retention ({time.perf_counter() - t0:.0f} s):", json.dumps(
            {k: v for k, v in state["retention"]["general"].items() if k != "items"}), flush=True)
        save_state()

    # -- results ----------------------------------------------------------------------
    metrics = run.read_metrics()
    result = build_result(args, c, trainer, state, metrics, finished=final_state == "finished")
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{args.name}_metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    try:
        plot(metrics, result["evals"], out / f"{args.name}.png",
             f"{result['model']} on {c.data.source} ({result['engine']}, {result['versions']['gpu'] or 'CPU'})",
             result.get("retention"))
    except ImportError as e:  # matplotlib missing (e.g. a bare GPU box): `--plot-only` redraws it later
        print(f"no plot: {e}")
    lines = report_lines(result, c.algorithm.max_steps)
    (out / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def compact_retention(r: dict, keep: int = 8) -> dict:
    """`measure_retention`'s result with a few answers kept: the first `keep`, then up to `keep`
    the tuned model broke (a degenerate answer) and the base did not."""
    items = r["general"]["items"]
    broken = [i for i in items[keep:] if i["tuned_flags"] and not i["base_flags"]][:keep]
    return {**r, "general": {**r["general"], "items": items[:keep] + broken}}


def build_result(args, c, trainer, state: dict, metrics: list[dict], *, finished: bool) -> dict:
    from core.evaluation.evaluate import grown_thinking

    evals = state["evals"]
    base, last = evals[0], evals[-1]
    best = max(evals[1:], key=lambda e: e["accuracy"]) if len(evals) > 1 else last
    base_ref = max(base["accuracy"], base["accuracy_flexible"] or 0.0)  # the base's best fair score
    steps_to_goal = next((e["step"] for e in evals[1:]
                          if e["accuracy"] >= 2 * base_ref and e["format_rate"] > 0.9), None)
    trend = length_trend(metrics)
    grown = grown_thinking(trainer.run.read_samples())
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "config": os.path.relpath(Path(args.config).resolve(), ROOT),
        "overrides": args.set,
        "model": c.model.name_or_path or "SmolLM2-135M-Instruct (bundled)",
        "task": c.data.source,
        "engine": trainer.engine.info.backend,
        "engine_details": trainer.engine.info.details,
        "versions": versions(),
        "steps": trainer.step,
        "finished": finished,  # False: stopped at --deadline-s with --report-partial, or a partial file
        "wall_s_total": round(state["wall_s"], 1),
        "mean_step_s": round(sum(m.get("step_time", 0) for m in metrics) / max(len(metrics), 1), 3),
        "settings": {"beta": c.algorithm.beta, "learning_rate": c.algorithm.learning_rate,
                     "max_steps": c.algorithm.max_steps, "lora_r": c.model.lora_r,
                     "max_completion_length": c.algorithm.max_completion_length},
        "base": base,
        "final": last,
        "best": best,
        "base_reference_accuracy": base_ref,
        "goal": "accuracy >= 2x the base's (the better of tagged and last-number accuracy) and format > 90% within 300 steps",
        "first_eval_step_meeting_goal": steps_to_goal,
        "goal_met": steps_to_goal is not None and steps_to_goal <= 300,
        "evals": evals,
        "reward_first_10": sum(m["reward"] for m in metrics[:10]) / max(len(metrics[:10]), 1),
        "reward_last_10": sum(m["reward"] for m in metrics[-10:]) / max(len(metrics[-10:]), 1),
        # issue 22: does the length of correct answers grow, and do the thoughts check out?
        "length_correct_first_50": trend["first"],
        "length_correct_last_50": trend["last"],
        "length_correct_rising": None if trend["first"] is None else trend["last"] > trend["first"],
        "held_out_length_correct": held_out_length(evals),
        "thought_check_share_base": base.get("thought_check_share"),
        "thought_check_share_final": last.get("thought_check_share"),
        "grown_thinking": grown,
        "retention": state.get("retention"),
        "base_examples": state.get("base_examples", []),
        "tuned_examples": state.get("tuned_examples", []),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def by_steps_lines(evals: list[dict]) -> list[str]:
    """Held-out accuracy and correct answers' length by the problem's number of steps, per evaluation
    (tasks whose rows say how many steps a problem takes); [] otherwise. Keys may be ints or, read
    back from JSON, strings.

    >>> by_steps_lines([{"step": 0, "by_steps": {"2": {"n": 4, "accuracy": 0.25, "mean_tokens_correct": 30.0},
    ...                                          "3": {"n": 4, "accuracy": 0.0, "mean_tokens_correct": None}}}])[-1]
    '| 0 | 25%, 30.0 tok (4) | 0%, - (4) |'
    """
    ks = sorted({int(k) for e in evals for k in (e.get("by_steps") or {})})
    if not ks:
        return []
    lines = ["", "Held-out by the problem's number of steps: accuracy (tags), and tokens of the correct answers:", "",
             "| step | " + " | ".join(f"{k} steps (n)" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for e in evals:
        cells = []
        for k in ks:
            g = (e.get("by_steps") or {}).get(k) or (e.get("by_steps") or {}).get(str(k))
            if not g:
                cells.append("-")
                continue
            tokens = "-" if g["mean_tokens_correct"] is None else f"{g['mean_tokens_correct']:.1f} tok"
            cells.append(f"{g['accuracy']:.0%}, {tokens} ({g['n']})")
        lines.append(f"| {e['step']} | " + " | ".join(cells) + " |")
    return lines


def report_lines(result: dict, max_steps: int) -> list[str]:
    """The Markdown summary of a result."""
    evals = result["evals"]
    lines = [
        f"# Proof of learning ({result['date']}, {result['versions']['gpu'] or 'CPU'})", "",
        f"{result['model']}, task `{result['task']}`, recipe `{result['config']}`, engine {result['engine']}; "
        f"{result['steps']} steps in {result['wall_s_total']:.0f} s (mean step {result['mean_step_s']:.2f} s)"
        + ("." if result["finished"] else f", stopped at the time limit before step {max_steps}."), "",
        "| held-out (greedy) | step | accuracy (tags) | accuracy (last number) | format | tokens (correct) "
        "| thoughts with steps | steps check out |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in evals:
        tokens = "-" if e.get("mean_tokens_correct") is None else f"{e['mean_tokens_correct']:.1f}"
        lines.append(f"| {'base' if e['step'] == 0 else 'tuned'} | {e['step']} | {e['accuracy']:.1%} | "
                     f"{_pct(e['accuracy_flexible'])} | {e['format_rate']:.1%} | {tokens} | "
                     f"{_pct(e.get('thought_with_steps'))} | {_pct(e.get('thought_check_share'))} |")
    first, last = result.get("length_correct_first_50"), result.get("length_correct_last_50")
    lines += ["", f"Goal: {result['goal']}. Base reference {result['base_reference_accuracy']:.1%}; "
              f"first evaluation meeting it: {result['first_eval_step_meeting_goal'] or 'none'} "
              f"({'met' if result['goal_met'] else 'not met'}).", "",
              f"Training reward, mean of the first 10 steps {result['reward_first_10']:.3f}, "
              f"of the last 10 {result['reward_last_10']:.3f}."]
    if first is not None:
        lines += ["", f"Mean length of correct training completions: {first:.1f} tokens over the first 50 steps, "
                  f"{last:.1f} over the last 50 ({'rising' if result['length_correct_rising'] else 'not rising'})."]
    held = result.get("held_out_length_correct") or {}
    if held.get("first") is not None:
        lines += ["", f"Mean length of correct held-out answers: {held['first']:.1f} tokens at step {held['first_step']} "
                  f"(the first evaluation with one), {held['last']:.1f} at step {held['last_step']} "
                  f"({'rising' if held['rising'] else 'not rising'})."]
    lines += by_steps_lines(evals)
    r = result.get("retention")
    if r:
        g = r["general"]
        lines += ["", f"Retention on {g['n']} general prompts (greedy, no system prompt): KL(base || tuned) "
                  f"{g['kl']:.4f} per token on the base's answers ({g['tokens']} tokens; log-prob drop "
                  f"{g['logprob_drop']:.4f}).", "",
                  "| off the task | base | tuned |", "|---|---|---|"]
        for key, label in (("degenerate_rate", "degenerate answers"), ("tag_rate", "answers with think/answer tags"),
                           ("truncated_rate", "cut at the token limit")):
            lines.append(f"| general: {label} | {g['base'][key]:.1%} | {g['tuned'][key]:.1%} |")
        for name, t in r.get("tasks", {}).items():
            key = "accuracy_flexible" if t["base"].get("accuracy_flexible") is not None else "accuracy"
            lines.append(f"| `builtin:{name}` accuracy ({'last number' if key != 'accuracy' else 'tags'}, "
                         f"n = {t['base']['n']}) | {t['base'][key]:.1%} | {t['tuned'][key]:.1%} |")
    grown = result.get("grown_thinking")
    if grown:
        lines += ["", "A sample whose thinking grew (logged in training):", ""]
        for when in ("early", "late"):
            sample = grown[when]
            text = (sample.get("completion") or "").replace("\n", " ")
            verdict = "correct" if sample.get("correct") else "wrong"
            lines.append(f"- step {sample['step']} ({verdict}, {sample['thought_words']} words of thought): "
                         f"{sample['question']} → `{text[:400]}`")
    return lines + [""]


if __name__ == "__main__":
    sys.exit(main())
