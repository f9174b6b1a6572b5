"""The Aha Studio page: a status bar and the tabs in the order a person works, over one RunManager.

Owns: the page's frame (title, status bar, tabs, timer) and how it is launched (auth with a
lock-out after failed logins, the API behind the login and a bound on requests held open
(`ui/gate.py`), which proxies' forwarded addresses are believed, i18n, which folders may be served, no run history in the browser:
Gradio's run history would keep every input, the Hub token included, in the browser's storage
and show it on /gradio_api/runs). Each tab draws itself (`ui/tabs/`); the manager does the work.

Refuses to know: training, models, rewards. Nothing here keeps run state: the page reads the
manager on load (the run's status and its settings, into the form) and on each timer tick, so
closing the browser never stops a run and a reload shows what the run uses.
"""

from __future__ import annotations

import gradio as gr
from starlette.middleware import Middleware

from core.app.manager import RunManager
from ui.common import Ctx
from ui.forms import Form
from ui.gate import ApiGate, raise_open_file_limit
from ui.i18n import I18N, lang_of, t
from ui.login_guard import LoginGuard
from ui.tabs import compare, data, export, model, rewards, runs, train
from ui.status_text import form_note

# Boxes Gradio's progress text stays out of: the status bar and the Train tab's message. Gradio renders it
# for every event of a box, `show_progress="hidden"` too, and hides it with opacity 0 only: the text stayed
# on the page ("0.1s", "processing | 0.3/0.2s" read before the status in a walkthrough, and by a screen
# reader); `display: none` takes it out while the tracker is hidden (a progress shown stays shown).
QUIET = ("status-bar", "train-message")

CSS = """
#start-btn {min-width: 110px}
.gradio-container {max-width: 1400px !important}
.fit-table .header-cell span.header {word-break: normal; overflow-wrap: normal}
.fit-table table .sizing-body td {white-space: normal}
#samples-table .header-cell:nth-last-child(2) {min-width: 19em}
""" + "".join(f"#{box} > [data-testid=status-tracker].hide {{display: none}}\n" for box in QUIET) + train.PLOT_CSS + train.LAYOUT_CSS  # the Train tab's plots: a series of one point as a dot; narrow: stacked
# .fit-table (the samples, runs, Try-on-samples and evaluation tables): a header breaks between words, never inside one, and
# a column is at least as wide as its header's longest word; long texts wrap in the column
# widths Gradio measures (it measured them unwrapped: each long-text column as wide as the table,
# headers squeezed to "ste/p", "ch/eck/poi/nts" and the table scrolled sideways).
# #samples-table: its completion (second from the right, views.samples_view) about 30 characters wide
# (19 em: a monospace character is 0.6 em, and the cell's padding; `ch` measured 7 px there, not the
# 8.4 px drawn). A table wider than its box (10 columns in ~350 px at a browser 820 px wide) scrolls,
# and Gradio then sizes each column to its longest word: the completion got ~12 characters a line.


def build_app(manager: RunManager) -> gr.Blocks:
    """The page over `manager`; launch it with `launch_app`."""
    form = Form(manager.default_config())  # on a CPU: settings it finishes in minutes, not hours
    # Gradio's own upload cache (every file a visitor sends, before a handler keeps a copy of it in the
    # runs folder's quota) is emptied of files older than an hour, every ten minutes
    with gr.Blocks(title="Aha Studio", delete_cache=(600, 3600)) as demo:
        ctx = Ctx(manager, form)
        gr.Markdown(t("title"))
        gr.Markdown(t("subtitle"))
        ctx.shared["status_bar"] = gr.Markdown(elem_id="status-bar")
        with gr.Tabs() as tabs:
            ctx.shared["tabs"] = tabs
            with gr.Tab(t("tab.model"), id="model"):
                model.build(ctx)
            with gr.Tab(t("tab.data"), id="data") as data_tab:
                ctx.shared["data_tab"] = data_tab
                data.build(ctx)
            with gr.Tab(t("tab.rewards"), id="rewards"):
                rewards.build(ctx)
            with gr.Tab(t("tab.train"), id="train"):
                train.build(ctx)
            with gr.Tab(t("tab.compare"), id="compare") as compare_tab:
                compare.build(ctx)
            with gr.Tab(t("tab.export"), id="export") as export_tab:
                export.build(ctx)
            with gr.Tab(t("tab.runs"), id="runs") as runs_tab:
                runs.build(ctx)
        # outside the tabs: a Timer inside a tab stopped ticking (the status froze until a reload)
        timer = gr.Timer(2.0)
        for wire in ctx.late:
            wire()
        # lists that change as runs save checkpoints: refreshed when their tab opens
        for tab, key in ((compare_tab, "compare_refresh"), (export_tab, "export_refresh"), (runs_tab, "runs_refresh")):
            fn, inputs, outputs = ctx.shared[key]
            tab.select(fn, inputs, outputs, api_visibility="private")
        # re-attach on page load: status, plots and samples of whatever run the manager holds
        ctx.shared["wire_refresh"](demo.load, api_name="status")
        ctx.shared["wire_refresh"](timer.tick, api_visibility="private", show_progress="hidden")

        # ... and the form shows that run's settings, not the defaults (Start and Resume read the
        # form); the estimate and plan then follow the values shown
        def show_run(request: gr.Request):
            cfg = manager.run_config()
            if cfg is None:  # no run yet: the defaults stay (an empty dict is no update to Gradio)
                return [gr.skip()] * (len(form.outputs()) + 1)
            return {**form.show(cfg),
                    ctx.shared["train_message"]: form_note(manager.status(), cfg.rewards.custom_code, lang_of(request))}

        estimate, model_inputs = ctx.shared["model_estimate"]
        plan_fn, plan_md = ctx.shared["memory_plan"]
        box_fn, box_inputs, box_outputs = ctx.shared["model_box"]
        shown = demo.load(show_run, outputs=[*form.outputs(), ctx.shared["train_message"]], api_visibility="private",
                          show_progress="hidden")  # a quick read: no veil over the form and the message at each load
        shown.then(
            estimate, inputs_kwargs=model_inputs, outputs=[ctx.shared["model_memory"]], api_visibility="private"
        ).then(plan_fn, inputs_kwargs=dict(form.components), outputs=[plan_md], api_visibility="private")
        # the model box's lock and the line naming the model, for the source shown (after show_run: never stale)
        shown.then(box_fn, box_inputs, box_outputs, api_visibility="private", show_progress="hidden")
        # the Train tab's settings and loss note for the algorithm shown (a run's may not be the default)
        algo_fn, algo_inputs, algo_outputs = ctx.shared["algorithm_view"]
        shown.then(algo_fn, algo_inputs, algo_outputs, api_visibility="private", show_progress="hidden")
        for on_load in ctx.shared.get("on_load", []):  # what each tab fills in on load (in the page's language)
            on_load(demo.load)
    demo.form = form  # for tests and scripts: the widget names the API accepts
    return demo


def launch_app(demo: gr.Blocks, manager: RunManager, *, host: str = "127.0.0.1", port: int | None = None,
               share: bool = False, auth: tuple[str, str] | None = None, prevent_thread_lock: bool = False,
               quiet: bool = False, trusted_proxies: list[str] | tuple = (), max_requests_per_client: int = 64):
    """Launch with the settings every entry point shares (app.py, tests).

    `trusted_proxies`: addresses whose X-Forwarded-For is believed (the login lock-out's client
    address); none by default. Gradio builds uvicorn's config itself and passes it nothing, so the
    one way in is uvicorn's own environment variable, read when the server starts."""
    import os

    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(trusted_proxies)  # "" = no proxy is trusted
    open_files = raise_open_file_limit()
    max_total = max(64, min(512, open_files // 4)) if open_files else 512
    demo.queue(default_concurrency_limit=4)
    return demo.launch(
        server_name=host, server_port=port, share=share, auth=auth, i18n=I18N, css=CSS,
        allowed_paths=[str(manager.runs_dir)], prevent_thread_lock=prevent_thread_lock, quiet=quiet,
        show_error=True, max_file_size="200mb", ssr_mode=False, run_history=False,
        app_kwargs={"middleware": [  # the API behind the login, bounded requests; a lock-out after failed logins
            Middleware(ApiGate, max_per_client=max_requests_per_client, max_total=max_total),
            Middleware(LoginGuard)]},
    )
