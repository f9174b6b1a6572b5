"""The results' records: their key, their file names, their merge and their headline figures.

Owns: what makes two records the same setting (`record_key`, `workload_sig`), the results file's
name for a model and a variant of ours (`results_name`, `variant_of`), reading the records already
there (`load_existing`), merging records so that the one that says more wins (`merge`), the failure
at a shorter length that stops a longer one (`prior_failure`), and what a record reports: the
figures of its last finished step (`headline`) or the reason it has none (`_reason`, `_mem_na`, `_f`).

Refuses to know: how records are measured, and how they are laid out in the markdown.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.trl_compare.systems import DEFAULT_CONFIG, NAME, SYSTEMS


def record_key(rec: dict) -> tuple:
    return (rec.get("system"), rec.get("completion_length"), rec.get("prompt_length"), rec.get("num_generations"),
            rec.get("gradient_checkpointing"), rec.get("model"))


def results_name(model_config: str | Path, variant: str = "") -> str:
    """Results file stem: trl_compare for the default Qwen2.5-1.5B shape, trl_compare_<config> for any
    other, so one file never mixes two models' records under one model's metadata; a variant of
    ours (variant_of) gets its own file too, so it never replaces the default's measurement.

    >>> results_name(DEFAULT_CONFIG), results_name("bench/configs/llama-3.1-8b.json")
    ('trl_compare', 'trl_compare_llama-3.1-8b')
    >>> results_name(DEFAULT_CONFIG, "eager_fp8kv")
    'trl_compare_eager_fp8kv'
    """
    stem = Path(model_config).stem
    return (NAME if stem == DEFAULT_CONFIG.stem else f"{NAME}_{stem}") + (f"_{variant}" if variant else "")


def variant_of(args) -> str:
    """The non-default settings of ours (and TRL's vLLM correction off), as a results-name suffix ('' for
    the defaults).

    >>> from types import SimpleNamespace
    >>> variant_of(SimpleNamespace(ours_offload=False, ours_eager=True, ours_kv_dtype="fp8", ours_micro_batch=0,
    ...                            ours_merged="on"))
    'eager_fp8kv'
    >>> variant_of(SimpleNamespace(ours_offload=False, ours_eager=False, ours_kv_dtype="auto", ours_micro_batch=8,
    ...                            ours_merged="off"))
    'mb8_lora_kernels'
    >>> variant_of(SimpleNamespace(ours_offload=False, ours_eager=False, ours_kv_dtype="auto", ours_micro_batch=0,
    ...                            ours_merged="on", ours_cuda_graphs="decode"))
    'decode_graphs'
    >>> variant_of(SimpleNamespace(ours_offload=False, ours_eager=False, ours_kv_dtype="auto", ours_micro_batch=0,
    ...                            ours_merged="on", ours_compile=True, ours_runner="v2"))
    'compiled_runner_v2'
    >>> variant_of(SimpleNamespace(ours_offload=False, ours_eager=False, ours_kv_dtype="auto", ours_micro_batch=0,
    ...                            ours_merged="on", ours_compile=True, trl_vllm_is="off"))
    'compiled_trl_no_is'
    >>> variant_of(SimpleNamespace(ours_offload=False, ours_eager=False, ours_kv_dtype="auto", ours_micro_batch=0,
    ...                            ours_merged="on", ours_compile=True, ours_weights="fp8"))
    'compiled_fp8w'
    """
    mb = args.ours_micro_batch
    parts = [("offload", args.ours_offload), ("compiled", getattr(args, "ours_compile", False)),
             ("eager", args.ours_eager), ("fp8kv", args.ours_kv_dtype != "auto"),
             (f"mb{mb}", mb > 0), ("lora_kernels", args.ours_merged == "off"),
             ("decode_graphs", getattr(args, "ours_cuda_graphs", "all") == "decode" and not args.ours_eager),
             ("runner_v2", getattr(args, "ours_runner", "auto") == "v2"),
             ("fp8w", getattr(args, "ours_weights", "auto") == "fp8"),
             ("trl_no_is", getattr(args, "trl_vllm_is", "on") == "off")]
    return "_".join(name for name, on in parts if on)


def load_existing(out_dir: Path, name: str = NAME) -> list[dict]:
    path = out_dir / f"{name}.json"
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text()).get("records", []))
    except (ValueError, OSError):
        return []


def merge(existing: list[dict], new: list[dict]) -> list[dict]:
    """Records of `existing` and `new`, one per record_key. The one that says more wins: a "not run"
    reason never hides a record of a run, and a run cut by this benchmark's own time limit ("timeout",
    which says nothing about the system) never hides a measurement (or an out-of-memory, a result).
    Between two of the same kind, `new`'s, unless both carry "started" stamps and the existing one is
    the later: a GPU command's results file also carries the copies of the repo's records it started
    from, so files merged in any order keep the newest measurement of each (system, length)."""
    def rank(r: dict) -> int:
        return {"not run": 0, "timeout": 1}.get(r.get("status"), 2)

    by_key = {record_key(r): r for r in existing}
    for r in new:
        old = by_key.get(record_key(r))
        if old is not None and rank(old) > rank(r):
            continue
        if (old is not None and rank(old) == rank(r) and r.get("started") and old.get("started")
                and old["started"] > r["started"]):
            continue
        by_key[record_key(r)] = r
    order = {s: i for i, s in enumerate(SYSTEMS)}
    return sorted(by_key.values(), key=lambda r: (r.get("completion_length") or 0, order.get(r.get("system"), 9)))


def prior_failure(records: list[dict], system: str, length: int, sig: tuple) -> dict | None:
    """A failed (timeout / oom / error) record of `system` at a shorter length, same workload."""
    fails = [r for r in records if r.get("system") == system and (r.get("completion_length") or 0) < length
             and r.get("status") in ("timeout", "oom", "error") and record_key(r)[2:] == sig]
    return max(fails, key=lambda r: r["completion_length"]) if fails else None


def headline(rec: dict) -> dict:
    """The figures of the reported (last finished) step."""
    if not rec.get("steps"):
        return {}
    s = rec["steps"][-1]
    ro = s.get("rollout") or {}
    peak = s.get("device_peak_gib")
    w = rec.get("weights_gib")
    return {"step": s.get("step"), "device_peak_gib": peak,
            "working_gib": round(peak - w, 3) if peak is not None and w is not None else None,
            "torch_max_allocated_gib": s.get("torch_max_allocated_gib"),
            "torch_max_reserved_gib": s.get("torch_max_reserved_gib"), "step_seconds": s.get("seconds"),
            "rollout_seconds": ro.get("seconds"), "rollout_tokens_per_s": ro.get("tokens_per_s"),
            "completion_tokens": ro.get("completion_tokens"), "prompt_tokens": ro.get("prompt_tokens"),
            "stopped_at_eos": ro.get("stopped_at_eos"), "merged_rollout": ro.get("merged"),
            "time_breakdown": s.get("time_breakdown"), "phase_peaks_gib": s.get("phase_peaks_gib"),
            "process_peak_gib": rec.get("process_peak_gib")}


def _f(x, fmt="{:.2f}", na="n/a"):
    return na if x is None else fmt.format(x)


def _mem_na(rec: dict) -> str:
    return "n/a on CPU" if (rec.get("gpu") or {}).get("device", "cpu") == "cpu" or not rec.get("memory_method") \
        or rec.get("memory_method") == "n/a on CPU" else "n/a"


def _reason(rec: dict) -> str:
    st = rec.get("status")
    reason = (rec.get("reason") or st or "").replace("|", "/").replace("\n", " ")
    if st == "oom":
        return f"out of memory ({rec.get('failed_in') or 'start-up'}): {reason[:140]}"
    if st == "error" and not reason.startswith("error"):
        reason = f"error: {reason}"
    if st == "timeout" and rec.get("process_peak_gib") is not None:
        return f"{reason[:160]}; peak until then {rec['process_peak_gib']:.2f} GiB"
    return reason[:200]


def workload_sig(meta: dict) -> tuple:
    """record_key(rec)[2:] of the records that belong to meta's workload."""
    return (meta.get("prompt_length"), meta.get("num_generations"), meta.get("gradient_checkpointing"),
            meta.get("model_label"))
