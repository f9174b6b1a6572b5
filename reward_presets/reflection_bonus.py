"""Preset `reflection_bonus`: a small, capped bonus for self-checking phrases in the think block.

Owns: the reflection phrase list and how phrases are counted; the UI's "aha" panel reuses
`REFLECTION_PHRASES` and `count_reflections`. Refuses to know whether the reflection helped:
a model can learn to say "wait" for free, so keep the weight small and the cap low.
"""

from __future__ import annotations

import re

from reward_presets._common import completion_text, think_block

DESCRIPTION = "0.1 per reflection phrase (wait, let me check, hmm, ...) inside the think block, at most 0.5."
DEFAULT_WEIGHT = 0.2

PER_PHRASE = 0.1
MAX_BONUS = 0.5

REFLECTION_PHRASES = (
    "wait",
    "hmm",
    "actually",
    "let me check",
    "let me verify",
    "let me double-check",
    "let me double check",
    "let me re-check",
    "let me recheck",
    "let me reconsider",
    "let me re-evaluate",
    "let me recalculate",
    "let me think again",
    "double-check",
    "on second thought",
    "i made a mistake",
    "that's not right",
    "that is not right",
    "that doesn't seem right",
    "alternatively",
)


def _phrase_pattern(phrase: str) -> str:
    # "hmm" also matches "hmmm", "hmmmm", ...
    return "hm{2,}" if phrase == "hmm" else re.escape(phrase)


# Any phrase of the list as whole words, case-insensitive; longer phrases are tried first so
# "let me double-check" counts once, not also as "double-check".
REFLECTION_RE = re.compile(
    r"\b(?:"
    + "|".join(_phrase_pattern(p) for p in sorted(REFLECTION_PHRASES, key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)


def count_reflections(text: str) -> int:
    """How many reflection phrases `text` contains (non-overlapping, whole words, any case).

    >>> count_reflections("Wait, 6*7 is 42. Hmmm, let me double-check: yes. Awaiting nothing.")
    3
    """
    return len(REFLECTION_RE.findall(text.replace("\u2019", "'")))


def reflection_bonus(prompts, completions, **kwargs) -> list[float]:
    """0.1 per reflection phrase inside the think (or reasoning) block, capped at 0.5.

    Phrases outside the think block earn nothing; no think block, no bonus.

    >>> reflection_bonus(
    ...     prompts=["What is 6*7?"] * 3,
    ...     completions=[
    ...         "<think>6*7=43. Wait, let me check: 6*7=42.</think><answer>42</answer>",
    ...         "<think>6*7=42</think><answer>42</answer>",
    ...         "Wait, hmm: <answer>42</answer>",
    ...     ],
    ... )
    [0.2, 0.0, 0.0]
    """
    out = []
    for c in completions:
        thought = think_block(completion_text(c))
        n = count_reflections(thought) if thought else 0
        out.append(round(min(MAX_BONUS, PER_PHRASE * n), 6))
    return out
