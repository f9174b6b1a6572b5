"""Aha Studio: teach a language model to reason with GRPO, in the browser.

    python app.py                                   # http://127.0.0.1:7860, the offline default model
    python app.py --model Qwen/Qwen2.5-0.5B-Instruct --host 0.0.0.0 --port 7860
    python app.py --share                           # a public link, always behind a password
    python app.py --auth alice:s3cret --runs-dir /data/runs   # or AHA_AUTH=alice:s3cret

Training keeps going when the browser closes; open the page again to re-attach.
"""

from __future__ import annotations

import argparse
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


def resolve_auth(share: bool, auth: str | None) -> tuple[tuple[str, str] | None, str]:
    """The credentials to launch with and a line to print. A share link never opens without a
    password: with --share and no --auth, a random one is made up and printed.

    >>> creds, note = resolve_auth(True, None)
    >>> creds[0], len(creds[1]) >= 12, "password" in note
    ('aha', True, True)
    >>> resolve_auth(False, None)
    (None, '')
    """
    creds = parse_auth(auth)
    if share and creds is None:
        creds = ("aha", secrets.token_urlsafe(12))
        return creds, f"Share link login: user 'aha', password '{creds[1]}' (pass --auth user:pass to choose)"
    return creds, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Aha Studio: GRPO in the browser.")
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    ap.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    ap.add_argument("--share", action="store_true", help="make a public gradio.live link (needs a password)")
    ap.add_argument("--auth", default=os.environ.get("AHA_AUTH") or None,
                    help="user:password required to open the app (default: $AHA_AUTH)")
    ap.add_argument("--model", default="", help="hub id or folder of the default model (default: bundled SmolLM2)")
    ap.add_argument("--runs-dir", default="runs", help="folder holding one sub-folder per run")
    ap.add_argument("--no-preload", action="store_true", help="load the model on first use, not at start")
    ap.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"],
                    help="rollout and chat engine (auto: vLLM on a GPU when installed)")
    args = ap.parse_args(argv)
    try:
        auth, note = resolve_auth(args.share, args.auth)
    except ValueError as e:
        ap.error(str(e))

    from core.config import ModelConfig
    from core.manager import RunManager, set_manager
    from ui.studio import build_app, launch_app

    manager = set_manager(RunManager(args.runs_dir, ModelConfig(name_or_path=args.model), engine=args.engine))
    if not args.no_preload:
        manager.preload()  # in the background: the page opens while the model loads
    demo = build_app(manager)
    if note:
        print(note, flush=True)
    launch_app(demo, manager, host=args.host, port=args.port, share=args.share, auth=auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
