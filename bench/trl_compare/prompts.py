"""What every side is given: the same prompts, the same prompt template, the same reward.

Owns: random prompts of an exact token length (`make_prompts`), the plain template that makes our
trainer see the same token ids as TRL (`PLAIN_TEMPLATE`), and the cheap reward both score with
(`bench_reward`). The tokenizer itself is bench/common.py's (`build_tokenizer`, written with the
model folder).

Refuses to know: trainers, engines, memory.
"""

from __future__ import annotations

# the prompt is the question text itself (no system prompt, no chat markup), so both trainers
# see exactly the same token ids: TRL tokenizes a plain-text prompt as it is
PLAIN_TEMPLATE = "{{ messages[-1]['content'] }}"


def make_prompts(tokenizer, n: int, length: int, seed: int = 0) -> list[str]:
    """`n` random lower-case texts of exactly `length` tokens each (checked)."""
    import random

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(n):
        chars = [rng.choice(letters)]
        while len(chars) < length:
            chars.append(" " if rng.random() < 0.18 and chars[-1] != " " else rng.choice(letters))
        text = "".join(chars[:length - 1]) + rng.choice(letters)
        got = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if got != length:
            raise RuntimeError(f"a prompt of {length} characters tokenized to {got} tokens")
        out.append(text)
    return out


def bench_reward(prompts=None, completions=None, **kwargs) -> list[float]:
    """A cheap reward with some spread inside a group: the share of distinct characters.

    Completions come as text (TRL, plain prompts) or as [{"role": "assistant", "content": ...}] (ours).
    """
    out = []
    for c in completions:
        text = c[-1]["content"] if isinstance(c, list) else str(c)
        out.append(len(set(text)) / max(1, len(text)))
    return out
