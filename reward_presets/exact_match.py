"""Preset `exact_match`: the extracted answer is the reference answer, as text.

Owns: nothing but the wiring; normalisation lives in `_common.normalize_answer`.
"""

from __future__ import annotations

from reward_presets._common import column, completion_text, exact_equal, extract_answer, reference_answer

DESCRIPTION = "1 if the extracted answer equals the `answer` column after normalising case, spaces and $...$."
DEFAULT_WEIGHT = 1.0


def exact_match(prompts, completions, answer=None, **kwargs) -> list[float]:
    """1.0 when the answer text equals the reference after `normalize_answer`.

    Needs the dataset column `answer`.

    >>> exact_match(
    ...     prompts=["Capital of France?"] * 2,
    ...     completions=["<answer>Paris.</answer>", "<answer>Lyon</answer>"],
    ...     answer=["paris", "paris"],
    ... )
    [1.0, 0.0]
    """
    refs = column({"answer": answer, **kwargs}, "answer", "exact_match")
    return [
        1.0 if exact_equal(extract_answer(completion_text(c)), reference_answer(r)) else 0.0
        for c, r in zip(completions, refs, strict=True)
    ]
