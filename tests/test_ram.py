"""core/memory/ram.py and the per-step RAM metric: what a CPU run's Train tab plots instead of GPU memory."""

from __future__ import annotations

import sys

import pytest

from core.memory import ram

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
MB = 2**20


def touched(n: int) -> bytearray:
    return bytearray(b"\x01") * n  # written, so every page is resident


def test_peak_follows_an_allocation_and_resets():
    assert ram.available_bytes() > 100 * MB
    if not ram.reset_peak():
        pytest.skip("this kernel does not allow resetting the peak (clear_refs)")
    start = ram.peak_bytes()
    block = touched(300 * MB)
    del block
    high = ram.peak_bytes()
    assert high >= start + 290 * MB
    assert ram.reset_peak()
    assert ram.peak_bytes() <= high - 250 * MB  # a new peak from what is resident now


def test_each_step_logs_its_own_ram_peak(tiny_model_dir, tmp_path):
    """peak_ram_gb is the step's own peak: a reward that holds 300 MB in step 2 only raises step 2."""
    from test_trainer import TargetTokenReward, make_trainer, tiny_config

    class HeavyOnStep2(TargetTokenReward):
        calls = 0

        def fn(self, prompts, completions, completion_ids, **kwargs):
            HeavyOnStep2.calls += 1
            if HeavyOnStep2.calls == 2:
                block = touched(300 * MB)
                del block
            return super().fn(prompts, completions, completion_ids, **kwargs)

    if not ram.reset_peak():
        pytest.skip("this kernel does not allow resetting the peak (clear_refs)")
    cfg = tiny_config(tmp_path, max_steps=3)
    trainer = make_trainer(tiny_model_dir, cfg)
    trainer.rewards = HeavyOnStep2(trainer.rewards.target_id)
    assert trainer.train() == "finished"
    peaks = [m["peak_ram_gb"] * 1024 for m in trainer.run.read_metrics()]  # MB
    assert peaks[1] >= peaks[0] + 250 and peaks[1] >= peaks[2] + 250, peaks
