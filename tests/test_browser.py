"""The page in a real Chromium: every tab opens, a short run makes the reward plot gain points,
base and tuned answer in Compare, the Chinese interface shows. Screenshots go to a temporary
folder; `AHA_SCREENSHOTS=docs python -m pytest tests/test_browser.py` writes the README's.

Starts `python app.py` (the real entry point) on a tiny model in a subprocess. Skipped when
Debian's /usr/bin/chromium is missing (see ../shared/ENVIRONMENT.md, "Browser testing").
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app_process import running_app
from core.config import Config
from ui.zh import HELP_ZH

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)
from playwright import sync_api  # noqa: E402  (the test extra installs it: only the browser may be missing)

REPO = Path(__file__).resolve().parent.parent
# ENVIRONMENT.md's flags; Playwright adds --headless and its own --user-data-dir
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
TABS = ["1 · Model", "2 · Data", "3 · Rewards", "4 · Train", "5 · Compare", "6 · Export", "Runs"]
STEPS = 5
SERIES = 1 + len(Config().rewards.names)  # reward plot series: the total and each default reward
MAX_PNG_BYTES = 300 * 1024


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("app") / "app.log"
    with running_app(["--model", str(tiny_model_dir), "--runs-dir", str(tmp_path_factory.mktemp("runs"))], log) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def shot(screenshot_dir):
    """shot(page, name): a screenshot into `screenshot_dir` (conftest.py), checked for size."""
    return lambda page, name: _shot(page, screenshot_dir / name)


def _shot(page, path: Path) -> Path:
    page.screenshot(path=str(path))
    assert path.stat().st_size < MAX_PNG_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    return path


def wait_until(predicate, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.25)


def line_points(page, plot_id: str) -> int:
    """Points drawn by the visible line marks of a plot (Vega's SVG: 'M x,y L x,y ...' per series;
    a line without a stroke colour is invisible and does not count)."""
    paths = page.locator(f"#{plot_id}").evaluate(
        "e => Array.from(e.querySelectorAll('g.mark-line path'))"
        ".map(p => [p.getAttribute('d') || '', p.getAttribute('stroke')])")
    return sum(d.count("L") + 1 for d, stroke in paths if d.startswith("M") and stroke)


def axis_labels(page, plot_id: str) -> list[str]:
    """The x axis's tick labels of a plot (Vega's SVG), left to right."""
    return page.locator(f"#{plot_id}").evaluate(
        "e => Array.from(e.querySelector('g.role-axis-label')?.querySelectorAll('text') || []).map(t => t.textContent)")


def test_tabs_training_and_compare_in_a_browser(app_url, browser, shot):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(app_url)
    tabs = page.get_by_role("tab")
    tabs.first.wait_for(timeout=60_000)
    assert [tabs.nth(i).inner_text().strip() for i in range(tabs.count())] == TABS

    # every tab opens and shows its main control
    landmarks = {"1 · Model": "Model source", "2 · Data": "Source in use", "3 · Rewards": "format_soft",
                 "4 · Train": "Completions per question (G)", "5 · Compare": "Your question (sent to both)",
                 "6 · Export": "Download adapter (.zip)", "Runs": "Load into Compare"}
    for name, text in landmarks.items():
        page.get_by_role("tab", name=name).click()
        page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=15_000)
    page.get_by_role("tab", name="1 · Model").click()
    page.get_by_text("M parameters").first.wait_for(timeout=30_000)  # the memory estimate filled in
    shot(page, "screenshot-model.png")

    # Data: the preview renders the prompt through the chat template
    page.get_by_role("tab", name="2 · Data").click()
    page.get_by_role("button", name="Preview").click()
    sync_api.expect(page.locator("#data-preview")).to_contain_text("<|im_start|>system", timeout=30_000)
    sync_api.expect(page.locator("#data-info")).to_contain_text("2000 training questions · 200 held out")

    page.get_by_role("tab", name="3 · Rewards").click()
    # Try on samples: the scores in the first columns, the long texts after them
    page.get_by_role("button", name="Try on samples").click()
    headers = lambda: [h.strip() for h in page.locator("#try-table th").all_inner_texts() if h.strip()]  # noqa: E731
    wait_until(lambda: len(headers()) > 5, timeout=120)  # the rewards' columns came
    headers = headers()
    names = Config().rewards.names  # the default rewards, in the order the Rewards tab lists its presets
    assert headers[0] == "total" and sorted(headers[1:len(names) + 1]) == sorted(names), headers
    assert headers[-1] == "question", headers
    shot(page, "screenshot-rewards.png")

    # Train: the memory plan for the settings on screen (this CPU: its RAM); empty plots, no GPU plot
    page.get_by_role("tab", name="4 · Train").click()
    sync_api.expect(page.locator("#memory-plan")).to_contain_text("CPU run: about", timeout=30_000)
    plan_before = page.locator("#memory-plan").inner_text()
    assert "of RAM" in plan_before and "GPU" not in plan_before and "CUDA" not in plan_before
    assert page.get_by_text("Peak RAM of the app's process").count() == 1
    assert page.get_by_text("Peak GPU memory").count() == 0
    # a tiny run; the reward plot gains points as steps finish
    for label, value in (("Completions per question (G)", "4"), ("Questions per step", "2"),
                         ("Max completion tokens", "16"), ("Training steps", str(STEPS))):
        page.get_by_label(label).first.fill(value)
    # the plan follows the settings on screen
    assert "(micro-batch 8," in plan_before
    page.get_by_label("Micro-batch size").first.fill("2")
    sync_api.expect(page.locator("#memory-plan")).to_contain_text("(micro-batch 2,", timeout=30_000)
    page.get_by_label("Micro-batch size").first.fill("8")
    sync_api.expect(page.locator("#memory-plan")).to_contain_text("(micro-batch 8,", timeout=30_000)
    assert line_points(page, "reward-plot") == 0
    page.locator("#start-btn").click()
    seen = []
    end = time.time() + 240
    while time.time() < end:
        seen.append(line_points(page, "reward-plot"))
        if "finished" in page.locator("#status-bar").inner_text() and seen[-1] == SERIES * STEPS:
            break
        page.wait_for_timeout(400)
    assert seen[-1] == SERIES * STEPS, seen  # the total and each default reward, one point per step each
    assert seen == sorted(seen) and len(set(seen)) >= 2, seen
    # lines of several points as Gradio draws them (2 px, 3 px under the mouse): only a lone point is a dot
    widths = page.locator("#reward-plot").evaluate(
        "e => Array.from(e.querySelectorAll('g.mark-line path')).map(p => getComputedStyle(p).strokeWidth)")
    assert len(widths) == SERIES and set(widths) <= {"2px", "3px"}, widths
    assert f"step {STEPS}/{STEPS}" in page.locator("#status-bar").inner_text()
    # the Start message does not outlive its run (a reward error would pause it: the status bar says so)
    wait_until(lambda: "started run" not in page.locator("#train-message").inner_text(), timeout=15)
    # whole steps on the x axis, each labelled once (Vega's own ticks were 1, 1.5, 2, ...)
    wait_until(lambda: axis_labels(page, "reward-plot") == [str(i) for i in range(1, STEPS + 1)])
    assert axis_labels(page, "memory-plot") == [str(i) for i in range(1, STEPS + 1)]
    page.locator("#reward-plot").scroll_into_view_if_needed()
    shot(page, "screenshot-train.png")

    # Compare: a preset prompt to both models; both answer
    page.get_by_role("tab", name="5 · Compare").click()
    page.get_by_text("Which is bigger? 9.11 or 9.9?").first.click()
    sync_api.expect(page.locator("#compare-prompt textarea")).to_have_value("Which is bigger? 9.11 or 9.9?",
                                                                           timeout=15_000)
    page.get_by_role("button", name="Send to both").click()
    for chat in ("#base-chat", "#tuned-chat"):
        page.locator(f"{chat} [data-testid='bot']").first.wait_for(timeout=60_000)
        assert page.locator(f"{chat} [data-testid='user']").first.inner_text().strip() == \
            "Which is bigger? 9.11 or 9.9?"
    # one chat's own trash icon clears both sides: they answer one conversation, turn for turn
    page.locator("#base-chat button[aria-label='Clear']").first.click()
    for chat in ("#base-chat", "#tuned-chat"):
        wait_until(lambda chat=chat: page.locator(f"{chat} [data-testid='user']").count() == 0, timeout=15)
    page.get_by_text("Which is bigger? 9.11 or 9.9?").first.click()  # asked again, for the screenshot
    sync_api.expect(page.locator("#compare-prompt textarea")).to_have_value("Which is bigger? 9.11 or 9.9?",
                                                                           timeout=15_000)
    page.get_by_role("button", name="Send to both").click()
    for chat in ("#base-chat", "#tuned-chat"):
        page.locator(f"{chat} [data-testid='bot']").first.wait_for(timeout=60_000)
    page.locator("#eval-n input[type=number]").fill("6")
    page.locator("#eval-n input[type=number]").press("Enter")
    page.get_by_role("button", name="Evaluate base vs tuned").click()
    page.get_by_text("held-out questions; tuned").first.wait_for(timeout=120_000)
    bars = "e => Array.from(e.querySelectorAll('g.mark-rect path')).filter(p => p.getAttribute('fill')).length"
    # accuracy, last-number accuracy (the task has numeric answers), format rate x base, tuned
    wait_until(lambda: page.locator("#eval-plot").evaluate(bars) == 6)
    assert "6 held-out questions" in page.get_by_text("held-out questions; tuned").first.inner_text()
    # the bars in the table's order, not Gradio's alphabetical one ('format rate' before 'last-number')
    metrics = ["accuracy", "last-number accuracy", "format rate"]
    wait_until(lambda: axis_labels(page, "eval-plot") == [f"{m} · {w}" for m in metrics for w in ("base", "tuned")])
    page.locator("#eval-plot").scroll_into_view_if_needed()
    shot(page, "screenshot-evaluate.png")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "screenshot-compare.png")
    # the plots were empty before step 1 without Vega complaining about them (the line plots' fields
    # are step and value; Compare's bar plot holds NaN bars before an evaluation, its `sum_value`)
    assert not [m for m in console if "Infinite extent" in m and "sum_value" not in m], console[:5]
    page.close()


def test_chinese_interface(app_url, browser, shot):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="1 · 模型").wait_for(timeout=60_000)
    page.get_by_role("tab", name="4 · 训练").click()
    page.get_by_role("button", name="▶ 开始").wait_for(timeout=15_000)
    assert page.get_by_text("GRPO 的 loss 接近 0 是正常的").count() >= 1
    # computed on the server, in the browser's language too: the status line and the memory plan
    sync_api.expect(page.locator("#memory-plan")).to_contain_text("CPU 运行：每步峰值约需", timeout=30_000)
    assert re.search(r"\*?\*?(空闲|已完成|已停止)", page.locator("#status-bar").inner_text())
    # every field's help: from core/config.py in English, ui/zh.py in Chinese
    assert page.get_by_text(HELP_ZH["algorithm.num_generations"]).count() == 1
    assert page.get_by_text("G: completions sampled per prompt").count() == 0
    shot(page, "screenshot-zh.png")
    context.close()


def test_compare_screenshot_script_on_a_tiny_run(tiny_model_dir, tmp_path):
    """bench/compare_screenshot.py (run by hand after the GPU run, on its adapter) end to end on a
    2-step run of the tiny model: it picks the run's checkpoint in Compare, asks one held-out
    question, evaluates, and leaves both screenshots."""
    import tarfile

    from core.models.loading import add_lora, load_base_model, load_tokenizer
    from core.rl.trainer import GRPOTrainer
    from test_trainer import tiny_config

    cfg = tiny_config(tmp_path, max_steps=2, max_completion_length=8)
    cfg.model.name_or_path = str(tiny_model_dir)
    cfg.data.source, cfg.data.train_size, cfg.data.eval_size = "builtin:chain_arithmetic", 20, 4
    cfg.data.system_prompt, cfg.data.response_prefix = "Think step by step.", "<think>"
    cfg.rewards.names, cfg.rewards.weights = ["correctness", "format_strict"], [1.0, 0.5]
    cfg.run.run_name, cfg.run.save_steps = "tiny-aha", 2
    model = add_lora(load_base_model(cfg.model, "cpu"), cfg.model)
    trainer = GRPOTrainer(cfg, model=model, tokenizer=load_tokenizer(str(tiny_model_dir)), device="cpu")
    assert trainer.train() == "finished"
    archive = tmp_path / "run.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(trainer.run.path, arcname="tiny-aha")
    out = tmp_path / "shots"
    # its own process, as the lead runs it (and Playwright's sync API allows one driver per thread)
    done = subprocess.run([sys.executable, "bench/compare_screenshot.py", "--run-archive", str(archive), "--run",
                           "tiny-aha", "--model", str(tiny_model_dir), "--out", str(out), "--eval-n", "2",
                           "--timeout-s", "120"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "question: What" in done.stdout
    for name in ("screenshot-compare-aha.png", "screenshot-compare-aha-eval.png"):
        assert 10_000 < (out / name).stat().st_size < MAX_PNG_BYTES
