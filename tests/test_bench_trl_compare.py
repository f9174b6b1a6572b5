"""bench/trl_compare.py on the CPU: its prompts, its full-length guard, its tables and one tiny run.

The benchmark itself measures GPU memory on a GPU; these check the parts that decide what it
reports: equal prompt lengths, completions forced to full length, reasons instead of gaps, and the
guard that keeps --tiny results out of bench/results/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    from bench import trl_compare

    return trl_compare


def test_lengths_parse_and_fit_the_model(bench):
    assert bench.parse_lengths("1024, 4k,32K") == [1024, 4096, 32768]
    assert bench.fit_length(4096, 256, 32768) == (4096, "")
    used, note = bench.fit_length(32768, 256, 32768)
    assert used == 32512 and "32512" in note


def test_prompts_are_exactly_the_asked_length(bench, tmp_path):
    from transformers import AutoTokenizer

    from core.data import build_messages, render_prompt

    bench.build_tokenizer(512, {"<|endoftext|>": 509, "<|im_start|>": 510, "<|im_end|>": 511}).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == 512 and tok.eos_token_id == 511
    for text in bench.make_prompts(tok, 4, 64, seed=3):
        # TRL tokenizes the plain text; ours renders it through the trainer's prompt path first
        assert len(tok(text)["input_ids"]) == 64
        ours = render_prompt(tok, build_messages(text, ""), bench.PLAIN_TEMPLATE, "")
        assert ours == text


def test_reward_reads_both_completion_forms(bench):
    assert bench.bench_reward(completions=["aab", [{"role": "assistant", "content": "aab"}]]) == [2 / 3, 2 / 3]


def test_our_rollouts_are_made_to_ignore_eos(bench, tiny_model_dir, tmp_path):
    """The bench's switch reaches the engine: with EOS as the greedy first token, completions
    still run to max_tokens."""
    from test_trainer import make_trainer, tiny_config

    cfg = tiny_config(tmp_path, prompts_per_step=1, num_generations=2, temperature=0.01)
    trainer = make_trainer(tiny_model_dir, cfg)
    prompt = trainer.prompt_ids(trainer.task.train[0])
    from core.engines import SamplingSettings

    first = trainer.engine.generate([prompt], SamplingSettings(temperature=0.0, max_tokens=1))[0][0].token_ids[0]
    trainer.tokenizer.eos_token = trainer.tokenizer.convert_ids_to_tokens(first)  # "stops" at once
    assert "ignore_eos" in bench.force_full_length_ours(trainer)
    result = trainer.train_step()
    lengths = [len(s["completion"]) for s in result.samples]
    assert result.metrics["completions/min_length"] == cfg.algorithm.max_completion_length
    assert result.metrics["completions/clipped_ratio"] == 1.0 and lengths


def test_device_memory_is_the_peak_above_the_baseline(bench, monkeypatch):
    """With a stand-in NVML: the window's peak over what was used before the process started."""
    import time

    GIB = 2**30
    state = {"used": 10 * GIB}
    fake = SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: "gpu0",
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=state["used"], total=140 * GIB))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    mem = bench.DeviceMemory(interval_s=0.002)
    assert mem.method == "nvml" and mem.baseline == 10 * GIB  # read before anything was created
    mem.start()
    try:
        state["used"] = 13 * GIB  # weights and engine
        mem.begin_window()
        state["used"] = 19 * GIB  # a short spike inside the step
        time.sleep(0.05)
        state["used"] = 14 * GIB
        assert mem.end_window() == 9 * GIB
        assert mem.now() == 4 * GIB and mem.process_peak() == 9 * GIB
    finally:
        mem.stop()


def _rec(system, L, status="ok", peak=None, step_s=10.0, tps=100.0, **extra):
    rec = {"system": system, "completion_length": L, "prompt_length": 256, "num_generations": 8,
           "gradient_checkpointing": "on", "model": "m", "status": status, "weights_gib": 2.875, "steps": [],
           "notes": [], "versions": {"torch": "2.11.0", "vllm": "0.24.0", "trl": "1.16.0", "transformers": "5.17.0"},
           "gpu": {"device": "NVIDIA H200", "total_gib": 139.8}, "memory_method": "nvml", **extra}
    if status == "ok":
        rec["steps"] = [{"step": 2, "seconds": step_s, "device_peak_gib": peak, "torch_max_allocated_gib": 3.0,
                         "torch_max_reserved_gib": 3.5,
                         "rollout": {"seconds": 1.0, "tokens_per_s": tps, "stopped_at_eos": 0,
                                     "completion_tokens": {"n": 8, "min": L, "max": L, "total": 8 * L},
                                     "prompt_tokens": {"n": 8, "min": 256, "max": 256}}}]
    return rec


def test_tables_give_reasons_not_gaps(bench):
    records = [
        _rec("ours", 1024, peak=9.0, step_s=10.0, tps=2000.0),
        _rec("trl", 1024, peak=6.0, step_s=60.0, tps=150.0),
        _rec("ours", 8192, peak=20.0),
        _rec("trl", 8192, status="timeout", reason="timeout after 400 s (in step 1: generation)",
             process_peak_gib=7.5),
        _rec("trl", 16384, status="not run", reason="not run: timeout already at 8192 tokens (...)"),
        _rec("trl-vllm", 1024, status="oom", reason="OutOfMemoryError: CUDA out of memory", failed_in="step 1"),
    ]
    meta = {"model_label": "m", "params": 1_543_714_304, "dtype": "bfloat16", "prompt_length": 256,
            "num_generations": 8, "gradient_checkpointing": "on", "interval_ms": 20, "steps": 2}
    md = bench.render_markdown(bench.merge([], records), meta)
    assert "timeout after 400 s (in step 1: generation); peak until then 7.50 GiB" in md
    assert "not run: timeout already at 8192" in md
    assert "out of memory (step 1)" in md
    assert "9.00 (working 6.12)" in md  # peak - 2.875 GiB of weights
    assert "| 1024 | trl | 0.67x | 0.51x | 6.00x | 13.33x |" in md  # peer / ours
    assert "not measured" in md  # ours at 16384 was never asked for: said, not blank
    assert "torch 2.11.0, vllm 0.24.0, trl 1.16.0, transformers 5.17.0" in md


def test_failures_stop_longer_lengths_and_merge_replaces(bench):
    sig = (256, 8, "on", "m")
    records = [_rec("trl", 4096, status="timeout", reason="timeout after 400 s")]
    assert bench.prior_failure(records, "trl", 8192, sig)["completion_length"] == 4096
    assert bench.prior_failure(records, "ours", 8192, sig) is None
    assert bench.prior_failure(records, "trl", 8192, (256, 8, "off", "m")) is None  # another workload
    merged = bench.merge(records, [_rec("trl", 4096, peak=11.6)])
    assert len(merged) == 1 and merged[0]["status"] == "ok"


def test_tiny_results_never_go_to_bench_results(bench):
    with pytest.raises(SystemExit, match="never go to bench/results"):
        bench.main(["--tiny", "--out", str(ROOT / "bench" / "results")])
    with pytest.raises(SystemExit, match="needs --out"):
        bench.main(["--tiny"])


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "trl_compare.py"), "--tiny", "--lengths", "16", "--steps", "1",
         "--out", str(out), "--model-dir", str(tmp_path / "model")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "trl_compare.json").read_text())
    recs = {r["system"]: r for r in data["records"]}
    assert set(recs) == {"ours", "trl"}
    for r in recs.values():
        assert r["status"] == "ok", r.get("reason")
        h = r["headline"]
        assert h["completion_tokens"]["min"] == h["completion_tokens"]["max"] == 16
        assert h["prompt_tokens"]["min"] == h["prompt_tokens"]["max"] == 32
        assert r["versions"]["trl"] and r["versions"]["torch"]
    assert "n/a on CPU" in (out / "trl_compare.md").read_text()
