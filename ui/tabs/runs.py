"""The runs list: every run in the runs folder; load a checkpoint into Compare, resume a stopped run."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui.common import Ctx, warn
from ui.i18n import lang_of, t
from ui.tabs.compare import target_choices
from ui.views import runs_frame
from ui.words import say


def build(ctx: Ctx) -> None:
    manager = ctx.manager
    gr.Markdown(t("runs.intro"))
    refresh = gr.Button(t("runs.refresh"), size="sm")
    table = gr.Dataframe(label=t("runs.table"), interactive=False, wrap=True, elem_id="runs-table",
                         elem_classes=["fit-table"])
    with gr.Row():
        run = gr.Dropdown(choices=[], label=t("runs.run"), scale=2)
        # custom values: a script (the /load_run API) names a checkpoint (step-000300) the choices,
        # filled by a private event, do not hold yet; the manager checks it is one of the run's
        checkpoint = gr.Dropdown(choices=[], label=t("runs.checkpoint"), scale=2, allow_custom_value=True)
    with gr.Row():
        load = gr.Button(t("runs.load"), variant="primary")
        resume = gr.Button(t("runs.resume"))
        run_code = gr.Checkbox(False, label=t("runs.run_code"), info=t("runs.run_code_info"))
    message = gr.Markdown()
    target, tabs = ctx.shared["compare_target"], ctx.shared["tabs"]

    def list_runs(current=None, request: gr.Request = None):
        runs = manager.list_runs()
        names = [r["run"] for r in runs]
        value = current if current in names else (names[0] if names else None)
        return runs_frame(runs, lang_of(request)), gr.update(choices=names, value=value)

    def on_run(name):
        if not name:
            return gr.update(choices=[], value=None)
        paths = list(reversed(manager.checkpoints(name)))
        return gr.update(choices=[(Path(p).name, p) for p in paths], value=paths[0] if paths else None)

    def load_run(name, path, request: gr.Request = None):
        try:
            info = manager.load_run(name, path or None)
        except Exception as e:
            return warn(e), gr.skip(), gr.skip()
        lang, step = lang_of(request), Path(info["checkpoint"]).name
        gr.Info(say("runs.loaded.toast", lang, run=info["run_name"], checkpoint=step))
        return (say("runs.loaded", lang, run=info["run_name"], checkpoint=step),
                gr.update(choices=target_choices(manager), value=info["checkpoint"]), gr.Tabs(selected="compare"))

    def resume_run(name, run_code, request: gr.Request = None):
        try:
            s = manager.resume(name, run_code=bool(run_code))
        except Exception as e:
            return warn(e)
        return say("runs.resumed", lang_of(request), run=s["run_name"], step=s["step"])

    refresh.click(list_runs, [run], [table, run], api_name="list_runs")
    run.change(on_run, [run], [checkpoint], api_visibility="private")
    load.click(load_run, [run, checkpoint], [message, target, tabs], api_name="load_run")
    resume.click(resume_run, [run, run_code], [message], api_name="resume_run")
    ctx.shared["runs_refresh"] = (list_runs, [run], [table, run])
