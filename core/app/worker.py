"""The one thread that touches the model: every model call (training steps, generation,
evaluation, chat, loading, merging) runs on it, because generation and training share the same
weights and are not thread-safe.

Owns: `ModelWorker` (a queue of jobs run in order on one thread; while training, the trainer drains
it between steps) and `worker_control` (a run's pause that keeps serving the queue, so a chat is
answered while a run is paused). Refuses to know: what the jobs do.

    >>> worker = ModelWorker()
    >>> worker.submit(lambda: 6 * 7).result()
    42
    >>> worker.close()
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable


class ModelWorker:
    """One thread that runs every model call, in order. `submit(fn)` returns a Future.

    A job submitted from the worker thread itself runs at once (no deadlock). The long training
    job calls `drain()` between steps and `wait_and_drain()` while paused, so jobs queued behind
    it are served meanwhile.
    """

    _STOP = object()

    def __init__(self, name: str = "aha-model-worker"):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def in_worker(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.in_worker():
            self._run(fn, future)
        else:
            self._jobs.put((fn, future))
        return future

    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run `fn` on the worker and return its result (its exception is raised here)."""
        return self.submit(fn).result(timeout=timeout)

    @staticmethod
    def _run(fn, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as e:  # the caller sees it through the Future
            future.set_exception(e)

    def _next(self, timeout: float | None) -> bool:
        """Run one queued job; False when there was none within `timeout` (or on close)."""
        try:
            item = self._jobs.get(timeout=timeout) if timeout else self._jobs.get_nowait()
        except queue.Empty:
            return False
        if item is self._STOP:
            self._jobs.put(item)  # leave it for the main loop
            return False
        self._run(*item)
        return True

    def pending(self) -> int:
        """Jobs waiting for the worker (e.g. chat answers queued behind a training step)."""
        return self._jobs.qsize()

    def ahead_of(self, future: concurrent.futures.Future | None) -> int | None:
        """How many queued jobs run before `future`'s (the one on the worker now not counted); None
        once it left the queue (running or done), or for None. A run that waits behind a chat answer
        says so in its status."""
        with self._jobs.mutex:
            for i, item in enumerate(self._jobs.queue):
                if item is not self._STOP and item[1] is future:
                    return i
        return None

    def drain(self) -> int:
        """Run the jobs that were waiting when it was called, and no more (from the worker thread,
        between training steps): jobs that arrive meanwhile wait for the next step, so steady chat
        traffic cannot hold a run back by more than one round of answers per step."""
        n, limit = 0, self._jobs.qsize()
        while n < limit and self._next(None):
            n += 1
        return n

    def wait_and_drain(self, timeout: float = 0.2) -> None:
        """Block up to `timeout` for a job, run it and those waiting behind it (used while paused)."""
        if self._next(timeout):
            self.drain()

    def _loop(self) -> None:
        while True:
            item = self._jobs.get()
            if item is self._STOP:
                return
            self._run(*item)

    def close(self) -> None:
        self._jobs.put(self._STOP)


def worker_control(worker: ModelWorker):
    """A TrainerControl whose pause keeps serving the worker's queue (chat while paused)."""
    from core.rl.control import TrainerControl, TrainingStopped

    class WorkerControl(TrainerControl):
        def wait_if_paused(self, on_pause=None) -> None:
            if self.paused and on_pause:
                on_pause()
            with self.held():
                while self.paused:
                    worker.wait_and_drain(0.2)
            if self.stop_requested:
                raise TrainingStopped()

    return WorkerControl()
