"""TRL's side of a measurement (systems trl, trl-vllm), in the child process.

Owns: the GRPOConfig fields of the workload (`trl_fields`, shared with Unsloth's TRL), dropping the
fields an older TRL lacks (`known_fields`), and running a GRPOTrainer with a step clock: per step
its time and device peak, and its rollout timed by wrapping GRPOTrainer._generate_single_turn on
the instance (the token counts and EOS stops read from what it returns; checked against trl
1.16.0). Nothing in TRL is patched at import.

Refuses to know: our trainer, Unsloth's loading, the parent and the rendering.
"""

from __future__ import annotations

import tempfile
import time

from bench.trl_compare.measure import (DeviceMemory, Recorder, _begin_step, _lengths_summary, _step_memory, _sync,
                                       _time_for_another, _training_starts, gib)
from bench.trl_compare.prompts import bench_reward, make_prompts
from bench.trl_compare.systems import GIB, TARGETS, short


def trl_fields(args, cuda: bool, use_vllm: bool) -> dict:
    """GRPOConfig keyword arguments of the workload (the same for TRL and for Unsloth's TRL).

    >>> from types import SimpleNamespace as A
    >>> f = trl_fields(A(length=1024, generations=8, steps=2, gradient_checkpointing="on"), True, True)
    >>> f["per_device_train_batch_size"], f["loss_type"], f["generation_kwargs"]
    (8, 'dapo', {'ignore_eos': True})
    """
    L, G = args.length, args.generations
    return dict(
        output_dir=None,  # set by the caller (a temp folder)
        bf16=cuda, gradient_checkpointing=args.gradient_checkpointing == "on",
        model_init_kwargs={"dtype": "bfloat16" if cuda else "float32"},
        max_completion_length=L, num_generations=G, per_device_train_batch_size=G, gradient_accumulation_steps=1,
        max_steps=max(1, args.steps), learning_rate=1e-5, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=1.0, loss_type="dapo", beta=0.0, num_iterations=1, epsilon=0.2, epsilon_high=0.28,
        scale_rewards="group", temperature=1.0, top_p=1.0, top_k=0, seed=42,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        use_vllm=use_vllm,
        # every completion runs to exactly L tokens, as for ours
        generation_kwargs={"ignore_eos": True} if use_vllm else {"min_new_tokens": L},
    )


def known_fields(config_cls, fields: dict) -> tuple[dict, list[str]]:
    """(the fields `config_cls` (a dataclass such as GRPOConfig) has, the names it lacks): Unsloth
    runs an older TRL (1.15), whose GRPOConfig may lack a knob 1.16 has.

    >>> import dataclasses
    >>> C = dataclasses.make_dataclass("C", ["a", "b"])
    >>> known_fields(C, {"a": 1, "c": 2})
    ({'a': 1}, ['c'])
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in fields.items() if k in names}, sorted(k for k in fields if k not in names)


def run_trl_trainer(args, rec: dict, r: Recorder, mem: DeviceMemory, make_trainer, eos_ids=None) -> None:
    """`make_trainer(callbacks)` -> a TRL GRPOTrainer (TRL's own or Unsloth's); time each step and
    its rollout (`_generate_single_turn`, wrapped on the instance), then train."""
    import torch
    from transformers import TrainerCallback

    current: dict = {}

    class StepClock(TrainerCallback):
        def __init__(self):
            self.t = None

        def on_step_begin(self, targs, state, control, **kw):
            k = state.global_step + 1
            r.phase(f"step {k}: generation")
            current.clear()
            current["step"] = k
            self.t = _begin_step(torch, mem)

        def on_step_end(self, targs, state, control, **kw):
            _sync(torch)
            step = {"step": state.global_step, "seconds": round(time.perf_counter() - self.t, 3),
                    **_step_memory(torch, mem, current)}
            ro = dict(current.get("rollout", {}))
            if ro.get("seconds") and ro.get("completion_tokens", {}).get("total"):
                ro["tokens_per_s"] = round(ro["completion_tokens"]["total"] / ro["seconds"], 1)
            step["rollout"] = ro
            if ro.get("seconds") is not None:  # what TRL's step is made of, as far as it can be seen from outside
                step["time_breakdown"] = {"rollout": ro["seconds"], "other": round(step["seconds"] - ro["seconds"], 4)}
            step["phase_peaks_gib"] = mem.phase_peaks_above_baseline()
            mem.set_phase(None)
            rec["steps"].append(step)
            r.phase(f"step {state.global_step} done")
            if state.global_step < targs.max_steps and not _time_for_another(rec, args.deadline or float("inf")):
                rec["notes"].append(f"step {state.global_step + 1} not run: "
                                    f"{(args.deadline or 0) - time.time():.0f} s left of the time limit")
                control.should_training_stop = True
            return control

        def on_log(self, targs, state, control, logs=None, **kw):
            if rec["steps"] and logs:
                rec["steps"][-1].setdefault("metrics", {}).update(
                    {k: v for k, v in logs.items() if isinstance(v, (int, float))})
                r.save()

    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    trainer = make_trainer([StepClock()])
    _sync(torch)
    rec["init_seconds"] = round(time.perf_counter() - t0, 2)
    rec["after_init_device_gib"] = gib(mem.now())
    rec["after_init_torch_allocated_gib"] = gib(torch.cuda.memory_allocated()) if cuda else None
    eos_ids = set(eos_ids if eos_ids is not None else getattr(trainer, "eos_token_ids", None) or [])
    name = next((n for n in ("_generate_single_turn", "_generate") if hasattr(trainer, n)), None)
    rec["rollout_timed_at"] = name
    if name is None:
        rec["notes"].append("no generation method found to time: rollout seconds n/a")
    else:
        inner = getattr(trainer, name)

        def timed_generate(prompt_ids, *a, **kw):
            mem.set_phase("rollout")
            _sync(torch)
            t = time.perf_counter()
            out = inner(prompt_ids, *a, **kw)
            _sync(torch)
            mem.set_phase("training")
            _training_starts(torch, current)
            ro = {"seconds": round(time.perf_counter() - t, 3)}
            try:  # TRL 1.16 returns (completion ids, ...); another TRL may not: then no token counts
                completion_ids = out[0]
                ro.update(prompt_tokens=_lengths_summary([len(p) for p in prompt_ids]),
                          completion_tokens=_lengths_summary([len(c) for c in completion_ids]),
                          stopped_at_eos=sum(1 for c in completion_ids if len(c) and int(c[-1]) in eos_ids))
            except Exception as e:  # noqa: BLE001 - a count we cannot read is no failed step
                ro["token_counts"] = f"n/a ({short(e, 120)})"
            current["rollout"] = ro
            r.phase(f"step {current.get('step')}: scoring + forward/backward")
            return out

        setattr(trainer, name, timed_generate)
    trainer.train()


def child_trl(args, rec: dict, r: Recorder, mem: DeviceMemory) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoTokenizer

    from core.memory.sizes import kv_bytes_per_token, param_count

    cuda = torch.cuda.is_available()
    use_vllm = args.child == "trl-vllm"
    tok = AutoTokenizer.from_pretrained(args.model_dir, padding_side="left", truncation_side="left")
    prompts = make_prompts(tok, max(4, args.steps), args.prompt_len, seed=1)
    dataset = Dataset.from_dict({"prompt": prompts})
    L, G, P = args.length, args.generations, args.prompt_len
    fields = trl_fields(args, cuda, use_vllm)
    if use_vllm:
        util = args.trl_vllm_util
        if not util:  # sized like ours: weights + 1.2 x KV for one step + 1 GiB, over the device's total
            hf_config = AutoConfig.from_pretrained(args.model_dir)
            total = mem.total or (torch.cuda.mem_get_info()[1] if cuda else 80 * GIB)
            want = param_count(hf_config) * 2 + 1.2 * kv_bytes_per_token(hf_config) * (P + L) * G + GIB
            util = round(min(0.9, max(0.05, want / total)), 3)
        fields.update(vllm_mode="colocate", vllm_gpu_memory_utilization=util, vllm_max_model_length=P + L,
                      vllm_enable_sleep_mode=args.trl_vllm_sleep == "on",
                      # on (TRL's default): an extra no-grad forward for pi_old and a reweighted loss; off: the
                      # algorithm ours runs (no correction for vLLM's sampling against the trainer's numerics)
                      vllm_importance_sampling_correction=getattr(args, "trl_vllm_is", "on") == "on")
    rec["trl_config"] = {k: v for k, v in fields.items() if k != "output_dir"}
    rec["trl_peft_config"] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": list(TARGETS),
                              "task_type": "CAUSAL_LM"}
    rec["full_length_method"] = ("GRPOConfig.generation_kwargs={'ignore_eos': True} (vLLM SamplingParams)"
                                 if use_vllm else "GRPOConfig.generation_kwargs={'min_new_tokens': L}")
    from trl import GRPOConfig, GRPOTrainer

    with tempfile.TemporaryDirectory(prefix="aha-bench-trl-") as tmp:
        fields["output_dir"] = tmp
        r.phase("trainer init (model, LoRA" + (", vLLM colocate)" if use_vllm else ")"))

        def make(callbacks):
            return GRPOTrainer(model=args.model_dir, reward_funcs=bench_reward, args=GRPOConfig(**fields),
                               train_dataset=dataset, processing_class=tok,
                               peft_config=LoraConfig(**rec["trl_peft_config"]), callbacks=callbacks)

        run_trl_trainer(args, rec, r, mem, make)
