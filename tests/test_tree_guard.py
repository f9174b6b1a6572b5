"""Tests never rewrite tracked files: the session guard (conftest.py, tests/tree_guard.py) sees a
changed tracked file or a new file, and the browser tests' screenshots go to a temporary folder
unless AHA_SCREENSHOTS asks for another."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tree_guard import changed, snapshot

REPO = Path(__file__).resolve().parent.parent


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "shot.png").write_bytes(b"png")
    (tmp_path / "edited.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("runs/\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "init")
    (tmp_path / "edited.py").write_text("x = 2\n")  # someone's work in progress, before the session
    return tmp_path


def test_the_guard_sees_what_a_session_changed(repo):
    before = snapshot(repo)
    assert before == {"edited.py": before["edited.py"]}
    assert changed(before, snapshot(repo)) == []
    (repo / "runs").mkdir()
    (repo / "runs" / "log.txt").write_text("ignored")  # .gitignore'd: fine
    (repo / "docs" / "shot.png").write_bytes(b"another png")  # a tracked file rewritten
    (repo / "new.txt").write_text("left behind")  # a new file
    (repo / "edited.py").write_text("x = 3\n")  # work in progress changed again
    after = snapshot(repo)
    assert changed(before, after, repo=repo) == ["docs/shot.png", "edited.py", "new.txt"]
    assert changed(before, after, [repo / "docs"], repo) == ["edited.py", "new.txt"]  # asked for
    assert snapshot(Path("/")) is None  # not a work tree: no guard


def test_screenshots_go_to_a_temporary_folder_by_default(screenshot_dir):
    assert REPO not in screenshot_dir.resolve().parents and screenshot_dir.is_dir()
    # the browser tests take every screenshot through this fixture, none by a path of their own
    source = (REPO / "tests" / "test_browser.py").read_text()
    assert "docs" not in source.replace("AHA_SCREENSHOTS=docs", "")
    assert source.count("page.screenshot(") == 1 and "screenshot_dir / name" in source


def test_a_session_that_writes_a_tracked_file_fails(repo):
    """conftest.py's guard, end to end: a passing test that rewrites docs/shot.png fails the run."""
    (repo / "tests").mkdir()
    for name in ("conftest.py", "tree_guard.py"):
        shutil.copy(REPO / "tests" / name, repo / "tests" / name)
    (repo / "tests" / "test_writes.py").write_text(
        "from pathlib import Path\n\n"
        "def test_rewrites_a_screenshot():\n"
        "    (Path(__file__).parent.parent / 'docs' / 'shot.png').write_bytes(b'new')\n")
    git(repo, "add", "tests")
    git(repo, "commit", "-qm", "tests")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=repo,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "1 passed" in run.stdout, run.stdout[-2000:]
    assert "the tests changed the working tree" in run.stdout and "docs/shot.png" in run.stdout
