"""A trainer's checkpoint files, written as plain data and read back without running any code.

Owns: what goes into `runs/<run>/checkpoints/step-N/` besides the run folder's bookkeeping
(`core/runs/folders.py`: the temporary folder, the rename, `state.json`) and how it comes back:

- the adapter in peft's format (`adapter_model.safetensors` + `adapter_config.json`);
- `trainer_state.pt`: optimizer, schedule, RNG states and two counters, as tensors, numbers,
  strings, lists and dicts only, loaded with `torch.load(weights_only=True)`. A checkpoint folder
  from someone else therefore cannot run code on Resume (issue 19: a pickle payload ran);
- resume takes the newest checkpoint that reads back whole and says so when it had to skip a
  damaged one (a missing adapter file, a truncated state);
- a config that no longer fits the checkpoint (an edited `lora_r`, `lora_alpha` or target
  modules) is refused with what to change, not a size-mismatch traceback; an edited learning
  rate or weight decay is applied from the resumed step on, and said.

Refuses to know: the RL step. It reads and sets the trainer's `model`, `optimizer`,
`scheduler`, `cfg`, `micro_batch_size` and `skipped_steps`, nothing else.
"""

from __future__ import annotations

import json
import math
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.errors import AhaError
from core.runs.folders import checkpoint_step

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
STATE_FILE = "trainer_state.pt"


class CheckpointError(AhaError, RuntimeError):
    """A checkpoint cannot be resumed; the message says why and what to do."""


class DamagedCheckpoint(CheckpointError):
    """The folder does not read back whole (missing or truncated file, content that is not plain
    data): an older checkpoint of the same run may still do."""


# ---------------------------------------------------------------------------
# writing


def _numpy_rng_plain() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def save_trainer_files(trainer, folder: Path) -> None:
    """The adapter and `trainer_state.pt` into `folder` (the run's temporary checkpoint folder)."""
    trainer.model.save_pretrained(folder)  # adapter only (peft)
    torch.save({
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_rng_plain(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "micro_batch_size": trainer.micro_batch_size,
        "skipped_steps": trainer.skipped_steps,
    }, folder / STATE_FILE)


# ---------------------------------------------------------------------------
# reading


@dataclass
class Checkpoint:
    path: Path
    step: int
    adapter: dict  # tensor name -> tensor, as peft saved it
    adapter_config: dict
    state: dict  # what save_trainer_files put in trainer_state.pt


def _safe_torch_load(path: Path) -> dict:
    # Checkpoints written before issue 19 hold numpy's RNG state as an ndarray; these numpy types
    # rebuild an array of numbers and nothing else, so they are allowed. Anything else is refused.
    allowed = [np.ndarray, np.dtype, np.dtypes.UInt32DType]
    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray
    reconstruct = multiarray._reconstruct
    with torch.serialization.safe_globals([reconstruct, *allowed]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Every file of a checkpoint folder, read into memory; DamagedCheckpoint when one is missing,
    cut short or holds anything but plain data."""
    from safetensors.torch import load_file

    path = Path(path)
    for name in ("state.json", ADAPTER_CONFIG, ADAPTER_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise DamagedCheckpoint(f"{path.name}: {name} is missing")
    try:
        step = json.loads((path / "state.json").read_text())["step"]
        adapter_config = json.loads((path / ADAPTER_CONFIG).read_text())
        adapter = load_file(str(path / ADAPTER_FILE))
    except Exception as e:  # json, safetensors: a torn or edited file
        raise DamagedCheckpoint(f"{path.name}: the adapter does not read back ({_short(e)})") from None
    named = checkpoint_step(path)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or named not in (None, step):
        raise DamagedCheckpoint(f"{path.name}: state.json says step {step!r}, not the folder's step {named}")
    if not isinstance(adapter_config, dict):
        raise DamagedCheckpoint(f"{path.name}: {ADAPTER_CONFIG} is not a mapping")
    try:
        state = _safe_torch_load(path / STATE_FILE)
    except Exception as e:  # truncated (zip reader), or an object that is not plain data (unpickler)
        unsafe = isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower()
        why = ("it holds Python objects, not plain data, and is not loaded (it could run code)" if unsafe
               else f"it does not read back ({_short(e)})")
        raise DamagedCheckpoint(f"{path.name}: {STATE_FILE}: {why}") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= set(state):
        raise DamagedCheckpoint(f"{path.name}: {STATE_FILE} lacks the optimizer, schedule or RNG state")
    for counter, lowest in (("micro_batch_size", 1), ("skipped_steps", 0)):  # a 0 micro-batch divides by zero
        value = state.get(counter, lowest)
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise DamagedCheckpoint(f"{path.name}: {STATE_FILE} holds {counter} = {value!r} "
                                    f"(a whole number of at least {lowest} expected)")
    return Checkpoint(path, step, adapter, adapter_config, state)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


# ---------------------------------------------------------------------------
# does the run's config still fit the checkpoint?


def check_adapter_fits(ckpt: Checkpoint, model) -> None:
    """CheckpointError when the run's model (its LoRA settings) cannot take the checkpoint's adapter."""
    from peft.utils import get_peft_model_state_dict

    live = model.peft_config["default"]
    saved = ckpt.adapter_config
    pairs = (("lora_r", saved.get("r"), live.r), ("lora_alpha", saved.get("lora_alpha"), live.lora_alpha),
             ("lora_target_modules", sorted(saved.get("target_modules") or []), sorted(live.target_modules or [])))
    for name, then, now in pairs:
        if then is not None and then != now:
            raise CheckpointError(
                f"{ckpt.path.name} was trained with model.{name} = {then}, but the run's config now says {now}: "
                f"set model.{name} back to {then} to resume this run, or start a new run with {now}")
    expected = get_peft_model_state_dict(model)
    missing, extra = set(expected) - set(ckpt.adapter), set(ckpt.adapter) - set(expected)
    if missing or extra:
        raise DamagedCheckpoint(f"{ckpt.path.name}: the adapter file does not match its adapter_config.json "
                                f"({len(missing)} tensors missing, {len(extra)} unexpected)")
    for key, tensor in expected.items():
        if tuple(ckpt.adapter[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{ckpt.path.name}: adapter tensor {key} has shape {tuple(ckpt.adapter[key].shape)}, the model "
                f"expects {tuple(tensor.shape)}: the LoRA settings or the base model changed since this "
                "checkpoint; resume with the settings it was trained with")


# ---------------------------------------------------------------------------
# what a resume sets besides the trainer's own state (the trainer assigns that itself)


def restore_rng(rng: dict) -> None:
    """The process's random generators as a checkpoint saved them (torch, Python, numpy, CUDA)."""
    torch.set_rng_state(rng["torch"])
    python = rng["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np_state = rng["numpy"]
    if isinstance(np_state, dict):
        np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                             np_state["has_gauss"], np_state["cached_gaussian"]))
    else:  # written before issue 19: numpy's own tuple
        np.random.set_state(np_state)
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def edited_optimizer_settings(optimizer, scheduler, algorithm, step: int) -> list[str]:
    """The optimizer state restores the old learning rate and weight decay; the config's
    (`algorithm`) win: `optimizer` and `scheduler` (just loaded) are set to them; the notes say so."""
    a = algorithm
    notes = []
    base_lrs = list(getattr(scheduler, "base_lrs", []))
    saved_lr = base_lrs[0] if base_lrs else optimizer.param_groups[0].get("initial_lr")
    if saved_lr and not math.isclose(saved_lr, a.learning_rate, rel_tol=1e-9, abs_tol=0.0):
        factor = a.learning_rate / saved_lr  # every group and the schedule's current value alike
        scheduler.base_lrs = [b * factor for b in base_lrs]
        for group in optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        notes.append(f"The learning rate changed from {saved_lr:g} to {a.learning_rate:g}: "
                     f"the new rate applies from step {step + 1}.")
    saved_wd = optimizer.param_groups[0].get("weight_decay")
    if saved_wd is not None and not math.isclose(saved_wd, a.weight_decay, rel_tol=1e-9, abs_tol=1e-12):
        for group in optimizer.param_groups:
            group["weight_decay"] = a.weight_decay
        notes.append(f"Weight decay changed from {saved_wd:g} to {a.weight_decay:g}: applied from step {step + 1}.")
    return notes


def newest_intact(candidates: list[Path], model) -> tuple[Checkpoint | None, list[str]]:
    """The newest of `candidates` (oldest first) that reads back whole and fits `model`, with
    notes naming any newer one that was skipped and why (the caller applies it). CheckpointError
    when none reads back, or when the config no longer fits (an older checkpoint would not fit either)."""
    skipped = []
    for path in reversed(candidates):
        try:
            ckpt = read_checkpoint(path)
            check_adapter_fits(ckpt, model)
        except DamagedCheckpoint as e:
            skipped.append(str(e))
            continue
        notes = []
        if skipped:
            notes.append(f"Resumed from {path.name}, the newest checkpoint that reads back whole; skipped: "
                         + "; ".join(skipped) + ".")
        return ckpt, notes
    if skipped:
        raise CheckpointError("no checkpoint of this run can be resumed: " + "; ".join(skipped))
    return None, []
