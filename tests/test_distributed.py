"""Data parallel on the CPU with gloo: a process group of one changes nothing; two ranks, started
as `accelerate launch` / `torchrun` would, average their gradients and end with identical adapters."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from rl_helpers import FirstTokenParity, build_trainer, tiny_config

from core.rl import distributed

KEYS = ("reward", "loss", "grad_norm", "completions/mean_length", "entropy", "learning_rate")


def short_config(where, algorithm):
    cfg = tiny_config(where, algorithm=algorithm, max_steps=2, num_generations=4, prompts_per_step=2)
    cfg.run.run_name = "dp"
    return cfg


@pytest.mark.parametrize("algorithm", ["grpo", "online_dpo", "ppo"])
def test_world_size_one_matches_no_process_group(tiny_model_dir, tmp_path, algorithm):
    alone = build_trainer(tiny_model_dir, short_config(tmp_path / "alone", algorithm), 0,
                          reward_set=FirstTokenParity())
    alone.train()
    ref = alone.run.read_metrics()

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed.active() and distributed.world_size() == 1
        grouped = build_trainer(tiny_model_dir, short_config(tmp_path / "grouped", algorithm), 0,
                                reward_set=FirstTokenParity())
        assert type(grouped.run) is type(alone.run)  # rank 0 writes the run folder itself
        grouped.train()
    finally:
        dist.destroy_process_group()
    got = grouped.run.read_metrics()
    assert [r["step"] for r in got] == [1, 2]
    assert any(r["grad_norm"] > 0 for r in ref)  # there was something to average
    for r_ref, r_got in zip(ref, got):
        for k in KEYS:
            if r_ref[k] == r_ref[k]:  # NaN (a DPO step without a pair) on both sides is fine too
                assert r_got[k] == pytest.approx(r_ref[k], rel=1e-6, abs=1e-7), (r_got["step"], k)
            else:
                assert r_got[k] != r_got[k]


# ---------------------------------------------------------------------------
# two ranks, two processes


def _rank_main(rank: int, world: int, tmp: str, model_dir: str, port: int) -> None:
    """One rank: join the group as under `accelerate launch` / `torchrun` (the environment says
    who is who), check the collectives, then train 2 GRPO steps on its half of the prompts."""
    torch.set_num_threads(1)
    tmp = Path(tmp)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    out = {"device": distributed.setup()}
    # 1) the collectives on known values
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), float(rank + 1))
    distributed.all_reduce_grads([p])
    out["averaged_grad"] = p.grad.tolist()
    out["metrics"] = distributed.reduce_metrics({"step": 1, "reward": float(rank), "tokens_per_second": 10.0,
                                                 "completions/max_length": 5.0 + rank})
    out["shard"] = distributed.shard(list(range(5)))
    # 2) training: each rank starts from a different random adapter, on purpose
    from core.rl.algorithms import make_trainer
    from core.models.loading import add_lora, load_base_model, load_tokenizer
    from rl_helpers import tiny_task

    cfg = tiny_config(tmp, max_steps=2, num_generations=4, prompts_per_step=4)
    cfg.model.name_or_path = model_dir
    torch.manual_seed(1000 + rank)
    model = add_lora(load_base_model(cfg.model, "cpu"), cfg.model)
    trainer = make_trainer(cfg, model=model, tokenizer=load_tokenizer(model_dir), task=tiny_task(),
                           reward_set=FirstTokenParity(), device="cpu")
    out["run"] = str(trainer.run.path)
    out["questions"] = [r["question"] for r in trainer.prompt_rows(0)]
    local = []
    step_fn = trainer.train_step
    trainer.train_step = lambda: (lambda result: (local.append(dict(result.metrics)), result)[1])(step_fn())
    trainer.train()
    out["local_rewards"] = [m["reward"] for m in local]
    lora = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    torch.save(lora, tmp / f"rank{rank}.pt")
    (tmp / f"rank{rank}.json").write_text(json.dumps(out))
    distributed.teardown()


def test_two_ranks_average_gradients_and_stay_identical(tiny_model_dir, tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port on the loopback for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(2, str(tmp_path), str(tiny_model_dir), port), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["device"] == r1["device"] == "cpu"  # gloo on a machine without GPUs
    # the collectives
    assert r0["averaged_grad"] == r1["averaged_grad"] == [1.5, 1.5, 1.5]
    assert r0["metrics"] == r1["metrics"] == {"step": 1, "reward": 0.5, "tokens_per_second": 20.0,
                                              "completions/max_length": 6.0}
    assert r0["shard"] == [0, 2, 4] and r1["shard"] == [1, 3]
    # each rank sampled its own half of the step's prompts
    assert len(r0["questions"]) == len(r1["questions"]) == 2 and not set(r0["questions"]) & set(r1["questions"])
    # one run folder, written by rank 0 alone, with the ranks' mean reward
    assert r0["run"] == r1["run"]
    run = Path(r0["run"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for i, m in enumerate(metrics):
        assert m["reward"] == pytest.approx((r0["local_rewards"][i] + r1["local_rewards"][i]) / 2)
    assert (run / "checkpoints" / "step-000002" / "adapter_model.safetensors").exists()
    # identical adapters: the broadcast start and the averaged gradients kept the replicas together
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys() and len(w0) > 0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert any(v.abs().sum() > 0 for k, v in w0.items() if "lora_B" in k)  # and they did train
