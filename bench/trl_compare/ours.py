"""Our trainer's side of a measurement (systems ours, ours-fast, ours-4bit), in the child process.

Owns: building our trainer (core.rl.algorithms.make_trainer) on the benchmark's workload, forcing
full-length completions (`force_full_length_ours`: core's SamplingSettings(ignore_eos=True)), the
bench-side, per-instance wrappers of engine.generate / engine.rollout that time the rollout,
count its tokens and mark the memory phases (nothing in core/ is patched at import), the check that
the served base weights stay bit for bit the same (`weight_fingerprints`), and reading where the
step's time went from the trainer's `time/<phase>` metrics (`time_breakdown_ours`, `TIME_PHASES`).

Refuses to know: TRL, Unsloth, the parent's scheduling and the rendering.
"""

from __future__ import annotations

import os
import tempfile
import time

from bench.trl_compare.measure import (DeviceMemory, Recorder, _begin_step, _lengths_summary, _step_memory, _sync,
                                       _time_for_another, _training_starts, gib, segment_summary)
from bench.trl_compare.prompts import PLAIN_TEMPLATE, bench_reward, make_prompts
from bench.trl_compare.systems import TARGETS


def force_full_length_ours(trainer) -> str:
    """Make our rollouts ignore EOS so every completion runs to max_tokens. Returns how.

    `trainer.ignore_eos` makes core/rl/rollouts.py sample with SamplingSettings(ignore_eos=True):
    vLLM gets SamplingParams(ignore_eos=True), HF generate gets min_new_tokens = max_new_tokens.
    """
    trainer.ignore_eos = True
    return "core SamplingSettings(ignore_eos=True) (trainer.ignore_eos)"


def weight_fingerprints(engine) -> dict | None:
    """The vLLM engine's per-weight fingerprints (vllm_compat_weights.worker_weight_fingerprints); None for
    another engine or where the reach fails."""
    if getattr(engine, "llm", None) is None:
        return None
    from core.engines.vllm import compat_weights as vllm_weights

    try:
        return engine.llm.collective_rpc(vllm_weights.worker_weight_fingerprints)[0]
    except Exception:  # noqa: BLE001 - a missing check is no failed measurement
        return None
    finally:  # the check's scratch is not the step's memory (before 2026-12-05 it stayed cached: 1.74 GiB)
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


TIME_PHASES = ("fold", "sample", "unfold", "scoring", "logps", "forward_backward", "optimizer", "adapter_push",
               "other")


def time_breakdown_ours(metrics: dict) -> dict:
    """Seconds per phase of one step of ours, from the trainer's `time/<phase>` metrics
    (core/rl/rollouts.StepClock): the rollout split into fold / sample / unfold, then scoring,
    log-probs, forward/backward, optimizer, adapter push and the rest.

    >>> time_breakdown_ours({"time/rollout": 1.5, "time/fold": 0.02, "time/sample": 1.45, "time/unfold": 0.03,
    ...                      "time/forward_backward": 2.0, "time/other": 0.1, "loss": 0.0})
    {'rollout': 1.5, 'fold': 0.02, 'sample': 1.45, 'unfold': 0.03, 'forward_backward': 2.0, 'other': 0.1}
    """
    out = {}
    for phase in ("rollout",) + TIME_PHASES:
        if f"time/{phase}" in metrics:
            out[phase] = round(float(metrics[f"time/{phase}"]), 4)
    return out


def child_ours(args, rec: dict, r: Recorder, mem: DeviceMemory) -> None:
    if getattr(args, "ours_runner", "auto") == "v2":  # before vLLM reads it (its envs are cached once an engine runs)
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1"
    import torch
    from transformers import AutoTokenizer

    from core.rl.algorithms import make_trainer
    from core.config import Config, validate
    from core.data import TaskData
    from core.rewards.registry import RewardSet, RewardSpec

    cuda = torch.cuda.is_available()
    cfg = Config()
    m, d, a, run = cfg.model, cfg.data, cfg.algorithm, cfg.run
    m.name_or_path = args.model_dir
    m.load_in_4bit = args.child == "ours-4bit"  # ours-4bit: the base in NF4, all else as ours
    m.lora_r, m.lora_alpha, m.lora_dropout, m.lora_target_modules = 16, 32, 0.0, list(TARGETS)
    rec["ours_defaults"] = {"gradient_checkpointing": m.gradient_checkpointing,
                            "offload_activations": m.offload_activations}
    m.gradient_checkpointing = args.gradient_checkpointing == "on"
    m.offload_activations = bool(args.ours_offload)
    m.compile_layers = bool(getattr(args, "ours_compile", False))
    d.system_prompt, d.chat_template, d.response_prefix = "", PLAIN_TEMPLATE, ""
    a.algorithm, a.loss_type = "grpo", "dapo"
    # micro-batch: 0 = the product's auto (core.memory.planner.plan: no more than the rollouts' KV cache)
    a.num_generations, a.prompts_per_step, a.micro_batch_size = args.generations, 1, args.ours_micro_batch
    # ours-fast: auto picks the micro-batch for speed (the largest whose step fits 90% of the free memory)
    a.auto_micro_batch = "fastest" if args.child == "ours-fast" else "lowest_memory"
    a.max_prompt_length, a.max_completion_length = args.prompt_len, args.length
    a.learning_rate, a.max_steps, a.seed = 1e-5, max(1, args.steps), 42
    a.temperature, a.top_p, a.beta, a.epsilon, a.epsilon_high = 1.0, 1.0, 0.0, 0.2, 0.28
    # vLLM's importance-sampling correction, on or off on both sides (--trl-vllm-is): the same algorithm as TRL's
    a.vllm_importance_sampling_correction = getattr(args, "trl_vllm_is", "on") == "on"
    with tempfile.TemporaryDirectory(prefix="aha-bench-run-") as tmp:
        run.output_dir, run.run_name, run.log_samples, run.save_steps = tmp, "bench", 1, 1_000_000
        run.engine = args.ours_engine if args.ours_engine != "auto" else ("vllm" if cuda else "hf")
        run.vllm_enforce_eager = bool(args.ours_eager)
        run.vllm_kv_cache_dtype = args.ours_kv_dtype
        run.vllm_cuda_graphs = getattr(args, "ours_cuda_graphs", "all")
        run.merged_rollouts = args.ours_merged == "on"
        run.vllm_weights_dtype = getattr(args, "ours_weights", "auto")
        validate(cfg)
        rec["ours_config"] = {"model": {k: getattr(m, k) for k in ("lora_r", "lora_alpha", "lora_dropout",
                                                                 "lora_target_modules", "gradient_checkpointing",
                                                                 "offload_activations", "compile_layers", "dtype",
                                                                 "load_in_4bit")},
                              "algorithm": {k: getattr(a, k) for k in (
                                  "algorithm", "loss_type", "num_generations", "prompts_per_step",
                                  "micro_batch_size", "auto_micro_batch", "max_prompt_length",
                                  "max_completion_length", "learning_rate",
                                  "temperature", "top_p", "beta", "epsilon", "epsilon_high", "scale_rewards",
                                  "num_iterations", "lr_scheduler", "max_grad_norm",
                                  "vllm_importance_sampling_correction", "vllm_importance_sampling_mode")},
                              "run": {"engine": run.engine, "vllm_enforce_eager": run.vllm_enforce_eager,
                                      "vllm_kv_cache_dtype": run.vllm_kv_cache_dtype,
                                      "vllm_cuda_graphs": run.vllm_cuda_graphs,
                                      "merged_rollouts": run.merged_rollouts,
                                      "vllm_weights_dtype": run.vllm_weights_dtype}}
        tok = AutoTokenizer.from_pretrained(args.model_dir)
        prompts = make_prompts(tok, max(4, args.steps), args.prompt_len, seed=1)
        task = TaskData(train=[{"question": q, "answer": "", "answer_raw": ""} for q in prompts], eval=[],
                        source="bench:random-text", columns=["question", "answer"])
        rewards = RewardSet([RewardSpec("bench_reward", bench_reward, "share of distinct characters", 1.0, "custom")])

        if cuda:  # the CUDA context (and torch's kernels) alone, before the engine and the model
            torch.zeros(1, device="cuda").add_(1)
            _sync(torch)
            rec["after_cuda_context_device_gib"] = gib(mem.now())
        r.phase("trainer init (engine start, model, LoRA)")
        t0 = time.perf_counter()
        trainer = make_trainer(cfg, task=task, reward_set=rewards)
        _sync(torch)
        rec["init_seconds"] = round(time.perf_counter() - t0, 2)
        rec["after_init_device_gib"] = gib(mem.now())
        rec["after_init_torch_allocated_gib"] = gib(torch.cuda.memory_allocated()) if cuda else None
        rec["engine"] = {"backend": trainer.engine.info.backend, "details": trainer.engine.info.details}
        rec["micro_batch_size_start"] = trainer.micro_batch_size  # what auto (0) resolved to
        run_plan = getattr(trainer, "plan", None)  # a RunPlan; the GPU's numbers are in its .memory
        if run_plan is not None and run_plan.device == "gpu":
            plan = run_plan.memory
            rec["plan"] = {"summary": plan.summary(), "micro_batch_size": plan.micro_batch_size,
                           "training_peak_gib": gib(plan.training_peak), "kv_cache_gib": gib(plan.kv_cache),
                           "rollout_peak_gib": gib(plan.rollout_peak),
                           "predicted_device_peak_gib": gib(plan.total_peak)}
        llm = getattr(trainer.engine, "llm", None)
        if llm is not None:  # the model runner vLLM actually used (--ours-runner)
            rec["engine"]["runner_v2"] = bool(getattr(llm.llm_engine.vllm_config, "use_v2_model_runner", False))
        settings = getattr(trainer.engine, "settings", None)
        if settings is not None:
            rec["engine"]["settings"] = dict(vars(settings))
        rec["full_length_method"] = force_full_length_ours(trainer)
        if m.load_in_4bit and rec["engine"]["details"].get("weights_shared") is False:
            # the device peak then holds two 4-bit copies, working memory counts one
            rec["notes"].append("the trainer's 4-bit base is its own copy, not views of vLLM's weights")

        # time the engine's sampling itself and keep the token counts
        current: dict = {}
        inner = trainer.engine.generate

        def timed_generate(prompt_ids, sampling, adapter=None, **kwargs):  # should_stop (HF engine)
            r.phase(f"step {current.get('step')}: generation")
            _sync(torch)
            t = time.perf_counter()
            out = inner(prompt_ids, sampling, adapter, **kwargs)
            _sync(torch)
            comps = [c for g in out for c in g]
            current["rollout"] = {
                "engine_generate_seconds": round(time.perf_counter() - t, 3),
                "prompt_tokens": _lengths_summary([len(p) for p in prompt_ids for _ in range(sampling.n)]),
                "completion_tokens": _lengths_summary([len(c.token_ids) for c in comps]),
                "stopped_at_eos": sum(c.finish_reason == "stop" for c in comps)}
            r.phase(f"step {current.get('step')}: scoring + forward/backward")
            return out

        trainer.engine.generate = timed_generate
        inner_rollout = trainer.engine.rollout

        def phased_rollout(*a2, **kw):  # the step's rollout phase (fold, KV back, sample, release, unfold)
            mem.set_phase("rollout")
            try:
                return inner_rollout(*a2, **kw)
            finally:
                mem.set_phase("training")
                _training_starts(torch, current)

        trainer.engine.rollout = phased_rollout
        if cuda:  # torch's pools after the backward passes and with the moments in (the update's start);
            # each snapshot's own seconds are inside the step's time: recorded beside it (`snapshot_s`)
            def pools_at(name, fn):
                def wrapped(*a2, **kw):
                    t0 = time.perf_counter()
                    current.setdefault("pools", {})[name] = segment_summary(torch)
                    current["pools"].setdefault("snapshot_s", 0.0)
                    current["pools"]["snapshot_s"] += time.perf_counter() - t0
                    return fn(*a2, **kw)
                if getattr(fn, "_wrapped_by_lr_sched", False):  # the scheduler's own mark on optimizer.step,
                    wrapped._wrapped_by_lr_sched = True  # which it checks (else a warning); its wrapper still runs
                return wrapped

            trainer.optimizer_step = pools_at("after_backward", trainer.optimizer_step)
            trainer.optimizer.step = pools_at("update", trainer.optimizer.step)
        rec["merged_rollouts_asked"] = trainer.merged_rollouts
        fingerprints = weight_fingerprints(trainer.engine)  # the served base weights, to see them unchanged
        # as GRPOTrainer.train() does before its loop: the engine samples with the (fresh) training adapter
        trainer.adapter = trainer.engine.update_adapter(trainer.model)
        deadline = args.deadline or float("inf")
        for k in range(1, args.steps + 1):
            if k > 1 and not _time_for_another(rec, deadline):
                rec["notes"].append(f"step {k} not run: {deadline - time.time():.0f} s left of the time limit, "
                                    f"step {k - 1} took {rec['steps'][-1]['seconds']:.0f} s")
                break
            current.clear()
            current["step"] = k
            t = _begin_step(torch, mem)
            result = trainer.train_step()
            _sync(torch)
            step = {"step": k, "seconds": round(time.perf_counter() - t, 3), **_step_memory(torch, mem, current)}
            ro = current.get("rollout", {})
            gen_s = result.metrics.get("generation_time")
            step["rollout"] = {**ro, "seconds": round(gen_s, 3) if gen_s is not None else None}
            tokens = ro.get("completion_tokens", {}).get("total")
            if tokens and gen_s:
                step["rollout"]["tokens_per_s"] = round(tokens / gen_s, 1)
            step["metrics"] = {k2: v for k2, v in result.metrics.items() if isinstance(v, (int, float))}
            step["time_breakdown"] = time_breakdown_ours(step["metrics"])
            stats = dict(trainer.rollout_stats)
            step["rollout"]["merged"] = stats.get("merged")
            step["rollout"]["fold"] = {k2: v for k2, v in stats.items() if k2 not in ("sample_s",)}
            step["phase_peaks_gib"] = mem.phase_peaks_above_baseline()
            if cuda:  # and at the step's end; where the engine let its KV cache go, the next rollout's first
                # act is to hand torch's cache back (VLLMEngine.restore_memory): done here, to see what stays
                step["pools"] = {**current.get("pools", {}), "step_end": segment_summary(torch)}
                # (after the step's time and peaks are taken: the next step's window then starts from the
                # handed-back state a few milliseconds earlier than the rollout's own hand-back would)
                if getattr(trainer.engine, "_released", False):
                    t0 = time.perf_counter()
                    torch.cuda.empty_cache()
                    step["pools"]["hand_back_s"] = round(time.perf_counter() - t0, 4)
                    step["pools"]["cache_returned"] = segment_summary(torch)
            mem.set_phase(None)
            rec["steps"].append(step)
            r.phase(f"step {k} done")
        probe = getattr(args, "decode_probe", "off")
        wanted = probe == "all-ours" or (probe == "ours-fast" and args.child == "ours-fast")
        left = (args.deadline - time.time()) if args.deadline else float("inf")
        if wanted and left < 90:
            rec["notes"].append(f"decode probe not run: {left:.0f} s left of the time limit")
        elif wanted:
            from bench.trl_compare.decode_probe import decode_probe

            r.phase("decode probe")
            mem.set_phase("decode probe")
            ids = tok(prompts[0], add_special_tokens=False)["input_ids"][: args.prompt_len]
            try:
                trainer.engine.generate = inner  # the probe's calls are not steps: no step phases or records
                floor = None
                if cuda:
                    from bench.trl_compare.systems import memory_bandwidth_gbs

                    gbs, _ = memory_bandwidth_gbs([rec], getattr(args, "bandwidth_gbs", 0.0))
                    weights = sum(p.numel() * p.element_size() for p in trainer.model.parameters()
                                  if not p.requires_grad)  # the frozen base a decode step reads
                    if getattr(trainer.engine, "pushes_weights", False):  # fp8: vLLM's own copy is what it reads
                        weights = trainer.engine.llm.collective_rpc(
                            lambda w: sum(p.numel() * p.element_size() for p in w.model_runner.model.parameters()))[0]
                    floor = weights / (gbs * 1e9) * 1e3 if gbs else None
                rec["decode_probe"] = decode_probe(trainer.engine, ids, tokens=min(256, args.length), floor_ms=floor,
                                                   model=trainer.model, pad_id=tok.pad_token_id or 0)
            except Exception as e:  # noqa: BLE001 - the steps are the record; the probe only adds to it
                rec["decode_probe"] = {"error": f"{type(e).__name__}: {e}"[:400]}
            mem.set_phase(None)
        if fingerprints is not None:  # frozen weights, folded and unfolded every step: bit for bit the same?
            if getattr(trainer.engine, "pushes_weights", False):  # fp8: the tuned weights stay until asked back
                trainer.engine._serve_base()
            rec["base_weights_bitwise_unchanged"] = weight_fingerprints(trainer.engine) == fingerprints
            if not rec["base_weights_bitwise_unchanged"]:
                rec["notes"].append("the engine's base weights changed over the steps: an unfold was not exact")
        rec["micro_batch_size_final"] = trainer.micro_batch_size
        # lowest-memory mode: AdamW's moments waited on the host between updates (core.rl.host_states)
        host = getattr(trainer, "host_states", None)
        rec["optimizer_moments_on_host"] = host is not None
        rec["optimizer_moments_on_host_gib"] = gib(host.bytes_on_host) if host is not None else 0.0
        if trainer.micro_batch_size < rec["micro_batch_size_start"]:
            rec["notes"].append(f"ours lowered its micro-batch from {rec['micro_batch_size_start']} to "
                                f"{trainer.micro_batch_size} after running out of memory (GRPOTrainer.train_step halves it and redoes the pass)")
