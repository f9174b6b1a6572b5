"""Headless training: `python -m scripts.train --config run.yaml` (or `aha-train`), with a progress bar.

Owns: the command line. Everything it does goes through the trainer that
`core.rl.algorithms.make_trainer` picks for the config (GRPOTrainer or a subclass), the same object
the app drives, so a run started here and one started in the browser are identical and the app
lists both. `--resume RUN_DIR` continues a run from its last checkpoint. Launched by `accelerate
launch` or `torchrun`, each process drives one GPU and the run is data parallel
(`core/rl/distributed.py`); rank 0 prints and writes the run folder.

    python -m scripts.train --config configs/quickstart.yaml
    python -m scripts.train --config configs/quickstart.yaml --set algorithm.max_steps=5 model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct
    python -m scripts.train --config configs/quickstart.yaml --set algorithm.max_steps=5 --set run.run_name=try2
    python -m scripts.train --resume runs/quickstart
    accelerate launch --num_processes 4 -m scripts.train --config configs/quickstart.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import Config, ConfigError
from core.config_text import apply_overrides
from core.errors import AhaError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train a LoRA adapter with GRPO, headless.")
    ap.add_argument("--config", help="run config YAML (see configs/)")
    ap.add_argument("--resume", help="a run folder to continue from its latest checkpoint")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override config fields (repeatable: every --set applies)")
    ap.add_argument("--rewards-file", metavar="PATH",
                    help="a Python file of reward functions with TRL's signature (prompts, completions, **kwargs); "
                         "its text goes into the run's config (rewards.custom_code), so the run keeps its own copy")
    ap.add_argument("--eval", action="store_true", help="evaluate base and tuned on the held-out split at the end")
    args = ap.parse_args(argv)
    try:
        return _train(ap, args)
    except AhaError as e:  # written for a person: printed without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _train(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.rl import distributed
    from core.rl.algorithms import make_trainer
    from core.runs.folders import RunDir

    try:
        if args.resume:
            run = RunDir(args.resume)
            if not run.config_path.is_file():
                raise ConfigError(f"{args.resume} is not a run folder (it has no config.yaml)")
            cfg = apply_overrides(run.load_config(), args.set)
        elif args.config:
            run = None
            cfg = apply_overrides(Config.load(args.config), args.set)
        else:
            ap.error("give --config or --resume")
        if args.rewards_file:
            cfg.rewards.custom_code = Path(args.rewards_file).read_text()
    except (ConfigError, OSError) as e:  # OSError: no such config or rewards file
        print(f"config error: {e}", file=sys.stderr)
        return 2

    import torch

    from core.data import load_task_data
    from core.memory.planner import step_size_refusal
    from core.memory.ram import available_bytes

    too_large = step_size_refusal(cfg, on_gpu=torch.cuda.is_available(), available_bytes=available_bytes())
    if too_large:
        raise ConfigError(too_large)
    task = load_task_data(cfg.data)  # a bad data file says so before minutes of model loading
    device = distributed.setup()  # None unless launched with several processes
    trainer = make_trainer(cfg, run_dir=run, device=device, task=task)
    if distributed.is_main():
        for note in task.notes:  # a small built-in task trains on what it has
            print(f"data: {note}", file=sys.stderr)
        for note in getattr(trainer.rewards, "notes", []):  # a custom reward replaced a preset
            print(f"rewards: {note}", file=sys.stderr)
    if run is not None and trainer.resume() and distributed.is_main():
        print(f"resumed {run.path} at step {trainer.step}")
        for note in trainer.resume_notes:
            print(note, file=sys.stderr)
    bar = tqdm(total=cfg.algorithm.max_steps, initial=trainer.step, desc=trainer.run.name, unit="step",
               disable=not distributed.is_main())

    def on_step(result):
        m = result.metrics
        bar.update(1)
        bar.set_postfix(reward=f"{m['reward']:.3f}", len=f"{m['completions/mean_length']:.0f}",
                        tok_s=f"{m['tokens_per_second']:.0f}")

    trainer.on_step = on_step
    trainer.control.stop_on_pause = True  # headless: a pause (failing reward, OOM) stops with a checkpoint
    if not distributed.active():  # one process: SIGTERM stops after the step, with a checkpoint (several
        import signal             # ranks would each stop at a step of their own; torchrun's handling stays)

        signal.signal(signal.SIGTERM, lambda signum, frame: trainer.control.stop())
    state = trainer.train()
    bar.close()
    main_process = distributed.is_main()
    distributed.teardown()
    if not main_process:
        return 0 if state in ("finished", "stopped") else 1
    print(f"{state}: {trainer.run.path} (step {trainer.step})")
    if trainer.control.pause_reason:
        print(f"stopped because: {trainer.control.pause_reason}", file=sys.stderr)
        return 1
    if args.eval:
        from core.evaluation.evaluate import changed_answers, evaluate_base_and_tuned

        report = evaluate_base_and_tuned(trainer)
        for who, r in report.items():
            flexible = "" if r["accuracy_flexible"] is None else f"  last-number {r['accuracy_flexible']:.1%}"
            print(f"{who:>5}: accuracy {r['accuracy']:.1%}{flexible}  format {r['format_rate']:.1%}  (n={r['n']})")
        changed = changed_answers(report)
        print(f"held-out answers that changed: {len(changed)} of {report['base']['n']} (greedy, base vs tuned)")
        if changed:
            c = changed[0]
            print(f"  e.g. {c['question']!r} (answer {c['answer']})\n   base: {c['base']!r}\n  tuned: {c['tuned']!r}")
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
