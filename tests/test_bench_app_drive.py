"""bench/app_drive.py's arithmetic (the drive itself needs a GPU machine and runs there)."""

from __future__ import annotations

import json

import pytest


def test_app_and_cli_compare_over_the_same_steps(tmp_path):
    from bench.app_drive import matched_ratio, step_times

    # a run's early steps are slow (long answers), its late ones fast; the app's run was cut at step 4
    cli = tmp_path / "cli.jsonl"
    cli.write_text("".join(json.dumps({"step": i + 1, "step_time": t, "reward": 1.0}) + "\n"
                           for i, t in enumerate([9.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5])))
    app = tmp_path / "app.jsonl"
    app.write_text("".join(json.dumps({"step": i + 1, "step_time": t, "reward": 1.0}) + "\n"
                           for i, t in enumerate([9.0, 2.2, 2.2, 2.2])))
    c, a = step_times(cli), step_times(app)
    assert c["mean_step_s"] == pytest.approx(1.142857, rel=1e-5) and a["mean_step_s"] == pytest.approx(2.2)
    m = matched_ratio(a, c)
    assert m["steps"] == "2-4" and m["ratio"] == pytest.approx(1.1) and m["median_ratio"] == pytest.approx(1.1)
    assert matched_ratio({"step_times": [1.0, 1.0]}, c) is None  # too few steps to say anything


def test_the_cli_side_can_come_from_an_earlier_command(tmp_path):
    """The CLI runs in its own GPU command (--skip-app --cli), the app's drive in the next one with
    --cli-from: the app's run then has the whole 600 s command (2026-12-06 07:35: the CLI's 254 s
    left the app's run 126 s, and it was cut at step 33)."""
    from bench.app_drive import ROOT, main

    earlier = tmp_path / "cli_drive.json"
    earlier.write_text(json.dumps({"started": "2026-12-06 07:35:04",
                                   "cli": {"rc": 0, "steps": 3, "mean_step_s": 1.5, "step_times": [3.0, 1.0, 0.5]}}))
    out = tmp_path / "out"
    assert main(["--config", str(ROOT / "configs" / "smollm2-largest.yaml"), "--skip-app", "--cli-from",
                 str(earlier), "--out", str(out), "--runs-dir", str(tmp_path / "runs")]) == 0
    rec = json.loads((out / "app_drive.json").read_text())
    assert rec["cli"]["mean_step_s"] == 1.5 and rec["cli"]["from"] == str(earlier)
    assert rec["cli"]["started"] == "2026-12-06 07:35:04"
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"started": "x"}))
    with pytest.raises(SystemExit, match="no CLI run"):
        main(["--config", str(ROOT / "configs" / "smollm2-largest.yaml"), "--skip-app", "--cli-from", str(empty),
              "--out", str(out), "--runs-dir", str(tmp_path / "runs")])
    with pytest.raises(SystemExit, match="is missing"):  # a fresh machine has no CLI record
        main(["--config", str(ROOT / "configs" / "smollm2-largest.yaml"), "--skip-app", "--cli-from",
              str(tmp_path / "none.json"), "--out", str(out), "--runs-dir", str(tmp_path / "runs")])


def test_a_cli_past_its_budget_is_stopped_with_what_it_started(tmp_path, monkeypatch):
    """run_cli waits on a log file, not a pipe, and stops the CLI's whole process group at its
    budget: a grandchild holding the output cannot keep the drive waiting."""
    import subprocess
    import sys
    import time

    import bench.app_drive as drive

    # the "CLI": a shell that starts a long-lived grandchild and sleeps
    monkeypatch.setattr(sys, "executable", "/bin/sh")
    monkeypatch.setattr(drive, "ROOT", tmp_path)
    t0 = time.time()
    real_popen = subprocess.Popen

    def fake_cmd(cmd, **kw):  # replace `python -m scripts.train ...` by a shell line
        return real_popen(["/bin/sh", "-c", "sleep 30 & echo started; sleep 30"], **kw)

    monkeypatch.setattr(subprocess, "Popen", fake_cmd)
    out = drive.run_cli("x.yaml", [], tmp_path / "runs", "cli", budget_s=1.5)
    assert out["rc"] == "timeout" and "started" in out["tail"]
    assert time.time() - t0 < 20  # did not wait for the grandchild's 30 s
