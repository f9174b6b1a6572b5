"""The verdicts and the markdown of the vLLM benchmark, from the children's records.

Owns: one row per reported figure with its goal and result, 'pass' / 'fail' / 'info' or why it was
not measured (`summarize`), and the markdown table (`render_markdown`).

Refuses to know: vLLM, torch, and how the figures were measured.
"""

from __future__ import annotations


def _get(runs, kv, step):
    return ((runs.get(kv) or {}).get("steps") or {}).get(step) or {}


def _why_not(runs, kv, step) -> str | None:
    r = runs.get(kv) or {}
    if r.get("skipped"):
        return f"skipped: {r['skipped']}"
    s = _get(runs, kv, step)
    if not s:
        return "not run" + (f" ({r['error']})" if r.get("error") else "") + (
            f" (child exit {r['exit']})" if r.get("exit") not in (None, 0) else "")
    if s.get("running"):
        return f"stopped mid-step (child exit {r.get('exit')})"
    if s.get("error"):
        return f"error: {s['error']}"
    if s.get("skipped"):
        return f"skipped: {s['skipped']}"
    return None


def summarize(runs: dict) -> list[dict]:
    """One row per reported figure: {id, measurement, value, goal, result} ('pass'/'fail'/'info'/why not)."""
    rows = []

    def row(rid, what, value, goal="", ok=None, why=None):
        result = why if why else ("info" if ok is None else ("pass" if ok else "fail"))
        rows.append({"id": rid, "measurement": what, "value": value if not why else "", "goal": goal, "result": result})

    # 1) adapter sync
    a, why = _get(runs, "auto", "adapter_sync"), _why_not(runs, "auto", "adapter_sync")
    row("1", f"update_adapter(model), LoRA r16 x 7 projections (median of {a.get('iters', '?')})",
        f"{a['median_ms']:.1f} ms (max {a['max_ms']:.1f} ms)" if not why else "", "<= 50 ms",
        (a.get("median_ms", 1e9) <= 50) if not why else None, why)
    row("1", "adapter pushes in memory / through disk",
        f"+{a.get('in_memory_swaps_delta')} / +{a.get('disk_swaps_delta')}" if not why else "",
        "all in memory, 0 disk",
        (a.get("in_memory_swaps_delta") == a.get("iters") and a.get("disk_swaps_delta") == 0) if not why else None, why)
    bd = a.get("breakdown_ms")
    row("1", "where a push's time goes (median ms, pieces re-run by hand)",
        ", ".join(f"{k} {v:.1f}" for k, v in bd.items()) if bd else "", "", None,
        why or (None if bd else f"error: {a.get('breakdown_error', 'not measured')}"))
    row("1", "first generate() after a push (1 prompt, 1 token) vs the second",
        f"{a['first_generate_median_ms']:.1f} ms vs {a['second_generate_median_ms']:.1f} ms" if not why else "",
        "", None, why)
    # 2) rollouts
    v, vwhy = _get(runs, "auto", "rollout_vllm"), _why_not(runs, "auto", "rollout_vllm")
    h, hwhy = _get(runs, "auto", "rollout_hf"), _why_not(runs, "auto", "rollout_hf")
    row("2", f"vLLM rollout tokens/s ({v.get('prompts', '?')} prompts x {v.get('max_tokens', '?')} tokens, T=1)",
        f"{v['tokens_per_s']:,.0f}" if not vwhy else "", "", None, vwhy)
    row("2", f"HF generate tokens/s ({h.get('prompts', '?')} prompts x {h.get('max_tokens', '?')} tokens, T=1)",
        f"{h['tokens_per_s']:,.0f}" if not hwhy else "", "", None, hwhy)
    rwhy = vwhy or hwhy
    ratio = v["tokens_per_s"] / h["tokens_per_s"] if not rwhy and h.get("tokens_per_s") else None
    row("2", "vLLM / HF tokens/s", f"{ratio:.1f}x" if ratio else "", ">= 10x",
        (ratio >= 10) if ratio else None, rwhy)
    # 3) memory
    t, twhy = _get(runs, "auto", "trainer_model"), _why_not(runs, "auto", "trainer_model")
    c, cwhy = _get(runs, "auto", "memory_copy"), _why_not(runs, "auto", "memory_copy")
    shared = t.get("shared_model_free_delta_gib")
    if twhy is None and shared is None:
        twhy = "skipped: no CUDA" + ("" if t.get("weights_shared") else " (CPU build: weights not shared)")
    row("3", f"weights of the base model ({t.get('dtype', '?')})",
        f"{t['weight_gib']:.2f} GiB" if "weight_gib" in t else "", "",
        None, None if "weight_gib" in t else (_why_not(runs, "auto", "trainer_model") or "not measured"))
    row("3", "GPU memory taken by the trainer's base model on views (shared_hf_model)",
        f"+{shared:.3f} GiB ({t.get('params_inside_vllm_weights', '?')} params inside vLLM's weights)"
        if not twhy else "", "< 5% of the weights",
        (shared < 0.05 * t["weight_gib"]) if not twhy else None, twhy)
    row("3", "GPU memory taken by a separate transformers copy (from_pretrained -> cuda)",
        f"+{c['separate_copy_free_delta_gib']:.2f} GiB" if not cwhy else "", "(about the weights)", None, cwhy)
    # 4) KV cache
    kv = {m: (_get(runs, m, "kv_capacity"), _why_not(runs, m, "kv_capacity")) for m in ("auto", "fp8")}
    for m, (k, kwhy) in kv.items():
        row("4", f"KV-cache capacity, kv_cache_dtype={m}", f"{k['tokens']:,} tokens" if not kwhy else "", "",
            None, kwhy)
    (ka, awhy), (kf, fwhy) = kv["auto"], kv["fp8"]
    cap_ratio = kf["tokens"] / ka["tokens"] if not (awhy or fwhy) else None
    row("4", "fp8 / auto KV capacity", f"{cap_ratio:.2f}x" if cap_ratio else "", "about 2x (>= 1.8x)",
        (cap_ratio >= 1.8) if cap_ratio else None, awhy or fwhy)
    for m in ("auto", "fp8"):
        k, kwhy = kv[m]
        row("4", f"longest single rollout that fits, {m} (min(capacity, max_model_len))",
            f"{k['longest_single_rollout_tokens']:,} tokens (max_model_len {k['max_model_len']:,})" if not kwhy else "",
            "", None, kwhy)
    fv, fvwhy = _get(runs, "fp8", "rollout_vllm"), _why_not(runs, "fp8", "rollout_vllm")
    row("4", f"vLLM rollout tokens/s with fp8 KV ({fv.get('prompts', '?')} x {fv.get('max_tokens', '?')})",
        (f"{fv['tokens_per_s']:,.0f}" + (f" ({fv['tokens_per_s'] / v['tokens_per_s']:.2f}x auto)" if not vwhy else ""))
        if not fvwhy else "", "", None, fvwhy)
    for m in ("auto", "fp8"):
        lr, lwhy = _get(runs, m, "long_rollout"), _why_not(runs, m, "long_rollout")
        row("4", f"long rollouts, {m}: {lr.get('sequences', '?')} sequences x "
                 f"{lr.get('tokens_per_sequence', '?')} tokens",
            f"ran in {lr['seconds']:.1f} s ({lr['generated_tokens']:,} generated)" if not lwhy else "",
            "runs", lr.get("ok") if not lwhy else None, lwhy)
    rr, rrwhy = _get(runs, "auto", "release_restore"), _why_not(runs, "auto", "release_restore")
    row("-", "release_memory / restore_memory (KV cache out and back)", rr.get("summary", "") if not rrwhy else "",
        "", None, rrwhy)
    return rows


def render_markdown(meta: dict, rows: list[dict]) -> str:
    v = meta["versions"]
    gpu = (meta.get("gpu") or {}).get("name") or meta["device"]
    w = meta["workload"]
    es = meta.get("engine_settings") or {}
    lines = [
        f"# vLLM engine: adapter sync, rollout speed, shared weights, FP8 KV ({meta['config']}, {meta['mode']})",
        "",
        f"{gpu}; torch {v.get('torch')}; vLLM {v.get('vllm')}; transformers {v.get('transformers')}; "
        f"peft {v.get('peft')}; {meta['date']}. Random weights ({(meta['model'].get('params') or 0) / 1e6:,.1f} M "
        f"parameters, {es.get('dtype', '?')}), LoRA r16 on q,k,v,o,gate,up,down; gpu_memory_utilization "
        f"{es.get('gpu_memory_utilization', w['gpu_util'])}, max_model_len {es.get('max_model_len', '?')}, "
        f"max_num_seqs {es.get('max_num_seqs', w['max_num_seqs'])}, CUDA graphs "
        f"{'off' if es.get('enforce_eager') else 'on'}. One engine per process (one child per KV dtype). "
        f"Tokens/s = generated tokens / wall time of `engine.generate` (prefill included), median of "
        f"{w['repeats']} after one warm-up. Memory = drop in `cudaMemGetInfo` free bytes. "
        f"Made by `python -m bench.vllm_engine` in {meta['wall_seconds']:.0f} s.",
        "",
        "| # | measurement | value | goal | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['id']} | {r['measurement']} | {r['value']} | {r['goal']} | {r['result']} |")
    return "\n".join(lines) + "\n"
