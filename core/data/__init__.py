"""Questions and reference answers for a run, and the prompts made from them.

Owns: reading the user's data (files, `datasets` folders, hub ids, DataFrames) with errors that
name the file, line and column (`DataError`); built-in tasks generated without a download;
mapping columns to `question` / `answer`; the train / held-out split; chat-template rendering.

Refuses to know: models, rewards and training. The trainer gets a `TaskData` and turns each
row's question into a prompt with `build_messages` and `render_prompt`.

Modules: `loaders` (source -> DataFrame), `task` (DataConfig -> TaskData), `builtin` (generated
tasks), `chat` (messages, templates, preview), `base` (the shared shapes).
"""

from .base import DataError, TaskData
from .builtin import BUILTIN_TASKS, BuiltinTask, is_a_default_system_prompt, load_builtin, system_prompt_for
from .chat import DEFAULT_CHAT_TEMPLATE, build_messages, preview, prompt_ids, render_prompt
from .loaders import DEFAULT_MAX_BYTES, FILE_FORMATS, load_table, source_kind, split_names
from .task import UNNAMED_COLUMNS, guess_columns, guessed_by_position, load_task_data, normalise_answer, task_rows

__all__ = [
    "BUILTIN_TASKS",
    "BuiltinTask",
    "DEFAULT_CHAT_TEMPLATE",
    "DEFAULT_MAX_BYTES",
    "DataError",
    "FILE_FORMATS",
    "TaskData",
    "UNNAMED_COLUMNS",
    "build_messages",
    "guess_columns",
    "guessed_by_position",
    "load_builtin",
    "system_prompt_for",
    "is_a_default_system_prompt",
    "load_table",
    "load_task_data",
    "source_kind",
    "normalise_answer",
    "preview",
    "prompt_ids",
    "render_prompt",
    "split_names",
    "task_rows",
]
