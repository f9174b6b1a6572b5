"""Preset `math_equivalence`: the extracted answer is the reference answer, mathematically.

Owns: nothing but the wiring; the comparison (math-verify, with its guards) lives in
`_common.math_equal`.
"""

from __future__ import annotations

from reward_presets._common import column, completion_text, extract_answer, math_equal, reference_answer

DESCRIPTION = "1 if math-verify finds the extracted answer equal to the `answer` column (\\frac{1}{2} = 0.5)."
DEFAULT_WEIGHT = 1.0


def math_equivalence(prompts, completions, answer=None, **kwargs) -> list[float]:
    """1.0 when math-verify judges the answer and the reference equal (LaTeX or plain).

    Needs the dataset column `answer`.

    >>> math_equivalence(
    ...     prompts=["Half of 1?"] * 2,
    ...     completions=["<answer>\\\\frac{1}{2}</answer>", "<answer>\\\\frac{1}{3}</answer>"],
    ...     answer=["0.5", "0.5"],
    ... )
    [1.0, 0.0]
    """
    refs = column({"answer": answer, **kwargs}, "answer", "math_equivalence")
    return [
        1.0 if math_equal(extract_answer(completion_text(c)), reference_answer(r)) else 0.0
        for c, r in zip(completions, refs, strict=True)
    ]
