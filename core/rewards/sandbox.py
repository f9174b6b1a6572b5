"""Custom reward code, run in a worker process of its own.

Owns: the life of that worker. It is started with multiprocessing's *spawn* (a fresh Python,
not a fork), so nothing of the app — models, the trainer, the UI, module globals — exists in
it; it runs the user's code once, finds the reward functions in it (`core.rewards.code`'s
rules: defined, imported, listed, `async def` too), and then answers calls over a Pipe. Only
plain data crosses: (function name, prompts, completions, columns) in, a list of numbers (or an
error and its traceback) out. A call gets `timeout_s` seconds; one that overruns kills the
worker, which starts again on the next call (`pid` is the worker's keeper on Linux: the process
the app started, which ends the worker's tree when the app dies; `core/rewards/process_guard.py`).
The worker's address space is capped with
RLIMIT_AS, so a runaway allocation ends in a MemoryError, not in the app's death.
`core/rewards/process_guard.py` keeps the worker and what it starts in check: one process group killed
together, death with the app, at most `max_processes` processes, `memory_mb` counted over all of
them, and at most `output_bytes` of their stdout and stderr in the app's log.

Refuses to know: what a reward means, weights, the registry (`core.rewards`), which objects of
the code are reward functions and how one is awaited (`core.rewards.code`). It is process
isolation with time and memory limits, not a security boundary: user code runs as the app's
user and can still read files the app can read (its run folders, uploads, the model cache),
other processes of that user through /proc (the app's memory and the processes the app starts
with its environment hold the secrets the worker's own environment is cleared of), and the
network, like any code the user runs (README, "Security").

    >>> worker = CustomRewardProcess("def brevity(prompts, completions, **kwargs):\\n"
    ...                              "    return [-len(c) / 100 for c in completions]", timeout_s=5)
    >>> worker.names, worker.call("brevity", ["q", "q"], ["ab", "abcd"], {})
    (['brevity'], [-0.02, -0.04])
    >>> worker.close()
"""

from __future__ import annotations

import contextlib
import linecache
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
import types
import weakref
from typing import Any

from core.rewards.process_guard import blank_environ_values, TreeWatch, confine_worker
from core.rewards.code import FoundRewards, call_reward, description, find_rewards
from core.rewards.base import RewardError, check_rewards

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 2048
DEFAULT_MAX_PROCESSES = 32  # processes the reward code may start (a multiprocessing pool, a compiler)
DEFAULT_OUTPUT_BYTES = 64 * 1024  # of print() and other output per worker, into the app's log
STARTUP_TIMEOUT_S = 60.0  # a fresh Python on a busy machine; not charged to the user's time limit
MIN_LOAD_TIMEOUT_S = 10.0  # running the code's top level (its imports) gets at least this long
USER_FILENAME = "<custom reward code>"
USER_MODULE = "__custom_rewards__"

_SPAWN = multiprocessing.get_context("spawn")


# ---------------------------------------------------------------------------
# The worker (child process). Top level of this module so spawn can find it by name.

# variables that hold a secret by name: the Hub token, the app's login, an API key for the judge
_SECRET_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AHA_AUTH", "OPENAI_API_KEY")
# words of a name (split at "_") that say it holds a secret, and last words that say it only points at one
_SECRET_WORDS = {"TOKEN", "SECRET", "PASS", "PASSWORD", "PASSWD", "APIKEY", "PASSPHRASE"}
_SECRET_PAIRS = ("API_KEY", "ACCESS_KEY", "PRIVATE_KEY", "SECRET_KEY")
_POINTER_WORDS = {"FILE", "PATH", "DIR", "URL", "CACHE", "HOME"}


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret.

    >>> names = ("HF_TOKEN", "DB_PASS", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN", "PGPASSWORD",
    ...          "AHA_AUTH", "PATH", "HOME", "TOKENIZERS_PARALLELISM", "TIKTOKEN_CACHE_DIR", "GIT_ASKPASS",
    ...          "AWS_SHARED_CREDENTIALS_FILE", "HF_TOKEN_PATH", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "VLLM_MAX_TOKENS")
    >>> [n for n in names if is_secret_name(n)]
    ['HF_TOKEN', 'DB_PASS', 'AWS_SECRET_ACCESS_KEY', 'OPENAI_API_KEY', 'GITHUB_TOKEN', 'PGPASSWORD', 'AHA_AUTH']
    """
    up = name.upper()
    if up in _SECRET_NAMES:
        return True
    words = [w for w in up.split("_") if w]
    if not words or words[-1] in _POINTER_WORDS or "DISABLE" in words or "ENABLE" in words:
        return False
    return (any(w in _SECRET_WORDS or w.endswith("PASSWORD") for w in words)
            or any(p in up for p in _SECRET_PAIRS))


def scrub_secrets(environ) -> list[str]:
    """Remove from `environ` the variables whose names say they hold a secret; returns their names.
    The reward worker does this before any user code runs, so `os.environ` in reward code holds no
    token. A mitigation, not a wall: the code still runs as the app's user and can read the app's
    own environment through /proc (README, Security).

    >>> env = {"HF_TOKEN": "x", "MY_API_KEY": "y", "PATH": "/bin", "AHA_AUTH": "a:b"}
    >>> scrub_secrets(env), env
    (['AHA_AUTH', 'HF_TOKEN', 'MY_API_KEY'], {'PATH': '/bin'})
    """
    names = sorted(k for k in environ if is_secret_name(k))
    for k in names:
        del environ[k]
    return names



def _worker_main(conn, code: str, memory_mb: int | None, parent_pid: int = 0, max_processes: int = 0,
                 output_bytes: int = 0) -> None:
    # 1) limits first, before any user code runs; Ctrl-C in the terminal is for the parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kept = confine_worker(parent_pid, max_processes, output_bytes, keeper_closes=(conn,)) if parent_pid else False
    if memory_mb:
        import resource

        limit = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    scrub_secrets(os.environ)
    blank_environ_values(is_secret_name)  # and their values in what /proc/self/environ shows
    sys.argv[:] = sys.argv[:1]  # spawn copies the app's argv here (an --auth password among it)
    conn.send(("started", os.getpid(), kept))

    # 2) run the code's top level once and find its reward functions
    try:
        found = _load(code)
    except BaseException as e:
        conn.send(("load_error", _describe(e, memory_mb), _user_traceback(e)))
        return
    functions = found.functions
    conn.send(("loaded", [(name, description(fn)) for name, fn in functions.items()], found.notes))

    # 3) answer calls until told to stop or the parent goes away
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "call":
            return
        _, name, prompts, completions, kwargs = message
        try:
            result = _as_plain_result(call_reward(functions[name], prompts=prompts, completions=completions,
                                                  **kwargs))
            conn.send(("ok", result))
        except BaseException as e:  # SystemExit and MemoryError too: report them, keep serving
            try:
                conn.send(("error", _describe(e, memory_mb), _user_traceback(e)))
            except Exception as send_error:  # the exception's text would not pickle
                conn.send(("error", f"{type(e).__name__} ({send_error})", ""))


def _load(code: str) -> FoundRewards:
    # Registering the source lets tracebacks show the user's lines, not just line numbers.
    linecache.cache[USER_FILENAME] = (len(code), None, code.splitlines(True), USER_FILENAME)
    module = types.ModuleType(USER_MODULE)
    sys.modules[USER_MODULE] = module  # so pickling and dataclasses in user code find the module
    exec(compile(code, USER_FILENAME, "exec"), module.__dict__)
    return find_rewards(vars(module))


def _as_plain_result(result: Any) -> Any:
    # numpy arrays and scalars, generators: turned into a list of Python numbers here, so what
    # crosses the Pipe is plain; everything else is judged by the parent's check_rewards.
    if hasattr(result, "tolist"):
        result = result.tolist()
    elif hasattr(result, "__iter__") and not isinstance(result, (str, bytes, dict, list)):
        result = list(result)
    if isinstance(result, list):
        result = [v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v for v in result]
    return result


def _describe(e: BaseException, memory_mb: int | None) -> str:
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if isinstance(e, MemoryError) and memory_mb:
        text += f" (the worker may use at most {memory_mb} MiB)"
    return text


def _user_traceback(e: BaseException) -> str:
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:  # drop the worker's frames
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


# ---------------------------------------------------------------------------
# The parent's handle on the worker

_MAIN_SWAP_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden():
    """Start a spawn child without re-running the parent's main script in it.

    Spawn re-imports `__main__` in the child (as `__mp_main__`) so that pickled objects from it
    resolve: for `python app.py` that would import gradio and torch, or launch a second app if
    the script lacks an `if __name__ == "__main__"` guard. The worker needs nothing from
    `__main__`, and spawn decides what to re-import from `sys.modules["__main__"]`'s `__spec__`
    and `__file__` (CPython Lib/multiprocessing/spawn.py, get_preparation_data), so during
    `start()` a bare module stands in for it.
    """
    with _MAIN_SWAP_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _stop(process, conn, watch=None) -> None:
    """End the worker and every process it started (it holds no state worth a goodbye)."""
    if watch is not None:
        watch.kill()  # before the join reaps the worker: its pid still names its group
    else:
        with contextlib.suppress(Exception):
            conn.send(("close",))
        with contextlib.suppress(Exception):
            process.join(1.0)
    if process.is_alive():
        process.kill()
    with contextlib.suppress(Exception):
        process.join(5.0)
    with contextlib.suppress(Exception):
        conn.close()


class _Launcher:
    """Starts workers from one thread that lives as long as the app: Linux sends the parent-death
    signal when the *thread* that started a child ends, and a request's thread may end any time."""

    def __init__(self):
        import queue

        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, process) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="aha-reward-launcher", daemon=True)
                self._thread.start()
        done: dict = {}
        event = threading.Event()
        self._jobs.put((process, done, event))
        event.wait()
        if "error" in done:
            raise done["error"]

    def _loop(self) -> None:
        while True:
            process, done, event = self._jobs.get()
            try:
                with _main_module_hidden():
                    process.start()
            except BaseException as e:
                done["error"] = e
            event.set()


_LAUNCHER = _Launcher()


class CustomRewardProcess:
    """User reward code in a worker process; `.call` runs one of its functions on a batch.

    Raises RewardError when the code cannot load (with the user's traceback), defines no reward
    function, or when a call raises, times out or returns anything but one finite float per
    completion. After a failure, build a new CustomRewardProcess with the corrected code.
    """

    def __init__(self, code: str, timeout_s: float = 10.0, memory_mb: int | None = DEFAULT_MEMORY_MB,
                 max_processes: int = DEFAULT_MAX_PROCESSES, output_bytes: int = DEFAULT_OUTPUT_BYTES):
        self.code = code
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.max_processes = int(max_processes)
        self.output_bytes = int(output_bytes)
        self._watch: TreeWatch | None = None
        self.descriptions: dict[str, str] = {}
        self.notes: list[str] = []  # what the code's author should know (core.rewards.code.find_rewards)
        self._lock = threading.Lock()
        self._process = None
        self._conn = None
        self._finalizer = None
        self._closed = False
        self._dropped_kwargs: set[str] = set()
        self._start()
        if not self.descriptions:
            self._kill()
            raise RewardError(
                "no reward function found in the custom code: define a function like "
                "`def my_reward(prompts, completions, **kwargs) -> list[float]` at the top level, "
                "import one (`from trl.rewards import accuracy_reward`) or list them (`reward_funcs = [...]`)"
                + "".join(f"; {note}" for note in self.notes)
            )

    @property
    def names(self) -> list[str]:
        """The reward functions found in the code, in the order they are defined."""
        return list(self.descriptions)

    @property
    def pid(self) -> int | None:
        """The worker's process id (None while it is not running)."""
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    # -- lifecycle ----------------------------------------------------------
    def _start(self) -> None:
        parent_conn, child_conn = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=_worker_main, name="aha-custom-reward", daemon=True,
            args=(child_conn, self.code, self.memory_mb, os.getpid(), self.max_processes, self.output_bytes),
        )
        _LAUNCHER.start(process)
        child_conn.close()
        self._process, self._conn = process, parent_conn
        self._watch = TreeWatch(process.pid, self.memory_mb, self.max_processes)
        self._finalizer = weakref.finalize(self, _stop, process, parent_conn, self._watch)

        started = self._receive(STARTUP_TIMEOUT_S, "starting the custom reward worker")
        self._watch.keeper = bool(started[2])  # the process started is a keeper; the worker, one of its tree
        if not started[2] and sys.platform.startswith("linux"):
            logger.warning("custom reward worker %s runs without its keeper (fork failed): processes it "
                           "starts and detaches can outlive a killed app", process.pid)
        load_timeout = max(self.timeout_s, MIN_LOAD_TIMEOUT_S)
        reply = self._receive(load_timeout, "loading the custom reward code")
        if reply[0] == "load_error":
            self._kill()
            raise RewardError(f"custom reward code failed to load: {reply[1]}", traceback_text=reply[2])
        self.descriptions, self.notes = dict(reply[1]), list(reply[2])

    def _kill(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _stop once
        self._process = self._conn = self._finalizer = self._watch = None

    def _receive(self, timeout_s: float, what: str, reward_name: str | None = None):
        if not self._conn.poll(timeout_s):
            self._watch.kill()  # busy in user code: no polite goodbye, for it or what it started
            self._kill()
            raise RewardError(
                f"{what} timed out after {timeout_s:g}s; the worker was stopped and restarts on the next call",
                reward_name=reward_name,
            )
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            process, watch = self._process, self._watch
            process.join(5.0)
            code = process.exitcode
            self._kill()
            if watch.reason:  # a limit of core/rewards/process_guard.py stopped it
                hint = f" (stopped: {watch.reason})"
            else:
                hint = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
            raise RewardError(
                f"{what}: the worker process died with exit code {code}{hint}; it restarts on the next call",
                reward_name=reward_name,
            ) from None

    def close(self) -> None:
        """Stop the worker. Calls after this raise RewardError."""
        with self._lock:
            self._closed = True
            self._kill()

    def __enter__(self) -> CustomRewardProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls --------------------------------------------------------------
    def call(self, name: str, prompts: list, completions: list, kwargs: dict | None = None) -> list[float]:
        """Run custom function `name` on a batch in the worker; one float per completion."""
        if name not in self.descriptions:
            raise RewardError(f"no custom reward {name!r}; the code defines: {', '.join(self.names)}", reward_name=name)
        message = ("call", name, _plain(prompts), _plain(completions), self._plain_kwargs(kwargs or {}))
        with self._lock:
            if self._closed:
                raise RewardError(f"custom reward {name!r} called after close()", reward_name=name)
            if self._process is None or not self._process.is_alive():
                self._kill()
                self._start()  # after a timeout or a crash
            try:
                self._conn.send(message)
            except (BrokenPipeError, EOFError, OSError):  # died between calls: start again once
                self._kill()
                self._start()
                self._conn.send(message)
            reply = self._receive(self.timeout_s, f"custom reward {name!r}", reward_name=name)
        if reply[0] == "error":
            raise RewardError(f"custom reward {name!r} raised {reply[1]}", reward_name=name, traceback_text=reply[2])
        return check_rewards(name, reply[1], len(completions))

    def function(self, name: str):
        """Custom function `name` as a TRL-style reward function `(prompts, completions, **kwargs)`."""
        if name not in self.descriptions:
            raise RewardError(f"no custom reward {name!r}; the code defines: {', '.join(self.names)}", reward_name=name)
        return _CustomReward(self, name)

    def _plain_kwargs(self, kwargs: dict) -> dict:
        out = {}
        for key, value in kwargs.items():
            try:
                out[key] = _plain(value)
            except TypeError as e:
                # TRL also passes trainer_state, log_metric, ...: objects of this process that
                # mean nothing in the worker. Leave them out, and say so once.
                if key not in self._dropped_kwargs:
                    self._dropped_kwargs.add(key)
                    logger.warning("custom rewards: keyword %r not sent to the worker (%s)", key, e)
        return out


class _CustomReward:
    """A custom function seen from the parent: same signature as in the user's code."""

    def __init__(self, process: CustomRewardProcess, name: str):
        self.process, self.name, self.__name__ = process, name, name

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.process.call(self.name, prompts, completions, kwargs)

    def __repr__(self) -> str:
        return f"<custom reward {self.name}>"


_PLAIN_SCALARS = (str, int, float, bool, bytes, type(None))


def _plain(value: Any) -> Any:
    """`value` as plain Python data (lists, dicts, numbers, strings); TypeError if it is not data.

    >>> _plain(({"role": "assistant", "content": "hi"},))
    [{'role': 'assistant', 'content': 'hi'}]
    """
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy, torch
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not plain data")
