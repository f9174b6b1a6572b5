"""Preset `format_soft`: a think block and an answer block appear, in that order, anywhere.

Owns: the lenient-format pattern. Refuses to know whether the answer is right.
"""

from __future__ import annotations

import re

from reward_presets._common import completion_text

DESCRIPTION = "1 if a <think>...</think> block is followed somewhere by an <answer>...</answer> block."
DEFAULT_WEIGHT = 0.5

# "<think>" (or "<reasoning>"), anything, the matching closing tag, anything, "<answer>",
# anything, "</answer>"; text may come before and after
SOFT_RE = re.compile(r"<(think|reasoning)>.*?</\1>.*?<answer>.*?</answer>", re.DOTALL)


def format_soft(prompts, completions, **kwargs) -> list[float]:
    """1.0 when a think (or reasoning) block and then an answer block appear anywhere.

    >>> format_soft(
    ...     prompts=["What is 6*7?"] * 2,
    ...     completions=[
    ...         "Sure! <think>6*7</think> so <answer>42</answer> done",
    ...         "<answer>42</answer><think>6*7</think>",
    ...     ],
    ... )
    [1.0, 0.0]
    """
    return [1.0 if SOFT_RE.search(completion_text(c)) else 0.0 for c in completions]
