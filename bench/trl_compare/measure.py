"""How one measurement is taken: device memory, step timing and the child's record.

Owns: `DeviceMemory` (GPU memory in use, polled by NVML from a thread: the low-water mark of free
memory above what was used before the process started, per step window and per phase), the
record a child writes after every change (`Recorder`), the GPU's description (`gpu_info`), and
the step helpers every side uses the same way: synchronise, start a step's window, read its
memory, summarise token lengths, and decide whether another step fits the time limit.

Refuses to know: which system is measured, and how results are merged or rendered.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from bench.trl_compare.systems import GIB, short


class DeviceMemory:
    """GPU memory in use on the device, polled from a background thread (the low-water mark of free).

    Created before torch touches CUDA, so NVML's first reading is what was used before this process
    created anything (its CUDA context included). Without NVML it falls back to
    torch.cuda.mem_get_info(), whose baseline is then taken right after this process's CUDA context.
    On a machine without a GPU every figure is None ('n/a on CPU').
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.method = None
        self.note = ""
        self._nvml = self._handle = None
        self._torch = None
        self.baseline = self.total = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.peak = self.window_peak = None
        self.samples = 0
        self.on_tick = None
        self.phase, self.phase_peaks = None, {}  # the step's phases (rollout / training), each its peak
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            index = int(visible) if visible.isdigit() else 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
            info = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
            self.baseline, self.total = int(info.used), int(info.total)
            self.method = "nvml"
            self.note = ("NVML used memory of the device, polled; minus what was used before this process "
                         "created anything")
        except Exception as e:  # noqa: BLE001 - no NVML: fall back to torch below
            self.note = f"NVML unavailable ({short(e, 120)})"

    def used(self) -> int | None:
        if self._nvml is not None:
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        if self._torch is not None:
            free, total = self._torch.cuda.mem_get_info()
            return int(total - free)
        return None

    def start(self) -> None:
        import torch

        if self._nvml is None:
            if not torch.cuda.is_available():
                self.method = None
                self.note = "n/a on CPU"
                return
            torch.cuda.init()
            torch.zeros(1, device="cuda")  # the context exists from here on
            self._torch = torch
            free, total = torch.cuda.mem_get_info()
            self.baseline, self.total = int(total - free), int(total)
            self.method = "torch.cuda.mem_get_info"
            self.note += "; torch.cuda.mem_get_info polled, baseline taken after this process's CUDA context"
        self.peak = self.window_peak = self.used()
        self._thread = threading.Thread(target=self._run, name="device-memory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_tick = time.time()
        while not self._stop.wait(self.interval_s):
            self.sample()
            if self.on_tick is not None and time.time() - last_tick > 5.0:
                last_tick = time.time()
                with contextlib.suppress(Exception):
                    self.on_tick()

    def sample(self) -> None:
        try:
            u = self.used()
        except Exception:  # noqa: BLE001 - a failed poll is only a missing sample
            return
        if u is None:
            return
        with self._lock:
            self.samples += 1
            self.peak = u if self.peak is None else max(self.peak, u)
            self.window_peak = u if self.window_peak is None else max(self.window_peak, u)
            if self.phase is not None:
                self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, u), u)

    def set_phase(self, name: str | None) -> None:
        """From now on samples also count towards `name`'s peak (a sample is taken at each change,
        so a phase shorter than the polling interval still has one)."""
        self.sample()
        with self._lock:
            self.phase = name
        self.sample()

    def phase_peaks_above_baseline(self) -> dict:
        with self._lock:
            if self.baseline is None:
                return {}
            return {k: gib(v - self.baseline) for k, v in self.phase_peaks.items()}

    def begin_window(self) -> None:
        self.sample()
        with self._lock:
            self.window_peak = self.used() if self.method else None
            self.phase_peaks = {}

    def end_window(self) -> int | None:
        """Highest device use since begin_window(), minus the baseline (bytes)."""
        self.sample()
        with self._lock:
            if self.window_peak is None or self.baseline is None:
                return None
            return self.window_peak - self.baseline

    def now(self) -> int | None:
        u = self.used() if self.method else None
        return None if u is None or self.baseline is None else u - self.baseline

    def process_peak(self) -> int | None:
        with self._lock:
            return None if self.peak is None or self.baseline is None else self.peak - self.baseline

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


def gib(b) -> float | None:
    return None if b is None else round(b / GIB, 3)


def gpu_info() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "cpu_threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(0)
    info = {"device": torch.cuda.get_device_name(), "total_gib": round(props.total_memory / GIB, 2),
            "cuda": torch.version.cuda}
    with contextlib.suppress(Exception):
        import pynvml

        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
    return info


class Recorder:
    """The child's record, written to --json-out after every change (a killed child leaves its last state)."""

    def __init__(self, path: Path, rec: dict):
        self.path, self.rec = path, rec
        self._lock = threading.Lock()

    def save(self) -> None:
        with self._lock:
            for attempt in range(5):  # the memory thread may update a value while we serialise
                try:
                    text = json.dumps(self.rec, indent=1, default=str)
                    break
                except RuntimeError:
                    if attempt == 4:
                        raise
                    time.sleep(0.01)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)

    def phase(self, text: str) -> None:
        self.rec["phase"] = text
        self.rec["phase_started_s"] = round(time.time() - self.rec["_t0"], 1)
        self.save()


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _lengths_summary(lengths: list[int]) -> dict:
    if not lengths:
        return {"n": 0}
    return {"n": len(lengths), "min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1),
            "total": sum(lengths)}


def _step_memory(torch, mem: DeviceMemory, current: dict | None = None) -> dict:
    """The step's peaks: the device's (NVML, polled) and torch's; with `_training_starts` called at
    the switch from rollout to training, also the most torch allocated in training above what it
    held when training began: a transient the polling could miss (TRL's training phase read 6.97
    GiB on 2026-12-06, below what its logits alone need if they are whole)."""
    if not torch.cuda.is_available():
        return {"device_peak_gib": None, "torch_max_allocated_gib": None, "torch_max_reserved_gib": None}
    current = current or {}
    out = {"device_peak_gib": gib(mem.end_window()),
           "torch_max_allocated_gib": gib(max(current.get("torch_rollout_max_allocated", 0),
                                              torch.cuda.max_memory_allocated())),
           "torch_max_reserved_gib": gib(max(current.get("torch_rollout_max_reserved", 0),
                                             torch.cuda.max_memory_reserved()))}
    if "torch_training_start" in current:
        out["torch_training_above_start_gib"] = gib(torch.cuda.max_memory_allocated() - current["torch_training_start"])
    return out


def _training_starts(torch, current: dict) -> None:
    """At the switch from rollout to training: keep the rollout's torch peaks, note what torch holds,
    and restart its peak counters, so `_step_memory` can say what training alone allocated."""
    if torch.cuda.is_available():
        _sync(torch)
        current["torch_rollout_max_allocated"] = torch.cuda.max_memory_allocated()
        current["torch_rollout_max_reserved"] = torch.cuda.max_memory_reserved()
        current["torch_training_start"] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()


def segment_summary(torch) -> dict:
    """Where torch's reserved memory is, by pool: "large"/"small" blocks of the default pool, a
    private pool (CUDA graphs', vLLM's sleep-mode pool) by its id, a side stream by its number:
    reserved and allocated GiB and segments in each (`torch.cuda.memory_snapshot()`). Reserved
    above allocated in one of them is what a peak holds and no tensor uses: which pool says why
    (small tensors cannot reuse large blocks; a private pool is not handed back). vLLM's sleep-mode
    pool counts its KV cache as allocated even while the engine has unmapped it (released between
    rollouts): there, allocated is not what the device holds."""
    out: dict[str, dict] = {}
    for seg in torch.cuda.memory_snapshot():
        pool = tuple(seg.get("segment_pool_id") or (0, 0))
        key = seg.get("segment_type", "?") + ("" if pool == (0, 0) else f" pool{pool[0]}.{pool[1]}")
        if seg.get("stream"):
            key += f" stream{seg['stream']}"
        d = out.setdefault(key, {"reserved": 0, "allocated": 0, "segments": 0})
        d["reserved"] += seg.get("total_size", 0)
        d["allocated"] += seg.get("allocated_size", 0)
        d["segments"] += 1
    return {k: {"reserved_gib": round(v["reserved"] / GIB, 4), "allocated_gib": round(v["allocated"] / GIB, 4),
                "segments": v["segments"]} for k, v in sorted(out.items())}


def _begin_step(torch, mem: DeviceMemory) -> float:
    _sync(torch)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    mem.begin_window()
    return time.perf_counter()


def _time_for_another(rec: dict, deadline: float) -> bool:
    last = rec["steps"][-1]["seconds"] if rec["steps"] else 0.0
    return deadline - time.time() > 1.2 * last + 10
