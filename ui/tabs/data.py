"""Tab 2, Data: a built-in task, an uploaded file or a Hub dataset; column mapping; a preview."""

from __future__ import annotations

import contextlib
from pathlib import Path

import gradio as gr
import pandas as pd

from core.data import (BUILTIN_TASKS, UNNAMED_COLUMNS, guess_columns, guessed_by_position, is_a_default_system_prompt,
                       source_kind, system_prompt_for)
from core.runs.access import upload_name
from ui.common import Ctx, warn
from ui.i18n import lang_of, t
from ui.words import frame_in, say, word

PREVIEW_COLUMNS = ("question", "answer", "rendered_prompt")  # core.data.chat's preview table

BUILTIN_PREFIX = "builtin:"
# the radio's choice that shows a source, from its text alone (core.data.source_kind: no disk look-up)
KIND_OF = {"builtin": "builtin", "file": "upload", "hub": "hub"}


def discard_gradio_copy(path: str) -> None:
    """Delete Gradio's temporary copy of an uploaded file (and its folder, when that empties)
    once the uploads folder holds ours: otherwise every upload stays on the disk twice, the
    second copy outside any quota (issue 29). A path outside Gradio's upload folder is left alone."""
    from gradio.utils import get_upload_folder

    cache = Path(get_upload_folder()).resolve()
    copy = Path(path).resolve()
    if cache not in copy.parents or not copy.is_file():
        return
    copy.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: another file of Gradio's is still in it
        if copy.parent != cache:
            copy.parent.rmdir()


def build(ctx: Ctx) -> None:
    form, manager = ctx.form, ctx.manager
    d = form.defaults.data
    gr.Markdown(t("data.intro"))
    start_kind = KIND_OF[source_kind(d.source)]
    kind = gr.Radio(choices=[(t("data.kind.builtin"), "builtin"), (t("data.kind.upload"), "upload"),
                             (t("data.kind.hub"), "hub")], value=start_kind, label=t("data.kind"))
    builtin = gr.Dropdown(
        choices=[(t(f"task.{name}"), name) for name in BUILTIN_TASKS],
        value=d.source[len(BUILTIN_PREFIX):] if start_kind == "builtin" else None,
        label=t("data.builtin"), visible=start_kind == "builtin", elem_id="data-builtin")
    upload = gr.File(label=t("data.upload"), file_types=[".csv", ".tsv", ".jsonl", ".json", ".parquet"],
                     type="filepath", visible=start_kind == "upload", elem_id="data-upload")
    with gr.Group(visible=start_kind == "hub") as hub_box:
        hub = gr.Textbox(value=d.source.strip() if start_kind == "hub" else "", label=t("data.hub"),
                         placeholder="openai/gsm8k")
        with gr.Row():
            form.field("data", "subset")
            form.field("data", "split")
            form.field("data", "eval_split")
    source = form.field("data", "source")
    with gr.Accordion(t("data.columns"), open=start_kind != "builtin") as columns_box:
        with gr.Row():
            prompt_col = form.add("data_prompt_column", gr.Dropdown(
                choices=[d.prompt_column], value=d.prompt_column, allow_custom_value=True,
                label=t("f.data.prompt_column"), info=t("data.prompt_column_info")))
            answer_col = form.add("data_answer_column", gr.Dropdown(
                choices=[d.answer_column], value=d.answer_column, allow_custom_value=True,
                label=t("f.data.answer_column"), info=t("data.answer_column_info")))
    with gr.Accordion(t("data.prompting"), open=False):
        form.field("data", "system_prompt", lines=3)
        form.field("data", "response_prefix")
        form.field("data", "stop_at")
        form.field("data", "chat_template", lines=4)
    with gr.Row():
        form.field("data", "train_size")
        form.field("data", "eval_size")
        form.field("data", "seed")
        form.field("data", "hold_out_by")
    with gr.Accordion(t("data.curriculum"), open=bool(d.curriculum_column.strip())) as curriculum_box:
        with gr.Row():
            form.field("data", "curriculum_column")
            form.field("data", "curriculum_steps")
    preview_btn = gr.Button(t("data.preview"), variant="secondary")
    info = gr.Markdown(elem_id="data-info")
    table = gr.Dataframe(label=t("data.preview_table"), wrap=True, interactive=False, max_height=420,
                         elem_id="data-preview", headers=list(PREVIEW_COLUMNS))

    def empty_table(shown, request: gr.Request):
        """Its columns in the page's language before the first preview (one already shown stays)."""
        if shown is not None and len(shown):
            return gr.skip()
        return frame_in(pd.DataFrame(columns=list(PREVIEW_COLUMNS)), lang_of(request))

    ctx.shared.setdefault("on_load", []).append(
        lambda load: load(empty_table, [table], [table], api_visibility="private"))

    def shown_source(cfg):
        """[kind, built-in task, hub id] that show `cfg.data.source` (a run's, after a reload)."""
        src = cfg.data.source.strip()
        kind = KIND_OF[source_kind(src)]
        if kind == "builtin":
            return ["builtin", src[len(BUILTIN_PREFIX):], gr.skip()]
        if kind == "upload":  # an uploaded file, or one in a --data-dir folder
            return ["upload", None, gr.skip()]
        return ["hub", None, src]

    form.follow([kind, builtin, hub], shown_source)
    # a run's curriculum, shown after a reload, is in sight
    form.follow([curriculum_box], lambda cfg: [gr.update(open=True) if cfg.data.curriculum_column.strip() else gr.skip()])

    def on_kind(kind):
        return (gr.update(visible=kind == "builtin"), gr.update(visible=kind == "upload"),
                gr.update(visible=kind == "hub"), gr.update(open=kind != "builtin"))

    def on_builtin(name):
        return f"{BUILTIN_PREFIX}{name}" if name else gr.skip()

    def on_pick(request: gr.Request, **values):
        """The user's pick of a task (`input`): the source, the task's own worked example where the
        system prompt is still one of the defaults (a prompt the user wrote stays), and the preview of
        both. Gradio also sends `input` when the list loses focus without a pick: the task in use then
        changes nothing, so a run's settings shown after a reload are never swapped (nor by `change`)."""
        name = values.pop("_name")
        src = f"{BUILTIN_PREFIX}{name}"
        if not name or values.get("data_source") == src:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        values["data_source"] = src
        prompt = gr.skip()
        if is_a_default_system_prompt(values.get("data_system_prompt") or ""):
            prompt = values["data_system_prompt"] = system_prompt_for(src)
        return (src, prompt, *preview(request, **values))

    def on_kind_pick(request: gr.Request, **values):
        """The radio put back on "Built-in task" by the user (`input`, after an upload or a hub dataset):
        the task the list shows becomes the source again, as a pick from the list does — its prompt and
        preview too. The list's own `change` does not fire, its value unchanged: a walkthrough saw "Built-in
        task" and "largest" on the page and the uploaded file still the source in use (2026-12-07). The other
        kinds wait for their file or name."""
        if values.pop("_kind") != "builtin":
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return on_pick(request, **values)

    def columns_of(src: str, split: str = "train", subset: str = "", lang: str = "en"):
        cols = manager.table_columns(src, split=split, subset=subset)
        p, a = guess_columns(cols, d.prompt_column, d.answer_column)
        guessed = say("data.guessed", lang, p=p, a=a) if a is not None else say("data.one_column", lang)
        unnamed = guessed_by_position(p, a, d.prompt_column, d.answer_column)
        if a is not None and unnamed:  # e.g. `foo,bar`: trained on as it is, the run learns nothing meant
            took = say("data.and", lang).join(say("data.took", lang, column=p if role == "question" else a,
                                                  role=word(role, lang)) for role in unnamed)
            guessed = say("data.unnamed", lang, roles=say("data.or", lang).join(word(r, lang) for r in unnamed), took=took)
        return gr.update(choices=cols, value=p), gr.update(choices=cols, value=a), \
            say("data.columns", lang, columns=", ".join(f"`{c}`" for c in cols), guessed=guessed)

    def usable_answer_column(stored: str, question: str, columns: list) -> str | None:
        """The first of `columns` whose rows give a run something to train on with `question`, or None."""
        for column in columns:
            try:
                manager.usable_rows(stored, question, column)
                return column
            except Exception:
                continue
        return None

    def on_upload(path, current="", request: gr.Request = None):
        """[source, question column, answer column, message, kind, file box, hub id, loaded]. A file that cannot
        be read changes nothing the run uses, and the page shows what it does use: the radio goes back to
        the source in use (its hub id in the box) and the file box empties (a new user saw the broken file
        in the box, "Upload a file" picked, and trained on the built-in task without a word, 2026-12-06);
        the messages name files as the user uploaded them, not the server's copies."""
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), "", gr.skip(), gr.skip(), gr.skip(), False
        stored = None
        name, lang = Path(path).name, lang_of(request)
        try:
            stored = manager.store_upload(path)
            p, a, msg = columns_of(stored, lang=lang)
            question, answer = p["value"], a["value"]  # the guessed mapping (the dropdowns' updates)
            if answer is not None:  # columns that read but no row to train on: refused like an unreadable file,
                try:  # unless another column gives answers: then that one is taken, and said
                    manager.usable_rows(stored, question, answer)
                except Exception:
                    other = usable_answer_column(stored, question, [c for c in a["choices"] if c not in (question, answer)])
                    if other is None:
                        raise
                    a = gr.update(choices=a["choices"], value=other)  # the message names the column taken
                    msg = say("data.columns", lang, columns=", ".join(f"`{c}`" for c in a["choices"]),
                              guessed=say("data.guessed", lang, p=question, a=other)) + \
                        say("data.answer_moved", lang, guessed=answer, took=other)
        except Exception as e:  # the source stays what it was: say which, or Start trains on it unawares
            if stored is not None:  # stored but unreadable: not kept against the uploads quota
                manager.discard_upload(stored, current)
            said = warn(e, {str(stored): name} if stored is not None else None)
            current = (current or "").strip()
            if not current:
                return (gr.skip(), gr.skip(), gr.skip(), said + say("data.nothing_unset", lang, name=name), gr.skip(),
                        None, gr.skip(), False)
            kind = KIND_OF[source_kind(current)]
            kept = say("data.nothing_kept", lang, name=name, source=upload_name(current))
            return (gr.skip(), gr.skip(), gr.skip(), said + kept, kind, None, current if kind == "hub" else gr.skip(),
                    False)
        finally:
            discard_gradio_copy(path)  # stored or refused, Gradio's copy is of no more use
        return stored, p, a, msg, gr.skip(), gr.skip(), gr.skip(), True

    def on_hub(name, split, subset, request: gr.Request = None):
        if not name.strip():
            return gr.skip(), gr.skip(), gr.skip(), ""
        try:
            p, a, msg = columns_of(name.strip(), split or "train", subset, lang_of(request))
        except Exception as e:
            return name.strip(), gr.skip(), gr.skip(), warn(e)
        return name.strip(), p, a, msg

    def preview(request: gr.Request, **values):
        lang = lang_of(request)
        try:
            cfg = form.to_config(values)
            result = manager.preview_data(cfg.data, cfg.model)
        except Exception as e:  # no rows of an earlier source left under the error; an upload by its own name
            src = str(values.get("data_source") or "")
            return gr.update(value=None), warn(e, {src: upload_name(src)} if src else None)
        shown = upload_name(cfg.data.source)  # an upload by the name it was uploaded under, not the server's path
        notes = "".join(f"\n- {n}" for n in result["notes"]).replace(cfg.data.source, shown)  # core's own notes
        n, distinct = result["train"], result.get("distinct", result["train"])
        key = "data.sizes.distinct" if distinct < n else "data.sizes.one" if n == 1 else "data.sizes"
        text = say(key, lang, n=n, distinct=distinct, held=result["eval"], source=shown) + notes
        return frame_in(result["table"], lang), text

    kind.change(on_kind, [kind], [builtin, upload, hub_box, columns_box], api_visibility="private")
    loaded = gr.State(False)  # the last upload was read and is now the source (its rows are worth a preview)
    uploaded = upload.upload(on_upload, [upload, source], [source, prompt_col, answer_col, info, kind, upload, hub,
                                                           loaded], api_visibility="private")
    hub_submit = hub.submit(on_hub, [hub, form.components["data_split"], form.components["data_subset"]],
                            [source, prompt_col, answer_col, info], api_visibility="private")
    hub_blur = hub.blur(on_hub, [hub, form.components["data_split"], form.components["data_subset"]],
                        [source, prompt_col, answer_col, info], api_visibility="private")

    def first_look(request: gr.Request, **values):
        """The preview of a built-in task the first time the tab opens (nothing shown yet): a new user
        found an empty table until they pressed Preview (2026-12-06). Other sources wait for the button
        (a hub dataset may take a while to read)."""
        shown = values.pop("_shown") or ""
        if shown.strip() or not str(values.get("data_source", "")).startswith(BUILTIN_PREFIX):
            return gr.skip(), gr.skip()
        return preview(request, **values)

    def after_upload(request: gr.Request, **values):
        """The preview of the file just loaded, under the upload's message: a new user saw that message
        describe the new file above the previous source's rows until they pressed Preview (2026-12-06).
        A refused file changed nothing (its message says so): no preview. The column warning is said
        once, by the upload's message."""
        said = values.pop("_said") or ""
        if not values.pop("_loaded"):
            return gr.skip(), gr.skip()
        rows, text = preview(request, **values)
        text = "\n".join(line for line in text.split("\n") if UNNAMED_COLUMNS not in line)
        return rows, f"{said}\n\n{text}" if said else text

    def own_prompt(src, current):
        """A file's or a hub dataset's system prompt: the format alone (`system_prompt_for`) where the
        prompt is still a built-in task's (a walkthrough's upload kept the largest-number example); a
        prompt the user wrote stays."""
        src = str(src or "")
        if not src or src.startswith(BUILTIN_PREFIX) or not is_a_default_system_prompt(current or ""):
            return gr.skip()
        return system_prompt_for(src)

    def wire_preview():
        prompt = form.components["data_system_prompt"]
        uploaded.then(own_prompt, [source, prompt], [prompt], api_visibility="private", show_progress="hidden").then(
            after_upload, inputs_kwargs={**form.components, "_said": info, "_loaded": loaded},
            outputs=[table, info], api_visibility="private", show_progress="hidden")
        for read in (hub_submit, hub_blur):  # a hub dataset's name typed in: the same prompt rule
            read.then(own_prompt, [source, prompt], [prompt], api_visibility="private", show_progress="hidden")
        preview_btn.click(preview, inputs_kwargs=dict(form.components), outputs=[table, info], api_name="preview_data")
        if "data_tab" in ctx.shared:
            ctx.shared["data_tab"].select(first_look, inputs_kwargs={**form.components, "_shown": info},
                                          outputs=[table, info], api_visibility="private", show_progress="hidden")
        # a built-in task previews itself as soon as it is picked, with the source and prompt it set
        builtin.input(on_pick, inputs_kwargs={**form.components, "_name": builtin},
                      outputs=[source, prompt, table, info], api_visibility="private")
        builtin.change(on_builtin, [builtin], [source], api_visibility="private")  # a run's or recipe's too
        kind.input(on_kind_pick, inputs_kwargs={**form.components, "_kind": kind, "_name": builtin},
                   outputs=[source, prompt, table, info], api_visibility="private")

    ctx.after_all_tabs(wire_preview)
