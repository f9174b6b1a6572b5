"""Rewards: the registry of reward functions and the weighted score of a batch.

Owns: `REGISTRY` (every preset of `reward_presets`, by name), `RewardSet` (the rewards one run
uses, with their weights, plus the user's custom functions served by `core.rewards.sandbox`), how the
two are put together (`combine`: a custom function with a preset's name takes that preset's
place), and the check every reward output must pass: exactly one finite float per completion.
The total is the weighted sum; the unweighted value of each function is kept beside it, so each
part can be plotted.

Refuses to know: what any reward means (that is `reward_presets`), which objects of user code are
reward functions (`core.rewards.code`), how user code is kept apart (`core.rewards.sandbox`), advantages,
tokens, models. No gradio, no torch.

    >>> from core.config import RewardsConfig
    >>> rewards = RewardSet.from_config(RewardsConfig(names=["format_soft", "correctness"], weights=[0.5, 1.0]))
    >>> result = rewards(
    ...     prompts=["What is 6*7?"] * 3,
    ...     completions=["<think>6*7</think><answer>42</answer>", "<think>6*7</think><answer>41</answer>", "42"],
    ...     columns={"answer": ["42", "42", "42"]},
    ... )
    >>> result.total, result.per_reward
    ([1.5, 0.5, 0.0], {'format_soft': [1.0, 1.0, 0.0], 'correctness': [1.0, 0.0, 0.0]})
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from core.rewards.code import call_reward
from core.rewards.base import RewardError, check_rewards
from reward_presets import PRESET_NAMES, load_preset

if TYPE_CHECKING:
    from core.config import RewardsConfig
    from core.rewards.sandbox import CustomRewardProcess

CUSTOM_DEFAULT_WEIGHT = 1.0

# Dataset columns that are never passed as keyword arguments: they would clash with the
# `prompts` / `completions` arguments (TRL drops "prompt" and "completion" the same way).
RESERVED_COLUMNS = frozenset({"prompt", "completion", "prompts", "completions"})


# ---------------------------------------------------------------------------
# Registry


@dataclass
class RewardSpec:
    """One reward function and what the UI shows about it."""

    name: str
    fn: Callable[..., list[float]]
    description: str
    default_weight: float
    source: str = "preset"  # "preset" | "custom"


def _preset_spec(name: str) -> RewardSpec:
    module = load_preset(name)
    return RewardSpec(name, getattr(module, name), module.DESCRIPTION, float(module.DEFAULT_WEIGHT))


REGISTRY: dict[str, RewardSpec] = {name: _preset_spec(name) for name in PRESET_NAMES}


def list_rewards() -> list[RewardSpec]:
    """Every preset, in the order the UI shows them."""
    return list(REGISTRY.values())


def get_reward(name: str) -> RewardSpec:
    """The preset called `name`; RewardError listing the known names when there is none.

    >>> get_reward("correctness").default_weight
    1.0
    >>> try:  # doctest: +ELLIPSIS
    ...     get_reward("corectness")
    ... except RewardError as e:
    ...     print(e)
    unknown reward 'corectness'; known: format_strict, format_soft, xml_tag_count, ..., reflection_bonus
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise RewardError(f"unknown reward {name!r}; known: {', '.join(REGISTRY)}", reward_name=name)
    return spec


def combine(preset_names: list[str], preset_weights: list[float],
            custom_names: list[str]) -> tuple[list[tuple[str, float, str]], list[str]]:
    """The rewards of a run in order, as (name, weight, source), and notes for the user.

    Each selected preset keeps its place and weight unless a custom function has its name: then
    the custom function takes both (code written for TRL or copied from a notebook often names a
    function `correctness`). The other custom functions follow, weight 1.0, as TRL's default.

    >>> slots, notes = combine(["format_soft", "correctness"], [0.5, 2.0], ["correctness", "brevity"])
    >>> slots
    [('format_soft', 0.5, 'preset'), ('correctness', 2.0, 'custom'), ('brevity', 1.0, 'custom')]
    >>> notes
    ["custom reward 'correctness' replaces the preset of that name (weight 2)"]
    """
    custom = set(custom_names)
    slots = [(name, float(w), "custom" if name in custom else "preset")
             for name, w in zip(preset_names, preset_weights)]
    notes = [f"custom reward {name!r} replaces the preset of that name (weight {w:g})"
             for name, w, source in slots if source == "custom"]
    for name in custom_names:
        if name not in preset_names:
            slots.append((name, CUSTOM_DEFAULT_WEIGHT, "custom"))
            if name in REGISTRY:
                notes.append(f"custom reward {name!r} is used under the name of a preset that is not selected")
    return slots, notes


# ---------------------------------------------------------------------------
# Checking what a reward function returned


@dataclass
class RewardResult:
    """The rewards of one batch: `total[i]` is the weighted sum over functions for completion i;
    `per_reward[name][i]` is function `name`'s own, unweighted value."""

    total: list[float]
    per_reward: dict[str, list[float]] = field(default_factory=dict)


class RewardSet:
    """The reward functions of one run, their weights, and the custom-code worker if any.

    Call it with a batch: `rewards(prompts, completions, columns)`, where `columns` maps each
    dataset column to one value per completion (they reach the functions as keyword arguments,
    as in TRL). Close it (or use it as a context manager) to stop the custom-code worker.
    """

    def __init__(
        self,
        specs: list[RewardSpec],
        weights: list[float] | None = None,
        sandbox: CustomRewardProcess | None = None,
        notes: list[str] | None = None,
    ):
        self.specs = list(specs)
        self.notes = list(notes or [])  # to say once where the run is started (a replaced preset)
        self.names = [s.name for s in self.specs]
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise RewardError(
                f"reward(s) {', '.join(dupes)} listed twice: each reward may appear once", reward_name=dupes[0]
            )
        if weights is None:
            weights = [s.default_weight for s in self.specs]
        if len(weights) != len(self.specs):
            raise RewardError(f"{len(weights)} weights for {len(self.specs)} rewards: give one weight per reward")
        self.weights = [float(w) for w in weights]
        self._sandbox = sandbox

    @classmethod
    def from_config(cls, cfg: RewardsConfig, memory_mb: int | None = None) -> RewardSet:
        """Presets named in `cfg.names` with `cfg.weights` (or their default weights), plus every
        reward function found in `cfg.custom_code` (`combine` says in which place and with which
        weight), run by a sandboxed worker with `cfg.custom_timeout_s` per call and `memory_mb` of
        address space (default 2 GiB)."""
        presets = {name: get_reward(name) for name in cfg.names}
        weights = [float(w) for w in cfg.weights] if cfg.weights else [presets[n].default_weight for n in cfg.names]
        if len(weights) != len(cfg.names):
            raise RewardError(f"{len(weights)} weights for {len(cfg.names)} rewards: give one weight per reward")
        sandbox = None
        if cfg.custom_code.strip():
            from core.rewards.sandbox import DEFAULT_MEMORY_MB, CustomRewardProcess  # imports core.rewards itself

            sandbox = CustomRewardProcess(
                cfg.custom_code,
                timeout_s=cfg.custom_timeout_s,
                memory_mb=DEFAULT_MEMORY_MB if memory_mb is None else memory_mb,
            )
        slots, notes = combine(list(cfg.names), weights, sandbox.names if sandbox else [])
        specs = [
            presets[name] if source == "preset"
            else RewardSpec(name, sandbox.function(name), sandbox.descriptions[name], CUSTOM_DEFAULT_WEIGHT, "custom")
            for name, _, source in slots
        ]
        return cls(specs, [w for _, w, _ in slots], sandbox, (sandbox.notes if sandbox else []) + notes)

    def __call__(self, prompts: list, completions: list, columns: dict[str, list] | None = None) -> RewardResult:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} completions: give one prompt per completion")
        kwargs = {k: v for k, v in (columns or {}).items() if k not in RESERVED_COLUMNS}
        if "answer" in kwargs and "solution" not in kwargs:
            kwargs["solution"] = kwargs["answer"]  # TRL's name (trl.rewards.accuracy_reward reads `solution`)
        for key, values in kwargs.items():
            if isinstance(values, (list, tuple)) and len(values) != n:
                raise ValueError(f"column {key!r} has {len(values)} values for {n} completions")

        # 1) every function on the whole batch, its output checked
        per_reward: dict[str, list[float]] = {}
        for spec in self.specs:
            try:
                values = call_reward(spec.fn, prompts=prompts, completions=completions, **kwargs)
            except RewardError:
                raise
            except Exception as e:
                raise RewardError(
                    f"reward {spec.name!r} raised {type(e).__name__}: {e}",
                    reward_name=spec.name,
                    traceback_text=traceback.format_exc(),
                ) from e
            per_reward[spec.name] = check_rewards(spec.name, values, n)

        # 2) the weighted sum, completion by completion
        total = [
            sum(w * per_reward[name][i] for name, w in zip(self.names, self.weights)) for i in range(n)
        ]
        return RewardResult(total=total, per_reward=per_reward)

    def close(self) -> None:
        """Stop the custom-code worker, if there is one. Presets need no closing."""
        if self._sandbox is not None:
            self._sandbox.close()

    def __enter__(self) -> RewardSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={w:g}" for n, w in zip(self.names, self.weights))
        return f"RewardSet({parts})"


# ---------------------------------------------------------------------------
# Comparing two choices of rewards


def reward_choice(cfg: RewardsConfig) -> tuple:
    """What a rewards config picks, as a value two configs compare by: each preset with the weight it
    gets (an empty `weights` means each preset's default), the custom code and its time limit. The
    order of the presets does not count; nor do trailing blanks or line endings of the code.

    >>> from core.config import RewardsConfig
    >>> reward_choice(RewardsConfig(names=["correctness", "format_soft"])) == reward_choice(
    ...     RewardsConfig(names=["format_soft", "correctness"], weights=[0.5, 1.0], custom_code="\\n"))
    True
    """
    names = list(cfg.names)
    weights = [float(w) for w in cfg.weights] if cfg.weights else [
        REGISTRY[n].default_weight if n in REGISTRY else None for n in names]
    code = cfg.custom_code.replace("\r\n", "\n").strip()
    return frozenset(zip(names, weights)), code, float(cfg.custom_timeout_s)


def same_rewards(a: RewardsConfig, b: RewardsConfig) -> bool:
    """Whether two rewards configs score alike (`reward_choice` of both is equal)."""
    return reward_choice(a) == reward_choice(b)
