"""Tab 3, Rewards: the preset checklist with weights, a custom reward editor, "Try on samples"
(its stages shown as they start, in the line under its button, then "done" or the error; its
scores in the table's first columns)."""

from __future__ import annotations

from typing import Callable, Iterator

import gradio as gr
import pandas as pd

from core.rewards.base import RewardError
from core.rewards.registry import get_reward, list_rewards
from ui.common import Ctx, warn
from ui.i18n import lang_of, t
from ui.views import TRY_TEXT_COLUMNS, try_stage_text, try_view

EMPTY_TRY = pd.DataFrame(columns=["total", *TRY_TEXT_COLUMNS])  # the table before the first Try

CUSTOM_TEMPLATE = '''import re

def answer_is_short(prompts, completions, **kwargs) -> list[float]:
    """0.2 when the text inside <answer>...</answer> is at most 20 characters."""
    # TRL's signature: one float per completion. Dataset columns arrive as keyword lists,
    # e.g. kwargs["answer"][i] is the reference answer of completion i.
    rewards = []
    for completion in completions:
        text = completion[0]["content"] if isinstance(completion, list) else completion
        match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
        rewards.append(0.2 if match and len(match.group(1).strip()) <= 20 else 0.0)
    return rewards
'''


def try_updates(stages: Callable[[], Iterator], lang: str = "en") -> Iterator[tuple[pd.DataFrame, str]]:
    """What Try on samples shows, update by update: `(table, message)`. `stages()` starts a try
    (RunManager.try_rewards_stages: it yields each stage as it starts, then returns the scores).
    The first update comes before any work, so the last try's error or scores never stand beside
    this one; each stage replaces the message as it starts ("⏳ 2/3 · sampling ...", "⏳ 3/3 ·
    scoring ..."); the last update is the scores with "✅ done" (and the rewards' notes), or the
    error with an empty table (the last good scores would read as this code's).
    """
    empty = try_view(EMPTY_TRY, lang)
    running = None
    try:
        running = stages()
        while True:
            try:
                _, stage, facts = next(running)
            except StopIteration as finished:
                scored = finished.value
                break
            yield empty, f"⏳ {try_stage_text(stage, facts, lang)}"
        if not isinstance(scored, pd.DataFrame):
            raise TypeError(f"Try on samples gave no table ({type(scored).__name__})")
        rewards = [c for c in scored.columns if c not in TRY_TEXT_COLUMNS and c != "total"]
        done = try_stage_text("done", {"completions": len(scored), "rewards": len(rewards)}, lang)
        notes = [f"ℹ️ {note}" for note in scored.attrs.get("notes", [])]
        shown = try_view(scored, lang), "\n\n".join([f"✅ {done}", *notes])
    except Exception as e:  # never a stage line left standing: the error replaces it
        yield empty, warn(e)
        return
    finally:
        if running is not None:
            running.close()  # a try dropped mid-way (the page left) ends its reward workers now
    yield shown


def _canonical(name: str) -> str:
    try:
        return get_reward(name).name
    except RewardError:
        return name


def build(ctx: Ctx) -> None:
    form, manager = ctx.form, ctx.manager
    r = form.defaults.rewards
    chosen = [_canonical(n) for n in r.names]
    weights = dict(zip(chosen, r.weights, strict=True)) if r.weights else {}
    gr.Markdown(t("rewards.intro"))
    with gr.Accordion(t("rewards.presets"), open=True):
        for spec in list_rewards():
            with gr.Row(equal_height=True):
                with gr.Column(scale=5):
                    form.add(f"reward_{spec.name}", gr.Checkbox(
                        value=spec.name in chosen, label=spec.name, info=t(f"preset.{spec.name}")))
                with gr.Column(scale=1, min_width=100):
                    form.add(f"weight_{spec.name}", gr.Number(
                        value=weights.get(spec.name, spec.default_weight), label=t("rewards.weight")))
            form.reward_names.append(spec.name)
    with gr.Accordion(t("rewards.custom"), open=bool(r.custom_code)) as custom_box:
        gr.Markdown(t("rewards.custom_help"))
        gr.Markdown(t("rewards.custom_security"))
        code = form.add("rewards_custom_code", gr.Code(value=r.custom_code, language="python", lines=12,
                                                        label=t("f.rewards.custom_code")))
        with gr.Row():
            example = gr.Button(t("rewards.example"), size="sm", scale=0)
            form.field("rewards", "custom_timeout_s", scale=1)
    # a run's custom code, shown after a reload, is in sight
    form.follow([custom_box], lambda cfg: [gr.update(open=True) if cfg.rewards.custom_code.strip() else gr.skip()])
    try_btn = gr.Button(t("rewards.try"), variant="secondary")
    message = gr.Markdown(elem_id="try-message")  # the stage under way, then "done" or the error
    table = gr.Dataframe(value=try_view(EMPTY_TRY), label=t("rewards.try_table"), wrap=True, interactive=False,
                         max_height=480, elem_id="try-table", elem_classes=["fit-table"])

    def empty_table(request: gr.Request):  # its columns in the page's language before the first Try
        return try_view(EMPTY_TRY, lang_of(request))

    ctx.shared.setdefault("on_load", []).append(
        lambda load: load(empty_table, outputs=[table], api_visibility="private"))

    def try_rewards(request: gr.Request, **values):
        def stages():
            cfg = form.to_config(values)
            return manager.try_rewards_stages(cfg.rewards, cfg.data, n=3,
                                              max_tokens=min(cfg.algorithm.max_completion_length, 128))

        yield from try_updates(stages, lang_of(request))

    example.click(lambda: CUSTOM_TEMPLATE, outputs=[code], api_visibility="private")
    # the spinner on the table only: the message line under the button shows the stages as they start
    ctx.after_all_tabs(lambda: try_btn.click(try_rewards, inputs_kwargs=dict(form.components),
                                             outputs=[table, message], show_progress_on=[table],
                                             api_name="try_rewards"))
