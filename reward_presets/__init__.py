"""Reward presets: one small module per reward, each a plain TRL-style function.

Owns: the list of presets, in the order the UI shows them. Each module `reward_presets.<name>`
defines a function `<name>(prompts, completions, **kwargs) -> list[float]`, a one-line
`DESCRIPTION` and a `DEFAULT_WEIGHT`; dataset columns arrive as keyword lists, one value per
completion, exactly as TRL's GRPOTrainer passes them, so every preset also runs under TRL.

Refuses to know: weights chosen by the user, registries, processes. `core.rewards` builds the
registry from `PRESET_NAMES`.

    >>> load_preset("format_soft").DEFAULT_WEIGHT
    0.5
"""

from __future__ import annotations

import importlib
from types import ModuleType

PRESET_NAMES = (
    "format_strict",
    "format_soft",
    "xml_tag_count",
    "integer_answer",
    "correctness",
    "exact_match",
    "numeric_match",
    "math_equivalence",
    "countdown_equation",
    "length_penalty",
    "reflection_bonus",
)


def load_preset(name: str) -> ModuleType:
    """The module of preset `name` (its function has the same name as the module)."""
    if name not in PRESET_NAMES:
        raise KeyError(f"unknown reward preset {name!r}; known: {', '.join(PRESET_NAMES)}")
    return importlib.import_module(f"reward_presets.{name}")
