"""Data parallel over the GPUs of one host: one process per GPU, the same trainer in each.

Owns: joining the process group that `accelerate launch` or `torchrun` describe in the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), and the few moves that
turn N copies of the trainer into one run:
  1) every rank starts from rank 0's adapter weights (`broadcast_params`),
  2) each rank samples and scores its share of a step's prompts (`shard`), with its own engine,
  3) the adapter's gradients are averaged over ranks before clipping (`all_reduce_grads`), so
     every rank takes the same optimizer step and the replicas never drift apart,
  4) the step's metrics are combined over ranks (`reduce_metrics`), and rank 0 alone writes
     the run folder (`run_dir_for_rank`: the other ranks read it and write nothing there).

With no process group (plain `python -m scripts.train`, the app) every function here is the
identity, so the single-process path is untouched.

Refuses to know: losses, engines, models beyond "a list of parameters".

Why an all_reduce and not DistributedDataParallel: the trainer never calls the model's forward
(it runs the decoder and the fused log-prob kernel on hidden states, see
`core.rl.logprobs.completion_logprobs`), and DDP's gradient hooks only fire through its own forward.
One flat all_reduce of the LoRA gradients per update (a few MB) is all that data parallelism
needs here.

    accelerate launch --num_processes 2 -m scripts.train --config run.yaml
    torchrun --nproc_per_node 2 -m scripts.train --config run.yaml
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from core.runs.folders import RunDir


# ---------------------------------------------------------------------------
# who am I


def active() -> bool:
    """True inside a process group (even one of size 1, as in the tests)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup() -> str | None:
    """Join the process group when launched with WORLD_SIZE > 1; this rank's device, or None
    (= the trainer's default) when not distributed. NCCL on GPUs, one GPU per local rank; gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not active():
        return None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        if not active():
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        return f"cuda:{local}"
    if not active():
        dist.init_process_group("gloo")
    return "cpu"


def teardown() -> None:
    if active():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------
# 1) the same start, 2) a share of the prompts


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. the run name, which holds a timestamp)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_params(params: list[torch.Tensor]) -> None:
    """Copy rank 0's values of `params` into every rank's, in place."""
    if not active():
        return
    for p in params:
        buf = p.data.to(_comm_device())
        dist.broadcast(buf, src=0)
        p.data.copy_(buf)


def shard(items: list) -> list:
    """This rank's share of a step's prompts: every world_size-th item, from position `rank` on.

    >>> shard([1, 2, 3])  # not distributed: everything
    [1, 2, 3]
    """
    if not active():
        return items
    n = world_size()
    if len(items) < n:
        raise ValueError(
            f"{len(items)} prompts per step for {n} processes: raise algorithm.prompts_per_step to at least {n}")
    return items[rank()::n]


# ---------------------------------------------------------------------------
# 3) averaged gradients


@torch.no_grad()
def all_reduce_grads(params: list[torch.Tensor], *, poison: bool = False) -> None:
    """Average the gradients of `params` over ranks, in place, with one flat all_reduce.

    A rank whose loss was not finite calls this with poison=True before it skips its update: it
    sends NaN, so every rank sees a non-finite gradient norm and skips the same update (a rank
    that skipped the collective instead would leave the others waiting for ever).
    """
    if not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads]).to(_comm_device())  # (n_params,)
    if poison:
        flat.fill_(float("nan"))
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(device=p.device, dtype=p.dtype)
        offset += n


# ---------------------------------------------------------------------------
# 4) one log for the run

# How each metric combines over ranks; everything else is the mean of the ranks' finite values.
# Standard deviations averaged over ranks approximate the batch's (each rank holds whole groups).
_SUM = {"tokens_per_second"}
_MIN = {"completions/min_length", "micro_batch_size", "sampling/importance_sampling_ratio/min"}
_MAX = {"completions/max_length", "peak_memory_gb", "peak_ram_gb", "step_time", "generation_time", "skipped_steps",
        "sampling/importance_sampling_ratio/max", "sampling/sampling_logp_difference/max"}


def reduce_metrics(metrics: dict) -> dict:
    """One step's metrics combined over ranks (identical on every rank); `metrics` when alone."""
    if not active():
        return metrics
    gathered: list[dict] = [None] * world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, metrics)
    out = {}
    for key in metrics:
        values = [m[key] for m in gathered if key in m]
        if key == "step" or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = metrics[key]
            continue
        finite = [float(v) for v in values if math.isfinite(v)]
        if not finite:
            out[key] = float("nan")
        elif key in _SUM:
            out[key] = sum(finite)
        elif key in _MIN:
            out[key] = min(finite)
        elif key in _MAX:
            out[key] = max(finite)
        else:
            out[key] = sum(finite) / len(finite)
    return out


class ReplicaRunDir(RunDir):
    """A rank > 0 view of the run folder: reads what rank 0 wrote (status, checkpoints), writes
    nothing there. Its config and checkpoint writes land in a private scratch folder and are dropped."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._scratch = tempfile.TemporaryDirectory(prefix=f"aha-rank{rank()}-")

    @property
    def config_path(self) -> Path:
        return Path(self._scratch.name) / "config.yaml"

    def write_status(self, state: str, **extra) -> None:
        pass

    def append_jsonl(self, path: Path, rows: list[dict]) -> None:
        pass

    def truncate_logs(self, step: int) -> None:
        pass

    def new_checkpoint_dir(self, step: int) -> tuple[Path, Path]:
        tmp = Path(self._scratch.name) / f"step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp, self.path / "checkpoints" / f"step-{step:06d}"

    def commit_checkpoint(self, tmp: Path, final: Path, state: dict, keep: int = 0) -> Path:
        shutil.rmtree(tmp, ignore_errors=True)
        return final


def run_dir_for_rank(run: RunDir) -> RunDir:
    """`run` on rank 0 (and when alone); a write-nothing view of the same folder elsewhere."""
    return run if is_main() else ReplicaRunDir(run.path)
