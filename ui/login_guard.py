"""Password guessing made slow: a lock-out that doubles after repeated failed logins.

Owns: `LoginGuard`, an ASGI middleware in front of Gradio's `POST /login`. Gradio itself checks
the password; the guard only watches the answers. Per client address, attempts are taken one
at a time; after `max_failures` failures in a row every further attempt is refused with HTTP 429
(the right password too) for `base_lock_s`, then twice as long after each new failure, up to
`max_lock_s`; a successful login clears the count. Without it a client could try about 700
passwords a second (issue 19); with the defaults it gets 5, then 1 after a second, 1 after two
more seconds, and so on.

The address is the one the connection comes from. An X-Forwarded-For header is believed only
from a proxy the operator named (`--trusted-proxy` / $AHA_TRUSTED_PROXIES, passed to uvicorn by
`forwarded_allow_ips`): uvicorn trusted it from 127.0.0.1 by default, so a client could name a
new address on every attempt, never be locked out, and lock out an address of its choice
(issue 29). Behind a reverse proxy that is not named (a Hugging Face Space) every client has the
proxy's address, so the lock-out is then shared by all clients: a guesser can keep the owner out
for a while, but not in.

On top, a global failure budget: more than `global_failures` failed logins within
`global_window_s` from all addresses together refuse every attempt until the window has room
again, so many addresses (an IPv6 block, a botnet, a proxy that forwards what it is told) guess
no faster than that either. The price, said in the README: a guesser can keep everyone out while
it keeps guessing.

Refuses to know: the credentials, Gradio's routes beyond the login path.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
from dataclasses import dataclass

MAX_TRACKED = 10_000  # client addresses remembered at most (the oldest are forgotten)


@dataclass
class _Client:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginGuard:
    """ASGI middleware: `Middleware(LoginGuard, max_failures=5)` in the app's middleware list."""

    def __init__(self, app, max_failures: int = 5, base_lock_s: float = 1.0, max_lock_s: float = 300.0,
                 global_failures: int = 60, global_window_s: float = 60.0):
        self.app = app
        self.max_failures, self.base_lock_s, self.max_lock_s = max_failures, base_lock_s, max_lock_s
        self.global_failures, self.global_window_s = global_failures, global_window_s
        self._clients: dict[str, _Client] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent_failures: collections.deque[float] = collections.deque()  # times, all clients
        self._in_flight = 0  # attempts being answered: each may fail, so each takes room in the budget

    def _global_wait(self, now: float) -> float:
        """Seconds until the global failure budget has room again (0 when it has)."""
        while self._recent_failures and self._recent_failures[0] <= now - self.global_window_s:
            self._recent_failures.popleft()
        if len(self._recent_failures) + self._in_flight < self.global_failures:
            return 0.0
        if not self._recent_failures:  # the room is taken by attempts still being answered
            return 1.0
        return self._recent_failures[0] + self.global_window_s - now

    @staticmethod
    def _is_login(scope) -> bool:
        return (scope["type"] == "http" and scope.get("method") == "POST"
                and scope.get("path", "").rstrip("/").endswith("/login"))

    def _client(self, key: str) -> _Client:
        if key not in self._clients and len(self._clients) >= MAX_TRACKED:
            oldest = min(self._clients, key=lambda k: self._clients[k].last)
            self._clients.pop(oldest)
            self._locks.pop(oldest, None)
        return self._clients.setdefault(key, _Client())

    def _record(self, client: _Client, ok: bool) -> None:
        client.last = time.monotonic()
        if ok:
            client.failures, client.locked_until = 0, 0.0
            return
        client.failures += 1
        self._recent_failures.append(client.last)
        if client.failures >= self.max_failures:
            lock = self.base_lock_s * 2 ** (client.failures - self.max_failures)
            client.locked_until = client.last + min(lock, self.max_lock_s)

    async def __call__(self, scope, receive, send):
        if not self._is_login(scope):
            return await self.app(scope, receive, send)
        key = (scope.get("client") or ("?", 0))[0]
        async with self._locks.setdefault(key, asyncio.Lock()):  # one attempt at a time per client
            client = self._client(key)
            now = time.monotonic()
            wait = max(client.locked_until - now, self._global_wait(now))
            if wait > 0:
                return await _refuse(send, wait)
            status = {}

            async def watch(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            self._in_flight += 1
            try:
                await self.app(scope, receive, watch)
            finally:
                self._in_flight -= 1
            if status.get("code") in (200, 400, 401):
                self._record(client, ok=status["code"] == 200)


async def _refuse(send, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    body = json.dumps({"detail": f"Too many failed logins: try again in {seconds} s"}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(seconds).encode())]})
    await send({"type": "http.response.body", "body": body})
