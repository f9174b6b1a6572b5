"""What every reward module shares: the error a person sees and the check of what a reward returned.

Owns: `RewardError` (which reward failed, why, with the user's traceback) and `check_rewards` (a
reward's return value as one finite float per completion). Refuses to know: the registry, weights,
presets, the sandbox; both sides of the sandbox's pipe import this, so it imports none of them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from core.errors import AhaError


class RewardError(AhaError, RuntimeError):
    """A reward function failed or returned something unusable; the message says which and why.

    `reward_name` names the function (None when custom code failed before any function was
    known); `traceback_text` holds the traceback of the failure, the user's own for custom code.
    """

    def __init__(self, message: str, reward_name: str | None = None, traceback_text: str = ""):
        super().__init__(message)
        self.reward_name = reward_name
        self.traceback_text = traceback_text


def check_rewards(name: str, values: Any, n: int) -> list[float]:
    """`values` as a list of `n` finite floats, or RewardError naming `name` and the problem.

    >>> check_rewards("mine", [1, 0.5, True], 3)
    [1.0, 0.5, 1.0]
    >>> try:
    ...     check_rewards("mine", [1.0, float("nan")], 2)
    ... except RewardError as e:
    ...     print(e)
    reward 'mine' returned NaN at index 1: every value must be a finite number
    """
    if values is None:
        raise RewardError(f"reward {name!r} returned None instead of a list of {n} floats", reward_name=name)
    if isinstance(values, (str, bytes)):
        raise RewardError(
            f"reward {name!r} returned a string ({_short(values)}) instead of a list of {n} floats", reward_name=name
        )
    if hasattr(values, "tolist"):  # numpy array, torch tensor
        values = values.tolist()
    if isinstance(values, dict) or not hasattr(values, "__iter__"):
        raise RewardError(
            f"reward {name!r} returned {type(values).__name__} instead of a list of {n} floats", reward_name=name
        )
    values = list(values)
    if len(values) != n:
        raise RewardError(
            f"reward {name!r} returned {len(values)} values for {n} completions: "
            "return exactly one float per completion",
            reward_name=name,
        )
    out = []
    for i, v in enumerate(values):
        if v is None:
            problem = "None"
        elif isinstance(v, (str, bytes)):
            problem = f"a string ({_short(v)})"
        elif not isinstance(v, numbers.Real):
            problem = f"a {type(v).__name__}"
        elif not math.isfinite(v):
            raise RewardError(
                f"reward {name!r} returned {'NaN' if math.isnan(v) else v} at index {i}: "
                "every value must be a finite number",
                reward_name=name,
            )
        else:
            out.append(float(v))
            continue
        raise RewardError(
            f"reward {name!r} returned {problem} at index {i}: every value must be a float "
            "(return 0.0 where the reward does not apply)",
            reward_name=name,
        )
    return out


def _short(text: str | bytes, limit: int = 40) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 3] + "..."
