"""The markdown's detail tables: where the step's time goes, the memory-bandwidth limit, Unsloth.

Owns: the time breakdown per measured step (`time_table`), rollout tokens/s against the limit the
device's memory bandwidth sets (`bandwidth_table`, `decode_limit_tokens_per_s`; the vendor figures
are `systems.memory_bandwidth_gbs`), and Unsloth's section (its share, its KV cache asked for and made, what its log
says it switched on).

Refuses to know: measuring, merging, and the main tables and goals (render.py, goals.py).
"""

from __future__ import annotations

from bench.trl_compare.ours import TIME_PHASES
from bench.trl_compare.records import _f, headline
from bench.trl_compare.systems import FOUR_BIT, SYSTEMS, UNSLOTH_SYSTEMS, memory_bandwidth_gbs


# memory bandwidth per device (GB/s, the vendors' figures), for the decode-speed limit
def decode_limit_tokens_per_s(hf_config, *, four_bit: bool, streams: int, context: float, bandwidth_gbs: float
                              ) -> tuple[float, float]:
    """(tokens/s if a decode step only read the weights, tokens/s if it also read the KV cache of
    `streams` sequences of `context` tokens): streams x bandwidth / bytes per decode step.

    >>> from types import SimpleNamespace as C
    >>> c = C(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    ...       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    >>> [round(x) for x in decode_limit_tokens_per_s(c, four_bit=False, streams=8, context=768, bandwidth_gbs=4800)]
    [12439, 11767]
    """
    from core.memory.sizes import kv_bytes_per_token, weight_bytes

    weights = weight_bytes(hf_config, load_in_4bit=four_bit)
    kv = streams * context * kv_bytes_per_token(hf_config)
    bw = bandwidth_gbs * 1e9
    return streams * bw / weights, streams * bw / (weights + kv)


def _ok_records(records: list[dict]):
    order = {s: i for i, s in enumerate(SYSTEMS)}
    for rec in sorted(records, key=lambda r: (r.get("completion_length") or 0, order.get(r.get("system"), 9))):
        h = headline(rec) if rec.get("status") == "ok" else {}
        if h:
            yield rec, h


def time_table(records: list[dict]) -> list[str]:
    """Where each measured step's time went (ours: the trainer's own clock, time/<phase>; the peers:
    their rollout and the rest), and each phase's device peak where it was polled."""
    rows = []
    for rec, h in _ok_records(records):
        t = h.get("time_breakdown") or {}
        if not t:
            continue
        peaks = h.get("phase_peaks_gib") or {}
        cells = [_f(t.get(k), "{:.2f}", "") for k in ("rollout",) + TIME_PHASES]
        phase_peak = " / ".join(_f(peaks.get(k), "{:.2f}", "-") for k in ("rollout", "training"))
        merged = {True: "folded", False: "LoRA kernels"}.get(h.get("merged_rollout"), "")
        rows.append(f"| {rec.get('system')} | {rec.get('completion_length')} | {_f(h.get('step_seconds'), '{:.2f}')} | "
                    + " | ".join(cells) + f" | {merged} | {phase_peak} |")
    if not rows:
        return []
    return ["", "## Where the step's time goes", "",
            ("Seconds of the reported step. Ours: the trainer's clock (`core/rl/rollouts.StepClock`, each phase ends "
             "with a CUDA synchronize): rollout = fold + sample (KV cache back, generate, release) + unfold; "
             "log-probs = pi_old / reference passes (none here: one pass, beta 0). TRL and Unsloth: the rollout "
             "(`_generate_single_turn`, with its weight sync or fold) and the rest of the step. Phase peaks: the "
             "device peak while sampling / while training (NVML, polled)."), "",
            "| system | completion | step s | rollout | fold | sample | unfold | scoring | log-probs | fwd/bwd | "
            "optimizer | adapter push | other | rollouts | peak GiB rollout / training |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + rows


def bandwidth_table(records: list[dict], meta: dict) -> list[str]:
    """Rollout tokens/s against what the device's memory bandwidth allows: every decode step reads
    all weights once for the G streams (and their KV cache)."""
    from types import SimpleNamespace

    config = meta.get("model_config")
    bw, source = memory_bandwidth_gbs(records, meta.get("bandwidth_gbs") or 0.0)
    if not config or not bw:
        return []
    c = SimpleNamespace(**config)
    rows = []
    for rec, h in _ok_records(records):
        tps = h.get("rollout_tokens_per_s")
        if not tps:
            continue
        G = rec.get("num_generations") or 1
        L, P = rec.get("completion_length") or 0, rec.get("prompt_length") or 0
        w_only, with_kv = decode_limit_tokens_per_s(c, four_bit=rec.get("system") in FOUR_BIT, streams=G,
                                                    context=P + L / 2, bandwidth_gbs=bw)
        rows.append(f"| {rec.get('system')} | {L} | {tps:.0f} | {w_only:.0f} | {tps / w_only:.2f} | {with_kv:.0f} | "
                    f"{tps / with_kv:.2f} |")
    if not rows:
        return []
    return ["", "## Rollout tokens/s against the memory-bandwidth limit", "",
            (f"Limit = G streams x bandwidth / bytes read per decode step: the weights (bf16, or NF4 for the 4-bit "
             f"systems), and with the KV cache of G sequences at their mean context (prompt + L/2). Bandwidth "
             f"{bw:.0f} GB/s ({source}). The rollout's tokens/s include its prefill, sampler and (ours) fold and "
             f"memory hand-over, so 1.0 is out of reach."), "",
            "| system | completion | rollout tok/s | limit, weights only | share | limit, weights + KV | share |",
            "|---|---|---|---|---|---|---|"] + rows


def unsloth_section(records: list[dict]) -> list[str]:
    """Unsloth's versions, its KV cache (asked for vs what vLLM made of the share), and what its log
    says it switched on."""
    recs = [r for r in records if r.get("system") in UNSLOTH_SYSTEMS and r.get("status") != "not run"]
    if not recs:
        return []
    out = ["", "## Unsloth", "", "| system | completion | version | share | KV cache asked (ours) GiB | "
           "KV cache made GiB (tokens) | vLLM said | switched on |", "|---|---|---|---|---|---|---|---|"]
    for rec in recs:
        uc, kv, lg = rec.get("unsloth_config") or {}, rec.get("unsloth_kv_cache") or {}, rec.get("unsloth_log") or {}
        share = (uc.get("from_pretrained") or {}).get("gpu_memory_utilization", "its default")
        version = (rec.get("unsloth_version") or {}).get("unsloth") or (rec.get("versions") or {}).get("unsloth")
        made = f"{_f(kv.get('gib'))} ({kv.get('tokens') or lg.get('kv_cache_tokens') or 'n/a'})"
        on = ", ".join(k for k, v in (lg.get("switched_on") or {}).items() if v) or "n/a"
        out.append(f"| {rec.get('system')} | {rec.get('completion_length')} | {version} | {share} | "
                   f"{_f(uc.get('kv_cache_asked_gib'))} | {made} | {_f(lg.get('kv_cache_gib'))} GiB | {on} |")
    said = next((r.get("unsloth_log", {}).get("unsloth_lines") for r in recs if r.get("unsloth_log")), None)
    if said:
        fence = "`" * 3
        out += ["", "What its log said (the first run with a log; `unsloth_log` in the JSON has each run's):", "",
                fence] + [line.replace(fence, "'''") for line in said[:30]] + [fence]
    return out
