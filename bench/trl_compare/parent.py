"""The parent process: plans the (system, length) settings and runs each in its own child.

Owns: the plan and the command's time budget (`run_parent`: the model folder, the settings in
order, skipping a system at longer lengths after a failure, "not run" records with their reason),
one child's command line (`child_command`: `python -m bench.trl_compare --child ...`, an Unsloth
system's from a shell that sourced its env.sh first), running it under a time limit and reading
its record back (`run_one`), and the facts of the machine it records (`gpu_present`, `git_commit`).

Refuses to know: what a child does inside (ours.py, trl_side.py, unsloth_side.py) and how the
markdown is laid out (render.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import config_digest, spawn_child, stop_group, versions, write_model_folder
from bench.trl_compare.records import _reason, load_existing, merge, prior_failure, results_name, variant_of
from bench.trl_compare.render import write_results
from bench.trl_compare.systems import (RESULTS, ROOT, SYSTEMS, SYSTEM_LABELS, TARGETS, TINY_CONFIG, UNSLOTH_ENV,
                                       UNSLOTH_SYSTEMS, cannot_run, fit_length, log, parse_lengths)
from bench.trl_compare.unsloth_side import unsloth_log_facts


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or None
    except Exception:  # noqa: BLE001
        return None


def gpu_present() -> bool:
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    with contextlib.suppress(Exception):
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20, check=False).returncode == 0
    return False


def log_tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [ln for ln in lines if ln.strip() and "it/s]" not in ln and "s/it]" not in ln]
    return "\n".join(keep[-n:])


def child_command(args, system: str, length: int, model_dir: Path, json_out: Path, deadline: float,
                  python: str = sys.executable, unsloth_env: str = UNSLOTH_ENV) -> list[str]:
    """The command line of one measurement (its own process). An Unsloth system's Python starts
    from a shell that sources the Unsloth part's env.sh first (its trl 1.15 before the kit's)."""
    cmd = [python, "-m", "bench.trl_compare", "--child", system, "--length", str(length),
           "--model-dir", str(model_dir), "--json-out", str(json_out), "--deadline", f"{deadline:.1f}",
           "--prompt-len", str(args.prompt_len), "--generations", str(args.generations), "--steps", str(args.steps),
           "--gradient-checkpointing", args.gradient_checkpointing, "--interval-ms", str(args.interval_ms),
           "--trl-vllm-util", str(args.trl_vllm_util), "--trl-vllm-sleep", args.trl_vllm_sleep,
           "--trl-vllm-is", getattr(args, "trl_vllm_is", "on"),
           "--ours-engine", args.ours_engine, "--ours-micro-batch", str(args.ours_micro_batch),
           "--ours-kv-dtype", args.ours_kv_dtype, "--ours-merged", args.ours_merged,
           "--ours-cuda-graphs", getattr(args, "ours_cuda_graphs", "all"),
           "--ours-runner", getattr(args, "ours_runner", "auto"), "--ours-weights", getattr(args, "ours_weights", "auto"),
           "--decode-probe", getattr(args, "decode_probe", "off"),
           "--unsloth-util", str(args.unsloth_util), "--unsloth-overhead-gib", str(args.unsloth_overhead_gib),
           ] + (["--ours-offload"] if args.ours_offload else []) + (["--ours-eager"] if args.ours_eager else []) \
        + (["--ours-compile"] if getattr(args, "ours_compile", False) else [])
    if system in UNSLOTH_SYSTEMS:
        return ["bash", "-c", 'source "$1" && shift && exec "$@"', "unsloth-env", unsloth_env] + cmd
    return cmd


def run_one(args, system: str, length: int, requested: int, model_dir: Path, log_dir: Path, timeout: float,
            common: dict) -> dict:
    json_out = log_dir / f"{system}-{length}.json"
    log_path = log_dir / f"{system}-{length}.log"
    json_out.unlink(missing_ok=True)
    deadline = time.time() + timeout - 5
    cmd = child_command(args, system, length, model_dir, json_out, deadline)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # NVML's index = CUDA's
    for k, v in {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                 "WANDB_DISABLED": "true"}.items():
        env.setdefault(k, v)
    log(f"{system} @ {length}: start (limit {timeout:.0f} s; log {log_path})")
    t0 = time.time()
    status = None
    with open(log_path, "w") as fh:
        proc = spawn_child(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = "timeout"
            stop_group(proc)
            rc = proc.returncode
        except BaseException:  # the parent interrupted (Ctrl-C): the child too (killed outright: _die_with_parent)
            stop_group(proc)
            raise
    wall = time.time() - t0
    try:
        rec = json.loads(json_out.read_text())
    except (OSError, ValueError):
        rec = {"system": system, "label": SYSTEM_LABELS[system], "completion_length": length, "steps": [],
               "notes": []}
    rec.pop("_t0", None)
    rec.update(common)
    rec["requested_length"] = requested
    rec["wall_seconds"] = round(wall, 1)
    rec["exit_code"] = rc
    if status == "timeout":
        where = rec.get("phase") or "start-up"
        if rec.get("process_peak_gib_so_far") is not None:
            rec["process_peak_gib"] = rec["process_peak_gib_so_far"]
        if rec.get("steps"):  # a step finished: report it, say the next one was cut
            rec["status"] = "ok"
            rec.setdefault("notes", []).append(f"cut by the time limit ({timeout:.0f} s) in {where}")
        else:
            rec["status"] = "timeout"
            rec["reason"] = f"timeout after {timeout:.0f} s (in {where})"
    elif rec.get("status") in (None, "running"):
        rec["status"] = "error"
        rec["reason"] = f"the process exited with code {rc} during {rec.get('phase') or 'start-up'}"
    rec.pop("process_peak_gib_so_far", None)
    if system in UNSLOTH_SYSTEMS:  # what Unsloth said it switched on, and the KV cache vLLM reported
        with contextlib.suppress(OSError):
            rec["unsloth_log"] = unsloth_log_facts(log_path.read_text(errors="replace"))
    if rec["status"] != "ok":
        rec["log_tail"] = log_tail(log_path)
    why = f" - {rec['reason']}" if rec.get("reason") else ""
    log(f"{system} @ {length}: {rec['status']} in {wall:.0f} s{why}")
    return rec


def run_parent(args) -> int:
    t_start = time.time()
    tiny = args.tiny
    out_dir = Path(args.out) if args.out else (None if tiny else RESULTS)
    if out_dir is None:
        sys.exit("--tiny needs --out DIR (tiny results never go to bench/results/)")
    if tiny and out_dir.resolve() == RESULTS.resolve():
        sys.exit("--tiny results never go to bench/results/: give another --out")
    cuda = gpu_present()  # what the children will find; ours-4bit is not launched without it
    if not tiny and not cuda and not args.force:
        sys.exit("no NVIDIA GPU found: run on a GPU, or use --tiny --out DIR for the CPU smoke test")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.trl_vllm and "trl-vllm" not in systems:
        systems.append("trl-vllm")
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        sys.exit(f"unknown system(s) {bad}: choose from {', '.join(SYSTEMS)}")

    config = dict(TINY_CONFIG) if tiny else json.loads(Path(args.model_config).read_text())
    model_label = "tiny Qwen2 (hidden 64, 2 layers)" if tiny else f"{Path(args.model_config).stem} shape"
    dtype = "float32" if tiny else "bfloat16"
    model_dir = Path(args.model_dir) if args.model_dir else Path(tempfile.gettempdir()) / "aha-bench-models" / (
        ("tiny" if tiny else Path(args.model_config).stem) + "-" + config_digest(config))
    log(f"model folder {model_dir} ...")
    info = write_model_folder(model_dir, config, dtype)
    how = "reused" if info["reused"] else f"built in {info['seconds']} s"
    log(f"model folder ready ({how}), {info['params'] / 1e6:.2f} M params")

    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="aha-trl-compare-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    name = "trl_compare" if tiny else results_name(args.model_config, variant_of(args))
    existing = [] if args.fresh else load_existing(out_dir, name)
    meta = {"model_label": model_label, "model_config": config, "params": info["params"], "dtype": dtype,
            "prompt_length": args.prompt_len, "num_generations": args.generations, "steps": args.steps,
            "gradient_checkpointing": args.gradient_checkpointing, "interval_ms": args.interval_ms,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": TARGETS}, "tiny": tiny,
            "bandwidth_gbs": args.bandwidth_gbs,
            "parent_versions": versions(), "git": git_commit(),
            "command": " ".join([Path(sys.executable).name] + sys.argv)}
    common = {"model": model_label, "gradient_checkpointing": args.gradient_checkpointing,
              "prompt_length": args.prompt_len, "num_generations": args.generations, "git": meta["git"]}
    sig = (args.prompt_len, args.generations, args.gradient_checkpointing, model_label)
    max_pos = int(config.get("max_position_embeddings", 1 << 30))
    plan = []
    for requested in parse_lengths(args.lengths):
        length, note = fit_length(requested, args.prompt_len, max_pos)
        for s in systems:
            plan.append((s, length, requested, note))
    new: list[dict] = []
    budget_end = t_start + args.budget_s
    for system, length, requested, note in plan:
        failed = None if args.no_skip else prior_failure(existing + new, system, length, sig)
        left = budget_end - time.time()
        unable = cannot_run(system, cuda)
        if failed is not None:
            rec = {"system": system, "label": SYSTEM_LABELS[system], "completion_length": length, "steps": [],
                   "notes": [], "status": "not run",
                   "reason": f"not run: {failed['status']} already at {failed['completion_length']} tokens "
                             f"({_reason(failed)[:120]})", **common}
            log(f"{system} @ {length}: {rec['reason']}")
        elif unable or left < args.min_child_s:
            why = unable or (f"{left:.0f} s left of this command's --budget-s {args.budget_s:.0f}; "
                             "measure it in another command")
            rec = {"system": system, "label": SYSTEM_LABELS[system], "completion_length": length, "steps": [],
                   "notes": [], "status": "not run", "reason": f"not run: {why}", **common}
            log(f"{system} @ {length}: {rec['reason']}")
        else:
            rec = run_one(args, system, length, requested, model_dir, log_dir, min(args.timeout_s, left - 10), common)
        if note:
            rec.setdefault("notes", []).append(note)
        new.append(rec)
        write_results(out_dir, merge(existing, new), meta, name)
    records = merge(existing, new)
    write_results(out_dir, records, meta, name)
    log(f"wrote {out_dir / (name + '.json')} and {out_dir / (name + '.md')} in {time.time() - t_start:.0f} s")
    print((out_dir / f"{name}.md").read_text())
    return 0
