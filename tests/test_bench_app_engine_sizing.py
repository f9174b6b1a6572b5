"""bench/app_engine_sizing.py: the app's engine sizes one at a time against the run's own."""

from __future__ import annotations

import json

import pytest


def test_the_table_gives_each_variant_its_ratio_to_the_runs_sizing():
    from bench.app_engine_sizing import table

    rows = [{"variant": "run", "mean": {"step_time": 0.5, "time/sample": 0.3}},
            {"variant": "headroom", "mean": {"step_time": 2.0, "time/sample": 1.8}},
            {"variant": "headroom:max_model_len", "error": "not run: budget"}]
    lines = table(rows).splitlines()
    assert lines[2].split("|")[1].strip() == "run" and lines[2].endswith("| 1.00x |")
    assert "| 0.500 | 0.300 |" in lines[2]
    assert lines[3].endswith("| 4.00x |")
    assert lines[4] == "| headroom:max_model_len | not run: budget |"


@pytest.mark.vllm
def test_each_variant_builds_its_own_engine_and_trains(tmp_path):
    """vLLM (the CPU build in CI): three variants, each in its own process, each engine sized as
    it says (the app's LoRA rank 64, or the run's own), the same work a step in each."""
    pytest.importorskip("vllm")
    from bench.app_engine_sizing import main

    assert main(["--tiny", "--steps", "3", "--variants", "run,headroom,headroom:max_lora_rank",
                 "--out", str(tmp_path)]) == 0
    results = {r["variant"]: r for r in json.loads((tmp_path / "app_engine_sizing.json").read_text())}
    assert set(results) == {"run", "headroom", "headroom:max_lora_rank"}
    assert all(r["steps"] == 3 and r["mean"]["step_time"] > 0 for r in results.values()), results
    ranks = {k: r["engine"]["max_lora_rank"] for k, r in results.items()}
    assert ranks == {"run": 8, "headroom": 64, "headroom:max_lora_rank": 8}
    # a run's own engine holds one adapter slot, the app's two (make_policy_and_engine)
    assert {k: r["engine"]["max_loras"] for k, r in results.items()} == {"run": 1, "headroom": 2,
                                                                         "headroom:max_lora_rank": 2}
    lengths = {k: r["engine"]["max_model_len"] for k, r in results.items()}
    assert lengths["headroom"] > lengths["run"] and lengths["headroom:max_lora_rank"] == lengths["headroom"]
    # every completion ran to its limit: the same tokens in each variant
    assert {r["completion_tokens"] for r in results.values()} == {24.0}
