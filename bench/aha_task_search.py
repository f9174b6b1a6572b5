"""Which task makes thinking pay on SmolLM2-135M-Instruct? (issue 22, step 1)

Why: the aha recipe needs a task the bundled model answers poorly in one shot and clearly
better when it writes intermediate steps, so that reinforcing correct answers also reinforces
the steps. This script asks the base model (no adapter) each candidate's held-out-style
questions twice, greedy: once told to give only the answer, once shown one worked example with
the steps; and samples a few completions per question (--temperature) under the steps prompt,
to see whether correct samples are longer than wrong ones and whether groups have reward variance.

How: three phases in two venvs, because the CPU build of vLLM (far faster than HF generate on
this CPU) lives in a venv without pandas:

    python bench/aha_task_search.py --out /tmp/aha        # main venv: prompts, then vLLM, then scores
      (runs `--generate` itself with --vllm-python, default /work/main/.venv-vllm/bin/python)
    # writes /tmp/aha/search.json and prints a Markdown table (kept in bench/results/aha_task_search.md)

The candidates here are prototypes; the one chosen lives in core/data/builtin.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEPS_SYSTEM = ("You are a careful assistant. Think step by step inside <think> and </think>, then give only the "
                "final answer inside <answer> and </answer>.\nExample:\nQuestion: {q}\n<think>{steps}</think>\n"
                "<answer>{a}</answer>")
ANSWER_SYSTEM = ("You are a careful assistant. Give only the final answer inside <answer> and </answer>.\n"
                 "Example:\nQuestion: {q}\n<answer>{a}</answer>")


# ---------------------------------------------------------------------------
# candidates: draw(rng) -> (question, answer); one worked example each


def _chain(rng, k, lo, hi, minus):
    nums = [rng.randint(lo, hi)]
    ops, total, steps = [], nums[0], []
    for _ in range(k - 1):
        x = rng.randint(lo, hi)
        op = "-" if minus and total - x >= 0 and rng.random() < 0.5 else "+"
        new = total + x if op == "+" else total - x
        steps.append(f"{total} {op} {x} = {new}.")
        ops.append(op)
        nums.append(x)
        total = new
    expr = str(nums[0]) + "".join(f" {o} {n}" for o, n in zip(ops, nums[1:]))
    return expr, total, " ".join(steps)


def sum4(rng):
    expr, total, _ = _chain(rng, 4, 1, 9, False)
    return f"What is {expr}?", str(total)


def sum5(rng):
    expr, total, _ = _chain(rng, 5, 2, 19, False)
    return f"What is {expr}?", str(total)


def mixed4(rng):
    expr, total, _ = _chain(rng, 4, 2, 20, True)
    return f"What is {expr}?", str(total)


def mul_add(rng):
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 30)
    return f"What is {a} * {b} + {c}?", str(a * b + c)


def mul_add_small(rng):
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    return f"What is {a} * {b} + {c}?", str(a * b + c)


def sum3(rng):
    expr, total, _ = _chain(rng, 3, 1, 9, False)
    return f"What is {expr}?", str(total)


def add_sub(rng):
    a, b, c = rng.randint(10, 40), rng.randint(2, 9), rng.randint(1, 9)
    return f"What is {a} + {b} - {c}?", str(a + b - c)


def digit_sum(rng):
    n = rng.randint(1000, 9999)
    return f"What is the sum of the digits of {n}?", str(sum(map(int, str(n))))


_WORDS = ["banana", "strawberry", "carrot", "apple", "letter", "pepper", "bottle", "coffee", "balloon",
          "mississippi", "committee", "tomato", "rabbit", "puzzle", "address", "success", "cheese", "happiness"]


def count_letter(rng):
    w = rng.choice(_WORDS)
    ch = rng.choice(sorted(set(w)))
    return f"How many times does the letter {ch} appear in the word {w}?", str(w.count(ch))


_ANIMALS = ["cat", "dog", "horse", "cow", "lion", "mouse", "sheep", "tiger", "duck", "goat"]
_THINGS = ["chair", "spoon", "table", "car", "lamp", "book", "shoe", "cup", "door", "pen"]


def count_animals(rng):
    k = rng.randint(1, 5)
    items = rng.sample(_ANIMALS, k) + rng.sample(_THINGS, 6 - k)
    rng.shuffle(items)
    return f"How many of these are animals: {', '.join(items)}?", str(k)


def largest8(rng):
    nums = rng.sample(range(10, 100), 8)
    return f"Which is the largest of {', '.join(map(str, nums))}?", str(max(nums))


_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def day_after(rng):
    d, k = rng.randrange(7), rng.randint(2, 5)
    return f"What day comes {k} days after {_DAYS[d]}?", _DAYS[(d + k) % 7]


CANDIDATES = {
    "sum4": (sum4, ("What is 3 + 8 + 5 + 7?", "3 + 8 = 11. 11 + 5 = 16. 16 + 7 = 23.", "23")),
    "sum5": (sum5, ("What is 12 + 7 + 15 + 4 + 9?", "12 + 7 = 19. 19 + 15 = 34. 34 + 4 = 38. 38 + 9 = 47.", "47")),
    "mixed4": (mixed4, ("What is 14 + 9 - 6 + 11?", "14 + 9 = 23. 23 - 6 = 17. 17 + 11 = 28.", "28")),
    "mul_add": (mul_add, ("What is 6 * 7 + 15?", "6 * 7 = 42. 42 + 15 = 57.", "57")),
    "mul_add_small": (mul_add_small, ("What is 6 * 7 + 5?", "6 * 7 = 42. 42 + 5 = 47.", "47")),
    "sum3": (sum3, ("What is 3 + 8 + 5?", "3 + 8 = 11. 11 + 5 = 16.", "16")),
    "add_sub": (add_sub, ("What is 23 + 8 - 5?", "23 + 8 = 31. 31 - 5 = 26.", "26")),
    "digit_sum": (digit_sum, ("What is the sum of the digits of 3826?", "3 + 8 = 11. 11 + 2 = 13. 13 + 6 = 19.", "19")),
    "count_letter": (count_letter, ("How many times does the letter o appear in the word cocoon?",
                                    "c, o (1), c, o (2), o (3), n.", "3")),
    "count_animals": (count_animals, ("How many of these are animals: pen, cow, cup, duck, lamp, goat?",
                                      "pen no. cow yes (1). cup no. duck yes (2). lamp no. goat yes (3).", "3")),
    "largest8": (largest8, ("Which is the largest of 31, 74, 58, 19, 66, 80, 12, 45?",
                            "31 vs 74: 74. 74 vs 58: 74. 74 vs 19: 74. 74 vs 66: 74. 74 vs 80: 80. 80 vs 12: 80. "
                            "80 vs 45: 80.", "80")),
    "day_after": (day_after, ("What day comes 3 days after Friday?", "Friday + 1 = Saturday. + 2 = Sunday. "
                              "+ 3 = Monday.", "Monday")),
}


def _builtin(name):
    """A built-in task's generator as a candidate: draw(rng) -> (question, answer)."""
    def draw(rng):
        sys.path.insert(0, str(ROOT))
        from core.data.builtin import BUILTIN_TASKS

        row = BUILTIN_TASKS[name].draw(rng)
        return row["question"], row["answer"]
    return draw


# the chosen task, with its recipe's own prompt (the worked examples are the recipe's)
RECIPES = {"chain_arithmetic": "configs/smollm2-aha.yaml"}
CANDIDATES["chain_arithmetic"] = (_builtin("chain_arithmetic"), ("", "", ""))


def _answer_only(steps_system: str) -> str:
    """The recipe's prompt told to answer at once: its examples keep their answers, lose their steps."""
    lines = [ln for ln in steps_system.splitlines() if not ln.startswith("<think>")]
    lines[0] = "You are a careful assistant. Give only the final answer inside <answer> and </answer>."
    return "\n".join(lines)


# " + ", " - " or " * " between two numbers of a question: one step each
_OPERATOR_RE = re.compile(r"(?<=\d) [-+*] (?=\d)")


# ---------------------------------------------------------------------------
# phase 2 (vLLM venv): generate


def generate(spec_path: str, out_path: str) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    spec = json.loads(Path(spec_path).read_text())
    llm = LLM(model=spec["model"], dtype="float32", enforce_eager=True, max_model_len=1024, seed=0)
    # one call for every job: vLLM's CPU decode costs about the same per step for 50 or 500 sequences
    prompts, params, owner = [], [], []
    for name, job in spec["jobs"].items():
        # no per-request seed (LLM's seed=0 makes the run repeatable): on the CPU build a seeded request
        # can fail with "CPU Generator does not use offset" when vLLM reschedules it
        p = SamplingParams(n=job["n"], temperature=job["temperature"], max_tokens=job["max_tokens"])
        prompts += job["prompts"]
        params += [p] * len(job["prompts"])
        owner += [name] * len(job["prompts"])
    t0 = time.perf_counter()
    res = llm.generate(prompts, params, use_tqdm=False)
    print(f"{len(prompts)} prompts: {time.perf_counter() - t0:.0f} s", flush=True)
    outs: dict = {}
    for name, r in zip(owner, res):
        outs.setdefault(name, []).append([(c.text, len(c.token_ids)) for c in r.outputs])
    Path(out_path).write_text(json.dumps(outs))


# ---------------------------------------------------------------------------
# phases 1 and 3 (main venv): prompts, scores


def _last_answer(text: str, answer: str) -> bool:
    """Flexible: the last number (or, for a word answer, the last capitalised word) equals the answer."""
    if answer.isdigit():
        found = re.findall(r"-?\d+", text)
        return bool(found) and found[-1] == answer
    found = re.findall(r"[A-Z][a-z]+", text)
    return bool(found) and found[-1] == answer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/aha")
    ap.add_argument("--only", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--n-greedy", type=int, default=40)
    ap.add_argument("--n-sampled", type=int, default=16, help="questions sampled (at --temperature)")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=1.0, help="of the sampled completions")
    ap.add_argument("--vllm-python", default="/work/main/.venv-vllm/bin/python")
    ap.add_argument("--generate", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generate:
        generate(*args.generate)
        return 0

    sys.path.insert(0, str(ROOT))
    from core.data import build_messages, render_prompt
    from core.models.loading import default_model_path, load_tokenizer
    from core.evaluation.evaluate import _EQUATION_RE, thought_check
    from reward_presets._common import extract_answer, normalize_answer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = str(default_model_path())
    tok = load_tokenizer(model)
    jobs, rows = {}, {}
    for name in args.only:
        draw, (eq, es, ea) = CANDIDATES[name]
        answer_system, steps_system = ANSWER_SYSTEM.format(q=eq, a=ea), STEPS_SYSTEM.format(q=eq, steps=es, a=ea)
        if name in RECIPES:  # a built-in task, asked with its recipe's system prompt
            from core.config import Config

            steps_system = Config.load(ROOT / RECIPES[name]).data.system_prompt
            answer_system = _answer_only(steps_system)
        rng = random.Random(1)
        qs = []
        for _ in range(100 * args.n_greedy):  # a small space (day_after: 28 questions) ends early
            q = draw(rng)
            if q not in qs and q[0] != eq:
                qs.append(q)
            if len(qs) == args.n_greedy:
                break
        rows[name] = qs
        for variant, system, prefix, n, temp, k, mt in (
                ("answer", answer_system, "<answer>", 1, 0.0, args.n_greedy, 24),
                ("steps", steps_system, "<think>", 1, 0.0, args.n_greedy, args.max_tokens),
                ("sampled", steps_system, "<think>", args.samples, args.temperature,
                 args.n_sampled,
                 args.max_tokens)):
            prompts = [render_prompt(tok, build_messages(q, system), "", prefix) for q, _ in qs[:k]]
            jobs[f"{name}/{variant}"] = {"prompts": prompts, "n": n, "temperature": temp, "max_tokens": mt,
                                         "prefix": prefix}
    spec = out / "spec.json"
    spec.write_text(json.dumps({"model": model, "jobs": jobs}))
    gen = out / "generated.json"
    if not gen.exists():
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        subprocess.run([args.vllm_python, __file__, "--generate", str(spec), str(gen)], check=True, env=env)
    generated = json.loads(gen.read_text())

    results = {}
    for name in args.only:
        if not any(k.startswith(f"{name}/") for k in generated):
            continue  # generated by an earlier call with other candidates
        qs = rows[name]
        r = {}
        for variant in ("answer", "steps", "sampled"):
            key = f"{name}/{variant}"
            if key not in generated:
                continue
            prefix = jobs[key]["prefix"]
            tagged, flex, lens_ok, lens_bad, varied, checks, reached = [], [], [], [], 0, [], []
            for (q, a), outs in zip(qs, generated[key]):
                group = []
                k = len(_OPERATOR_RE.findall(q))  # steps the question takes (arithmetic candidates)
                for text, n_tok in outs:
                    text = prefix + text
                    equations = _EQUATION_RE.findall(text)
                    if k:  # the right value at the right step, whatever the model wrote after it
                        reached.append(len(equations) >= k and equations[k - 1][1] == a)
                    got = extract_answer(text)
                    ok = got is not None and normalize_answer(got) == normalize_answer(a)
                    tagged.append(ok)
                    flex.append(_last_answer(text, a))
                    (lens_ok if ok else lens_bad).append(n_tok)
                    checks.append(thought_check(text)["checks_out"])
                    group.append(ok)
                varied += len(set(group)) > 1
            mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
            r[variant] = {"tagged": mean(tagged), "flexible": mean(flex), "len_correct": mean(lens_ok),
                          "len_wrong": mean(lens_bad), "thought_checks_out": mean(checks),
                          "reached_at_step_k": mean(reached) if reached else None, "groups_with_variance": varied / max(len(generated[key]), 1),
                          "example": prefix + generated[key][0][0][0]}
        results[name] = r
    (out / "search.json").write_text(json.dumps(results, indent=1))
    print("| task | one shot (tags / last) | with steps (tags / last) | right value at the k-th step (greedy / "
          "sampled) | sampled acc (tags / last) | len correct / wrong | groups with variance | sampled thoughts "
          "that check out |")
    print("|---|---|---|---|---|---|---|---|")
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    for name, r in results.items():
        a, s, m = r.get("answer", {}), r.get("steps", {}), r.get("sampled", {})
        print(f"| {name} | {a.get('tagged', 0):.0%} / {a.get('flexible', 0):.0%} | {s.get('tagged', 0):.0%} / "
              f"{s.get('flexible', 0):.0%} | {pct(s.get('reached_at_step_k'))} / {pct(m.get('reached_at_step_k'))} | "
              f"{m.get('tagged', 0):.0%} / {m.get('flexible', 0):.0%} | "
              f"{m.get('len_correct', 0):.0f} / {m.get('len_wrong', 0):.0f} | {m.get('groups_with_variance', 0):.0%} | "
              f"{m.get('thought_checks_out', 0):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
