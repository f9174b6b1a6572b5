"""Reward code: which objects of a user's reward code are reward functions, and how one is called.

Owns two rules, the same wherever user code runs (the sandboxed worker of `core.rewards.sandbox`, behind
the reward editor, Try on samples, training and `--rewards-file`; an exported run's
`custom_rewards.py`), so code written for TRL's GRPOTrainer or copied from a notebook pastes as it is:

- *What is a reward function.* TRL's signature: a callable that takes `completions` by keyword and
  accepts `**kwargs` (TRL passes `prompts`, `completion_ids` and every dataset column as
  keywords). `def`, `async def` and callable objects (`trl.rewards.get_cosine_scaled_reward(...)`)
  all count; classes and modules do not. Which of them the code offers:
  1) the names in `__all__`, when the code sets it;
  2) else the items of its public module-level lists (or tuples) of reward functions, as one
     passes `reward_funcs=[...]` to GRPOTrainer;
  3) else every public reward function in the code's namespace, defined there or imported into
     it (`from trl.rewards import think_format_reward, accuracy_reward`).
- *Calling one.* By keyword; a result that is awaitable (an `async def` reward) is awaited, as
  GRPOTrainer awaits async reward functions.

Refuses to know: processes and limits (`core.rewards.sandbox`), presets, weights and what a reward's values
must look like (`core.rewards`). It imports nothing of the app, so any process can use it.

    >>> namespace = {}
    >>> exec('''
    ... from trl.rewards import think_format_reward
    ... async def short(completions, **kwargs):
    ...     return [1.0 if len(c[0]["content"]) < 20 else 0.0 for c in completions]
    ... ''', namespace)
    >>> found = find_rewards(namespace)
    >>> list(found.functions)
    ['think_format_reward', 'short']
    >>> completions = [[{"role": "assistant", "content": "<think>6*7</think>42"}]]
    >>> [call_reward(fn, prompts=["6*7?"], completions=completions) for fn in found.functions.values()]
    [[1.0], [0.0]]
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class FoundRewards:
    """The reward functions of some code by name, in order, and what is worth telling its author."""

    functions: dict[str, Callable] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def is_reward_function(obj: Any) -> bool:
    """True for a callable with TRL's reward signature: `completions` by keyword, and `**kwargs`.

    >>> is_reward_function(lambda prompts, completions, **kwargs: [])
    True
    >>> is_reward_function(lambda text: 1.0), is_reward_function(dict)
    (False, False)
    """
    if not callable(obj) or inspect.isclass(obj) or isinstance(obj, types.ModuleType):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.kind is p.VAR_KEYWORD for p in params) and any(
        p.name == "completions" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params
    )


def find_rewards(namespace: dict[str, Any]) -> FoundRewards:
    """The reward functions that code offers, given its top-level namespace (rules in the module's
    docstring). An empty result is the caller's to refuse; the notes say what was left out."""
    found = FoundRewards()
    public = {name: obj for name, obj in namespace.items() if not name.startswith("_")}

    # 1) __all__: the author said which
    if "__all__" in namespace:
        for name in namespace["__all__"]:
            if name not in namespace:
                found.notes.append(f"__all__ names {name!r}, which the code does not define")
            elif not is_reward_function(namespace[name]):
                found.notes.append(f"{name!r} in __all__ is not a reward function "
                                   "(it needs `completions` and `**kwargs`): left out")
            else:
                _add(found, name, namespace[name])
        return found

    # 2) lists of reward functions, e.g. `reward_funcs = [xmlcount, correctness]`
    lists = [(name, obj) for name, obj in public.items()
             if isinstance(obj, (list, tuple)) and obj and all(is_reward_function(f) for f in obj)]
    if lists:
        seen: set[int] = set()
        for list_name, functions in lists:
            for i, fn in enumerate(functions):
                if id(fn) not in seen:
                    seen.add(id(fn))
                    _add(found, getattr(fn, "__name__", None) or f"{list_name}_{i}", fn)
        return found

    # 3) every reward function in the namespace, defined or imported
    for name, obj in public.items():
        if is_reward_function(obj):
            _add(found, name, obj)
    return found


def _add(found: FoundRewards, name: str, fn: Callable) -> None:
    unique, k = name, 2
    while unique in found.functions:  # two callables of one __name__ (two cosine-scaled rewards)
        unique, k = f"{name}_{k}", k + 1
    if unique != name:
        found.notes.append(f"a second reward function named {name!r} is called {unique!r}")
    found.functions[unique] = fn


def description(fn: Callable) -> str:
    """The first line of a reward function's docstring ("" for none, or for a callable object
    whose docstring would only describe its class)."""
    doc = fn.__doc__ if inspect.isroutine(fn) else None
    return inspect.cleandoc(doc).splitlines()[0] if doc and doc.strip() else ""


# ---------------------------------------------------------------------------
# Calling

_LOOPS = threading.local()


def call_reward(fn: Callable, **kwargs) -> Any:
    """`fn(**kwargs)`, awaited when the result is awaitable (an `async def` reward).

    Each thread keeps one event loop for all its calls, rather than a fresh one per call
    (`asyncio.run`): a client the reward code creates on its first call (an HTTP session to a
    judge) stays bound to a loop that is still open on the next.
    """
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        loop = getattr(_LOOPS, "loop", None)
        if loop is None or loop.is_closed():
            loop = _LOOPS.loop = asyncio.new_event_loop()
        result = loop.run_until_complete(result)
    return result
