"""Preset `correctness`: the extracted answer is right by text, by number, or by maths.

Owns: the order of the three checks, cheapest first: exact text, then number, then
math-verify (sympy, slow) only when the first two cannot decide. Two plain numbers are settled
by the numeric check alone: a wrong "41" never costs a sympy call.
"""

from __future__ import annotations

from reward_presets._common import (
    column,
    completion_text,
    exact_equal,
    extract_answer,
    math_equal,
    numeric_equal,
    parse_number,
    reference_answer,
)

DESCRIPTION = "1 if the extracted answer matches the `answer` column: same text, same number, or math-verify equal."
DEFAULT_WEIGHT = 1.0


def is_correct(predicted: str | None, reference: str | None) -> bool:
    """Exact text, else the same number (relative 1e-6), else math-verify equivalence.

    >>> is_correct("1,234", "1234"), is_correct("\\\\dfrac{3}{4}", "0.75"), is_correct(None, "1")
    (True, True, False)
    """
    if predicted is None or reference is None:
        return False
    if exact_equal(predicted, reference):
        return True
    if parse_number(predicted) is not None and parse_number(reference) is not None:
        return numeric_equal(predicted, reference)  # two plain numbers: sympy would add nothing but time
    return math_equal(predicted, reference)


def correctness(prompts, completions, answer=None, **kwargs) -> list[float]:
    """1.0 when the answer (see `extract_answer`) matches the reference answer, else 0.0.

    Needs the dataset column `answer` (a GSM8K solution keeps only what follows `####`).

    >>> correctness(
    ...     prompts=["What is 6*7?"] * 3,
    ...     completions=["<think>6*7</think><answer>42</answer>", "<answer>41</answer>", "I think 42"],
    ...     answer=["42", "42", "42"],
    ... )
    [1.0, 0.0, 0.0]
    """
    refs = column({"answer": answer, **kwargs}, "answer", "correctness")
    return [
        1.0 if is_correct(extract_answer(completion_text(c)), reference_answer(r)) else 0.0
        for c, r in zip(completions, refs, strict=True)
    ]
