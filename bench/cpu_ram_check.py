"""The CPU memory plan (core.memory.planner.plan_cpu) against the measured RAM of one training step.

For each setting it starts the app's RunManager on the CPU, loads the bundled SmolLM2-135M and
answers one chat (so the libraries and the weights are in RAM), notes the process's resident
memory, then trains one step of configs/quickstart.yaml and reads that step's peak resident
memory (`peak_ram_gb`, core/memory/ram.py). The step's own RAM is the peak minus the resident memory
before it; the plan's is its total less the weights, which were loaded already. The prompt
limit is set to the longest prompt of the setting, so plan and step see the same lengths.

    python bench/cpu_ram_check.py          # 5-17 minutes on 2 cores (idle to busy); writes bench/results/cpu_ram_check.{json,md}

The rows are the ones CPU_STEP_WEIGHT_COPIES (core/memory/planner.py) was chosen from; the last one cuts
the model to 15 of its 30 layers (the first 15, its own weights) to see what follows the weights.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30
LONG = " Remember: " + " ".join(["be careful and precise"] * 90)  # ~360 more prompt tokens
# (name, micro-batch, longer system prompt, decoder layers kept: 0 = all)
SETTINGS = [("short, micro-batch 8", 8, False, 0), ("short, micro-batch 4", 4, False, 0),
            ("long, micro-batch 8", 8, True, 0), ("15 of 30 layers, short, micro-batch 8", 8, False, 15)]


def resident_bytes() -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def cut_model(layers: int) -> str:
    """The bundled model's folder with only its first `layers` decoder layers (a copy in /tmp)."""
    import shutil

    from core.models.loading import default_model_path

    folder = Path(tempfile.mkdtemp(prefix="aha-ram-model-")) / "model"
    shutil.copytree(default_model_path(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return str(folder)


def measure(name: str, micro_batch: int, long: bool, layers: int) -> dict:
    """One step of the quickstart on a fresh RunManager: the plan and the measured step."""
    import torch

    from core.config import Config, ModelConfig
    from core.data import build_messages, load_task_data, render_prompt
    from core.app.manager import RunManager

    torch.set_num_threads(2)
    cfg = Config.load(ROOT / "configs" / "quickstart.yaml")
    cfg.run.output_dir, cfg.run.engine = tempfile.mkdtemp(prefix="aha-ram-"), "hf"
    cfg.algorithm.max_steps, cfg.algorithm.micro_batch_size = 1, micro_batch
    if long:
        cfg.data.system_prompt += LONG
    if layers:
        cfg.model.name_or_path = cut_model(layers)
    manager = RunManager(cfg.run.output_dir, ModelConfig(name_or_path=cfg.model.name_or_path), device="cpu",
                         engine="hf")
    try:
        manager.load_model(cfg.model)
        manager.chat("hi", "base", max_tokens=4)
        tok = manager._tokenizer
        rows = load_task_data(cfg.data).train
        cfg.algorithm.max_prompt_length = max(
            len(tok(render_prompt(tok, build_messages(r["question"], cfg.data.system_prompt), "",
                                  cfg.data.response_prefix), add_special_tokens=False)["input_ids"]) for r in rows)
        plan = manager.memory_plan(cfg)
        before = resident_bytes()
        t0 = time.time()
        manager.start(cfg)
        state = manager.wait(timeout=1800)
        peak = float(manager.metrics()["peak_ram_gb"].iloc[0]) * GIB
    finally:
        manager.close()
    weights_gb = float(re.search(r"weights ([\d.]+) GB", plan["text"]).group(1))  # as the plan rounds it
    planned = plan["peak_gb"] - weights_gb
    measured = (peak - before) / GIB
    return {"setting": name, "layers": layers or 30, "weights_gb": weights_gb, "micro_batch": micro_batch,
            "prompt_tokens": cfg.algorithm.max_prompt_length,
            "completion_tokens": cfg.algorithm.max_completion_length, "state": state,
            "step_s": round(time.time() - t0, 1), "resident_before_gb": round(before / GIB, 3),
            "step_peak_gb": round(peak / GIB, 3), "measured_step_gb": round(measured, 3),
            "planned_step_gb": round(planned, 3), "error": f"{planned / measured - 1:+.1%}", "plan": plan["text"]}


def main() -> int:
    import multiprocessing as mp

    rows = []
    ctx = mp.get_context("spawn")  # each setting in a fresh process: its own resident memory and peak
    for setting in SETTINGS:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(measure, setting))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "plan"}), flush=True)
    out = ROOT / "bench" / "results"
    (out / "cpu_ram_check.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    lines = ["# CPU memory plan vs one measured step (bench/cpu_ram_check.py)", "",
             "SmolLM2-135M-Instruct in float32, configs/quickstart.yaml (G = 4, 2 prompts, 64 completion tokens), "
             "1 step on the CPU. Measured: the step's peak resident memory less the process's resident memory "
             "before it (model and libraries loaded). Planned: plan_cpu's peak less the weights.", "",
             "| setting | weights GB | prompt tokens | measured step GB | planned step GB | plan vs measured |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['weights_gb']:.2f} | {r['prompt_tokens']} | {r['measured_step_gb']:.2f} | "
              f"{r['planned_step_gb']:.2f} | {r['error']} |" for r in rows]
    (out / "cpu_ram_check.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
