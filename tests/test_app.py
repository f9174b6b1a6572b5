"""The app driven through its HTTP API with gradio_client, as a script or another page would:
pick a task and two rewards, train 3 steps, chat with base and tuned, evaluate; a second
session re-attaches to a running run; an --auth app refuses a client without credentials."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import gradio_client  # gradio's own client, installed with gradio (a dependency)
import pandas as pd
import pytest

from core.config import Config, ModelConfig
from core.app.manager import RunManager

# the tiny-run settings, by the API names of the Train and Data widgets
TINY = dict(
    model_dtype="float32", data_source="builtin:decimal_compare", data_train_size=40, data_eval_size=6,
    algorithm_num_generations=4, algorithm_prompts_per_step=2, algorithm_micro_batch_size=8,
    algorithm_max_completion_length=16, algorithm_max_prompt_length=128, algorithm_max_steps=3,
    algorithm_learning_rate=1e-3, run_engine="hf", run_save_steps=3, run_log_samples=2,
)
# every preset off but the two this test picks
ALL_PRESETS = ["format_strict", "format_soft", "xml_tag_count", "integer_answer", "correctness", "exact_match",
               "numeric_match", "math_equivalence", "countdown_equation", "length_penalty", "reflection_bonus"]
TWO_REWARDS = {f"reward_{n}": n in ("format_soft", "correctness") for n in ALL_PRESETS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(manager: RunManager, auth=None) -> tuple[object, str]:
    from ui.studio import build_app, launch_app

    demo = build_app(manager)
    port = free_port()
    launch_app(demo, manager, port=port, auth=auth, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    manager = RunManager(tmp_path_factory.mktemp("app-runs"),
                         ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=8, lora_alpha=16),
                         device="cpu")
    demo, url = launch(manager)
    yield manager, url
    demo.close()
    manager.close()


def test_no_refresh_veils_the_plots(app):
    """Every event that redraws the Train tab's plots runs without Gradio's progress veil: they share
    one queue slot, and a Pause's refresh waiting behind the timer's left the plots faded for 20 s
    (a walkthrough on a busy CPU)."""
    import httpx

    _, url = app
    cfg = httpx.get(url.rstrip("/") + "/config", timeout=30).json()
    plot = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == "reward-plot")
    deps = [d for d in cfg["dependencies"] if plot in d.get("outputs", [])]
    assert len(deps) >= 10, len(deps)  # load, timer, Start, Pause, Stop, Resume: each a refresh and a layout step
    assert {d["show_progress"] for d in deps} == {"hidden"}, [(d.get("api_name"), d["show_progress"]) for d in deps]


def test_no_quick_update_shows_progress_text_in_the_status_or_the_message(app):
    """Gradio's progress text ("processing | 0.3/0.2s", "0.1s") was read before the status line and in the
    Train tab's message in a walkthrough. Every event that writes either runs with show_progress "hidden"
    (the timer, the page load, Pause, Stop, the refreshes after them) but Start and Resume, where a person
    waits for a model to load; and the page's CSS keeps the text of a hidden tracker out of both boxes
    (Gradio hides it with opacity 0 only)."""
    import httpx

    from ui.studio import QUIET

    _, url = app
    cfg = httpx.get(url.rstrip("/") + "/config", timeout=30).json()
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in cfg["components"]}
    boxes = {ids["status-bar"], ids["train-message"]}
    deps = [d for d in cfg["dependencies"] if boxes & set(d.get("outputs", []))]
    shown = sorted((d.get("api_name"), d["show_progress"]) for d in deps if d["show_progress"] != "hidden")
    assert shown == [("resume", "full"), ("start", "full")], shown
    trigger = {d["id"]: [t[1] for t in d["targets"]] for d in deps}
    hidden = [d for d in deps if d["show_progress"] == "hidden"]
    assert sum(trigger[d["id"]] == ["tick"] for d in hidden) == 1 and len(hidden) >= 8, trigger
    assert {d.get("api_name") for d in hidden} >= {"pause", "stop", "status"}, [d.get("api_name") for d in hidden]
    assert QUIET == ("status-bar", "train-message")
    for box in QUIET:
        assert f"#{box} > [data-testid=status-tracker].hide {{display: none}}" in cfg["css"], box


def test_every_train_plot_draws_a_lone_point(app):
    """A run's first step is one point per series, a line of no length that Vega paints as nothing: each
    of the Train tab's eight step plots carries the class whose CSS draws such a point as a dot, and the
    page has that CSS (tests/test_browser_form.py looks at the dot itself)."""
    import httpx

    from ui.tabs.train import PLOT_CLASS, PLOT_CSS

    _, url = app
    cfg = httpx.get(url.rstrip("/") + "/config", timeout=30).json()
    plots = [c["props"] for c in cfg["components"] if c.get("type") == "nativeplot" and c["props"].get("x") == "step"]
    assert len(plots) == 8 and all(PLOT_CLASS in (p.get("elem_classes") or []) for p in plots), plots
    assert PLOT_CSS.strip() in cfg["css"] and f".{PLOT_CLASS} g.mark-line path" in PLOT_CSS


def test_plot_axis_titles_are_plain_text_in_the_pages_language(app):
    """The step plots' axis titles are plain text in the page's config (through gr.I18n, Vega drew the raw
    '__i18n__{...}' now and then), English as built; a Chinese page gets them in Chinese on load."""
    import httpx

    from ui.tabs.train import axis_titles

    _, url = app
    cfg = httpx.get(url.rstrip("/") + "/config", timeout=30).json()
    plots = [c["props"] for c in cfg["components"] if c.get("type") == "nativeplot" and c["props"].get("x") == "step"]
    titles = [(p["x_title"], p["y_title"]) for p in plots]
    assert len(titles) == 8 and all(isinstance(x, str) and isinstance(y, str) for x, y in titles), titles
    assert {x for x, _ in titles} == {"step"} and ("step", "reward") in titles, titles

    class Plot:
        y_title = "reward"

    zh = axis_titles([Plot()], "zh")[0]
    assert (zh["x_title"], zh["y_title"]) == ("步", "奖励") and zh["__type__"] == "update", zh
    assert axis_titles([Plot()], "en")[0]["__type__"] == "update" and len(axis_titles([Plot()], "en")[0]) == 1


def status(client) -> dict:
    """The page's re-attach endpoint: (status bar, progress, status JSON, 8 plots, aha sample, samples)."""
    out = client.predict(api_name="/status")
    assert len(out) == 13
    return {"bar": out[0], "json": out[2], "reward_plot": out[3], "aha_sample": out[-2], "samples": out[-1]}


def wait_state(client, states, timeout=120.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        s = status(client)
        if s["json"]["state"] in states:
            return s
        time.sleep(0.3)
    raise AssertionError(f"state never reached {states}: {s['json']}")


def last_text(history) -> str:
    content = history[-1]["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content


def test_train_chat_evaluate_through_the_api(app):
    manager, url = app
    client = gradio_client.Client(url, verbose=False)
    idle = status(client)
    assert idle["json"]["state"] == "idle"
    assert idle["reward_plot"] is None  # no frame before the first step: Gradio's empty placeholder
    message = client.predict(**TINY, **TWO_REWARDS, api_name="/start")
    assert message.startswith("🟢 started run")
    run_name = manager.status()["run_name"]
    assert run_name in message
    # a second start while the first runs is refused with a message, not an exception
    assert "stop it" in client.predict(**TINY, **TWO_REWARDS, api_name="/start")
    s = wait_state(client, ("finished", "failed"))
    assert s["json"]["state"] == "finished" and s["json"]["step"] == 3 and s["json"]["max_steps"] == 3
    assert "step **3/3**" in s["bar"]
    # the reward plot: 3 points of the total and of each of the two rewards
    plot = s["reward_plot"]
    series = [row[plot["columns"].index("series")] for row in plot["data"]]
    assert sorted(set(series)) == ["correctness", "format_soft", "total"]
    assert series.count("total") == 3
    assert len(s["samples"]["data"]) == 6
    # the numbers first, the long texts last (a new user found the rewards off to the right)
    heads = s["samples"]["headers"]
    assert heads[:2] == ["step", "reward"] and heads[-3:] == ["reference answer", "completion", "question"], heads
    # the run used exactly the widgets' values
    cfg = manager._cfg
    assert cfg.rewards.names == ["format_soft", "correctness"] and cfg.rewards.weights == [0.5, 1.0]
    assert (cfg.algorithm.num_generations, cfg.algorithm.max_steps, cfg.data.source) == (4, 3, "builtin:decimal_compare")

    # one prompt to base and tuned, asked alike with the boxes' system prompt and prefix: the same
    # greedy answers the manager gives; alike answers come with a note on whether the adapter moved
    prompt = "Which is bigger? 9.11 or 9.9?"
    base, tuned, box, note = client.predict(prompt_text=prompt, base_history=[], tuned_history=[],
                                            target_value="current", system_prompt="Answer briefly.",
                                            response_prefix="<answer>", max_new=12, temp=0.0, api_name="/ask")
    assert box == "" and len(base) == 2 and len(tuned) == 2 and base[0]["role"] == "user"
    asked = dict(system_prompt="Answer briefly.", response_prefix="<answer>", max_tokens=12)
    expected_base = manager.chat(prompt, "base", **asked).strip()
    expected_tuned = manager.chat(prompt, "current", **asked).strip()
    assert expected_base.startswith("<answer>") and expected_tuned.startswith("<answer>")
    assert last_text(base).strip() == expected_base and last_text(tuned).strip() == expected_tuned
    from ui.views import same_answer_note

    change = manager.adapter_change("current")
    named = f"the current adapter (run `{run_name}` at step 3)"  # "current" named by its run and step
    assert note == (same_answer_note(change, named) if expected_base == expected_tuned else "")
    if expected_base == expected_tuned:
        assert ("exactly zero" if not change["moved"] else "has moved") in note
    # the same conversation asked of a checkpoint: a line says where its answers start (a new user saw
    # answers of two adapters under one "Tuned model"); asked of it again, no second line
    checkpoint = manager.checkpoints()[-1]
    for expected_lines in (1, 1):
        base, tuned, _, _ = client.predict(prompt_text=prompt, base_history=base, tuned_history=tuned,
                                           target_value=checkpoint, system_prompt="Answer briefly.",
                                           response_prefix="<answer>", max_new=12, temp=0.0, api_name="/ask")
        lines = [m for m in tuned if "From here on" in str(m["content"])]
        assert len(lines) == expected_lines and Path(checkpoint).name in str(lines[0]["content"]), tuned
    assert len(base) == 6 and len(tuned) == 7

    # held-out evaluation of base vs tuned
    job = client.submit(target_value="current", n=4, api_name="/evaluate")
    table, bars, items, result = job.result(timeout=300)
    # which side answers, as it starts (minutes each on a CPU at the page's 100 questions), then the figures
    assert [out[0] for out in job.outputs()[:2]] == [
        f"⏳ 1/2 · the base model answers 4 held-out questions (greedy, up to {result['max_tokens']} tokens)",
        "⏳ 2/2 · the tuned model answers the same 4 questions"]
    for who in ("base", "tuned"):
        assert result[who]["n"] == 4
        assert 0.0 <= result[who]["accuracy"] <= 1.0 and 0.0 <= result[who]["format_rate"] <= 1.0
    # accuracy, last-number accuracy (numeric answers), format rate x base, tuned
    assert "| base |" in table and len(items["data"]) == 4 and len(bars["data"]) == 6
    limit = result["max_tokens"]
    assert f"answers stop at {limit} tokens (Max completion tokens)" in table
    assert f"tuned = the current adapter (run `{run_name}` at step 3)" in table  # which run "current" is
    # a cut answer is said to be cut (the tiny model rarely stops by itself): how many, per model
    cut = {w: result[w]["cut_rate"] for w in ("base", "tuned")}
    assert cut == {w: sum(row[items["headers"].index(f"{w}_cut")] for row in items["data"]) / 4 for w in cut}
    from ui.tabs.compare import EVAL_COLUMNS  # the empty table the page opens with has the same columns

    assert items["headers"] == EVAL_COLUMNS
    if any(cut.values()):
        assert f"base {cut['base']:.0%}, tuned {cut['tuned']:.0%}** of the answers" in table
    else:
        assert "Cut there" not in table

    # the aha panel's sample from early and late in the run; retention off the task beside the accuracy
    assert "Early: **step 1**" in s["aha_sample"] and "Late: **step 3**" in s["aha_sample"]
    summary, answers = client.predict(target_value="current", prompts=3, per_task=1, api_name="/retention")
    assert "KL(base ‖ tuned)" in summary and "| builtin:addition: accuracy" in summary
    assert "builtin:decimal_compare" not in summary  # the task trained on is not a retention task
    assert summary.endswith(f"Tuned = the current adapter (run `{run_name}` at step 3).")
    assert [row[0] for row in answers["data"]] == ["What is the capital of France?", "Name three primary colours.",
                                                   "Write a short poem about the sea."]

    # the runs list and the export of the run's adapter
    runs_table, _ = client.predict(api_name="/list_runs")
    assert runs_table["data"][0][:3] == [run_name, "finished", 3]
    checkpoint = manager.checkpoints(run_name)[-1]
    file, note = client.predict(path=checkpoint, api_name="/export_zip")
    assert note.startswith("✅") and str(file).endswith("-adapter.zip")
    # a merge's result is a folder on the server: the File box lets go of the zip it offered before
    merged_to, file, note = client.predict(path=checkpoint, api_name="/merge")
    assert note.startswith("✅ merged 16-bit model saved on the server") and file is None
    assert (Path(merged_to) / "config.json").is_file()
    # a script picks a checkpoint of a run by name for Compare; another run's or a made-up one is refused
    loaded, target = client.predict(name=run_name, path=Path(checkpoint).name, api_name="/load_run")
    assert loaded.startswith("✅") and Path(checkpoint).name in loaded
    assert target["value"] == str(Path(checkpoint).resolve())  # the Compare tab's tuned model
    refused, _ = client.predict(name=run_name, path="step-999999", api_name="/load_run")
    assert "step-999999" in refused and not refused.startswith("✅")


def test_a_file_of_repeated_questions_says_how_many_are_distinct(app, tmp_path):
    """The Data tab's headline counts rows and, when fewer, the distinct questions they ask (a
    walkthrough read "18 training questions" over 3 questions asked 6 times each)."""
    manager, url = app
    client = gradio_client.Client(url, verbose=False)
    path = tmp_path / "repeats.csv"
    path.write_text("prompt,answer\n" + "".join(f"q{i},{i}\n" for _ in range(6) for i in range(6)))
    _, info = client.predict(data_source=manager.store_upload(str(path)), api_name="/preview_data")
    assert info.startswith("**18** training rows (**3** distinct questions) · **3** held out · source `repeats.csv`"), info


def test_errors_are_messages(app):
    manager, url = app
    client = gradio_client.Client(url, verbose=False)
    message = client.predict(**{**TINY, "data_source": "builtin:nope"}, **TWO_REWARDS, api_name="/start")
    assert message.startswith("⚠️") and "no built-in task" in message
    no_rewards = {k: False for k in TWO_REWARDS}
    # no reward at all: said in the page's words (the Rewards tab's boxes), the config's names in `code`
    assert client.predict(**TINY, **no_rewards, api_name="/start") == (
        "⚠️ no reward to train with: tick a Reward preset on the Rewards tab or write a Custom reward (Python) there "
        "(in a config file: `rewards.names`, `rewards.custom_code`)")
    # a setting out of range is named by the label on the page, beside the config's name
    message = client.predict(**{**TINY, "algorithm_num_generations": 1}, **TWO_REWARDS, api_name="/start")
    assert message.startswith("⚠️ “Completions per question (G)” (algorithm.num_generations) = 1: must be between"), message
    assert client.predict(api_name="/pause").startswith("⚠️")
    # a broken custom reward: the message and the user's traceback come back inline
    broken = "def broken(prompts, completions, **kwargs):\n    return [1 / 0 for _ in completions]\n"
    _, error = client.predict(**TINY, **TWO_REWARDS, rewards_custom_code=broken, api_name="/try_rewards")
    assert error.startswith("⚠️") and "ZeroDivisionError" in error and "line 2" in error
    # a syntax error's headline keeps its place in the code: "<custom reward code>" shown as text, not a tag
    _, error = client.predict(**TINY, **TWO_REWARDS, rewards_custom_code="def f(x)\n    return 1\n",
                              api_name="/try_rewards")
    assert error.splitlines()[0].endswith("(&lt;custom reward code&gt;, line 1)"), error
    # the next try replaces that error with its first stage before any work, then each stage as it starts
    # (a new user saw the last error stay through a new try, and "sampling" until the scores came)
    job = client.submit(**TINY, **TWO_REWARDS, api_name="/try_rewards")
    table, message = job.result(timeout=120)
    messages = [m for _, m in job.outputs()]
    assert messages[0] == "⏳ 1/3 · loading the questions", messages
    assert messages[1].startswith("⏳ 2/3 · sampling 3 completions of up to 16 tokens from the current model")
    assert messages[2:] == ["⏳ 3/3 · scoring 6 completions with 2 reward function(s)",
                            "✅ done · 6 completions scored with 2 reward function(s)"], messages
    assert [t["data"] in ([], [[""]]) for t, _ in job.outputs()] == [True, True, True, False]  # scores come last
    assert message == messages[-1] and {"format_soft", "correctness", "total"} <= set(table["headers"])
    # a failing try after a good one empties the table: the good scores would read as the broken code's
    table, error = client.predict(**TINY, **TWO_REWARDS, rewards_custom_code=broken, api_name="/try_rewards")
    assert error.startswith("⚠️") and table["data"] in ([], [[""]]) and "correctness" not in table["headers"], table
    _, note = client.predict(path="", api_name="/export_zip")
    assert "pick a checkpoint" in note
    assert not manager.is_active()


def test_try_on_samples_shows_each_stage_as_it_starts_then_done_or_the_error():
    """The page's Try on samples (ui.tabs.rewards.try_updates over RunManager.try_rewards_stages): its
    first update, which replaces the last try's message, comes before any work; each stage's words come
    as that stage starts, before its work; the last update is the scores with "done" and the rewards'
    notes, or the error with an empty table."""
    from core.app.messages import ManagerError
    from ui.tabs.rewards import try_updates

    log = []

    def stages():
        log.append("started")
        yield 0.0, "data", {}
        log.append("loaded")
        yield 0.1, "sampling", {"completions": 3, "max_tokens": 16, "load_model": True, "after_step": False}
        log.append("sampled")
        yield 0.9, "scoring", {"completions": 6, "rewards": 2}
        log.append("scored")
        df = pd.DataFrame({"question": ["q"] * 6, "answer": ["1"] * 6, "source": ["model", "reference"] * 3,
                           "completion": ["c"] * 6, "format_soft": [0.5] * 6, "correctness": [1.0] * 6,
                           "total": [1.5] * 6})
        df.attrs["notes"] = ["your reward replaced the preset"]
        return df

    seen = [(list(log), message, len(table)) for table, message in try_updates(stages)]
    assert seen == [
        (["started"], "⏳ 1/3 · loading the questions", 0),
        (["started", "loaded"], "⏳ 2/3 · sampling 3 completions of up to 16 tokens from the current model, after "
                                "loading the model", 0),
        (["started", "loaded", "sampled"], "⏳ 3/3 · scoring 6 completions with 2 reward function(s)", 0),
        (["started", "loaded", "sampled", "scored"],
         "✅ done · 6 completions scored with 2 reward function(s)\n\nℹ️ your reward replaced the preset", 6)]

    def failing():
        yield 0.0, "data", {}
        raise ManagerError("no such data file")

    updates = list(try_updates(failing, "zh"))
    assert [m for _, m in updates] == ["⏳ 1/3 · 读取题目", "⚠️ no such data file"]
    assert len(updates[-1][0]) == 0 and list(updates[-1][0].columns)[0] == "总奖励"

    def no_table():  # a stage function that ends without its table: the error replaces the stage line
        yield 0.9, "scoring", {"completions": 6, "rewards": 2}

    assert [m for _, m in try_updates(no_table)][-1] == "⚠️ Unexpected error: TypeError: Try on samples gave no table (NoneType)"

    closed = []

    def held():  # the page left mid-try: dropping the updates ends the stages (their reward workers) at once
        try:
            yield 0.0, "data", {}
            yield 0.1, "sampling", {"completions": 3, "max_tokens": 16, "load_model": False, "after_step": False}
        finally:
            closed.append(True)

    updates = try_updates(held)
    next(updates)
    updates.close()
    assert closed == [True]


def test_the_model_box_is_what_a_run_uses_and_the_bundled_default_locks_it(smollm2_dir):
    """The Model tab: "Bundled default" empties and locks the box and names the bundled model in it; the
    line under the box names the model the box gives, which is what Load, Start and Try on samples read
    (the radio is no input of theirs), and warns when a Hub id or folder is picked with the box empty."""
    from core.models.bundled import BUNDLED_NAMES
    from core.models.loading import resolve_model_path
    from ui.forms import Form
    from ui.tabs.model import on_kind, uses_text

    update, line = on_kind("default", "Qwen/Qwen2.5-0.5B-Instruct")
    assert (update["value"], update["interactive"]) == ("", False)
    assert update["placeholder"] == "SmolLM2-135M-Instruct (bundled, offline)"
    assert line == "Load, Start and Try on samples use **SmolLM2-135M-Instruct**, the bundled model (offline)."
    update, line = on_kind("hub", "")
    assert (update["value"], update["interactive"]) == ("", True) and "/path/to/model" in update["placeholder"]
    assert line.startswith("⚠️ The box is empty, so Load, Start and Try on samples use the bundled "
                           "**SmolLM2-135M-Instruct**"), line
    update, line = on_kind("local", "/models/mine")
    assert update["value"] == "/models/mine" and line == "Load, Start and Try on samples use **`/models/mine`**."
    # the line tells what the box gives even where the radio says otherwise: the box is what a run reads
    assert uses_text("Qwen/Qwen2.5-0.5B-Instruct", "default") == \
        "Load, Start and Try on samples use **`Qwen/Qwen2.5-0.5B-Instruct`**."
    assert Form(Config()).to_config({"model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}).model.name_or_path == \
        "Qwen/Qwen2.5-0.5B-Instruct"
    update, line = on_kind("default", "", "zh")
    assert update["placeholder"] == "SmolLM2-135M-Instruct（内置，离线）" and "内置的离线模型" in line
    # the names the line calls the bundled model are the ones the loader reads as it (one list,
    # core.models.bundled), and any other name is not
    assert {resolve_model_path(n) for n in BUNDLED_NAMES} == {str(smollm2_dir)}
    assert all(uses_text(n, "default") == uses_text("", "default") for n in BUNDLED_NAMES)
    assert resolve_model_path("SmolLM2-135M") == "SmolLM2-135M"
    assert uses_text("default", "hub") == uses_text("", "default")


def test_a_failing_reward_pauses_and_resume_applies_the_fixed_rewards(app):
    manager, url = app
    client = gradio_client.Client(url, verbose=False)
    flaky = "def flaky(prompts, completions, **kwargs):\n    raise RuntimeError('bad reward')\n"
    started = client.predict(**{**TINY, "algorithm_max_steps": 2}, **TWO_REWARDS, rewards_custom_code=flaky,
                             api_name="/start")
    assert "your own reward code from the Rewards tab" in started  # code left in the editor is said, not silent
    s = wait_state(client, ("paused", "failed"))
    assert s["json"]["state"] == "paused" and "flaky" in s["json"]["pause_reason"]
    assert "Resume" in s["bar"] and "bad reward" in s["bar"]  # the traceback is on the page
    message = client.predict(**{**TINY, "algorithm_max_steps": 2}, **TWO_REWARDS, rewards_custom_code="",
                             api_name="/resume")
    assert "with the rewards of the Rewards tab" in message
    s = wait_state(client, ("finished", "failed"))
    assert (s["json"]["state"], s["json"]["step"]) == ("finished", 2)


def test_a_new_session_reattaches_to_a_running_run(app):
    manager, url = app
    first = gradio_client.Client(url, verbose=False)
    first.predict(**{**TINY, "algorithm_max_steps": 40}, **TWO_REWARDS, api_name="/start")
    fresh = gradio_client.Client(url, verbose=False)
    try:
        # "reloading the page": a brand-new session reads the run from the manager
        end = time.time() + 60
        while manager.status()["step"] < 2 and time.time() < end:
            time.sleep(0.2)
        s = status(fresh)
        assert s["json"]["state"] == "running" and s["json"]["run_name"] == manager.status()["run_name"]
        assert 2 <= s["json"]["step"] < 40
        steps = [row[0] for row in s["reward_plot"]["data"] if row[2] == "total"]
        assert steps[:2] == [1, 2]  # the plots hold the steps made before the "reload"
    finally:
        assert fresh.predict(api_name="/stop").startswith("stop")
    s = wait_state(fresh, ("stopped",))
    assert s["json"]["step"] < 40


LENGTH_REWARD = "def longer(completions, **kwargs):\n    return [len(c[0]['content']) / 50 for c in completions]\n"


def test_a_reloaded_form_shows_the_runs_settings_and_resume_keeps_its_rewards(app, tmp_path):
    """Issue 30: a page loaded mid-run shows the run's settings, rewards included, not the defaults;
    so Start would repeat them and Resume keeps the run's own rewards (and says so)."""
    from core.rewards.registry import same_rewards
    from ui.studio import build_app

    manager, url = app
    csv = tmp_path / "sums.csv"
    csv.write_text("question,solution\n" + "".join(f"What is {i} + {i + 1}?,{2 * i + 1}\n" for i in range(30)))
    settings = {**TINY, **{f"reward_{n}": n in ("xml_tag_count", "correctness") for n in ALL_PRESETS},
                "data_source": manager.store_upload(str(csv)), "data_prompt_column": "question",
                "data_answer_column": "solution", "data_system_prompt": "Reply with the number only.",
                "data_response_prefix": "<reasoning>", "weight_xml_tag_count": 0.7, "rewards_custom_code": LENGTH_REWARD,
                "algorithm_max_steps": 200, "algorithm_temperature": 0.9, "model_lora_r": 4, "run_run_name": "sums"}
    client = gradio_client.Client(url, verbose=False)
    assert client.predict(**settings, api_name="/start").startswith("🟢 started run `sums`")
    try:
        wait_state(client, ("running",))
        run = manager.run_config()
        assert (run.data.source, run.data.system_prompt, run.data.response_prefix, run.algorithm.max_steps) == (
            settings["data_source"], "Reply with the number only.", "<reasoning>", 200)
        assert (run.rewards.names, run.rewards.weights) == (["xml_tag_count", "correctness"], [0.7, 1.0])

        # a fresh page (its form built on the defaults) shows the run's values once loaded
        form = build_app(manager).form
        assert form.defaults.algorithm.max_steps == 20 and form.defaults.data.response_prefix == "<think>"
        values = form.values(run)
        for key in ("data_source", "data_prompt_column", "data_answer_column", "data_system_prompt",
                    "data_response_prefix", "algorithm_max_steps", "algorithm_temperature", "model_lora_r",
                    "weight_xml_tag_count", "rewards_custom_code"):
            assert values[key] == settings[key], key
        assert [n for n in ALL_PRESETS if values[f"reward_{n}"]] == ["xml_tag_count", "correctness"]
        assert values["weight_correctness"] == 1.0 and values["run_run_name"] == ""  # a name is the run's own
        # ... and that is the run's config again (the name aside: a next Start gets a fresh one)
        back = form.to_config(values)
        assert same_rewards(back.rewards, run.rewards)
        expected = run.to_dict()
        expected["run"]["run_name"], expected["rewards"] = "", back.to_dict()["rewards"]
        assert back.to_dict() == expected
        # the widgets beside the config follow: the data source is an uploaded file, the model a folder
        shown = form.show(run)
        kinds = [shown[widgets[0]] for widgets, _ in form.followers]
        # the run's custom code's accordion opens; the curriculum's stays as it is (the run has none)
        assert kinds[:2] == ["local", "upload"] and kinds[2] == {"__type__": "update"} and kinds[3]["open"] is True
        assert all(shown[c]["value"] == values[k] for k, c in form.components.items())
        # a float box steps by the value shown, not by the page's default (lr 5e-6 would step by 1e-4)
        from ui.forms import number_step

        lr = form.components["algorithm_learning_rate"]
        assert shown[lr]["step"] == number_step(run.algorithm.learning_rate)
        assert len(form.outputs()) == len(form.components) + 6  # 2 radios, the task, the hub id, 2 accordions

        # Resume from that page keeps the run's own rewards, and says so
        said = client.predict(api_name="/pause")  # mid-step: the step ends first (a new user read "pause: running")
        assert said in ("pause: paused", "pause: pausing (the step in flight finishes first; the status above says when)")
        wait_state(client, ("paused",))
        message = client.predict(**values, api_name="/resume")
        assert re.fullmatch(r"resumed from step \d+ \(running\), with the run's own rewards "
                            r"\(xml_tag_count, correctness, custom code\)", message), message
        assert manager.run_config().rewards == run.rewards
    finally:
        client.predict(api_name="/stop")
    wait_state(client, ("stopped",))
    assert Config.load(manager.runs_dir / "sums" / "config.yaml").rewards == run.rewards

    # Compare's boxes for its checkpoint (the stop saved one): the run's own prompt and prefix
    checkpoint = manager.checkpoints("sums")[-1]
    system, prefix, words = client.predict(value=checkpoint, api_name="/asked_as")
    assert (system, prefix) == ("Reply with the number only.", "<reasoning>")
    source = f"the config.yaml of run `sums` ({Path(checkpoint).name})"
    assert words.startswith(f"System prompt and answer prefix from {source};")


def test_auth_app_refuses_a_client_without_credentials(app):
    manager, _ = app
    demo, url = launch(manager, auth=("alice", "s3cret"))
    try:
        from gradio_client.exceptions import AuthenticationError

        with pytest.raises(AuthenticationError):
            gradio_client.Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            gradio_client.Client(url, auth=("alice", "wrong"), verbose=False)
        client = gradio_client.Client(url, auth=("alice", "s3cret"), verbose=False)
        assert status(client)["json"]["state"] in ("idle", "finished", "stopped")
    finally:
        demo.close()


def test_share_always_has_a_password():
    from app import parse_auth, resolve_auth

    creds, note = resolve_auth(share=True, auth=None)
    assert creds[0] == "aha" and len(creds[1]) >= 12 and creds[1] in note
    assert resolve_auth(share=True, auth="bob:pw") == (("bob", "pw"), "")
    assert resolve_auth(share=False, auth=None) == (None, "")
    with pytest.raises(ValueError):
        parse_auth("no-colon")


def test_server_text_follows_the_browsers_language_and_try_on_samples_scores_first(app):
    """A client whose browser prefers Chinese gets the status line in Chinese (the English one in
    English); Try on samples puts the scores in the first columns."""
    from ui.zh import STATUS_ZH

    manager, url = app
    chinese = gradio_client.Client(url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    english = gradio_client.Client(url, verbose=False)
    state = manager.status()["state"]
    assert f"**{STATUS_ZH[f'state.{state}']}**" in status(chinese)["bar"]
    assert f"**{state}**" in status(english)["bar"]
    # Compare's line above its boxes, in the page's language (where the boxes' values came from)
    _, _, words = chinese.predict(value="current", api_name="/asked_as")
    assert words.startswith("系统提示和回答前缀来自") and "两个模型都用它们提问" in words, words
    table, message = english.predict(**TINY, **TWO_REWARDS, api_name="/try_rewards")
    assert message.startswith("✅ done") and table["headers"][:3] == ["total", "format_soft", "correctness"]
    assert table["headers"][3:] == ["source", "reference answer", "completion", "question"]
    # the same table for a Chinese page: its columns and the source of each row in Chinese, the rewards' names as
    # named; the stages and "done" in Chinese too
    job = chinese.submit(**TINY, **TWO_REWARDS, api_name="/try_rewards")
    table, message = job.result(timeout=120)
    assert message == "✅ 完成 · 已用 2 个奖励函数给 6 个回答打分", message
    assert [m for _, m in job.outputs()][-3:-1] == [
        "⏳ 2/3 · 用当前模型采样 3 个回答（每个最多 16 个 token）", "⏳ 3/3 · 用 2 个奖励函数给 6 个回答打分"]
    assert table["headers"] == ["总奖励", "format_soft", "correctness", "来源", "参考答案", "回答", "问题"]
    assert {row[3] for row in table["data"]} <= {"模型", "参考答案"} and len(table["data"]) >= 3, table["data"]
    runs, _ = chinese.predict(api_name="/list_runs")
    assert runs["headers"][:3] == ["运行", "状态", "步"]


def test_an_emptied_number_box_is_refused_by_name_not_replaced_by_its_default():
    """A cleared Number widget arrives as None: Start must say which box is empty, not quietly run
    on the default the page no longer shows (2026-12-06: G emptied, a run started with G = 4)."""
    from core.config import cpu_defaults
    from core.errors import ConfigError
    from ui.forms import Form

    form = Form(cpu_defaults())
    with pytest.raises(ConfigError, match=r"is empty: enter a number \(its default is 4\)"):
        form.to_config({"algorithm_num_generations": None})
    with pytest.raises(ConfigError, match="empty") as err:
        form.to_config({"algorithm_learning_rate": None})
    # the toast shows the message as text: the label in plain words, never a translation's raw key
    assert str(err.value).startswith("'Learning rate' is empty") and "__i18n__" not in str(err.value)
    with pytest.raises(ConfigError, match="enter a finite number"):
        form.to_config({"algorithm_max_steps": float("inf")})
    with pytest.raises(ConfigError, match=r"= 2.5: enter a whole number"):  # 2 steps would run, unsaid
        form.to_config({"algorithm_max_steps": 2.5})
    assert form.to_config({"algorithm_max_steps": 3.0}).algorithm.max_steps == 3
    # out of range: the config's own check, once, naming the field and its range (the widgets carry
    # no minimum/maximum, whose Gradio check toasted per event without a name)
    with pytest.raises(ConfigError, match=r"num_generations = -3: must be between 2 and 256"):
        form.to_config({"algorithm_num_generations": -3.0})
    assert form.to_config({"algorithm_num_generations": 6.0}).algorithm.num_generations == 6
    assert form.to_config({"data_chat_template": None}).data.chat_template == ""  # text: None is empty text
    form.reward_names = ["correctness", "format_strict"]
    with pytest.raises(ConfigError, match="the weight of format_strict is empty"):
        form.to_config({"reward_correctness": True, "weight_correctness": 1.0, "reward_format_strict": True,
                        "weight_format_strict": None})
    assert form.to_config({"reward_correctness": True, "weight_correctness": 2.0, "reward_format_strict": False,
                           "weight_format_strict": None}).rewards.weights == [2.0]  # unticked: its box is unread
    # a weight far out of any sane range (a typo's -1e30) is refused by name, not trained on
    with pytest.raises(ConfigError, match=r"^the weight of correctness = -1e\+30 \(`rewards.weights`\): must be "
                                          r"between -1000 and 1000$"):
        form.to_config({"reward_correctness": True, "weight_correctness": -1e30})


def test_sliders_span_their_fields_range():
    """A slider's ends are the config's range: Temperature 0 typed in snapped to the slider's 0.1 with no
    word while the config allows 0.01 (2026-12-07), and a config's 3.0 (allowed up to 5) would be refused
    by the slider's own check on every event that reads the form."""
    import gradio as gr

    from core.config import field_spec
    from ui.forms import _SLIDERS, Form

    with gr.Blocks():
        form = Form(Config())
        sliders = {key: form.field(*key) for key in _SLIDERS}
    assert set(sliders) >= {("algorithm", "temperature"), ("algorithm", "top_p"), ("model", "lora_dropout")}
    for key, slider in sliders.items():
        assert isinstance(slider, gr.Slider) and (slider.minimum, slider.maximum) == field_spec(*key)["range"], key
        lo, hi = field_spec(*key)["range"]
        steps = (hi - lo) / slider.step
        assert abs(steps - round(steps)) < 1e-9, key  # both ends on the slider's steps
        default = getattr(getattr(Config(), key[0]), key[1])
        assert abs((default - lo) / slider.step - round((default - lo) / slider.step)) < 1e-9, key  # default too
    temperature = sliders[("algorithm", "temperature")]
    assert (temperature.minimum, temperature.maximum) == (0.01, 5.0)
    assert form.to_config({"algorithm_temperature": temperature.preprocess(0.01)}).algorithm.temperature == 0.01


def test_bitsandbytes_warning_about_our_kernels_folder_is_dropped_at_start():
    """bitsandbytes' CPU backend imports `kernels` (Hugging Face's package) and warns when our own
    `kernels/` answers instead: app.py drops that one warning, nothing else bitsandbytes says."""
    pytest.importorskip("bitsandbytes")
    code = ("import logging, sys; sys.path.insert(0, {root!r}); logging.basicConfig(); {call}"
            "import bitsandbytes; logging.getLogger('bitsandbytes.backends.cpu.ops').warning('other note')")
    root = str(Path(__file__).resolve().parents[1])

    def stderr(call: str) -> str:
        return subprocess.run([sys.executable, "-c", code.format(root=root, call=call)], capture_output=True,
                              text=True, timeout=300, cwd=root).stderr

    if "kernels-community" not in stderr(""):  # a GPU build loads no CPU backend: nothing to drop
        pytest.skip("this bitsandbytes gives no kernels-community warning here")
    quiet = stderr("import app; app.quiet_bitsandbytes_kernels_note(); ")
    assert "kernels-community" not in quiet and "other note" in quiet
