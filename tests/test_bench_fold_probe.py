"""bench/fold_probe.py on the CPU: both layouts timed, every weight restored, its record written.
    python -m pytest -q tests/test_bench_fold_probe.py
"""

from __future__ import annotations

import json


def test_fold_probe_times_both_layouts_and_writes_its_record(tmp_path):
    from bench.fold_probe import main

    rec = main(["--tiny", "--reps", "2", "--out", str(tmp_path), "--profile"])
    assert json.loads((tmp_path / "fold_probe.json").read_text()) == rec
    grouped, per_layer, kept = rec["layouts"]
    assert grouped["empty_cache"] and per_layer["empty_cache"] and not kept["empty_cache"]
    assert per_layer["group_bytes"] == 1 and grouped["group_bytes"] > 1
    for lay in rec["layouts"]:  # 2 layers x 7 projections, folded in PyTorch here (no Triton on a CPU)
        assert lay["layers"] == 14 and lay["fused_layers"] == 0 and lay["groups"] == 0
        assert 0 < lay["kept_share"] < 1 and len(lay["fold_ms"]) == 3 and lay["fold_ms_median"] > 0
    assert rec["fold_ratio"] == round(grouped["fold_ms_median"] / per_layer["fold_ms_median"], 3)
    prof = rec["profile"]  # the host's ops of one fold + unfold: PyTorch's chunked maths here
    assert prof["host_ms"] > 0 and len(prof["host_top"]) == 12 and all(r["calls"] >= 1 for r in prof["host_top"])
    assert prof["host_top"][0]["self_cpu_ms"] >= prof["host_top"][-1]["self_cpu_ms"]
