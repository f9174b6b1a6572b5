"""Issue 30 in a real Chromium: a page reloaded mid-run shows the run's settings (not the defaults),
so the next Start repeats them; Compare shows the system prompt and answer prefix of the
checkpoint picked (not of the current run) and asks both models with them.

Starts `python app.py` (the real entry point) on a tiny model in a subprocess; runs start through
the page's API (another session, as a script or a second browser would). Writes nothing into the
repository. Skipped when Debian's /usr/bin/chromium is missing (../shared/ENVIRONMENT.md).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)
import gradio_client  # noqa: E402
from playwright import sync_api  # noqa: E402  (the test extra installs it: only the browser may be missing)
expect = sync_api.expect

from app_process import running_app  # noqa: E402
from test_app import ALL_PRESETS, TINY  # noqa: E402  (after the skips above)
from test_browser import FLAGS, wait_until  # noqa: E402

PROMPT = "Reply with the number only."
LENGTH_REWARD = "def longer(completions, **kwargs):\n    return [len(c[0]['content']) / 50 for c in completions]\n"


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    """(url, runs folder, data folder) of `python app.py` on the tiny model."""
    runs, data = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("data")
    log = tmp_path_factory.mktemp("app") / "app.log"
    with running_app(["--model", str(tiny_model_dir), "--runs-dir", str(runs), "--data-dir", str(data)], log) as url:
        yield url, runs, data


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def run_state(client) -> dict:
    return client.predict(api_name="/status")[2]


def wait_state(client, states, timeout=180.0) -> dict:
    end = time.time() + timeout
    while (s := run_state(client))["state"] not in states:
        assert time.time() < end, f"state never reached {states}: {s}"
        time.sleep(0.3)
    return s


def start(client, **settings) -> None:
    rewards = settings.pop("rewards", ("format_soft", "correctness"))
    flags = {f"reward_{n}": n in rewards for n in ALL_PRESETS}
    message = client.predict(**{**TINY, **flags, **settings}, api_name="/start")
    assert message.startswith("🟢 started run"), message


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def field(page, key: str, kind: str = "input"):
    """A form widget's input by its API name (ui/forms.py gives each the elem_id form-<name>)."""
    return page.locator(f"#form-{key} {kind}").first


def test_a_reload_mid_run_shows_the_runs_settings(app, browser):
    url, runs, data = app
    csv = data / "sums.csv"
    csv.write_text("question,solution\n" + "".join(f"What is {i} + {i + 1}?,{2 * i + 1}\n" for i in range(30)))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    open_tab(page, "4 · Train")
    expect(field(page, "algorithm_max_steps")).to_have_value("20", timeout=60_000)  # the Quick CPU default

    client = gradio_client.Client(url, verbose=False)
    start(client, rewards=("xml_tag_count", "correctness"), data_source=str(csv), data_prompt_column="question",
          data_answer_column="solution", data_system_prompt=PROMPT, data_response_prefix="<reasoning>",
          weight_xml_tag_count=0.7, rewards_custom_code=LENGTH_REWARD, algorithm_max_steps=20000, run_save_steps=20000,
          run_run_name="sums")
    try:
        wait_state(client, ("running",))
        # paused mid-run: the tiny model's steps would otherwise take both cores from the browser
        client.predict(api_name="/pause")
        wait_state(client, ("paused",))
        page.reload()
        # Train: the run's steps, not the default 20
        open_tab(page, "4 · Train")
        expect(field(page, "algorithm_max_steps")).to_have_value("20000", timeout=60_000)
        assert "paused" in page.locator("#status-bar").inner_text()
        # ... and says so: the form is the last run's, its own reward code included (a new user missed it)
        note = page.locator("#train-message")
        expect(note).to_contain_text("The form shows the settings of the run in progress (paused)")
        expect(note).to_contain_text("clear the Rewards tab's editor to start without it")
        # Data: the CSV (as an upload), its columns, the prompt and the prefix
        open_tab(page, "2 · Data")
        expect(field(page, "data_source", "textarea")).to_have_value(str(csv))
        expect(page.get_by_label("Upload a file")).to_be_checked()
        expect(field(page, "data_prompt_column")).to_have_value("question")
        expect(field(page, "data_answer_column")).to_have_value("solution")
        page.get_by_role("button", name="Prompt and template").click()  # a closed accordion is not drawn
        expect(field(page, "data_system_prompt", "textarea")).to_have_value(PROMPT)
        expect(field(page, "data_response_prefix", "textarea")).to_have_value("<reasoning>")
        # Rewards: the run's presets, weight and custom code
        open_tab(page, "3 · Rewards")
        expect(field(page, "reward_xml_tag_count")).to_be_checked()
        expect(field(page, "reward_correctness")).to_be_checked()
        expect(field(page, "reward_format_soft")).not_to_be_checked()
        expect(field(page, "weight_xml_tag_count")).to_have_value("0.7")
        expect(page.locator("#form-rewards_custom_code")).to_contain_text("def longer(completions, **kwargs):")
    finally:
        client.predict(api_name="/stop")
    wait_state(client, ("stopped",))

    # a Start from the reloaded page repeats the run's settings (under a new name)
    open_tab(page, "4 · Train")
    expect(page.locator("#start-btn")).to_be_enabled(timeout=30_000)
    # the note said "the run in progress": once it stopped, the note on the last run (a walkthrough read
    # "in progress" under "finished"), its warning on the run's own reward code kept as Start opens
    note = page.locator("#train-message")
    expect(note).not_to_contain_text("run in progress", timeout=30_000)
    expect(note).to_contain_text("The form shows the settings of the last run, sums (stopped)")  # `sums` as code
    expect(note).to_contain_text("clear the Rewards tab's editor to start without it")
    page.locator("#start-btn").click()
    expect(page.locator("#train-message")).to_contain_text("started run", timeout=60_000)
    client.predict(api_name="/stop")
    wait_state(client, ("stopped", "finished"))
    first = yaml.safe_load((runs / "sums" / "config.yaml").read_text())
    (second,) = [p for p in runs.iterdir() if p.name not in ("sums", "_uploads") and (p / "config.yaml").exists()]
    again = yaml.safe_load((second / "config.yaml").read_text())
    assert again["run"]["run_name"] == second.name
    first["run"]["run_name"] = again["run"]["run_name"]
    for cfg in (first, again):  # the presets in any order, each with its weight
        r = cfg["rewards"]
        r["names"], r["weights"] = dict(zip(r["names"], r["weights"])), None
        r["custom_code"] = r["custom_code"].rstrip()  # the page's code editor drops the last newline
    assert first["rewards"]["names"] == {"xml_tag_count": 0.7, "correctness": 1.0}
    assert again == first
    page.close()


def test_compare_shows_the_checkpoints_prefix_and_system_prompt(app, browser):
    url, runs, _ = app
    client = gradio_client.Client(url, verbose=False)
    # run A trained with its own prompt and prefix; run B, the current one, with the defaults
    start(client, data_system_prompt=PROMPT, data_response_prefix="<reasoning>", algorithm_max_steps=2,
          run_save_steps=2, run_run_name="asked-a")
    wait_state(client, ("finished",))
    start(client, algorithm_max_steps=1, run_save_steps=1, run_run_name="plain-b")
    wait_state(client, ("finished",))
    plain = yaml.safe_load((runs / "plain-b" / "config.yaml").read_text())["data"]
    default_prompt, default_prefix = plain["system_prompt"], plain["response_prefix"]
    assert default_prompt != PROMPT and default_prefix != "<reasoning>"

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    open_tab(page, "5 · Compare")
    system, prefix = page.locator("#compare-system textarea"), page.locator("#compare-prefix textarea")
    expect(system).to_have_value(default_prompt, timeout=60_000)  # the current adapter: run B's
    expect(prefix).to_have_value(default_prefix)
    expect(page.locator("#compare-asked")).to_contain_text("from the current run plain-b;")

    page.locator("#compare-target input").click()
    page.get_by_role("option", name="asked-a · step-000002").click()
    expect(system).to_have_value(PROMPT, timeout=30_000)
    expect(prefix).to_have_value("<reasoning>")
    expect(page.locator("#compare-asked")).to_contain_text("from the config.yaml of run asked-a (step-000002);")

    # both models asked with them: the answers start at the prefix; alike answers are explained
    page.locator("#compare-prompt textarea").fill("What is 2 + 3?")
    page.get_by_role("button", name="Send to both").click()
    bots = [page.locator(f"{chat} [data-testid='bot']").first for chat in ("#base-chat", "#tuned-chat")]
    for bot in bots:
        bot.wait_for(timeout=60_000)
    expect(page.locator("#compare-prompt textarea")).to_have_value("")
    base, tuned = (b.inner_text().strip() for b in bots)
    note = page.locator("#compare-note")
    if base == tuned:
        expect(note).to_contain_text("Base and tuned gave the same answer", timeout=30_000)
        expect(note).to_contain_text("asked-a · step-000002")
    else:
        assert note.inner_text().strip() == ""

    # back to the current adapter: run B's prompt and prefix
    page.locator("#compare-target input").click()
    page.get_by_role("option", name="Current adapter (live)").click()
    expect(system).to_have_value(default_prompt, timeout=30_000)
    expect(prefix).to_have_value(default_prefix)
    page.close()


def test_picking_a_task_shows_its_own_example_unless_the_prompt_was_written(app, browser):
    """A new user (2026-12-06) picked an arithmetic task and kept a decimal comparison as the system
    prompt's worked example. Picking a built-in task now puts that task's example in a default prompt;
    a prompt the user wrote stays as written."""
    url, _runs, _data = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    open_tab(page, "2 · Data")
    # the default task's questions are there on the first look, without pressing Preview
    expect(page.locator("#data-info")).to_contain_text("training questions", timeout=30_000)
    expect(page.locator("#data-preview")).to_contain_text("<|im_start|>system", timeout=30_000)
    page.get_by_role("button", name="Prompt and template").click()
    prompt = field(page, "data_system_prompt", "textarea")
    expect(prompt).to_have_value(re.compile(r"Which is the largest of 31, 74, 58, 19\?"), timeout=30_000)  # the default task's

    def pick(task: str) -> None:
        page.locator("#data-builtin input").click()
        page.get_by_role("option", name=f"{task} — ").first.click()

    pick("addition")
    expect(prompt).to_have_value(
        "You are a careful assistant. Think step by step inside <think> and </think>, then give only the final "
        "answer inside <answer> and </answer>.\nExample:\nQuestion: What is 47 + 38?\n<think>47 + 38 = 85."
        "</think>\n<answer>85</answer>", timeout=30_000)
    expect(page.locator("#data-preview")).to_contain_text("What is 47 + 38?", timeout=30_000)  # previewed with it
    pick("decimal_compare")
    expect(prompt).to_have_value(re.compile(r"Which is bigger, 4\.7 or 4\.25\?"), timeout=30_000)
    prompt.fill(PROMPT)  # the user's own words
    prompt.blur()
    pick("multiplication")
    expect(page.locator("#data-info")).to_contain_text("multiplication", timeout=30_000)  # the preview followed
    expect(prompt).to_have_value(PROMPT)
    expect(page.locator("#data-preview")).to_contain_text(PROMPT, timeout=30_000)
    page.close()


def test_leaving_the_task_list_without_a_pick_keeps_the_runs_prompt(app, browser):
    """Gradio sends the list's `input` when it loses focus too. A run on addition with the default
    (largest-of-four) example, shown after a reload: opening the task list and leaving it must not swap
    the run's prompt for addition's example (a reviewer's catch, 2026-12-06)."""
    from core.config import DEFAULT_SYSTEM_PROMPT

    url, _runs, _data = app
    client = gradio_client.Client(url, verbose=False)
    start(client, data_source="builtin:addition", data_system_prompt=DEFAULT_SYSTEM_PROMPT, algorithm_max_steps=20000,
          run_save_steps=20000, run_run_name="adds")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        wait_state(client, ("running",))
        client.predict(api_name="/pause")
        wait_state(client, ("paused",))
        page.goto(url)
        open_tab(page, "2 · Data")
        page.get_by_role("button", name="Prompt and template").click()
        prompt = field(page, "data_system_prompt", "textarea")
        expect(field(page, "data_source", "textarea")).to_have_value("builtin:addition", timeout=60_000)
        expect(prompt).to_have_value(DEFAULT_SYSTEM_PROMPT, timeout=30_000)
        page.locator("#data-builtin input").click()  # open the list ...
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Prompt and template").click()  # ... and leave it: focus elsewhere
        page.wait_for_timeout(3000)  # what the server would answer has come by now
        page.get_by_role("button", name="Prompt and template").click()
        expect(prompt).to_have_value(DEFAULT_SYSTEM_PROMPT)
        expect(field(page, "data_source", "textarea")).to_have_value("builtin:addition")
    finally:
        client.predict(api_name="/stop")
        wait_state(client, ("stopped",))
        page.close()


def upload_on_data_tab(browser, url: str, path):
    """A new page on the Data tab (its first preview shown), with `path` sent through "Upload a file"."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    open_tab(page, "2 · Data")
    expect(page.locator("#data-info")).to_contain_text("training questions", timeout=30_000)
    page.get_by_role("radio", name="Upload a file").check()
    page.locator("#data-upload input[type=file]").set_input_files(str(path))
    return page


def test_a_file_that_cannot_be_read_leaves_the_page_on_the_source_in_use(app, browser, tmp_path):
    """A new user (2026-12-06) uploaded a broken file and pressed Start: "Upload a file" was still picked
    and the file still in its box, the run trained on the built-in task without a word. The radio now goes
    back to the source in use, the box empties, and the message names the file as the user knows it."""
    url, _runs, _data = app
    bad = tmp_path / "bad.csv"
    bad.write_text('question,answer\n"unclosed,1\n')
    page = upload_on_data_tab(browser, url, bad)
    info = page.locator("#data-info")
    expect(info).to_contain_text("Nothing was loaded from bad.csv", timeout=30_000)
    expect(info).to_contain_text("bad.csv, line 2")  # the user's file name, not the server's copy
    expect(info).not_to_contain_text("_uploads")
    expect(info).not_to_contain_text("training questions")  # nothing changed: no preview under the message
    expect(page.get_by_role("radio", name="Built-in task")).to_be_checked(timeout=10_000)  # what Start trains on
    expect(page.locator("#data-builtin")).to_be_visible()
    page.close()


def test_an_uploaded_file_shows_its_own_questions(app, browser, tmp_path):
    """A new user (2026-12-06) uploaded `q,a` and saw the note describe the new file above the built-in
    task's questions until they pressed Preview: the upload now previews what Start trains on."""
    url, _runs, _data = app
    good = tmp_path / "good.csv"
    good.write_text("q,a\n" + "".join(f"How many legs has animal number {i}?,{i}\n" for i in range(12)))
    page = upload_on_data_tab(browser, url, good)
    info = page.locator("#data-info")
    expect(info).to_contain_text("Columns: q, a", timeout=30_000)  # the upload's own message stays on top
    expect(info).to_contain_text("training questions", timeout=30_000)  # ... the preview under it
    expect(page.locator("#data-preview")).to_contain_text("How many legs has animal number", timeout=30_000)
    expect(info).to_contain_text("No column is named like the question or the answer")  # said once, not again
    expect(info).not_to_contain_text("check that the Data tab's columns")  # ... by the preview's note
    # the system prompt: the format alone, not the built-in task's worked example of another kind
    from core.config import FORMAT_INSTRUCTION

    page.get_by_role("button", name="Prompt and template").click()  # a closed accordion is not drawn
    prompt = field(page, "data_system_prompt", "textarea")
    expect(prompt).to_have_value(FORMAT_INSTRUCTION, timeout=30_000)
    # back to "Built-in task": the task the list shows is the source again, with its example and rows
    # (a walkthrough, 2026-12-07: the radio and the list said "largest", the file stayed in use)
    source = field(page, "data_source", "textarea")
    expect(source).to_have_value(re.compile(r"_uploads"))
    page.get_by_role("radio", name="Built-in task").check()
    expect(page.locator("#data-builtin")).to_be_visible()
    task = page.locator("#data-builtin input").input_value().split(" — ")[0].strip()  # the module's app: an earlier run's
    assert task, "the task list shows no task"
    expect(source).to_have_value(f"builtin:{task}", timeout=30_000)
    expect(prompt).not_to_have_value(FORMAT_INSTRUCTION, timeout=30_000)  # the task's own worked example
    expect(prompt).to_have_value(re.compile(r"Example:"), timeout=30_000)
    expect(page.locator("#data-preview")).not_to_contain_text("How many legs", timeout=30_000)
    expect(page.locator("#data-info")).to_contain_text(f"builtin:{task}", timeout=30_000)
    page.close()


def test_the_model_tabs_estimate_names_a_bad_field_by_its_label(app, browser):
    """A rank out of range: the estimate's message names the box as the Train tab's messages do
    ("LoRA rank r" (model.lora_r)), not by the config key alone (a walkthrough, 2026-12-07)."""
    url, _runs, _data = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    open_tab(page, "1 · Model")
    memory = page.locator("#model-memory")
    # the page's own first estimate first: on a loaded machine it came after the edit's and replaced it
    expect(memory).to_contain_text("parameters", timeout=60_000)
    rank = field(page, "model_lora_r")
    rank.fill("100000")
    rank.press("Enter")
    expect(memory).to_contain_text("“LoRA rank r” (model.lora_r) = 100000", timeout=30_000)
    page.close()


def test_the_model_box_is_locked_on_the_bundled_default_and_the_line_names_the_model_in_use(app, browser):
    """While "Bundled default" is picked the box is empty, locked and names the bundled model; the line
    under it names the model Load, Start and Try on samples use (the box's value, whatever the radio
    says), and warns when a Hub id is picked but none entered (a walkthrough could not tell which one
    a run would use)."""
    url, _runs, _data = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    open_tab(page, "1 · Model")
    box, uses = field(page, "model_name_or_path", "textarea"), page.locator("#model-uses")
    expect(uses).to_contain_text("Load, Start and Try on samples use", timeout=60_000)  # filled on load
    page.get_by_role("radio", name="Bundled default (offline)").check()
    expect(box).to_be_disabled()
    expect(box).to_have_value("")
    expect(box).to_have_attribute("placeholder", "SmolLM2-135M-Instruct (bundled, offline)")
    expect(uses).to_have_text("Load, Start and Try on samples use SmolLM2-135M-Instruct, the bundled model (offline).")
    page.get_by_role("radio", name="Hugging Face Hub id").check()
    expect(box).to_be_editable()
    expect(uses).to_contain_text("⚠️ The box is empty, so Load, Start and Try on samples use the bundled "
                                 "SmolLM2-135M-Instruct")
    box.fill("Qwen/Qwen2.5-0.5B-Instruct")
    expect(uses).to_have_text("Load, Start and Try on samples use Qwen/Qwen2.5-0.5B-Instruct.")
    page.get_by_role("radio", name="Bundled default (offline)").check()  # the typed name goes with the lock
    expect(box).to_have_value("")
    expect(box).to_be_disabled()
    expect(uses).to_contain_text("the bundled model (offline)")
    page.close()


# the rewards of a one-step run, named with underscores as people name theirs
UNDERSCORED = ("def correctness_reward(completions, **kwargs):\n    return [0.0 for c in completions]\n\n\n"
               "def format_reward(completions, **kwargs):\n    return [1.0 for c in completions]\n")


def lone_points(page, plot_id: str) -> list[tuple[int, int]]:
    """For each line of one point in a plot (Vega's path 'Mx,yZ', no 'L'): the coloured pixels painted
    within 6 px of the point, and how many of them lie left of it (a point on the first step sits on the
    plot's left edge: a dot clipped there is half a dot)."""
    from io import BytesIO

    from PIL import Image

    plot = page.locator(f"#{plot_id}")
    plot.scroll_into_view_if_needed()
    points = plot.evaluate("""e => {
        const box = e.getBoundingClientRect();
        return Array.from(e.querySelectorAll('g.mark-line path'))
          .filter(p => /^M[^L]*$/.test(p.getAttribute('d') || '')).map(p => {
            const [x, y] = p.getAttribute('d').slice(1).split(/[,Z]/).map(Number);
            const at = new DOMPoint(x, y).matrixTransform(p.getScreenCTM());
            return [at.x - box.left, at.y - box.top];
          });
    }""")
    image = Image.open(BytesIO(plot.screenshot())).convert("RGB")
    out = []
    for x, y in points:
        painted = left = 0
        for dx in range(-6, 7):
            for dy in range(-6, 7):
                if dx * dx + dy * dy > 36 or not (0 <= x + dx < image.width and 0 <= y + dy < image.height):
                    continue
                rgb = image.getpixel((int(round(x + dx)), int(round(y + dy))))
                if max(rgb) - min(rgb) > 60:  # a series' colour, not the white, the grey grid or the black text
                    painted += 1
                    left += dx < -1
        out.append((painted, left))
    return out


def header_widths(page, table_id: str) -> list[tuple[str, float, float]]:
    """Each header of a table: its name (zero-width spaces dropped), its column's width, and the width of
    the name on one line in the header's font."""
    return page.locator(f"#{table_id}").evaluate("""e => Array.from(e.querySelectorAll('th.header-cell')).map(th => {
        const span = th.querySelector('span.header'), probe = span.cloneNode(false);
        probe.textContent = span.textContent.replace(/\u200b/g, '').trim();
        Object.assign(probe.style, {position: 'absolute', whiteSpace: 'nowrap', width: 'auto', visibility: 'hidden'});
        span.parentElement.appendChild(probe);
        const whole = probe.getBoundingClientRect().width;
        probe.remove();
        return [probe.textContent, th.getBoundingClientRect().width, whole];
    })""")


def one_step_run(app, name: str) -> str:
    """A finished one-step run named `name` with five reward series (the total, two presets and the two
    rewards of UNDERSCORED): the page's URL."""
    url, _runs, _data = app
    client = gradio_client.Client(url, verbose=False)
    wait_state(client, ("idle", "finished", "stopped", "failed"))
    start(client, rewards=("xml_tag_count", "correctness"), rewards_custom_code=UNDERSCORED, algorithm_max_steps=1,
          run_save_steps=1, run_run_name=name)
    wait_state(client, ("finished",))
    return url


def test_a_one_step_run_at_820_px(app, browser):
    """A walkthrough at 820 px on a one-step run: the plots were empty (a line needs two points) and the
    samples table gave the completion ~12 characters a line. Each series' one point now shows as a whole
    dot, on the first step's edge too; the rewards' headers break after an underscore and the completion
    keeps 25 characters or more a line."""
    url = one_step_run(app, "one-step")
    page = browser.new_page(viewport={"width": 820, "height": 900})
    page.goto(url)
    open_tab(page, "4 · Train")
    expect(page.locator("#status-bar")).to_contain_text("one-step", timeout=60_000)
    # the reward plot: the total and each of the four rewards, one point each, each painted as a whole dot
    series = 1 + 4
    end = time.time() + 60
    while len(dots := lone_points(page, "reward-plot")) < series and time.time() < end:
        page.wait_for_timeout(500)
    assert len(dots) == series, dots
    assert all(painted >= 20 and left >= 5 for painted, left in dots), dots
    for plot in ("memory-plot", "aha-length-plot"):  # a plot of one series; the lengths of the wrong answers
        dots = lone_points(page, plot)
        assert dots and all(painted >= 20 and left >= 5 for painted, left in dots), (plot, dots)
    # the samples: the rewards' columns as narrow as their headers' parts ("correctness_" over "reward"),
    # the names shown as named
    page.locator("#samples-table").scroll_into_view_if_needed()
    wait_until(lambda: len(header_widths(page, "samples-table")) == 2 + 4 + 4)
    heads = header_widths(page, "samples-table")
    names = [name for name, _, _ in heads]
    assert names[:2] == ["step", "reward"] and names[-4:] == ["advantage", "reference answer", "completion", "question"]
    assert sorted(names[2:-4]) == ["correctness", "correctness_reward", "format_reward", "xml_tag_count"], names
    assert all(width < whole for name, width, whole in heads if "_" in name), heads
    # ... and the completion at least 25 characters a line (Gradio gave it its longest word: ~12 to 18)
    digit = page.locator("#samples-table").evaluate("""e => {
        const span = e.querySelector('th.header-cell span.header'), probe = span.cloneNode(false);
        probe.textContent = '0'.repeat(40);
        Object.assign(probe.style, {position: 'absolute', whiteSpace: 'nowrap', width: 'auto', visibility: 'hidden'});
        span.parentElement.appendChild(probe);
        const width = probe.getBoundingClientRect().width / 40;
        probe.remove();
        return width;
    }""")
    completion = heads[names.index("completion")][1]
    assert completion / digit >= 25, (completion, digit, heads)
    page.close()


def train_layout(page) -> dict:
    """The Train tab's boxes (left, right, top, width in px): its row of two columns, each column, the message, Start
    (left and top from the page's top: where a person scrolls to), and each plot
    with its legend (Vega's `role-legend` group: its box is the whole legend, the part its plot's box clips
    included) and the legend's series names; the plots' rows as lists of plot indexes."""
    return page.evaluate("""() => {
        const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, width: r.width}; };
        const plots = Array.from(document.querySelectorAll('#train-layout .step-plot'));
        const page = e => { const r = e.getBoundingClientRect(); return {left: r.left, top: r.top + window.scrollY}; };
        return {row: box(document.querySelector('#train-layout')), start: page(document.querySelector('#start-btn')),
                message: box(document.querySelector('#train-message')),
                settings: box(document.querySelector('#train-settings')), live: box(document.querySelector('#train-live')),
                plots: plots.map(p => { const legend = p.querySelector('g.role-legend');
                    return {id: p.id, box: box(p), legend: legend && box(legend),
                            names: Array.from(p.querySelectorAll('g.role-legend-label text')).map(t => t.textContent)}; }),
                rows: Array.from(document.querySelectorAll('#train-layout .plot-row'))
                      .map(r => Array.from(r.querySelectorAll('.step-plot')).map(p => plots.indexOf(p)))};
    }""")


def test_the_train_tab_stacks_at_820_px_and_keeps_two_columns_at_1400(app, browser):
    """A walkthrough at 820 px (a split screen, Colab's output pane): the settings and the plots stayed side by
    side, each plot 166 px wide, and the legends ran past their plots' boxes, cut off (the reward plot's five
    series: 400 px). Now the columns stack there and each plot is the page's width, its legend inside its box;
    at 1400 px the two columns and the plots two to a row as before. Stacked, Start, the progress and the message
    come before the settings (Start was 2,600 px down the page at 800 px, below every settings group); at 1400 px
    they stay at the top of the right-hand column."""
    url = one_step_run(app, "narrow")
    names = ["total", "xml_tag_count", "correctness", "correctness_reward", "format_reward"]
    multi = ("reward-plot", "aha-length-plot")  # two of the four plots with a legend (the others have no elem_id)

    page = browser.new_page(viewport={"width": 820, "height": 900})
    page.goto(url)
    open_tab(page, "4 · Train")
    expect(page.locator("#status-bar")).to_contain_text("narrow", timeout=60_000)
    wait_until(lambda: sorted(next(p["names"] for p in train_layout(page)["plots"] if p["id"] == "reward-plot"))
               == sorted(names), timeout=60)
    wait_until(lambda: sum(p["legend"] is not None for p in train_layout(page)["plots"]) == 4, timeout=60)
    # the timer's refreshes leave no Gradio progress text in the status line or the message ("0.1s", "processing")
    said = set()
    for _ in range(30):  # 3 s: a tick or two
        said.add(page.evaluate("() => document.querySelector('#status-bar').innerText + '|' "
                               "+ document.querySelector('#train-message').innerText"))
        page.wait_for_timeout(100)
    assert not [t for t in said if re.search(r"\d\.\ds\b|processing|queue:", t)], said
    at = train_layout(page)
    row, settings = at["row"], at["settings"]
    # stacked: Start, then the message, then the settings, then the plots, each as wide as the page's content
    # (the live column has no box of its own there: its boxes join the row)
    assert at["start"]["top"] <= 900 and at["start"]["top"] < at["message"]["top"] < settings["top"], at
    assert abs(at["start"]["left"] - row["left"]) < 2, at
    assert settings["width"] >= 0.98 * row["width"] and at["message"]["width"] >= 0.98 * row["width"], at
    assert min(p["box"]["top"] for p in at["plots"]) >= settings["top"] + 100, at
    # each plot as wide as the page's content, one to a row; each legend within its plot's box
    assert len(at["plots"]) == 8 and {p["id"] for p in at["plots"]} >= set(multi), at["plots"]
    for p in at["plots"]:
        assert p["box"]["width"] >= 0.98 * row["width"], p
        if p["legend"]:
            assert p["box"]["left"] <= p["legend"]["left"] and p["legend"]["right"] <= p["box"]["right"], p
    assert len({round(p["box"]["top"]) for p in at["plots"]}) == 8, at["plots"]
    page.close()

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    open_tab(page, "4 · Train")
    expect(page.locator("#status-bar")).to_contain_text("narrow", timeout=60_000)
    wait_until(lambda: sum(p["legend"] is not None for p in train_layout(page)["plots"]) == 4, timeout=60)
    at = train_layout(page)
    settings, live, plots = at["settings"], at["live"], at["plots"]
    # two columns side by side, the plots' twice as wide; the plots two to a row, each half of its column
    assert abs(settings["top"] - live["top"]) < 2 and settings["right"] <= live["left"], at
    # Start at the top of the right-hand column, as before
    assert abs(at["start"]["left"] - live["left"]) < 2 and at["start"]["top"] <= 900, at
    assert at["start"]["top"] - page.evaluate("window.scrollY") - live["top"] < 2, at
    assert live["width"] >= 1.5 * settings["width"], at
    assert len(at["rows"]) == 4 and all(len(r) == 2 for r in at["rows"]), at["rows"]
    for a, b in at["rows"]:
        assert abs(plots[a]["box"]["top"] - plots[b]["box"]["top"]) < 2 and plots[a]["box"]["right"] <= plots[b]["box"]["left"]
        assert all(0.4 * live["width"] <= plots[i]["box"]["width"] <= 0.55 * live["width"] for i in (a, b)), at
    page.close()
