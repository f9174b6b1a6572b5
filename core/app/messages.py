"""What a person reads from the run manager: its error, a reward failure's message, durations,
and a secret kept out of every message.

Owns: `ManagerError` (an `AhaError`: shown as it is), `reward_message`, `format_seconds`, `redact`.
Refuses to know: the manager's state.
"""

from __future__ import annotations

import math

from core.errors import AhaError


class ManagerError(AhaError, RuntimeError):
    """Something the user asked for cannot be done; the message says why and what to do."""


def reward_message(e) -> str:
    tb = getattr(e, "traceback_text", "")
    return f"rewards: {e}" + (f"\n\n{tb}" if tb else "")


def format_seconds(seconds: float | None) -> str:
    """'1h 02m', '3m 05s', '42s'; '-' when unknown.

    >>> format_seconds(3725), format_seconds(185), format_seconds(None)
    ('1h 02m', '3m 05s', '-')
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text
