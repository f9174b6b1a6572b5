"""The exported TRL script builds TRL's GRPOTrainer from our config, offline, in its own process."""

from __future__ import annotations

import json
from pathlib import Path
import os
import subprocess
import sys

import yaml

from core.config import Config
from core.export.trl_script import export_trl

# TRL's own rewards imported, and a function named like a preset: it replaces the preset (issue 30)
CUSTOM = '''from trl.rewards import think_format_reward

def brevity(prompts, completions, **kwargs):
    """Shorter is better."""
    return [-len(c[0]["content"]) / 100 for c in completions]

def correctness(prompts, completions, answer, **kwargs):
    return [1.0 if str(a) in c[0]["content"] else 0.0 for c, a in zip(completions, answer)]
'''


def test_exported_script_builds_trl_grpo_trainer(tiny_model_dir, tmp_path):
    cfg = Config()
    cfg.model.name_or_path, cfg.model.lora_r, cfg.model.lora_alpha = str(tiny_model_dir), 8, 16
    cfg.data.train_size, cfg.data.eval_size = 24, 4
    cfg.rewards.names, cfg.rewards.weights = ["format_soft", "correctness"], [0.25, 2.0]
    cfg.rewards.custom_code = CUSTOM
    a = cfg.algorithm
    a.algorithm, a.loss_type, a.beta, a.epsilon, a.epsilon_high = "gspo", "grpo", 0.04, 0.15, 0.3
    a.num_generations, a.prompts_per_step, a.micro_batch_size, a.gradient_accumulation_steps = 4, 3, 4, 2
    a.num_iterations, a.max_completion_length, a.learning_rate, a.max_steps = 2, 48, 3e-5, 7
    a.temperature, a.top_p, a.scale_rewards, a.seed = 0.9, 0.95, "batch", 11
    cfg.run.run_name = "exported"
    cfg.data.source = "builtin:decimal_compare"
    cfg.data.curriculum_column = "a"  # a numeric column of decimal_compare; TRL cannot follow it
    paths = export_trl(cfg, tmp_path / "out")
    assert set(paths) == {"script", "accelerate_config", "readme", "custom_rewards"}

    # the accelerate config is DeepSpeed ZeRO-2; the README says how to go multi-node
    acc = yaml.safe_load(paths["accelerate_config"].read_text())
    assert acc["distributed_type"] == "DEEPSPEED" and acc["deepspeed_config"]["zero_stage"] == 2
    readme = paths["readme"].read_text()
    assert "accelerate launch --config_file accelerate_zero2.yaml" in readme
    assert "--num_machines 2" in readme and "--machine_rank" in readme and "--main_process_ip" in readme
    assert "24 completions" in readme  # 3 prompts x 4 completions x 2 accumulation steps

    # it finds this repository without an install: the path it puts first is the repository's root
    root = Path(__file__).resolve().parents[1]
    assert f"AHA_STUDIO_ROOT\", {str(root)!r})" in paths["script"].read_text() and (root / "core" / "config.py").is_file()

    # run it in its own process, offline, from another folder: it builds the trainer and prints
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(paths["script"]), "--build-only"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    assert built["trainer"] == "GRPOTrainer" and built["peft"].startswith("PeftModel")
    assert built["model"] == str(tiny_model_dir)
    assert built["reward_funcs"] == ["format_soft", "correctness", "think_format_reward", "brevity"]
    assert "rewards: custom reward 'correctness' replaces the preset of that name (weight 2)" in proc.stderr
    assert "note: data.curriculum_column 'a' is not carried" in proc.stderr
    assert "note: data.stop_at '</answer>' is not carried" in proc.stderr  # the default; no vLLM on a CPU
    assert built["train_rows"] == 24
    args = built["args"]
    assert args["reward_weights"] == [0.25, 2.0, 1.0, 1.0]
    assert (args["loss_type"], args["beta"], args["epsilon"], args["epsilon_high"]) == ("grpo", 0.04, 0.15, 0.3)
    assert args["importance_sampling_level"] == "sequence"  # gspo
    assert (args["num_generations"], args["num_iterations"], args["max_completion_length"]) == (4, 2, 48)
    assert (args["temperature"], args["top_p"], args["scale_rewards"], args["seed"]) == (0.9, 0.95, "batch", 11)
    assert (args["learning_rate"], args["max_steps"]) == (3e-5, 7)
    # one process: 24 completions per step, micro-batches of at most 4
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 24
    assert args["per_device_train_batch_size"] == 4 and args["generation_batch_size"] == 24
    assert args["use_vllm"] is False and args["generation_kwargs"] is None
