"""The run manager on a tiny random model, on the CPU: one worker thread, one active run, chat
between steps, pause / resume / stop, evaluation, rewards tried on samples, exports."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.config import ModelConfig, RewardsConfig
from core.app.messages import ManagerError
from core.app.worker import ModelWorker
from core.app.manager import RunManager
from core.memory.sizes import estimate_memory
from core.runs.folders import RunDir


def tiny_config(manager: RunManager, **algorithm):
    """Steps of well under a second or two: 2 questions x 4 completions x 16 tokens."""
    cfg = manager.default_config()
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.micro_batch_size = 4, 2, 8
    a.max_completion_length, a.max_prompt_length, a.max_steps = 16, 128, 3
    a.learning_rate, a.lr_scheduler = 1e-3, "constant"
    for k, v in algorithm.items():
        setattr(a, k, v)
    cfg.data.source = "builtin:decimal_compare"
    cfg.data.train_size, cfg.data.eval_size = 40, 6
    cfg.rewards.names, cfg.rewards.weights = ["format_soft", "correctness"], []
    cfg.run.engine, cfg.run.save_steps, cfg.run.log_samples = "hf", 2, 2
    return cfg


def wait_for(predicate, timeout=60.0, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="module")
def manager(tiny_model_dir, tmp_path_factory):
    m = RunManager(tmp_path_factory.mktemp("runs"),
                   ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=8, lora_alpha=16),
                   device="cpu")
    yield m
    m.close()


@pytest.fixture(scope="module")
def finished_run(manager):
    """A finished 3-step run (shared by the tests that only read it), with a reward that has spread
    and a large step, so that its adapter moves enough to change greedy answers."""
    cfg = tiny_config(manager, learning_rate=5e-2)
    cfg.rewards.custom_code = LONGER
    name = manager.start(cfg)
    assert manager.wait(timeout=120) == "finished"
    return name


# ---------------------------------------------------------------------------


def test_worker_runs_jobs_in_order_on_one_thread():
    import threading

    worker = ModelWorker()
    threads, order = set(), []

    def job(i):
        threads.add(threading.current_thread().name)
        order.append(i)
        return i * i

    futures = [worker.submit(lambda i=i: job(i)) for i in range(5)]
    assert [f.result(timeout=5) for f in futures] == [0, 1, 4, 9, 16]
    assert order == [0, 1, 2, 3, 4] and threads == {"aha-model-worker"}
    # a job submitted from the worker itself runs at once instead of deadlocking
    assert worker.submit(lambda: worker.submit(lambda: 7).result(timeout=1)).result(timeout=5) == 7
    with pytest.raises(ZeroDivisionError):
        worker.call(lambda: 1 / 0)
    worker.close()


def test_run_pause_chat_resume_and_refuse_second_start(manager, tmp_path):
    # a reward with spread and a large step: from the first step on, the adapter changes the answer
    cfg = tiny_config(manager, learning_rate=0.1)
    cfg.rewards.custom_code = LONGER
    name = manager.start(cfg)
    # Resume while it runs (the Runs tab's button stays enabled): said plainly, the run untouched
    with pytest.raises(ManagerError, match=f"run '{name}' is running already, not paused"):
        manager.resume(name)
    with pytest.raises(ManagerError, match=f"run '{name}' is running: stop it before resuming 'other'"):
        manager.resume("other")
    wait_for(lambda: manager.status()["step"] >= 1)
    manager.pause()
    # the run pauses between steps; the worker keeps serving jobs while it waits
    s = wait_for(lambda: (st := manager.status())["state"] == "paused" and st)
    assert s["run_name"] == name and s["max_steps"] == 3 and s["step"] < 3 and s["pause_reason"]
    before = manager.status()["elapsed"]
    time.sleep(1.0)
    assert abs(manager.status()["elapsed"] - before) < 0.2, before  # a paused run's clock stands still
    with pytest.raises(ManagerError, match="stop it"):
        manager.start(tiny_config(manager))
    prompt = "Which is bigger? 9.11 or 9.9?"
    reply = manager.chat(prompt, target="current", max_tokens=8)
    assert manager.status()["state"] == "paused"  # answered while the run still holds the worker
    # the paused run's adapter answers, asked as the run asks: what transformers + peft give for it,
    # and not what the base model gives
    asked = (prompt, cfg.data.system_prompt, cfg.data.response_prefix, 8)
    assert manager.adapter_change("current")["moved"]
    assert reply == greedy_reply(cfg.model.name_or_path, live_adapter(manager, tmp_path / "live"), *asked)
    assert reply != greedy_reply(cfg.model.name_or_path, None, *asked)
    manager.resume()
    assert manager.wait(timeout=120) == "finished"
    s = manager.status()
    assert (s["state"], s["step"], s["error"]) == ("finished", 3, "")
    metrics = manager.metrics(name)
    assert list(metrics["step"]) == [1, 2, 3]
    for column in ("reward", "loss", "kl", "completions/mean_length", "frac_reward_zero_std",
                   "rewards/format_soft/mean", "rewards/correctness/mean", "reflections_per_completion",
                   "tokens_per_second", "peak_memory_gb"):
        assert column in metrics, column
    assert metrics["completions/mean_length"].between(1, 16).all()
    samples = manager.samples(name)
    assert len(samples) == 6 and list(samples["step"])[:2] == [3, 3]  # 2 per step, newest first
    assert {"question", "completion", "reward", "format_soft", "correctness"} <= set(samples.columns)
    assert [c.rsplit("-", 1)[1] for c in manager.checkpoints(name)] == ["000002", "000003"]
    runs = {r["run"]: r for r in manager.list_runs()}
    assert runs[name]["state"] == "finished" and runs[name]["step"] == 3 and runs[name]["checkpoints"] == 2
    cfg = manager.run_config().algorithm  # which recipe trained it, beside the name
    assert runs[name]["algorithm"] == f"{cfg.algorithm} ({cfg.loss_type})"
    # "updated" is the run's last write (its status at the end), not its config's (written at the start)
    run = RunDir(manager.runs_dir / name)
    os.utime(run.config_path, (0, 0))  # the config written long ago: the list still shows the status's time
    last = max(run.status_path.stat().st_mtime, run.metrics_path.stat().st_mtime)
    assert run.last_written() == last > time.time() - 3600
    shown = {r["run"]: r for r in manager.list_runs()}[name]["updated"]
    assert shown == time.strftime("%Y-%m-%d %H:%M", time.localtime(last))


def test_an_idle_app_names_the_runs_it_found(tiny_model_dir, tmp_path):
    """A restarted app with runs in its folder: idle, and the status line says where they are (a new
    user read "no run yet" beside a Runs tab listing two); an empty folder keeps "no run yet"."""
    from core.config import Config
    from ui.status_text import STATUS_EN, status_line

    for name in ("a", "b"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        Config().save(tmp_path / "runs" / name / "config.yaml")
    (tmp_path / "empty").mkdir()
    for folder, n in (("runs", 2), ("empty", 0)):
        again = RunManager(tmp_path / folder, ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"),
                           device="cpu")
        try:
            s = again.status()
            assert s["state"] == "idle" and not s["run_name"] and s["earlier_runs"] == n
            assert again.current_adapter() is None  # "current" is a fresh adapter: Compare says so, not a run
            assert status_line(s) == (STATUS_EN["idle.earlier"].format(n=n) if n else STATUS_EN["idle"])
        finally:
            again.close()


def test_the_time_a_loop_is_held_in_a_pause_is_counted_apart():
    """`TrainerControl.held_seconds`: the run's elapsed time leaves pauses out (status.elapsed)."""
    import threading

    from core.rl.control import TrainerControl

    control = TrainerControl()
    control.wait_if_paused()  # not paused: no hold
    assert control.held_seconds() == 0.0 and not control.holding
    control.pause("test")
    loop = threading.Thread(target=control.wait_if_paused)
    loop.start()
    time.sleep(0.4)
    assert control.holding and 0.3 < control.held_seconds() < 2.0  # the hold in progress counts
    control.resume()
    loop.join(5)
    held = control.held_seconds()
    assert not control.holding and 0.3 < held < 2.0
    time.sleep(0.2)
    assert control.held_seconds() == held  # nothing after the resume


def test_chat_is_answered_between_steps_then_stop_and_resume(manager):
    # the adapter changes the answer from the first step on: 'base' must switch it off
    cfg = tiny_config(manager, max_steps=6, learning_rate=0.1)
    cfg.rewards.custom_code = LONGER
    name = manager.start(cfg)
    wait_for(lambda: manager.status()["step"] >= 1)
    reply = manager.chat("What is 2 + 3?", target="base", max_tokens=4)
    s = manager.status()
    assert s["state"] == "running" and 1 <= s["step"] < 6  # served after a step, long before the end
    # the base model's answer (the adapter off), asked as the running run asks
    assert reply == greedy_reply(cfg.model.name_or_path, None, "What is 2 + 3?", cfg.data.system_prompt,
                                 cfg.data.response_prefix, 4)
    stopped_at = manager.stop()["step"]
    assert manager.wait(timeout=120) == "stopped"
    step = manager.status()["step"]
    assert stopped_at <= step < 6
    assert manager.checkpoints(name)[-1].endswith(f"step-{step:06d}")  # stop saves the step it reached
    assert manager.status()["checkpoint"] == f"step-{step:06d}"  # and the status line names it
    kept = float(manager.metrics(name)["step_time"].iloc[:step].sum())
    # a stopped run continues from its checkpoint, logs stay continuous
    manager.resume(name)
    assert manager.status()["elapsed"] >= kept > 0  # the kept steps' time is not lost on a resume
    assert manager.wait(timeout=120) == "finished"
    assert list(manager.metrics(name)["step"]) == list(range(1, 7))
    after = float(manager.metrics(name)["step_time"].iloc[step:].sum())
    assert manager.status()["elapsed"] >= kept + after


def test_evaluate_base_vs_tuned(manager, finished_run):
    result = manager.evaluate("current", n=4)
    items = result["items"]
    assert len(items) == 4 and {"question", "base", "tuned"} <= set(items[0])
    for who in ("base", "tuned"):
        assert result[who]["n"] == 4
        assert result[who]["accuracy"] == sum(i[f"{who}_correct"] for i in items) / 4
        assert 0.0 <= result[who]["format_rate"] <= 1.0
        assert result[who]["cut_rate"] == sum(i[f"{who}_cut"] for i in items) / 4  # stopped at the token limit
    assert result["max_tokens"] == manager.run_config().algorithm.max_completion_length
    # the answers are greedy ones, of the run's length, to the prompt cut as training cut it: what
    # transformers + peft give for the base model and for the finished run's last checkpoint
    cfg, checkpoint = manager.run_config(), manager.checkpoints(finished_run)[-1]
    asked = (cfg.data.system_prompt, cfg.data.response_prefix, cfg.algorithm.max_completion_length)
    keep = cfg.algorithm.max_prompt_length
    model_dir = cfg.model.name_or_path
    assert items[0]["base"] == greedy_reply(model_dir, None, items[0]["question"], *asked, keep_last=keep)
    assert items[0]["tuned"] == greedy_reply(model_dir, checkpoint, items[0]["question"], *asked, keep_last=keep)
    assert any(i["tuned"] != i["base"] for i in items)  # the run's adapter moved: 'tuned' is not the base
    on_checkpoint = manager.evaluate(checkpoint, n=2)
    assert on_checkpoint["tuned"]["n"] == 2
    assert [i["tuned"] for i in on_checkpoint["items"]] == [i["tuned"] for i in items[:2]]  # the same adapter
    # which run's weights "current" held, read where it was measured (Compare names it); none for a checkpoint
    assert result["adapter_of"] == manager.current_adapter() == {"run": finished_run, "step": 3}
    assert on_checkpoint["adapter_of"] is None


def test_evaluation_refuses_to_pair_a_base_and_a_tuned_side_of_two_models(manager, finished_run):
    """Compare's evaluation answers in two jobs (base, then tuned); a Start between them that loads
    another model would pair one model's base with another's adapter: the second job refuses, names
    why, and the next evaluation pairs them again."""
    from core.app.manager import ManagerError

    stages = manager.evaluate_stages("current", n=2)
    assert next(stages)[0] == "base" and next(stages)[0] == "tuned"  # the base side has answered
    key = manager._model_key
    manager._model_key = (key[0] + "-another", *key[1:])  # what loading another model does to the key
    try:
        with pytest.raises(ManagerError, match="the model changed while the base model answered"):
            next(stages)
    finally:
        manager._model_key = key
    assert manager.evaluate("current", n=2)["tuned"]["n"] == 2


def live_adapter(manager, folder: Path) -> str:
    """The active run's adapter as it is in memory now, saved by peft: a job on the worker, so it
    runs between two steps (or while paused), the moment a chat with target 'current' is served."""
    manager.worker.call(lambda: manager._model.save_pretrained(str(folder), selected_adapters=["default"]))
    return str(folder)


LONGER = "def longer(completions, **kwargs):\n    return [len(c[0]['content']) / 50 for c in completions]\n"


def greedy_reply(model_dir, checkpoint, prompt, system_prompt, prefix, max_tokens, keep_last=None):
    """The answer plain transformers + peft give (no engine, no manager): what chat must return.
    `keep_last`: only the prompt's last tokens, as evaluation cuts it (max_prompt_length)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.data import build_messages, render_prompt
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if checkpoint:
        model = PeftModel.from_pretrained(model, checkpoint)
    ids = tok(render_prompt(tok, build_messages(prompt, system_prompt), "", prefix),
              add_special_tokens=False)["input_ids"]
    if keep_last:
        ids = ids[-keep_last:]
    with torch.no_grad():
        out = model.eval().generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = out[0, len(ids):].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id) + 1]
    return prefix + tok.decode(new, skip_special_tokens=True)


def test_chat_asks_a_checkpoint_as_its_run_trained(manager):
    """Issue 30: a checkpoint is asked with its own run's system prompt and answer prefix (not the
    current run's), base and tuned alike; the answers are the ones transformers + peft give."""
    # a reward with spread and a large step: the adapter moves enough to change a greedy answer
    cfg = tiny_config(manager, max_steps=3, learning_rate=5e-2)
    cfg.data.system_prompt, cfg.data.response_prefix = "Answer in one word.", "<reasoning>"  # not the defaults
    cfg.rewards.names, cfg.rewards.custom_code = [], LONGER
    trained = manager.start(cfg)
    assert manager.wait(timeout=120) == "finished"
    checkpoint = manager.checkpoints(trained)[-1]
    live = manager.adapter_change("current")  # the run's adapter in memory, after its last step
    model_dir, prompt = manager.default_model.name_or_path, "Which is bigger? 9.11 or 9.9?"
    # asked while the trained adapter is live: 'current' is it, 'base' is the model with it switched off
    current_reply = manager.chat(prompt, target="current", max_tokens=12)
    base_reply = manager.chat(prompt, target="base", max_tokens=12)
    other = manager.start(tiny_config(manager, max_steps=1))  # another run becomes the current one
    assert manager.wait(timeout=120) == "finished"

    asked = manager.chat_settings(checkpoint)
    assert (asked["system_prompt"], asked["response_prefix"], asked["chat_template"]) == (
        "Answer in one word.", "<reasoning>", "")
    assert asked["source"] == f"the config.yaml of run `{trained}` ({Path(checkpoint).name})"
    current = manager.chat_settings("current")
    defaults = manager.default_config().data
    assert (current["system_prompt"], current["response_prefix"]) == (defaults.system_prompt, defaults.response_prefix)
    assert current["source"] == f"the current run `{other}`"

    tuned = manager.chat(prompt, target=checkpoint, max_tokens=12)
    base = manager.chat(prompt, target="base", asked_as=checkpoint, max_tokens=12)
    assert tuned == greedy_reply(model_dir, checkpoint, prompt, "Answer in one word.", "<reasoning>", 12)
    assert base == greedy_reply(model_dir, None, prompt, "Answer in one word.", "<reasoning>", 12)
    assert tuned.startswith("<reasoning>") and base.startswith("<reasoning>") and tuned != base
    # 'current' was the trained adapter (its last checkpoint's answer), 'base' the base model's
    assert current_reply == tuned and base_reply == base
    # the boxes of the Compare tab replace the run's settings when edited
    edited = manager.chat(prompt, target=checkpoint, system_prompt="", response_prefix="", max_tokens=12)
    assert edited == greedy_reply(model_dir, checkpoint, prompt, "", "", 12)
    assert manager.chat(prompt, target="base", max_tokens=12) == greedy_reply(
        model_dir, None, prompt, current["system_prompt"], current["response_prefix"], 12)  # base alone: as the current run

    # how far the adapter moved: the sum over layers of PEFT's own delta weights
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                           checkpoint)
    deltas = [m.get_delta_weight("default") for m in peft_model.modules() if hasattr(m, "get_delta_weight")
              and "default" in getattr(m, "lora_B", {})]
    change = manager.adapter_change(checkpoint)
    assert change["matrices"] == len(deltas) == 2 * 7 and change["moved"] is True
    assert change["nonzero"] == sum(bool(d.abs().max() > 0) for d in deltas) > 0
    assert change["delta_norm"] == pytest.approx(sum(float(d.pow(2).sum()) for d in deltas) ** 0.5, rel=1e-5)
    assert live == pytest.approx(change)  # the checkpoint of the last step holds the live adapter
    assert manager.adapter_change("base") is None

    with pytest.raises(ManagerError, match="not inside the runs folder"):  # core/runs/access.py
        manager.chat(prompt, target="/nonexistent/step-000001")
    with pytest.raises(ManagerError, match="not a checkpoint"):
        manager.chat(prompt, target=str(manager.runs_dir / trained / "checkpoints" / "step-000099"))
    with pytest.raises(ManagerError, match="prompt"):
        manager.chat("   ")


def test_an_adapter_that_never_moved_is_the_base(manager):
    """Rewards the tiny model never earns: no spread, no gradient; every LoRA B matrix stays exactly
    zero, the checkpoint answers as the base does, and adapter_change says why."""
    cfg = tiny_config(manager, max_steps=2, max_completion_length=4)
    cfg.rewards.names, cfg.rewards.weights = ["correctness"], []
    name = manager.start(cfg)
    assert manager.wait(timeout=120) == "finished"
    assert set(manager.metrics(name)["reward"]) == {0.0}
    checkpoint = manager.checkpoints(name)[-1]
    assert manager.adapter_change(checkpoint) == {"matrices": 14, "nonzero": 0, "delta_norm": 0.0, "largest_b": 0.0,
                                                  "moved": False}
    assert manager.adapter_change("current") == manager.adapter_change(checkpoint)
    prompt = "What is 2 + 3?"
    assert manager.chat(prompt, target=checkpoint, max_tokens=8) == manager.chat(
        prompt, target="base", asked_as=checkpoint, max_tokens=8)


def test_resume_keeps_the_runs_rewards_unless_changed(manager):
    """Resume with the rewards on screen: the same choice (in another order, weights spelled out)
    keeps the run's own; another replaces them from then on, in the run's config too."""
    from core.config import Config

    cfg = tiny_config(manager, max_steps=8)
    cfg.rewards.names, cfg.rewards.weights = ["xml_tag_count", "correctness"], [0.7, 1.0]
    cfg.rewards.custom_code = LONGER
    name = manager.start(cfg)

    def pause_after_a_step() -> int:
        step = manager.status()["step"]
        wait_for(lambda: manager.status()["step"] > step)
        manager.pause()
        paused = wait_for(lambda: (st := manager.status())["state"] == "paused" and st)["step"]
        # "paused" is said once the loop holds: the step in flight has ended, its line written
        assert manager.metrics(name)["step"].max() == paused
        return paused

    pause_after_a_step()
    same = RewardsConfig(names=["correctness", "xml_tag_count"], weights=[1.0, 0.7], custom_code=LONGER + "\n\n")
    s = manager.resume(rewards=same)
    assert s["rewards_changed"] is False and s["state"] == "running"
    assert manager.run_config().rewards == cfg.rewards
    paused_at = pause_after_a_step()
    changed = RewardsConfig(names=["format_soft"], weights=[0.25], custom_code=LONGER)
    s = manager.resume(rewards=changed)
    assert s["rewards_changed"] is True
    assert manager.run_config().rewards == changed
    assert Config.load(manager.runs_dir / name / "config.yaml").rewards == changed
    # the step counter moves before the step's metrics line is written: wait for the line itself
    wait_for(lambda: (manager.metrics(name)["step"] > paused_at).any())
    stopped = manager.stop()
    assert manager.wait(timeout=120) == "stopped" and stopped["step"] < 8
    metrics = manager.metrics(name)
    after = metrics[metrics["step"] > paused_at]
    assert after["rewards/format_soft/mean"].notna().all() and after["rewards/xml_tag_count/mean"].isna().all()
    # a stopped run continues with its own rewards when the screen shows them, or with the screen's
    s = manager.resume(name, rewards=changed)
    assert s["rewards_changed"] is False
    manager.stop()
    assert manager.wait(timeout=120) == "stopped"
    s = manager.resume(name, rewards=RewardsConfig(names=["correctness"], custom_code=LONGER))
    assert s["rewards_changed"] is True and manager.run_config().rewards.names == ["correctness"]
    assert Config.load(manager.runs_dir / name / "config.yaml").rewards.names == ["correctness"]
    assert manager.wait(timeout=120) == "finished"


def test_a_cpu_run_far_past_the_ram_is_refused_before_its_run_folder_and_chat_still_answers(manager, monkeypatch):
    """A walkthrough's 7,000-token answers with checkpointing off planned 4.5x the RAM at micro-batch 1, and
    Start went ahead (the OS ends the whole app past RAM). Past FAR_BEYOND times the RAM the run is refused
    with the plan's advice; below it, only warned of. Nothing is written and the model still answers."""
    from core.memory import ram, words

    cfg = tiny_config(manager, micro_batch_size=1)  # (auto would halve to 1 first)
    before = sorted(p.name for p in manager.runs_dir.iterdir())
    peak = manager.memory_plan(cfg)["peak_gb"] * 2**30
    monkeypatch.setattr(ram, "available_bytes", lambda: int(peak / (words.FAR_BEYOND + 1)))
    with pytest.raises(ManagerError, match=r"This run cannot start on this machine's RAM\. CPU run: about .* It will "
                                           r"not fit: [\d.]+ times the RAM available\..* Or turn on Gradient checkpointing"):
        manager.start(cfg)
    assert manager.status()["state"] == "failed" and sorted(p.name for p in manager.runs_dir.iterdir()) == before
    assert isinstance(manager.chat("2 + 2?", max_tokens=4), str)  # the app and its model still answer
    monkeypatch.setattr(ram, "available_bytes", lambda: int(peak / 2))  # twice the RAM: "may not fit", it runs
    manager.start(tiny_config(manager, micro_batch_size=1, max_steps=1))
    assert manager.wait(timeout=120) == "finished"


def test_fp8_rollout_weights_change_nothing_where_runs_sample_with_hf_generate(manager):
    """run.vllm_weights_dtype is vLLM's, like its other settings (the Train tab hides them where runs
    sample with Hugging Face generate): a run on this CPU with fp8 asked for trains as without it, and
    its note does not claim an fp8 copy."""
    cfg = tiny_config(manager, max_steps=1)
    cfg.run.vllm_weights_dtype = "fp8"
    manager.start(cfg)
    assert manager.wait(timeout=120) == "finished"
    assert "fp8" not in manager.status().get("note", "")


def test_bad_input_is_a_message_not_a_crash(manager, finished_run):
    cfg = tiny_config(manager)
    cfg.data.source = "builtin:no_such_task"
    with pytest.raises(ManagerError, match="data: no built-in task"):
        manager.start(cfg)
    cfg = tiny_config(manager)
    cfg.rewards.names = ["corectness"]
    with pytest.raises(ManagerError, match="unknown reward"):
        manager.start(cfg)
    cfg = tiny_config(manager)
    cfg.algorithm.num_generations = 1
    with pytest.raises(ManagerError, match="num_generations"):
        manager.start(cfg)
    cfg = tiny_config(manager)
    cfg.run.run_name = finished_run
    with pytest.raises(ManagerError, match="exists already"):
        manager.start(cfg)
    assert not manager.is_active()
    with pytest.raises(ManagerError, match="nothing is running"):
        manager.pause()


def test_try_rewards_scores_model_and_reference(manager):
    cfg = tiny_config(manager)
    df = manager.try_rewards(RewardsConfig(names=["format_strict", "correctness"]), cfg.data, n=2, max_tokens=8)
    assert list(df["source"]) == ["model", "reference"] * 2
    assert {"format_strict", "correctness", "total"} <= set(df.columns)
    reference = df[df["source"] == "reference"]
    assert (reference["correctness"] == 1.0).all() and (reference["format_strict"] == 1.0).all()
    assert (reference["total"] == reference["format_strict"] * 0.5 + reference["correctness"]).all()
    bad = RewardsConfig(names=["correctness"], custom_code="def broken(prompts, completions, **kw):\n    return 1/0\n")
    with pytest.raises(ManagerError, match="ZeroDivisionError"):
        manager.try_rewards(bad, cfg.data, n=1, max_tokens=4)
    # TRL passes completion_ids; training does (core/rl/rollouts.py), and so does "Try on samples"
    by_ids = RewardsConfig(names=[], custom_code="def n_ids(prompts, completions, completion_ids, **kw):\n"
                                                  "    return [float(len(i)) for i in completion_ids]\n")
    df = manager.try_rewards(by_ids, cfg.data, n=2, max_tokens=8)
    model, reference = df[df["source"] == "model"], df[df["source"] == "reference"]
    assert ((model["n_ids"] >= 1) & (model["n_ids"] <= 8)).all() and (reference["n_ids"] > 8).all()


def test_reward_error_pauses_then_fixed_rewards_resume(manager):
    cfg = tiny_config(manager, max_steps=2)
    cfg.rewards.custom_code = "def flaky(prompts, completions, **kwargs):\n    raise ValueError('oops')\n"
    name = manager.start(cfg)
    s = wait_for(lambda: (st := manager.status())["state"] == "paused" and st, timeout=120)
    assert "flaky" in s["pause_reason"] and "oops" in s["traceback"]
    manager.update_rewards(RewardsConfig(names=["format_soft", "correctness"]))
    assert manager.wait(timeout=120) == "finished"
    assert len(manager.metrics(name)) == 2


def test_exports(manager, finished_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    checkpoint = manager.checkpoints(finished_run)[-1]
    with zipfile.ZipFile(manager.export_adapter_zip(checkpoint)) as zf:
        names = set(zf.namelist())
    assert {"adapter_model.safetensors", "adapter_config.json", "aha_config.yaml", "README.md"} <= names
    assert "trainer_state.pt" not in names
    with zipfile.ZipFile(manager.export_adapter_zip(checkpoint)) as zf:
        card = zf.read("README.md").decode()
        exported = json.loads(zf.read("adapter_config.json"))
    saved = json.loads((Path(checkpoint) / "adapter_config.json").read_text())
    # the card holds Hub metadata and the run's settings (was PEFT's empty template)
    assert card.startswith("---\nbase_model: ") and "library_name: peft" in card and "| rewards | " in card
    assert exported["r"] == saved["r"] == 8 and exported["base_model_name_or_path"] in card
    # the merged 16-bit model gives the adapter model's outputs (up to bfloat16 rounding)
    merged_dir = manager.merge_and_save(checkpoint, str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    assert next(merged.parameters()).dtype == torch.float32
    cfg = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    base = AutoModelForCausalLM.from_pretrained(manager.default_model.name_or_path, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, checkpoint)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        a, b = adapted(ids).logits, merged(ids).logits
    assert (a - b).abs().max() < 0.05
    # pushing without a network fails with a message that never contains the token
    with pytest.raises(ManagerError) as err:
        manager.push_to_hub(checkpoint, "someone/tiny-aha", "hf_SECRET_TOKEN_123")
    assert "hf_SECRET_TOKEN_123" not in str(err.value) and err.value.__cause__ is None
    with pytest.raises(ManagerError, match="repo id"):
        manager.push_to_hub(checkpoint, "no slash", "hf_x")


def test_memory_estimate_and_model_info(manager):
    m = ModelConfig(lora_r=8, dtype="bfloat16")
    est = estimate_memory(m.lora_r, m.lora_target_modules, m.dtype, hf_config={
        "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 128,
        "num_hidden_layers": 2, "vocab_size": 512, "tie_word_embeddings": True})
    # per layer: q 64x64, k 64x32, v 64x32, o 64x64, gate/up 64x128, down 128x64, two norms of 64
    assert est["params"] == 2 * (4096 + 2048 + 2048 + 4096 + 3 * 8192 + 128) + 512 * 64 + 64
    assert est["adapter_params"] == 2 * 8 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    assert est["weights_gb"] == pytest.approx(est["params"] * 2 / 1024**3)
    manager.load_model()
    info = manager.model_info()
    assert info["loaded"] and info["total_gb"] > info["weights_gb"]
    # from the tiny model's config.json alone: its real parameter count within 1% (the formula
    # leaves out Qwen2's q/k/v biases, 256 of its 99,008)
    path = manager.default_model.name_or_path
    d = manager.default_model
    from_config = estimate_memory(d.lora_r, d.lora_target_modules, "float32",
                                  hf_config=json.loads((Path(path) / "config.json").read_text()))
    assert from_config["params"] == pytest.approx(base_parameter_count(path), rel=0.01)


def base_parameter_count(model_dir) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())


def test_model_info_counts_the_base_models_parameters(manager):
    manager.load_model()
    info = manager.model_info()
    assert info["loaded"] and info["params"] == base_parameter_count(manager.default_model.name_or_path)


def test_uploads_are_checked_and_names_sanitised(manager, tmp_path):
    good = tmp_path / "my data (v2).csv"
    good.write_text("prompt,answer\nWhich is bigger, 9.11 or 9.9?,9.9\n")
    stored = Path(manager.store_upload(str(good)))
    assert stored.parent == manager.runs_dir / "_uploads"
    assert re.fullmatch(r"my_data_v2_-[0-9a-f]{16}\.csv", stored.name), stored.name  # name + content hash
    assert stored.read_text() == good.read_text()
    bad = tmp_path / "../evil.exe"
    (tmp_path.parent / "evil.exe").write_text("x")
    with pytest.raises(ManagerError, match="unsupported file type '.exe'"):
        manager.store_upload(str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ManagerError, match="empty.jsonl is empty"):
        manager.store_upload(str(empty))


@pytest.mark.parametrize("algorithm,extra", [("online_dpo", "dpo/margin"), ("ppo", "ppo/value_loss")])
def test_other_algorithms_run_through_the_manager(manager, algorithm, extra):
    cfg = tiny_config(manager, algorithm=algorithm, max_steps=2)
    # a reward with variance on a random model, so that pairs and advantages exist
    cfg.rewards.custom_code = (
        "def longer(completions, **kwargs):\n"
        "    return [len(c[0]['content']) / 50 for c in completions]\n")
    name = manager.start(cfg)
    assert manager.wait(timeout=180) == "finished"
    metrics = manager.metrics(name)
    assert list(metrics["step"]) == [1, 2]
    for column in ("reward", "loss", "completions/mean_length", "rewards/longer/mean", extra):
        assert column in metrics and metrics[column].notna().all(), column
    assert len(manager.samples(name)) == 4


def test_an_online_dpo_step_without_a_pair_is_named_in_the_status(manager):
    """Every completion scored alike: Online DPO has no pair, its loss is NaN and its plot stops; the
    status names the step that learned nothing (a walkthrough found the page silent about it)."""
    cfg = tiny_config(manager, algorithm="online_dpo", max_steps=2)
    cfg.rewards.custom_code = "def same(completions, **kwargs):\n    return [1.0 for _ in completions]\n"
    name = manager.start(cfg)
    assert manager.wait(timeout=180) == "finished"
    assert list(manager.metrics(name)["dpo/pairs"]) == [0, 0]
    assert name.endswith("-online_dpo") and {r["run"]: r for r in manager.list_runs()}[name]["algorithm"] == "online_dpo"
    assert manager.status()["no_pairs_step"] == 2


def test_memory_plan_in_plain_words(manager, tmp_path):
    """The Train tab's memory plan: on this CPU the RAM a step needs (no GPU figures); with a GPU's
    free memory the planner's summary, and a refusal in words when it does not fit."""
    from core.memory import planner, words

    cfg = tiny_config(manager)
    cpu = manager.memory_plan(cfg)
    assert cpu["device"] == "cpu" and cpu["text"].startswith("CPU run: about") and "of RAM" in cpu["text"]
    assert not re.search(r"GPU|CUDA|vLLM", cpu["text"]) and cpu["fits"] is True and cpu["peak_gb"] > 0
    gpu = manager.memory_plan(cfg, free_bytes=16 * 2**30, total_bytes=16 * 2**30)
    assert gpu["device"] == "gpu" and words.say(gpu["sentences"]) == gpu["text"]
    assert gpu["fits"] is True and "Predicted peak" in gpu["text"] and "of 16.0 GB free" in gpu["text"]
    # the same numbers as the planner's own, from the model's config.json
    c = SimpleNamespace(**json.loads((Path(cfg.model.name_or_path) / "config.json").read_text()))
    a = cfg.algorithm
    p = planner.plan(c, lora_rank=cfg.model.lora_r, lora_targets=cfg.model.lora_target_modules,
                     num_sequences=a.prompts_per_step * a.gradient_accumulation_steps * a.num_generations,
                     prompt_length=a.max_prompt_length, completion_length=a.max_completion_length,
                     micro_batch_size=a.micro_batch_size, checkpointing=cfg.model.gradient_checkpointing,
                     offload=cfg.model.offload_activations, free_bytes=16 * 2**30, engine=gpu["engine"])
    assert abs(gpu["peak_gb"] - p.total_peak / 2**30) < 1e-9
    assert "LoRA rank" not in cpu["text"] + gpu["text"]
    wide = tiny_config(manager)
    wide.model = dataclasses.replace(wide.model, lora_r=c.hidden_size + 1)  # accepted, but said
    for plan in (manager.memory_plan(wide), manager.memory_plan(wide, free_bytes=16 * 2**30)):
        assert f"LoRA rank {c.hidden_size + 1} is above the model's width ({c.hidden_size})" in plan["text"]
    tight = manager.memory_plan(cfg, free_bytes=2**20, total_bytes=2**20)
    assert tight["fits"] is False and "It does not fit" in tight["text"]
    cfg.model = dataclasses.replace(cfg.model, name_or_path=str(Path(manager.runs_dir) / "missing"))
    assert manager.memory_plan(cfg)["text"].startswith("Memory plan: unknown")
    cfg.model = dataclasses.replace(cfg.model, name_or_path=str(tmp_path / "elsewhere"))  # outside: not read
    with pytest.raises(ManagerError, match="outside the folders this app may load models from"):
        manager.memory_plan(cfg)


def test_cpu_memory_plan_is_the_planners_ram(manager, monkeypatch):
    """On a CPU the plan is core.memory.planner.plan_cpu for the model's config, the dtype the CPU loads
    (float32), the micro-batch the trainer will use and the RAM available now."""
    from core.memory import planner, ram

    cfg = tiny_config(manager, micro_batch_size=0)  # auto: 8 on a CPU
    plan = manager.memory_plan(cfg)
    c = SimpleNamespace(**json.loads((Path(cfg.model.name_or_path) / "config.json").read_text()))
    expected = planner.plan_cpu(c, cfg, micro_batch_size=planner.micro_batch_size(cfg), dtype_bytes=4)
    assert plan["micro_batch_size"] == expected.micro_batch_size == 8
    assert plan["peak_gb"] == pytest.approx(expected.total_peak / 2**30)
    assert "(float32)" in plan["text"] and "every sequence at its limit of 144 tokens" in plan["text"]
    available = float(re.search(r"\(([\d.]+) GB available\)", plan["text"]).group(1))
    assert available == pytest.approx(ram.available_bytes() / 2**30, abs=0.5)
    # the model tab's estimate says how much RAM there is too
    assert manager.model_info()["available_gb"] == pytest.approx(available, abs=0.5)
    # auto halves where the step would not fit the RAM available (a walkthrough's 7,000-token answers
    # planned 319 GB at 8 on 16.9 GB): the plan the Train tab shows and the run is handed says which
    at = {m: planner.plan_cpu(c, cfg, micro_batch_size=m, dtype_bytes=4).total_peak for m in (8, 4, 2)}
    monkeypatch.setattr(ram, "available_bytes", lambda: (at[4] + at[2]) // 2)
    short = manager.memory_plan(cfg)
    assert short["micro_batch_size"] == 2 and short["fits"] is True and "(micro-batch 2," in short["text"]
    cfg.algorithm.micro_batch_size = 8  # one the user set is theirs: said, not changed
    assert manager.memory_plan(cfg)["micro_batch_size"] == 8 and manager.memory_plan(cfg)["fits"] is False


def test_try_rewards_reports_its_stages(manager):
    """Try on samples says what it does before each stage (the page shows it as progress)."""
    cfg = tiny_config(manager)
    manager.load_model()  # loaded already: no "after loading the model"
    stages = []
    manager.try_rewards(RewardsConfig(names=["format_soft", "correctness"]), cfg.data, n=2, max_tokens=8,
                        progress=lambda fraction, stage, facts: stages.append((fraction, stage, facts)))
    assert [s for _, s, _ in stages] == ["data", "sampling", "scoring"]
    assert [f for f, _, _ in stages] == sorted(f for f, _, _ in stages) and stages[0][0] == 0.0
    assert stages[1][2] == {"completions": 2, "max_tokens": 8, "load_model": False, "after_step": False}
    assert stages[2][2] == {"completions": 4, "rewards": 2}


def test_a_run_with_nothing_to_learn_from_says_so(manager):
    """A reward the tiny random model never earns (correctness alone): every group scores alike,
    step after step; the status says so (shown on the Train tab) instead of a silent flat curve."""
    from core.rl.rollouts import NO_SIGNAL_STEPS

    cfg = tiny_config(manager, max_steps=NO_SIGNAL_STEPS + 1, max_completion_length=4)
    cfg.rewards.names, cfg.rewards.weights = ["correctness"], []
    manager.start(cfg)
    assert manager.wait(timeout=300) == "finished"
    s = manager.status()
    w = s["signal_warning"]
    assert w.startswith("Nothing to learn from") and s["reward"] == 0.0
    # it names what is missing, from the run's own figures: the reward that never paid, the adapter
    # that never moved, and partial credit that is not selected yet (never one that already is)
    assert "correctness paid 0 to every completion" in w
    assert "the adapter is still exactly zero" in w
    assert "format_soft or xml_tag_count" in w
    from ui.status_text import status_line

    assert "Nothing to learn from" in status_line(s)


def test_the_nothing_to_learn_warning_never_advises_what_is_already_selected():
    """Format rewards that never matched, with format_soft already on and no prefix: the warning
    says the format never matched and names the prefix, and does not advise format_soft."""
    from core.rl.rollouts import NO_SIGNAL_STEPS, no_signal_warning

    flat = [{"frac_reward_zero_std": 1.0, "rewards/format_soft/mean": 0.0, "rewards/correctness/mean": 0.0}]
    w = no_signal_warning(flat * NO_SIGNAL_STEPS, reward_names=["format_soft", "correctness"], adapter_zero=False)
    advice = w.split("To fix:")[1]
    assert "format never matched" in advice and "prefix" in advice and "format_soft" not in advice
    assert "xml_tag_count" in advice and "exactly zero" not in w
    # with a prefix already set, it does not ask for one
    w2 = no_signal_warning(flat * NO_SIGNAL_STEPS, reward_names=["format_soft", "correctness"],
                           response_prefix="<think>")
    assert "prefix" not in w2.split("To fix:")[1]
    # one step with a group of differing rewards among the last ten: no warning
    assert no_signal_warning(flat * (NO_SIGNAL_STEPS - 1) + [{"frac_reward_zero_std": 0.5}]) == ""


def test_a_run_hands_its_cached_memory_back_when_it_ends(manager, monkeypatch):
    """The run's activations stay in torch's cache after it (H100, 2026-12-05: the app held 36.8 GiB
    after a micro-batch-64 run of the 135M model, 7.5 before it): the manager empties it once the
    run has ended, before it says the run's final state."""
    seen = []
    trainer = lambda: manager._trainer if manager._state == "running" else None  # noqa: E731
    monkeypatch.setattr(manager, "_free_memory",
                        lambda: seen.append((manager._state, getattr(trainer(), "step", None))))
    manager.start(tiny_config(manager, max_steps=2))
    assert manager.wait(timeout=120) == "finished"
    # loading may free memory before the run; after the start, once: after the last step, before
    # the state is final
    assert [s for s in seen if s[1] is not None] == [("running", 2)] and seen[-1] == ("running", 2)


def test_the_status_warns_when_the_model_gives_one_answer_to_every_question():
    """The run's signal history carries completions/same_answer_share (core/rl/rollouts.py); three
    steps in a row at >= 75% put the warning where a flat curve's is shown (status signal_warning)."""
    from types import SimpleNamespace

    from core.app.status import RunStatus
    from core.config import cpu_defaults

    def warning(shares):
        signal = [{"frac_reward_zero_std": 0.5, "rewards/correctness/mean": 0.0,
                   "completions/same_answer_share": v} for v in shares]
        fake = SimpleNamespace(_cfg=cpu_defaults(), _trainer=None, _signal=signal)
        return RunStatus._no_signal_warning(fake)

    assert warning([0.9, 0.875, 1.0]).startswith("The model gives one answer to most questions (100%")
    assert warning([0.9, 0.5, 1.0]) == "" and warning([float("nan")] * 3) == "" and warning([0.9, 0.9]) == ""


def test_the_preview_shows_the_questions_a_curriculum_starts_on(manager):
    """Data tab Preview with a curriculum: the easiest questions (the ones step 1 asks), and the
    notes say when the others join; without it, the first training rows as before."""
    from core.config import DataConfig

    d = DataConfig(source="builtin:long_chain_arithmetic", train_size=300, eval_size=20)
    plain = manager.preview_data(d)["table"]["question"].tolist()
    d.curriculum_column, d.curriculum_steps = "steps", 30
    got = manager.preview_data(d)
    questions = got["table"]["question"].tolist()
    assert len(questions) == 5 and questions != plain
    import re

    assert all(len(re.findall(r" [-+*] ", q)) == 2 for q in questions), questions  # "4 * 3 + 5": 2 steps
    assert any("then 3 at step 10, 4 at step 20, 5 at step 30" in n for n in got["notes"]), got["notes"]


@pytest.mark.slow
def test_a_run_with_compiled_layers_says_its_first_step_waits_and_finishes(manager, caplog):
    """model.compile_layers through the app's manager: the status says why the first step takes
    long, and the run finishes on the CPU (a C compiler is there)."""
    import logging

    caplog.set_level(logging.WARNING, logger="torch")  # torch.compile's trace logs, kept out of the report
    cfg = tiny_config(manager, max_steps=2)
    cfg.model.compile_layers = True
    manager.start(cfg)
    assert "the first step waits for it" in manager.status()["note"]
    wait_for(lambda: manager.status()["state"] in ("finished", "failed"), timeout=300)
    s = manager.status()
    assert s["state"] == "finished" and s["step"] == 2, s.get("error")
    layers = manager._trainer.model.get_base_model().model.layers
    assert all(layer._compiled_call_impl is not None for layer in layers)


def test_a_run_waiting_behind_an_answer_says_so_and_stop_calls_it_off(manager):
    """A Start behind a long chat answer: the status says the run waits for it (not "queued behind the
    current step"), and a Stop then ends it before its first step, with no run folder written."""
    import concurrent.futures
    import threading

    release = threading.Event()
    answering = manager.worker.submit(lambda: release.wait(60))  # the chat answer being written
    folders = set(manager.runs_dir.iterdir())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = pool.submit(manager.start, tiny_config(manager))
        s = wait_for(lambda: (st := manager.status())["state"] == "loading" and st["waiting_for"] and st)
        assert (s["waiting_for"], s["queued"], s["before_first_step"]) == (1, 0, True)
        behind = manager.worker.submit(lambda: 7)  # another answer, queued behind the run's job
        assert (manager.status()["waiting_for"], manager.status()["queued"]) == (1, 1)
        s = manager.stop()
        assert (s["state"], s["before_first_step"]) == ("stopping", True)
        release.set()
        with pytest.raises(ManagerError, match="Stopped before the first step, as asked: nothing was trained"):
            started.result(timeout=60)
    assert answering.result(timeout=5) is True and behind.result(timeout=60) == 7
    s = manager.status()
    assert (s["state"], s["run_name"], s["error"], s["queued"], s["waiting_for"]) == ("stopped", None, "", 0, 0)
    assert "no run folder was written" in s["note"]
    assert set(manager.runs_dir.iterdir()) == folders
    assert not manager.is_active()


def test_a_stop_just_after_the_trainer_is_built_leaves_no_run_folder(manager, monkeypatch):
    """Stop pressed after the new run's trainer (and its folder) exists but before its first step
    ends: nothing is trained, so the folder goes too and no Resume is offered for a run with no step."""
    import core.rl.algorithms as algorithms

    real = algorithms.make_trainer

    def built_then_stopped(*a, **kw):
        trainer = real(*a, **kw)
        assert trainer.run.path.is_dir()  # the folder exists from here
        manager.stop()
        return trainer

    monkeypatch.setattr(algorithms, "make_trainer", built_then_stopped)
    folders = set(manager.runs_dir.iterdir())
    manager.start(tiny_config(manager))
    wait_for(lambda: manager.status()["state"] in ("stopped", "finished", "failed"), timeout=120)
    s = manager.status()
    assert (s["state"], s["run_name"], s["step"], s["error"], s["elapsed"]) == ("stopped", None, 0, "", 0.0)
    assert s["note"].endswith("nothing was trained and its new run folder was removed.")
    assert set(manager.runs_dir.iterdir()) == folders
    assert manager.current_adapter() is None
    # a run name that lands on a folder that was there before (no config.yaml: not a run's): the folder stays
    mine = manager.runs_dir / "my-notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    cfg = tiny_config(manager)
    cfg.run.run_name = "my-notes"
    manager.start(cfg)
    wait_for(lambda: manager.status()["state"] in ("stopped", "finished", "failed"), timeout=120)
    assert manager.status()["state"] == "stopped" and (mine / "keep.txt").read_text() == "mine"


def test_a_called_off_resume_keeps_the_runs_elapsed(manager):
    """A Resume called off before its first step (Stop while it waits behind an answer) names the
    run again with the training time its steps took, not the seconds spent waiting for the call-off."""
    import concurrent.futures
    import threading

    name = manager.start(tiny_config(manager, max_steps=6))
    wait_for(lambda: manager.status()["step"] >= 1)
    manager.stop()
    assert manager.wait(timeout=120) == "stopped"
    step, shown = manager.status()["step"], manager.status()["elapsed"]
    assert shown >= float(manager.metrics(name)["step_time"].iloc[:step].sum()) > 0
    release = threading.Event()
    answering = manager.worker.submit(lambda: release.wait(60))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        resumed = pool.submit(manager.resume, name)
        wait_for(lambda: manager.status()["state"] == "loading")
        time.sleep(1.5)  # the wait: no training time
        loading = manager.status()  # loading: the run named, at the step and the elapsed it left off at
        assert (loading["run_name"], loading["step"]) == (name, step)
        assert loading["elapsed"] == pytest.approx(shown, abs=1e-3)
        manager.stop()
        release.set()
        with pytest.raises(ManagerError, match="Stopped before the first step"):
            resumed.result(timeout=60)
    assert answering.result(timeout=5) is True
    s = manager.status()
    assert (s["state"], s["run_name"], s["step"]) == ("stopped", name, step)
    assert s["elapsed"] == pytest.approx(shown, abs=1e-3)  # the run's status file's, as shown at its stop
