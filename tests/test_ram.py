"""core/memory/ram.py and the per-step RAM metric: what a CPU run's Train tab plots instead of GPU memory."""

from __future__ import annotations

import sys

import pytest

from core.memory import ram

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
MB = 2**20


def touched(n: int) -> bytearray:
    return bytearray(b"\x01") * n  # written, so every page is resident


# Both checks run in a fresh child process (kernels.interpreted.run_interpreted): in the full suite's
# process, holding ~4 GB after the tests before, a 300 MB block did not raise the peak at all (2026-12-07,
# twice; alone it did): the allocator served it from memory already resident.


def _peak_child():
    from kernels.interpreted import print_results

    out = {"available": ram.available_bytes(), "reset": ram.reset_peak()}
    if out["reset"]:
        out["start"] = ram.peak_bytes()
        block = touched(300 * MB)
        del block
        out["high"] = ram.peak_bytes()
        out["reset_again"] = ram.reset_peak()
        out["after"] = ram.peak_bytes()
    print_results(out)


def test_peak_follows_an_allocation_and_resets():
    from kernels.interpreted import run_interpreted

    r = run_interpreted("tests.test_ram", "_peak_child")
    assert r["available"] > 100 * MB
    if not r["reset"]:
        pytest.skip("this kernel does not allow resetting the peak (clear_refs)")
    assert r["high"] >= r["start"] + 290 * MB, r
    assert r["reset_again"] and r["after"] <= r["high"] - 250 * MB, r  # a new peak from what is resident now


def _step_peaks_child():
    import tempfile
    from pathlib import Path

    from core.models.loading import build_tiny_model
    from kernels.interpreted import print_results
    from tests.test_trainer import TargetTokenReward, make_trainer, tiny_config

    class HeavyOnStep2(TargetTokenReward):
        calls = 0

        def fn(self, prompts, completions, completion_ids, **kwargs):
            HeavyOnStep2.calls += 1
            if HeavyOnStep2.calls == 2:
                block = touched(300 * MB)
                del block
            return super().fn(prompts, completions, completion_ids, **kwargs)

    if not ram.reset_peak():
        print_results({"reset": False})
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model")
        trainer = make_trainer(model_dir, tiny_config(Path(tmp), max_steps=3))
        trainer.rewards = HeavyOnStep2(trainer.rewards.target_id)
        state = trainer.train()
        peaks = [m["peak_ram_gb"] * 1024 for m in trainer.run.read_metrics()]  # MB
    print_results({"reset": True, "state": state, "peaks": peaks})


def test_each_step_logs_its_own_ram_peak():
    """peak_ram_gb is the step's own peak: a reward that holds 300 MB in step 2 only raises step 2."""
    from kernels.interpreted import run_interpreted

    r = run_interpreted("tests.test_ram", "_step_peaks_child")
    if not r["reset"]:
        pytest.skip("this kernel does not allow resetting the peak (clear_refs)")
    peaks = r["peaks"]
    assert r["state"] == "finished" and len(peaks) == 3, r
    assert peaks[1] >= peaks[0] + 250 and peaks[1] >= peaks[2] + 250, peaks
