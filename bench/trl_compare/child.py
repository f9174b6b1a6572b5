"""One measurement in its own process (`--child SYSTEM`): clean peak memory, one vLLM engine.

Owns: the child's record from start to end: Unsloth's import first where it is the system, the
device memory baseline before torch touches CUDA, versions, GPU, weights, then the side's own code
(ours.py, trl_side.py or unsloth_side.py), and the status and reason of a failure (out of memory,
error); it leaves with os._exit once the record is saved.

Refuses to know: the other measurements, the merge of results and the rendering.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from bench.common import versions
from bench.trl_compare.measure import DeviceMemory, Recorder, gib, gpu_info
from bench.trl_compare.ours import child_ours
from bench.trl_compare.systems import OURS_SYSTEMS, SYSTEM_LABELS, UNSLOTH_SYSTEMS, base_weight_bytes, short
from bench.trl_compare.trl_side import child_trl
from bench.trl_compare.unsloth_side import child_unsloth


def run_child(args) -> int:
    t_start = time.time()
    rec = {"system": args.child, "label": SYSTEM_LABELS[args.child], "completion_length": args.length,
           "prompt_length": args.prompt_len, "num_generations": args.generations, "status": "running",
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": [], "notes": [], "_t0": t_start,
           "process_peak_gib_so_far": None}  # the key exists before the memory thread updates it
    r = Recorder(Path(args.json_out), rec)
    mem = DeviceMemory(args.interval_ms / 1000.0)  # before torch touches CUDA: the baseline
    code = 1
    try:
        if args.child in UNSLOTH_SYSTEMS:  # first of all: Unsloth patches transformers, peft and trl on import
            r.phase("import unsloth")
            t0 = time.perf_counter()
            import unsloth  # noqa: F401
            import unsloth_zoo  # noqa: F401

            rec["unsloth_import_seconds"] = round(time.perf_counter() - t0, 1)
            rec["unsloth_version"] = {"unsloth": getattr(unsloth, "__version__", None),
                                      "unsloth_zoo": getattr(unsloth_zoo, "__version__", None)}
        import torch

        mem.on_tick = lambda: (rec.__setitem__("process_peak_gib_so_far", gib(mem.process_peak())), r.save())
        mem.start()
        rec["memory_method"] = mem.method or "n/a on CPU"
        rec["memory_note"] = mem.note
        rec["baseline_device_used_gib"] = gib(mem.baseline)
        rec["versions"] = versions() if args.child not in UNSLOTH_SYSTEMS else versions(
            ("torch", "vllm", "trl", "transformers", "peft", "accelerate", "datasets", "tokenizers", "unsloth",
             "unsloth_zoo", "bitsandbytes"))
        rec["gpu"] = gpu_info()
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(args.model_dir)
        rec["weights_gib"] = gib(base_weight_bytes(args.child, hf_config, torch.cuda.is_available()))
        r.save()
        child = (child_ours if args.child in OURS_SYSTEMS else
                 child_unsloth if args.child in UNSLOTH_SYSTEMS else child_trl)
        child(args, rec, r, mem)
        rec["status"] = "ok" if rec["steps"] else "error"
        if not rec["steps"]:
            rec["reason"] = "no step finished"
        code = 0 if rec["steps"] else 1
    except BaseException as e:  # noqa: BLE001 - a failure is a result
        oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
        rec["status"] = "oom" if oom else "error"
        rec["reason"] = short(e)
        rec["failed_in"] = rec.get("phase")
        rec["traceback"] = traceback.format_exc()[-4000:]
    finally:
        mem.stop()
        rec["process_peak_gib"] = gib(mem.process_peak())
        # torch's allocator mode (ours asks for expandable segments since 2026-12-06; the peers run
        # torch's default unless the environment says otherwise)
        rec["pytorch_cuda_alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
        rec["seconds_total"] = round(time.time() - t_start, 1)
        rec.pop("process_peak_gib_so_far", None)
        r.save()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip vLLM's / NCCL's shutdown at interpreter exit (it can hang); the record is saved
