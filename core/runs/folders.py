"""Run folders: one per training run, holding its config, metrics, samples, status and checkpoints.

Owns: the on-disk layout and the rules that keep it whole across crashes — checkpoints are
written to a temporary folder and renamed into place, metric and sample lines are appended and
flushed one step at a time, and resuming truncates the logs back to the checkpoint's step so
nothing is duplicated. Run names are sanitised so no name can leave the runs folder. The status
names the process that wrote it (pid, its start time, the host), so a later process can tell a
run whose process died (kill -9, a crash, a full disk) from one still training, and mark it
`interrupted`; a status that cannot be written atomically (a full disk, a read-only folder) is
written over the old file in place, so the error is still there after a restart.

Refuses to know: what a step computes.

    runs/<name>/config.yaml          the run's full config (rerun headless with it)
    runs/<name>/status.json          state (running, paused, stopped, finished, failed, interrupted),
                                     step, error, and the writing process (pid, pid_start, host)
    runs/<name>/metrics.jsonl        one line per step (TRL's metric names)
    runs/<name>/samples.jsonl        a few completions per step with their rewards
    runs/<name>/checkpoints/step-000025/   adapter (peft format) + trainer_state.pt + state.json
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import time
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")  # anything that is not a letter, digit, dot, underscore or dash
# a checkpoint folder's name: "step-" and the step, six digits or more ("step-000026"); a copied
# "step-000026 copy" or a crafted "step--00005" is not one (issue 29)
_CHECKPOINT_NAME = re.compile(r"^step-(\d{6,12})$")


def checkpoint_step(path: str | Path) -> int | None:
    """The step a checkpoint folder's name says, or None when the name is not a checkpoint's.

    >>> checkpoint_step("runs/a/checkpoints/step-000026"), checkpoint_step("step-000026 copy"), checkpoint_step("step--00005")
    (26, None, None)
    """
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def sanitize_run_name(name: str) -> str:
    """A folder name that stays inside the runs folder.

    >>> sanitize_run_name("../../etc/passwd")
    'etc_passwd'
    >>> sanitize_run_name("my run: 9.11 vs 9.9")
    'my_run_9.11_vs_9.9'
    """
    name = _SAFE.sub("_", name.strip()).strip("._-")
    name = re.sub(r"_+", "_", name)
    return name[:100] or "run"


def open_nofollow(path: Path, mode: str = "r"):
    """`open(path, mode)` that refuses a symbolic link at `path` (OSError ELOOP) instead of
    following it: a run folder copied in with `metrics.jsonl -> ~/.bashrc` must not make the app
    write (or read) outside it (issue 29). Modes: "r", "a", "w" (created 0644) and "r+"."""
    flags = {"r": os.O_RDONLY, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "r+": os.O_RDWR}[mode]
    fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def links_outside(folder: Path) -> list[str]:
    """Symbolic links under `folder` (and `folder` itself) that lead outside it, as
    'name -> target' (relative to `folder`); [] when there are none. Links are not followed
    while walking, so a link to a large tree costs nothing."""
    folder = Path(folder)
    root = folder.resolve()
    found = []
    if folder.is_symlink() and root != Path(os.path.abspath(folder)):
        found.append(f"{folder.name} -> {root}")
    for here, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(here) / name
            if path.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    found.append(f"{path.relative_to(root)} -> {target}")
    return found


def _fsync_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open_nofollow(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _overwrite_in_place(path: Path, text: str) -> None:
    """Write over an existing file without creating one: works in a read-only folder, and on a
    full disk for a text no longer than the blocks the file already holds."""
    with open_nofollow(path, "r+") as fh:
        fh.write(text)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())


# States a status file can be left in by a process that died without a last word.
LIVE_STATES = ("running", "paused")
# The error of a status that had to be written in place is cut to this many characters.
_IN_PLACE_ERROR_CHARS = 1500


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _writer() -> dict:
    """Who writes a status: this process, so that a later one can tell whether it still lives."""
    return {"pid": os.getpid(), "pid_start": _process_start(os.getpid()), "host": socket.gethostname()}


def writer_alive(status: dict) -> bool | None:
    """Whether the process that wrote `status` still runs: True, False, or None when it ran on
    another host (a shared runs folder: nobody here can tell). A status without a writer (an
    older version's) counts as dead.

    >>> writer_alive({"state": "running", **_writer()})
    True
    >>> writer_alive({"state": "running"})
    False
    """
    pid = status.get("pid")
    if not isinstance(pid, int):
        return False
    if status.get("host") not in (None, socket.gethostname()):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    started = status.get("pid_start")
    return started is None or _process_start(pid) == started


# Fields whose default changes what a run does, with the value a run folder's config.yaml written
# before the field existed ran with: its resume, chat and evaluation go on as it trained.
BEFORE_FIELDS = {("data", "stop_at"): "",  # 2026-12-06: completions ended at EOS or the token limit only
                 ("data", "hold_out_by"): "row"}  # 2026-12-08: held-out rows were carved by row


class RunDir:
    """A run's folder and its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # the run's training time so far (seconds; the trainer's clock, `Trainer.train`): written with
        # every status, so a Resume, here or after a restart, goes on from the time the page last showed
        self.clock = None
        self.created = False  # set by `create` when it made the folder

    def start_clock(self, held_seconds, resumed: bool) -> None:
        """From now on every status says the run's training time: what it held before (a resumed run)
        plus the wall time since, less the time `held_seconds()` (the pauses) grows by."""
        base, start, held = self.elapsed_so_far() if resumed else 0.0, time.time(), held_seconds()
        self.clock = lambda: base + time.time() - start - (held_seconds() - held)

    def elapsed_so_far(self) -> float:
        """The training time the status file holds; for a run written before it did, its steps'
        `step_time` up to the status's step."""
        status = self.read_status()
        value = status.get("elapsed")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return float(value)
        step = status.get("step", 0)  # a hand-edited line (a step or time that is no number) counts nothing
        return sum(float(r["step_time"]) for r in self.read_metrics() if isinstance(r.get("step"), int)
                   and r["step"] <= step and isinstance(r.get("step_time"), (int, float)))

    @classmethod
    def create(cls, output_dir: str | Path, run_name: str, *, exist_ok: bool = True) -> "RunDir":
        root = Path(output_dir).resolve()
        path = (root / sanitize_run_name(run_name)).resolve()
        if root not in path.parents:
            raise ValueError(f"run name {run_name!r} leaves the runs folder")
        made = not path.exists()
        path.mkdir(parents=True, exist_ok=exist_ok)
        (path / "checkpoints").mkdir(exist_ok=True)
        run = cls(path)
        run.created = made  # this call made the folder (a new run stopped before its first step may remove it)
        return run

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> "RunDir":
        """The run folder a checkpoint folder belongs to (runs/<name>/checkpoints/step-N)."""
        return cls(Path(checkpoint).parent.parent)

    # -- files -----------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def load_config(self):
        """The run's config as it trained: `Config.load` of its config.yaml (ConfigError as that
        raises it), with the fields written after it that change a run (`BEFORE_FIELDS`) as before."""
        from core.config import Config
        from core.config_text import read_yaml

        cfg = Config.load(self.config_path)
        raw = read_yaml(self.config_path.read_text(), str(self.config_path)) or {}
        for (section, name), value in BEFORE_FIELDS.items():
            if name not in (raw.get(section) or {}):
                setattr(getattr(cfg, section), name, value)
        return cfg

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    def last_written(self) -> float:
        """When the run last wrote its config, status or metrics (a Unix time): its last activity,
        not its start (config.yaml is written at the start and on a resume). An interrupted run's
        status was rewritten by the start-up that found it: its time is the status it replaced."""
        times = []
        for p in (self.config_path, self.metrics_path):
            with contextlib.suppress(OSError):
                times.append(p.lstat().st_mtime)
        active = self.read_status().get("last_active")
        if isinstance(active, (int, float)) and not isinstance(active, bool):
            times.append(float(active))
        else:
            with contextlib.suppress(OSError):
                times.append(self.status_path.lstat().st_mtime)
        return max(times, default=0.0)

    @property
    def name(self) -> str:
        return self.path.name

    # -- status ----------------------------------------------------------------
    def write_status(self, state: str, **extra) -> None:
        data = {"state": state, "time": time.time(), **extra, **_writer()}
        if self.clock is not None:
            data["elapsed"] = round(float(self.clock()), 3)
        try:
            _fsync_write(self.status_path, json.dumps(data))
        except OSError as first:
            # a full disk or a read-only folder: the old file can still be written over in place,
            # so the state and the error survive a restart (the traceback is left out to fit)
            data.pop("traceback", None)
            if isinstance(data.get("error"), str):
                data["error"] = data["error"][:_IN_PLACE_ERROR_CHARS]
            data["written_in_place"] = f"{type(first).__name__}: {first}"[:300]
            try:
                _overwrite_in_place(self.status_path, json.dumps(data))
            except OSError:
                raise first from None

    def read_status(self) -> dict:
        """The status file, with anything a hand-edited or copied-in file got wrong left out: a
        state that is not text is "unknown", a step or max_steps that is not a whole number >= 0
        is dropped (the lists and Resume read them as numbers)."""
        try:
            with open_nofollow(self.status_path) as fh:
                status = json.loads(fh.read())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {"state": "unknown"}
        if not isinstance(status, dict):
            return {"state": "unknown"}
        if not isinstance(status.get("state"), str):
            status["state"] = "unknown"
        for key in ("step", "max_steps"):
            value = status.get(key)
            if key in status and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                status.pop(key)
        return status

    def mark_if_interrupted(self) -> bool:
        """A status left `running` or `paused` by a process that is gone becomes `interrupted`
        (its step and error kept), and the half-written checkpoint it may have left is removed.
        True when the run was interrupted (even if the folder is read-only and nothing could be
        written)."""
        status = self.read_status()
        if status.get("state") not in LIVE_STATES or writer_alive(status) is not False:
            return False
        reason = ("the process training this run ended without saving its state (killed, crashed, "
                  "or its disk was full): Resume continues from the last checkpoint")
        keep = {k: status[k] for k in ("step", "max_steps", "error", "reason", "elapsed") if k in status}
        with contextlib.suppress(OSError):
            self.remove_partial_checkpoints()
            self.write_status("interrupted", **{"reason": reason, **keep}, was=status.get("state"),
                              last_active=status.get("time"))  # the run's, not this start-up's (last_written)
        return True

    # -- logs --------------------------------------------------------------------
    def append_jsonl(self, path: Path, rows: list[dict]) -> None:
        with open_nofollow(path, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append_metrics(self, row: dict) -> None:
        self.append_jsonl(self.metrics_path, [row])

    def append_samples(self, rows: list[dict]) -> None:
        if rows:
            self.append_jsonl(self.samples_path, rows)

    @staticmethod
    def read_jsonl(path: Path) -> list[dict]:
        rows = []
        try:
            with open_nofollow(path) as fh:
                text = fh.read()
        except FileNotFoundError:
            return rows
        except (OSError, UnicodeDecodeError):  # a link (refused) or a file that is not text
            return rows
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a half-written last line after a crash: everything before it is whole
            if isinstance(row, dict):  # a hand-edited line that is not a record is skipped
                rows.append(row)
        return rows

    def read_metrics(self) -> list[dict]:
        return self.read_jsonl(self.metrics_path)

    def read_samples(self) -> list[dict]:
        return self.read_jsonl(self.samples_path)

    def truncate_logs(self, step: int) -> None:
        """Drop log lines after `step` (resume from a checkpoint must not duplicate steps)."""
        for path in (self.metrics_path, self.samples_path):
            if path.exists():
                kept = [r for r in self.read_jsonl(path) if isinstance(r.get("step", 0), (int, float))
                        and r.get("step", 0) <= step]
                _fsync_write(path, "".join(json.dumps(r, default=float) + "\n" for r in kept))

    # -- checkpoints -------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a half-written one is never listed)."""
        root = self.path / "checkpoints"
        if not root.is_dir() or root.is_symlink():
            return []
        done = [p for p in root.glob("step-*") if checkpoint_step(p) is not None and not p.is_symlink()
                and (p / "state.json").exists()]
        return sorted(done, key=checkpoint_step)

    def latest_checkpoint(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1] if cps else None

    def remove_partial_checkpoints(self) -> list[str]:
        """Delete the temporary folders of checkpoints whose writing never finished; their names.
        Call it only where nothing writes a checkpoint now (the run's own trainer at start, or
        for a run whose process is gone)."""
        root = self.path / "checkpoints"
        gone = []
        for tmp in sorted(root.glob(".tmp-step-*")) if root.exists() else []:
            shutil.rmtree(tmp, ignore_errors=True)
            gone.append(tmp.name)
        return gone

    def new_checkpoint_dir(self, step: int) -> tuple[Path, Path]:
        """(temporary folder to write into, final folder); call `commit_checkpoint` after writing."""
        final = self.path / "checkpoints" / f"step-{step:06d}"
        tmp = self.path / "checkpoints" / f".tmp-step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp, final

    def commit_checkpoint(self, tmp: Path, final: Path, state: dict, keep: int = 0) -> Path:
        _fsync_write(tmp / "state.json", json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep > 0:
            for old in self.checkpoints()[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final


# ---------------------------------------------------------------------------
# reward code this app has run: a run folder copied in from elsewhere asks before its code runs

_CODE_LEDGER = ".reward_code_run"  # in the runs folder: sha256 of each custom reward code this app ran


def _code_digest(code: str) -> str:
    import hashlib

    return hashlib.sha256(code.strip().encode()).hexdigest()


def remember_reward_code(runs_dir: str | Path, code: str) -> None:
    """Note that this app runs `code` (typed into its editor, or confirmed by the person resuming)."""
    if code.strip() and not knows_reward_code(runs_dir, code):
        with open_nofollow(Path(runs_dir) / _CODE_LEDGER, "a") as fh:
            fh.write(_code_digest(code) + "\n")


def knows_reward_code(runs_dir: str | Path, code: str) -> bool:
    """Whether this app ran `code` before (no code at all is known: nothing runs)."""
    if not code.strip():
        return True
    try:
        with open_nofollow(Path(runs_dir) / _CODE_LEDGER) as fh:
            return _code_digest(code) in fh.read().split()
    except (OSError, UnicodeDecodeError):
        return False


def default_run_name(source: str, when: float | None = None, algorithm: str = "grpo") -> str:
    """A new run's name from its data source: the date, then the built-in task, the file's stem
    (without the `-<hash>` an upload is stored under) or the hub dataset's name; then the algorithm
    when it is not grpo (runs of one task by several algorithms were told apart by time alone).

    >>> default_run_name("builtin:decimal_compare", 0).endswith("-decimal_compare")
    True
    >>> default_run_name("/srv/runs/_uploads/my data-0123456789abcdef.csv", 0)[-7:]
    'my_data'
    >>> default_run_name("openai/gsm8k", 0).endswith("-gsm8k")
    True
    >>> default_run_name("builtin:largest", 0, algorithm="online_dpo").endswith("-largest-online_dpo")
    True
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if when is None else when))
    name = source.split(":", 1)[1] if source.startswith("builtin:") else source.rstrip("/").split("/")[-1]
    stem = Path(name).stem if Path(name).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".parquet") else name
    stem = re.sub(r"-[0-9a-f]{16}$", "", stem)
    suffix = f"-{algorithm}" if algorithm != "grpo" else ""
    return sanitize_run_name(f"{stamp}-{stem}"[: 100 - len(suffix)] + suffix)  # the suffix survives the cut


def free_run_name(output_dir: str | Path, name: str) -> str:
    """`name`, or `name-2`, `name-3`, ... : the first that no run in `output_dir` uses yet, so a
    new run never appends to another run's logs (two runs started in the same second, or a
    config run twice)."""
    name = sanitize_run_name(name)
    candidate, k = name, 1
    while (Path(output_dir) / candidate / "config.yaml").exists():
        k += 1
        candidate = f"{name}-{k}"
    return candidate


def data_sources(output_dir: str | Path) -> set[str]:
    """The `data.source` of every run's config.yaml under `output_dir`: the uploads those runs
    need to resume, which the uploads quota never deletes. A config that cannot be read names none."""
    from core.config_text import read_yaml

    sources = set()
    for run in list_runs(output_dir):
        try:
            config = read_yaml(run.config_path.read_text(), str(run.config_path))
            source = config["data"]["source"]
        except Exception:  # a hand-edited or half-written config: it cannot resume anyway
            continue
        if isinstance(source, str) and source:
            sources.add(source)
    return sources


def list_runs(output_dir: str | Path) -> list[RunDir]:
    """Runs under `output_dir`, newest first."""
    root = Path(output_dir)
    if not root.exists():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and (p / "config.yaml").exists()]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)
