"""Preset `xml_tag_count`: partial credit for each format tag used exactly once.

Owns: the tag-counting rule, a dense signal that teaches the format before the model gets it
whole. Refuses to know whether the answer is right.
"""

from __future__ import annotations


from reward_presets._common import completion_text

DESCRIPTION = "0.25 for each of <think>, </think>, <answer>, </answer> used exactly once; text after </answer> costs."
DEFAULT_WEIGHT = 0.5

PER_TAG = 0.25
TRAILING_PENALTY_PER_CHAR = 0.001
MAX_TRAILING_PENALTY = 0.25

# Each pair: the tags that count as this tag (think and reasoning are interchangeable).
TAGS = (
    ("<think>", "<reasoning>"),
    ("</think>", "</reasoning>"),
    ("<answer>",),
    ("</answer>",),
)


def score_tags(text: str) -> float:
    """The tag score of one text, in [0, 1].

    >>> score_tags("<think>a</think><answer>b</answer>"), score_tags("<answer>b</answer> and more")
    (1.0, 0.492)
    """
    score = sum(PER_TAG for spellings in TAGS if sum(text.count(s) for s in spellings) == 1)
    close = text.rfind("</answer>")
    if close >= 0:
        trailing = len(text[close + len("</answer>") :].strip())
        score -= min(MAX_TRAILING_PENALTY, TRAILING_PENALTY_PER_CHAR * trailing)
    return round(max(0.0, score), 6)


def xml_tag_count(prompts, completions, **kwargs) -> list[float]:
    """0.25 per format tag used exactly once, minus 0.001 per character after `</answer>`.

    The tags are the opening and closing think (or reasoning) tags and the opening and
    closing answer tags. The trailing-text penalty is capped at 0.25 and the score at 0.

    >>> xml_tag_count(
    ...     prompts=["What is 6*7?"] * 3,
    ...     completions=["<think>6*7</think><answer>42</answer>", "<think>6*7<answer>42</answer>", "42"],
    ... )
    [1.0, 0.75, 0.0]
    """
    return [score_tags(completion_text(c)) for c in completions]
