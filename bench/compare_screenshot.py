"""A Compare-tab screenshot of base vs tuned on one held-out question (issue 22).

Why: the aha recipe's claim is visible in one picture: the base model and the tuned adapter answer
the same held-out question side by side, and the tuned `<think>` holds the steps. The adapter
comes from the GPU run (`bash bench/h200_session.sh aha` brings back proof_aha_run.tgz); this
script runs on the CPU with the bundled model.

How: unpack the run into a fresh runs folder, start `python app.py` on it, and drive Chromium
(Debian's /usr/bin/chromium through Playwright, as tests/test_browser.py does): on the Compare tab
pick the run's last checkpoint (its system prompt and answer prefix fill in from the run's
config.yaml), put the run's token limit in the generation settings, send the question to both
models, then evaluate base vs tuned on the first held-out questions; one screenshot of each.

    python bench/compare_screenshot.py --run-archive /work/.device/N/proof_aha_run.tgz
    # writes docs/screenshot-compare-aha.png (the chat) and docs/screenshot-compare-aha-eval.png
    python bench/compare_screenshot.py --runs-dir runs --run smollm2-aha --question "What is 7 * 8 + 6 - 3?"

Both the chat and the evaluation table ask with the checkpoint's own settings, the recipe's
prefilled "<think>" included (issue 30).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(runs_dir: Path, model: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    env.pop("AHA_AUTH", None)
    cmd = [sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs_dir)] + (["--model", model] if model else [])
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    end = time.time() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > end:
                proc.kill()
                raise RuntimeError(f"app did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-archive", help="a .tgz holding <run>/config.yaml and <run>/checkpoints/step-*")
    ap.add_argument("--runs-dir", help="a runs folder already holding the run (instead of --run-archive)")
    ap.add_argument("--run", default="smollm2-aha", help="the run's folder name")
    ap.add_argument("--question", default="", help="default: the first held-out question of the run's task")
    ap.add_argument("--eval-n", type=int, default=3, help="held-out questions in the evaluation table")
    ap.add_argument("--model", default="", help="the app's default model (default: bundled SmolLM2)")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--name", default="screenshot-compare-aha")
    ap.add_argument("--timeout-s", type=float, default=600, help="for each model answer and the evaluation")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import expect, sync_playwright

    from core.config import Config
    from core.data import load_task_data

    work = Path(tempfile.mkdtemp(prefix="aha-shot-"))
    runs_dir = Path(args.runs_dir) if args.runs_dir else work / "runs"
    if args.run_archive:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.run_archive) as tar:
            tar.extractall(runs_dir, filter="data")
    run = runs_dir / args.run
    cfg = Config.load(run / "config.yaml")
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    if not checkpoints:
        raise SystemExit(f"{run} has no checkpoint")
    question = args.question or load_task_data(cfg.data).eval[0]["question"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(runs_dir, args.model, work / "app.log")
    ms = int(args.timeout_s * 1000)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.get_by_role("tab", name="5 · Compare").wait_for(timeout=120_000)
            page.get_by_role("tab", name="5 · Compare").click()  # selecting the tab refreshes the targets
            # 1) the tuned model: the run's last checkpoint
            label = f"{args.run} · {checkpoints[-1].name}"
            page.locator("#compare-target input").click()
            page.get_by_role("option", name=label).click()
            expect(page.locator("#compare-target input")).to_have_value(label, timeout=15_000)
            # 2) the run's own system prompt and answer prefix (filled in from its config.yaml), its token limit
            expect(page.locator("#compare-system textarea")).to_have_value(cfg.data.system_prompt, timeout=15_000)
            expect(page.locator("#compare-prefix textarea")).to_have_value(cfg.data.response_prefix)
            page.get_by_text("Generation settings").click()
            tokens = page.locator("#compare-max-tokens input[type=number]")
            tokens.fill(str(cfg.algorithm.max_completion_length))
            tokens.press("Enter")
            page.get_by_text("Generation settings").click()  # closed again: the chat stays in view
            # 3) one held-out question to both
            page.locator("#compare-prompt textarea").fill(question)
            page.get_by_role("button", name="Send to both").click()
            for chat in ("#base-chat", "#tuned-chat"):
                page.locator(f"{chat} [data-testid='bot']").first.wait_for(timeout=ms)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(out / f"{args.name}.png"))
            # 4) the held-out evaluation table: the checkpoint's own prompt, prefix and limits
            n = page.locator("#eval-n input[type=number]")
            n.fill(str(args.eval_n))
            n.press("Enter")
            page.get_by_role("button", name="Evaluate base vs tuned").click()
            note = page.get_by_text("held-out questions; tuned").first
            note.wait_for(timeout=ms)
            note.evaluate("e => e.scrollIntoView({block: 'start'})")  # the bars, then every answer
            page.screenshot(path=str(out / f"{args.name}-eval.png"))
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    for suffix in ("", "-eval"):
        path = out / f"{args.name}{suffix}.png"
        print(f"{path} ({path.stat().st_size // 1024} KB)")
    print(f"question: {question}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
