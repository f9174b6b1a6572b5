"""Tab 5, Compare: base and tuned side by side on one prompt, and the held-out evaluation.

Both models are asked as the tuned checkpoint's run trained: its system prompt and answer prefix
(from the run's config.yaml, `RunManager.chat_settings`) fill two editable boxes that follow the
checkpoint picked. When both answer alike, a note says whether the adapter has moved at all.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ui.common import Ctx, warn
from ui.i18n import TEXT, lang_of, t
from ui.views import (SHOWN_AS, checkpoint_choices, eval_frame, eval_markdown, retention_items_frame, retention_markdown,
                      same_answer_note)
from ui.words import frame_in, say

CURRENT = "current"
EVAL_COLUMNS = ["question", SHOWN_AS["answer"], "base", "base_correct", "tuned", "tuned_correct", "base_cut",
                "tuned_cut"]
PRESET_PROMPTS = [
    "Which is bigger? 9.11 or 9.9?",
    "Tom has 3 apples and buys 5 more. He gives 2 to a friend. How many apples does he have?",
    "Using the numbers 3, 4 and 5, write an equation that equals 17.",
    "How many r's are in the word strawberry?",
]


def target_choices(manager) -> list[tuple]:
    """'Current adapter' first (its name through gr.I18n), then every checkpoint of every run, newest run first."""
    return [(t("compare.current_choice"), CURRENT)] + checkpoint_choices(manager.list_runs(), manager.checkpoints)


def _text(content) -> str:
    """A chat message's text (Gradio may hand back a list of content parts)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def build(ctx: Ctx) -> None:
    manager = ctx.manager
    gr.Markdown(t("compare.intro"))
    with gr.Row():
        target = gr.Dropdown(choices=[(t("compare.current_choice"), CURRENT)], value=CURRENT, label=t("compare.target"),
                             allow_custom_value=True, scale=4, elem_id="compare-target")
        refresh = gr.Button(t("compare.refresh"), size="sm", scale=0)
    # filled on load and on each pick with the target's own; these values are what an API call
    # that leaves them out asks with (the page's defaults)
    shown = ctx.form.defaults.data
    with gr.Row():
        system = gr.Textbox(value=shown.system_prompt, label=t("compare.system"), lines=2, scale=4,
                            elem_id="compare-system")
        prefix = gr.Textbox(value=shown.response_prefix, label=t("compare.prefix"), lines=1, scale=1,
                            elem_id="compare-prefix")
    asked_md = gr.Markdown(elem_id="compare-asked")
    asked_for = gr.State(None)  # where the boxes' values came from (chat_settings' source)
    with gr.Row():
        base_chat = gr.Chatbot(label=t("compare.base"), height=380, elem_id="base-chat")
        tuned_chat = gr.Chatbot(label=t("compare.tuned_current"), height=380, elem_id="tuned-chat")
    note = gr.Markdown(elem_id="compare-note")
    with gr.Row():
        prompt = gr.Textbox(label=t("compare.prompt"), placeholder=PRESET_PROMPTS[0], scale=5, lines=1,
                            elem_id="compare-prompt")
        send = gr.Button(t("compare.send"), variant="primary", scale=1)
        clear = gr.Button(t("compare.clear"), scale=0)
    gr.Examples(examples=[[p] for p in PRESET_PROMPTS], inputs=[prompt], label=t("compare.examples"))
    with gr.Accordion(t("compare.settings"), open=False):
        with gr.Row():
            max_tokens = gr.Slider(8, 1024, value=256, step=8, label=t("compare.max_tokens"),
                                   elem_id="compare-max-tokens")
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label=t("compare.temperature"))
    with gr.Accordion(t("compare.eval"), open=True):
        with gr.Row():
            eval_n = gr.Slider(1, 200, value=20, step=1, label=t("compare.eval_n"), elem_id="eval-n")
            eval_btn = gr.Button(t("compare.eval_run"), variant="secondary")
        eval_md = gr.Markdown()
        # drawn on load with empty bars in the page's language: its colour domain (base, tuned) is fixed
        # when first drawn (see train.py on Gradio plots), so the real values only swap the data in
        eval_plot = gr.BarPlot(value=None, x="bar", y="value", color="model", x_title=" ",
                               y_title=t("plot.rate"), y_lim=[0, 1], label=t("compare.eval_plot"),
                               color_title=t("plot.model"), elem_id="eval-plot")
        eval_items = gr.Dataframe(value=pd.DataFrame(columns=EVAL_COLUMNS), label=t("compare.eval_items"), wrap=True,
                                  interactive=False, max_height=360, elem_classes=["fit-table"])
        eval_json = gr.JSON(visible=False)
    retention_items = retention_view(manager, target)

    def ask(prompt_text, base_history, tuned_history, target_value, system_prompt, response_prefix, max_new, temp,
            answered_by, request: gr.Request):
        """Ask the base model, then the tuned one, both with the boxes' system prompt and prefix; each
        answer shows as soon as it is ready. Alike answers get a note on whether the adapter moved.
        A tuned conversation whose earlier answers came from another adapter gets a line first
        (`switch_line`): the answers after it are this adapter's."""
        lang = lang_of(request)
        prompt_text = (prompt_text or "").strip()
        if not prompt_text:
            gr.Warning(say("ask.empty", lang))
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        target_value = target_value or CURRENT
        base_history = list(base_history or []) + [{"role": "user", "content": prompt_text}]
        tuned_history = list(tuned_history or [])
        if tuned_history and answered_by is not None and answered_by != target_value:
            tuned_history.append(switch_line(target_value, lang))
        tuned_history.append({"role": "user", "content": prompt_text})
        yield base_history, tuned_history, "", "", target_value
        replies = []
        for history, who in ((base_history, "base"), (tuned_history, target_value)):
            try:
                reply = manager.chat(prompt_text, target=who, system_prompt=system_prompt or "",
                                     response_prefix=response_prefix or "", asked_as=target_value,
                                     max_tokens=int(max_new), temperature=float(temp))
                replies.append(reply)
            except Exception as e:
                reply = warn(e)
            history.append({"role": "assistant", "content": reply if reply.strip() else say("ask.empty_answer", lang)})
            yield base_history, tuned_history, "", "", target_value
        if len(replies) == 2 and replies[0] == replies[1]:
            try:
                named = _label(target_value, lang, manager.current_adapter())
                text = same_answer_note(manager.adapter_change(target_value), named, lang)
            except Exception as e:  # a note is never worth a failed answer
                text = say("same.not_read", lang, error=e)
            yield base_history, tuned_history, "", text, target_value

    def asked_as(target_value, shown_for, lang: str = "en"):
        """The boxes: the system prompt and prefix `target_value` trained with, unless already shown."""
        try:
            s = manager.chat_settings(target_value or CURRENT)
        except Exception as e:
            return gr.skip(), gr.skip(), warn(e), gr.skip()
        if shown_for is not None and s["source"] == shown_for:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # keep the person's edits
        return s["system_prompt"], s["response_prefix"], asked_from(s, lang), s["source"]

    def evaluate(target_value, n, request: gr.Request):
        """Which side answers, as it starts (on a CPU each takes minutes), then the figures."""
        lang = lang_of(request)
        try:
            stages = manager.evaluate_stages(target_value or CURRENT, n=int(n))
            while True:
                try:
                    stage, facts = next(stages)
                except StopIteration as done:
                    result = done.value
                    break
                # the last evaluation's figures go: beside "answering" they would read as this one's
                yield say(f"eval.{stage}", lang, **facts), None, None, None
        except Exception as e:
            yield warn(e), gr.skip(), gr.skip(), gr.skip()
            return
        items, owner = result.pop("items"), result.pop("adapter_of", None)  # the API's JSON as before
        done = say("eval.done", lang, n=result["tuned"]["n"], adapter=_label(target_value, lang, owner),
                   max_tokens=result["max_tokens"])
        cut = {w: result[w].get("cut_rate") or 0.0 for w in ("base", "tuned")}
        if any(cut.values()):  # a cut answer that had not yet given its <answer> scores 0, however right its thought
            done += say("eval.cut", lang, base=f"{cut['base']:.0%}", tuned=f"{cut['tuned']:.0%}")
        table = frame_in(pd.DataFrame(items).rename(columns=SHOWN_AS), lang,
                         values=("base_correct", "tuned_correct", "base_cut", "tuned_cut"))
        yield eval_markdown(result, lang) + done, eval_frame(result, lang), table, result

    def refresh_targets(current, shown_for, request: gr.Request):
        """The checkpoint list anew; the boxes anew if what `current` means changed (another run)."""
        choices = target_choices(manager)
        values = [v for _, v in choices]
        value = current if current in values else CURRENT
        return gr.update(choices=choices, value=value), *asked_as(value, shown_for, lang_of(request))

    asked_outputs = [system, prefix, asked_md, asked_for]
    answered_by = gr.State(None)  # the target the tuned side's last answer came from
    inputs = [prompt, base_chat, tuned_chat, target, system, prefix, max_tokens, temperature, answered_by]
    send.click(ask, inputs, [base_chat, tuned_chat, prompt, note, answered_by], api_name="ask")
    prompt.submit(ask, inputs, [base_chat, tuned_chat, prompt, note, answered_by], api_visibility="private")
    clear.click(lambda: ([], [], "", None), outputs=[base_chat, tuned_chat, note, answered_by],
                api_visibility="private")
    # a chat's own trash icon clears both: the two sides answer the same conversation, turn for turn
    for chat in (base_chat, tuned_chat):
        chat.clear(lambda: ([], [], "", None), outputs=[base_chat, tuned_chat, note, answered_by],
                   api_visibility="private")
    eval_btn.click(evaluate, [target, eval_n], [eval_md, eval_plot, eval_items, eval_json], api_name="evaluate").then(
        bar_order, [eval_json], [eval_plot], api_visibility="private")
    refresh.click(refresh_targets, [target, asked_for], [target, *asked_outputs], api_visibility="private")
    # another checkpoint picked (here, or loaded from the Runs tab): its own prompt and prefix
    def asked_as_picked(value, request: gr.Request):
        return asked_as(value, None, lang_of(request))

    target.change(asked_as_picked, [target], asked_outputs, api_name="asked_as")

    def on_switch(value, request: gr.Request):  # the label only: the conversation is ask's alone (no race)
        return gr.update(label=tuned_label(value, lang_of(request)))

    target.change(on_switch, [target], [tuned_chat], api_visibility="private")
    ctx.shared["compare_target"] = target
    ctx.shared["compare_refresh"] = (refresh_targets, [target, asked_for], [target, *asked_outputs])
    def empty_views(request: gr.Request):
        """The empty tables and bars in the page's language (the bars' colours follow their first drawing)."""
        lang = lang_of(request)
        return (eval_frame(None, lang), frame_in(pd.DataFrame(columns=EVAL_COLUMNS), lang),
                retention_items_frame(None, lang))

    def on_load(load):
        load(asked_as_picked, [target], asked_outputs, api_visibility="private")
        load(empty_views, outputs=[eval_plot, eval_items, retention_items], api_visibility="private").then(
            bar_order, [eval_json], [eval_plot], api_visibility="private")

    ctx.shared.setdefault("on_load", []).append(on_load)


def bar_order(result: dict | None, request: gr.Request):
    """The bar plot's x order: `eval_frame`'s, the table's (Gradio sorts a bar plot's x values
    alphabetically unless told: 'format rate' came before 'last-number accuracy'). A step of its own
    after the value, so the API's /evaluate still returns the plain frame."""
    return gr.update(sort=eval_frame(result or None, lang_of(request))["bar"].tolist())


def adapter_name(target_value) -> str | None:
    """`run · step-000010` for a checkpoint folder, None for the current adapter, else the value as
    typed (the list takes any value).

    >>> adapter_name("/runs/r1/checkpoints/step-000008"), adapter_name("current"), adapter_name("foo")
    ('r1 · step-000008', None, 'foo')
    """
    if not target_value or target_value == CURRENT:
        return None
    p = Path(str(target_value))
    return f"{p.parent.parent.name} · {p.name}" if p.parent.parent.name else str(target_value)


def tuned_label(target_value, lang: str = "en") -> str:
    """The tuned side's label: which adapter answers there.

    >>> tuned_label("current"), tuned_label("/runs/r1/checkpoints/step-000008", "zh")
    ('Tuned model · current adapter', '微调模型 · r1 · step-000008')
    """
    i, name = (1 if lang == "zh" else 0), adapter_name(target_value)
    return TEXT["compare.tuned_current"][i] if name is None else f"{TEXT['compare.tuned'][i]} · {name}"


def asked_from(settings: dict, lang: str = "en") -> str:
    """The line above the boxes: where their system prompt and prefix came from (`chat_settings`).

    >>> asked_from({"source_kind": "current", "source_where": {"run": "r1"}, "source": "the current run `r1`"}, "zh")
    '系统提示和回答前缀来自当前运行 `r1`；两个模型都用它们提问（修改它们即可换一种问法）。'
    """
    i = 1 if lang == "zh" else 0
    kind = settings.get("source_kind")
    source = (TEXT[f"compare.src_{kind}"][i].format(**settings.get("source_where", {}))
              if f"compare.src_{kind}" in TEXT else settings["source"])
    return TEXT["compare.asked_from"][i].format(source=source)


def switch_line(target_value, lang: str = "en") -> dict:
    """The line a tuned conversation gets where its answers start coming from another adapter.

    >>> switch_line("/runs/r1/checkpoints/step-000008")["content"], switch_line("current", "zh")["content"]
    ('↪ *From here on: the adapter of `r1 · step-000008`.*', '↪ *从这里开始：当前适配器。*')
    """
    return {"role": "assistant", "content": say("switch", lang, adapter=_label(target_value, lang))}


UNKNOWN = object()  # _label: which run the current adapter holds is not known here


def _label(target_value: str, lang: str = "en", current=UNKNOWN) -> str:
    """'the current adapter' or 'the adapter of `run · step-000010`' for a checkpoint folder; the current
    one named by `current` (`RunManager.current_adapter()`, read where the answer was computed: after
    several runs "current" is the newest's, which a result must say — a walkthrough read a 1-step run's
    retention as its 20-step run's).

    >>> _label("current", "en", {"run": "r2", "step": 1}), _label("current"), _label("current", "en", None)[:32]
    ('the current adapter (run `r2` at step 1)', 'the current adapter', 'the current adapter (a fresh one')
    >>> _label("/runs/r1/checkpoints/step-000008", "en", {"run": "r2", "step": 1})
    'the adapter of `r1 · step-000008`'
    """
    name = adapter_name(target_value)
    if name is not None:
        return say("adapter.of", lang, name=name)
    if current is UNKNOWN:
        return say("adapter.current", lang)
    return say("adapter.current_none", lang) if current is None else say("adapter.current_of", lang, **current)


def retention_view(manager, target) -> gr.Dataframe:
    """Beside the held-out accuracy: what the tuned model kept off the task (core/evaluation/retention.py);
    returns its table of answers."""
    with gr.Accordion(t("compare.retention"), open=True):
        gr.Markdown(t("compare.retention_note"))
        with gr.Row():
            n_prompts = gr.Slider(1, 60, value=60, step=1, label=t("compare.retention_prompts"))
            n_task = gr.Slider(0, 50, value=10, step=1, label=t("compare.retention_tasks"))
            run = gr.Button(t("compare.retention_run"), variant="secondary", elem_id="retention-run")
        summary = gr.Markdown(elem_id="retention-summary")
        items = gr.Dataframe(value=retention_items_frame(None), label=t("compare.retention_items"), wrap=True,
                             interactive=False, max_height=360)

    def measure(target_value, prompts, per_task, request: gr.Request):
        lang = lang_of(request)
        try:
            result = manager.retention(target_value or CURRENT, n_prompts=int(prompts), n_task=int(per_task))
        except Exception as e:
            return warn(e), gr.skip()
        owner = result.pop("adapter_of", None)  # which run's weights "current" held when measured
        tuned = say("retention.tuned", lang, adapter=_label(target_value or CURRENT, lang, owner))
        return retention_markdown(result, lang) + "\n\n" + tuned, retention_items_frame(result, lang)

    run.click(measure, [target, n_prompts, n_task], [summary, items], api_name="retention")
    return items
