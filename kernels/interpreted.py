"""Run a function in Triton's interpreter, in a child process, and read back what it prints.

Owns: the one way the CPU tests run Triton kernels (kernels/test_*.py, tests/test_merged_lora.py):
TRITON_INTERPRET=1 must be set before triton is first imported, and only in that process, so the
function runs in a fresh `python -c` child with the repository on its path. The function prints one
line `RESULTS <json>`; this returns the parsed JSON, or fails the calling test with the child's output.

Refuses to know: what the function checks (its test asserts on the values).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFIX = "RESULTS "


def run_interpreted(module: str, function: str, timeout_s: float = 300):
    """`from module import function; function()` under TRITON_INTERPRET=1; its RESULTS line, parsed."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", f"from {module} import {function}; {function}()"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next((l for l in proc.stdout.splitlines() if l.startswith(PREFIX)), None)
    assert line is not None, "no RESULTS line from the child:\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[len(PREFIX):])


def print_results(value) -> None:
    """The child's side: the one line `run_interpreted` reads."""
    print(PREFIX + json.dumps(value), flush=True)
