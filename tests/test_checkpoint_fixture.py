"""A checkpoint written by the code of before issue 20's layout change (tests/fixtures/checkpoint_v1,
made by tests/fixtures/make_checkpoint_fixture.py from the tiny model) still loads and resumes:
the same step, adapter, optimizer state and counters, then one more step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"


def test_checkpoint_from_before_the_move_loads_and_resumes(tiny_model_dir, tmp_path):
    from fixtures.make_checkpoint_fixture import fixture_config
    from peft.utils import get_peft_model_state_dict
    from rl_helpers import FirstTokenParity, build_trainer
    from safetensors.torch import load_file

    from core.runs.folders import RunDir

    run = RunDir(shutil.copytree(FIXTURE, tmp_path / "runs" / "fixture"))
    cfg = fixture_config(tmp_path)
    cfg.algorithm.max_steps = 3
    trainer = build_trainer(tiny_model_dir, cfg, target_id=0, reward_set=FirstTokenParity(), run_dir=run)
    assert trainer.resume() and trainer.step == 2
    assert trainer.resume_notes == []

    live = get_peft_model_state_dict(trainer.model)
    saved = load_file(str(FIXTURE / "checkpoints" / "step-000002" / "adapter_model.safetensors"))
    assert set(live) == set(saved) and len(saved) == 28
    for key, tensor in saved.items():
        assert torch.equal(live[key].cpu(), tensor), key
    # the values the fixture was written with (a fresh adapter's lora_B is all zeros)
    b_mass = sum(float(t.double().abs().sum()) for k, t in live.items() if "lora_B" in k)
    assert b_mass == pytest.approx(118.48610930982977, rel=1e-6)
    assert float(live["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].double().sum()) == \
        pytest.approx(-0.3637460870668292, rel=1e-6)
    assert float(trainer.optimizer.state_dict()["state"][0]["step"]) == 2.0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-2)
    assert trainer.micro_batch_size == 8 and trainer.skipped_steps == 0

    assert trainer.train() == "finished"
    assert [m["step"] for m in run.read_metrics()] == [1, 2, 3]
    assert float(trainer.optimizer.state_dict()["state"][0]["step"]) == 3.0
    moved = get_peft_model_state_dict(trainer.model)
    assert any(not torch.equal(moved[k].cpu(), saved[k]) for k in saved)  # the third step trained
