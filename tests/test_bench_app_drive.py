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


def _metrics(path, columns: dict) -> None:
    """A metrics.jsonl from columns (None: the row lacks the key)."""
    n = len(next(iter(columns.values())))
    rows = [{"step": i + 1, "reward": 1.0, **{k: v[i] for k, v in columns.items() if v[i] is not None}}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# the CLI ran 5 steps; the app was cut at 4, samples longer answers at step 3 (max_length 120 vs 100),
# lacks time/scoring at step 3, has a phase the CLI does not (time/new_phase), and the CLI one the app does not
CLI_COLUMNS = {"step_time": [9.0, 2.0, 1.0, 1.0, 1.0], "generation_time": [4.0, 1.0, 0.5, 0.5, 0.4],
               "completions/max_length": [256.0, 256.0, 100.0, 80.0, 60.0],
               "completions/mean_length": [100.0, 100.0, 50.0, 40.0, 30.0],
               "time/rollout": [4.0, 1.0, 0.5, 0.5, 0.4], "time/forward_backward": [4.0, 0.8, 0.4, 0.4, 0.5],
               "time/scoring": [0.1, 0.1, 0.1, 0.1, 0.1], "time/fold": [0.3, 0.3, 0.3, 0.3, 0.3]}
APP_COLUMNS = {"step_time": [9.0, 2.4, 1.5, 1.2], "generation_time": [4.0, 1.2, 1.0, 0.5],
               "completions/max_length": [256.0, 256.0, 120.0, 80.0],
               "completions/mean_length": [100.0, 100.0, 60.0, 40.2],
               "time/rollout": [4.0, 1.2, 1.0, 0.5], "time/forward_backward": [4.0, 1.0, 0.4, 0.6],
               "time/scoring": [0.1, 0.2, None, 0.3], "time/new_phase": [0.123456, 0.2, 0.3, True]}


def test_a_runs_record_keeps_each_steps_phases(tmp_path):
    from bench.app_drive import step_times

    _metrics(tmp_path / "app.jsonl", APP_COLUMNS)
    b = step_times(tmp_path / "app.jsonl")["breakdown"]
    assert list(b["per_step"])[:4] == ["step_time", "generation_time", "completions/mean_length", "completions/max_length"]
    assert set(b["per_step"]) == set(APP_COLUMNS)  # every time/* key, the new one too; no reward, no step
    assert b["per_step"]["time/new_phase"] == [0.1235, 0.2, 0.3, None]  # 4 digits; a bool is no time
    assert b["per_step"]["time/scoring"] == [0.1, 0.2, None, 0.3]
    assert b["mean"]["step_time"] == pytest.approx(1.7) and b["median"]["step_time"] == 1.5  # steps 2..4
    assert b["mean"]["time/scoring"] == pytest.approx(0.25) and b["mean"]["time/new_phase"] == pytest.approx(0.25)


def test_the_app_over_the_cli_phase_by_phase_and_on_equal_work(tmp_path):
    from bench.app_drive import phase_ratios, step_times

    _metrics(tmp_path / "cli.jsonl", CLI_COLUMNS)
    _metrics(tmp_path / "app.jsonl", APP_COLUMNS)
    r = phase_ratios(step_times(tmp_path / "app.jsonl"), step_times(tmp_path / "cli.jsonl"))
    assert r["steps"] == "2-4"
    by = r["by_phase"]
    assert "time/new_phase" not in by and "time/fold" not in by  # only what both runs time
    assert by["step_time"] == {"app": 1.7, "cli": 1.3333, "ratio": 1.275}
    assert by["time/rollout"] == {"app": 0.9, "cli": 0.6667, "ratio": 1.35}
    assert by["time/forward_backward"]["ratio"] == pytest.approx(1.25)
    assert by["time/scoring"] == {"app": 0.25, "cli": 0.1, "ratio": 2.5}  # the steps where both have it
    # equal work: steps 2 and 4 (step 1 is the warm-up, step 3's longest answers differ)
    eq = r["equal_work"]
    assert eq["steps"] == 2
    assert eq["by_phase"]["step_time"] == {"app": 1.8, "cli": 1.5, "ratio": 1.2}
    assert eq["by_phase"]["time/rollout"] == {"app": 0.85, "cli": 0.75, "ratio": 1.1333}
    assert eq["by_phase"]["time/forward_backward"] == {"app": 0.8, "cli": 0.6, "ratio": 1.3333}
    assert eq["by_phase"]["completions/max_length"]["ratio"] == 1.0
    # the same longest answer but more tokens in all (mean length 2% longer at step 4): not equal work
    _metrics(tmp_path / "app2.jsonl", {**APP_COLUMNS, "completions/mean_length": [100.0, 100.0, 60.0, 40.8]})
    assert phase_ratios(step_times(tmp_path / "app2.jsonl"), step_times(tmp_path / "cli.jsonl"))["equal_work"]["steps"] == 1
    # a CLI record made before it had a breakdown, or too few steps: nothing to say
    assert phase_ratios(step_times(tmp_path / "app.jsonl"), {"step_times": [1.0] * 5}) is None
    _metrics(tmp_path / "short.jsonl", {"step_time": [9.0, 1.0]})
    assert phase_ratios(step_times(tmp_path / "app.jsonl"), step_times(tmp_path / "short.jsonl")) is None


def test_the_summary_prints_the_phase_table_last(tmp_path, capsys):
    from bench.app_drive import Record, step_times, summarize

    _metrics(tmp_path / "cli.jsonl", CLI_COLUMNS)
    _metrics(tmp_path / "app.jsonl", APP_COLUMNS)
    rec = Record(tmp_path / "app_drive.json")
    rec.put("cli", step_times(tmp_path / "cli.jsonl"))
    rec.put("app_steps", step_times(tmp_path / "app.jsonl"))
    summarize(rec)
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "app_drive.json").read_text())
    assert saved["app_over_cli_by_phase"]["equal_work"]["by_phase"]["time/rollout"]["ratio"] == 1.1333
    assert saved["app_over_cli_matched"]["ratio"] == pytest.approx(1.275)
    lines = out.splitlines()
    assert lines[-9].startswith("app/cli by phase, steps 2-4 | the 2 of them")
    assert lines[-7].split() == ["step_time", "1.7000", "1.3333", "1.275", "|", "1.8000", "1.5000", "1.200"]
    assert lines[-1].split() == ["time/scoring", "0.2500", "0.1000", "2.500", "|", "0.2500", "0.1000", "2.500"]
    assert '"per_step"' not in out  # the printed records leave the breakdowns in the file
    # the CLI half alone (app-cli): its phase means
    rec = Record(tmp_path / "cli_only.json")
    rec.put("cli", step_times(tmp_path / "cli.jsonl"))
    summarize(rec)
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("cli means, steps 2..n:") and json.loads(last.split(":", 1)[1])["time/fold"] == 0.3


def test_the_cli_record_carries_its_phases_and_engine_args(tmp_path, monkeypatch):
    """run_cli reads the CLI's metrics.jsonl where the run's output dir and name put it
    (<runs>/<name>/metrics.jsonl), and the engine's "non-default args:" line from its log."""
    import subprocess
    import sys

    import bench.app_drive as drive

    runs = tmp_path / "runs"
    (runs / "cli").mkdir(parents=True)
    _metrics(runs / "cli" / "metrics.jsonl", CLI_COLUMNS)
    monkeypatch.setattr(sys, "executable", "/bin/sh")
    real_popen = subprocess.Popen
    args = "{'max_num_seqs': 256, 'enable_lora': True, 'tokenizer': '" + "x" * 2000 + "'}"

    def fake_cmd(cmd, **kw):
        line = f"INFO 12-06 09:33:29 [api_utils.py:273] non-default args: {args}"
        return real_popen(["/bin/sh", "-c", f"echo 'cli:  1%'; echo \"{line}\"; echo \"{line.replace('256', '8')}\""], **kw)

    monkeypatch.setattr(subprocess, "Popen", fake_cmd)
    out = drive.run_cli("x.yaml", [], runs, "cli", budget_s=20)
    assert out["rc"] == 0 and out["steps"] == 5
    assert out["breakdown"]["per_step"]["time/fold"] == [0.3] * 5
    assert out["engine_args"].startswith("non-default args: {'max_num_seqs': 256, 'enable_lora': True")
    assert len(out["engine_args"]) == 1000  # the first such line, cut
    assert drive.engine_args(tmp_path / "none.log") is None


def test_the_app_polled_against_quiet_over_the_same_work():
    """--quiet-steps: the steps polled every 10 s against those polled every 2 s, over the steps of
    the most common longest answer from step 25 on (earlier ones still learn their length)."""
    from bench.app_drive import polled_vs_quiet

    rows = [{"step": i, "step_time": 9.0, "completions/max_length": 256.0} for i in range(1, 25)]
    for i in range(25, 61):
        quiet = 40 <= i < 50
        rows.append({"step": i, "step_time": 0.8 if quiet else 1.0, "time/rollout": 0.2 if quiet else 0.35,
                     "completions/max_length": 15.0 if i != 55 else 40.0})
    r = polled_vs_quiet(rows, (40, 50))
    assert r["completion_max_length"] == 15.0 and r["quiet_steps"] == "40-49"
    assert r["quiet"]["steps"] == 10 and r["polled"]["steps"] == 25  # 26 outside, less step 55 (longer answers)
    assert r["quiet"]["step_time"] == 0.8 and r["polled"]["time/rollout"] == 0.35
    assert r["polled_over_quiet"] == 1.25
    assert polled_vs_quiet(rows, (70, 80)) is None  # no quiet step ran


def test_the_cpu_quota_and_what_it_throttled(tmp_path):
    """host_cpu reads cgroup v2's cpu.max and cpu.stat where they exist; throttling is the share of
    quota periods that were throttled between two readings."""
    from bench.common import host_cpu, throttling

    (tmp_path / "cpu.max").write_text("1600000 100000\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 900\nnr_periods 100\nnr_throttled 10\nthrottled_usec 2000000\n")
    before = host_cpu(tmp_path)
    assert before["cpu_max"] == "1600000 100000" and before["cpu_stat"]["nr_throttled"] == 10
    assert before["cpu_count"] >= 1 and before["affinity"] >= 1
    (tmp_path / "cpu.stat").write_text("usage_usec 999\nnr_periods 300\nnr_throttled 60\nthrottled_usec 7500000\n")
    assert throttling(before, host_cpu(tmp_path)) == {"periods": 200, "throttled": 50, "share": 0.25,
                                                     "throttled_s": 5.5}
    assert throttling(host_cpu(tmp_path / "none"), before) is None  # no cgroup counters: nothing to say


def test_the_cpu_quota_on_cgroup_v1(tmp_path):
    """cgroup v1 keeps the counters in cpu/ (throttled_time in ns) and the quota in two files."""
    from bench.common import host_cpu, throttling

    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("1600000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.stat").write_text("nr_periods 10\nnr_throttled 1\nthrottled_time 1000000000\n")
    before = host_cpu(tmp_path)
    assert before["cgroup"] == "v1" and before["cpu_max"] == "1600000 100000"
    (tmp_path / "cpu" / "cpu.stat").write_text("nr_periods 20\nnr_throttled 6\nthrottled_time 3500000000\n")
    assert throttling(before, host_cpu(tmp_path)) == {"periods": 10, "throttled": 5, "share": 0.5,
                                                     "throttled_s": 2.5}
    assert host_cpu(tmp_path / "none")["cgroup"] == "unreadable"


def test_host_speed_markers_read_the_cpu_and_vllms_build_times(tmp_path):
    """cpu_model: the CPU's name and mean clock from /proc/cpuinfo; engine_build: each vLLM engine's
    torch.compile and graph-capture seconds from the app's log (2026-12-07: 46.2 s / 22 s on the host
    whose steps were 1.7x slower, 27.2 / 14 on the others)."""
    from bench.app_drive import engine_build
    from bench.common import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654\ncpu MHz\t\t: 2400.000\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9654\ncpu MHz\t\t: 3700.500\n")
    assert cpu_model(info) == {"cpu_model": "AMD EPYC 9654", "cpu_mhz_mean": 3050.2}
    assert cpu_model(tmp_path / "none") == {}
    log = tmp_path / "app.log"
    log.write_text("INFO 12-07 19:11:00 [monitor.py:53] torch.compile took 46.21 s in total\n"
                   "INFO 12-07 19:11:30 [model_runner.py:726] Graph capturing finished in 22 secs, took 0.50 GiB\n"
                   "INFO 12-07 19:14:26 [monitor.py:53] torch.compile took 31.27 s in total\n"
                   "INFO 12-07 19:14:40 [model_runner.py:726] Graph capturing finished in 13 secs, took 0.37 GiB\n")
    assert engine_build(log) == {"compile_s": [46.21, 31.27], "graph_capture_s": [22.0, 13.0]}
    log.write_text("no engine here\n")
    assert engine_build(log) is None and engine_build(tmp_path / "missing.log") is None
