"""Tab 4, Train: settings with tooltips, Start / Pause / Resume / Stop, live progress, plots, samples.

The live part is drawn by `refresh`, which reads the manager on page load and on every timer
tick: a reloaded page (or a second browser) re-attaches to a run that kept going meanwhile.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from core.app.library import rewards_label
from types import SimpleNamespace

from core.config import CPU_QUICK, Config
from core.engines.registry import backend_for
from core.rl.algorithms import ALGORITHMS, READ_BY, ignored_fields
from ui.common import Ctx, warn, with_labels
from ui.forms import config_fields
from ui.i18n import TEXT, en, lang_of, t, text_in
from ui.status_text import STATUS_EN, form_note, progress_html, status_line
from ui.views import (aha_length_frame, aha_sample_markdown, long_frame, memory_plan_markdown, plot_value, reward_frame,
                      samples_view, step_axis, value_axis)
from ui.words import SAY_EN, say, word
from ui.zh import SAY_ZH, STATUS_ZH

# settings a CPU finishes in minutes on the bundled 135M model (core.config.CPU_QUICK), by widget name
QUICK_CPU = {key.replace(".", "_"): value for key, value in CPU_QUICK.items()}


# how the messages begin, in either language: the Start and Resume messages are cleared once their run stops
# running, Stop's and Pause's once the step in flight ended (apply_layout; the manager has no "pausing" state:
# a pause pressed mid-step reads "running" until the step ends)
_SAID = (SAY_EN, SAY_ZH)
STARTED = tuple(w["started"].split("`")[0] for w in _SAID)
RESUMED = tuple(w[k].split("{")[0] for w in _SAID for k in ("resumed", "resumed.tab"))
IN_FLIGHT = tuple(w[k].split(" (")[0].split("（")[0] for w in _SAID
                  for k in ("control.stopping", "control.stopping.first", "control.pausing"))
# a reload's note "the form shows the settings of the run in progress": cleared once that run has ended
FORM_ACTIVE = tuple(w["form_from_active"].split("{")[0] for w in (STATUS_EN, STATUS_ZH))

# the settings the memory plan depends on (model tab and this one)
PLAN_KEYS = ("model_name_or_path", "model_dtype", "model_load_in_4bit", "model_lora_r", "model_lora_target_modules",
             "model_gradient_checkpointing", "model_offload_activations", "algorithm_num_generations",
             "algorithm_prompts_per_step", "algorithm_gradient_accumulation_steps", "algorithm_max_prompt_length",
             "algorithm_max_completion_length", "algorithm_micro_batch_size", "algorithm_auto_micro_batch",
             "run_engine", "run_vllm_kv_cache_dtype", "run_vllm_weights_dtype", "run_vllm_free_kv_between_steps")


# A series with one point (a run's first step, a one-step run, a series that has appeared once) is a line
# of no length: Vega draws it as the path "Mx,yZ" with a 2 px butt cap, which paints nothing, and gr.LinePlot
# (gradio 6.31) has no point markers (its frontend builds the Vega-Lite mark from the mark's name alone).
# Such a path (no "L": a line of two points or more has one) gets a round cap 8 px wide: a dot in the
# series' colour. Its line group is not clipped, or a point on the first step (the left edge of the step
# axis) would show half a dot. Lines of two points or more are drawn as Gradio draws them.
PLOT_CLASS = "step-plot"
PLOT_CSS = f"""
.{PLOT_CLASS} g.mark-line path:not([d*="L"]) {{stroke-linecap: round; stroke-width: 8px}}
.{PLOT_CLASS} g.mark-line:has(> path:not([d*="L"])) {{clip-path: none}}
"""

# Below 1024 px of window (Gradio's own step: its page is 704 px wide there, 960 from 1024) the settings and
# the live column stack, and so do the plots of each row: side by side at 820 px (a laptop's split screen,
# Colab's output pane) each plot was 166 px wide and its legend, one row that Vega never wraps, ran past the
# plot's box, which clips it (the total and four rewards: 400 px). Stacked, a plot is the page's width.
# `!important`: Gradio sets each column's and block's min-width on the element itself.
# Stacked, the controls come first: the live column's boxes join the row (`display: contents`) and Start's
# row, the progress bar and the message are ordered before the settings, the plots after them (at 800 px
# Start was 2,600 px down, below every settings group). Two columns: the boxes stay where they are.
PLOT_ROW = "plot-row"
STACK_BELOW_PX = 1024
CONTROLS = ("train-controls", "train-progress", "train-message")  # elem_ids of the boxes shown first, stacked
LAYOUT_CSS = f"""
@media (max-width: {STACK_BELOW_PX - 1}px) {{
  #train-layout > .column, #train-layout .{PLOT_ROW} > .block {{min-width: 100% !important}}
  #train-live {{display: contents}}
  #train-live > * {{order: 1; min-width: 100% !important}}
  {", ".join(f"#train-live > #{c}" for c in CONTROLS)} {{order: -1}}
}}
"""


def _plot(label_key: str, y_title: str, multi: bool = False, y_format: str | None = ".3~g", **kw) -> gr.LinePlot:
    """A live line plot of `value` over `step`; one colour per `series` (with a legend) when `multi`.
    Empty (Gradio's placeholder) until the first step; a series of one point drawn as a dot (`PLOT_CSS`);
    whole-number steps on the x axis. Gradio's own height for every plot: at a fixed 250 px the chart ran
    17 px past its box and hid the "step" title. Axis titles as plain text (`plot.<y_title>`), English as
    built and the page's language on load (`axis_titles`): through gr.I18n, Vega drew the raw
    "__i18n__{...}" now and then (a helper's walkthrough, 2026-12-07); the series' names in the page's
    language (`refresh`)."""
    return gr.LinePlot(value=None, x="step", y="value", color="series" if multi else None,
                       color_title="", label=t(label_key), x_title=en("plot.step"), y_title=en(f"plot.{y_title}"),
                       x_axis_format="d", elem_classes=[PLOT_CLASS],
                       x_lim=step_axis(None), height=None, y_axis_format=y_format, **kw)


def axis_titles(plots, lang: str) -> list:
    """Each plot's axis titles in `lang`, as updates (none for English: the plots are built so); a
    plot's key is found from its English title (`plot.*` titles are unique)."""
    if lang == "en":
        return [gr.skip() for _ in plots]
    key_of = {en(k): k for k in TEXT if k.startswith("plot.")}
    return [gr.update(x_title=text_in("plot.step", lang), y_title=text_in(key_of[p.y_title], lang)) for p in plots]



# the note beside the loss plot, by algorithm: GRPOTrainer's family shares one ("train.loss_note")
LOSS_NOTES = ("train.loss_note", "train.loss_note.online_dpo", "train.loss_note.ppo")


def loss_note_key(algorithm: str) -> str:
    """The loss note for `algorithm` (`LOSS_NOTES`)."""
    key = f"train.loss_note.{algorithm}"
    return key if key in LOSS_NOTES else "train.loss_note"


# what only vLLM's sampler makes matter (its log-probs): hidden where a run here samples with Hugging Face
# generate (a CPU without vLLM, run.engine hf), as are the engine's own settings (the "vLLM engine" group)
VLLM_ONLY = frozenset({"vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
                       "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min"})


def samples_with_vllm(engine: str, device: str) -> bool:
    """Whether a run with run.engine `engine` on `device` samples with vLLM (core.engines.registry.backend_for).

    >>> samples_with_vllm("hf", "cuda")
    False
    """
    return backend_for(SimpleNamespace(run=SimpleNamespace(engine=engine)), device) == "vllm"


def hidden_settings(algorithm: str) -> frozenset[str]:
    """The `algorithm` settings whose boxes the Train tab hides for `algorithm` (none for an unknown
    one: the config refuses it at Start)."""
    return ignored_fields(algorithm) if algorithm in ALGORITHMS else frozenset()


def algorithm_view(algorithm: str, names, vllm: bool = True) -> list:
    """Updates that fit the Train tab to `algorithm`: the boxes of the settings `names` shown only where
    it reads them (`core.rl.algorithms.ignored_fields`: a new user met loss type and clip ε on screen for
    ppo; a hidden box keeps its value, and the config keeps it) and, without `vllm`, not `VLLM_ONLY`; then
    the loss notes (`LOSS_NOTES`), only its own shown.

    >>> [u["visible"] for u in algorithm_view("ppo", ["loss_type", "epsilon", "gae_lambda"])]
    [False, True, True, False, False, True]
    """
    hidden, note = hidden_settings(algorithm) | (frozenset() if vllm else VLLM_ONLY), loss_note_key(algorithm)
    return [gr.update(visible=n not in hidden) for n in names] + [gr.update(visible=k == note) for k in LOSS_NOTES]


def message_outlived(key, said, said_for=None) -> bool:
    """Whether the Train tab's message (`said`) no longer holds for the run's status `key` (run, step,
    state, attempt): Start's and Resume's once the run they began no longer runs (`said_for`: the
    manager's attempt count right after them; a status read just before them has a smaller one, a
    new user read "resume: running" under "finished"), Stop's and Pause's once the step in flight ended,
    a reload's "the form shows the run in progress" once that run ended (a walkthrough read it under
    "finished").

    >>> message_outlived(("r", 8, "finished", 2), "resumed from step 4 (running), with the run's own rewards (a)", 2)
    True
    >>> message_outlived(("r", 4, "stopped", 1), "resumed from step 4 (running), with the run's own rewards (a)", 2)
    False
    >>> message_outlived(("r", 1, "paused", 1), "🟢 started run `r`", 1), message_outlived(("r", 1, "running", 1), "🟢 started run `r`", 1)
    (True, False)
    >>> note = "ℹ️ The form shows the settings of the run in progress (running)."
    >>> message_outlived(("r", 20, "finished", 1), note), message_outlived(("r", 9, "paused", 1), note)
    (True, False)
    """
    said = str(said or "")
    if not key:
        return False
    state = key[2]
    if said.startswith(FORM_ACTIVE):
        return state not in ("loading", "running", "paused", "stopping")
    if state not in ("loading", "running") and said.startswith(STARTED + RESUMED):
        return said_for is not None and len(key) > 3 and key[3] >= said_for
    return state not in ("stopping", "running") and said.startswith(IN_FLIGHT)


def build(ctx: Ctx) -> None:
    form, manager = ctx.form, ctx.manager
    gr.Markdown(t("train.intro"))
    gr.Markdown(t("train.advice"), elem_id="train-advice")
    with gr.Row(elem_id="train-layout"):
        with gr.Column(scale=1, min_width=340, elem_id="train-settings"):
            with gr.Row():
                quick = gr.Button(t("train.quick"), size="sm")
                defaults = gr.Button(t("train.gpu_defaults"), size="sm")
            plan_md = gr.Markdown(elem_id="memory-plan")
            with gr.Accordion(t("train.batch"), open=True):
                for name in ("num_generations", "prompts_per_step", "max_completion_length", "micro_batch_size",
                             "auto_micro_batch", "temperature", "top_p", "max_prompt_length"):
                    form.field("algorithm", name)
            with gr.Accordion(t("train.optim"), open=True):
                for name in ("max_steps", "learning_rate", "lr_scheduler", "warmup_steps", "weight_decay",
                             "gradient_accumulation_steps", "max_grad_norm", "seed"):
                    form.field("algorithm", name)
            # the settings only some algorithms read start shown as the default algorithm has them
            algorithm = form.defaults.algorithm.algorithm
            vllm_here = samples_with_vllm(form.defaults.run.engine, manager.device)
            hidden = hidden_settings(algorithm) | (frozenset() if vllm_here else VLLM_ONLY)
            with gr.Accordion(t("train.algo"), open=False):
                for name in ("algorithm", "loss_type", "beta", "epsilon", "epsilon_high", "num_iterations",
                             "scale_rewards", "mask_truncated_completions", "use_bias_correction_kl",
                             "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
                             "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min"):
                    form.field("algorithm", name, visible=name not in hidden)
            with gr.Accordion(t("train.run"), open=False):
                for name in ("run_name", "save_steps", "keep_checkpoints", "log_samples", "engine"):
                    form.field("run", name)
            with gr.Accordion(t("train.engine"), open=False, visible=vllm_here, elem_id="train-engine") as engine_group:
                for name in ("vllm_gpu_memory_utilization", "vllm_max_num_seqs", "vllm_max_num_batched_tokens",
                             "vllm_enable_prefix_caching", "vllm_enforce_eager", "vllm_cuda_graphs",
                             "vllm_kv_cache_dtype", "vllm_weights_dtype", "vllm_free_kv_between_steps"):
                    form.field("run", name)
            # fields no group above names (e.g. settings of newer algorithms) still get a widget
            extra = [(sec, n) for sec in ("algorithm", "run") for n in config_fields(sec)
                     if f"{sec}_{n}" not in form.components and (sec, n) != ("run", "output_dir")]
            if extra:
                with gr.Accordion(t("train.more"), open=False):
                    for section, name in extra:
                        form.field(section, name, visible=not (section == "algorithm" and name in hidden))
        with gr.Column(scale=2, elem_id="train-live"):
            with gr.Row(elem_id="train-controls"):
                start = gr.Button(t("train.start"), variant="primary", elem_id="start-btn")
                pause = gr.Button(t("train.pause"), interactive=False, elem_id="pause-btn")
                resume = gr.Button(t("train.resume"), interactive=False, elem_id="resume-btn")
                # red only while there is a run to stop (a new user took the red button for live, 2026-12-06)
                stop = gr.Button(t("train.stop"), variant="secondary", interactive=False, elem_id="stop-btn")
            progress = gr.HTML(progress_html({}), label=t("train.progress"), elem_id="train-progress")
            message = gr.Markdown(elem_id="train-message")
            ctx.shared["train_message"] = message  # a reload says the form holds the last run's settings
            notes = [gr.Markdown(t(key), visible=key == loss_note_key(algorithm),
                                 elem_id=key.replace(".", "-").replace("_", "-")) for key in LOSS_NOTES]
            with gr.Row(elem_classes=[PLOT_ROW]):
                reward_plot = _plot("train.plot.reward", "reward", multi=True, elem_id="reward-plot")
                length_plot = _plot("train.plot.length", "tokens", multi=True, y_format=None)
            with gr.Row(elem_classes=[PLOT_ROW]):
                loss_plot = _plot("train.plot.loss", "loss")
                kl_plot = _plot("train.plot.kl", "kl")
            with gr.Row(elem_classes=[PLOT_ROW]):
                zero_plot = _plot("train.plot.zero_std", "fraction", y_lim=[0, 1])
                # a CPU has no GPU memory to plot: the process's RAM there, labelled so
                gpu = manager.has_gpu
                memory_plot = _plot("train.plot.memory" if gpu else "train.plot.ram", "GB", y_format=".2f",
                                    y_lim=[0, None], elem_id="memory-plot")
            with gr.Group():
                gr.Markdown(t("train.aha"))
                gr.Markdown(t("train.aha_note"))
                with gr.Row(elem_classes=[PLOT_ROW]):
                    aha_length = _plot("train.plot.aha_length", "tokens", multi=True, y_format=None,
                                       elem_id="aha-length-plot")
                    # with a legend and a caption like its neighbour: a plot of fixed height beside it
                    # left an empty block under it, as tall as the neighbour's legend and caption
                    aha_reflections = _plot("train.plot.aha_reflections", "phrases", multi=True)
                with gr.Accordion(t("train.aha_sample"), open=False):
                    aha_sample = gr.Markdown(aha_sample_markdown(None), elem_id="aha-sample")
            samples = gr.Dataframe(value=samples_view(None), label=t("train.samples"), wrap=True, interactive=False,
                                   max_height=420, elem_id="samples-table", elem_classes=["fit-table"])
            with gr.Accordion(t("train.details"), open=False):
                details = gr.JSON(label=t("status"))
    seen = gr.State(None)  # (run, step, state, attempt) last drawn: unchanged -> the plots are skipped
    said_for = gr.State(None)  # the manager's attempt count after the last Start / Resume (message_outlived)
    series = gr.State(None)  # captions naming the series of the multi-series plots, as last computed
    captioned = gr.State(None)  # captions the page shows now
    axis = gr.State(None)  # the step axis (x_lim) the plots should have, as last computed
    axis_shown = gr.State(step_axis(None))  # the step axis the page shows now
    y_axes = gr.State(None)  # the value axis (y_lim) of each plot, as last computed
    y_axes_shown = gr.State(None)  # the value axes the page shows now
    status_bar = ctx.shared["status_bar"]

    # Gradio's plot fixes its colour domain when the chart is drawn and only swaps the data after
    # that: a series that first appears later is drawn without a colour. A caption change makes the
    # chart redraw, but in the same update it can win the race against the new data, so the
    # caption naming the series follows in a second event (`apply_layout`), after the data; so does
    # the step axis, which also keeps the /status API's plots plain values (frames, or None).
    multi = [reward_plot, length_plot, aha_length, aha_reflections]
    plots = {
        reward_plot: reward_frame,
        length_plot: lambda m: long_frame(m, {"completions/mean_length": "mean", "completions/max_length": "max",
                                              "completions/min_length": "min"}),
        loss_plot: lambda m: long_frame(m, {"loss": "loss"}),
        kl_plot: lambda m: long_frame(m, {"kl": "kl"}),
        zero_plot: lambda m: long_frame(m, {"frac_reward_zero_std": "frac_reward_zero_std"}),
        memory_plot: (lambda m: long_frame(m, {"peak_memory_gb": "peak memory"})) if gpu else (
            lambda m: long_frame(m, {"peak_ram_gb": "peak RAM"})),
        aha_length: aha_length_frame,
        aha_reflections: lambda m: long_frame(m, {"reflections_per_completion": "reflections"}),
    }
    def titles(request: gr.Request):  # the axis titles in the page's language
        return axis_titles(list(plots), lang_of(request))

    ctx.shared.setdefault("on_load", []).append(
        lambda load: load(titles, outputs=list(plots), api_visibility="private", show_progress="hidden"))

    def y_lim_of(plot, frame):
        """The value axis a plot should have: all its lines with a margin (memory from 0); None keeps the
        plot's own (the zero-spread fraction: 0-1 as built)."""
        return None if plot is zero_plot else value_axis(frame, floor=0 if plot is memory_plot else None)

    def refresh(last_seen, request: gr.Request):
        s = manager.status()
        key = (s["run_name"], s["step"], s["state"], s["attempt"])
        state, lang = s["state"], lang_of(request)
        out = {
            status_bar: status_line(s, lang), progress: progress_html(s, lang), details: s, seen: key,
            start: gr.update(interactive=state not in ("loading", "running", "paused", "stopping")),
            pause: gr.update(interactive=state == "running"),
            resume: gr.update(interactive=state in ("paused", "stopped", "failed", "interrupted")),
            stop: gr.update(interactive=(live := state in ("loading", "running", "paused")),
                            variant="stop" if live else "secondary"),
        }
        if last_seen is not None and tuple(last_seen) == key:
            out.update({p: gr.skip() for p in plots})
            out[samples] = out[series] = out[axis] = out[y_axes] = out[aha_sample] = gr.skip()
            return out
        m = manager.metrics() if s["run_name"] else pd.DataFrame()
        frames = {plot: make(m) for plot, make in plots.items()}
        if lang != "en":  # the series' names (the legend, the captions) in the page's language; a reward's as named
            frames = {plot: frame.assign(series=frame["series"].map(
                lambda v, own=plot is not reward_plot: word(v, lang) if own or v == "total" else v))
                for plot, frame in frames.items()}
        out.update({plot: plot_value(frame) for plot, frame in frames.items()})
        out[series] = tuple(" · ".join(dict.fromkeys(frames[plot]["series"])) or None for plot in multi)
        out[axis] = step_axis(m if "step" in m else None)
        out[y_axes] = tuple(y_lim_of(plot, frame) for plot, frame in frames.items())
        out[samples] = samples_view(manager.samples(last=12) if s["run_name"] else None, lang=lang)
        out[aha_sample] = aha_sample_markdown(manager.thinking_growth() if s["run_name"] else None, lang)
        return out

    outputs = [status_bar, progress, details, seen, series, axis, y_axes, start, pause, resume, stop, *plots,
               aha_sample, samples]

    def apply_layout(wanted, shown, wanted_axis, shown_axis, wanted_y, shown_y, key, said, said_after,
                     request: gr.Request):
        """Captions of the multi-series plots, the step and value axes of all, where they changed; and a
        message the run outlived cleared (`message_outlived`: a reward error pauses a run a few seconds
        after "started run": the status line above says why, the message must not say otherwise). The
        reload's note on a run in progress becomes the note on the last run once it ended: its warning
        about the run's own reward code holds just when Start opens."""
        captions = wanted is not None and tuple(wanted) != tuple(shown or ())
        steps = wanted_axis is not None and list(wanted_axis) != list(shown_axis or ())
        shown_y = shown_y or (None,) * len(plots)
        updates = []
        for i, plot in enumerate(plots):
            kw = {"x_lim": list(wanted_axis)} if steps else {}
            if wanted_y is not None and wanted_y[i] is not None and wanted_y[i] != shown_y[i]:
                kw["y_lim"] = list(wanted_y[i])
            if captions and plot in multi:
                kw["caption"] = wanted[multi.index(plot)]
            updates.append(gr.update(**kw) if kw else gr.skip())
        stale = message_outlived(key, said, said_after)
        if stale and str(said).startswith(FORM_ACTIVE) and (cfg := manager.run_config()) is not None:
            stale_to = form_note(manager.status(), cfg.rewards.custom_code, lang_of(request))
        else:
            stale_to = ""
        return (*updates, tuple(wanted) if captions else gr.skip(), list(wanted_axis) if steps else gr.skip(),
                gr.skip() if wanted_y is None else tuple(wanted_y), stale_to if stale else gr.skip())

    def wire_refresh(event, **kwargs):
        """`event(refresh)` then captions and axes: every trigger of a refresh goes through here. Never
        with Gradio's progress veil: every refresh of a session shares one queue slot (Gradio's
        concurrency group is the function), so a Pause's refresh waited behind the timer's and the plots
        stayed faded for 20 s in a walkthrough on a busy CPU; the status line says what is going on."""
        kwargs.setdefault("show_progress", "hidden")
        return event(refresh, [seen], outputs, **kwargs).then(
            apply_layout, [series, captioned, axis, axis_shown, y_axes, y_axes_shown, seen, message, said_for],
            [*plots, captioned, axis_shown, y_axes_shown, message], api_visibility="private", show_progress="hidden")

    def start_run(request: gr.Request, **values):
        lang = lang_of(request)
        try:
            cfg = form.to_config(values)
            name = manager.start(cfg)
        except Exception as e:
            return warn(e)
        gr.Info(say("started.toast", lang, name=name))
        custom = say("started.code", lang) if cfg.rewards.custom_code.strip() else ""
        return say("started", lang, name=name) + custom

    def control(action: str):
        def act(request: gr.Request):
            lang = lang_of(request)
            try:
                s = getattr(manager, action)()
            except Exception as e:
                return warn(e)
            state = "pausing" if action == "pause" and s["state"] == "running" else s["state"]  # not "pause: running"
            if action == "stop" and state == "stopping" and s.get("before_first_step"):  # not "stop: loading"
                return say("control.stopping.first", lang)
            if (action, state) in (("stop", "stopping"), ("pause", "pausing")):  # and what happens meanwhile
                return say(f"control.{state}", lang)
            return say("control", lang, action=word(action, lang), state=word(state, lang))
        act.__name__ = action
        return act

    def resume_run(request: gr.Request, **values):
        """Resume a paused run, or continue a stopped one, with the run's own rewards unless those on
        the Rewards tab differ (the manager decides, `RunManager.resume`); the message says which."""
        lang = lang_of(request)
        try:
            s = manager.resume(rewards=form.to_config(values).rewards)
        except Exception as e:
            return warn(e)
        names = rewards_label(manager.run_config())
        return say("resumed.tab" if s["rewards_changed"] else "resumed", lang, state=word(s["state"], lang),
                   step=s.get("step") or 0, names=names)

    def memory_plan(request: gr.Request, **values) -> str:
        """The memory planner's words for the settings on screen (before anything loads): GPU
        memory on a GPU, RAM on a CPU, in the browser's language."""
        try:
            return memory_plan_markdown(manager.memory_plan(form.to_config(values)), lang_of(request))
        except Exception as e:  # a plan is never worth a warning toast
            return say("plan.unavailable", lang_of(request), error=with_labels(str(e)))

    def wire_plan():
        keys = [k for k in PLAN_KEYS if k in form.components]
        for key in keys:
            form.components[key].change(memory_plan, inputs_kwargs=dict(form.components), outputs=[plan_md],
                                        api_visibility="private", trigger_mode="always_last")

    ctx.after_all_tabs(wire_plan)
    ctx.shared["memory_plan"] = (memory_plan, plan_md)

    # the algorithm picked, or shown by a loaded config (studio.py runs it after the form shows a run's):
    # only the settings it reads and its own loss note in view
    # the engine picked too: vLLM's own settings only where a run here samples with it
    picked, engine_box = form.components["algorithm_algorithm"], form.components["run_engine"]
    own = [n for n in READ_BY if f"algorithm_{n}" in form.components]
    algorithm_outputs = [form.components[f"algorithm_{n}"] for n in own] + notes + [engine_group]

    def algorithm_picked(algorithm, engine):
        vllm = samples_with_vllm(engine, manager.device)
        return algorithm_view(algorithm, own, vllm) + [gr.update(visible=vllm)]

    for box in (picked, engine_box):
        box.change(algorithm_picked, [picked, engine_box], algorithm_outputs, api_visibility="private",
                   show_progress="hidden")
    ctx.shared["algorithm_view"] = (algorithm_picked, [picked, engine_box], algorithm_outputs)

    def apply_preset(preset: dict):
        return [gr.update(value=v) for v in preset.values()]

    gpu_defaults = {k: getattr(getattr(Config(), k.split("_", 1)[0]), k.split("_", 1)[1]) for k in QUICK_CPU}
    quick.click(lambda: apply_preset(QUICK_CPU), outputs=[form.components[k] for k in QUICK_CPU],
                api_visibility="private")
    defaults.click(lambda: apply_preset(gpu_defaults), outputs=[form.components[k] for k in gpu_defaults],
                   api_visibility="private")
    def attempt():  # right after Start / Resume: the attempt their message follows
        return manager.status()["attempt"]

    ctx.after_all_tabs(lambda: wire_refresh(start.click(start_run, inputs_kwargs=dict(form.components),
                                                        outputs=[message], api_name="start").then(
        attempt, outputs=[said_for], api_visibility="private").then, api_visibility="private"))
    # Pause and Stop answer at once (the step in flight ends later, as the status line says): no progress
    # text over the message; Start and Resume keep Gradio's, the wait for a model to load is theirs
    for button, action in ((pause, "pause"), (stop, "stop")):
        wire_refresh(button.click(control(action), outputs=[message], api_name=action, show_progress="hidden").then,
                     api_visibility="private")
    ctx.after_all_tabs(lambda: wire_refresh(resume.click(resume_run, inputs_kwargs=dict(form.components),
                                                         outputs=[message], api_name="resume").then(
        attempt, outputs=[said_for], api_visibility="private").then, api_visibility="private"))
    # the timer that ticks `refresh` lives outside the tabs (studio.py): a Timer inside a tab
    # stopped ticking when the page's tabs re-rendered, and the status froze until a reload
    ctx.shared["wire_refresh"] = wire_refresh
