"""Benchmark: one GRPO step of ours against TRL's GRPOTrainer, same model, same settings, same run.

Why: "uses less memory and is faster than TRL" is a claim only a measurement of both, side by
side, can back. Each setting here is measured for our trainer and for the peer in the same
command, on the same random-weight model built from a real configuration
(bench/configs/qwen2.5-1.5b.json, bf16), with the same workload:

  - LoRA rank 16, alpha 32, dropout 0, on all 7 projections (q k v o gate up down);
  - 1 prompt x G = 8 completions per step, prompt 256 tokens, completion length L, every completion
    forced to run to exactly L tokens (no early EOS: TRL gets `min_new_tokens=L` for HF generate or
    `ignore_eos=True` for vLLM; ours gets the same through a bench-side wrapper, because our
    engines have no ignore-EOS option yet). The measured token counts are in the results;
  - GRPO, loss 'dapo', beta 0, epsilon 0.2 / 0.28, temperature 1, lr 1e-5, gradient checkpointing on
    (TRL's default; ours defaults to off, so it is switched on here for both: --gradient-checkpointing);
  - micro-batch: TRL runs the G completions in one pass (per_device_train_batch_size = G), ours uses
    the product's auto setting (micro_batch_size 0: core.memory.planner picks the largest micro-batch that
    needs no more memory than the rollouts' KV cache; recorded per measurement; --ours-micro-batch N
    fixes it). Runs before 2026-11-28 night 2 used 8 for ours too;
  - systems: `ours` (core.rl.algorithms.make_trainer, vLLM engine on a GPU, HF generate on CPU),
    `ours-4bit` (the same trainer with model.load_in_4bit=True: a bitsandbytes NF4 base; with the
    vLLM engine, vLLM serves the 4-bit weights and the trainer's base is views of them; CUDA only,
    recorded as "not run" without a GPU), `trl` (GRPOTrainer, use_vllm=False: HF generate),
    `trl-vllm` (GRPOTrainer, use_vllm=True, vllm_mode='colocate', sleep mode on, vLLM memory share
    sized like ours: weights + 1.2 x KV + 1 GiB);
    issue 21: `ours-fast` (ours with algorithm.auto_micro_batch 'fastest': the largest micro-batch
    whose step fits 90% of the free memory, up to a pass that keeps the GPU busy (4 of 8 at 1.5B,
    1,280 tokens); `ours` is the lowest-memory mode), and Unsloth as the
    peer: `unsloth` / `unsloth-4bit` (FastLanguageModel.from_pretrained(fast_inference=True): its
    in-process vLLM sharing the weights, get_peft_model with its offloaded checkpointing, then TRL's
    GRPOTrainer as Unsloth patches it; in a Python started after `source /tmp/unsloth-site/env.sh`,
    Unsloth's trl 1.15 first; its vLLM share set so that its KV cache is the size ours asks for:
    `unsloth_share`) and `unsloth-defaults` (no share given: Unsloth's own 0.5). Their records hold
    the share, the KV cache asked for and what vLLM made of it, Unsloth's version and what its log
    says it switched on (`unsloth_log`). Ours samples with merged-weight rollouts (run.merged_rollouts,
    `--ours-merged off` for the adapter kernels, own results file *_lora_kernels).

What is measured, per (system, completion length), each in its OWN subprocess (clean peak memory;
vLLM allows one engine per process), `--steps` steps (default 2, the last one reported; a second
step is skipped when the first one leaves too little of the time limit):

  - peak GPU memory of one full GRPO step (generation + scoring + backward + optimizer step).
    Headline: the DEVICE peak, i.e. GPU memory used (NVML, polled every --interval-ms from a
    background thread: the low-water mark of free memory) at its highest during the step, minus what
    was used before the process created anything. It counts vLLM's memory pool, the CUDA context and
    allocator caches, which torch.cuda.max_memory_allocated() does not see; that figure and
    max_memory_reserved() are reported beside it. Both systems are measured the same way;
  - working memory = device peak - base weights (param count x 2 bytes; 2.88 GiB for this model;
    for ours-4bit the NF4 bytes of core.memory.sizes.weight_bytes(load_in_4bit=True): 1.12 GiB);
  - step time (wall, synchronised), rollout time (getting the completions: ours = restore + generate
    + release; TRL = its _generate_single_turn, which includes its vLLM weight sync / wake-up) and
    rollout tokens/s (completion tokens / rollout time);
  - for a setting that cannot run: why (timeout after N s and in which phase, out of memory, error),
    in the table rather than a gap; a system that failed at a length is not run at longer lengths;
  - where the step's time goes (ours: the trainer's time/<phase> metrics: rollout = fold + sample +
    unfold, scoring, log-probs, forward/backward, optimizer, adapter push; the peers: rollout and the
    rest), the device peak of the rollout and of the training phase, and the rollout tokens/s against
    the memory-bandwidth limit (G streams x bandwidth / bytes of weights read per decode step).

Two goals of the benchmark issue are checked (pass / fail) in the markdown's "Goals" section,
per completion length, once ours-4bit is measured:
  1. whole step with a 4-bit base, ours / TRL in bf16 <= 0.3: device peak of ours-4bit / device
     peak of trl (HF generate, bf16) at the same length;
  2. whole-process peak for a 1.5B model in 4-bit with the vLLM engine <= 3 GB (1e9 bytes; Unsloth
     reports 5 GB): the device peak of ours-4bit, given in GiB and GB.

The parent writes `trl_compare.json` (raw figures, versions of torch, vllm, trl, transformers in each
record) and `trl_compare.md` under --out (default bench/results/). Records are merged with what is
already there (same system, length and workload: replaced), so the full set can be measured over
several commands of < 10 minutes each; --fresh starts over.

Run (one H200; every command below stays under 10 minutes: --budget-s 570 stops launching
measurements that no longer fit and records them as "not run: budget"):

    export VLLM_ENABLE_V1_MULTIPROCESSING=0   # from the repo root (python -m puts it on the path)
    python -m bench.trl_compare --systems ours,trl --lengths 1024             # ~5 min
    python -m bench.trl_compare --systems trl --lengths 4096                  # ~6-9 min (TRL ~244 s/step)
    python -m bench.trl_compare --systems ours --lengths 4096,8192,16384      # ~7-8 min
    python -m bench.trl_compare --systems ours --lengths 32k                  # ~5-9 min
    python -m bench.trl_compare --systems ours-4bit --lengths 1024,4096       # ~4-5 min (~2-3 min per length,
                                                                              #  as ours; not yet measured)
    python -m bench.trl_compare --systems trl-vllm --lengths 1024,4096        # ~4-5 min (or its error)
    python -m bench.trl_compare --systems trl --lengths 8192 --timeout-s 400  # records "timeout after ..."
    python -m bench.trl_compare --systems trl-vllm --lengths 8k,16k,32k       # if colocate works
    # the issue's anchor (Unsloth: 20K context x 8 generations on an 8B model, 54.3 GB; TRL + FA2
    # 510.8 GB; goal < 50 GB). Another model writes trl_compare_<config>.{json,md}, not this file:
    python -m bench.trl_compare --systems ours --lengths 20k --model-config bench/configs/llama-3.1-8b.json
    # issue 21 (bench/h200_session.sh lists them in order of importance with their minutes):
    python -m bench.trl_compare --systems ours,ours-fast --lengths 1024                 # ~4.5 min fresh
    python -m bench.trl_compare --systems unsloth,unsloth-defaults --lengths 1024       # ~6.5 min
    python -m bench.trl_compare --systems ours-4bit,unsloth-4bit --lengths 1024         # ~6 min
    python -m bench.trl_compare --systems ours,ours-fast,unsloth --lengths 4096         # ~6.5 min

GPU minutes per setting (estimates for an H200, including process start; vLLM's first start on a
fresh machine adds 1-2 min of torch.compile / CUDA-graph capture to each `ours`, `ours-4bit` and
`trl-vllm` run):

    setting (completion)   ours (vLLM)   trl (HF generate)        trl-vllm (colocate)
    1024                   ~2            ~2.5 (54-67 s/step)      ~2.5
    4096                   ~2.5          ~5-9 (244 s/step)        ~3
    8192                   ~3            > 8: times out           ~4
    16384                  ~4            not run after a timeout  ~6
    32768 (32512 + 256)    ~6-9          not run after a timeout  ~9

Lengths above max_position_embeddings - prompt (32768 - 256) are cut to fit the model
(`32k` -> 32512 completion tokens, context 32768); both the requested and the used length are kept.

CPU smoke test (tiny random Qwen2, lengths 16 and 32, ours on HF generate, TRL with bf16=False;
memory fields read "n/a on CPU"; ours-4bit, if asked for, is recorded as "not run" (no CUDA);
results go to --out, never to bench/results/):

    python -m bench.trl_compare --tiny --out /tmp/tc

Redraw the markdown and the plot (trl_compare.png: peak memory and step time against context
length) from the JSON, after merging the results files GPU commands brought back (no GPU needed):

    python -m bench.trl_compare --render /path/from/gpu/trl_compare.json ...

One measurement by hand (what the parent runs):
    python -m bench.trl_compare --child trl --length 1024 --model-dir D --json-out X.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.trl_compare.child import run_child
from bench.trl_compare.parent import run_parent
from bench.trl_compare.records import results_name, variant_of
from bench.trl_compare.render import render_from
from bench.trl_compare.systems import DEFAULT_CONFIG, NAME, ROOT, SYSTEMS, WORKLOAD


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trl_compare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny Qwen2, short lengths; needs --out")
    p.add_argument("--systems", default="ours,trl",
                   help=f"comma list of {', '.join(SYSTEMS)} (default ours,trl); ours-4bit = ours with a 4-bit "
                        "NF4 base (bitsandbytes, CUDA only)")
    p.add_argument("--trl-vllm", choices=["colocate"], default=None, help="also measure TRL with vLLM colocate")
    p.add_argument("--lengths", default=None, help="completion lengths, e.g. 1024,4096 or 1k,4k,8k,16k,32k")
    p.add_argument("--prompt-len", type=int, default=None)
    p.add_argument("--generations", type=int, default=None, help="G, completions per prompt (one prompt per step)")
    p.add_argument("--steps", type=int, default=None, help="steps per measurement; the last finished one is reported")
    p.add_argument("--gradient-checkpointing", choices=["on", "off"], default="on", help="for both systems")
    p.add_argument("--ours-offload", action="store_true", help="ours: activation offload (config default: off)")
    p.add_argument("--ours-compile", action="store_true", help="ours: model.compile_layers (torch.compile each "
                   "decoder layer; config default: off)")
    p.add_argument("--decode-probe", choices=["off", "ours-fast", "all-ours"], default="off",
                   help="after the steps, measure where the decode's time goes on the same engine "
                        "(bench/trl_compare/decode_probe.py): in ours-fast only, or in every ours system")
    p.add_argument("--ours-micro-batch", type=int, default=0,
                   help="ours: algorithm.micro_batch_size (default 0 = auto: the memory planner's pick, no more "
                        "memory than the rollouts' KV cache; the G sequences in one pass = what TRL runs)")
    p.add_argument("--ours-eager", action="store_true",
                   help="ours: run.vllm_enforce_eager (no CUDA graphs or torch.compile in vLLM: less memory "
                        "outside torch, slower decode); results go to trl_compare[_<config>]_eager.*")
    p.add_argument("--ours-cuda-graphs", choices=["all", "decode"], default="all",
                   help="ours: run.vllm_cuda_graphs (decode: whole-step graphs for decode batches only, up to the "
                        "sequences decoded at once: less memory outside torch); results: *_decode_graphs.*")
    p.add_argument("--ours-runner", choices=["auto", "v2"], default="auto",
                   help="ours: vLLM's model runner (v2: VLLM_USE_V2_MODEL_RUNNER=1 in ours' processes; 0.24 picks V1 "
                        "for Qwen2: 3.6%% off a rollout alone, bench/results/2026-12-06_h100_h); results: *_runner_v2.*")
    p.add_argument("--ours-weights", choices=["auto", "fp8"], default="auto",
                   help="ours: run.vllm_weights_dtype (fp8: vLLM's own fp8 copy served by Marlin kernels, the tuned "
                        "weights sent in each step; the trainer keeps its bf16 base); results: *_fp8w.*")
    p.add_argument("--ours-kv-dtype", choices=["auto", "fp8"], default="auto",
                   help="ours: run.vllm_kv_cache_dtype (fp8 halves the rollouts' KV cache); results: *_fp8kv.*")
    p.add_argument("--ours-merged", choices=["on", "off"], default="on",
                   help="ours: run.merged_rollouts (fold the adapter into the base for the rollouts; the 4-bit "
                        "base samples through the adapter either way); off: results go to *_lora_kernels.*")
    p.add_argument("--unsloth-util", type=float, default=0.0,
                   help="unsloth, unsloth-4bit: gpu_memory_utilization (0 = the share whose KV cache is what ours "
                        "asks for: bench.trl_compare.unsloth_side.unsloth_share); unsloth-defaults never passes one")
    p.add_argument("--unsloth-overhead-gib", type=float, default=0.25,
                   help="unsloth_share: what vLLM's share holds besides the weights and the KV cache (0.22 GiB "
                        "on the H200, 2026-12-04)")
    p.add_argument("--bandwidth-gbs", type=float, default=0.0,
                   help="device memory bandwidth for the decode-speed limit (0 = by device name: H200 4800 GB/s)")
    p.add_argument("--ours-engine", choices=["auto", "vllm", "hf"], default="auto",
                   help="ours: run.engine (auto = vLLM on a GPU, HF generate on CPU)")
    p.add_argument("--trl-vllm-util", type=float, default=0.0,
                   help="trl-vllm: vllm_gpu_memory_utilization (0 = sized like ours: weights + 1.2 x KV + 1 GiB)")
    p.add_argument("--trl-vllm-sleep", choices=["on", "off"], default="on", help="trl-vllm: vllm_enable_sleep_mode")
    p.add_argument("--trl-vllm-is", choices=["on", "off"], default="on",
                   help="vllm_importance_sampling_correction on both sides (TRL 1.16's default and ours: on; TRL "
                        "adds a no-grad forward for the old log-probs, ours takes them from the training pass); "
                        "results of 'off': *_trl_no_is.*")
    p.add_argument("--timeout-s", type=float, default=None, help="limit per measurement (its own process)")
    p.add_argument("--budget-s", type=float, default=None, help="limit for the whole command (default 570)")
    p.add_argument("--min-child-s", type=float, default=60.0, help="do not start a measurement with less time left")
    p.add_argument("--interval-ms", type=float, default=20.0, help="device memory polling interval")
    p.add_argument("--model-config", default=str(DEFAULT_CONFIG))
    p.add_argument("--model-dir", default=None, help="where the random model is written (reused when it matches)")
    p.add_argument("--out", default=None, help="results folder (default bench/results; required with --tiny)")
    p.add_argument("--log-dir", default=None, help="keep each measurement's log and raw record here")
    p.add_argument("--fresh", action="store_true", help="do not merge with the results already in --out")
    p.add_argument("--no-skip", action="store_true", help="run longer lengths even after a failure at a shorter one")
    p.add_argument("--force", action="store_true", help="run the full-size benchmark without a GPU")
    p.add_argument("--render", nargs="*", metavar="JSON", default=None,
                   help="measure nothing: merge these results files (if any) into --out's and redraw its "
                        "markdown and plot (--model-config picks the file name)")
    p.add_argument("--not-run", action="append", default=[], metavar="SYSTEM@LENGTH=WHY",
                   help="with --render: why a setting was not measured, shown in its table cell (repeatable; "
                        "never replaces a measurement)")
    # one measurement (what the parent launches)
    p.add_argument("--child", choices=SYSTEMS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    i = 1 if args.tiny else 0
    for key, defaults in WORKLOAD.items():
        if getattr(args, key, None) is None:
            setattr(args, key, defaults[i])
    if args.child:
        if not (args.length and args.model_dir and args.json_out):
            p.error("--child needs --length, --model-dir and --json-out")
        return run_child(args)
    if args.render is not None:
        out = Path(args.out) if args.out else ROOT / "bench" / "results"
        name = NAME if args.tiny else results_name(args.model_config, variant_of(args))
        return render_from(out, name, args.render, args.not_run)
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
