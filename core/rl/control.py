"""Pause / resume / stop a training loop from another thread (the UI, a signal handler).

Owns: `TrainerControl`, the flags the loop checks between steps (and the engine between
generation batches, through `stop_requested`), and `TrainingStopped`, what the loop raises
when asked to stop.

Refuses to know: what a step is, the run folder, the UI that presses the buttons.
"""

from __future__ import annotations

import contextlib
import threading
import time


class TrainingStopped(Exception):
    """Raised inside the loop when the user asked to stop."""


class TrainerControl:
    """Pause / resume / stop from another thread. `stop_on_pause` is for headless runs (CLI,
    benchmarks): nobody is there to press Resume, so a pause (a failing reward, out of memory at
    micro-batch 1) stops the run with its checkpoint and the reason instead of waiting forever."""

    def __init__(self, stop_on_pause: bool = False):
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self.stop_requested = False
        self.stop_on_pause = stop_on_pause
        self.pause_reason = ""
        # True while the loop is held between steps: a pause asked for mid-step is not yet one
        self.holding = False
        # (seconds held by pauses that ended, when the hold in progress began or None), replaced whole so
        # that a reader on another thread never sees a hold counted twice or not at all
        self._hold: tuple[float, float | None] = (0.0, None)

    def held_seconds(self, now: float | None = None) -> float:
        """Seconds the loop has waited in pauses so far (the run's elapsed time leaves them out)."""
        held, since = self._hold
        return held + (((now if now is not None else time.time()) - since) if since is not None else 0.0)

    @contextlib.contextmanager
    def held(self):
        """The loop held between steps (`holding`), its time counted in `held_seconds`."""
        self.holding = self.paused
        if self.holding:
            self._hold = (self._hold[0], time.time())
        try:
            yield
        finally:
            held, since = self._hold
            if since is not None:
                self._hold = (held + time.time() - since, None)
            self.holding = False

    def pause(self, reason: str = "", announce=None) -> None:
        """Pause; `announce()` (e.g. writing the status file with the traceback) runs first, under
        the same lock as `resume`: whoever sees the pause also finds its reason, and a Resume
        pressed as soon as the status says "paused" is never lost."""
        with self._lock:
            if announce is not None:
                announce()
            self.pause_reason = reason
            self._running.clear()

    def resume(self) -> None:
        with self._lock:
            self.pause_reason = ""
            self._running.set()

    def stop(self) -> None:
        self.stop_requested = True
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_if_paused(self, on_pause=None) -> None:
        if self.paused and on_pause:
            on_pause()
        with self.held():
            self._running.wait()
        if self.stop_requested:
            raise TrainingStopped()
