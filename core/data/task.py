"""From a `DataConfig` to the rows a run trains and evaluates on.

Owns: mapping the user's columns to `question` and `answer`, normalising GSM8K-style answers,
dropping unusable rows, and the train / held-out split (a named split when the source has one,
else a seeded carve). Every row keeps its original columns, because TRL-style reward functions
receive them as keyword arguments.

Refuses to know: file formats and the hub (`loaders`), how built-in tasks are made (`builtin`),
chat templates (`chat`).
"""

from __future__ import annotations

import difflib
import math
import random
import re

import numpy as np
import pandas as pd

from core.config import DataConfig

from .base import DataError, TaskData
from .builtin import BUILTIN_PREFIX, load_builtin
from .loaders import load_table, split_names
from .order import curriculum_note

# A thousands separator: a comma with a digit before it and exactly three digits after it.
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


# ---------------------------------------------------------------------------
def normalise_answer(text: str) -> str:
    """The reference answer a reward compares against.

    GSM8K writes a worked solution and ends with '#### 42'; only the part after the last '####'
    is kept, stripped, without thousands commas. Other answers are only stripped.

    >>> normalise_answer("She sold 48 / 2 = 24 clips in May.\\n#### 1,024")
    '1024'
    >>> normalise_answer(" 9.9 ")
    '9.9'
    """
    if "####" in text:
        text = _THOUSANDS_COMMA.sub("", text.rsplit("####", 1)[1])
    return text.strip()


def held_out_count(n_rows: int, eval_size: int) -> int:
    """Rows to hold out of a file of `n_rows` when it has no evaluation split: a tenth, at least
    5 (but never more than half the rows), at most `eval_size`.

    >>> [held_out_count(n, 200) for n in (1, 4, 20, 100, 5000)]
    [0, 2, 5, 10, 200]
    >>> held_out_count(1000, 0)
    0
    """
    floor = min(5, n_rows // 2)
    return min(eval_size, max(floor, n_rows // 10))


def load_task_data(cfg: DataConfig) -> TaskData:
    """Train and held-out rows for `cfg` (a built-in task, a file, a folder or a hub dataset); a
    curriculum column is checked here, so a bad one is refused when the data is loaded."""
    task = _load_rows(cfg)
    if cfg.curriculum_column.strip():
        task.notes.append(curriculum_note(task.train, cfg.curriculum_column.strip(), cfg.curriculum_steps))
    return task


def _load_rows(cfg: DataConfig) -> TaskData:
    source = cfg.source.strip()
    if source.startswith(BUILTIN_PREFIX):
        return load_builtin(source[len(BUILTIN_PREFIX):].strip(), cfg.train_size, cfg.eval_size, cfg.seed)

    # 1) the training table, mapped to question / answer
    notes: list[str] = []
    table = load_table(source, split=cfg.split, subset=cfg.subset)
    columns = [str(c) for c in table.columns]
    rows = task_rows(table, cfg.prompt_column, cfg.answer_column, where=source, notes=notes)
    unnamed = guessed_by_position(cfg.prompt_column, cfg.answer_column)
    if unnamed:  # said again at Start: a new user trained on `question,foo` with foo as the answer (2026-12-06)
        used = {"question": cfg.prompt_column, "answer": cfg.answer_column}
        notes.append(f"{UNNAMED_COLUMNS}: " + "; ".join(
            f"the {role} column `{used[role]}` is not named like {'an' if role == 'answer' else 'a'} {role} column"
            for role in unnamed))

    # 2) held-out rows: the named split when the source has it
    held_out = None
    if cfg.eval_split and cfg.eval_split != cfg.split:
        try:
            available = split_names(source, cfg.subset)
        except DataError as e:
            available, why = [], f" ({e})"
        else:
            why = f" (it has {', '.join(map(repr, available))})" if available else ""
        if cfg.eval_split in available:
            eval_table = load_table(source, split=cfg.eval_split, subset=cfg.subset)
            held_out = task_rows(
                eval_table, cfg.prompt_column, cfg.answer_column,
                where=f"{source} [{cfg.eval_split}]", notes=notes,
            )
            held_out = _shuffled(held_out, cfg.seed)[: cfg.eval_size]
        else:
            notes.append(f"no split {cfg.eval_split!r} in {source}{why}; held out rows of {cfg.split!r} instead")

    # 3) else carve the held-out questions off a seeded shuffle: a tenth of the distinct questions, at
    #    least 5 (at most half of a tiny file), at most eval_size, one row each; the rest stay for
    #    training. Counted in distinct questions: a file of 6 questions asked 6 times each held out
    #    5 rows of 5 questions and left one question to train on (a walkthrough, 2026-12-08)
    rows = _shuffled(rows, cfg.seed)
    if held_out is None:
        first: dict = {}  # by question (one row each), or by row (runs before 2026-12-08: `hold_out_by`)
        for i, r in enumerate(rows):
            first.setdefault(r["question"] if cfg.hold_out_by == "question" else i, r)
        k = held_out_count(len(first), cfg.eval_size)
        if k < cfg.eval_size:
            rule = "at most half of so few" if len(first) < 10 else "a tenth, at least 5"
            what = (f"{len(rows)} usable rows" if len(first) == len(rows) else
                    f"{len(rows)} usable rows ask {len(first)} distinct question{'s' if len(first) != 1 else ''}")
            notes.append(f"{what}: held out {k} ({rule}) instead of {cfg.eval_size}")
        held_out = list(first.values())[:k]
        taken = {id(r) for r in held_out}
        rows = [r for r in rows if id(r) not in taken]  # their repeats: dropped below, and said

    # 4) a question seen in training says nothing when it is asked again at evaluation
    asked = {r["question"] for r in held_out}
    kept = [r for r in rows if r["question"] not in asked]
    if len(kept) < len(rows):
        notes.append(f"dropped {len(rows) - len(kept)} training rows whose question is also held out")
    if not kept:
        distinct = len({r["question"] for r in rows} | asked)
        raise DataError(f"{source}: every training row asks a question that is also held out for evaluation "
                        f"(the {len(rows) + len(held_out)} usable rows hold {distinct} distinct question"
                        f"{'s' if distinct != 1 else ''}): add rows with other questions, or set eval_size to 0 "
                        "to train on them all")
    kept = kept[: cfg.train_size]
    distinct = len({r["question"] for r in kept})
    if distinct < min(len(kept), 10):  # repeats are fine to train on; few questions teach little
        notes.append(f"the {len(kept)} training rows ask {distinct} distinct question{'s' if distinct != 1 else ''}: "
                     "a run learns those, add rows with other questions to teach more")
    notes = list(dict.fromkeys(notes))  # the train and held-out tables can say the same thing
    return TaskData(train=kept, eval=held_out, source=source, columns=columns, notes=notes)


def task_rows(
    table: pd.DataFrame, prompt_column: str, answer_column: str, *, where: str = "the table",
    notes: list[str] | None = None,
) -> list[dict]:
    """Rows of `table` as plain dicts with `question`, `answer` and `answer_raw` added.

    Rows with an empty question or answer are dropped (counted in `notes`); none left is an error.
    """
    table = table.rename(columns=str)
    if prompt_column == answer_column:
        raise DataError(f"{where}: the question and the answer are both column {prompt_column!r}: the answers "
                        "would be the questions; pick two different columns (data.prompt_column, "
                        "data.answer_column)")
    for role, column in (("question", prompt_column), ("answer", answer_column)):
        if column not in table.columns:
            raise DataError(_missing_column(where, role, column, list(table.columns)))
    if notes is not None:
        for name in ("question", "answer"):
            if name in table.columns and name not in (prompt_column, answer_column):
                notes.append(f"original column {name!r} is replaced by the mapped one")

    rows, dropped = [], 0
    for record in table.to_dict("records"):
        row = {str(k): _plain(v) for k, v in record.items()}
        question = _as_text(row[prompt_column]).strip()
        raw = _as_text(row[answer_column])
        answer = normalise_answer(raw)
        if not question or not answer:
            dropped += 1
            continue
        row.update(question=question, answer=answer, answer_raw=raw)
        rows.append(row)
    if not rows:
        raise DataError(
            f"{where}: no usable rows: all {len(table)} have an empty {prompt_column!r} or "
            f"{answer_column!r}"
        )
    if dropped and notes is not None:
        notes.append(f"{where}: dropped {dropped} rows with an empty {prompt_column!r} or {answer_column!r}")
    return rows


# ---------------------------------------------------------------------------
def _missing_column(where: str, role: str, column: str, available: list[str]) -> str:
    msg = (
        f"{where}: no column {column!r} for the {role}. "
        f"Available columns: {', '.join(map(repr, available))}"
    )
    if len(available) == 1 and any(sep in available[0] for sep in ";\t|"):
        return msg + ". The file looks separated by something other than commas; save it as comma-separated"
    by_lower = {c.lower(): c for c in available}
    close = difflib.get_close_matches(column.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        msg += f". Did you mean {by_lower[close[0]]!r}?"
    return msg


def _plain(value):
    """numpy / pandas values (arrays from Parquet, NaN for a missing cell) as plain Python."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _as_text(value) -> str:
    """A cell as text: 42.0 -> '42'; a chat-format prompt -> its last user message."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        users = [m for m in value if m.get("role") == "user"] or value
        return _as_text(users[-1]["content"])
    return str(value)


def _shuffled(rows: list[dict], seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


UNNAMED_COLUMNS = "check that the Data tab's columns are the ones meant"  # starts the note `_load_rows` adds
PROMPT_GUESSES = ("prompt", "question", "problem", "query", "input", "instruction")
ANSWER_GUESSES = ("answer", "solution", "target", "output", "label", "response")
_ID_LIKE = ("id", "idx", "index", "uid", "key", "unnamed: 0")


def guess_columns(columns: list[str], prompt_default: str = "prompt",
                  answer_default: str = "answer") -> tuple[str | None, str | None]:
    """(question column, answer column) guessed from a table's column names, never the same one
    twice and never an id-like column when another is left; None where nothing is left to pick.
    A guess, to be shown and confirmed by the user before training (the Data tab does).

    >>> guess_columns(["id", "Question", "final"])
    ('Question', 'final')
    >>> guess_columns(["text"])
    ('text', None)
    >>> guess_columns(["a", "b"], "a", "a")
    ('a', 'b')
    """
    columns = [str(c) for c in columns]
    lower = {c.lower(): c for c in columns}

    def pick(guesses, default, taken):
        for name in (*guesses, default.lower()):
            if name in lower and lower[name] not in taken:
                return lower[name]
        rest = [c for c in columns if c not in taken]
        plain = [c for c in rest if c.lower() not in _ID_LIKE]
        return (plain or rest or [None])[0]

    prompt = pick(PROMPT_GUESSES, prompt_default, set())
    answer = pick(ANSWER_GUESSES, answer_default, {prompt})
    return prompt, answer


def guessed_by_position(prompt: str | None, answer: str | None, prompt_default: str = "prompt",
                        answer_default: str = "answer") -> list[str]:
    """Which of `guess_columns`' picks ("question", "answer") no column's name suggested: taken
    only by their place in the table, so most likely not what the user meant.

    >>> guessed_by_position("foo", "bar"), guessed_by_position("Question", "final"), guessed_by_position("q", "answer")
    (['question', 'answer'], ['answer'], ['question'])
    """
    named = [(prompt, PROMPT_GUESSES, prompt_default, "question"), (answer, ANSWER_GUESSES, answer_default, "answer")]
    return [role for col, guesses, default, role in named
            if col is not None and col.lower() not in (*guesses, default.lower())]
