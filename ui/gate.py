"""The door before Gradio: no API route without a login, a bound on requests held open, and room
for the connections the app is allowed.

Owns: `ApiGate`, an ASGI middleware in front of the whole app, and `raise_open_file_limit`, run
once when the app is launched. Issue 29: an anonymous client made the app unreachable by holding
about 1,000 connections (`GET /gradio_api/heartbeat/<id>` streams need no login in Gradio, and
half-sent requests cost a file each) until the process ran out of its 1,024 open files.

- With a login configured, every `/gradio_api/*` route answers 401 to a client without a login
  session (Gradio leaves a few open: the heartbeat stream, user, token, app_id). The page itself,
  its assets and `POST /login` stay open: the login form needs them; so does `startup-events`,
  which Gradio's launch calls without a cookie and which runs the start-up hooks once only.
- Requests in flight (streams included) are bounded per client address and in total; past the
  bound a request is answered 503 at once, so neither a logged-in page left open many times nor
  a script can take every file the process has.
- `raise_open_file_limit` lifts the soft limit on open files to the hard one (at most 65,536), so
  the bound above, not the operating system's default of 1,024, is what a flood meets.

What it cannot do: a request whose headers never finish is held by uvicorn before any middleware
sees it (uvicorn 0.55 has no header timeout and Gradio passes it no settings); the raised file
limit makes that cost many thousands of connections, and a reverse proxy with header timeouts in
front (a Hugging Face Space has one) ends them. README, "Security".

Reaches into Gradio (6.x): the app in `scope["app"]` keeps `auth`, `auth_dependency`, `tokens`
(cookie token -> user) and `cookie_id` (the cookie's name is `access-token-<cookie_id>`, or
`access-token-unsecure-<cookie_id>` over plain http). When these are missing the gate refuses
every API route rather than letting them through; tests/test_security_round3.py::test_case1
fails if a Gradio release renames them.

Refuses to know: the credentials, what a route does.
"""

from __future__ import annotations

import json
import resource
import sys

API_PREFIX = "/gradio_api/"
OPEN_API_PATHS = {"/gradio_api/startup-events"}  # launch calls it; a second call does nothing
GATED_PATHS = {"/openapi.json"}  # FastAPI's schema of every route, outside API_PREFIX
MAX_OPEN_FILES = 65_536


def raise_open_file_limit(target: int = MAX_OPEN_FILES) -> int:
    """Lift the soft RLIMIT_NOFILE towards `target` (never above the hard limit); the soft limit now."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 0
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError) as e:
            print(f"could not raise the open-file limit from {soft} to {want}: {e}", file=sys.stderr)
    return soft


def _cookies(scope) -> dict[str, str]:
    from starlette.requests import cookie_parser

    for name, value in scope.get("headers") or ():
        if name == b"cookie":
            return cookie_parser(value.decode("latin-1"))
    return {}


def logged_in(scope) -> bool:
    """Whether the request may reach Gradio's API: the app has no login, or the request carries
    the cookie of a session Gradio knows (see the module docstring for what this reads)."""
    app = scope.get("app")
    try:
        auth, dependency, tokens, cookie_id = app.auth, app.auth_dependency, app.tokens, app.cookie_id
    except AttributeError:  # a Gradio that keeps these elsewhere: refuse rather than guess
        return False
    if auth is None and dependency is None:
        return True
    if dependency is not None:  # an operator's own auth function (not used by this app): Gradio decides
        return True
    cookies = _cookies(scope)
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return token is not None and tokens.get(token) is not None


class ApiGate:
    """ASGI middleware: `Middleware(ApiGate, max_per_client=64, max_total=512)`."""

    def __init__(self, app, max_per_client: int = 64, max_total: int = 512):
        self.app = app
        self.max_per_client, self.max_total = max_per_client, max_total
        self._per_client: dict[str, int] = {}
        self._total = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        gated = (path.startswith(API_PREFIX) and path.rstrip("/") not in OPEN_API_PATHS) or path.rstrip("/") in GATED_PATHS
        if gated and not logged_in(scope):
            return await _answer(scope, send, 401, "Not authenticated: log in first")
        client = (scope.get("client") or ("?", 0))[0]
        if self._per_client.get(client, 0) >= self.max_per_client or self._total >= self.max_total:
            return await _answer(scope, send, 503, "Too many requests held open: close some and retry",
                                 [(b"retry-after", b"5"), (b"connection", b"close")])
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self._total += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self._total -= 1
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]


async def _answer(scope, send, status: int, detail: str, headers: list | None = None) -> None:
    if scope["type"] == "websocket":  # refuse the handshake
        await send({"type": "websocket.close", "code": 1008 if status == 401 else 1013})
        return
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
