"""Tab 6, Export: the adapter as a zip, a merged 16-bit model, a push to the Hub, the run's config."""

from __future__ import annotations

import gradio as gr

from core.app.messages import ManagerError
from ui.common import Ctx, warn
from ui.i18n import lang_of, t
from ui.views import checkpoint_choices
from ui.words import say


def build(ctx: Ctx) -> None:
    manager = ctx.manager
    gr.Markdown(t("export.intro"))
    with gr.Row():
        checkpoint = gr.Dropdown(choices=[], label=t("export.checkpoint"), scale=4, allow_custom_value=True)
        refresh = gr.Button(t("compare.refresh"), size="sm", scale=0)
    with gr.Row():
        zip_btn = gr.Button(t("export.zip"))
        config_btn = gr.Button(t("export.config"))
        merge_btn = gr.Button(t("export.merge"))
    file = gr.File(label=t("export.file"), interactive=False)
    merged_to = gr.Textbox(label=t("export.merged_to"), interactive=False)
    with gr.Accordion(t("export.hub"), open=False):
        repo = gr.Textbox(label=t("export.repo"), placeholder="your-name/smollm2-aha")
        token = gr.Textbox(label=t("export.token"), type="password")
        with gr.Row():
            merged = gr.Checkbox(label=t("export.merged"), value=False)
            private = gr.Checkbox(label=t("export.private"), value=True)
        push_btn = gr.Button(t("export.push"), variant="primary")
    message = gr.Markdown()

    def choices(current):
        options = checkpoint_choices(manager.list_runs(), manager.checkpoints)
        values = [v for _, v in options]
        return gr.update(choices=options, value=current if current in values else (values[0] if values else None))

    def need(path):
        if not path:
            raise ManagerError("pick a checkpoint first (train a run, then press Refresh)")
        return path

    def export_zip(path, request: gr.Request = None):
        try:
            out = manager.export_adapter_zip(need(path))
        except Exception as e:
            return gr.skip(), warn(e)
        return out, say("export.zip", lang_of(request), path=out)

    def config_file(path, request: gr.Request = None):
        try:
            out = manager.config_path(checkpoint=need(path))
        except Exception as e:
            return gr.skip(), warn(e)
        return out, say("export.config", lang_of(request), path=out)

    def merge(path, request: gr.Request = None):
        try:
            out = manager.merge_and_save(need(path))
        except Exception as e:
            return gr.skip(), gr.skip(), warn(e)
        # the File box let go of the zip or config it offered before: it is not this merge's result
        return out, None, say("export.merged", lang_of(request), path=out)

    def push(path, repo_id, hf_token, use_merged, is_private, request: gr.Request = None):
        try:
            url = manager.push_to_hub(need(path), repo_id, hf_token, merged=use_merged, private=is_private)
        except Exception as e:
            return warn(e), ""
        return say("export.pushed", lang_of(request), url=url), ""  # the token box is emptied either way

    refresh.click(choices, [checkpoint], [checkpoint], api_visibility="private")
    zip_btn.click(export_zip, [checkpoint], [file, message], api_name="export_zip")
    config_btn.click(config_file, [checkpoint], [file, message], api_name="download_config")
    merge_btn.click(merge, [checkpoint], [merged_to, file, message], api_name="merge")
    push_btn.click(push, [checkpoint, repo, token, merged, private], [message, token], api_name="push_to_hub")
    ctx.shared["export_refresh"] = (choices, [checkpoint], [checkpoint])
