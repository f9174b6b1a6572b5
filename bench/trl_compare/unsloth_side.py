"""Unsloth's side of a measurement (unsloth, unsloth-4bit, unsloth-defaults), in the child process.

Unsloth is measured through its public API only (FastLanguageModel, TRL's GRPOTrainer as it
patches it); its code (LGPL/AGPL) is never copied here. What it switches on is read from its log.

Owns: the vLLM share at which Unsloth's KV cache is the size ours asks for (`unsloth_share`),
loading the model with fast_inference and its LoRA (`child_unsloth`, then run_trl_trainer of
trl_side.py), and reading its log for what it switched on and the KV cache vLLM made
(`unsloth_log_facts`, `UNSLOTH_FEATURES`).

Refuses to know: our trainer, the parent's scheduling and the rendering.
"""

from __future__ import annotations

import tempfile
import time

from bench.trl_compare.measure import DeviceMemory, Recorder, gib
from bench.trl_compare.prompts import bench_reward, make_prompts
from bench.trl_compare.systems import GIB, TARGETS
from bench.trl_compare.trl_side import known_fields, run_trl_trainer, trl_fields


def unsloth_share(hf_config, *, prompt_len: int, length: int, generations: int, total_bytes: int,
                  four_bit: bool, overhead_gib: float) -> tuple[float, int]:
    """(gpu_memory_utilization, target KV bytes): the share at which Unsloth's vLLM keeps a KV cache
    of the size ours asks for (core.memory.sizes.engine_kv_bytes). vLLM makes KV cache of what the share
    leaves after the weights and its profiled peak; on the H200 (2026-12-04) shares of 0.024 and
    0.035 left 0.28 and 1.81 GiB, i.e. the weights + 0.22 GiB, hence `overhead_gib`. The KV cache it
    really made is recorded beside this.

    >>> from types import SimpleNamespace as C
    >>> c = C(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    ...       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    >>> util, kv = unsloth_share(c, prompt_len=256, length=1024, generations=8, total_bytes=int(140.4 * GIB),
    ...                          four_bit=False, overhead_gib=0.25)
    >>> util, round(kv / GIB, 3)
    (0.0244, 0.301)
    """
    from core.memory.sizes import engine_kv_bytes, weight_bytes

    kv = engine_kv_bytes(hf_config, prompt_len + length, generations)
    # a 4-bit engine's profiled peak was never measured: 0.25 GiB more, so that its cache is not too
    # small to start (vLLM refuses) or to hold one step's rollouts (it would preempt and look slow)
    extra = overhead_gib + (0.25 if four_bit else 0.0)
    want = weight_bytes(hf_config, load_in_4bit=four_bit) + kv + extra * GIB
    return round(min(0.95, want / total_bytes), 4), kv


# what Unsloth's log says it switched on: a name for each phrase worth a column
UNSLOTH_FEATURES = {
    "merged_rollouts": "merged-weight rollouts on",
    "merged_rollouts_fallback": "falling back to vllm lora",
    "offloaded_gradient_checkpointing": "smartly offload gradients",
    "double_buffering_off": "disabled double buffering",
    "standby": "standby mode is enabled",
    "fast_lora_layers": "qkv layers",  # its banner: "... patched 28 layers with 28 QKV layers, ..."
}


def unsloth_log_facts(text: str, limit: int = 80) -> dict:
    """From an Unsloth process's log: its own lines ("Unsloth: ...", "==((====))==" banner), vLLM's
    lines about the KV cache, the KV cache size it reports (GiB, tokens) and which UNSLOTH_FEATURES
    phrases occur.

    >>> f = unsloth_log_facts(chr(10).join(["Unsloth: Will smartly offload gradients to save VRAM!",
    ...                                     "INFO [gpu_worker.py] Available KV cache memory: 0.28 GiB"]))
    >>> f["kv_cache_gib"], f["switched_on"]["offloaded_gradient_checkpointing"], f["switched_on"]["merged_rollouts"]
    (0.28, True, False)
    """
    import re

    lines, kv_lines, seen = [], [], set()
    for raw in text.splitlines():
        line = raw.strip()
        low = line.lower()
        if ("unsloth" in low[:40] or "==((====))==" in line) and line not in seen:
            seen.add(line)
            lines.append(line[:300])
        if "kv cache" in low and ("memory" in low or "size" in low or "tokens" in low) and line not in seen:
            seen.add(line)
            kv_lines.append(line[:300])
    joined = "\n".join(lines).lower()
    facts = {"unsloth_lines": lines[:limit], "kv_cache_lines": kv_lines[:20],
             "switched_on": {k: phrase in joined for k, phrase in UNSLOTH_FEATURES.items()}}
    m = re.findall(r"available kv cache memory:\s*([\d.]+)\s*gib", text, flags=re.I)
    facts["kv_cache_gib"] = float(m[-1]) if m else None
    m = re.findall(r"gpu kv cache size:\s*([\d,]+)\s*tokens", text, flags=re.I)
    facts["kv_cache_tokens"] = int(m[-1].replace(",", "")) if m else None
    return facts


def child_unsloth(args, rec: dict, r: Recorder, mem: DeviceMemory) -> None:
    """Unsloth's FastLanguageModel (fast_inference: its in-process vLLM, sharing the weights) with
    TRL's GRPOTrainer as Unsloth patches it, on the workload of the other systems. `import unsloth`
    already ran (run_child: before transformers, as Unsloth requires)."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoTokenizer

    from unsloth import FastLanguageModel  # noqa: I001 - after `import unsloth`, before trl

    from core.engines.vllm.compat import kv_capacity_tokens
    from core.memory.sizes import kv_bytes_per_token

    four_bit = args.child == "unsloth-4bit"
    defaults = args.child == "unsloth-defaults"
    L, G, P = args.length, args.generations, args.prompt_len
    hf_config = AutoConfig.from_pretrained(args.model_dir)
    total = mem.total or torch.cuda.mem_get_info()[1]
    kwargs = dict(model_name=args.model_dir, max_seq_length=P + L, load_in_4bit=four_bit, fast_inference=True,
                  max_lora_rank=16)
    util, kv_target = unsloth_share(hf_config, prompt_len=P, length=L, generations=G, total_bytes=total,
                                    four_bit=four_bit, overhead_gib=args.unsloth_overhead_gib)
    if args.unsloth_util:
        util = args.unsloth_util
    if not defaults:
        kwargs["gpu_memory_utilization"] = util
    rec["unsloth_config"] = {"from_pretrained": dict(kwargs),
                             "kv_cache_asked_gib": None if defaults else gib(kv_target),
                             "share_from": ("Unsloth's default" if defaults else
                                            "--unsloth-util" if args.unsloth_util else
                                            f"unsloth_share (overhead {args.unsloth_overhead_gib} GiB)")}
    r.phase("Unsloth from_pretrained (fast_inference: its vLLM engine)")
    t0 = time.perf_counter()
    model, _ = FastLanguageModel.from_pretrained(**kwargs)
    rec["from_pretrained_seconds"] = round(time.perf_counter() - t0, 1)
    engine = getattr(model, "vllm_engine", None)
    tokens = kv_capacity_tokens(engine) if engine is not None else None
    rec["unsloth_kv_cache"] = {"tokens": tokens,
                               "gib": gib(tokens * kv_bytes_per_token(hf_config)) if tokens else None,
                               "ours_asks_gib": gib(kv_target)}
    rec["after_from_pretrained_device_gib"] = gib(mem.now())
    peft = dict(r=16, target_modules=list(TARGETS), lora_alpha=32, lora_dropout=0.0, bias="none",
                use_gradient_checkpointing="unsloth" if args.gradient_checkpointing == "on" else False,
                random_state=42)
    rec["unsloth_peft_config"] = peft
    r.phase("Unsloth get_peft_model")
    model = FastLanguageModel.get_peft_model(model, **peft)
    tok = AutoTokenizer.from_pretrained(args.model_dir, padding_side="left", truncation_side="left")
    prompts = make_prompts(tok, max(4, args.steps), args.prompt_len, seed=1)
    dataset = Dataset.from_dict({"prompt": prompts})
    from trl import GRPOConfig, GRPOTrainer  # Unsloth's patched classes, imported after unsloth

    fields = trl_fields(args, True, True)
    fields.pop("model_init_kwargs")  # the model is already built
    fields.pop("generation_kwargs")
    try:
        from vllm import SamplingParams

        fields["vllm_sampling_params"] = SamplingParams(ignore_eos=True, temperature=1.0, top_p=1.0, max_tokens=L)
        how = "GRPOConfig(vllm_sampling_params=SamplingParams(ignore_eos=True, ...)) (Unsloth's field)"
    except ImportError:
        fields["generation_kwargs"] = {"ignore_eos": True}
        how = "GRPOConfig.generation_kwargs={'ignore_eos': True}"
    with tempfile.TemporaryDirectory(prefix="aha-bench-unsloth-") as tmp:
        fields["output_dir"] = tmp
        kept, dropped = known_fields(GRPOConfig, fields)
        if "vllm_sampling_params" in dropped:  # this GRPOConfig does not know Unsloth's field
            kept["generation_kwargs"] = {"ignore_eos": True}
            how = "GRPOConfig.generation_kwargs={'ignore_eos': True}"
        rec["trl_config"] = {k: (repr(v) if k == "vllm_sampling_params" else v) for k, v in kept.items()
                             if k != "output_dir"}
        rec["trl_config_dropped"] = dropped
        rec["full_length_method"] = how
        r.phase("trainer init (Unsloth's GRPOTrainer)")

        def make(callbacks):
            return GRPOTrainer(model=model, reward_funcs=bench_reward, args=GRPOConfig(**kept),
                               train_dataset=dataset, processing_class=tok, callbacks=callbacks)

        run_trl_trainer(args, rec, r, mem, make, eos_ids=[hf_config.eos_token_id])
