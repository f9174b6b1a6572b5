"""The test session leaves the working tree as it found it: no tracked file rewritten, no new
file outside .gitignore (the README screenshots in docs/ included).

`snapshot` records what `git status` lists, with a digest of each listed file's content, so a
file that was already modified before the session counts only if the session changed it again.
conftest.py takes one snapshot when the session starts and fails the session if the one at its
end differs. AHA_SCREENSHOTS=<folder> (the browser tests' screenshots, on request) exempts that
folder.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def snapshot(repo: Path) -> dict[str, str] | None:
    """{path: content digest} of every path `git status` lists; None outside a git work tree."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "-z", "--untracked-files=all"], cwd=repo,
                             capture_output=True, timeout=60, check=True).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    paths = [entry[3:] for entry in out.split("\0") if len(entry) > 3]
    state = {}
    for path in paths:
        file = repo / path
        try:
            state[path] = hashlib.sha1(file.read_bytes()).hexdigest() if file.is_file() else "-"
        except OSError:
            state[path] = "?"
    return state


def changed(before: dict[str, str], after: dict[str, str], exempt: list[Path] = (),
            repo: Path | None = None) -> list[str]:
    """Paths the session dirtied: listed now and not before, or listed both times with new content
    (a path listed before and not now was restored: no harm done). `exempt`: folders (under `repo`)
    whose changes were asked for."""
    return [path for path, digest in sorted(after.items())
            if before.get(path) != digest
            and not (repo is not None and any(_inside(repo / path, folder) for folder in exempt))]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
