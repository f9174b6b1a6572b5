"""The GRPO loop on a tiny random model, on the CPU: it learns, it saves, it resumes exactly."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from core.config import Config
from core.data import TaskData
from core.rl.trainer import GRPOTrainer


class TargetTokenReward:
    """Pays for one target token: the fraction of completion tokens that are `target_id`.

    Uses TRL's `completion_ids` kwarg, so it is a plain TRL-signature reward underneath.
    """

    names = ["target_token"]

    def __init__(self, target_id: int):
        self.target_id = target_id

    def fn(self, prompts, completions, completion_ids, **kwargs):
        return [sum(t == self.target_id for t in ids) / max(1, len(ids)) for ids in completion_ids]

    def __call__(self, prompts, completions, columns):
        from core.rewards.registry import RewardResult

        values = self.fn(prompts, completions, **columns)
        return RewardResult(total=list(values), per_reward={"target_token": list(values)})


def tiny_config(tmp_path, **algo) -> Config:
    cfg = Config()
    cfg.model.dtype = "float32"
    cfg.model.lora_r = 8
    cfg.model.lora_alpha = 16
    cfg.data.system_prompt, cfg.data.response_prefix = "", ""  # the calibrations below predate the <think> default
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.micro_batch_size = 8, 4, 16
    a.max_completion_length, a.max_prompt_length = 12, 32
    a.learning_rate, a.lr_scheduler, a.seed = 2e-2, "constant", 1
    for k, v in algo.items():
        setattr(a, k, v)
    cfg.run.output_dir = str(tmp_path / "runs")
    cfg.run.save_steps = 3
    cfg.run.log_samples = 2
    cfg.run.engine = "hf"
    return cfg


def tiny_task(n=64) -> TaskData:
    rows = [{"question": f"say something {i}", "answer": str(i)} for i in range(n)]
    return TaskData(train=rows, eval=rows[:8], source="test", columns=["question", "answer"])


def make_trainer(model_dir, cfg, target_id=None, run_dir=None):
    from core.models.loading import add_lora, load_base_model, load_tokenizer

    torch.manual_seed(cfg.algorithm.seed)
    cfg.model.name_or_path = str(model_dir)
    tok = load_tokenizer(str(model_dir))
    model = add_lora(load_base_model(cfg.model, "cpu"), cfg.model)
    if target_id is None:
        target_id = tok.convert_tokens_to_ids("9")
    return GRPOTrainer(cfg, model=model, tokenizer=tok, task=tiny_task(), reward_set=TargetTokenReward(target_id),
                       device="cpu", run_dir=run_dir)


@pytest.fixture(scope="module")
def peaked_model_dir(tmp_path_factory):
    """A tiny random model with larger initial weights: its next-token distribution is peaked
    enough (top token ~3%) that a one-token reward has variance within groups from step 1."""
    from core.models.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("peaked") / "model", initializer_range=0.4)


def test_learns_to_emit_the_target_token(peaked_model_dir, tmp_path):
    from core.engines.base import SamplingSettings

    cfg = tiny_config(tmp_path, max_steps=40, learning_rate=1e-2)
    cfg.run.save_steps = 100
    # the target: the token the untrained model emits most often (a few % of tokens)
    probe = make_trainer(peaked_model_dir, cfg)
    ids = [probe.prompt_ids(r) for r in probe.task.train[:8]]
    counts = torch.zeros(len(probe.tokenizer))
    for g in probe.engine.generate(ids, SamplingSettings(n=8, max_tokens=12, seed=0)):
        for c in g:
            counts += torch.bincount(torch.tensor(c.token_ids), minlength=len(counts))[: len(counts)]
    target = int(counts.argmax())
    assert counts[target] / counts.sum() < 0.1  # the model does not already prefer it
    trainer = make_trainer(peaked_model_dir, cfg, target_id=target)
    assert trainer.train() == "finished"
    rewards = [m["reward"] for m in trainer.run.read_metrics()]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(f"target token {target}: mean reward first 5 steps {first:.4f}, last 5 steps {last:.4f}")
    assert len(rewards) == 40
    assert last >= 3 * first and last > 0.2, (first, last)


def test_a_cpu_trainer_picks_its_auto_micro_batch_by_the_ram_and_refuses_far_past_it(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):
    """The CLI on a CPU plans an auto micro-batch as the app does: 8, halved while a step would not fit the
    RAM available, and a step needing more than FAR_BEYOND times that RAM even at 1 is refused before the
    run's folder exists (past RAM the OS ends the process)."""
    from types import SimpleNamespace

    from core.memory import planner, ram, words
    from core.models.loading import pick_dtype

    cfg = tiny_config(tmp_path)
    cfg.algorithm.micro_batch_size, cfg.algorithm.max_completion_length = 0, 512
    c = SimpleNamespace(**json.loads((tiny_model_dir / "config.json").read_text()))
    size = pick_dtype(cfg.model.dtype, "cpu").itemsize  # the dtype this CPU loads the weights in
    need = {m: planner.plan_cpu(c, cfg, micro_batch_size=m, dtype_bytes=size, weights_loaded=True,
                                available_bytes=1).times_available
            for m in (8, 4, 2, 1)}  # bytes beyond the loaded weights, for each micro-batch
    assert need[8] > need[4] > need[2] > need[1]
    assert make_trainer(tiny_model_dir, cfg).micro_batch_size == 8  # this machine's RAM: plenty
    monkeypatch.setattr(ram, "available_bytes", lambda: int((need[4] + need[2]) / 2))
    assert make_trainer(tiny_model_dir, cfg).micro_batch_size == 2
    monkeypatch.setattr(ram, "available_bytes", lambda: int(need[1] / (words.FAR_BEYOND + 1)))
    runs = tmp_path / "runs"
    before = sorted(runs.iterdir()) if runs.exists() else []
    with pytest.raises(planner.DoesNotFit, match="cannot start on this machine's RAM.*It will not fit"):
        make_trainer(tiny_model_dir, cfg)
    assert (sorted(runs.iterdir()) if runs.exists() else []) == before


def test_a_stop_ends_a_long_cpu_rollout_at_the_next_token_and_the_run_stops_cleanly(tiny_model_dir, tmp_path):
    """A walkthrough's CPU run of 7,000-token answers: Stop said "stopping" and the run never ended, HF
    generate only looking at it between batches. Now the rollout ends at the next token and the run ends
    "stopped" with nothing half-trained."""
    import threading

    from core.engines.base import RolloutStopped, SamplingSettings

    cfg = tiny_config(tmp_path)
    cfg.algorithm.max_completion_length = 4000
    trainer = make_trainer(tiny_model_dir, cfg)
    asked = []

    def should_stop():  # Stop pressed once the rollout has sampled a few tokens
        asked.append(1)
        return len(asked) > 5

    with pytest.raises(RolloutStopped, match="stopped inside the rollout"):
        trainer.engine.generate([[1, 2, 3]], SamplingSettings(n=4, max_tokens=4000, ignore_eos=True),
                                should_stop=should_stop)
    assert len(asked) < 12  # asked at each token, and it ended there: not 4,000 tokens later
    # through the trainer: Stop from another thread during the first step's rollout
    timer = threading.Timer(1.0, trainer.control.stop)
    timer.start()
    started = time.perf_counter()
    assert trainer.train() == "stopped" and trainer.step == 0
    assert time.perf_counter() - started < 30 and trainer.run.read_status()["state"] == "stopped"


def test_metrics_samples_and_checkpoint_files(tiny_model_dir, tmp_path):
    cfg = tiny_config(tmp_path, max_steps=3, beta=0.04, loss_type="grpo")
    trainer = make_trainer(tiny_model_dir, cfg)
    trainer.train()
    m = trainer.run.read_metrics()
    assert [r["step"] for r in m] == [1, 2, 3]
    for key in ("reward", "reward_std", "rewards/target_token/mean", "frac_reward_zero_std",
                "completions/mean_length", "completions/clipped_ratio", "loss", "kl", "entropy", "grad_norm",
                "learning_rate", "tokens_per_second", "step_time", "peak_memory_gb"):
        assert key in m[-1], key
    assert m[-1]["kl"] > 0  # beta > 0: the adapter has moved away from the reference
    # the run's training time, in its status file (a Resume goes on from it): at least its steps' time
    assert trainer.run.elapsed_so_far() == trainer.run.read_status()["elapsed"] >= sum(r["step_time"] for r in m) > 0
    assert 0 < m[-1]["entropy"] < torch.log(torch.tensor(float(len(trainer.tokenizer)))).item() + 1e-3
    assert m[0]["completions/max_length"] <= 12
    share = [r["completions/same_answer_share"] for r in m]  # nan: the step's questions share one answer
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in share), share
    samples = trainer.run.read_samples()
    assert len(samples) == 6 and {"question", "completion", "reward", "rewards", "advantage"} <= set(samples[0])
    ck = trainer.run.latest_checkpoint()
    assert ck.name == "step-000003"
    assert (ck / "adapter_model.safetensors").exists() and (ck / "trainer_state.pt").exists()
    assert json.loads((ck / "state.json").read_text())["step"] == 3
    assert trainer.run.read_status()["state"] == "finished"


def test_saved_adapter_reloads_with_plain_peft(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.rl.logprobs import completion_logprobs, pad_rollouts

    cfg = tiny_config(tmp_path, max_steps=3)
    trainer = make_trainer(tiny_model_dir, cfg)
    trainer.train()
    ck = trainer.run.latest_checkpoint()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                         str(ck))
    prompts = [trainer.prompt_ids(r) for r in trainer.task.train[:3]]
    comps = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    ids, attn, comp, mask = pad_rollouts(prompts, comps, trainer.tokenizer.pad_token_id, "cpu")
    trainer.model.eval()
    reloaded.eval()
    with torch.no_grad():
        a = completion_logprobs(trainer.model, ids, attn, comp, mask, 1.0)
        b = completion_logprobs(reloaded, ids, attn, comp, mask, 1.0)
        with trainer.model.disable_adapter():
            base = completion_logprobs(trainer.model, ids, attn, comp, mask, 1.0)
    assert torch.allclose(a, b, atol=1e-6)
    assert (a - base).abs().max() > 1e-3  # the adapter really changed something


def test_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    keys = ("reward", "loss", "grad_norm", "completions/mean_length", "entropy", "learning_rate")
    # uninterrupted: 10 steps
    full = make_trainer(tiny_model_dir, tiny_config(tmp_path / "a", max_steps=10))
    full.train()
    ref = full.run.read_metrics()
    # interrupted: stop after step 6, then a new process-like trainer resumes from the checkpoint
    cfg = tiny_config(tmp_path / "b", max_steps=10)
    first = make_trainer(tiny_model_dir, cfg)

    def stop_at_6(result):
        if result.step == 6:
            first.control.stop()

    first.on_step = stop_at_6
    assert first.train() == "stopped"
    assert first.run.latest_checkpoint().name == "step-000006"
    second = make_trainer(tiny_model_dir, tiny_config(tmp_path / "b", max_steps=10), run_dir=first.run)
    assert second.resume() and second.step == 6
    assert second.train() == "finished"
    got = second.run.read_metrics()
    assert [r["step"] for r in got] == list(range(1, 11))  # continuous, nothing duplicated
    for r_ref, r_got in zip(ref[6:], got[6:]):
        for k in keys:
            assert r_got[k] == pytest.approx(r_ref[k], rel=1e-4, abs=1e-6), (r_got["step"], k)


def test_gradient_accumulation_is_one_step_over_k_times_the_prompts(tiny_model_dir, tmp_path):
    """algorithm.gradient_accumulation_steps = k, as its help says: each optimizer step samples and
    scores k batches of prompts_per_step prompts and sums all their gradients before one AdamW
    step, so it is the same update as one step over k x prompts_per_step prompts."""
    accumulated = make_trainer(tiny_model_dir, tiny_config(tmp_path / "k2", prompts_per_step=2,
                                                           gradient_accumulation_steps=2, micro_batch_size=4))
    wide = make_trainer(tiny_model_dir, tiny_config(tmp_path / "p4", prompts_per_step=4, micro_batch_size=4))
    start = [p.detach().clone() for p in accumulated.params]
    for step in range(2):
        assert accumulated.prompt_rows(step) == wide.prompt_rows(step)  # the same 2 x 2 = 4 prompts
        assert len(accumulated.prompt_rows(step)) == 4
        a, w = accumulated.train_step(), wide.train_step()
        assert a.metrics["reward"] == w.metrics["reward"] and a.metrics["grad_norm"] > 0
        assert a.metrics["loss"] == pytest.approx(w.metrics["loss"], rel=1e-6, abs=1e-9)
        assert a.metrics["grad_norm"] == pytest.approx(w.metrics["grad_norm"], rel=1e-6)
    assert all(accumulated.optimizer.state[p]["step"] == 2 for p in accumulated.params)  # one AdamW step a step
    for p, q in zip(accumulated.params, wide.params):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-8)
    assert any(not torch.equal(p, p0) for p, p0 in zip(accumulated.params, start))  # the adapter did move


def test_micro_batches_drop_padding_columns_and_keep_the_logprobs(tiny_model_dir):
    """A micro-batch runs only the columns its own rows need (Rollouts.slice): the same log-probs
    as on the batch padded to its longest row, for a fraction of the columns."""
    from core.models.loading import add_lora, load_base_model, load_tokenizer
    from core.rl.logprobs import Rollouts, completion_logprobs, pad_rollouts

    cfg = _model_cfg(tiny_model_dir)
    model = add_lora(load_base_model(cfg, "cpu"), cfg).eval()
    tok = load_tokenizer(str(tiny_model_dir))
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16], [17]]
    comps = [[20, 21], [22, 23, 24, 25, 26, 27, 28], [29], [30, 31, 32]]
    ids, attn, comp, mask = pad_rollouts(prompts, comps, tok.pad_token_id, "cpu")
    batch = Rollouts(ids, attn, comp, mask, torch.zeros(4))
    with torch.no_grad():
        full = completion_logprobs(model, ids, attn, comp, mask, 1.0)  # (4, 7)
        for i, (k_cols, t_cols) in enumerate([(9, 2), (9, 7), (4, 1), (4, 3)]):  # (input, completion) columns
            mb = batch.slice(i, i + 1)
            assert mb.input_ids.shape == (1, k_cols) and mb.completion_ids.shape == (1, t_cols)
            lp = completion_logprobs(model, mb.input_ids, mb.attention_mask, mb.completion_ids, mb.completion_mask, 1.0)
            assert torch.allclose(lp, full[i:i + 1, :t_cols], atol=1e-5)
        pair = batch.slice(2, 4)  # rows 2-3: prompts of 3 and 1 tokens, completions of 1 and 3
        assert pair.input_ids.shape == (2, 3 + 3) and pair.completion_ids.shape == (2, 3)


def _model_cfg(model_dir):
    from core.config import ModelConfig

    return ModelConfig(name_or_path=str(model_dir), dtype="float32", lora_r=8, lora_alpha=16)


def test_a_curriculum_asks_the_easiest_rows_first(tiny_model_dir, tmp_path):
    """data.curriculum_column: the trainer's steps draw from the rows with the smallest value first,
    every row from data.curriculum_steps on (the order itself is tests/test_data.py's)."""
    cfg = tiny_config(tmp_path, prompts_per_step=4)
    cfg.data.curriculum_column, cfg.data.curriculum_steps = " level ", 4  # spaces, as typed in a box
    trainer = make_trainer(tiny_model_dir, cfg)
    for r in trainer.task.train:
        r["level"] = int(r["answer"]) % 3  # three levels: 0, 1, 2, joining at steps 1, 2 and 4
    levels = [{r["level"] for r in trainer.prompt_rows(s - 1)} for s in range(1, 9)]
    assert levels[0] == {0}
    assert all(lv <= {0, 1} for lv in levels[1:3]) and 1 in set().union(*levels[1:3])
    assert set().union(*levels[3:]) == {0, 1, 2}
    assert trainer.train_step().metrics["reward"] >= 0  # a step runs on the curriculum's rows


@pytest.mark.slow
@pytest.mark.parametrize("offload", [False, True], ids=["checkpointing", "offload"])
def test_compiled_layers_train_as_the_eager_ones(peaked_model_dir, tmp_path, offload, caplog):
    """model.compile_layers: the decoder layers run torch.compile'd graphs in the training passes
    (sampling stays eager) and a step's loss, gradient and update match the eager run's within
    float32 rounding; with activation offload (its bookkeeping simulated on the CPU) as well."""
    import logging

    from core.models.offload import offloaded_activations

    caplog.set_level(logging.WARNING, logger="torch")  # torch.compile's trace logs, kept out of the report
    from core.engines.base import SamplingSettings

    probe = make_trainer(peaked_model_dir, tiny_config(tmp_path / "probe"))  # a target some completions hit
    counts = torch.zeros(len(probe.tokenizer))
    for g in probe.engine.generate([probe.prompt_ids(r) for r in probe.task.train[:4]], SamplingSettings(n=8, max_tokens=12, seed=0)):
        for c in g:
            counts += torch.bincount(torch.tensor(c.token_ids), minlength=len(counts))[: len(counts)]
    target = int(counts.argmax())
    results = []
    for compiled in (False, True):
        cfg = tiny_config(tmp_path / f"c{compiled}", prompts_per_step=2)
        cfg.model.gradient_checkpointing, cfg.model.compile_layers = True, compiled
        trainer = make_trainer(peaked_model_dir, cfg, target_id=target)
        layers = trainer.model.get_base_model().model.layers
        assert all((layer._compiled_call_impl is not None) == compiled for layer in layers)
        if offload:
            trainer._activation_context = lambda t=trainer: offloaded_activations(t.model, min_bytes=0, simulate=True)
        m = trainer.train_step().metrics
        results.append((m, [p.detach().clone() for p in trainer.params]))
        if compiled:  # the app's next run builds its adapter on the same base: off again when it asks
            import dataclasses

            from core.models.loading import add_lora

            again = add_lora(trainer.model.unload(), dataclasses.replace(cfg.model, compile_layers=False))
            assert all(layer._compiled_call_impl is None for layer in again.get_base_model().model.layers)
    (eager, p_eager), (comp, p_comp) = results
    assert eager["reward"] == comp["reward"]  # the same rollouts: sampling is eager in both
    assert comp["loss"] == pytest.approx(eager["loss"], rel=1e-4, abs=1e-6)
    assert comp["grad_norm"] == pytest.approx(eager["grad_norm"], rel=1e-3) and eager["grad_norm"] > 0
    # the whole update alike (element by element AdamW's first step, lr x g / |g|, magnifies the
    # rounding of gradients near 0)
    diff = torch.cat([(b - a).flatten() for a, b in zip(p_eager, p_comp)]).norm()
    size = torch.cat([a.flatten() for a in p_eager]).norm()
    assert diff < 1e-3 * size


def test_out_of_memory_in_the_update_is_never_redone(tiny_model_dir, tmp_path):
    """AdamW updates in place: an OOM inside `optimizer.step` must not reach the pass's retry (which
    halves the micro-batch and runs the pass and the update again); the update counts as skipped."""
    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path))
    mbs, calls = trainer.micro_batch_size, []

    def step_out_of_memory(*args, **kwargs):
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    trainer.optimizer.step = step_out_of_memory
    before = [p.detach().clone() for p in trainer.params]
    with pytest.warns(UserWarning, match="optimizer update"):
        m = trainer.train_step().metrics
    assert calls == [1] and trainer.micro_batch_size == mbs  # one update tried, the pass not redone
    assert m["skipped_steps"] == 1 and trainer.step == 1
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.params))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_short_steps_run_fewer_larger_passes_with_the_same_update(tiny_model_dir, tmp_path, loss_type):
    """GRPOTrainer.passes: where a step's sequences are short, whole multiples of the micro-batch run
    as one pass (every pass the same size, each within micro_batch_size x the full sequence length in
    padded tokens: the memory the plan counted); the loss, the gradient and the update are those of the
    configured micro-batches. bnpo, normalised per micro-batch, keeps them."""
    def trainer(name, mbs, **kw):
        cfg = tiny_config(tmp_path / name, prompts_per_step=4, micro_batch_size=mbs, loss_type=loss_type,
                          max_completion_length=12, max_prompt_length=128, **kw)
        return make_trainer(tiny_model_dir, cfg)

    merged, split = trainer("merged", 2), trainer("split", 2)
    split.passes = lambda batch: [(i, min(i + 2, batch.input_ids.size(0))) for i in range(0, batch.input_ids.size(0), 2)]
    seen = []
    real = merged.passes

    def recording(batch):
        out = real(batch)
        seen.append((out, [batch.width(i, j) for i, j in out]))
        return out

    merged.passes = recording
    grads = {}
    for name, t in (("merged", merged), ("split", split)):  # the gradient the update gets, before AdamW
        step = t.optimizer_step

        def keep(step=step, name=name, t=t):
            grads[name] = [p.grad.detach().clone() for p in t.params]
            return step()

        t.optimizer_step = keep
    m, s = merged.train_step(), split.train_step()  # one step: AdamW's first update is ~lr x sign(gradient),
    assert m.metrics["train/passes"] == len(seen[-1][0]) < s.metrics["train/passes"] == 16  # 32 rows in pairs
    assert m.metrics["reward"] == s.metrics["reward"]  # so rounding in a ~0 gradient would part the runs after
    assert m.metrics["loss"] == pytest.approx(s.metrics["loss"], rel=1e-5, abs=1e-6)
    assert m.metrics["grad_norm"] == pytest.approx(s.metrics["grad_norm"], rel=1e-5) and m.metrics["grad_norm"] > 0
    for g, h in zip(grads["merged"], grads["split"]):
        assert torch.allclose(g, h, rtol=1e-4, atol=1e-6 * float(h.abs().max()) + 1e-12)
    budget = 2 * (128 + 12)
    for out, widths in seen:  # 32 sequences of ~30 tokens: passes of 4 or more, all the same size
        sizes = {j - i for i, j in out}
        assert len(sizes) == 1 and sizes.pop() >= 4
        assert all((j - i) * w <= budget for (i, j), w in zip(out, widths))
    from core.rl.logprobs import Rollouts

    def rows(width):  # 8 sequences, every column real, the last 12 the completion
        ids = torch.ones(8, width, dtype=torch.long)
        return Rollouts(ids, torch.ones_like(ids), ids[:, -12:], torch.ones(8, 12, dtype=torch.long), torch.zeros(8))

    assert real(rows(30)) == [(0, 8)]  # 8 x 30 <= 2 x 140
    assert real(rows(140)) == [(0, 2), (2, 4), (4, 6), (6, 8)]  # full length: the configured micro-batch
    assert real(rows(60)) == [(0, 4), (4, 8)]
    bnpo = make_trainer(tiny_model_dir, tiny_config(tmp_path / "bnpo", prompts_per_step=4, micro_batch_size=2,
                                                    loss_type="bnpo", max_prompt_length=128))
    assert bnpo.passes(rows(30)) == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_elapsed_of_a_run_folder_from_before_the_clock_is_its_steps_time(tmp_path):
    """A status file without "elapsed" (written before the clock): the steps' step_time up to its step;
    a hand-edited metrics line counts nothing rather than failing the Resume."""
    from core.runs.folders import RunDir

    run = RunDir.create(tmp_path, "old")
    run.write_status("stopped", step=2)
    for row in ({"step": 1, "step_time": 1.5}, {"step": 2, "step_time": 2.0}, {"step": 3, "step_time": 9.0},
                {"step": "x", "step_time": 4.0}, {"step": 2, "step_time": "slow"}):
        run.append_metrics(row)
    assert run.elapsed_so_far() == 3.5
    run.write_status("stopped", step=2, elapsed=12.25)
    assert run.elapsed_so_far() == 12.25
