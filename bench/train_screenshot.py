"""README screenshots from a run that learns (issue 30): the Train tab after the defaults trained
the bundled model on this machine, then the Compare tab on that run's last checkpoint.

How: start `python app.py` (bundled SmolLM2-135M-Instruct, a fresh runs folder), open the page in
Chromium (Debian's, through Playwright, as tests/test_browser.py does), press Start with nothing
changed (on a CPU: the app's CPU defaults, 20 steps), wait for the run to finish and screenshot the
Train tab; then `bench/compare_screenshot.py` asks the app's headline question of base and tuned.

    python bench/train_screenshot.py                     # writes docs/screenshot-train.png, docs/screenshot-compare.png
    python bench/train_screenshot.py --out /tmp/shots    # anywhere else

About 4 minutes on 2 CPU cores. Nothing under tests/ runs it: the tracked screenshots change only
when someone asks for them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare_screenshot import CHROMIUM, FLAGS, main as compare_main, start_app  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--timeout-s", type=float, default=900, help="for the whole run")
    ap.add_argument("--question", default="Which is bigger, 9.11 or 9.9?")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="aha-train-shot-"))
    runs_dir = work / "runs"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(runs_dir, "", work / "app.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(url)
            page.get_by_role("tab", name="4 · Train").wait_for(timeout=120_000)
            page.get_by_role("tab", name="4 · Train").click()
            page.locator("#start-btn").click()
            end = time.time() + args.timeout_s
            while time.time() < end:
                status = page.locator("#status-bar").inner_text()
                if "finished" in status or "failed" in status:
                    break
                page.wait_for_timeout(2000)
            print("status:", status.splitlines()[0] if status else "")
            page.wait_for_timeout(3000)  # the last timer tick draws the plots
            page.locator("#reward-plot").scroll_into_view_if_needed()
            page.screenshot(path=str(out / "screenshot-train.png"), full_page=False)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    run = next(p for p in runs_dir.iterdir() if (p / "config.yaml").exists())
    print(f"run: {run.name}")
    compare_main(["--runs-dir", str(runs_dir), "--run", run.name, "--question", args.question, "--out", str(out),
                  "--name", "screenshot-compare", "--eval-n", "20"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
