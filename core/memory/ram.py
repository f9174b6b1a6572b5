"""The machine's RAM as a CPU run sees it: what is available, and this process's peak.

Owns: reading Linux's /proc for the RAM available to a new allocation (`available_bytes`,
MemAvailable) and this process's peak resident memory (`peak_bytes`, VmHWM), which
`reset_peak` sets back to the current size so that each training step measures its own peak
(the kernel's clear_refs "5"). Where /proc is missing (macOS) it falls back to what `resource`
and `os.sysconf` tell, or None.

Refuses to know: torch, GPUs (torch.cuda counts those), what the memory is used for.

    >>> peak_bytes() is None or peak_bytes() > 0
    True
"""

from __future__ import annotations

import os
import re
import sys

_MEMINFO = "/proc/meminfo"
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _kib_field(path: str, name: str) -> int | None:
    """A `Name:   1234 kB` line of a /proc file, in bytes."""
    try:
        with open(path) as f:
            match = re.search(rf"^{name}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def available_bytes() -> int | None:
    """RAM available for new allocations without swapping (Linux's MemAvailable), or None."""
    value = _kib_field(_MEMINFO, "MemAvailable")
    if value is None and hasattr(os, "sysconf"):
        try:
            value = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return value


def peak_bytes() -> int | None:
    """This process's peak resident memory since it started or since the last `reset_peak`."""
    value = _kib_field(_STATUS, "VmHWM")
    if value is None:
        try:
            import resource
        except ImportError:  # Windows
            return None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        value = rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux
    return value


def reset_peak() -> bool:
    """Start a new peak from the current resident size; False where the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
