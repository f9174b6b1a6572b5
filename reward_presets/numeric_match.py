"""Preset `numeric_match`: the extracted answer is the reference answer, as a number.

Owns: nothing but the wiring; number parsing lives in `_common.parse_number`.
"""

from __future__ import annotations

from reward_presets._common import column, completion_text, extract_answer, numeric_equal, reference_answer

DESCRIPTION = "1 if the extracted answer is the same number as the `answer` column (relative tolerance 1e-6)."
DEFAULT_WEIGHT = 1.0


def numeric_match(prompts, completions, answer=None, **kwargs) -> list[float]:
    """1.0 when both parse as numbers ("1,234", "$5", "3.50", "1/2") equal within 1e-6 relative.

    Needs the dataset column `answer`.

    >>> numeric_match(
    ...     prompts=["Half of 1?"] * 3,
    ...     completions=["<answer>1/2</answer>", "<answer>0.6</answer>", "<answer>half</answer>"],
    ...     answer=["0.5", "0.5", "0.5"],
    ... )
    [1.0, 0.0, 0.0]
    """
    refs = column({"answer": answer, **kwargs}, "answer", "numeric_match")
    return [
        1.0 if numeric_equal(extract_answer(completion_text(c)), reference_answer(r)) else 0.0
        for c, r in zip(completions, refs, strict=True)
    ]
