"""vLLM's own report of its KV cache, read from its log lines.

Owns: the patterns of vLLM's KV-cache lines (size in tokens, maximum concurrency, available memory)
and keeping those lines as vLLM logs them in-process (`LogCapture`: a log record factory, since
vLLM re-applies its logging config while the engine starts); the parent reads the same patterns
from a child's log file when the capture missed them.

Refuses to know: the engine, the steps, the results.
"""

from __future__ import annotations

import re


class LogCapture:
    """Keeps vLLM's log lines that report the KV cache (its own capacity report)."""

    PATTERNS = {
        "kv_tokens": re.compile(r"KV cache size: ([\d,]+) tokens"),
        "max_concurrency": re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"),
        "available_kv_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    }

    def __init__(self):
        import logging

        # a record factory, not a handler: vLLM (0.31 at least) re-applies its dictConfig while
        # the engine starts, which drops handlers added to the 'vllm' logger; it wraps factories
        self.lines: list[str] = []
        inner = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            record = inner(*args, **kwargs)
            try:
                if record.name.startswith("vllm") and record.levelno >= logging.INFO:
                    msg = record.getMessage()
                    if "KV cache" in msg or "concurrency" in msg:
                        self.lines.append(msg[:500])
            except Exception:
                pass
            return record

        logging.setLogRecordFactory(factory)

    def find(self, key: str):
        for line in self.lines:
            m = self.PATTERNS[key].search(line)
            if m:
                return m.groups()
        return None
