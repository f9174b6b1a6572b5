"""The product's main path on a GPU, driven as a page drives it: `python app.py`, then HTTP calls
through gradio_client (issue 17), and the same recipe through the CLI in the same command.

What it does, each part with its own time budget, writing its JSON record as it goes:
  1) starts `python app.py --port P --runs-dir R` and waits for the page;
  2) fills the Train form from a recipe (+ `--set` overrides), presses /start, polls /status every
     2 s like the page's timer (state, step, queued answers, elapsed) with the GPU's memory in use
     (NVML) beside each poll, until the run ends;
  3) /ask (base and tuned) on a few prompts, then /evaluate on N held-out questions;
  4) failed runs: a reward that raises at step 2 (the run pauses; /stop), a setting no engine
     serves (refused before it starts), a LoRA rank above the engine's headroom (the engine is
     rebuilt in the process); after each, /ask must still answer;
  0) first, `--cli`: the same recipe through `python -m scripts.train` (fresh process), or
     `--cli-from` a record of that made by an earlier command (`--skip-app --cli`), and
     `--cli-before` the CLI with the engine sized as the app used to size it (max_num_seqs 32: the
     default run's 4 prompts x 8), to show where the app's 3.2x went; step times from each run's
     metrics.jsonl, with each step's split into phases (`time/*`), and the app over the CLI phase
     by phase, over the steps both ran and over those of them that sampled the same longest answer.

    python bench/app_drive.py --config configs/smollm2-largest.yaml --set model.lora_r=32 \\
        model.lora_alpha=64 algorithm.max_completion_length=256 --steps 100 --cli --out $OUT

Writes <out>/app_drive.json (and prints a summary). Refuses to know: how the app trains.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import host_cpu, throttling  # noqa: E402 - the repo root on sys.path first (run as a script)

RAISES_AT_STEP_2 = textwrap.dedent('''
    import os
    def fails_at_step_2(prompts, completions, **kwargs):
        path = {path!r}
        calls = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(calls + 1))
        if calls >= 1:
            raise ValueError("this reward breaks at step 2")
        return [0.0] * len(completions)
''')
PROMPTS = ["Which is bigger, 9.11 or 9.9?", "Which is the largest of 31, 74, 58, 19?", "What is 12 + 7?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NVML: list = []  # the device handle, once: nvmlInit on every 2 s poll touched the driver each time


def gpu_used_gib() -> float | None:
    try:
        import pynvml

        if not _NVML:
            pynvml.nvmlInit()
            _NVML.append(pynvml.nvmlDeviceGetHandleByIndex(0))
        return pynvml.nvmlDeviceGetMemoryInfo(_NVML[0]).used / 2**30
    except Exception:
        return None


class Record:
    def __init__(self, path: Path):
        self.path, self.data = path, {"started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def put(self, key, value):
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def form_values(cfg, params: set[str]) -> dict:
    """The Train form's widget values for `cfg`, by API name, for the widgets the endpoint takes."""
    values = {}
    for section, fields in cfg.to_dict().items():
        for name, value in fields.items():
            key = f"{section}_{name}"
            if key in params and not isinstance(value, list):
                values[key] = value
    from reward_presets import PRESET_NAMES

    weights = dict(zip(cfg.rewards.names, cfg.rewards.weights or [None] * len(cfg.rewards.names)))
    for n in PRESET_NAMES:
        if f"reward_{n}" in params:
            values[f"reward_{n}"] = n in cfg.rewards.names
        if f"weight_{n}" in params and weights.get(n) is not None:
            values[f"weight_{n}"] = weights[n]
    return values


def endpoint_params(client, name: str) -> set[str]:
    api = client.view_api(return_format="dict", print_info=False)
    ep = api["named_endpoints"][name]
    return {p["parameter_name"] for p in ep["parameters"]}


def status(client) -> dict:
    out = client.predict(api_name="/status")
    return next(o for o in out if isinstance(o, dict) and "state" in o)


def ask(client, prompt: str, target: str = "current") -> dict:
    params = endpoint_params(client, "/ask")
    kw = {"prompt_text": prompt, "base_history": [], "tuned_history": [], "target_value": target,
          "max_new": 128, "temp": 0.0}
    if "response_prefix" in params:  # as the page asks: with the target's own system prompt and prefix
        kw["system_prompt"], kw["response_prefix"], _ = client.predict(value=target, api_name="/asked_as")
    out = client.predict(**{k: v for k, v in kw.items() if k in params}, api_name="/ask")
    def text(history):
        content = history[-1]["content"] if history else ""
        if isinstance(content, list):  # gradio's message format: [{"type": "text", "text": ...}]
            return "".join(part.get("text", "") for part in content)
        return content

    return {"prompt": prompt, "base": text(out[0]), "tuned": text(out[1]),
            "system_prompt": kw.get("system_prompt"), "response_prefix": kw.get("response_prefix"),
            "note": out[3] if len(out) > 3 else ""}  # why base and tuned agree, when they do


def watch(client, rec: Record, key: str, budget_s: float, until=("finished", "failed", "stopped", "paused"),
          quiet: tuple[int, int] | None = None, quiet_poll_s: float = 10.0):
    """Poll /status every 2 s (as the page's timer does) until a state in `until`; while the run's
    step is in `quiet` [start, end), every `quiet_poll_s` instead (the app with no page polling)."""
    timeline, t0 = [], time.time()
    while time.time() - t0 < budget_s:
        s = status(client)
        timeline.append({"t": round(time.time() - t0, 2), "state": s["state"], "step": s["step"],
                         "queued": s.get("queued"), "elapsed": s.get("elapsed"), "gpu_gib": gpu_used_gib(),
                         "engine_note": s.get("engine_note", "")})
        if len(timeline) % 10 == 0:
            rec.put(key, timeline)
        if s["state"] in until and timeline[-1]["t"] > 1:
            break
        time.sleep(quiet_poll_s if quiet and quiet[0] <= s["step"] < quiet[1] else 2.0)
    rec.put(key, timeline)
    return timeline


def polled_vs_quiet(rows: list[dict], quiet: tuple[int, int], first: int = 25) -> dict | None:
    """The app's steps (metrics rows) from `first` on, in the quiet window (polled every 10 s) and
    outside it (every 2 s), over the steps of the most common longest answer (the same work): mean
    step and rollout time of each, and their ratio. None when either side has fewer than 3 steps."""
    rows = [r for r in rows if r.get("step", 0) >= first and "step_time" in r]
    if not rows:
        return None
    work = statistics.mode(r.get("completions/max_length") for r in rows)
    same = [r for r in rows if r.get("completions/max_length") == work]
    sides = {"quiet": [r for r in same if quiet[0] <= r["step"] < quiet[1]],
             "polled": [r for r in same if not quiet[0] <= r["step"] < quiet[1]]}
    if min(len(v) for v in sides.values()) < 3:
        return None
    out = {"completion_max_length": work, "quiet_steps": f"{quiet[0]}-{quiet[1] - 1}"}
    for name, rs in sides.items():
        out[name] = {"steps": len(rs), **{k: round(statistics.mean(r.get(k, 0.0) for r in rs), 4)
                                          for k in ("step_time", "time/rollout", "time/sample", "time/fold",
                                                    "time/forward_backward")}}
    out["polled_over_quiet"] = round(out["polled"]["step_time"] / out["quiet"]["step_time"], 4)
    return out


# beside the phases (`time/*`): the step's whole time and the work it did
BREAKDOWN_KEYS = ("step_time", "generation_time", "completions/mean_length", "completions/max_length",
                  "tokens_per_second", "rollout/kv_map_s", "rollout/kv_release_s")


def breakdown(rows: list[dict]) -> dict:
    """Each step's split: per step (None where a row lacks the key), each `time/*` and `sampling/*` key a row carries and
    BREAKDOWN_KEYS, rounded to 4 digits; their mean and median over steps 2..n (as mean_step_s).
    About 12 KB for 100 steps."""
    keys = [k for k in BREAKDOWN_KEYS if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r if k.startswith(("time/", "sampling/"))})  # + the IS correction's
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    per_step = {k: [round(r[k], 4) if number(r.get(k)) else None for r in rows] for k in keys}
    steady = {k: [v for v in vs[1:] or vs if v is not None] for k, vs in per_step.items()}
    return {"per_step": per_step,
            "mean": {k: round(statistics.mean(vs), 4) for k, vs in steady.items() if vs},
            "median": {k: round(statistics.median(vs), 4) for k, vs in steady.items() if vs}}


def step_times(metrics_path: Path) -> dict:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    times = [r["step_time"] for r in rows]
    gen = [r.get("generation_time", 0.0) for r in rows]
    steady = times[1:] or times  # step 1 carries the first CUDA-graph warm-up
    return {"steps": len(rows), "mean_step_s": statistics.mean(steady), "median_step_s": statistics.median(steady),
            "mean_generation_s": statistics.mean(gen[1:] or gen), "first_step_s": times[0] if times else None,
            "final_reward": rows[-1]["reward"] if rows else None, "step_times": [round(t, 4) for t in times],
            "breakdown": breakdown(rows)}


def engine_args(log_path: Path) -> str | None:
    """The first vLLM engine's arguments as its log line gives them ("non-default args: {...}"),
    at most 1,000 characters; None without a log or such a line."""
    if not log_path.exists():
        return None
    line = next((ln for ln in log_path.read_text(errors="replace").splitlines() if "non-default args:" in ln), None)
    return line[line.index("non-default args:"):][:1000] if line else None


def engine_build(log_path: Path) -> dict | None:
    r"""What each vLLM engine's build took, from the app's log: torch.compile's seconds and the
    CUDA graph capture's, one entry per engine. The same model and sizes on another host: these
    CPU-bound figures tell a slower host apart from a slower step of ours (2026-12-07: 27 s /
    14 s at 11:55 and 13:36, 38-46 s / 20-22 s at 15:12 and 19:09, whose steps were 1.7x slower).

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "app.log"
    >>> _ = f.write_text("INFO [monitor.py:53] torch.compile took 27.16 s in total\n"
    ...                  "INFO [model_runner.py:726] Graph capturing finished in 14 secs, took 0.50 GiB\n")
    >>> engine_build(f)
    {'compile_s': [27.16], 'graph_capture_s': [14.0]}
    """
    if not log_path.exists():
        return None
    text = log_path.read_text(errors="replace")
    compile_s = [float(x) for x in re.findall(r"torch\.compile took ([0-9.]+) s in total", text)]
    capture_s = [float(x) for x in re.findall(r"Graph capturing finished in ([0-9.]+) secs", text)]
    return {"compile_s": compile_s, "graph_capture_s": capture_s} if compile_s or capture_s else None


def matched_ratio(app: dict, cli: dict) -> dict | None:
    """App / CLI mean step over the same steps (2..n, n = the fewer of the two runs' steps): early
    steps sample longer answers than late ones, so runs cut at different steps do not compare
    (2026-12-06: an app run cut at step 62 read 1.23x against the CLI's 100 steps)."""
    a, c = app.get("step_times") or [], cli.get("step_times") or []
    n = min(len(a), len(c))
    if n < 3:
        return None
    return {"steps": f"2-{n}", "app_mean_s": statistics.mean(a[1:n]), "cli_mean_s": statistics.mean(c[1:n]),
            "ratio": statistics.mean(a[1:n]) / statistics.mean(c[1:n]),
            "median_ratio": statistics.median(a[1:n]) / statistics.median(c[1:n])}


def phase_ratios(app: dict, cli: dict) -> dict | None:
    """App mean / CLI mean of each key both breakdowns hold (the phases, step_time and the work), over
    the steps both ran (2..n, as matched_ratio) and over those of them where both sampled the same
    longest answer and mean lengths within 1% (the same work, so what differs is how the step runs);
    None where a side has no breakdown (a CLI record from before 2026-12-06 11:00) or too few steps."""
    a, c = (app.get("breakdown") or {}).get("per_step") or {}, (cli.get("breakdown") or {}).get("per_step") or {}
    n = min(len(a.get("step_time") or []), len(c.get("step_time") or []))
    if n < 3:
        return None
    keys = [k for k in a if k in c]
    la, lc = a.get("completions/max_length") or [None] * n, c.get("completions/max_length") or [None] * n
    ma, mc = a.get("completions/mean_length") or [None] * n, c.get("completions/mean_length") or [None] * n
    near = lambda x, y: x is None or y is None or abs(x - y) <= 0.01 * abs(y)  # noqa: E731 - mean lengths within 1%
    same = [i for i in range(1, n) if la[i] is not None and la[i] == lc[i] and near(ma[i], mc[i])]

    def over(steps):
        out = {}
        for k in keys:
            pairs = [(a[k][i], c[k][i]) for i in steps if a[k][i] is not None and c[k][i] is not None]
            if pairs:
                am, cm = statistics.mean(p[0] for p in pairs), statistics.mean(p[1] for p in pairs)
                out[k] = {"app": round(am, 4), "cli": round(cm, 4), "ratio": round(am / cm, 4) if cm else None}
        return out

    return {"steps": f"2-{n}", "by_phase": over(range(1, n)),
            "equal_work": {"steps": len(same), "by_phase": over(same)}}


def phase_table(by: dict) -> str:
    """app_over_cli_by_phase as lines to read at the end of the drive's output."""
    eq = by["equal_work"]

    def cells(v: dict) -> str:
        fmt = lambda x, w, p: format(x, f">{w}.{p}f") if x is not None else " " * w  # noqa: E731
        return f"{fmt(v.get('app'), 9, 4)} {fmt(v.get('cli'), 9, 4)} {fmt(v.get('ratio'), 7, 3)}"

    lines = [f"app/cli by phase, steps {by['steps']} | the {eq['steps']} of them with equal completions/max_length",
             f"{'':24} {'app':>9} {'cli':>9} {'ratio':>7} | {'app':>9} {'cli':>9} {'ratio':>7}"]
    lines += [f"{k:24} {cells(v)} | {cells(eq['by_phase'].get(k, {}))}" for k, v in by["by_phase"].items()]
    return "\n".join(lines)


def run_cli(cfg_path: str, sets: list[str], runs: Path, name: str, budget_s: float) -> dict:
    cmd = [sys.executable, "-m", "scripts.train", "--config", cfg_path, "--set", *sets,
           f"run.output_dir={runs}", f"run.run_name={name}"]
    t0, cpu_before = time.time(), host_cpu()
    from bench.common import spawn_child, stop_group

    log = runs / f"{name}.log"  # a file, not a pipe: a grandchild holding a pipe cannot keep this waiting
    runs.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        p = spawn_child(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            p.wait(timeout=budget_s)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            stop_group(p)  # the CLI and whatever it started (compile workers)
            rc = "timeout"
    tail = log.read_text(errors="replace")[-2000:]
    out = {"cmd": " ".join(cmd), "rc": rc, "wall_s": round(time.time() - t0, 1), "tail": tail,
           "host_cpu": cpu_before, "throttling": throttling(cpu_before, host_cpu())}
    metrics = runs / name / "metrics.jsonl"
    if metrics.exists():
        out.update(step_times(metrics))
    out["engine_args"] = engine_args(log)
    return out


def summarize(rec: Record) -> None:
    """The app over the CLI (mean step, matched steps, phase by phase) into the record, and the
    drive's printed summary: the records without their per-step breakdowns, then the phase table
    last (the session's modes keep the output's tail)."""
    d = rec.data
    if "app_steps" in d and "mean_step_s" in d.get("cli", {}):
        rec.put("app_over_cli", d["app_steps"]["mean_step_s"] / d["cli"]["mean_step_s"])
        rec.put("app_over_cli_matched", matched_ratio(d["app_steps"], d["cli"]))
        rec.put("app_over_cli_by_phase", phase_ratios(d["app_steps"], d["cli"]))
    brief = lambda v: {k: x for k, x in v.items() if k != "breakdown"} if isinstance(v, dict) else v  # noqa: E731
    print(json.dumps({k: brief(d.get(k)) for k in ("app_steps", "cli", "cli_before", "app_over_cli", "app_over_cli_matched",
                                                   "evaluation", "failures", "chat", "app_polled_vs_quiet",
                                                   "app_throttling")},
                     indent=1, default=str)[:6000])
    if d.get("app_over_cli_by_phase"):
        print(phase_table(d["app_over_cli_by_phase"]))
    elif (d.get("cli") or {}).get("breakdown"):  # the CLI half alone (app-cli)
        print("cli means, steps 2..n:", json.dumps(d["cli"]["breakdown"]["mean"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-n", type=int, default=200)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--runs-dir", default="/tmp/app-drive-runs")
    ap.add_argument("--cli", action="store_true", help="also the same recipe through python -m scripts.train")
    ap.add_argument("--cli-before", type=int, default=0, help="steps of the CLI with the old app engine sizing")
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--cli-from", default="", help="an app_drive.json whose 'cli' record (a --skip-app --cli "
                    "run, its own command before this one) is the CLI side here: the app's run then has the whole "
                    "command's budget")
    ap.add_argument("--model", default="", help="app.py --model (default: the bundled SmolLM2)")
    ap.add_argument("--budget-s", type=float, default=560)
    ap.add_argument("--quiet-steps", default="", metavar="A-B",
                    help="poll /status every 10 s instead of 2 s while the run is at steps A..B (is the page's "
                         "polling what slows the app's steps? app_polled_vs_quiet in the record)")
    args = ap.parse_args(argv)

    from core.config import Config
    from core.config_text import apply_overrides

    t_start = time.time()
    left = lambda: args.budget_s - (time.time() - t_start)  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec = Record(out / "app_drive.json")
    sets = [*args.set, f"algorithm.max_steps={args.steps}"]
    cfg = apply_overrides(Config.load(args.config), sets)
    cfg.run.run_name = ""
    from bench.common import versions

    rec.put("recipe", {"config": args.config, "set": sets, "versions": versions()})
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)

    # 1) the CLI first, same recipe, and the old app sizing (step times exclude the engine start; the
    # app's engine, sized otherwise, compiles again: 43.5 s on 2026-12-06), or its record from an
    # earlier command (--cli-from), so the app's run has this command's whole budget
    if args.cli_from:
        if not Path(args.cli_from).is_file():  # it lives on the machine that ran app-cli: a fresh one has none
            raise SystemExit(f"{args.cli_from} is missing: run the CLI half (--skip-app --cli) on this machine first")
        earlier = json.loads(Path(args.cli_from).read_text())
        if "mean_step_s" not in earlier.get("cli", {}):
            raise SystemExit(f"{args.cli_from} holds no CLI run with step times")
        rec.put("cli", {**earlier["cli"], "from": args.cli_from, "started": earlier.get("started")})
    if args.cli and left() > 60:
        rec.put("cli", run_cli(args.config, sets, runs / "cli", "cli", left() - 10))
    if args.cli_before and left() > 60:
        rec.put("cli_before", run_cli(args.config, [*args.set, f"algorithm.max_steps={args.cli_before}",
                                                    "run.vllm_max_num_seqs=32"], runs / "cli", "cli-before",
                                      left() - 10))

    if not args.skip_app:
        port = free_port()
        log = open(out / "app_drive_app.log", "w")
        from bench.common import spawn_child

        app = spawn_child([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs / "app"),
                           *(["--model", args.model] if args.model else [])],
                          cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            from gradio_client import Client

            t0 = time.time()
            while True:
                try:
                    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                    break
                except Exception:
                    if time.time() - t0 > 120 or app.poll() is not None:
                        raise
                    time.sleep(1)
            rec.put("app_page_s", round(time.time() - t0, 1))
            params = endpoint_params(client, "/start")
            # 2) the run, as the page starts it
            values = form_values(cfg, params)
            message = client.predict(**values, api_name="/start")
            rec.put("start_message", message)
            quiet = tuple(int(x) for x in args.quiet_steps.split("-")) if args.quiet_steps else None
            if quiet:
                quiet = (quiet[0], quiet[1] + 1)  # "50-74": steps 50 to 74
            cpu_before = host_cpu()
            timeline = watch(client, rec, "status_timeline", max(60, left() - 150), quiet=quiet)
            rec.put("app_host_cpu", cpu_before)
            rec.put("app_throttling", throttling(cpu_before, host_cpu()))
            s = status(client)
            if s["state"] in ("loading", "running", "paused"):  # out of budget: stop it, so the parts below start from a quiet app
                rec.put("app_run_cut", {"at_step": s["step"], "of": s.get("max_steps"), "stop": client.predict(api_name="/stop")})
                watch(client, rec, "cut_timeline", 120, until=("stopped", "failed", "finished"))
                s = status(client)
            rec.put("run_status", s)
            run_dir = runs / "app" / s["run_name"] if s.get("run_name") else None
            if run_dir and (run_dir / "metrics.jsonl").exists():
                rec.put("app_steps", step_times(run_dir / "metrics.jsonl"))
                if quiet:
                    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
                    rec.put("app_polled_vs_quiet", polled_vs_quiet(rows, quiet))
                (out / "app_metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text())
                import tarfile  # the run's logs (no adapter: rank 32 is ~39 MB), for the Train-tab screenshot

                with tarfile.open(out / "app_run.tgz", "w:gz") as tar:
                    for f in ("config.yaml", "metrics.jsonl", "samples.jsonl", "status.json"):
                        if (run_dir / f).exists():
                            tar.add(run_dir / f, arcname=f"{run_dir.name}/{f}")
            rec.put("gpu_peak_gib_seen", max((p["gpu_gib"] or 0) for p in timeline) if timeline else None)
            # 3) chat and evaluation
            rec.put("chat", [ask(client, p) for p in PROMPTS])
            t0 = time.time()
            ev = client.predict(target_value="current", n=args.eval_n, api_name="/evaluate")
            result = next((o for o in ev if isinstance(o, dict) and "base" in o), None)
            rec.put("evaluation", {"result": result, "seconds": round(time.time() - t0, 1), "table": ev[0]})
            # 4) failed runs; the engine must serve every time
            failures = {}
            if left() > 90:
                bad = form_values(apply_overrides(cfg, ["algorithm.max_steps=3"]), params)
                bad["rewards_custom_code"] = RAISES_AT_STEP_2.format(path=str(runs / "calls"))
                failures["reward_raises_start"] = client.predict(**bad, api_name="/start")
                tl = watch(client, rec, "failing_reward_timeline", 90)
                failures["reward_raises_state"] = tl[-1]["state"] if tl else None
                failures["reward_raises_reason"] = status(client).get("pause_reason")
                failures["stop"] = client.predict(api_name="/stop")
                watch(client, rec, "stop_timeline", 60, until=("stopped", "failed", "finished"))
                failures["chat_after_reward_failure"] = ask(client, PROMPTS[0])
                refused = form_values(apply_overrides(cfg, ["model.lora_r=1000"]), params)
                failures["refused_rank_1000"] = client.predict(**refused, api_name="/start")
                if not failures["refused_rank_1000"].startswith("⚠️"):  # the HF engine has no rank limit
                    watch(client, rec, "rank_1000_timeline", 120, until=("finished", "failed", "stopped"))
                failures["chat_after_refusal"] = ask(client, PROMPTS[0])
                rec.put("failures", failures)
            if left() > 100:
                big = form_values(apply_overrides(cfg, ["model.lora_r=128", "model.lora_alpha=128",
                                                        "algorithm.max_steps=5"]), params)
                failures["rank_128_start"] = client.predict(**big, api_name="/start")
                tl = watch(client, rec, "rebuild_timeline", min(240, left() - 30),
                           until=("finished", "failed", "stopped"))
                failures["rank_128_state"] = tl[-1]["state"] if tl else None
                failures["rank_128_status"] = status(client)
                failures["chat_after_rebuild"] = ask(client, PROMPTS[0])
                rec.put("failures", failures)
        finally:
            app.terminate()
            try:
                app.wait(timeout=30)
            except subprocess.TimeoutExpired:
                app.kill()
            log.close()
        rec.put("app_engine_args", engine_args(out / "app_drive_app.log"))
        rec.put("app_engine_build", engine_build(out / "app_drive_app.log"))
    summarize(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
