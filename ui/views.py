"""What the page shows, computed from what the manager returns: plot frames, status lines, tables.

Owns: pure functions from manager data (status dicts, metric and sample frames, evaluation
results) to display values — long-format DataFrames for `gr.LinePlot`, tables, checkpoint
choices (the status line and progress bar: `ui/status_text.py`). No gradio import, so each is testable on its own. Text
computed on the server (the status line, the memory estimate and plan) comes in the browser's
language (`lang`: "en" or "zh", see `language`); the Chinese is in `ui/zh.py`.

Refuses to know: how the numbers were made (the manager and the trainer).

    >>> import pandas as pd
    >>> m = pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.3], "rewards/correctness/mean": [0.0, 0.5]})
    >>> reward_frame(m).to_dict("list")
    {'step': [1, 2, 1, 2], 'value': [0.1, 0.3, 0.0, 0.5], 'series': ['total', 'total', 'correctness', 'correctness']}
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from core.memory.words import say as say_plan
from ui.words import frame_in, say, word
from ui.zh import MEMORY_ZH, PLAN_ZH, TRY_ZH

PLOT_COLUMNS = ["step", "value", "series"]
LANGUAGES = ("en", "zh")


def language(accept_language: str | None) -> str:
    """'zh' when the browser's first language is Chinese, else 'en' (the page's own choice too:
    Gradio's frontend picks its locale from the same browser setting).

    >>> language("zh-CN,zh;q=0.9,en;q=0.8"), language("en-US,en;q=0.9,zh-CN;q=0.8"), language(None)
    ('zh', 'en', 'en')
    """
    first = (accept_language or "").split(",")[0].split(";")[0].strip().lower()
    return "zh" if first == "zh" or first.startswith("zh-") else "en"


# ---------------------------------------------------------------------------
# plots


def step_axis(frame: pd.DataFrame | None) -> list[int]:
    """The step axis of a plot: from 1 to the last step shown, at least to 4. With an integer
    format Vega-Lite puts its ticks on whole steps once the axis spans 3 or more (1-3 would
    tick every half step and print each label twice).

    >>> step_axis(None), step_axis(pd.DataFrame({"step": [1, 2, 9]}))
    ([1, 4], [1, 9])
    """
    last = int(frame["step"].max()) if frame is not None and not frame.empty else 0
    return [1, max(4, last)]


def value_axis(frame: pd.DataFrame | None, margin: float = 0.08, floor: float | None = None) -> list[float] | None:
    """The value axis (y_lim) of a plot: every series' points with `margin` of their span above and
    below (Vega fitted the axis to the data and the highest line ran along the frame, drawn half
    outside it: a new user saw the "correct" length line cut off). Not below 0 when no value is;
    from `floor` when given. None while there is nothing to plot.

    >>> value_axis(pd.DataFrame({"value": [80.0, 200.0]}))
    [70.4, 209.6]
    >>> value_axis(pd.DataFrame({"value": [0.0, 0.5]})), value_axis(pd.DataFrame({"value": [2.0, 2.0]}), floor=0)
    ([0.0, 0.54], [0.0, 2.16])
    >>> value_axis(pd.DataFrame({"value": [float("nan")]})) is None
    True
    """
    values = frame["value"].dropna() if frame is not None and "value" in frame else pd.Series(dtype=float)
    if values.empty:
        return None
    lo, hi = float(values.min()), float(values.max())
    lo = lo if floor is None else min(lo, float(floor))
    pad = (hi - lo) * margin or abs(hi) * margin or 1.0  # one flat line: room around it all the same
    low = lo if floor is not None else (0.0 if 0 <= lo < pad else lo - pad)
    return [round(low, 6), round(hi + pad, 6)]


def plot_value(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """A plot's value: the frame, or None while it has no points (Gradio then draws its empty
    placeholder; an empty frame made Vega log "Infinite extent" for every axis)."""
    return None if frame is None or frame.empty else frame


def long_frame(metrics: pd.DataFrame, series: dict[str, str]) -> pd.DataFrame:
    """Columns of `metrics` (name -> series label) as one long frame: step, value, series."""
    parts = []
    for column, label in series.items():
        if metrics is not None and not metrics.empty and column in metrics and "step" in metrics:
            part = metrics[["step", column]].rename(columns={column: "value"}).dropna()
            part = part.assign(series=label)
            parts.append(part)
    if not parts:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                             "series": pd.Series(dtype="str")})
    out = pd.concat(parts, ignore_index=True)
    out["value"] = out["value"].astype(float)
    return out[PLOT_COLUMNS]


def reward_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """Total reward and the mean of each reward function, per step."""
    series = {"reward": "total"}
    if metrics is not None and not metrics.empty:
        for column in metrics.columns:
            if column.startswith("rewards/") and column.endswith("/mean"):
                series[column] = column[len("rewards/"):-len("/mean")]
    return long_frame(metrics, series)


SAMPLE_COLUMNS = ["step", "reward", "answer", "completion", "question"]
# the data's `answer` column is the reference answer, not the model's: a new user read it as the
# model's, sitting beside the completion (2026-12-06); the tables call it so
SHOWN_AS = {"answer": "reference answer"}
# the samples table's own columns (the others are the rewards', named as their functions)
_SAMPLES_OWN = ("step", "reward", "advantage", *(SHOWN_AS.get(c, c) for c in SAMPLE_COLUMNS))


# where a table's header may break: a browser breaks a header between words only, so a reward named
# `correctness_reward` kept its column as wide as the whole name (a walkthrough, the samples table at 820 px)
HEADER_BREAK = "\u200b"  # zero-width space


def breakable(name: str) -> str:
    r"""A column's name as a table's header shows it: a zero-width space after each underscore, where
    the line may break ("correctness_" over "reward"). It looks the same; copied, it carries that
    invisible character.

    >>> breakable("xml_tag_count"), breakable("reference answer")
    ('xml_\u200btag_\u200bcount', 'reference answer')
    """
    return str(name).replace("_", "_" + HEADER_BREAK)


def samples_view(samples: pd.DataFrame, question_chars: int = 160, completion_chars: int = 600,
                 lang: str = "en") -> pd.DataFrame:
    r"""The samples table as shown: the short columns first (step, total reward, each reward's score,
    the advantage where the algorithm logs one, the expected answer), then the completion and the
    question, long text cut, so the numbers are in sight on a laptop's screen (a new user found them
    off to the right, 2026-12-06).
    Column names in `lang`, each breakable after an underscore (`breakable`: a script reading the
    /status API's samples by a reward's name drops U+200B first); the values as given. The completion
    is the second column from the right, with rows or without: the page's CSS keeps it readable
    (ui/studio.py, `#samples-table`).

    >>> row = {"step": 3, "question": "q", "completion": "c", "answer": "4", "reward": 1.5,
    ...        "advantage": 0.25, "correctness": 1.0, "format_soft": 0.5}
    >>> list(samples_view(pd.DataFrame([row])).columns)
    ['step', 'reward', 'correctness', 'format_\u200bsoft', 'advantage', 'reference answer', 'completion', 'question']
    """
    if samples is None or samples.empty:
        empty = pd.DataFrame(columns=SAMPLE_COLUMNS).rename(columns=SHOWN_AS)
        return frame_in(empty, lang, only=_SAMPLES_OWN).rename(columns=breakable)
    df = samples.copy()
    cut = lambda n: (lambda v: v if not isinstance(v, str) or len(v) <= n else v[: n - 1] + "…")  # noqa: E731
    df["question"] = df["question"].map(cut(question_chars))
    df["completion"] = df["completion"].map(cut(completion_chars))
    if "advantage" in df and df["advantage"].isna().all():  # Online DPO and PPO log none: no empty column
        df = df.drop(columns=["advantage"])
    scores = [c for c in df.columns if c not in SAMPLE_COLUMNS and c != "advantage"]
    first, text = ["step", "reward"], ["answer", "completion", "question"]
    df = df[[c for c in first if c in df] + scores + (["advantage"] if "advantage" in df else [])
            + [c for c in text if c in df]]
    return frame_in(df.round(3).rename(columns=SHOWN_AS), lang, only=_SAMPLES_OWN).rename(columns=breakable)


# ---------------------------------------------------------------------------
# "Try on samples" (Rewards tab)

TRY_TEXT_COLUMNS = ["source", "answer", "completion", "question"]
# the stages RunManager.try_rewards_stages yields, and "done" (the scores are in); ui/zh.py TRY_ZH has the same keys
TRY_EN = {
    "data": "1/3 · loading the questions",
    "sampling": "2/3 · sampling {completions} completions of up to {max_tokens} tokens from the current model",
    "sampling.load_model": ", after loading the model",
    "sampling.after_step": ", after the current training step",
    "scoring": "3/3 · scoring {completions} completions with {rewards} reward function(s)",
    "done": "done · {completions} completions scored with {rewards} reward function(s)",
}


def try_view(scored: pd.DataFrame, lang: str = "en") -> pd.DataFrame:
    """Try on samples' table as shown: the scores first (total, then each reward), then the texts,
    the long ones last, so the numbers never sit off-screen to the right.

    >>> df = pd.DataFrame({"question": ["q"], "answer": ["1"], "source": ["model"], "completion": ["c"],
    ...                    "format_soft": [0.5], "correctness": [1.0], "total": [1.25]})
    >>> list(try_view(df).columns)
    ['total', 'format_soft', 'correctness', 'source', 'reference answer', 'completion', 'question']
    """
    scores = ["total"] + [c for c in scored.columns if c not in TRY_TEXT_COLUMNS and c != "total"]
    columns = [c for c in scores if c in scored] + [c for c in TRY_TEXT_COLUMNS if c in scored]
    return frame_in(scored[columns].round(3).rename(columns=SHOWN_AS), lang, values=("source",),
                    only=("total", *(SHOWN_AS.get(c, c) for c in TRY_TEXT_COLUMNS)))


def try_stage_text(stage: str, facts: dict, lang: str = "en") -> str:
    """One stage of Try on samples in words (RunManager.try_rewards' `progress`).

    >>> try_stage_text("sampling", {"completions": 3, "max_tokens": 64, "load_model": True, "after_step": False})
    '2/3 · sampling 3 completions of up to 64 tokens from the current model, after loading the model'
    """
    w = TRY_ZH if lang == "zh" else TRY_EN
    text = w[stage].format(**facts)
    for extra in ("load_model", "after_step"):
        if facts.get(extra):
            text += w[f"{stage}.{extra}"]
    return text


def _gb(x: float) -> str:
    """Sizes in GB, or MB when below 0.1 GB (tiny models and adapters)."""
    return f"{x:.2f} GB" if x >= 0.1 else f"{x * 1024:.1f} MB"


def checkpoint_choices(runs: list[dict], checkpoints_of) -> list[tuple[str, str]]:
    """(label, value) pairs for checkpoint pickers: 'run · step-000010' -> folder path."""
    out = []
    for run in runs:
        for path in reversed(checkpoints_of(run["run"])):
            out.append((f"{run['run']} · {Path(path).name}", path))
    return out


def runs_frame(runs: list[dict], lang: str = "en") -> pd.DataFrame:
    columns = ["run", "state", "step", "max_steps", "reward", "algorithm", "model", "data", "rewards", "checkpoints",
               "updated"]
    df = pd.DataFrame(runs, columns=columns)
    if not df.empty:
        df["reward"] = df["reward"].map(lambda v: None if v is None else round(float(v), 4))
    return frame_in(df, lang, values=("state",))


def _eval_metrics(result: dict | None) -> list[tuple[str, str]]:
    """(key, label) of the held-out figures to show; last-number accuracy only where the task has
    a number to find (not Countdown) and the result carries it."""
    metrics = [("accuracy", "accuracy")]
    if result and all(result[w].get("accuracy_flexible") is not None for w in ("base", "tuned")):
        metrics.append(("accuracy_flexible", "last-number accuracy"))
    return metrics + [("format_rate", "format rate")]


def eval_frame(result: dict | None, lang: str = "en") -> pd.DataFrame:
    """Bar-plot rows, one bar each: 'accuracy · base', ..., with model (the colour) and value (NaN
    before any evaluation: no bars, but both models are in the legend). Gradio's BarPlot stacks
    bars of one x value, so each metric-and-model pair is its own x value. Labels in `lang`.

    >>> eval_frame({"base": {"accuracy": 0.25, "format_rate": 0.5}, "tuned": {"accuracy": 0.75, "format_rate": 1.0}})["bar"].tolist()
    ['accuracy · base', 'accuracy · tuned', 'format rate · base', 'format rate · tuned']
    >>> r = {w: {"accuracy": 0.5, "accuracy_flexible": 0.6, "format_rate": 1.0} for w in ("base", "tuned")}
    >>> eval_frame(r)["bar"].tolist()[2:4]
    ['last-number accuracy · base', 'last-number accuracy · tuned']
    """
    rows = []
    for metric, label in _eval_metrics(result):
        for who in ("base", "tuned"):
            value = float(result[who][metric]) if result else float("nan")
            rows.append({"bar": f"{word(label, lang)} · {word(who, lang)}", "model": word(who, lang), "value": value})
    return pd.DataFrame(rows)


def eval_markdown(result: dict, lang: str = "en") -> str:
    """The held-out figures as a table.

    >>> r = {w: {"accuracy": a, "accuracy_flexible": 0.5, "format_rate": 1.0, "n": 200}
    ...      for w, a in (("base", 0.025), ("tuned", 1.0))}
    >>> print(eval_markdown(r).splitlines()[2])
    | base | 2.5% | 50.0% | 100.0% | 200 |
    """
    metrics = _eval_metrics(result)
    head = "| | " + " | ".join(word(label, lang) for _, label in metrics) + f" | {word('questions', lang)} |"
    rows = [f"| {word(w, lang)} | " + " | ".join(f"{result[w][k]:.1%}" for k, _ in metrics) + f" | {result[w]['n']} |"
            for w in ("base", "tuned")]
    return "\n".join([head, "|---" * (len(metrics) + 2) + "|", *rows])


# the model tab's memory estimate; ui/zh.py MEMORY_ZH has the same keys
MEMORY_EN = {
    "unknown": "Memory estimate: unknown until the model loads. {note}",
    "loaded": "loaded",
    "not_loaded": "not loaded yet",
    "line": "**{params} M parameters** ({state}, on {device}) · weights **{weights}** + LoRA adapter "
            "({adapter_params} M parameters) {adapter} + its gradients {grads} + AdamW states {optimizer} = "
            "**{total}**{where}, before activations and the KV cache (they grow with batch size and completion "
            "length).",
    "ram": " of RAM ({available} available)",
    "gpu": " of GPU memory",
}


def memory_markdown(info: dict, lang: str = "en") -> str:
    """The model tab's estimate: weights and the adapter's training state, in RAM on a CPU (with
    what is available) and in GPU memory on a GPU.

    >>> info = {"params": 135e6, "loaded": True, "device": "cpu", "weights_gb": 0.5, "adapter_params": 4.9e6,
    ...         "adapter_gb": 0.02, "gradients_gb": 0.02, "optimizer_gb": 0.04, "total_gb": 0.58, "available_gb": 19.5}
    >>> memory_markdown(info).split("= ")[1].split(", before")[0]
    '**0.58 GB** of RAM (19.50 GB available)'
    """
    w = MEMORY_ZH if lang == "zh" else MEMORY_EN
    if not info.get("params"):
        return w["unknown"].format(note=info.get("note", "")).strip()
    if str(info.get("device", "")).startswith("cuda"):
        where = w["gpu"]
    else:
        where = w["ram"].format(available=_gb(info["available_gb"])) if info.get("available_gb") else ""
    return w["line"].format(
        params=f"{info['params'] / 1e6:,.1f}", state=w["loaded" if info.get("loaded") else "not_loaded"],
        device=info["device"], weights=_gb(info["weights_gb"]), adapter_params=f"{info['adapter_params'] / 1e6:.2f}",
        adapter=_gb(info["adapter_gb"]), grads=_gb(info["gradients_gb"]), optimizer=_gb(info["optimizer_gb"]),
        total=_gb(info["total_gb"]), where=where)


def memory_plan_markdown(plan: dict, lang: str = "en") -> str:
    """The Train tab's memory plan (RunManager.memory_plan) in words, in `lang`.

    >>> plan = {"text": "Memory plan: unknown for this model.", "sentences": [[("unknown", {})]]}
    >>> memory_plan_markdown(plan), memory_plan_markdown(plan, "zh")
    ('🧮 Memory plan: unknown for this model.', '🧮 内存规划：此模型未知。')
    >>> memory_plan_markdown({"text": "CPU run: about 45.0 TB of RAM (22.1 GB available).", "fits": False})
    '⚠️ CPU run: about 45.0 TB of RAM (22.1 GB available).'
    """
    mark = "⚠️ " if plan.get("fits") is False else "🧮 "  # more than the machine has: said at a glance
    if lang == "zh" and plan.get("sentences"):
        return mark + say_plan(plan["sentences"], PLAN_ZH, sep="")
    return mark + plan["text"]


# ---------------------------------------------------------------------------
# the aha panel (Train tab) and the retention view (Compare tab), issue 22

AHA_LENGTHS = {"completions/mean_length_correct": "correct", "completions/mean_length_incorrect": "wrong"}


def aha_length_frame(metrics: pd.DataFrame, window: int = 10) -> pd.DataFrame:
    """Mean length of the correct and of the wrong completions, each a `window`-step rolling mean
    (steps with none of a kind are skipped, not counted as 0).

    >>> m = pd.DataFrame({"step": [1, 2, 3], "completions/mean_length_correct": [10.0, None, 20.0],
    ...                   "completions/mean_length_incorrect": [30.0, 30.0, 30.0]})
    >>> aha_length_frame(m, window=2).query("series == 'correct'")["value"].tolist()
    [10.0, 10.0, 20.0]
    """
    if metrics is None or metrics.empty or "step" not in metrics:
        return long_frame(metrics, {})
    smooth = metrics[["step"]].copy()
    for column in AHA_LENGTHS:
        if column in metrics:
            smooth[column] = pd.to_numeric(metrics[column], errors="coerce").rolling(window, min_periods=1).mean()
    return long_frame(smooth, AHA_LENGTHS)


def _sample_block(sample: dict, chars: int = 700, lang: str = "en") -> str:
    text = sample.get("completion") or ""
    text = text if len(text) <= chars else text[: chars - 1] + "…"
    verdict = word("correct" if sample.get("correct") else "wrong", lang)
    head = say("aha.block", lang, step=sample.get("step"), verdict=verdict, words=sample.get("thought_words", 0),
               question=html.escape(str(sample.get("question", ""))))
    return f"{head}\n\n```\n{text}\n```"


def aha_sample_markdown(grown: dict | None, lang: str = "en") -> str:
    """One logged sample from early in the run and one from late (core.evaluation.evaluate.grown_thinking)."""
    if not grown:
        return say("aha.none", lang)
    return "\n\n".join(say(f"aha.{when}", lang, block=_sample_block(grown[when], lang=lang)) for when in ("early", "late"))


def retention_markdown(result: dict, lang: str = "en") -> str:
    """core.evaluation.retention's figures, base beside tuned.

    >>> g = {"n": 60, "kl": 0.0123, "logprob_drop": 0.01, "tokens": 900,
    ...      "base": {"degenerate_rate": 0.0, "tag_rate": 0.0, "truncated_rate": 0.1, "mean_tokens": 40.0},
    ...      "tuned": {"degenerate_rate": 0.05, "tag_rate": 0.2, "truncated_rate": 0.1, "mean_tokens": 42.0}}
    >>> t = {"addition": {"base": {"accuracy_flexible": 0.4, "n": 10}, "tuned": {"accuracy_flexible": 0.5, "n": 10}}}
    >>> print(retention_markdown({"general": g, "tasks": t}).splitlines()[4])
    | general prompts: degenerate answers | 0.0% | 5.0% |
    """
    g, w = result["general"], (lambda text: word(text, lang))
    lines = [say("retention.kl", lang, n=g["n"], kl=f"{g['kl']:.4f}", drop=f"{g['logprob_drop']:.4f}"), "",
             f"| {w('off the task')} | {w('base')} | {w('tuned')} |", "|---|---|---|"]
    for key, label in (("degenerate_rate", "degenerate answers"), ("tag_rate", "answers with think/answer tags"),
                       ("truncated_rate", "cut at the token limit")):
        lines.append(f"| {say('retention.general', lang, what=w(label))} | {g['base'][key]:.1%} | {g['tuned'][key]:.1%} |")
    for name, r in result.get("tasks", {}).items():
        key = "accuracy_flexible" if r["base"].get("accuracy_flexible") is not None else "accuracy"
        how = w("last number" if key == "accuracy_flexible" else "in tags")
        lines.append(f"| {say('retention.task', lang, name=name, how=how, n=r['base']['n'])} | {r['base'][key]:.1%} | "
                     f"{r['tuned'][key]:.1%} |")
    return "\n".join(lines)


def retention_items_frame(result: dict | None, lang: str = "en") -> pd.DataFrame:
    """The general prompts' answers: prompt, base, tuned, KL of the answer, what looked broken."""
    columns = ["prompt", "base", "tuned", "kl", "tuned_flags"]
    if not result:
        return frame_in(pd.DataFrame(columns=columns), lang)
    rows = [{**{k: i.get(k) for k in columns}, "tuned_flags": ", ".join(word(f, lang) for f in i.get("tuned_flags") or [])}
            for i in result["general"]["items"]]
    return frame_in(pd.DataFrame(rows, columns=columns).round(4), lang)


# ---------------------------------------------------------------------------
# Compare: why base and tuned answered alike (issue 30)


def same_answer_note(change: dict | None, adapter: str = "the tuned model's adapter", lang: str = "en") -> str:
    """What an identical base and tuned answer means, from the adapter's change (core.runs.adapter_change).

    >>> zero = {"matrices": 14, "nonzero": 0, "delta_norm": 0.0, "moved": False}
    >>> print(same_answer_note(zero, "the adapter of `a · step-000002`").split(", so")[0])
    ℹ️ Base and tuned gave the same answer because the adapter of `a · step-000002` has not moved: all 14 LoRA B matrices are exactly zero
    >>> print(same_answer_note({"matrices": 14, "nonzero": 3, "delta_norm": 0.0123, "moved": True}).split(": ")[0])
    ℹ️ Base and tuned gave the same answer, though the tuned model's adapter has moved (3 of 14 LoRA B matrices non-zero, ‖ΔW‖ = 0.0123)
    """
    if not change:
        return ""
    if not change["moved"]:
        return say("same.unmoved", lang, adapter=adapter, matrices=change["matrices"])
    return say("same.moved", lang, adapter=adapter, nonzero=change["nonzero"], matrices=change["matrices"],
               norm=f"{change['delta_norm']:.4g}")
