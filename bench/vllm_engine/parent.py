"""The parent process: the model folder once, one child per KV-cache dtype, then the results.

Owns: writing the random model and its tokenizer (bench/common.py) or reusing a folder, starting
each child (`python -m bench.vllm_engine --kv ...`) under the time guard, echoing its '[bench]'
lines, stopping one that overruns, reading its record back, and writing vllm_engine.json and .md
(refusing to write --tiny results into bench/results).

Refuses to know: what a child measures inside (child.py) and how it is judged (report.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import write_model_folder
from bench.vllm_engine.kv_log import LogCapture
from bench.vllm_engine.report import _get, render_markdown, summarize
from bench.vllm_engine.workload import NAME, ROOT, STEPS_BY_KV, TINY_CONFIG, WORKLOAD, log, short, versions


def run_child(args, kv: str, steps: list[str], model_dir: Path, work: Path, soft_deadline: float,
              hard_deadline: float) -> dict:
    """One child process; its '[bench]' lines are echoed, everything goes to its log file."""
    json_out = work / f"{NAME}.{kv}.json"
    log_path = Path(args.log_dir or work) / f"{NAME}.{kv}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.vllm_engine", "--kv", kv, "--json-out", str(json_out),
           "--model-dir", str(model_dir), "--deadline", str(soft_deadline), "--steps", ",".join(steps)]
    if args.tiny:
        cmd.append("--tiny")
    for key in WORKLOAD:
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", TOKENIZERS_PARALLELISM="false")
    t0 = time.time()
    tail: list[str] = []
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=str(ROOT), bufsize=1)

        def pump():
            for line in proc.stdout:
                logf.write(line)
                tail.append(line.rstrip("\n"))
                del tail[:-40]
                if line.startswith("[bench]"):
                    print(line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=max(5.0, hard_deadline - time.time()))
        except subprocess.TimeoutExpired:
            log(f"{kv}: child overran the time guard; stopping it (pid {proc.pid})")
            _stop(proc)
            rc = "killed: time guard"
        reader.join(timeout=10)
    try:
        result = json.loads(json_out.read_text())
    except Exception as e:
        result = {"kv_cache_dtype": kv, "steps": {}, "error": f"no results from the child ({short(e)})"}
    kv_rec = (result.get("steps") or {}).get("kv_capacity")
    if isinstance(kv_rec, dict) and "tokens_from_log" not in kv_rec and log_path.exists():
        m = LogCapture.PATTERNS["kv_tokens"].search(log_path.read_text(errors="replace"))
        if m:  # the child's capture missed vLLM's line; its printed log has it
            kv_rec["tokens_from_log_file"] = int(m.group(1).replace(",", ""))
    result["exit"] = rc
    result["wall_seconds"] = time.time() - t0
    result["log"] = str(log_path)
    if rc != 0:
        result["log_tail"] = tail[-25:]
        print("\n".join(f"    | {line}" for line in tail[-25:]), flush=True)
    return result


def _stop(proc) -> None:
    """SIGTERM, then SIGKILL, to the child we started (by its pid; its helpers exit with it)."""
    for stop, wait in ((proc.terminate, 10), (proc.kill, 5)):
        try:
            stop()
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def run_parent(args):
    import torch

    t0 = time.time()
    deadline = t0 + args.budget_s
    cuda = torch.cuda.is_available()  # no context is created here: the GPU is the children's
    if args.tiny:
        out = args.out or Path(tempfile.mkdtemp(prefix="vllm_engine_bench_"))
        if out.resolve() == (ROOT / "bench" / "results").resolve():
            sys.exit("--tiny results never go to bench/results: pick another --out")
    else:
        if not cuda:
            sys.exit("no CUDA GPU here; use --tiny for a CPU smoke test")
        out = args.out or ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vllm_engine_work_"))
    modes = args.kv_modes.split(",") if args.kv_modes else ["auto", "fp8"]

    # 1) the model folder, once
    config = TINY_CONFIG if args.tiny else json.loads((ROOT / "bench" / "configs" / f"{args.config}.json").read_text())
    config_name = "tiny-qwen2" if args.tiny else args.config
    if args.model_dir and (Path(args.model_dir) / "config.json").exists():
        model_dir = Path(args.model_dir)
        saved = model_dir / "bench_model.json"
        info = json.loads(saved.read_text()) if saved.exists() else {}
        info["reused"] = True
    else:
        model_dir = Path(args.model_dir) if args.model_dir else work / "model"
        log(f"writing a random {config_name} model and tokenizer to {model_dir} ...")
        info = write_model_folder(model_dir, config, "float32" if args.tiny and not cuda else "bfloat16")
        log(f"model: {info['params'] / 1e6:,.1f} M parameters, vocab {info['vocab_size']}, {info['seconds']:.1f} s")

    # 2) one child per KV-cache dtype; 'auto' first, leaving the fp8 child its share of the budget
    runs = {}
    reserve = 60 if args.tiny else 160  # seconds kept for each later child (start-up + its steps)
    runnable = [m for m in modes if cuda or args.kv_modes or not m.startswith("fp8")]  # fp8 on CPU if asked
    for i, kv in enumerate(modes):
        if kv not in runnable:
            runs[kv] = {"kv_cache_dtype": kv, "skipped": "no CUDA", "steps": {}}
            log(f"{kv}: skipped: no CUDA")
            continue
        later = len([m for m in modes[i + 1:] if m in runnable])
        soft = deadline - 10 - reserve * later
        if soft - time.time() < 60:
            runs[kv] = {"kv_cache_dtype": kv, "skipped": "time guard: no time left for a child", "steps": {}}
            continue
        steps = STEPS_BY_KV.get(kv, STEPS_BY_KV["fp8"])
        runs[kv] = run_child(args, kv, steps, model_dir, work, soft, soft + 35)

    # 3) results
    meta = {"name": NAME, "date": time.strftime("%Y-%m-%d"), "time": time.strftime("%H:%M:%S"),
            "mode": "tiny" if args.tiny else "gpu", "config": config_name, "model": info,
            "versions": versions(), "gpu": next((r.get("gpu") for r in runs.values() if r.get("gpu")), None),
            "device": "cuda" if cuda else (platform.processor() or "cpu"), "cpu_count": os.cpu_count(),
            "workload": {k: getattr(args, k) for k in WORKLOAD}, "budget_s": args.budget_s,
            "engine_settings": next((_get(runs, m, "engine_start")["settings"] for m in runs
                                     if _get(runs, m, "engine_start").get("settings")), {}),
            "wall_seconds": None}
    for r in runs.values():  # the engine's own versions (vllm lives in the children's environment)
        for k, v in (r.get("versions") or {}).items():
            meta["versions"][k] = meta["versions"].get(k) or v
    rows = summarize(runs)
    meta["wall_seconds"] = time.time() - t0
    (out / f"{NAME}.json").write_text(json.dumps({"meta": meta, "summary": rows, "runs": runs}, indent=1,
                                                 default=str) + "\n")
    markdown = render_markdown(meta, rows)
    (out / f"{NAME}.md").write_text(markdown)
    if not args.model_dir:
        import shutil

        shutil.rmtree(model_dir, ignore_errors=True)
    print()
    print(markdown)
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.md')} in {meta['wall_seconds']:.0f} s; "
          f"child logs: {Path(args.log_dir or work)}")
