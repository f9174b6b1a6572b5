"""Preset `integer_answer`: the extracted answer is a whole number.

Owns: what counts as an integer answer. Refuses to know whether it is the right one.
"""

from __future__ import annotations

import re

from reward_presets._common import completion_text, extract_answer

DESCRIPTION = "1 if the extracted answer is an integer (e.g. 42, -7, 1,234)."
DEFAULT_WEIGHT = 0.5

# optional sign, then digits grouped in threes by commas ("1,234") or plain digits, nothing else
INTEGER_RE = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)$")


def integer_answer(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the answer (see `extract_answer`) is written as an integer.

    >>> integer_answer(
    ...     prompts=["How many?"] * 3,
    ...     completions=["<answer>42</answer>", "<answer>42.5</answer>", "forty-two"],
    ... )
    [1.0, 0.0, 0.0]
    """
    out = []
    for c in completions:
        answer = extract_answer(completion_text(c))
        out.append(1.0 if answer is not None and INTEGER_RE.match(answer) else 0.0)
    return out
