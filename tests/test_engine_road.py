"""The app's one engine meets every run the Train tab accepts (issue 17), on the CPU.

A stand-in engine reports itself as vLLM and carries the settings the factory planned for it, so
the manager's road from a run's config to the engine (built with headroom, reused, rebuilt for a
run it cannot serve exactly, refusals before a run starts) and the worker's drain rule are
checked without vLLM. tests/test_app_vllm.py does the same on the real (CPU) vLLM backend.
"""

from __future__ import annotations

import threading
import time

import pytest

from core.memory import sizes
from core.config import ModelConfig
from core.engines.hf import HFEngine
from core.app.messages import ManagerError
from core.app.manager import RunManager
from tests.test_manager import greedy_reply, tiny_config


class StandInVLLM(HFEngine):
    """HF sampling that looks like a vLLM engine to the manager: backend name, settings, close()."""

    closed: list = []

    def __init__(self, model, tok, settings, model_path, delay: float = 0.0):
        super().__init__(model, tok)
        self.info.backend = "vllm"
        from core.engines.vllm.engine import effective_settings

        self.settings, self.model_path, self.delay = effective_settings(settings), model_path, delay
        self.calls = 0  # generate calls served (rollouts and chats)

    def generate(self, prompts, sampling, adapter=None, **kwargs):  # should_stop: HF's rollout passes it
        self.calls += 1
        time.sleep(self.delay)
        return super().generate(prompts, sampling, adapter, **kwargs)

    def close(self):
        StandInVLLM.closed.append(self)


@pytest.fixture
def vllm_stand_in(monkeypatch):
    """Every engine the manager builds is a StandInVLLM sized by the real factory; returns the list."""
    from core.engines import registry as factory
    from core.models.loading import add_lora, load_base_model, load_tokenizer

    built, StandInVLLM.closed = [], []

    def policy_and_engine(cfg, device, plan=None, *, headroom=False):
        path = cfg.model.name_or_path
        plan = plan or factory.plan_for(cfg, device, headroom=headroom)  # the registry's own road
        settings = factory.vllm_settings_for(cfg, plan.engine_sizes)
        tok = load_tokenizer(path)
        model = add_lora(load_base_model(cfg.model, device), cfg.model)
        engine = StandInVLLM(model, tok, settings, path, delay=getattr(cfg, "_delay", 0.0))
        built.append(engine)
        return model, tok, engine

    monkeypatch.setattr(factory, "make_policy_and_engine", policy_and_engine)
    monkeypatch.setattr(factory, "backend_for", lambda cfg, device: "hf" if cfg.run.engine == "hf" else "vllm")
    return built


@pytest.fixture(scope="module")
def long_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a 32K context (as Qwen2.5's), so the 4,096-token headroom applies."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("long") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 32768
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def app_manager(long_model_dir, tmp_path):
    m = RunManager(tmp_path / "runs", ModelConfig(name_or_path=str(long_model_dir), dtype="float32", lora_r=8,
                                                  lora_alpha=16), device="cpu")
    yield m
    m.close()


def _run(m, **algorithm):
    cfg = tiny_config(m, **{"max_steps": 1, **algorithm})
    cfg.run.engine = "auto"  # the stand-in fixture makes auto pick "vllm" on this CPU
    return cfg


def test_the_engine_is_built_with_headroom_and_serves_later_runs_exactly(app_manager, vllm_stand_in):
    m = app_manager
    m.preload().result(timeout=120)
    assert len(vllm_stand_in) == 1
    first = vllm_stand_in[0].settings
    # headroom: the LoRA rank and context people change next need no rebuild
    assert first.max_lora_rank == sizes.HEADROOM_LORA_RANK and first.max_model_len >= sizes.HEADROOM_MODEL_LEN
    # a run with LoRA rank 32 and a completion length above the default (256) runs on it
    cfg = _run(m, max_completion_length=300, prompts_per_step=1, num_generations=2)
    cfg.model.lora_r, cfg.model.lora_alpha = 32, 64
    name = m.start(cfg)
    assert m.wait(timeout=120) == "finished"
    assert len(vllm_stand_in) == 1 and m.status()["engine_note"] == ""
    # the chat is served by that engine, with the run's rank-32 adapter: its last checkpoint's answer
    # (one step without reward spread leaves the adapter at zero: tests/test_manager.py tells 'current'
    # from 'base' on an adapter that moved)
    prompt, calls = "Which is bigger, 9.11 or 9.9?", vllm_stand_in[0].calls
    reply = m.chat(prompt, target="current", max_tokens=4)
    assert vllm_stand_in[0].calls == calls + 1
    assert reply == greedy_reply(cfg.model.name_or_path, m.checkpoints(name)[-1], prompt, cfg.data.system_prompt,
                                 cfg.data.response_prefix, 4)


def test_a_sleep_mode_engine_is_kept_for_a_larger_kv_cache_and_rebuilt_only_for_what_it_cannot_serve(
        app_manager, vllm_stand_in):
    """vLLM 0.24 builds one sleep-mode engine per process (vllm_compat.cumem_bytes_in_use): on the
    H200 a rebuild for a larger KV cache failed with "CuMem allocator can only be used for one
    instance per process" and left every chat failing. Such an engine is kept when only the KV
    cache is short (rollouts in waves); a larger LoRA rank still rebuilds it, and says what it costs."""
    m = app_manager
    m.preload().result(timeout=120)
    vllm_stand_in[0].sleep_mode = True
    # 64 x 3,516 tokens: more KV cache than the preloaded engine's headroom (128 x 1,536)
    cfg = _run(m, max_prompt_length=3500, prompts_per_step=8, num_generations=8)
    m.start(cfg)
    assert m.wait(timeout=300) == "finished", m.status()["error"]
    assert len(vllm_stand_in) == 1 and StandInVLLM.closed == []
    note = m.status()["engine_note"]
    assert note.startswith("engine kept: KV cache") and "waves" in note
    from types import SimpleNamespace

    from core.memory.words import say

    _, sentences = m._engine_for_plan(cfg, SimpleNamespace(**m._hf_config), True,
                                      {"free_bytes": 80 * 2**30, "total_bytes": 80 * 2**30})
    plan = say(sentences)  # the plan's words, as the memory plan says them
    assert "runs on the loaded vLLM engine" in plan and "waves" in plan
    cfg = _run(m)
    cfg.model.lora_r, cfg.model.lora_alpha = 128, 128
    m.start(cfg)
    assert m.wait(timeout=300) == "finished", m.status()["error"]
    assert len(vllm_stand_in) == 2 and StandInVLLM.closed == [vllm_stand_in[0]]
    note = m.status()["engine_note"]
    assert "LoRA rank limit 128" in note and "KV cache 0" not in note and "one sleep-mode engine per process" in note


@pytest.mark.parametrize("change, words", [
    (lambda c: setattr(c.model, "lora_r", 128), "LoRA rank limit 128"),
    (lambda c: setattr(c.algorithm, "max_prompt_length", 4090), "context length"),  # 4,090 + 16 > 4,096
    (lambda c: (setattr(c.algorithm, "max_prompt_length", 3500), setattr(c.algorithm, "prompts_per_step", 8),
                setattr(c.algorithm, "num_generations", 8)), "KV cache"),  # 64 x 3,516 tokens
    (lambda c: setattr(c.run, "vllm_kv_cache_dtype", "fp8"), "KV-cache precision"),
    (lambda c: setattr(c.run, "vllm_enable_prefix_caching", False), "prefix caching"),
    (lambda c: setattr(c.model, "dtype", "bfloat16"), None),  # another base model: rebuilt, not refused
])
def test_a_run_the_engine_cannot_serve_exactly_gets_it_rebuilt(app_manager, vllm_stand_in, change, words):
    m = app_manager
    m.preload().result(timeout=120)
    cfg = _run(m)
    change(cfg)
    if cfg.model.dtype == "bfloat16":
        cfg.model.dtype = "float32"
        cfg.model.name_or_path = cfg.model.name_or_path + "/"  # the same folder, another key: a new model
        cfg.model.lora_alpha = 17
    m.start(cfg)
    assert m.wait(timeout=300) == "finished", m.status()["error"]
    assert len(vllm_stand_in) == 2 and StandInVLLM.closed == [vllm_stand_in[0]]
    if words:
        assert words in m.status()["engine_note"]
    rebuilt = vllm_stand_in[1].settings
    assert rebuilt.max_lora_rank >= cfg.model.lora_r
    assert rebuilt.max_model_len >= cfg.algorithm.max_prompt_length + cfg.algorithm.max_completion_length
    # the chat works on the new engine (the base model's answer, asked as the run asks), and an
    # identical run afterwards needs no rebuild
    calls = (vllm_stand_in[0].calls, vllm_stand_in[1].calls)
    reply = m.chat("hi", max_tokens=2)
    assert (vllm_stand_in[0].calls, vllm_stand_in[1].calls) == (calls[0], calls[1] + 1)
    assert reply == greedy_reply(cfg.model.name_or_path, None, "hi", cfg.data.system_prompt, cfg.data.response_prefix, 2)
    again = _run(m)
    change(again)
    if again.model.dtype == "bfloat16":
        again.model = cfg.model
    m.start(again)
    assert m.wait(timeout=300) == "finished" and len(vllm_stand_in) == 2


@pytest.mark.parametrize("change, field", [
    (lambda c: setattr(c.model, "lora_r", 1000), "model.lora_r = 1000"),
    (lambda c: setattr(c.algorithm, "max_completion_length", 40_000), "algorithm.max_completion_length"),
])
def test_what_no_engine_can_serve_is_refused_before_the_run_starts(app_manager, vllm_stand_in, change, field):
    m = app_manager
    cfg = _run(m)
    change(cfg)
    with pytest.raises(ManagerError, match="cannot start") as e:
        m.start(cfg)
    assert field in str(e.value)
    assert m.status()["state"] in ("idle", "failed") and not m.is_active()
    assert vllm_stand_in == []  # nothing was built for it


def test_chat_traffic_never_starves_training(app_manager, vllm_stand_in):
    """Four clients chat in a loop while a run trains: each step serves at most the answers that
    were waiting when it ended, so the run still makes its steps (and every client is answered)."""
    m = app_manager
    cfg = _run(m, max_steps=6)
    cfg._delay = 0.02  # each generate call costs something, as on a real engine
    m.preload().result(timeout=120)
    stop, answered = threading.Event(), [0, 0, 0, 0]

    def client(i):
        while not stop.is_set():
            m.chat(f"question {i}", target="base", max_tokens=4)
            answered[i] += 1

    m.start(cfg)
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        # with the old rule (drain until the queue is empty) the run never left its first step
        state = m.wait(timeout=240)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert state == "finished" and m.status()["step"] == 6
    assert all(n >= 1 for n in answered), answered


def test_drain_serves_only_what_was_waiting():
    """Jobs that arrive while a drain serves the waiting ones are left for the next step."""
    from core.app.worker import ModelWorker

    worker = ModelWorker()
    try:
        ran, gate, first_running, release = [], threading.Event(), threading.Event(), threading.Event()

        def step():  # a training step that ends, then serves what is waiting
            gate.wait(5)
            return worker.drain(), list(ran)

        def first():
            first_running.set()
            release.wait(5)  # while it runs, more jobs arrive (below)
            ran.append(0)

        f = worker.submit(step)
        worker.submit(first)
        worker.submit(lambda: ran.append(1))
        gate.set()
        assert first_running.wait(5)
        late = [worker.submit(lambda i=i: ran.append(f"late{i}")) for i in range(3)]
        release.set()
        assert f.result(timeout=10) == (2, [0, 1])  # the two that were waiting, no more
        for job in late:
            job.result(timeout=5)
        assert ran == [0, 1, "late0", "late1", "late2"]  # the rest in order, after the step
    finally:
        worker.close()
