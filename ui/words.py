"""The words of what the server renders — table headers, plot series, durations, the messages of
the tabs — in the page's language (`lang`: "en" or "zh", `ui.views.language`).

Owns: `SAY_EN` (sentences, keyed; their Chinese is `ui/zh.py` SAY_ZH, same keys and placeholders),
`WORDS` (the short English words tables and plots show: column names, series, models, states; their
Chinese is `ui/zh.py` WORDS_ZH), and `say`, `word`, `frame_in`, `duration`. No gradio import.
Messages a run itself writes (warnings, errors, a reward's traceback) stay as written.

Refuses to know: what the words describe (`ui/views.py`, the tabs).

    >>> say("aha.none", "zh"), word("peak memory", "zh"), duration(185, "zh"), duration(3725)
    ('*记录几步之后，这里会显示运行早期和后期各一个样本。*', '峰值显存', '3 分 05 秒', '1h 02m')
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from core.app.messages import format_seconds
from ui.zh import SAY_ZH, WORDS_ZH

SAY_EN = {
    # Train tab: what Start, Stop, Pause and Resume answer
    "started": "🟢 started run `{name}`: the plots fill in as steps finish.",
    "started.code": " It scores with your own reward code from the Rewards tab too (clear its editor there to run "
                    "without it).",
    "started.toast": "Run {name} started",
    "control": "{action}: {state}",
    "control.stopping": "stop: stopping (the step in flight finishes and a checkpoint is saved; the status above "
                        "says when)",
    "control.stopping.first": "stop: the run is called off before its first step (nothing is trained; a model "
                              "load in progress ends first; the status above says when)",
    "control.pausing": "pause: pausing (the step in flight finishes first; the status above says when)",
    "resumed": "resumed from step {step} ({state}), with the run's own rewards ({names})",
    "resumed.tab": "resumed from step {step} ({state}), with the rewards of the Rewards tab ({names})",
    "plan.unavailable": "🧮 Memory plan unavailable: {error}",
    # Data tab: a file's or a hub dataset's columns, and the preview's sizes
    "data.columns": "Columns: {columns}. {guessed}",
    "data.guessed": "Guessed: question = `{p}`, answer = `{a}`. Check both before training.",
    "data.one_column": "Only one column: pick the answer column before training.",
    "data.unnamed": "⚠️ No column is named like the {roles} (e.g. `question`, `prompt`; `answer`, `solution`): took "
                    "{took} by place in the table. Pick the right columns above (Column mapping) before training.",
    "data.took": "`{column}` as the {role}",
    "data.and": " and ",
    "data.or": " or the ",
    "data.nothing_unset": "\n\nNothing was loaded from `{name}`, and no data source is set: pick a built-in task or "
                          "upload a readable file.",
    "data.answer_moved": "\n\n⚠️ The column `{guessed}` has no answers to train on, so `{took}` is taken as the "
                         "answer column: check it under Column mapping.",
    "data.nothing_kept": "\n\nNothing was loaded from `{name}`. The data source is unchanged: `{source}` (Start trains "
                         "on it); upload a readable file to change it.",
    "data.sizes": "**{n}** training questions · **{held}** held out · source `{source}`",
    "data.sizes.one": "**{n}** training question · **{held}** held out · source `{source}`",
    "data.sizes.distinct": "**{n}** training rows (**{distinct}** distinct questions) · **{held}** held out · source `{source}`",
    # Model, Runs and Export tabs
    "model.loaded": "✅ loaded **{name}** on {device}",
    "model.loaded.toast": "Model loaded",
    "model.no_estimate": "Memory estimate unavailable: {error}",
    # the line under the model box: what Load, Start and Try on samples read (the box, not the radio)
    "model.uses.bundled": "Load, Start and Try on samples use **{default}**, the bundled model (offline).",
    "model.uses.unnamed": "⚠️ The box is empty, so Load, Start and Try on samples use the bundled **{default}**: "
                          "enter a model to use another.",
    "model.uses.named": "Load, Start and Try on samples use **`{name}`**.",
    "model.bundled_box": "{default} (bundled, offline)",
    "runs.loaded": "✅ `{run}` · `{checkpoint}` is the tuned model in Compare",
    "runs.loaded.toast": "Loaded {run} · {checkpoint} into Compare",
    "runs.resumed": "⏵ resumed `{run}` at step {step}: follow it on the Train tab",
    "export.zip": "✅ adapter zip: `{path}`",
    "export.config": "✅ config: `{path}` (train it again with `python -m scripts.train --config config.yaml`)",
    "export.merged": "✅ merged 16-bit model saved on the server in `{path}` (a folder: load it from there with transformers, or tick *Upload the merged model* below to push it to the Hub)",
    "export.pushed": "✅ pushed to {url}",
    # Train tab: the aha panel's samples
    "aha.none": "*A sample from early and one from late in the run show here once a few steps are logged.*",
    "aha.early": "Early: {block}",
    "aha.late": "Late: {block}",
    "aha.block": "**step {step}** · {verdict} · {words} words of thought · {question}",
    # Compare tab
    "ask.empty": "Type a question first.",
    "ask.empty_answer": "(empty answer)",
    "switch": "↪ *From here on: {adapter}.*",
    "adapter.current": "the current adapter",
    "adapter.of": "the adapter of `{name}`",
    "adapter.current_of": "the current adapter (run `{run}` at step {step})",
    "adapter.current_none": "the current adapter (a fresh one, no run's steps in it: the base model)",
    "retention.tuned": "Tuned = {adapter}.",
    "same.not_read": "Base and tuned gave the same answer (the adapter could not be read: {error})",
    "same.unmoved": "ℹ️ Base and tuned gave the same answer because {adapter} has not moved: all {matrices} LoRA B "
                    "matrices are exactly zero, so it *is* the base model. A training step moves it only when the "
                    "completions of a question score differently (reward spread: an advantage, a gradient); see the "
                    "Train tab's reward plot.",
    "same.moved": "ℹ️ Base and tuned gave the same answer, though {adapter} has moved ({nonzero} of {matrices} LoRA "
                  "B matrices non-zero, ‖ΔW‖ = {norm}): not enough to change this answer. Try another question, a "
                  "temperature above 0, or the held-out evaluation.",
    "eval.base": "⏳ 1/2 · the base model answers {questions} held-out questions (greedy, up to {max_tokens} tokens)",
    "eval.tuned": "⏳ 2/2 · the tuned model answers the same {questions} questions",
    "eval.done": "\n\nGreedy answers to {n} held-out questions; tuned = {adapter}; answers stop at {max_tokens} "
                 "tokens (Max completion tokens).",
    "eval.cut": " **Cut there before finishing: base {base}, tuned {tuned}** of the answers (one cut before its "
                "answer scores 0); a run with a larger Max completion tokens leaves room to finish.",
    "retention.kl": "KL(base ‖ tuned) on the base's answers to {n} general prompt(s): **{kl}** per token (log-prob "
                    "drop {drop}; 0 = unchanged).",
    "retention.general": "general prompts: {what}",
    "retention.task": "builtin:{name}: accuracy ({how}, {n} questions)",
}

# the short words tables and plots show, in English; ui/zh.py WORDS_ZH has each one's Chinese
WORDS = (
    # table columns
    "step", "reward", "advantage", "reference answer", "completion", "question", "answer", "rendered_prompt",
    "total", "source", "run", "state", "max_steps", "algorithm", "model", "data", "rewards", "checkpoints", "updated",
    "prompt", "base", "tuned", "kl", "tuned_flags", "base_correct", "tuned_correct", "base_cut", "tuned_cut",
    "questions",
    # cell values
    "reference", "correct", "wrong", "repeated n-grams", "repeated characters", "runaway tags",
    "idle", "loading", "running", "paused", "stopping", "finished", "stopped", "failed", "interrupted",
    # what Stop and Pause did
    "stop", "pause",
    # plot series
    "mean", "max", "min", "loss", "frac_reward_zero_std", "peak memory", "peak RAM", "reflections",
    # held-out and retention figures
    "accuracy", "last-number accuracy", "format rate", "off the task", "degenerate answers",
    "answers with think/answer tags", "cut at the token limit", "last number", "in tags",
)


def say(key: str, lang: str = "en", **values) -> str:
    """The sentence `key` in `lang`, its {placeholders} filled."""
    return (SAY_ZH if lang == "zh" else SAY_EN)[key].format(**values)


def word(text, lang: str = "en"):
    """A short word of a table or plot in `lang` (a yes/no cell too); anything else (a reward's name, a
    number) as it is.

    >>> word(True, "zh"), word(False), word("format_soft", "zh")
    ('是', False, 'format_soft')
    """
    if lang != "zh":
        return text
    if isinstance(text, (bool, np.bool_)):
        return "是" if text else "否"
    return WORDS_ZH.get(text, text) if isinstance(text, str) else text


def frame_in(frame: pd.DataFrame, lang: str = "en", values: tuple[str, ...] = (),
             only: tuple[str, ...] | None = None) -> pd.DataFrame:
    """`frame` with its column names (those in `only`, when given: a reward function's own name, say
    `max`, stays as named), and the cells of the columns `values`, in `lang`.

    >>> frame_in(pd.DataFrame({"state": ["stopped"], "step": [3]}), "zh", values=("state",)).to_dict("list")
    {'状态': ['已停止'], '步': [3]}
    >>> list(frame_in(pd.DataFrame(columns=["total", "max"]), "zh", only=("total",)).columns)
    ['总奖励', 'max']
    """
    if lang != "zh":
        return frame
    frame = frame.copy()
    for column in values:
        if column in frame:
            frame[column] = frame[column].map(lambda v: word(v, lang))
    return frame.rename(columns=lambda c: word(c, lang) if only is None or c in only else c)


def duration(seconds: float | None, lang: str = "en") -> str:
    """`core.app.messages.format_seconds` in `lang`: '3m 05s' or '3 分 05 秒'."""
    text = format_seconds(seconds)
    if lang != "zh":
        return text
    return re.sub(r"(\d+)([hms])\b", lambda m: f"{m.group(1)} {dict(h='小时', m='分', s='秒')[m.group(2)]}", text)
