"""Tab 1, Model: which base model, in what precision, and the LoRA adapter on top; a memory estimate."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.config import DEFAULT_TARGETS
from ui.common import Ctx, warn, with_labels
from ui.i18n import lang_of, t
from ui.views import memory_markdown
from ui.words import say

MODEL_KEYS = ["model_name_or_path", "model_dtype", "model_load_in_4bit", "model_lora_r", "model_lora_alpha",
              "model_lora_dropout", "model_lora_target_modules", "model_gradient_checkpointing",
              "model_offload_activations", "model_compile_layers"]


def _kind(name_or_path: str) -> str:
    if not name_or_path:
        return "default"
    return "local" if Path(name_or_path).expanduser().exists() else "hub"


def build(ctx: Ctx) -> None:
    form, manager = ctx.form, ctx.manager
    d = form.defaults.model
    gr.Markdown(t("model.intro"))
    gr.Markdown(t("model.advice"), elem_id="model-advice")
    kind = gr.Radio(
        choices=[(t("model.kind.default"), "default"), (t("model.kind.hub"), "hub"), (t("model.kind.local"), "local")],
        value=_kind(d.name_or_path), label=t("model.kind"),
    )
    name = form.field("model", "name_or_path", interactive=bool(d.name_or_path),
                      placeholder="Qwen/Qwen2.5-0.5B-Instruct  or  /path/to/model")
    with gr.Row():
        form.field("model", "dtype")
        gpu = manager.has_gpu
        form.field("model", "load_in_4bit", interactive=gpu, value=d.load_in_4bit and gpu,
                   info=t("h.model.load_in_4bit" if gpu else "h.model.load_in_4bit.no_gpu"))
    with gr.Accordion(t("model.lora"), open=True):
        with gr.Row():
            form.field("model", "lora_r")
            form.field("model", "lora_alpha")
            form.field("model", "lora_dropout")
        form.add("model_lora_target_modules", gr.Dropdown(
            choices=list(DEFAULT_TARGETS), value=list(d.lora_target_modules), multiselect=True,
            allow_custom_value=True, label=t("f.model.lora_target_modules"),
            info=t("h.model.lora_target_modules")))
        with gr.Row():
            form.field("model", "gradient_checkpointing")
            form.field("model", "offload_activations", interactive=gpu)
            form.field("model", "compile_layers")
    memory = gr.Markdown(label=t("model.memory"), elem_id="model-memory")
    with gr.Row():
        load = gr.Button(t("model.load"), variant="secondary", scale=0, min_width=200)
        message = gr.Markdown()
    inputs = {k: form.components[k] for k in MODEL_KEYS}

    def on_kind(kind, current):
        if kind == "default":
            return gr.update(value="", interactive=False)
        return gr.update(interactive=True, value=current)

    def estimate(request: gr.Request, **values) -> str:
        try:
            return memory_markdown(manager.model_info(form.to_config(values).model), lang_of(request))
        except Exception as e:  # an estimate is never worth a warning toast
            return say("model.no_estimate", lang_of(request), error=with_labels(str(e)))  # a field by its label

    def load_model(request: gr.Request, **values):
        try:
            info = manager.load_model(form.to_config(values).model)
        except Exception as e:
            return gr.skip(), warn(e)
        lang = lang_of(request)
        gr.Info(say("model.loaded.toast", lang))
        return memory_markdown(info, lang), say("model.loaded", lang, name=info["name"], device=info["device"])

    form.follow([kind], lambda cfg: [_kind(cfg.model.name_or_path)])  # a run's model, after a reload
    kind.change(on_kind, [kind, name], [name], api_visibility="private")
    for key in ("model_name_or_path", "model_dtype", "model_load_in_4bit", "model_lora_r",
                "model_lora_target_modules"):
        form.components[key].change(estimate, inputs_kwargs=inputs, outputs=[memory], api_visibility="private",
                                    trigger_mode="always_last")
    load.click(load_model, inputs_kwargs=inputs, outputs=[memory, message], api_name="load_model")
    ctx.shared["model_memory"] = memory
    ctx.shared["model_estimate"] = (estimate, inputs)
