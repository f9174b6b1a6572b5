"""Held-out evaluation: greedy answers on held-out items, scored for accuracy and format.

Owns: one definition of "how good is this adapter on this task", used by the CLI (`--eval`),
the app's Compare tab and the proof-of-learning runs, so all three report the same numbers.
Accuracy uses the task's correctness reward (Countdown checks the equation, every other task
compares the extracted answer with the reference); format rate uses the strict
`<think>...</think><answer>...</answer>` check.

Refuses to know: training. It only needs an engine, a tokenizer and rows.
"""

from __future__ import annotations

from core.engines import AdapterRef, SamplingSettings


def _scorers(rows: list[dict]):
    from core.rewards import get_reward

    correct = "countdown_equation" if rows and "numbers" in rows[0] and "target" in rows[0] else "correctness"
    return get_reward(correct).fn, get_reward("format_strict").fn


def evaluate(engine, tokenizer, rows: list[dict], *, system_prompt: str, chat_template: str = "",
             adapter: AdapterRef | None = None, max_items: int = 200, max_tokens: int = 256,
             max_prompt_length: int = 512) -> dict:
    """{'accuracy', 'format_rate', 'n', 'items': [{question, answer, completion, correct, formatted}]}."""
    from core.data import build_messages, render_prompt

    rows = rows[:max_items]
    if not rows:
        return {"accuracy": float("nan"), "format_rate": float("nan"), "n": 0, "items": []}
    msgs = [build_messages(r["question"], system_prompt) for r in rows]
    prompts = [tokenizer(render_prompt(tokenizer, m, chat_template), add_special_tokens=False)["input_ids"]
               [-max_prompt_length:] for m in msgs]
    groups = engine.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_tokens=max_tokens), adapter=adapter)
    texts = [g[0].text for g in groups]
    correct_fn, format_fn = _scorers(rows)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    correct = correct_fn(msgs, completions, **columns)
    formatted = format_fn(msgs, completions, **columns)
    items = [{"question": r["question"], "answer": r.get("answer"), "completion": t,
              "correct": bool(c >= 1.0), "formatted": bool(f >= 1.0)}
             for r, t, c, f in zip(rows, texts, correct, formatted)]
    n = len(items)
    return {
        "accuracy": sum(i["correct"] for i in items) / n,
        "format_rate": sum(i["formatted"] for i in items) / n,
        "n": n,
        "items": items,
    }


def evaluate_base_and_tuned(trainer, max_items: int = 200) -> dict:
    """Base (adapter off) vs the trainer's current adapter on its held-out rows."""
    c = trainer.cfg
    kw = dict(system_prompt=c.data.system_prompt, chat_template=c.data.chat_template, max_items=max_items,
              max_tokens=c.algorithm.max_completion_length, max_prompt_length=c.algorithm.max_prompt_length)
    rows = trainer.task.eval
    return {
        "base": evaluate(trainer.engine, trainer.tokenizer, rows, adapter=None, **kw),
        "tuned": evaluate(trainer.engine, trainer.tokenizer, rows, adapter=trainer.adapter, **kw),
    }
