"""AdamW's moments on the host between updates (core.rl.host_states): the same updates as
an optimizer that keeps them in place, the bookkeeping on a CPU (simulate), the rule and the
planner's count; on a GPU, the memory it gives back."""

from __future__ import annotations

import copy

import pytest
import torch

from core.rl.host_states import HostOptimizerStates, wanted
from core.memory.sizes import LORA_MOMENT_BYTES, lora_param_count, moments_on_host


def _pair(device="cpu", seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).to(device)
    b = copy.deepcopy(a)
    return a, b


def _step(model, opt, x, ctx=None):
    opt.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()
    if ctx is None:
        opt.step()
    else:
        with ctx():
            opt.step()


def test_updates_equal_an_optimizer_that_keeps_its_moments_in_place():
    ref, moved = _pair()
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    opt = torch.optim.AdamW(moved.parameters(), lr=1e-2, weight_decay=0.1)
    host = HostOptimizerStates(opt, simulate=True)
    xs = torch.randn(4, 3, 16)
    for x in xs:
        _step(ref, opt_ref, x)
        _step(moved, opt, x, host.on_device)
        # between updates every moment is its host buffer (the scalar step stays where it was)
        for p, state in opt.state.items():
            assert state["exp_avg"] is host._host[(id(p), "exp_avg")]
            assert state["exp_avg_sq"] is host._host[(id(p), "exp_avg_sq")]
            assert state["step"].dim() == 0
    for p, q in zip(ref.parameters(), moved.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(ref.parameters(), moved.parameters()):
        assert torch.equal(opt_ref.state[p]["exp_avg_sq"], opt.state[q]["exp_avg_sq"])
    n = sum(p.numel() for p in moved.parameters())
    assert host.bytes_on_host == 2 * 4 * n  # m and v, float32


def test_a_failed_update_leaves_the_moments_on_the_host():
    _, model = _pair()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    host = HostOptimizerStates(opt, simulate=True)
    _step(model, opt, torch.randn(3, 16), host.on_device)
    buffers = {k: v for k, v in host._host.items()}
    with pytest.raises(RuntimeError, match="boom"):
        with host.on_device():
            for p, state in opt.state.items():  # inside: device copies, not the buffers
                assert state["exp_avg"] is not buffers[(id(p), "exp_avg")]
            raise RuntimeError("boom")
    for p, state in opt.state.items():
        assert state["exp_avg"] is buffers[(id(p), "exp_avg")]


def test_the_cache_goes_back_before_the_moments_come_in(monkeypatch):
    """On a GPU the forward/backward's cached blocks are handed back before the moments are
    copied in (they come from another pool of torch's allocator and would be mapped on top);
    the CPU path (simulate) never touches CUDA."""
    _, model = _pair()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    events = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    simulated = HostOptimizerStates(opt, simulate=True)
    with simulated.on_device():
        events.append("update")
    assert events == ["update"]
    real = HostOptimizerStates(opt)  # CPU tensors: nothing moves, but the order is the GPU's
    monkeypatch.setattr(real, "to_device", lambda: events.append("to_device"))
    with real.on_device():
        events.append("update")
    assert events == ["update", "empty_cache", "to_device", "update"]


def test_a_loaded_state_goes_back_to_the_host_and_trains_on_the_same():
    ref, moved = _pair(seed=1)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    opt = torch.optim.AdamW(moved.parameters(), lr=1e-2)
    host = HostOptimizerStates(opt, simulate=True)
    xs = torch.randn(4, 3, 16)
    for x in xs[:2]:
        _step(ref, opt_ref, x)
        _step(moved, opt, x, host.on_device)
    saved = copy.deepcopy(opt.state_dict())  # what a checkpoint holds: the host tensors
    # a resumed trainer: a fresh optimizer over the same parameters, the state loaded, moved out
    opt2 = torch.optim.AdamW(moved.parameters(), lr=1e-2)
    opt2.load_state_dict(saved)
    host2 = HostOptimizerStates(opt2, simulate=True)
    host2.to_host()
    assert host2.bytes_on_host == host.bytes_on_host > 0
    for x in xs[2:]:
        _step(ref, opt_ref, x)
        _step(moved, opt2, x, host2.on_device)
    for p, q in zip(ref.parameters(), moved.parameters()):
        assert torch.equal(p, q)


def test_the_rule_and_what_the_planner_counts():
    from core.config import Config
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from core.memory.planner import plan

    assert moments_on_host(0, "lowest_memory") and not moments_on_host(0, "fastest")
    assert not moments_on_host(4, "lowest_memory")
    cfg = Config()
    cfg.algorithm.micro_batch_size, cfg.algorithm.auto_micro_batch = 0, "lowest_memory"
    assert wanted(cfg, "cuda") and wanted(cfg, "cuda:0") and not wanted(cfg, "cpu")
    cfg.algorithm.auto_micro_batch = "fastest"
    assert not wanted(cfg, "cuda")

    shape = Path(__file__).resolve().parents[1] / "bench" / "configs" / "qwen2.5-1.5b.json"
    c = SimpleNamespace(**json.loads(shape.read_text()))
    common = dict(lora_rank=16, lora_targets=["q_proj", "v_proj"], num_sequences=8, prompt_length=64,
                  completion_length=64, free_bytes=40 * 2**30)
    lowest = plan(c, micro_batch_size=0, auto_micro_batch="lowest_memory", **common)
    fixed = plan(c, micro_batch_size=lowest.micro_batch_size, **common)
    assert fixed.adapter_and_optimizer - lowest.adapter_and_optimizer == (
        lora_param_count(c, 16, ["q_proj", "v_proj"]) * LORA_MOMENT_BYTES)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_moments_leave_the_device_and_the_updates_stay_equal():
    ref, moved = _pair("cuda")
    big = torch.nn.Linear(1024, 1024, device="cuda")  # 4 MiB of weights: 8 MiB of moments
    big_ref = copy.deepcopy(big)
    opt_ref = torch.optim.AdamW([*ref.parameters(), *big_ref.parameters()], lr=1e-2)
    opt = torch.optim.AdamW([*moved.parameters(), *big.parameters()], lr=1e-2)
    host = HostOptimizerStates(opt)
    x = torch.randn(3, 16, device="cuda")
    for m, o, ctx, lin in ((ref, opt_ref, None, big_ref), (moved, opt, host.on_device, big)):
        o.zero_grad(set_to_none=True)
        (m(x).pow(2).mean() + lin(torch.ones(2, 1024, device="cuda")).pow(2).mean()).backward()
        before = torch.cuda.memory_allocated()
        if ctx is None:
            o.step()
        else:
            with ctx():
                o.step()
        grown = torch.cuda.memory_allocated() - before
        if ctx is None:
            assert grown >= 8 * 2**20  # the moments, on the device
        else:
            assert grown < 2**20  # none of them stayed
            assert all(s["exp_avg"].device.type == "cpu" and s["exp_avg"].is_pinned() for s in o.state.values())
    for p, q in zip([*ref.parameters(), *big_ref.parameters()], [*moved.parameters(), *big.parameters()]):
        assert torch.equal(p, q)


def test_the_update_can_be_the_peak_and_the_plan_counts_it():
    """Lowest-memory mode, a high rank on short sequences: during the update the moments are back
    and AdamW's temporary sits beside the gradients, above the micro-batch's peak; the plan's peak
    is that (it was not before the moments moved: 16 bytes a parameter were counted throughout)."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from core.memory import sizes
    from core.memory.planner import plan

    shape = Path(__file__).resolve().parents[1] / "bench" / "configs" / "qwen2.5-1.5b.json"
    c = SimpleNamespace(**json.loads(shape.read_text()))
    targets = list(sizes.ALL_PROJECTIONS)
    n = lora_param_count(c, 256, targets)
    p = plan(c, lora_rank=256, lora_targets=targets, num_sequences=8, prompt_length=64, completion_length=64,
             micro_batch_size=0, checkpointing=True, free_bytes=80 * 2**30)
    assert p.update_extra == n * (sizes.ADAMW_UPDATE_TEMP_BYTES + LORA_MOMENT_BYTES)
    assert p.update_peak == p.weights + n * 20 + p.workspace  # a parameter's weight, grad, moments, temporary: 4+4+8+4
    assert p.update_peak > p.training_peak and p.update_peak > p.rollout_peak - p.engine_extra
    assert p.total_peak == p.update_peak + p.engine_extra + p.outside_torch
    # a long sequence at rank 16: the micro-batch or the rollout stays the peak
    q = plan(c, lora_rank=16, lora_targets=targets, num_sequences=8, prompt_length=256, completion_length=1024,
             micro_batch_size=0, checkpointing=True, free_bytes=80 * 2**30)
    assert q.total_peak == max(q.rollout_peak, q.training_peak + q.engine_extra) + q.outside_torch


def test_the_plan_says_where_the_moments_wait():
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from core.memory import sizes
    from core.memory.planner import plan

    shape = Path(__file__).resolve().parents[1] / "bench" / "configs" / "qwen2.5-1.5b.json"
    c = SimpleNamespace(**json.loads(shape.read_text()))
    kw = dict(lora_rank=16, lora_targets=list(sizes.ALL_PROJECTIONS), num_sequences=8, prompt_length=256,
              completion_length=1024, checkpointing=True, free_bytes=80 * 2**30)
    lowest = plan(c, micro_batch_size=0, **kw)
    n = lora_param_count(c, 16, list(sizes.ALL_PROJECTIONS))
    assert lowest.moments_on_host == n * LORA_MOMENT_BYTES
    assert f"AdamW's moments {n * LORA_MOMENT_BYTES / 2**30:.2f} GB in host memory" in lowest.summary()
    assert "in host memory" not in plan(c, micro_batch_size=0, auto_micro_batch="fastest", **kw).summary()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_update_does_not_stack_on_the_backwards_cache():
    """What torch holds during an update after a backward whose activations are cached: the
    parameters, gradients, moments and temporaries, not the cache the backward left (here
    256 MiB of freed activations)."""
    torch.cuda.empty_cache()
    layers = torch.nn.ModuleList(torch.nn.Linear(512, 16, bias=False) for _ in range(64)).cuda()
    opt = torch.optim.AdamW(layers.parameters(), lr=1e-2)
    host = HostOptimizerStates(opt)
    x = torch.randn(8, 512, device="cuda")
    for _ in range(2):
        act = torch.randn(64, 2**20, device="cuda")  # 256 MiB of "activations", freed below: cached
        sum(layer(x).pow(2).mean() for layer in layers).backward()
        del act
        cached = torch.cuda.memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        with host.on_device():
            opt.step()
            during = torch.cuda.memory_reserved()  # the moments and the update's temporaries in
        opt.zero_grad(set_to_none=True)
        assert torch.cuda.max_memory_reserved() <= cached  # nothing mapped on top of the cache, ever
    assert cached >= 256 * 2**20
    assert during < cached - 200 * 2**20  # the cache went back first: the update is not on top of it

