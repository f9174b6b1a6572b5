"""Aha Studio: teach a language model to reason with GRPO, in the browser.

    python app.py                                   # http://127.0.0.1:7860, the offline default model
    python app.py --model Qwen/Qwen2.5-0.5B-Instruct --host 0.0.0.0 --port 7860   # prints a password
    python app.py --share                           # a public link, always behind a password
    python app.py --auth alice:s3cret --runs-dir /data/runs   # or AHA_AUTH=alice:s3cret
    python app.py --data-dir /data/sets             # let the page load data files from /data/sets too

Training keeps going when the browser closes; open the page again to re-attach.

The app never opens to a network without a login: on any host but a loopback one (and with
--share) it makes up a password and prints it unless --auth (or $AHA_AUTH) gives one. Anyone
who logs in can run Python on the server through the custom reward editor (README, "Security").
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:pass' -> ('user', 'pass'); None stays None.

    >>> parse_auth("alice:s3:cret")
    ('alice', 's3:cret')
    """
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must look like user:password")
    return user, password


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def resolve_auth(share: bool, auth: str | None, host: str = "127.0.0.1") -> tuple[tuple[str, str] | None, str]:
    """The credentials to launch with and a line to print. The app never opens to a network
    without a login: with --share, or on a host that is not loopback (0.0.0.0, a LAN address),
    and no --auth, a random password is made up and printed.

    >>> creds, note = resolve_auth(True, None)
    >>> creds[0], len(creds[1]) >= 12, "password" in note
    ('aha', True, True)
    >>> resolve_auth(False, None, "0.0.0.0")[0][0]
    'aha'
    >>> resolve_auth(False, None)
    (None, '')
    """
    creds = parse_auth(auth)
    if creds is None and (share or not is_loopback(host)):
        creds = ("aha", secrets.token_urlsafe(12))
        where = "Share link" if share else f"Listening on {host}, so the page needs a"
        return creds, (f"{where} login: user 'aha', password '{creds[1]}' "
                       "(pass --auth user:pass or set AHA_AUTH=user:pass to choose)")
    return creds, ""


def hide_secrets(auth: tuple[str, str] | None) -> list[str]:
    """Keep the secrets this process was started with out of what other processes can read of it
    through /proc (reward code among them; README, "Security"), before any worker starts: the
    values of secret-named variables zeroed in its environment block (Python's os.environ keeps
    them; children that inherit the environment get them empty) and the --auth password masked in
    its command line (`ps` shows it to every local user). Returns what it did, a line each."""
    from core.rewards.process_guard import blank_environ_values, mask_in_cmdline
    from core.rewards.sandbox import is_secret_name

    done = [f"{name} zeroed in the process's environment block" for name in blank_environ_values(is_secret_name)]
    if auth and mask_in_cmdline(f"{auth[0]}:{auth[1]}"):
        done.append("the --auth password masked in the command line (AHA_AUTH keeps it off the command line)")
    return done


class _NotOurKernels:
    """A logging filter: see `quiet_bitsandbytes_kernels_note`."""

    def filter(self, record) -> bool:
        return "kernels-community" not in record.getMessage()


def quiet_bitsandbytes_kernels_note() -> None:
    """bitsandbytes' CPU backend (0.50) tries `from kernels import get_kernel` (Hugging Face's
    `kernels` package) when it is imported and logs a warning when that fails; this repository's
    own `kernels/` (the fused log-prob kernels) answers that import, so every start on a CPU
    printed a warning naming our file (a new user's walkthrough, 2026-12-06). Only that warning is
    dropped: the CPU 4-bit path it is about is not one the app uses (4-bit needs a CUDA GPU)."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NotOurKernels())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Aha Studio: GRPO in the browser.")
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    ap.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    ap.add_argument("--share", action="store_true", help="make a public gradio.live link (needs a password)")
    ap.add_argument("--auth", default=os.environ.get("AHA_AUTH") or None,
                    help="user:password required to open the app (default: $AHA_AUTH)")
    ap.add_argument("--model", default="", help="hub id or folder of the default model (default: bundled SmolLM2)")
    ap.add_argument("--runs-dir", default="runs", help="folder holding one sub-folder per run")
    ap.add_argument("--data-dir", action="append", default=[], metavar="FOLDER",
                    help="a folder of data files the page may load (repeatable); by default only "
                         "uploads, built-in tasks and hub datasets")
    ap.add_argument("--uploads-quota-mb", type=float, default=None, metavar="MB",
                    help="room for uploaded data files; past it the oldest uploads no run uses are deleted, "
                         "then uploads are refused (default: $AHA_UPLOADS_QUOTA_MB, else 1024)")
    ap.add_argument("--trusted-proxy", action="append",
                    default=[a.strip() for a in os.environ.get("AHA_TRUSTED_PROXIES", "").split(",") if a.strip()],
                    metavar="ADDRESS", help="a reverse proxy whose X-Forwarded-For names the client (repeatable; "
                    "default: $AHA_TRUSTED_PROXIES, comma-separated, else none: the connection's address counts)")
    ap.add_argument("--no-preload", action="store_true", help="load the model on first use, not at start")
    ap.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"],
                    help="rollout and chat engine (auto: vLLM on a GPU when installed)")
    args = ap.parse_args(argv)
    from core.runs.access import resolve_uploads_quota_mb

    if ":" in args.host.strip("[]"):  # gradio 6.31 checks its start-up at http://{host}:{port}/ unbracketed
        ap.error(f"--host {args.host} is an IPv6 address: Gradio cannot start on one (its start-up request goes to "
                 f"http://{args.host.strip('[]')}:PORT and fails); use 0.0.0.0 (every IPv4 interface) or a proxy")
    try:
        auth, note = resolve_auth(args.share, args.auth, args.host)
        args.uploads_quota_mb = resolve_uploads_quota_mb(args.uploads_quota_mb)  # $AHA_UPLOADS_QUOTA_MB read here
    except ValueError as e:
        ap.error(str(e))

    for line in hide_secrets(auth):
        print(f"secrets: {line}", flush=True)
    quiet_bitsandbytes_kernels_note()
    from core.config import ModelConfig
    from core.app.manager import RunManager, stop_on_sigterm
    from ui.studio import build_app, launch_app

    manager = RunManager(args.runs_dir, ModelConfig(name_or_path=args.model), engine=args.engine,
                         data_dirs=args.data_dir, uploads_quota_mb=args.uploads_quota_mb)
    if not args.no_preload:
        manager.preload()  # in the background: the page opens while the model loads
    demo = build_app(manager)

    def end_server():  # Gradio's launch ends on a KeyboardInterrupt: it closes the server and returns
        raise KeyboardInterrupt

    stop_on_sigterm(manager, then=end_server)  # docker stop / a Space restart: a checkpoint, not a loss
    if note:
        print(note, flush=True)
    launch_app(demo, manager, host=args.host, port=args.port, share=args.share, auth=auth,
               trusted_proxies=args.trusted_proxy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
