"""Preset `length_penalty`: a penalty that grows as a completion runs past a soft length budget.

Owns: the shape of the penalty (0 inside the budget, falling linearly to -1 at twice the
budget, like DAPO's soft overlong punishment, arXiv:2503.14476). Length is counted in
characters of the completion text, so the preset needs no tokenizer.
"""

from __future__ import annotations

from reward_presets._common import completion_text

# no box on the page sets the budget: only a data column does (every column reaches a reward as a keyword)
DESCRIPTION = ("0 up to a per-question `length_budget` column in the data, in characters (else 1000); "
               "-1 at twice the budget.")
DEFAULT_WEIGHT = 0.5
DEFAULT_BUDGET_CHARS = 1000


def penalty(length: int, budget: float) -> float:
    """The penalty for a completion of `length` characters under `budget`, in [-1, 0].

    >>> penalty(900, 1000), penalty(1500, 1000), penalty(5000, 1000)
    (0.0, -0.5, -1.0)
    """
    if budget <= 0:
        raise ValueError(f"length_budget must be positive, got {budget}")
    if length <= budget:
        return 0.0
    return -min(1.0, (length - budget) / budget)


def length_penalty(prompts, completions, length_budget=None, **kwargs) -> list[float]:
    """0.0 up to the budget, then -(length - budget) / budget, never below -1.0.

    `length_budget` (characters) is the data's `length_budget` column, one value per completion (or
    one number for all, when called directly); no such column, or an empty cell, gives 1000.

    >>> length_penalty(prompts=["q"] * 3, completions=["short", "x" * 15, "x" * 40], length_budget=10)
    [0.0, -0.5, -1.0]
    """
    n = len(completions)
    if length_budget is None:
        budgets = [DEFAULT_BUDGET_CHARS] * n
    elif isinstance(length_budget, (list, tuple)):
        budgets = list(length_budget)
    else:
        budgets = [length_budget] * n
    return [
        penalty(len(completion_text(c)), float(b if b is not None else DEFAULT_BUDGET_CHARS))
        for c, b in zip(completions, budgets, strict=True)
    ]
