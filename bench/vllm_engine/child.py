"""One child process: one vLLM engine (one KV-cache dtype) and the measurements made with it.

Owns: `Child`, which starts the engine (core.engines.vllm.engine.VLLMEngine) and runs the steps its
KV-cache dtype asks for, each wrapped so that a failure is a result and a time guard skips what no
longer fits: KV-cache capacity, the trainer's base model on views of vLLM's weights, a separate
transformers copy, adapter sync (and where its time goes), vLLM and HF rollouts, long rollouts,
release / restore; its record is rewritten after every step.

Refuses to know: the other child, the verdicts and the markdown (report.py).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
import traceback
from pathlib import Path

from bench.vllm_engine.kv_log import LogCapture
from bench.vllm_engine.workload import GIB, STEP_ORDER, TARGETS, log, short, versions


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
