"""bench/vllm_engine/ without vLLM: its tokenizer, its verdicts and its guard on where results go.

The benchmark itself runs on a GPU (or with --tiny on vLLM's CPU build); these check the parts
that decide what it reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import build_tokenizer
from bench.vllm_engine.__main__ import main
from bench.vllm_engine.report import render_markdown, summarize
from bench.vllm_engine.workload import WORKLOAD

ROOT = Path(__file__).resolve().parents[1]


def test_tokenizer_covers_the_whole_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    specials = {"<|endoftext|>": 509, "<|im_start|>": 510, "<|im_end|>": 511}
    build_tokenizer(512, specials).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == 512
    assert tok.eos_token_id == 511 and tok.pad_token_id == 509
    assert tok.convert_ids_to_tokens(510) == "<|im_start|>"
    text = "Which is bigger, 9.11 or 9.9?"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert isinstance(tok.decode(list(range(512)), skip_special_tokens=True), str)  # every id decodes


def _runs(adapter_ms=20.0, vllm_tps=20000.0, hf_tps=1000.0, fp8=True):
    auto = {"steps": {
        "engine_start": {"settings": {"dtype": "bfloat16", "max_model_len": 32768, "enforce_eager": False}},
        "kv_capacity": {"tokens": 1_000_000, "max_model_len": 32768, "longest_single_rollout_tokens": 32768},
        "trainer_model": {"weight_gib": 2.87, "dtype": "bfloat16", "shared_model_free_delta_gib": 0.002,
                          "params_inside_vllm_weights": "338/338", "weights_shared": True},
        "memory_copy": {"separate_copy_free_delta_gib": 2.9},
        "adapter_sync": {"iters": 10, "median_ms": adapter_ms, "max_ms": adapter_ms * 2, "in_memory_swaps_delta": 10,
                         "disk_swaps_delta": 0, "first_generate_median_ms": 30.0, "second_generate_median_ms": 20.0},
        "rollout_vllm": {"prompts": 64, "max_tokens": 256, "tokens_per_s": vllm_tps},
        "rollout_hf": {"prompts": 64, "max_tokens": 128, "tokens_per_s": hf_tps},
        "long_rollout": {"sequences": 8, "tokens_per_sequence": 32768, "seconds": 12.0, "generated_tokens": 8192,
                         "ok": True},
        "release_restore": {"error": "RuntimeError: boom"},
    }}
    if not fp8:
        return {"auto": auto, "fp8": {"skipped": "no CUDA", "steps": {}}}
    f8 = {"steps": {
        "kv_capacity": {"tokens": 2_000_000, "max_model_len": 32768, "longest_single_rollout_tokens": 32768},
        "rollout_vllm": {"prompts": 64, "max_tokens": 256, "tokens_per_s": vllm_tps * 0.9},
    }}
    return {"auto": auto, "fp8": f8}


def _verdicts(rows):
    """measurement's first words -> result of the first row that starts so."""
    out = {}
    for r in rows:
        out.setdefault(r["measurement"].split(" (")[0].split(",")[0], r["result"])
    return out


def test_summary_passes_and_fails_on_the_goals():
    rows = summarize(_runs())
    v = _verdicts(rows)
    assert v["update_adapter(model)"] == "pass"
    assert v["adapter pushes in memory / through disk"] == "pass"
    assert v["vLLM / HF tokens/s"] == "pass"
    assert v["fp8 / auto KV capacity"] == "pass"
    assert v["GPU memory taken by the trainer's base model on views"] == "pass"
    assert v["long rollouts"] == "pass"
    assert v["release_memory / restore_memory"].startswith("error: RuntimeError")
    slow = _verdicts(summarize(_runs(adapter_ms=80.0, hf_tps=5000.0)))
    assert slow["update_adapter(model)"] == "fail" and slow["vLLM / HF tokens/s"] == "fail"


def test_summary_says_why_when_fp8_was_not_run():
    rows = summarize(_runs(fp8=False))
    v = _verdicts(rows)
    assert v["KV-cache capacity"] == "info"  # the auto row comes first, fp8's row says why
    fp8_rows = [r for r in rows if "fp8" in r["measurement"]]
    assert fp8_rows and all(r["result"] == "skipped: no CUDA" for r in fp8_rows)
    meta = {"versions": {"torch": "x"}, "device": "cpu", "workload": {k: g for k, (g, _) in WORKLOAD.items()},
            "config": "c", "mode": "gpu", "date": "d", "model": {"params": 1}, "wall_seconds": 1.0}
    md = render_markdown(meta, rows)
    assert md.count("\n| ") == len(rows) + 2  # header, rule, one line per row


def test_tiny_results_never_go_to_bench_results(monkeypatch):
    # main() sets these defaults in os.environ; monkeypatch undoes them after the test
    for var, value in (("VLLM_ENABLE_V1_MULTIPROCESSING", "0"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit, match="never go to bench/results"):
        main(["--tiny", "--out", str(ROOT / "bench" / "results")])
