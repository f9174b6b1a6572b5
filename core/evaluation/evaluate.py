"""Held-out evaluation: greedy answers on held-out items, scored for accuracy and format.

Owns: one definition of "how good is this adapter on this task", used by the CLI (`--eval`),
the app's Compare tab and the proof-of-learning runs, so all three report the same numbers.
Accuracy uses the task's correctness reward (Countdown checks the equation, every other task
compares the extracted answer with the reference); format rate uses the strict
`<think>...</think><answer>...</answer>` check. Beside it, `accuracy_flexible` credits the last
number written anywhere (lm-evaluation-harness's "flexible-extract" for GSM8K): a base model
that never writes the tags still gets a fair score, so "2x the base" is not a claim against zero.

`thought_check` reads the think block of an answer and checks every equation it states
(`14 + 9 = 23`): evaluation reports the share of thoughts whose stated intermediate results are
all right, so "the tuned model thinks" is a measured claim, not a screenshot.

Refuses to know: training. It only needs an engine, a tokenizer and rows.
"""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

from core.engines.base import AdapterRef, SamplingSettings, stop_texts

_LAST_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_number_correct(text: str, answer) -> bool:
    """The last number in `text` equals the numeric `answer` (flexible extraction).

    >>> last_number_correct("9.11 is smaller than 9.9", "9.11"), last_number_correct("it is 1,234.", "1234")
    (False, True)
    >>> last_number_correct("<answer>9.9</answer>", "9.90"), last_number_correct("no numbers", "3")
    (True, False)
    """
    from reward_presets._common import numeric_equal

    found = _LAST_NUMBER_RE.findall(text or "")
    return bool(found) and answer is not None and numeric_equal(found[-1].rstrip("."), str(answer))


# an equation in a thought: a number, then one or more (operator, number), "=", a number
# ("14 + 9 - 6 = 17", "6 x 7 = 42"); x and × read as *
_EQUATION_RE = re.compile(r"(\d+(?:\.\d+)?(?:\s*[-+*/x×]\s*\d+(?:\.\d+)?)+)\s*=\s*(-?\d+(?:\.\d+)?)")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _value(node) -> Fraction:
    """An arithmetic expression tree of numbers and + - * / only, computed exactly."""
    if isinstance(node, ast.Expression):
        return _value(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not plain arithmetic")


def thought_check(text: str) -> dict:
    """The equations stated in the think block of `text` and how many are right.

    {'equations': n, 'right': k, 'checks_out': n > 0 and k == n}; no think block (or none
    closed) reads as no equations.

    >>> thought_check("<think>3 + 8 = 11. 11 + 5 = 16. 16 x 2 = 33.</think><answer>33</answer>")
    {'equations': 3, 'right': 2, 'checks_out': False}
    >>> thought_check("<think>14 + 9 - 6 = 17</think>")["checks_out"], thought_check("<think>74</think>")["equations"]
    (True, 0)
    """
    from reward_presets._common import think_block

    thought = think_block(text or "") or ""
    n = right = 0
    for left, result in _EQUATION_RE.findall(thought):
        n += 1
        try:
            right += _value(ast.parse(re.sub("[x×]", "*", left), mode="eval")) == Fraction(result)
        except (ValueError, SyntaxError, ZeroDivisionError):
            pass
    return {"equations": n, "right": right, "checks_out": n > 0 and right == n}


def thought_summary(texts: list[str]) -> dict:
    """Over answers: the share whose thought states at least one equation (`with_steps`) and,
    of those, the share whose equations are all right (`check_share`; None when none has steps).

    >>> thought_summary(["<think>2 + 2 = 4</think>", "<think>2 + 2 = 5</think>", "<think>4</think>"])
    {'with_steps': 0.6666666666666666, 'check_share': 0.5}
    """
    checks = [thought_check(t) for t in texts]
    stepped = [c for c in checks if c["equations"]]
    return {"with_steps": len(stepped) / max(len(checks), 1),
            "check_share": sum(c["checks_out"] for c in stepped) / len(stepped) if stepped else None}


def _scorers(rows: list[dict]):
    from core.rewards.registry import get_reward

    correct = "countdown_equation" if rows and "numbers" in rows[0] and "target" in rows[0] else "correctness"
    return get_reward(correct).fn, get_reward("format_strict").fn


def evaluate(engine, tokenizer, rows: list[dict], *, system_prompt: str, chat_template: str = "", response_prefix: str = "",
             adapter: AdapterRef | None = None, max_items: int = 200, max_tokens: int = 256,
             max_prompt_length: int = 512, stop_at: str = "") -> dict:
    """{'accuracy', 'accuracy_flexible', 'format_rate', 'n', 'cut_rate', 'mean_tokens_correct',
    'thought_with_steps', 'thought_check_share',
    'items': [{question, answer, completion, correct, correct_flexible, formatted, tokens, cut, checks_out}]}.

    `accuracy_flexible` is None for tasks whose answer is not a number to find (Countdown);
    `mean_tokens_correct` (completion tokens of the correct answers) is None when none is correct;
    the thought figures are `thought_summary`'s, and an item's `checks_out` is None when its
    thought states no equation. Rows with a `steps` column (the chain tasks) also give
    'by_steps': {steps: {'n', 'accuracy', 'mean_tokens_correct'}}, so a change in the length of
    correct answers can be told apart into harder problems solved and each problem's answer."""
    from core.data import build_messages, prompt_ids

    rows = rows[:max_items]
    if not rows:
        return {"accuracy": float("nan"), "accuracy_flexible": None, "format_rate": float("nan"), "n": 0, "cut_rate": None,
                "mean_tokens_correct": None, "thought_with_steps": 0.0, "thought_check_share": None, "items": []}
    msgs = [build_messages(r["question"], system_prompt) for r in rows]
    prompts = [prompt_ids(tokenizer, m, chat_template, response_prefix, max_length=max_prompt_length)  # as trained
               for m in msgs]
    groups = engine.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_tokens=max_tokens,
                                                      stop=stop_texts(stop_at)), adapter=adapter)
    texts = [response_prefix + g[0].text for g in groups]
    correct_fn, format_fn = _scorers(rows)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    correct = correct_fn(msgs, completions, **columns)
    formatted = format_fn(msgs, completions, **columns)
    numeric = "numbers" not in rows[0]  # Countdown's answer is an equation, not a number to find
    checks = [thought_check(t) for t in texts]
    items = [{"question": r["question"], "answer": r.get("answer"), "completion": t,
              "correct": bool(c >= 1.0), "formatted": bool(f >= 1.0),
              "correct_flexible": last_number_correct(t, r.get("answer")) if numeric else None,
              "tokens": len(g[0].token_ids), "cut": g[0].finish_reason == "length",
              "checks_out": ch["checks_out"] if ch["equations"] else None,
              **({"steps": r["steps"]} if "steps" in r else {})}
             for r, t, c, f, g, ch in zip(rows, texts, correct, formatted, groups, checks)]
    n = len(items)
    right = [i["tokens"] for i in items if i["correct"]]
    thoughts = thought_summary(texts)
    by_steps = {}
    for k in sorted({i["steps"] for i in items if "steps" in i}):
        group = [i for i in items if i.get("steps") == k]
        ok = [i["tokens"] for i in group if i["correct"]]
        by_steps[k] = {"n": len(group), "accuracy": len(ok) / len(group),
                       "mean_tokens_correct": sum(ok) / len(ok) if ok else None}
    return {
        "accuracy": sum(i["correct"] for i in items) / n,
        "accuracy_flexible": sum(bool(i["correct_flexible"]) for i in items) / n if numeric else None,
        "format_rate": sum(i["formatted"] for i in items) / n,
        "n": n,
        "cut_rate": sum(i["cut"] for i in items) / n,  # answers stopped by max_tokens, not by the model
        "mean_tokens_correct": sum(right) / len(right) if right else None,
        "thought_with_steps": thoughts["with_steps"],
        "thought_check_share": thoughts["check_share"],
        **({"by_steps": by_steps} if by_steps else {}),
        "items": items,
    }


def evaluate_base_and_tuned(trainer, max_items: int = 200) -> dict:
    """Base (adapter off) vs the trainer's current adapter on its held-out rows."""
    c = trainer.cfg
    kw = dict(system_prompt=c.data.system_prompt, chat_template=c.data.chat_template,
              response_prefix=c.data.response_prefix, max_items=max_items,
              max_tokens=c.algorithm.max_completion_length, max_prompt_length=c.algorithm.max_prompt_length,
              stop_at=c.data.stop_at)
    rows = trainer.task.eval
    return {
        "base": evaluate(trainer.engine, trainer.tokenizer, rows, adapter=None, **kw),
        "tuned": evaluate(trainer.engine, trainer.tokenizer, rows, adapter=trainer.adapter, **kw),
    }


def changed_answers(report: dict) -> list[dict]:
    """The held-out questions whose tuned answer differs from the base's, from
    `evaluate_base_and_tuned`'s report: [{question, answer, base, tuned}] (greedy, so any
    difference is the adapter's doing).

    >>> item = lambda q, c: {"question": q, "answer": "1", "completion": c}
    >>> changed_answers({"base": {"items": [item("a", "x"), item("b", "y")]},
    ...                  "tuned": {"items": [item("a", "x"), item("b", "z")]}})
    [{'question': 'b', 'answer': '1', 'base': 'y', 'tuned': 'z'}]
    """
    return [{"question": b["question"], "answer": b["answer"], "base": b["completion"], "tuned": t["completion"]}
            for b, t in zip(report["base"]["items"], report["tuned"]["items"]) if b["completion"] != t["completion"]]


# ---------------------------------------------------------------------------
# the aha example: one logged sample from early in a run and one from late


def _thought_words(sample: dict) -> int:
    from reward_presets._common import think_block

    return len((think_block(sample.get("completion") or "") or "").split())


def _is_correct(sample: dict) -> bool:
    from core.rl.rollouts import CORRECTNESS_REWARDS

    rewards = sample.get("rewards") or {}
    name = next((n for n in CORRECTNESS_REWARDS if n in rewards), None)
    return name is not None and (rewards[name] or 0) >= 1.0


def grown_thinking(samples: list[dict], share: float = 0.2) -> dict | None:
    """A sample whose thinking grew: from the first `share` of the logged steps, a correct sample
    with the shortest thought (any sample when none is correct); from the last `share`, the correct
    one with the longest thought whose equations check out (else the longest correct one, else the
    longest). {'early': sample, 'late': sample} with `thought_words` and `correct` added; None before
    two steps are logged.

    >>> s = [{"step": 1, "completion": "<think>7</think>", "rewards": {"correctness": 1.0}},
    ...      {"step": 9, "completion": "<think>3 + 4 = 7</think>", "rewards": {"correctness": 1.0}}]
    >>> g = grown_thinking(s); g["early"]["thought_words"], g["late"]["thought_words"]
    (1, 5)
    """
    steps = sorted({s["step"] for s in samples if "step" in s})
    if len(steps) < 2:
        return None
    k = max(1, int(len(steps) * share))
    early = [s for s in samples if s.get("step") in set(steps[:k])]
    late = [s for s in samples if s.get("step") in set(steps[-k:])]
    early = [s for s in early if _is_correct(s)] or early
    late_right = [s for s in late if _is_correct(s)]
    checked = [s for s in late_right if thought_check(s.get("completion") or "")["checks_out"]]
    pick_early = min(early, key=_thought_words)
    pick_late = max(checked or late_right or late, key=_thought_words)
    return {when: {**pick, "thought_words": _thought_words(pick), "correct": _is_correct(pick)}
            for when, pick in (("early", pick_early), ("late", pick_late))}
