"""Held-out evaluation: greedy answers on held-out items, scored for accuracy and format.

Owns: one definition of "how good is this adapter on this task", used by the CLI (`--eval`),
the app's Compare tab and the proof-of-learning runs, so all three report the same numbers.
Accuracy uses the task's correctness reward (Countdown checks the equation, every other task
compares the extracted answer with the reference); format rate uses the strict
`<think>...</think><answer>...</answer>` check. Beside it, `accuracy_flexible` credits the last
number written anywhere (lm-evaluation-harness's "flexible-extract" for GSM8K): a base model
that never writes the tags still gets a fair score, so "2x the base" is not a claim against zero.

Refuses to know: training. It only needs an engine, a tokenizer and rows.
"""

from __future__ import annotations

import re

from core.engines import AdapterRef, SamplingSettings

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


def _scorers(rows: list[dict]):
    from core.rewards import get_reward

    correct = "countdown_equation" if rows and "numbers" in rows[0] and "target" in rows[0] else "correctness"
    return get_reward(correct).fn, get_reward("format_strict").fn


def evaluate(engine, tokenizer, rows: list[dict], *, system_prompt: str, chat_template: str = "", response_prefix: str = "",
             adapter: AdapterRef | None = None, max_items: int = 200, max_tokens: int = 256,
             max_prompt_length: int = 512) -> dict:
    """{'accuracy', 'accuracy_flexible', 'format_rate', 'n',
    'items': [{question, answer, completion, correct, correct_flexible, formatted}]}.

    `accuracy_flexible` is None for tasks whose answer is not a number to find (Countdown)."""
    from core.data import build_messages, render_prompt

    rows = rows[:max_items]
    if not rows:
        return {"accuracy": float("nan"), "accuracy_flexible": None, "format_rate": float("nan"), "n": 0, "items": []}
    msgs = [build_messages(r["question"], system_prompt) for r in rows]
    prompts = [tokenizer(render_prompt(tokenizer, m, chat_template, response_prefix), add_special_tokens=False)["input_ids"]
               [-max_prompt_length:] for m in msgs]
    groups = engine.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_tokens=max_tokens), adapter=adapter)
    texts = [response_prefix + g[0].text for g in groups]
    correct_fn, format_fn = _scorers(rows)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    correct = correct_fn(msgs, completions, **columns)
    formatted = format_fn(msgs, completions, **columns)
    numeric = "numbers" not in rows[0]  # Countdown's answer is an equation, not a number to find
    items = [{"question": r["question"], "answer": r.get("answer"), "completion": t,
              "correct": bool(c >= 1.0), "formatted": bool(f >= 1.0),
              "correct_flexible": last_number_correct(t, r.get("answer")) if numeric else None}
             for r, t, c, f in zip(rows, texts, correct, formatted)]
    n = len(items)
    return {
        "accuracy": sum(i["correct"] for i in items) / n,
        "accuracy_flexible": sum(bool(i["correct_flexible"]) for i in items) / n if numeric else None,
        "format_rate": sum(i["formatted"] for i in items) / n,
        "n": n,
        "items": items,
    }


def evaluate_base_and_tuned(trainer, max_items: int = 200) -> dict:
    """Base (adapter off) vs the trainer's current adapter on its held-out rows."""
    c = trainer.cfg
    kw = dict(system_prompt=c.data.system_prompt, chat_template=c.data.chat_template,
              response_prefix=c.data.response_prefix, max_items=max_items,
              max_tokens=c.algorithm.max_completion_length, max_prompt_length=c.algorithm.max_prompt_length)
    rows = trainer.task.eval
    return {
        "base": evaluate(trainer.engine, trainer.tokenizer, rows, adapter=None, **kw),
        "tuned": evaluate(trainer.engine, trainer.tokenizer, rows, adapter=trainer.adapter, **kw),
    }
