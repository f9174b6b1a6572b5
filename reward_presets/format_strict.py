"""Preset `format_strict`: the whole completion is a think block followed by an answer block.

Owns: the strict-format pattern. Refuses to know whether the answer is right.
"""

from __future__ import annotations

import re

from reward_presets._common import completion_text

DESCRIPTION = "1 if the completion is exactly <think>...</think> then <answer>...</answer>, nothing else."
DEFAULT_WEIGHT = 0.5

# From start to end, with only whitespace around: "<think>" (or "<reasoning>"), text holding no
# think/reasoning tag, the matching closing tag, optional whitespace, "<answer>", text holding
# no answer tag, "</answer>".
STRICT_RE = re.compile(
    r"\A\s*<(think|reasoning)>(?:(?!</?(?:think|reasoning)>).)*</\1>"
    r"\s*<answer>(?:(?!</?answer>).)*</answer>\s*\Z",
    re.DOTALL,
)


def format_strict(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the completion is exactly `<think>...</think>` then `<answer>...</answer>`.

    `<reasoning>...</reasoning>` may stand in for the think block. Only whitespace may come
    before, between and after the two blocks; each block appears once.

    >>> format_strict(
    ...     prompts=["What is 6*7?"] * 2,
    ...     completions=["<think>6*7=42</think>\\n<answer>42</answer>", "The answer is <answer>42</answer>"],
    ... )
    [1.0, 0.0]
    """
    return [1.0 if STRICT_RE.match(completion_text(c)) else 0.0 for c in completions]
