"""Which training rows a step asks: the seeded order, and the curriculum (easy questions first).

Owns: `step_rows` — the prompts of step `s` as a pure function of `s` (a seeded permutation per
epoch, so a resumed run asks what it would have asked), and the curriculum: with
`data.curriculum_column` set (a numeric column, e.g. the chain tasks' `steps`), step 1 draws only
from the rows with the smallest value, and each larger value joins the pool in turn, the last at
step `curriculum_steps`; from there on every row is drawn, in exactly the order a run without a
curriculum has. `curriculum_levels` checks the column once, when the data is loaded.

Refuses to know: prompts and templates (`chat`), where rows come from (`task`, `loaders`), and
data parallelism (the trainer shards what this returns).
"""

from __future__ import annotations

import difflib
import math
from collections import Counter

import numpy as np

from .base import DataError


def curriculum_levels(rows: list[dict], column: str, *, where: str = "the training rows") -> list[float]:
    """The sorted distinct values of `column` over `rows`; a DataError that says why when the
    column is missing from a row, empty, not a number, or holds one value only (nothing to order).
    True / False count as 1 / 0 (an `is_hard` column).

    >>> curriculum_levels([{"steps": 3}, {"steps": 2}, {"steps": "3"}], "steps")
    [2.0, 3.0]
    """
    values = []
    for row in rows:
        if column not in row:
            have = [k for k in row if k not in ("answer_raw",)]
            close = difflib.get_close_matches(column.lower(), [k.lower() for k in have], n=1, cutoff=0.6)
            hint = next((f" Did you mean {k!r}?" for k in have if close and k.lower() == close[0]), "")
            raise DataError(f"data.curriculum_column {column!r}: {where} have no such column (columns: "
                            f"{', '.join(map(repr, have))}).{hint} Leave it empty to train in random order")
        values.append(_number(row, column))
    levels = sorted(set(values))
    if len(levels) < 2:
        raise DataError(f"data.curriculum_column {column!r}: every one of {where} has the value "
                        f"{_show(levels[0]) if levels else '(none)'}, so there is nothing to order by; "
                        "pick a column whose values say how hard a question is, or leave it empty")
    return levels


def curriculum_summary(rows: list[dict], column: str, most: int = 8) -> str:
    """'steps 2: 1,250 rows, 3: 1,249 rows, ...' for the data notes (the first `most` levels)."""
    counts = Counter(_number(r, column) for r in rows)
    levels = sorted(counts)
    shown = ", ".join(f"{_show(v)}: {counts[v]:,} rows" for v in levels[:most])
    return f"{column} {shown}" + (f", ... ({len(levels)} levels up to {_show(levels[-1])})" if len(levels) > most else "")


def easiest_rows(rows: list[dict], column: str, n: int) -> list[dict]:
    """The first `n` rows of the smallest value, in their order: what a curriculum starts on."""
    low = min(_number(r, column) for r in rows)
    return [r for r in rows if _number(r, column) == low][:n]


def join_steps(n_levels: int, ramp_steps: int) -> list[int]:
    """The step at which each level joins (steps counted from 1): level i at round(ramp_steps * i /
    (n_levels - 1)), the first at step 1, the last at `ramp_steps` (all at step 1 when it is 0).

    >>> join_steps(4, 120)
    [1, 40, 80, 120]
    """
    return [max(1, round(ramp_steps * i / (n_levels - 1))) if n_levels > 1 and ramp_steps > 0 else 1
            for i in range(n_levels)]


def unlocked_levels(step: int, n_levels: int, ramp_steps: int) -> int:
    """How many of the `n_levels` easiest values step `step` draws from (steps counted from 1, as
    the run shows them): those whose `join_steps` step has come.

    >>> [unlocked_levels(s, 4, 150) for s in (1, 49, 50, 99, 100, 149, 150, 1000)]
    [1, 1, 2, 2, 3, 3, 4, 4]
    >>> unlocked_levels(1, 4, 0)
    4
    """
    return max(1, sum(step >= j for j in join_steps(n_levels, ramp_steps)))


def curriculum_note(rows: list[dict], column: str, ramp_steps: int) -> str:
    """The data note of a curriculum: its levels, when each joins, and a word when it is none or
    orders poorly. Checks the column first (`curriculum_levels`' errors)."""
    levels = curriculum_levels(rows, column)
    if ramp_steps <= 0:
        return (f"curriculum by {column!r}: 'all rows from step' is 0, so every row is drawn from the start "
                "(no curriculum)")
    joins = join_steps(len(levels), ramp_steps)
    when = ", ".join(f"{_show(v)} at step {s}" for v, s in list(zip(levels, joins))[1:8])
    many = (f"; {len(levels)} distinct values: a column with a few levels (a step count, a grade) orders best"
            if len(levels) > 10 else "")
    return (f"curriculum by {curriculum_summary(rows, column)}: the smallest first, then {when}"
            f"{', ...' if len(levels) > 8 else ''}; every row from step {ramp_steps}{many}")


def step_rows(rows: list[dict], step: int, per_step: int, seed: int, *, curriculum_column: str = "",
              curriculum_steps: int = 0, levels: list[float] | None = None) -> list[dict]:
    """The `per_step` rows of step `step` (0-based here: the run's step 1 is step 0).

    Row k of the step is entry (step * per_step + k) of the pool's order: epoch e of a pool of n
    rows is `default_rng(seed + 7919 e).permutation(n)`. The pool is every row, or, under a
    curriculum, the rows whose value is among the levels unlocked at this step (kept in their
    original order, so once every level is in, the order is the one without a curriculum).
    """
    pool = rows
    if curriculum_column:
        levels = levels if levels is not None else curriculum_levels(rows, curriculum_column)
        k = unlocked_levels(step + 1, len(levels), curriculum_steps)
        if k < len(levels):
            top = levels[k - 1]
            pool = [r for r in rows if _number(r, curriculum_column) <= top]
    n = len(pool)
    out = []
    for k in range(per_step):
        epoch, j = divmod(step * per_step + k, n)
        perm = np.random.default_rng(seed + 7919 * epoch).permutation(n)
        out.append(pool[int(perm[j])])
    return out


def _number(row: dict, column: str) -> float:
    value = row.get(column)
    if isinstance(value, bool):
        return float(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        which = "a row" if column == "question" else f"the row of question {_short(row.get('question'))}"
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"data.curriculum_column {column!r}: {which} has no value there; the curriculum "
                            "orders rows by a numeric column (smallest first): fill it in or drop the row")
        raise DataError(f"data.curriculum_column {column!r}: {which} holds {_short(value)}, not a number; pick a "
                        "column of numbers saying how hard each question is (smallest first), e.g. a step count")
    return x


def _short(text, n: int = 60) -> str:
    text = str(text or "")
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _show(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)
