"""Bad days: a killed process, out-of-memory, NaN losses, a model too large, empty data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.config import Config

ROOT = Path(__file__).resolve().parents[1]


def _cli_config(tmp_path, model_dir, max_steps=8) -> Path:
    cfg = Config()
    cfg.model.name_or_path = str(model_dir)
    cfg.model.dtype = "float32"
    cfg.model.lora_r, cfg.model.lora_alpha = 4, 8
    cfg.data.source = "builtin:decimal_compare"
    cfg.data.train_size, cfg.data.eval_size = 64, 4
    cfg.rewards.names = ["format_soft", "length_penalty"]
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.max_completion_length, a.max_steps = 4, 2, 12, max_steps
    cfg.run.output_dir, cfg.run.run_name, cfg.run.save_steps, cfg.run.engine = str(tmp_path / "runs"), "crash", 2, "hf"
    path = tmp_path / "run.yaml"
    cfg.save(path)
    return path


def test_sigkill_mid_run_then_resume_is_continuous(tiny_model_dir, tmp_path):
    from core.runs.folders import RunDir, list_runs

    # 14 steps: the kill lands mid-run even when a loaded machine polls late (8 was too few)
    cfg_path = _cli_config(tmp_path, tiny_model_dir, max_steps=14)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "scripts.train", "--config", str(cfg_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = RunDir(tmp_path / "runs" / "crash")
    deadline = time.time() + 240
    while time.time() < deadline and len(run.read_metrics()) < 5:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(run.read_metrics())
    assert 5 <= killed_at < 14, killed_at
    assert run.read_status()["state"] == "running"  # it never got to say goodbye
    # a restart lists the run and resumes from its last complete checkpoint
    assert [r.name for r in list_runs(tmp_path / "runs")] == ["crash"]
    last = run.latest_checkpoint()
    saved = int(last.name.split("-")[1]) if last is not None else None
    assert saved is not None and saved % 2 == 0 and 4 <= saved <= killed_at, (saved, killed_at)
    p = subprocess.run([sys.executable, "-m", "scripts.train", "--resume", str(run.path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    steps = [r["step"] for r in run.read_metrics()]
    assert steps == list(range(1, 15))  # continuous, nothing duplicated
    assert run.read_status()["state"] == "finished"
    assert not list((run.path / "checkpoints").glob(".tmp-*"))  # no half-written checkpoint left


def _small_trainer(tiny_model_dir, tmp_path, **algo):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_trainer import make_trainer, tiny_config

    return make_trainer(tiny_model_dir, tiny_config(tmp_path, **algo))


def test_out_of_memory_retries_with_smaller_micro_batch(tiny_model_dir, tmp_path, monkeypatch):
    import core.rl.trainer as trainer_module

    trainer = _small_trainer(tiny_model_dir, tmp_path, max_steps=1, micro_batch_size=16)
    real = trainer_module.completion_logprobs
    seen = []

    def flaky(*args, **kwargs):  # the forward of every micro-batch of the update's pass
        if not seen or seen[-1] != trainer.micro_batch_size:
            seen.append(trainer.micro_batch_size)
        if trainer.micro_batch_size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "completion_logprobs", flaky)
    assert trainer.train() == "finished"
    assert seen == [16, 8, 4]
    m = trainer.run.read_metrics()[-1]
    assert m["micro_batch_size"] == 4 and m["skipped_steps"] == 0


def test_nan_loss_skips_the_update_and_counts_it(tiny_model_dir, tmp_path, monkeypatch):
    import core.rl.trainer as trainer_module

    trainer = _small_trainer(tiny_model_dir, tmp_path, max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    real = trainer_module.policy_loss
    calls = {"n": 0}

    def nan_first_step(logps, *a, **kw):
        loss, st = real(logps, *a, **kw)
        calls["n"] += 1
        return (loss * float("nan"), st) if trainer.step == 0 else (loss, st)

    monkeypatch.setattr(trainer_module, "policy_loss", nan_first_step)
    trainer.train_step()  # step 1: NaN -> skipped, adapter untouched
    assert trainer.skipped_steps == 1
    after = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert all(torch.equal(before[n], after[n]) for n in before)
    r = trainer.train_step()  # step 2 trains normally and reports the count
    assert r.metrics["skipped_steps"] == 1 and r.metrics["loss"] == r.metrics["loss"]


def test_model_too_large_is_refused_before_loading():
    from transformers import AutoConfig

    from core.memory.planner import DoesNotFit, plan_run

    big = AutoConfig.from_pretrained(ROOT / "bench" / "configs" / "llama-3.1-8b.json")
    cfg = Config()
    cfg.algorithm.max_completion_length = 4096
    with pytest.raises(DoesNotFit, match=r"too large for this GPU.*Predicted peak .* of 8.00 GB free"):
        plan_run(big, cfg, engine="vllm", free_bytes=8 * 2**30, total_bytes=8 * 2**30).refuse_if_too_large()
    small = AutoConfig.from_pretrained(ROOT / "bench" / "configs" / "qwen2.5-0.5b.json")
    cfg.algorithm.max_completion_length = 256
    ok = plan_run(small, cfg, engine="vllm", free_bytes=80 * 2**30, total_bytes=80 * 2**30).refuse_if_too_large()
    assert ok.fits and 0 < ok.memory.engine_share < 0.92 and "Predicted peak" in ok.memory.summary()
    assert ok.memory.kv_cache == ok.engine_sizes.kv_cache_bytes  # the plan counts the engine it sizes


def test_dataset_with_zero_usable_rows_is_refused(tmp_path):
    from core.config import DataConfig
    from core.data import DataError, load_task_data

    (tmp_path / "d.csv").write_text("prompt,answer\n,\n  ,\n")
    with pytest.raises(DataError, match="usable"):
        load_task_data(DataConfig(source=str(tmp_path / "d.csv")))


def test_run_names_cannot_escape_the_runs_folder(tmp_path):
    from core.runs.folders import RunDir

    run = RunDir.create(tmp_path / "runs", "../../../etc/evil")
    assert run.path.parent == (tmp_path / "runs").resolve()
    assert ".." not in run.path.name


def test_metrics_survive_a_torn_last_line(tmp_path):
    from core.runs.folders import RunDir

    run = RunDir.create(tmp_path, "torn")
    run.append_metrics({"step": 1, "reward": 0.5})
    with open(run.metrics_path, "a") as fh:
        fh.write('{"step": 2, "rew')  # the process died mid-write
    assert [r["step"] for r in run.read_metrics()] == [1]
    run.truncate_logs(1)
    assert json.loads(run.metrics_path.read_text().strip()) == {"step": 1, "reward": 0.5}


def test_out_of_memory_at_micro_batch_one_pauses_with_advice(tiny_model_dir, tmp_path, monkeypatch):
    import threading

    import core.rl.trainer as trainer_module

    trainer = _small_trainer(tiny_model_dir, tmp_path, max_steps=2, micro_batch_size=2)
    real = trainer_module.completion_logprobs
    state = {"oom": True}

    def always_oom(*args, **kwargs):
        if state["oom"]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "completion_logprobs", always_oom)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("state", trainer.train()))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and trainer.run.read_status().get("state") != "paused":
        time.sleep(0.05)
    status = trainer.run.read_status()
    assert status["state"] == "paused" and "out of memory" in status["reason"]
    assert "activation offload" in status["reason"] and trainer.micro_batch_size == 1
    state["oom"] = False  # the user lowered the length; Resume
    trainer.control.resume()
    t.join(timeout=120)
    assert result["state"] == "finished" and [m["step"] for m in trainer.run.read_metrics()] == [1, 2]


def test_a_new_run_never_appends_to_another_runs_logs(tmp_path):
    from core.runs.folders import RunDir, free_run_name

    assert free_run_name(tmp_path, "quick start") == "quick_start"
    for expected in ("quick_start", "quick_start-2", "quick_start-3"):
        name = free_run_name(tmp_path, "quick start")
        assert name == expected
        run = RunDir.create(tmp_path, name)
        run.config_path.write_text("{}")


def test_a_resume_pressed_while_the_pause_is_announced_is_not_lost():
    """The trainer writes the status ("paused", reason, traceback) and then pauses; a Resume that
    arrives in between (the user saw "paused" and pressed at once) must win, not be overwritten."""
    import threading

    from core.rl.control import TrainerControl

    control = TrainerControl()
    seen = {}

    def announce():  # the status is visible now: the "user" resumes immediately, from another thread
        t = threading.Thread(target=control.resume)
        t.start()
        t.join(timeout=0.2)
        seen["resume_waited"] = t.is_alive()  # it must wait for the pause to finish
        seen["thread"] = t

    control.pause("reward failed", announce=announce)
    seen["thread"].join(timeout=5)
    assert seen["resume_waited"] and not control.paused and control.pause_reason == ""


def test_cli_rewards_file_goes_into_the_run_config_and_is_scored(tiny_model_dir, tmp_path):
    from core.runs.folders import RunDir
    from scripts.train import main

    cfg_path = _cli_config(tmp_path, tiny_model_dir, max_steps=1)
    rewards = tmp_path / "my_rewards.py"
    code = "def short_is_good(prompts, completions, **kwargs):\n    return [1.0 / (1 + len(str(c))) for c in completions]\n"
    rewards.write_text(code)
    assert main(["--config", str(cfg_path), "--rewards-file", str(rewards)]) == 0
    run = RunDir(tmp_path / "runs" / "crash")
    assert Config.load(run.config_path).rewards.custom_code == code  # the run keeps its own copy
    assert rewards.read_text() == code  # the user's file is untouched
    (m,) = run.read_metrics()
    assert 0.0 < m["rewards/short_is_good/mean"] <= 1.0
    assert main(["--config", str(cfg_path), "--rewards-file", str(tmp_path / "missing.py")]) == 2
