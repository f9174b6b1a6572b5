"""The shapes every data module shares: the error users see and the task a run trains on.

Owns: `DataError`, the one exception type for anything wrong with the user's data, and
`TaskData`, the train and held-out rows a run consumes.

Refuses to know: where rows come from (files, the hub, built-in generators) and how they are
turned into prompts. Those live in `loaders`, `task`, `builtin` and `chat`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import AhaError


class DataError(AhaError, ValueError):
    """Something is wrong with the user's data; the message names the file, column or row."""


@dataclass
class TaskData:
    """Rows ready for a run.

    Every row has `question` (str), `answer` (str, the normalised reference), `answer_raw` (the
    text it came from) and every original column, so reward functions can see them all.
    `columns` lists the original columns (for the UI's column pickers); `notes` says what was
    quietly decided for the user: rows dropped, a held-out split that was not there, and so on.
    """

    train: list[dict]
    eval: list[dict]
    source: str
    columns: list[str]
    notes: list[str] = field(default_factory=list)
