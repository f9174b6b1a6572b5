"""Tab 5, Compare: base and tuned side by side on one prompt, and the held-out evaluation."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from core.config import DEFAULT_SYSTEM_PROMPT
from ui.common import Ctx, warn
from ui.i18n import t
from ui.views import checkpoint_choices, eval_frame, eval_markdown, retention_items_frame, retention_markdown

CURRENT = "current"
PRESET_PROMPTS = [
    "Which is bigger? 9.11 or 9.9?",
    "Tom has 3 apples and buys 5 more. He gives 2 to a friend. How many apples does he have?",
    "Using the numbers 3, 4 and 5, write an equation that equals 17.",
    "How many r's are in the word strawberry?",
]


def target_choices(manager) -> list[tuple[str, str]]:
    """'Current adapter' first, then every checkpoint of every run, newest run first."""
    return [("Current adapter (live)", CURRENT)] + checkpoint_choices(manager.list_runs(), manager.checkpoints)


def _text(content) -> str:
    """A chat message's text (Gradio may hand back a list of content parts)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def build(ctx: Ctx) -> None:
    manager = ctx.manager
    gr.Markdown(t("compare.intro"))
    with gr.Row():
        target = gr.Dropdown(choices=[("Current adapter (live)", CURRENT)], value=CURRENT, label=t("compare.target"),
                             allow_custom_value=True, scale=4, elem_id="compare-target")
        refresh = gr.Button(t("compare.refresh"), size="sm", scale=0)
    with gr.Row():
        base_chat = gr.Chatbot(label=t("compare.base"), height=380, elem_id="base-chat")
        tuned_chat = gr.Chatbot(label=t("compare.tuned"), height=380, elem_id="tuned-chat")
    with gr.Row():
        prompt = gr.Textbox(label=t("compare.prompt"), placeholder=PRESET_PROMPTS[0], scale=5, lines=1,
                            elem_id="compare-prompt")
        send = gr.Button(t("compare.send"), variant="primary", scale=1)
        clear = gr.Button(t("compare.clear"), scale=0)
    gr.Examples(examples=[[p] for p in PRESET_PROMPTS], inputs=[prompt], label=t("compare.examples"))
    with gr.Accordion(t("compare.settings"), open=False):
        system = gr.Textbox(value=DEFAULT_SYSTEM_PROMPT, label=t("compare.system"), lines=2, elem_id="compare-system")
        with gr.Row():
            max_tokens = gr.Slider(8, 1024, value=256, step=8, label=t("compare.max_tokens"),
                                   elem_id="compare-max-tokens")
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label=t("compare.temperature"))
    with gr.Accordion(t("compare.eval"), open=True):
        with gr.Row():
            eval_n = gr.Slider(1, 200, value=20, step=1, label=t("compare.eval_n"), elem_id="eval-n")
            eval_btn = gr.Button(t("compare.eval_run"), variant="secondary")
        eval_md = gr.Markdown()
        # drawn from the start with empty bars: its colour domain (base, tuned) is fixed when first
        # drawn (see train.py on Gradio plots), so the real values only swap the data in
        eval_plot = gr.BarPlot(value=eval_frame(None), x="bar", y="value", color="model", x_title="",
                               y_title="rate", y_lim=[0, 1], label=t("compare.eval_plot"),
                               elem_id="eval-plot")
        eval_items = gr.Dataframe(label=t("compare.eval_items"), wrap=True, interactive=False, max_height=360,
                                  headers=["question", "answer", "base", "base_correct", "tuned", "tuned_correct"])
        eval_json = gr.JSON(visible=False)
    retention_view(manager, target)

    def ask(prompt_text, base_history, tuned_history, target_value, system_prompt, max_new, temp):
        """Ask the base model, then the tuned one; each answer shows as soon as it is ready."""
        prompt_text = (prompt_text or "").strip()
        if not prompt_text:
            gr.Warning("Type a question first.")
            yield gr.skip(), gr.skip(), gr.skip()
            return
        base_history = list(base_history or []) + [{"role": "user", "content": prompt_text}]
        tuned_history = list(tuned_history or []) + [{"role": "user", "content": prompt_text}]
        yield base_history, tuned_history, ""
        for history, who in ((base_history, "base"), (tuned_history, target_value or CURRENT)):
            try:
                reply = manager.chat(prompt_text, target=who, system_prompt=system_prompt,
                                     max_tokens=int(max_new), temperature=float(temp))
            except Exception as e:
                reply = warn(e)
            history.append({"role": "assistant", "content": reply if reply.strip() else "(empty answer)"})
            yield base_history, tuned_history, ""

    def evaluate(target_value, n):
        try:
            result = manager.evaluate(target_value or CURRENT, n=int(n))
        except Exception as e:
            return warn(e), gr.skip(), gr.skip(), gr.skip()
        items = result.pop("items")
        tuned = "the current adapter"
        if target_value and target_value != CURRENT:
            tuned = f"`{Path(target_value).parent.parent.name} · {Path(target_value).name}`"
        note = f"\n\nGreedy answers to {result['tuned']['n']} held-out questions; tuned = {tuned}."
        return eval_markdown(result) + note, eval_frame(result), pd.DataFrame(items), result

    def refresh_targets(current):
        choices = target_choices(manager)
        values = [v for _, v in choices]
        return gr.update(choices=choices, value=current if current in values else CURRENT)

    send.click(ask, [prompt, base_chat, tuned_chat, target, system, max_tokens, temperature],
               [base_chat, tuned_chat, prompt], api_name="ask")
    prompt.submit(ask, [prompt, base_chat, tuned_chat, target, system, max_tokens, temperature],
                  [base_chat, tuned_chat, prompt], api_visibility="private")
    clear.click(lambda: ([], []), outputs=[base_chat, tuned_chat], api_visibility="private")
    eval_btn.click(evaluate, [target, eval_n], [eval_md, eval_plot, eval_items, eval_json], api_name="evaluate")
    refresh.click(refresh_targets, [target], [target], api_visibility="private")
    ctx.shared["compare_target"] = target
    ctx.shared["compare_refresh"] = (refresh_targets, [target], [target])


def retention_view(manager, target) -> None:
    """Beside the held-out accuracy: what the tuned model kept off the task (core/retention.py)."""
    with gr.Accordion(t("compare.retention"), open=True):
        gr.Markdown(t("compare.retention_note"))
        with gr.Row():
            n_prompts = gr.Slider(1, 60, value=60, step=1, label=t("compare.retention_prompts"))
            n_task = gr.Slider(0, 50, value=10, step=1, label=t("compare.retention_tasks"))
            run = gr.Button(t("compare.retention_run"), variant="secondary", elem_id="retention-run")
        summary = gr.Markdown(elem_id="retention-summary")
        items = gr.Dataframe(value=retention_items_frame(None), label=t("compare.retention_items"), wrap=True,
                             interactive=False, max_height=360)

    def measure(target_value, prompts, per_task):
        try:
            result = manager.retention(target_value or CURRENT, n_prompts=int(prompts), n_task=int(per_task))
        except Exception as e:
            return warn(e), gr.skip()
        return retention_markdown(result), retention_items_frame(result)

    run.click(measure, [target, n_prompts, n_task], [summary, items], api_name="retention")
