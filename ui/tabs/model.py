"""Tab 1, Model: which base model, in what precision, and the LoRA adapter on top; a memory estimate.

The model box is what Load, Start and Try on samples read; the source radio only empties and locks
it ("Bundled default") or unlocks it. The line under the box names the model the box gives: a locked
box looks like an open one, and a new user could not tell which model a run would use.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.config import DEFAULT_TARGETS
from core.models.bundled import DEFAULT_MODEL_NAME as BUNDLED, is_bundled
from ui.common import Ctx, warn, with_labels
from ui.i18n import lang_of, t
from ui.views import memory_markdown
from ui.words import say

MODEL_KEYS = ["model_name_or_path", "model_dtype", "model_load_in_4bit", "model_lora_r", "model_lora_alpha",
              "model_lora_dropout", "model_lora_target_modules", "model_gradient_checkpointing",
              "model_offload_activations", "model_compile_layers"]

PLACEHOLDER = "Qwen/Qwen2.5-0.5B-Instruct  or  /path/to/model"


def _kind(name_or_path: str) -> str:
    if not name_or_path:
        return "default"
    return "local" if Path(name_or_path).expanduser().exists() else "hub"


def uses_text(name_or_path: str, kind: str, lang: str = "en") -> str:
    """The line under the model box: the model Load, Start and Try on samples use, which is the box's
    value whatever the radio says, with a warning where a Hub id or folder is picked and the box is empty.

    >>> uses_text("", "default")
    'Load, Start and Try on samples use **SmolLM2-135M-Instruct**, the bundled model (offline).'
    >>> uses_text("Qwen/Qwen2.5-0.5B-Instruct", "hub")
    'Load, Start and Try on samples use **`Qwen/Qwen2.5-0.5B-Instruct`**.'
    """
    if is_bundled(name_or_path):
        key = "model.uses.unnamed" if not name_or_path and kind != "default" else "model.uses.bundled"
        return say(key, lang, default=BUNDLED)
    return say("model.uses.named", lang, name=name_or_path)


def box_state(kind: str, lang: str = "en") -> dict:
    """The model box's lock and placeholder for the source picked: locked, naming the bundled model,
    for "Bundled default"; open, with an example, for a Hub id or a folder."""
    if kind == "default":
        return {"interactive": False, "placeholder": say("model.bundled_box", lang, default=BUNDLED)}
    return {"interactive": True, "placeholder": PLACEHOLDER}


def on_kind(kind: str, current: str, lang: str = "en") -> tuple[dict, str]:
    """A source picked: (the box's update, the line under it). "Bundled default" empties and locks
    the box; the others unlock it with what it held."""
    value = "" if kind == "default" else current
    return gr.update(value=value, **box_state(kind, lang)), uses_text(value, kind, lang)


def build(ctx: Ctx) -> None:
    form, manager = ctx.form, ctx.manager
    d = form.defaults.model
    gr.Markdown(t("model.intro"))
    gr.Markdown(t("model.advice"), elem_id="model-advice")
    kind = gr.Radio(
        choices=[(t("model.kind.default"), "default"), (t("model.kind.hub"), "hub"), (t("model.kind.local"), "local")],
        value=_kind(d.name_or_path), label=t("model.kind"),
    )
    name = form.field("model", "name_or_path", **box_state(_kind(d.name_or_path)))
    uses = gr.Markdown(elem_id="model-uses")  # filled on load (studio.py), in the page's language
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

    def kind_picked(request: gr.Request, kind, current):
        return on_kind(kind, current, lang_of(request))

    def name_changed(request: gr.Request, kind, current):
        return uses_text(current, kind, lang_of(request))

    def box_shown(request: gr.Request, kind, current):  # on load, after the form shows a run's model
        lang = lang_of(request)
        return gr.update(**box_state(kind, lang)), uses_text(current, kind, lang)

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
    kind.change(kind_picked, [kind, name], [name, uses], api_visibility="private")
    name.change(name_changed, [kind, name], [uses], api_visibility="private", trigger_mode="always_last")
    for key in ("model_name_or_path", "model_dtype", "model_load_in_4bit", "model_lora_r",
                "model_lora_target_modules"):
        form.components[key].change(estimate, inputs_kwargs=inputs, outputs=[memory], api_visibility="private",
                                    trigger_mode="always_last")
    load.click(load_model, inputs_kwargs=inputs, outputs=[memory, message], api_name="load_model")
    ctx.shared["model_memory"] = memory
    ctx.shared["model_box"] = (box_shown, [kind, name], [name, uses])
    ctx.shared["model_estimate"] = (estimate, inputs)
