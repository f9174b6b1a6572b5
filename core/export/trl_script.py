"""Beyond one host: export a run's config as a standalone TRL GRPOTrainer script.

Owns: turning our `Config` into TRL's words — `GRPOConfig` (loss_type, beta, epsilon, ...,
with the batch split over however many processes `accelerate launch` starts), a peft
`LoraConfig`, the reward presets as TRL reward functions with our weights, the dataset from our
own data loader — and writing, into one folder:

    train_trl.py            the script (`--build-only` builds the trainer, prints it and exits)
    accelerate_zero2.yaml   an accelerate config for DeepSpeed ZeRO-2
    custom_rewards.py       the run's custom reward code, when it has any
    README.md               how to launch it on one host and on several

Data parallel on the GPUs of one host needs none of this (`accelerate launch -m scripts.train`,
see `core/rl/distributed.py`); TRL + DeepSpeed is the road to several nodes.

Refuses to know: how TRL trains. The script imports this repository (data loader, reward
presets), so it runs from the repository root or with AHA_STUDIO_ROOT set.

    python -m scripts.export_trl --config configs/quickstart.yaml --out exported/quickstart
"""

from __future__ import annotations

import pprint
from pathlib import Path

from core.config import Config
from core.memory.sizes import sequences_per_step

REPO_ROOT = Path(__file__).resolve().parents[2]  # core/export/trl_script.py -> the repository

SCRIPT = '''#!/usr/bin/env python
"""GRPO with TRL for the Aha Studio run {run_name!r}: the same model, data, rewards and
hyper-parameters on TRL's GRPOTrainer, so the run can grow past one host (accelerate + DeepSpeed).

Exported by `python -m scripts.export_trl`. It imports the Aha Studio repository (data loader,
reward presets): run it from there, or set AHA_STUDIO_ROOT. See README.md beside it.

    accelerate launch --config_file accelerate_zero2.yaml train_trl.py
    python train_trl.py --build-only      # build the trainer, print what it got, exit
"""

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("AHA_STUDIO_ROOT", {repo_root!r}))
sys.path.insert(0, str(HERE))  # custom_rewards.py

# The Aha Studio config this script was exported from.
CONFIG = {config}


def dataset(cfg):
    """Our training rows as TRL's conversational prompts; every column reaches the rewards."""
    from datasets import Dataset

    from core.data import build_messages, load_task_data

    rows = load_task_data(cfg.data).train
    # A response prefix becomes a final assistant message, which TRL continues
    # (continue_final_message); TRL's rewards then see the completion without the prefix.
    prefix = [{{"role": "assistant", "content": cfg.data.response_prefix}}] if cfg.data.response_prefix else []
    return Dataset.from_list([{{**{{k: v for k, v in r.items() if k not in ("prompt", "completion")}},
                               "prompt": build_messages(r["question"], cfg.data.system_prompt) + prefix}}
                              for r in rows])


def reward_functions(cfg):
    """(functions, weights): the presets with our weights and the custom functions, weight 1, as the
    app combines them (a custom function with a preset's name takes that preset's place)."""
    from core.rewards.code import find_rewards
    from core.rewards.registry import combine
    from reward_presets import load_preset

    names = cfg.rewards.names
    weights = [float(w) for w in cfg.rewards.weights] or [float(load_preset(n).DEFAULT_WEIGHT) for n in names]
    custom, notes = {{}}, []
    if (HERE / "custom_rewards.py").exists():
        import custom_rewards  # the run's own code, in this process (no sandbox here)

        found = find_rewards(vars(custom_rewards))
        custom, notes = found.functions, found.notes
    slots, combined = combine(names, weights, list(custom))
    for note in notes + combined:
        print(f"rewards: {{note}}", file=sys.stderr)
    funcs = [custom[n] if source == "custom" else getattr(load_preset(n), n) for n, _, source in slots]
    return funcs, [w for _, w, _ in slots]


def grpo_config(cfg, weights, output_dir, world_size):
    """Our algorithm section as TRL's GRPOConfig. One optimizer step sees prompts_per_step x G x
    gradient_accumulation_steps completions, split over the processes."""
    import torch
    from trl import GRPOConfig

    from core.memory.sizes import sequences_per_step

    a = cfg.algorithm
    completions = sequences_per_step(cfg)
    if completions % world_size:
        raise SystemExit(f"{{completions}} completions per step do not split over {{world_size}} processes")
    per_process = completions // world_size
    batch = max(d for d in range(1, min(a.micro_batch_size or 8, per_process) + 1) if per_process % d == 0)
    cuda = torch.cuda.is_available()
    bf16 = cuda and cfg.model.dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    use_vllm = cuda and cfg.run.engine != "hf" and __import__("importlib").util.find_spec("vllm") is not None
    return GRPOConfig(
        output_dir=output_dir,
        # the objective
        loss_type=a.loss_type,
        beta=a.beta,
        epsilon=a.epsilon,
        epsilon_high=a.epsilon_high,
        use_bias_correction_kl=a.use_bias_correction_kl,
        importance_sampling_level="sequence" if a.algorithm == "gspo" else "token",
        scale_rewards=a.scale_rewards,
        mask_truncated_completions=a.mask_truncated_completions,
        num_generations=a.num_generations,
        num_iterations=a.num_iterations,
        reward_weights=weights,
        # sampling
        temperature=a.temperature,
        top_p=a.top_p,
        max_completion_length=a.max_completion_length,
        # data.stop_at: vLLM ends a completion at the text, kept (when it is not carried: main())
        generation_kwargs={{"stop": [cfg.data.stop_at], "include_stop_str_in_output": True}}
        if use_vllm and cfg.data.stop_at and not a.mask_truncated_completions else None,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_importance_sampling_correction=a.vllm_importance_sampling_correction and a.algorithm in ("grpo", "gspo"),
        vllm_importance_sampling_mode=a.vllm_importance_sampling_mode,
        vllm_importance_sampling_clip_max=a.vllm_importance_sampling_clip_max,
        vllm_importance_sampling_clip_min=a.vllm_importance_sampling_clip_min or None,
        # optimisation
        learning_rate=a.learning_rate,
        lr_scheduler_type=a.lr_scheduler,
        warmup_steps=a.warmup_steps,
        weight_decay=a.weight_decay,
        max_grad_norm=a.max_grad_norm,
        max_steps=a.max_steps,
        seed=a.seed,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=per_process // batch,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        bf16=bf16,
        use_cpu=not cuda,
        model_init_kwargs={{"dtype": "bfloat16" if bf16 else "float32"}},
        # bookkeeping
        logging_steps=1,
        save_steps=cfg.run.save_steps,
        save_total_limit=cfg.run.keep_checkpoints or None,
        report_to="none",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-only", action="store_true", help="build the trainer, print a summary, exit")
    ap.add_argument("--output-dir", default=str(HERE / "output"))
    ap.add_argument("--max-steps", type=int, help="override the config's algorithm.max_steps (a smoke test)")
    args = ap.parse_args()

    from peft import LoraConfig
    from trl import GRPOTrainer

    from core.config import Config
    from core.data import DEFAULT_CHAT_TEMPLATE
    from core.models.loading import load_tokenizer, resolve_model_path

    cfg = Config.from_dict(CONFIG)
    cfg.algorithm.max_steps = args.max_steps or cfg.algorithm.max_steps
    if cfg.algorithm.algorithm not in ("grpo", "gspo"):
        print(f"note: algorithm {{cfg.algorithm.algorithm!r}} runs as GRPO under TRL's GRPOTrainer", file=sys.stderr)
    if cfg.data.curriculum_column.strip():
        print(f"note: data.curriculum_column {{cfg.data.curriculum_column.strip()!r}} is not carried: TRL's GRPOTrainer "
              "draws the rows in random order from the first step", file=sys.stderr)
    model_path = str(resolve_model_path(cfg.model.name_or_path))
    tokenizer = load_tokenizer(model_path)
    if cfg.data.chat_template.strip():
        tokenizer.chat_template = cfg.data.chat_template
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    funcs, weights = reward_functions(cfg)
    training_args = grpo_config(cfg, weights, args.output_dir, int(os.environ.get("WORLD_SIZE", "1")))
    if cfg.data.stop_at and not training_args.generation_kwargs:
        why = ("TRL counts a completion that does not end at EOS as cut, and mask_truncated_completions would "
               "drop those from the loss" if training_args.use_vllm else
               "TRL's transformers generation ends a completion at EOS or the token limit only")
        print(f"note: data.stop_at {{cfg.data.stop_at!r}} is not carried: {{why}}", file=sys.stderr)
    lora = LoraConfig(r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=cfg.model.lora_dropout,
                      target_modules=list(cfg.model.lora_target_modules), task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model_path, reward_funcs=funcs, args=training_args, train_dataset=dataset(cfg),
                          processing_class=tokenizer, peft_config=lora)
    if args.build_only:
        keys = ("loss_type", "beta", "epsilon", "epsilon_high", "importance_sampling_level", "scale_rewards",
                "num_generations", "num_iterations", "max_completion_length", "temperature", "top_p",
                "learning_rate", "lr_scheduler_type", "max_steps", "seed", "per_device_train_batch_size",
                "gradient_accumulation_steps", "generation_batch_size", "reward_weights", "use_vllm", "generation_kwargs",
                "vllm_importance_sampling_correction", "vllm_importance_sampling_mode")
        print(json.dumps({{
            "trainer": type(trainer).__name__,
            "model": model_path,
            "args": {{k: getattr(training_args, k) for k in keys}},
            "reward_funcs": [f.__name__ for f in funcs],
            "train_rows": len(trainer.train_dataset),
            "peft": type(trainer.model).__name__,
        }}))
        return
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
'''

ZERO2_YAML = """\
# accelerate + DeepSpeed ZeRO-2 (optimizer state and gradients sharded over every process).
# num_machines / num_processes / machine_rank are overridden on the command line (README.md).
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  deepspeed_multinode_launcher: standard
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: false
  zero_stage: 2
machine_rank: 0
main_training_function: main
mixed_precision: bf16
num_machines: 1
num_processes: 8
rdzv_backend: static
same_network: true
use_cpu: false
"""

README = """\
# {run_name}: GRPO with TRL, on one host or several

Exported from Aha Studio by `python -m scripts.export_trl`. `train_trl.py` rebuilds the run's
model, LoRA adapter, data and reward functions and trains them with TRL's `GRPOTrainer`
(needs `pip install trl==1.16.0 deepspeed`, and this repository: run from its root or set
`AHA_STUDIO_ROOT`). One optimizer step sees {completions} completions, split over all processes:
the number of processes must divide it.

Check that it builds (no GPU needed):

```bash
python train_trl.py --build-only
```

One host, 8 GPUs, DeepSpeed ZeRO-2:

```bash
accelerate launch --config_file accelerate_zero2.yaml --num_processes 8 train_trl.py
```

Several hosts (here 2 with 8 GPUs each): run the same command on every host, each with its own
`--machine_rank` (0 on the host whose address is `--main_process_ip`):

```bash
accelerate launch --config_file accelerate_zero2.yaml \\
    --num_machines 2 --num_processes 16 --machine_rank $MACHINE_RANK \\
    --main_process_ip $MAIN_HOST --main_process_port 29500 \\
    train_trl.py
```

`--num_processes` counts the GPUs of all hosts together. With vLLM installed, generation runs
in-process on each GPU (`vllm_mode="colocate"`). Logs and checkpoints go to `output/`.
"""


def export_trl(cfg: Config, out_dir: str | Path) -> dict[str, Path]:
    """Write the TRL script, the ZeRO-2 accelerate config and a README into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = cfg.to_dict()
    custom = d["rewards"]["custom_code"]
    d["rewards"]["custom_code"] = ""  # written beside the script instead, as a module TRL can call
    paths = {"script": out / "train_trl.py", "accelerate_config": out / "accelerate_zero2.yaml",
             "readme": out / "README.md"}
    name = cfg.run.run_name or "run"
    paths["script"].write_text(SCRIPT.format(run_name=name, repo_root=str(REPO_ROOT),
                                             config=pprint.pformat(d, sort_dicts=False, width=100)))
    paths["accelerate_config"].write_text(ZERO2_YAML)
    paths["readme"].write_text(README.format(run_name=name, completions=sequences_per_step(cfg)))
    if custom.strip():
        paths["custom_rewards"] = out / "custom_rewards.py"
        paths["custom_rewards"].write_text(custom)
    return paths
