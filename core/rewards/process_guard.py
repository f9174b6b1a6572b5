"""Limits on a worker process and everything it starts: one process group, death with the app,
a process count, memory counted over the whole tree, capped output.

Owns the process-management side of the custom reward worker (`core/rewards/sandbox.py`), issue 19:

- in the worker, before any user code (`confine_worker`): its own process group; "child
  subreaper", so that processes it starts and that detach stay in its tree instead of moving to
  init; then it splits in two: a *keeper* (the process the app started, which never runs user
  code: it waits on its children, and when the app dies — the parent-death signal, SIGTERM to it —
  or the worker ends, it SIGKILLs every process of its tree and its group) and the worker proper
  (its child, SIGKILLed when the keeper dies, so even while user code is busy); on Linux for a
  non-root user, RLIMIT_NPROC as a hard stop for a fork bomb; stdout and stderr (file
  descriptors 1 and 2, so subprocesses and C code too) through a pipe that forwards at most
  `output_bytes` to the app's stderr and drops the rest;
- in the app (`TreeWatch`): a thread that, every `POLL_S`, walks the worker's process tree,
  adds up its resident memory and counts its processes, and kills the whole tree when either
  passes its limit, keeping the reason for the error message; `kill()` ends the group and every
  process of the tree ever seen.

What it is not: a security boundary. Memory is sampled every `POLL_S` (a faster spike is not
seen; pages shared after a fork count once per process, the keeper's too); root is exempt from
RLIMIT_NPROC, so a fork bomb run as root is stopped only at the next poll; `TreeWatch.kill` lets
the keeper sweep first and SIGKILLs it after 3 s: a process started after the app's last look at
the tree, with the keeper gone, can outlive it.
All of this is Linux; elsewhere the worker runs with the time limit (and RLIMIT_AS where there is
one) alone.

Refuses to know: what runs in the worker and the worker's protocol (`core/rewards/sandbox.py`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

POLL_S = 0.2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
NPROC_HEADROOM = 64  # RLIMIT_NPROC counts every task of the user (the app's threads too): room for them to grow
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ---------------------------------------------------------------------------
# in the worker


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _tasks_of_user(uid: int) -> int:
    """Threads of every process of `uid` (what RLIMIT_NPROC counts)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def confine_worker(parent_pid: int, max_processes: int, output_bytes: int, keeper_closes=()) -> bool:
    """Call first thing in the worker (see the module docstring). Returns, in the worker proper
    only, whether a keeper watches it (the process the app started is then the keeper, and the
    worker one process of its tree); the keeper closes `keeper_closes` (the worker's end of its
    pipe to the app, so the app reads EOF when the worker dies) and never returns."""
    if not sys.platform.startswith("linux"):
        return False
    # 1) our own process group: the app kills the worker and what it started with one killpg
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # 2) die with the app; it may have died already, before the signal was armed
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)
    # 3) detached descendants stay ours, so the app's TreeWatch still sees and counts them, and
    # the keeper can end them when the app dies
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    kept = _split_keeper(parent_pid, keeper_closes)
    # 4) a fork bomb meets a hard limit (not for root, whom the kernel exempts)
    if os.geteuid() != 0 and max_processes > 0:
        import resource

        limit = _tasks_of_user(os.getuid()) + max_processes + NPROC_HEADROOM
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    # 5) stdout and stderr through a capped pipe
    if output_bytes > 0:
        _cap_output(output_bytes)
    return kept


def _split_keeper(app_pid: int, keeper_closes) -> bool:
    """Fork: the child returns (True) and becomes the worker, SIGKILLed when its parent dies; the
    parent stays the keeper (`_keep`) and never returns. Without fork, False: no keeper."""
    keeper = os.getpid()
    try:
        worker = os.fork()
    except OSError:
        return False
    if worker == 0:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != keeper:  # the keeper died before the signal was armed
            os._exit(1)
        return True
    for obj in keeper_closes:
        with contextlib.suppress(Exception):
            obj.close()
    _keep(app_pid, worker)
    return False  # not reached


def _sweep(deadline_s: float) -> None:
    """SIGKILL this process's tree again and again, reaping, until it is empty (a killed process
    forks no more; what a process forked just before it was killed comes back to us, the
    subreaper, and is killed on the next pass) or `deadline_s` passed."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        tree = process_tree(os.getpid())
        for p in tree:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not tree:
                return
        time.sleep(0.005)


def _end_tree() -> None:
    """SIGKILL every process of this process's tree, then its group (this process among them)."""
    _sweep(2.0)
    with contextlib.suppress(OSError):
        os.killpg(0, signal.SIGKILL)


def _keep(app_pid: int, worker: int) -> None:
    """The keeper: reap children (orphans of the tree come to it, the subreaper) until the worker
    ends, then end what the worker left; end everything when the app dies (SIGTERM, its
    parent-death signal) or when told to (SIGTERM from the app's `TreeWatch.kill`). It exits as the worker
    did: the same code, or killed by the same signal (the app reads "killed: out of memory?" from a
    SIGKILL). Runs no user code and takes no lock: only this loop and a signal handler."""
    def on_term(signum, frame):
        _end_tree()
        os._exit(128 + signum)  # reached only if killpg was refused

    signal.signal(signal.SIGTERM, on_term)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != app_pid:  # the app died before the signal was armed
        on_term(signal.SIGTERM, None)
    status = 0
    while True:
        try:
            pid, status_of = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == worker:
            status = status_of
            break
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _sweep(2.0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError, OSError):  # one core file (the worker's), not a second
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig != signal.SIGKILL:  # SIGKILL's action cannot be set (EINVAL); it is the default anyway
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _cap_output(limit: int) -> None:
    target = os.dup(2)  # the app's stderr (its log)
    read_end, write_end = os.pipe()
    for fd in (1, 2):
        os.dup2(write_end, fd)
    os.close(write_end)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=True)

    def forward() -> None:
        left = limit
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                return
            if not chunk:
                return
            if left > 0:
                part = chunk[:left]
                left -= len(part)
                with contextlib.suppress(OSError):
                    os.write(target, part)
                    if left <= 0:
                        os.write(target, f"\n[custom reward output cut after {limit} bytes]\n".encode())
            # past the limit: keep reading so writers never block, drop the bytes

    threading.Thread(target=forward, name="aha-reward-output", daemon=True).start()


# ---------------------------------------------------------------------------
# secrets in what /proc shows of a process (the app's and the worker's own)

def _own_block(first: int) -> tuple[int, int] | None:
    """(start, end) addresses of this process's argument (first=48) or environment (first=50) block,
    the memory /proc/<pid>/cmdline and /proc/<pid>/environ read (proc(5), fields 48-51, Linux >= 3.5)."""
    try:
        text = Path("/proc/self/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
        start, end = int(fields[first - 3]), int(fields[first - 2])
    except (OSError, ValueError, IndexError):
        return None
    return (start, end) if 0 < start < end else None


def blank_environ_values(is_secret) -> list[str]:
    """Zero the values of the variables `is_secret(name)` picks, in this process's own environment
    block: the memory /proc/<pid>/environ shows to any process of the same user (the reward code
    too), and the strings C's `environ` points at, which children started with the inherited
    environment receive (multiprocessing's spawn, subprocess without env=): they get the name with
    an empty value. Python's `os.environ`, a copy made at start-up, keeps the values, so this
    process still reads them (huggingface_hub's HF_TOKEN). Returns the names blanked; Linux only.
    """
    block = _own_block(50)
    if block is None:
        return []
    import ctypes

    start, end = block
    names, pos = [], 0
    for entry in ctypes.string_at(start, end - start).split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and value and is_secret(name.decode(errors="replace")):
            ctypes.memset(start + pos + len(name) + 1, 0, len(value))
            names.append(name.decode(errors="replace"))
        pos += len(entry) + 1
    return names


def mask_in_cmdline(value: str) -> int:
    """Overwrite with '*' the part after the first ':' of every argument that is `value` or ends
    with '=' + `value` (`--auth user:password`, `--auth=user:password`) in this process's argument
    block: what `ps` and /proc/<pid>/cmdline show every local user. `sys.argv`, a copy, keeps it.
    Returns how many arguments were masked; Linux only."""
    block = _own_block(48)
    raw = os.fsencode(value)
    if block is None or b":" not in raw:
        return 0
    import ctypes

    start, end = block
    secret_at = raw.index(b":") + 1
    count, pos = 0, 0
    for arg in ctypes.string_at(start, end - start).split(b"\0"):
        if arg == raw or arg.endswith(b"=" + raw):
            at = start + pos + len(arg) - len(raw) + secret_at
            ctypes.memset(at, ord("*"), len(raw) - secret_at)
            count += 1
        pos += len(arg) + 1
    return count


# ---------------------------------------------------------------------------
# in the app


def _children(pid: int) -> list[int]:
    out = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            out.extend(int(c) for c in children.read_text().split())
    return out


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields from the third (state) on, None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _state(pid: int) -> str | None:
    """`pid`'s state letter ("Z": a zombie), None when it is gone."""
    fields = _stat(pid)
    return fields[0] if fields else None


def _resident_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def process_tree(pid: int) -> list[int]:
    """`pid`'s descendants (not `pid` itself), found through /proc/<pid>/task/*/children."""
    seen, todo = [], _children(pid)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo.extend(_children(p))
    return seen


class TreeWatch:
    """Watch worker `pid` and its descendants; kill them all past `memory_mb` (resident, summed)
    or `max_processes` descendants. `reason` says which limit, once it happened."""

    def __init__(self, pid: int, memory_mb: int | None, max_processes: int):
        self.pid = pid
        self.memory_bytes = int(memory_mb) * 2**20 if memory_mb else 0
        self.max_processes = int(max_processes)
        self.reason = ""
        self.keeper = False  # `pid` is the worker's keeper (`confine_worker`): its first child is the worker
        self._seen: dict[int, str | None] = {pid: _start_time(pid)}
        self._done = threading.Event()
        self._enabled = sys.platform.startswith("linux") and Path(f"/proc/{pid}").exists()
        if self._enabled:
            threading.Thread(target=self._loop, name=f"aha-reward-watch-{pid}", daemon=True).start()

    def _loop(self) -> None:
        while not self._done.wait(POLL_S):
            if not Path(f"/proc/{self.pid}").exists():
                return
            tree = process_tree(self.pid)
            for p in tree:
                self._seen.setdefault(p, _start_time(p))
            started = len(tree) - (1 if self.keeper else 0)  # the worker proper is the keeper's child
            if self.max_processes and started > self.max_processes:
                self._breach(f"the reward code started {started} processes, more than the "
                             f"{self.max_processes} allowed")
                return
            if self.memory_bytes:
                used = sum(_resident_bytes(p) for p in (self.pid, *tree))
                if used > self.memory_bytes:
                    self._breach(f"the reward worker and the {started} processes it started used "
                                 f"{used / 2**20:.0f} MiB together, more than the "
                                 f"{self.memory_bytes // 2**20} MiB allowed")
                    return

    def _breach(self, reason: str) -> None:
        self.reason = reason
        self.kill()

    def kill(self) -> None:
        """SIGKILL the worker's process group and every process of its tree seen so far (each
        checked by its start time, so a reused pid is left alone)."""
        self._done.set()
        if not self._enabled:
            return
        if self.keeper and _start_time(self.pid) == self._seen.get(self.pid):
            # the keeper sweeps its own tree (it is the subreaper: what escapes one pass comes back to it)
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and _state(self.pid) not in (None, "Z"):
                time.sleep(0.01)
        for p in process_tree(self.pid):  # the newest, not yet polled
            self._seen.setdefault(p, _start_time(p))
        alive = [p for p, started in self._seen.items() if started is not None and _start_time(p) == started]
        # the worker's own group (confine_worker's setpgid). Its id stays taken while the worker
        # (even reaped: its group) has members, so it can only name another group when none of
        # ours is left; then there is nothing to kill
        if alive:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
        for p in alive:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)

    def stop(self) -> None:
        """Stop watching (the worker is being shut down by the app)."""
        self._done.set()
