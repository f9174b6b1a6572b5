"""Online DPO on a tiny model on the CPU: it widens the chosen-vs-rejected margin, judges pick the
pair as they answer (a local HTTP judge, the engine as judge), and the arithmetic is DPO's."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from rl_helpers import build_trainer, mean, most_frequent_token, tiny_config

from core.rl.rollouts import ScoredRollouts
from core.engines.base import Completion
from core.rl.judges import JUDGE_QUESTION, EngineJudge, HTTPJudge, parse_verdict
from core.rl.objectives import dpo_loss
from core.rl.online_dpo import OnlineDPOTrainer
from core.rewards.base import RewardError
from core.rewards.registry import RewardResult


@pytest.fixture(scope="module")
def peaked_model_dir(tmp_path_factory):
    from core.models.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("peaked") / "model", initializer_range=0.4)


# ---------------------------------------------------------------------------
# learning


def test_online_dpo_widens_the_margin(peaked_model_dir, tmp_path):
    target, share = most_frequent_token(peaked_model_dir, tmp_path)
    assert share < 0.1  # the untrained model does not already prefer it
    cfg = tiny_config(tmp_path, algorithm="online_dpo", max_steps=30, learning_rate=4e-3,
                      num_generations=4, prompts_per_step=4, dpo_beta=0.1)
    cfg.run.save_steps = 100
    trainer = build_trainer(peaked_model_dir, cfg, target)
    assert isinstance(trainer, OnlineDPOTrainer)
    assert trainer.train() == "finished"
    m = trainer.run.read_metrics()
    assert [r["step"] for r in m] == list(range(1, 31))
    for key in ("reward", "rewards/target_token/mean", "completions/mean_length", "loss", "grad_norm",
                "learning_rate", "kl", "dpo/margin", "dpo/chosen_reward", "dpo/rejected_reward", "dpo/accuracy",
                "dpo/pairs", "dpo/score_margin"):
        assert key in m[-1], key
    margins = [r["dpo/margin"] for r in m]
    first, last = mean(margins[:5]), mean(margins[-5:])
    print(f"DPO margin: first 5 steps {first:.3f}, last 5 steps {last:.3f}")
    assert m[0]["dpo/margin"] == pytest.approx(0.0, abs=1e-5)  # step 1: the policy is the reference
    assert last > first and last > 0.3, (first, last)
    assert mean([r["dpo/accuracy"] for r in m[-5:]]) > 0.6
    # the margin is the reward gap it claims to be
    assert all(r["dpo/margin"] == pytest.approx(r["dpo/chosen_reward"] - r["dpo/rejected_reward"], abs=1e-5)
               for r in m if r["dpo/pairs"])
    # and it is the reward functions that ranked: the chosen completion always scored higher
    assert all(r["dpo/score_margin"] > 0 for r in m if r["dpo/pairs"])
    rewards = [r["reward"] for r in m]
    assert mean(rewards[-5:]) > 2 * mean(rewards[:5])
    # the loop's checkpoint holds the adapter
    assert (trainer.run.latest_checkpoint() / "adapter_model.safetensors").exists()


def test_dpo_loss_is_dpo():
    pc, pr = torch.tensor([-4.0, -2.0], requires_grad=True), torch.tensor([-5.0, -1.0], requires_grad=True)
    rc, rr = torch.tensor([-4.5, -2.0]), torch.tensor([-4.0, -1.5])
    losses, c, r = dpo_loss(pc, pr, rc, rr, beta=0.2)
    logits = 0.2 * ((pc - rc) - (pr - rr))
    assert torch.allclose(losses, torch.log1p(torch.exp(-logits)))
    assert torch.allclose(c, torch.tensor([0.1, 0.0])) and torch.allclose(r, torch.tensor([-0.2, 0.1]))
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descent raises chosen, lowers rejected


# ---------------------------------------------------------------------------
# judges


def fake_batch(texts_per_prompt: list[list[str]], rewards=None) -> ScoredRollouts:
    G = len(texts_per_prompt[0])
    completions = [Completion(token_ids=[i + 1], text=t, finish_reason="stop")
                   for i, t in enumerate(t for group in texts_per_prompt for t in group)]
    total = rewards or [0.0] * len(completions)
    return ScoredRollouts(rows=[{"question": f"q{p}"} for p in range(len(texts_per_prompt))],
                          prompt_ids=[[1, 2]] * len(texts_per_prompt), completions=completions,
                          scored=RewardResult(total=total, per_reward={}), num_generations=G, generation_time=0.0)


class ShortestWins(BaseHTTPRequestHandler):
    """An OpenAI-style chat endpoint whose judge prefers the shorter answer ('A' on a tie)."""

    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ShortestWins.seen.append(body)
        prompt = body["messages"][-1]["content"]
        a = prompt.split("Answer A:\n", 1)[1].split("\n\nAnswer B:\n", 1)[0]
        b = prompt.split("\n\nAnswer B:\n", 1)[1].split("\n\n" + JUDGE_QUESTION, 1)[0]
        verdict = "B" if len(b) < len(a) else "A"
        reply = {"choices": [{"message": {"role": "assistant", "content": f"{verdict}. It is shorter."}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ShortestWins)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ShortestWins.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_http_judge_picks_the_pair_as_it_answers(judge_url, tiny_model_dir, tmp_path):
    cfg = tiny_config(tmp_path, algorithm="online_dpo", num_generations=4, prompts_per_step=2, max_steps=2,
                      judge=judge_url, judge_model="tiny-judge")
    trainer = build_trainer(tiny_model_dir, cfg, target_id=5)
    assert isinstance(trainer.judge, HTTPJudge)
    assert trainer.judge.endpoint.endswith("/v1/chat/completions")
    # 1) the pair: the judge's favourite against its least favourite, not what the rewards say
    batch = fake_batch([["a medium one", "xx", "the longest answer of all", "tiny!"],
                        ["bbb", "b", "bbbbbbb", "bb"]], rewards=[9.0, 0.0, 5.0, 1.0, 0.0, 0.0, 9.0, 1.0])
    import numpy as np

    pairs, no_verdict = trainer.choose_pairs(batch, np.random.default_rng(0))
    texts = [(batch.completions[c].text, batch.completions[r].text) for c, r in pairs]
    assert texts == [("xx", "the longest answer of all"), ("b", "bbbbbbb")]
    assert no_verdict == 0.0
    assert len(ShortestWins.seen) == 2 * 2 * 3  # per prompt a 3-match knockout for best, 3 for worst
    assert {s["model"] for s in ShortestWins.seen} == {"tiny-judge"}
    assert all(JUDGE_QUESTION in s["messages"][-1]["content"] for s in ShortestWins.seen)
    # 2) random_pair: one call per prompt, and the shorter of the two is chosen
    trainer.cfg.algorithm.dpo_pair_rule = "random_pair"
    ShortestWins.seen = []
    pairs, _ = trainer.choose_pairs(batch, np.random.default_rng(1))
    assert len(ShortestWins.seen) == 2 and len(pairs) == 2
    assert all(len(batch.completions[c].text) < len(batch.completions[r].text) for c, r in pairs)
    # 3) two training steps ranked by the judge run through the loop and log it
    trainer.cfg.algorithm.dpo_pair_rule = "best_vs_worst"
    assert trainer.train() == "finished"
    m = trainer.run.read_metrics()
    assert [r["step"] for r in m] == [1, 2] and all(r["judge/no_verdict"] == 0.0 for r in m)
    samples = trainer.run.read_samples()
    assert {"chosen", "rejected"} & {s.get("dpo_role") for s in samples}


def test_unreachable_judge_pauses_the_run_with_the_reason(tmp_path):
    import socket

    with socket.socket() as s:  # a free port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = HTTPJudge(f"http://127.0.0.1:{port}/v1", "m", timeout_s=5)
    with pytest.raises(RewardError, match="judge .* failed") as e:
        judge.compare(["q"], ["a"], ["b"])
    assert e.value.reward_name == "judge"


class RecordingEngine:
    """An engine stand-in that answers every prompt with a fixed text and records the call."""

    def __init__(self, answer: str):
        self.answer, self.calls = answer, []

    def generate(self, prompts, sampling, adapter=None):
        self.calls.append((prompts, sampling, adapter))
        return [[Completion(token_ids=[1], text=self.answer, finish_reason="stop")] for _ in prompts]


def test_engine_judge_asks_the_base_model_and_parses(tiny_model_dir):
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    engine = RecordingEngine("**B**, clearly")
    verdicts = EngineJudge(engine, tok).compare(["Which is bigger?"] * 2, ["9.11", "x"], ["9.9", "y"])
    assert verdicts == [1, 1]
    prompts, sampling, adapter = engine.calls[0]
    assert adapter is None  # the adapter is switched off: the base model judges
    assert sampling.temperature == 0.0 and sampling.n == 1
    text = tok.decode(prompts[0])
    assert "Answer A:\n9.11" in text and "Answer B:\n9.9" in text and JUDGE_QUESTION in text
    assert EngineJudge(RecordingEngine("no idea"), tok).compare(["q"], ["a"], ["b"]) == [None]


def test_self_judge_without_verdicts_falls_back_to_a_coin(tiny_model_dir, tmp_path):
    import numpy as np

    cfg = tiny_config(tmp_path, algorithm="online_dpo", num_generations=2, prompts_per_step=3, judge="self")
    trainer = build_trainer(tiny_model_dir, cfg, target_id=5)
    assert isinstance(trainer.judge, EngineJudge)
    trainer.judge.engine = RecordingEngine("hmm")  # never a verdict
    batch = fake_batch([["a", "b"], ["c", "d"], ["e", "f"]])
    pairs, no_verdict = trainer.choose_pairs(batch, np.random.default_rng(0))
    assert no_verdict == 1.0 and len(pairs) == 3
    assert all({c, r} == {2 * p, 2 * p + 1} for p, (c, r) in enumerate(pairs))


def test_verdicts_and_config_checks():
    from core.config import Config, ConfigError, validate

    assert [parse_verdict(t) for t in ["A", "b.", "Answer B is better", "a good one", "neither"]] == [0, 1, 1, None, None]
    cfg = Config()
    cfg.algorithm.algorithm, cfg.algorithm.judge = "online_dpo", "ftp://nope"
    with pytest.raises(ConfigError, match="algorithm.judge"):
        validate(cfg)
    cfg.algorithm.judge = "https://example.invalid/v1"  # only validated, never called
    validate(cfg)
