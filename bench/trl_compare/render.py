"""The results files: the markdown and the plot drawn from the records, and `--render`.

Owns: the markdown (`render_markdown`: every measurement, the pivot tables, peer / ours ratios, the
detail tables of tables.py, the goals of goals.py, settings, versions, notes), the plot of peak
memory and step time against context length (`plot_results`), writing the JSON, markdown and plot
(`write_results`), and redrawing a results folder from its JSON after merging other runs' files
into it, with reasons for settings not measured (`render_from`, `parse_not_run`).

Refuses to know: how anything is measured (no GPU needed).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bench.trl_compare.goals import goal_rows
from bench.trl_compare.records import _f, _mem_na, _reason, headline, load_existing, merge, record_key, workload_sig
from bench.trl_compare.systems import (NAME, OURS_SYSTEMS, SYSTEMS, SYSTEM_LABELS, UNSLOTH_SYSTEMS, log, parse_length,
                                       short)
from bench.trl_compare.tables import bandwidth_table, time_table, unsloth_section


def render_markdown(records: list[dict], meta: dict) -> str:
    sig = workload_sig(meta)
    others = [r for r in records if record_key(r)[2:] != sig]
    records = [r for r in records if record_key(r)[2:] == sig]
    params = meta.get("params", 0)
    size = f"{params / 1e9:.2f} B" if params >= 1e8 else f"{params / 1e6:.2f} M"
    on_cpu = all((r.get("gpu") or {}).get("device", "cpu") == "cpu" for r in records if r.get("gpu"))
    lines = [f"# Ours vs TRL GRPOTrainer: one GRPO step, {meta.get('model_label', '')}", ""]
    lines += [
        (f"Model: {meta.get('model_label')} with random weights ({size} parameters, "
         f"{meta.get('dtype')}), LoRA r16 / alpha 32 on q k v o gate up down; 1 prompt x G = "
         f"{meta.get('num_generations')} completions per step, prompt {meta.get('prompt_length')} tokens, every "
         f"completion forced to the full length (no early EOS); GRPO loss 'dapo', beta 0, epsilon 0.2 / 0.28, "
         f"lr 1e-5, gradient checkpointing {meta.get('gradient_checkpointing')}. Each (system, length) ran in its own "
         f"process; the reported step is the last finished one (normally step {meta.get('steps')} of "
         f"{meta.get('steps')})."),
        "",
        ("**CPU smoke test**: no GPU, so every memory figure is n/a; the times say only that the code runs. "
         if on_cpu else "")
        + "**Peak** = device peak: GPU memory in use (NVML, polled every "
        f"{meta.get('interval_ms')} ms from a thread; the low-water mark of free memory) at its highest during the "
        "step, minus what was in use before the process started: it includes vLLM's pool (weights + KV cache), the "
        "CUDA context and allocator caches. **Working** = peak - base weights"
        + (" (for ours-4bit its NF4 weights, `core.memory.sizes.weight_bytes(load_in_4bit=True)`)"
           if any(r.get("system") == "ours-4bit" for r in records) else "")
        + ". torch's max_memory_allocated "
        "(blind to vLLM's pool) is given beside it. Rollout = getting the completions (ours: engine wake-up + "
        "generate + release; TRL: `_generate_single_turn`, including its vLLM weight sync); tokens/s = completion "
        "tokens / rollout seconds. `python -m bench.trl_compare` wrote this; raw figures in `trl_compare.json`"
        + (f" (which also holds {len(others)} record(s) of other workloads, not shown here)." if others else "."),
        "",
        "## Every measurement",
        "",
        ("| system | completion (context) | status | peak GiB | working GiB | torch max alloc / reserved GiB | "
         "step s | rollout s | rollout tok/s | completion tokens min-max x n (EOS stops) | prompt tokens |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rec in records:
        h = headline(rec)
        L = rec.get("completion_length")
        ctx = (L or 0) + (rec.get("prompt_length") or 0)
        name = rec.get("system")
        head = f"| {name} | {L} ({ctx}) |"
        if rec.get("status") != "ok" or not h:
            lines.append(f"{head} {_reason(rec)} | | | | | | | | |")
            continue
        na = _mem_na(rec)
        ct, pt = h.get("completion_tokens") or {}, h.get("prompt_tokens") or {}
        tokens = f"{ct.get('min')}-{ct.get('max')} x {ct.get('n')} ({h.get('stopped_at_eos')})" if ct else "n/a"
        mb = rec.get("micro_batch_size_final") or (rec.get("trl_config") or {}).get("per_device_train_batch_size")
        mb = f"; micro-batch {mb}" if mb else ""
        predicted = (rec.get("plan") or {}).get("predicted_device_peak_gib")
        mb += f"; planner predicted {predicted:.2f} GiB" if predicted else ""
        lines.append(
            f"{head} ok (step {h['step']}{mb}) | {_f(h['device_peak_gib'], na=na)} | {_f(h['working_gib'], na=na)} | "
            f"{_f(h['torch_max_allocated_gib'], na=na)} / {_f(h['torch_max_reserved_gib'], na=na)} | "
            f"{_f(h['step_seconds'], '{:.1f}')} | {_f(h['rollout_seconds'], '{:.1f}')} | "
            f"{_f(h['rollout_tokens_per_s'], '{:.0f}')} | {tokens} | {pt.get('min')}-{pt.get('max')} |")

    systems = [s for s in SYSTEMS if any(r.get("system") == s for r in records)]
    lengths = sorted({r.get("completion_length") for r in records if r.get("completion_length")})
    by = {(r.get("system"), r.get("completion_length")): r for r in records}

    def pivot(title: str, cell) -> list[str]:
        out = ["", f"## {title}", "", "| completion (context) | " + " | ".join(systems) + " |",
               "|---|" + "---|" * len(systems)]
        for L in lengths:
            ctx = L + (meta.get("prompt_length") or 0)
            row = [cell(by.get((s, L))) if (s, L) in by else "not measured" for s in systems]
            out.append(f"| {L} ({ctx}) | " + " | ".join(row) + " |")
        return out

    def mem_cell(rec):
        h = headline(rec)
        if rec.get("status") != "ok" or not h:
            return _reason(rec)
        if h["device_peak_gib"] is None:
            return _mem_na(rec)
        return f"{h['device_peak_gib']:.2f} (working {h['working_gib']:.2f})"

    def time_cell(rec):
        h = headline(rec)
        if rec.get("status") != "ok" or not h:
            return _reason(rec)
        return f"{_f(h['step_seconds'], '{:.1f}')} s, {_f(h['rollout_tokens_per_s'], '{:.0f}')} tok/s"

    def ratio_table(base: str, peers: tuple) -> list[str]:
        rows = []
        for L in lengths:
            ours = headline(by.get((base, L), {})) if by.get((base, L), {}).get("status") == "ok" else {}
            for s in peers:
                peer = by.get((s, L), {})
                ph = headline(peer) if peer.get("status") == "ok" else {}
                if ours.get("device_peak_gib") and ph.get("device_peak_gib"):
                    rows.append(
                        f"| {L} | {s} | {ph['device_peak_gib'] / ours['device_peak_gib']:.2f}x | "
                        + (f"{ph['working_gib'] / ours['working_gib']:.2f}x | "
                           if ours.get("working_gib") else "n/a | ")
                        + f"{ph['step_seconds'] / ours['step_seconds']:.2f}x | "
                        + (f"{ours['rollout_tokens_per_s'] / ph['rollout_tokens_per_s']:.2f}x |"
                           if ours.get("rollout_tokens_per_s") and ph.get("rollout_tokens_per_s") else "n/a |"))
        if not rows:
            return []
        return ["", f"## Peer / {base}", "",
                (f"| completion | peer | peak, peer / {base} | working, peer / {base} | step time, peer / {base} | "
                 f"rollout tok/s, {base} / peer |"), "|---|---|---|---|---|---|"] + rows

    lines += pivot("Peak GPU memory (GiB) against context length", mem_cell)
    lines += pivot("Step time and rollout tokens/s against context length", time_cell)
    lines += ratio_table("ours", ("trl", "trl-vllm", "unsloth", "unsloth-defaults"))
    lines += ratio_table("ours-fast", ("ours", "trl", "trl-vllm", "unsloth", "unsloth-defaults"))
    # the 4-bit base against our bf16 run and against TRL and Unsloth
    lines += ratio_table("ours-4bit", ("ours", "trl", "trl-vllm", "unsloth-4bit"))
    lines += time_table(records)
    lines += bandwidth_table(records, meta)
    lines += unsloth_section(records)
    goals = goal_rows(records, meta)
    if goals:
        lines += ["", "## Goals (benchmark issues 6 and 21)", "",
                  ("Judged on the device peak of the reported step (as above: all the process holds on the GPU, "
                   "vLLM's pool and the CUDA context included). GiB = 2^30 bytes, GB = 10^9 bytes."), "",
                  "| # | goal | completion | value | target | result |", "|---|---|---|---|---|---|"]
        lines += [f"| {g['id']} | {g['goal']} | {g['completion']} | {g['value']} | {g['target']} | {g['result']} |"
                  for g in goals]

    lines += ["", "## Settings", ""]
    trl_rec = next((r for r in records if r.get("trl_config") and r.get("system") == "trl"), None)
    trlv_rec = next((r for r in records if r.get("trl_config") and r.get("system") == "trl-vllm"), None)
    for system in OURS_SYSTEMS:
        ours_rec = next((r for r in records if r.get("ours_config") and r.get("system") == system), None)
        if ours_rec:
            lines.append(f"- {system}: `core.rl.algorithms.make_trainer(cfg)`, then `train_step()` x {meta.get('steps')}; "
                         f"cfg = `{json.dumps(ours_rec['ours_config'])}`; engine "
                         f"`{json.dumps((ours_rec.get('engine') or {}).get('details', {}))}`; "
                         f"full length: {ours_rec.get('full_length_method')}; config defaults were "
                         f"`{json.dumps(ours_rec.get('ours_defaults'))}`.")
    for rec in (trl_rec, trlv_rec):
        if rec:
            grpo = ", ".join(f"{k}={v!r}" for k, v in rec["trl_config"].items())
            lora = ", ".join(f"{k}={v!r}" for k, v in rec["trl_peft_config"].items())
            lines.append(f"- {rec['system']}: `GRPOConfig({grpo})`, `LoraConfig({lora})`, "
                         "reward: share of distinct characters.")
    for system in UNSLOTH_SYSTEMS:
        rec = next((r for r in records if r.get("trl_config") and r.get("system") == system), None)
        if rec:
            uc = (rec.get("unsloth_config") or {}).get("from_pretrained") or {}
            fp = ", ".join(f"{k}={v!r}" for k, v in uc.items())
            peft = ", ".join(f"{k}={v!r}" for k, v in (rec.get("unsloth_peft_config") or {}).items())
            grpo = ", ".join(f"{k}={v!r}" for k, v in rec["trl_config"].items())
            dropped = rec.get("trl_config_dropped")
            lines.append(f"- {system}: `FastLanguageModel.from_pretrained({fp})`, `get_peft_model({peft})`, "
                         f"`GRPOConfig({grpo})`" + (f" (this TRL has no {dropped})" if dropped else "")
                         + f"; full length: {rec.get('full_length_method')}.")
    lines += ["", "## Versions", ""]
    seen: dict = {}
    for rec in records:
        if rec.get("status") == "not run":  # measured nothing, on no machine: its reason is in the tables
            continue
        v = rec.get("versions") or {}
        g = rec.get("gpu") or {}
        key = (json.dumps(v, sort_keys=True), g.get("device"), g.get("driver"))
        seen.setdefault(key, {"v": v, "g": g, "dates": set(), "who": []})
        seen[key]["dates"].add((rec.get("started") or "")[:10])
        seen[key]["who"].append(f"{rec.get('system')}@{rec.get('completion_length')}")
    for item in seen.values():
        v, g = item["v"], item["g"]
        gpu = ", ".join(x for x in (f"{g['total_gib']} GiB" if g.get("total_gib") else "",
                                     f"CUDA {g['cuda']}" if g.get("cuda") else "",
                                     f"driver {g['driver']}" if g.get("driver") else "") if x)
        dates = ", ".join(sorted(d for d in item["dates"] if d))
        lines.append(f"- torch {v.get('torch')}, vllm {v.get('vllm')}, trl {v.get('trl')}, transformers "
                     f"{v.get('transformers')}, peft {v.get('peft')}; {g.get('device') or 'device unknown'}"
                     + (f" ({gpu})" if gpu else "") + (f"; {dates}" if dates else "")
                     + f": {', '.join(item['who'])}")
    notes = [f"{r.get('system')}@{r.get('completion_length')}: {n}" for r in records for n in r.get("notes", [])]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


PLOT_STYLE = {"ours": ("tab:blue", "o", "-"), "ours-fast": ("navy", "D", "-"), "ours-4bit": ("tab:cyan", "s", "-"),
              "trl": ("tab:red", "^", "--"), "trl-vllm": ("tab:orange", "v", "--"),
              "unsloth": ("tab:green", "P", ":"), "unsloth-4bit": ("yellowgreen", "X", ":"),
              "unsloth-defaults": ("darkgreen", "*", ":")}


def plot_results(records: list[dict], meta: dict, path: Path) -> bool:
    """Peak GPU memory and step time against context length, one line per system; a setting that
    could not run is an x on the axis with its reason. False (and no file) without matplotlib or
    without a single finished measurement."""
    if not any(r.get("status") == "ok" and (headline(r) or {}).get("step_seconds") for r in records):
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(12, 4.6))
    for system in SYSTEMS:
        rows = sorted((r for r in records if r.get("system") == system), key=lambda r: r.get("completion_length") or 0)
        if not rows:
            continue
        color, marker, style = PLOT_STYLE[system]
        ok = [(r, headline(r)) for r in rows if r.get("status") == "ok" and headline(r)]
        ctx = [(r.get("completion_length") or 0) + (r.get("prompt_length") or 0) for r, _ in ok]
        peaks = [h.get("device_peak_gib") for _, h in ok]
        if any(p is not None for p in peaks):
            ax_mem.plot([c for c, p in zip(ctx, peaks) if p is not None], [p for p in peaks if p is not None],
                        marker=marker, linestyle=style, color=color, label=SYSTEM_LABELS[system])
        times = [h.get("step_seconds") for _, h in ok]
        ax_time.plot([c for c, t in zip(ctx, times) if t], [t for t in times if t], marker=marker, linestyle=style,
                     color=color, label=SYSTEM_LABELS[system])
        for r in rows:
            if r.get("status") not in ("ok", "not run"):
                c = (r.get("completion_length") or 0) + (r.get("prompt_length") or 0)
                ax_mem.plot([c], [0], marker="x", color=color, markersize=10, linestyle="none")
                ax_mem.annotate(str(r.get("status")), (c, 0), textcoords="offset points", xytext=(0, 8),
                                ha="center", fontsize=7, color=color)
    for ax, title, unit in ((ax_mem, "Peak GPU memory of one GRPO step", "GiB (NVML, whole process)"),
                            (ax_time, "Time of one GRPO step", "seconds")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (prompt + completion tokens)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_time.set_yscale("log")
    ax_mem.set_ylim(bottom=0)
    fig.suptitle(f"{meta.get('model_label', '')}, G = {meta.get('num_generations')}, LoRA r16", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results(out_dir: Path, records: list[dict], meta: dict, name: str = NAME) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": NAME, "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "meta": meta,
            "records": [{**r, "headline": headline(r)} for r in records], "goals": goal_rows(records, meta)}
    tmp = out_dir / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, out_dir / f"{name}.json")
    md = render_markdown(records, meta)
    try:
        plotted = plot_results(records, meta, out_dir / f"{name}.png")
    except Exception as e:  # a plot problem never costs the measurements
        log(f"no plot: {short(e)}")
        plotted = False
    if plotted:
        md = md.replace("\n## Every measurement", f"\n![memory and step time against context length]({name}.png)\n\n"
                        "## Every measurement", 1)
    (out_dir / f"{name}.md").write_text(md)


def parse_not_run(text: str) -> tuple[str, int, str]:
    """'SYSTEM@LENGTH=why' -> (system, length, why), for --not-run.

    >>> parse_not_run("trl@8k=HF generate is too slow")
    ('trl', 8192, 'HF generate is too slow')
    """
    head, sep, why = text.partition("=")
    system, at, length = head.partition("@")
    if not (sep and at and why.strip()) or system.strip() not in SYSTEMS:
        raise ValueError(f"--not-run wants SYSTEM@LENGTH=why with SYSTEM one of {', '.join(SYSTEMS)}: {text!r}")
    return system.strip(), parse_length(length), why.strip()


def render_from(out_dir: Path, name: str, merge_from: list[str], not_run: list[str] = ()) -> int:
    """Re-render a results folder's markdown and plot from its JSON, after merging the records of
    other runs' JSON files into it (e.g. the files a GPU command brought back). `not_run` entries
    ('SYSTEM@LENGTH=why') put the reason a setting was not measured into the tables where no
    measurement of it exists (it never replaces one)."""
    # (each record's "headline" is derived again by write_results)
    paths = [out_dir / f"{name}.json"] + [Path(x) for x in merge_from]
    records: list[dict] = []
    meta: dict = {}
    for path in paths:
        if path.exists():
            records = merge(records, load_existing(path.parent, path.stem))
            meta = meta or json.loads(path.read_text()).get("meta") or {}
    for entry in not_run:
        system, length, why = parse_not_run(entry)
        rec = {"system": system, "label": SYSTEM_LABELS[system], "completion_length": length, "steps": [],
               "notes": [], "status": "not run", "reason": f"not run: {why}", "model": meta.get("model_label"),
               "gradient_checkpointing": meta.get("gradient_checkpointing"),
               "prompt_length": meta.get("prompt_length"), "num_generations": meta.get("num_generations")}
        records = merge(records, [rec])
    write_results(out_dir, records, meta, name)
    log(f"rendered {out_dir / (name + '.md')} from {len(records)} records")
    return 0
