"""The answer prefix (R1-Zero's prefilled "<think>") and the held-out evaluation.

A prefix is written into the prompt after the assistant header, so the model continues from
it; every consumer of the answer text (rewards, samples, evaluation, chat) must see the prefix
as part of the answer, otherwise a format reward could never pay for the tag the prompt wrote.
"""

from __future__ import annotations

import pytest
import torch
from test_trainer import make_trainer, tiny_config

from core.data import build_messages, render_prompt
from core.engines.base import Completion
from core.evaluation.evaluate import evaluate, last_number_correct


class RecordingReward:
    names = ["seen"]

    def __init__(self):
        self.texts = []

    def __call__(self, prompts, completions, columns):
        from core.rewards.registry import RewardResult

        texts = [c[0]["content"] for c in completions]
        self.texts += texts
        values = [float(t.startswith("<think>")) for t in texts]
        return RewardResult(total=values, per_reward={"seen": values})


def test_render_prompt_ends_with_the_prefix(tiny_model_dir):
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    plain = render_prompt(tok, build_messages("2 + 2?", "sys"))
    prefixed = render_prompt(tok, build_messages("2 + 2?", "sys"), "", "<think>")
    assert prefixed == plain + "<think>"


def test_rollouts_prompt_with_the_prefix_and_rewards_see_it(tiny_model_dir, tmp_path):
    cfg = tiny_config(tmp_path, prompts_per_step=2, num_generations=4)
    cfg.data.response_prefix = "<think>"
    trainer = make_trainer(tiny_model_dir, cfg)
    seen = RecordingReward()
    trainer.rewards = seen
    ids = trainer.prompt_ids(trainer.task.train[0])
    assert trainer.tokenizer.decode(ids).endswith("<think>")  # the model continues after the prefix
    result = trainer.train_step()
    assert len(seen.texts) == 8 and all(t.startswith("<think>") for t in seen.texts)
    assert result.metrics["reward"] == pytest.approx(1.0)
    assert all(s["completion"].startswith("<think>") for s in result.samples)


class ScriptedEngine:
    """Greedy answers from a script, one per prompt, recording the prompts."""

    def __init__(self, answers):
        self.answers, self.prompts = answers, None

    def generate(self, prompts, sampling, adapter=None):
        assert sampling.temperature == 0.0 and sampling.n == 1
        self.prompts = prompts
        return [[Completion(token_ids=[1], text=a, finish_reason="stop")] for a in self.answers[: len(prompts)]]


def test_evaluate_counts_tagged_and_last_number_accuracy_with_a_prefix(tiny_model_dir):
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    rows = [{"question": f"Which is bigger, {a} or {b}?", "answer": a} for a, b in
            (("9.9", "9.11"), ("3.5", "3.45"), ("10.1", "8.95"), ("2.8", "2.764"))]
    answers = [
        "9.9 is 9.90</think>\n<answer>9.9</answer>",  # right, formatted (with the prefix)
        "3.45 has more digits</think>\n<answer>3.45</answer>",  # wrong, formatted
        "the bigger one is 10.1",  # right by its last number only, no tags
        "2.8 is bigger than 2.764",  # last number is the wrong one
    ]
    engine = ScriptedEngine(answers)
    r = evaluate(engine, tok, rows, system_prompt="s", response_prefix="<think>")
    assert r["n"] == 4
    assert r["accuracy"] == pytest.approx(0.25)  # only the first: the answer must be in tags
    assert r["format_rate"] == pytest.approx(0.5)  # the prefix supplies the opening <think>
    assert r["accuracy_flexible"] == pytest.approx(0.5)  # first and third
    assert [i["correct_flexible"] for i in r["items"]] == [True, False, True, False]
    assert all(i["completion"].startswith("<think>") for i in r["items"])
    assert all(tok.decode(p).endswith("<think>") for p in engine.prompts)


def test_evaluate_splits_accuracy_and_length_by_the_problems_steps(tiny_model_dir):
    """Chain tasks say how many steps a problem takes: the evaluation gives accuracy and the length of
    the correct answers for each, so a longer mean can be told apart into longer problems solved."""
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    rows = [{"question": q, "answer": a, "steps": k} for q, a, k in
            (("2 * 3 + 1?", "7", 2), ("2 * 4 + 1?", "9", 2), ("2 * 3 + 1 + 1?", "8", 3), ("2 * 2 + 1 + 1?", "6", 3))]
    answers = ["2 * 3 = 6. 6 + 1 = 7.</think><answer>7</answer>", "</think><answer>5</answer>",
               "2 * 3 = 6. 6 + 1 = 7. 7 + 1 = 8.</think><answer>8</answer>", "2 * 2 = 4.</think><answer>6</answer>"]
    lengths = [10, 3, 16, 5]

    class Sized(ScriptedEngine):
        def generate(self, prompts, sampling, adapter=None):
            return [[Completion(token_ids=[1] * n, text=a, finish_reason="stop")] for a, n in zip(self.answers, lengths)]

    r = evaluate(Sized(answers), tok, rows, system_prompt="", response_prefix="<think>")
    assert r["accuracy"] == pytest.approx(0.75) and r["mean_tokens_correct"] == pytest.approx((10 + 16 + 5) / 3)
    assert r["by_steps"] == {2: {"n": 2, "accuracy": 0.5, "mean_tokens_correct": 10.0},
                             3: {"n": 2, "accuracy": 1.0, "mean_tokens_correct": 10.5}}
    assert [i["steps"] for i in r["items"]] == [2, 2, 3, 3]
    # rows without the column: no breakdown
    assert "by_steps" not in evaluate(Sized(answers), tok, [{k: v for k, v in x.items() if k != "steps"} for x in rows],
                                      system_prompt="", response_prefix="<think>")


def test_a_question_longer_than_the_engines_context_is_refused_in_words(tiny_model_dir):
    """Compare's chat: a question the engine cannot hold (a new user pasted 30,000 characters) gets a
    message that says so; one that fits gets its answer cut to the room left."""
    from core.evaluation.chat import answer
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))

    class Small(ScriptedEngine):
        def limits(self):
            return {"max_model_len": 64, "max_lora_rank": None}

        def generate(self, prompts, sampling, adapter=None):
            self.max_tokens = sampling.max_tokens
            return super().generate(prompts, sampling, adapter)

    engine = Small(["4"])
    with pytest.raises(ValueError, match=r"the question takes [\d,]+ tokens .* holds 64 .*: shorten it"):
        answer(engine, tok, "How much is 2 + 2? " * 50, system_prompt="")
    assert engine.prompts is None  # nothing was sent to the engine
    assert answer(engine, tok, "2 + 2?", system_prompt="", max_tokens=256) == "4"
    assert 0 < engine.max_tokens == 64 - len(engine.prompts[0]) < 64


def test_the_hf_engine_holds_the_models_context_so_chat_refuses_a_longer_question(tiny_model_dir):
    """The CPU path: HF generate has no engine context of its own, so its limit is the model's
    positions; a question past them is refused before anything is generated (it used to run for
    minutes, holding the app's one worker)."""
    from core.config import ModelConfig
    from core.engines.hf import HFEngine
    from core.evaluation.chat import answer
    from core.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"), "cpu")
    model.config.max_position_embeddings = 96
    engine = HFEngine(model, tok)
    assert engine.limits() == {"max_model_len": 96, "max_lora_rank": None}
    with pytest.raises(ValueError, match=r"the question takes [\d,]+ tokens .* holds 96 .*: shorten it") as e:
        answer(engine, tok, "Which is bigger, 9.11 or 9.9? " * 40, system_prompt="")
    from core.errors import user_message

    assert user_message(e.value).startswith("the question takes ")  # written for a person: no "ValueError: "
    out = answer(engine, tok, "2 + 2?", system_prompt="", max_tokens=500)  # cut to the room left
    assert isinstance(out, str) and len(tok(out)["input_ids"]) <= 96


def test_last_number_extraction():
    assert last_number_correct("so the total is 1,234", "1234")
    assert last_number_correct("<answer>0.5</answer>", "0.50")
    assert not last_number_correct("9.11 is smaller than 9.9", "9.11")
    assert not last_number_correct("", "3") and not last_number_correct("3", None)


def test_countdown_has_no_flexible_accuracy(tiny_model_dir):
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    rows = [{"question": "Using 1, 2, 3 make 6", "answer": "6", "numbers": [1, 2, 3], "target": 6}]
    r = evaluate(ScriptedEngine(["<think>1+2+3</think><answer>1 + 2 + 3</answer>"]), tok, rows, system_prompt="")
    assert r["accuracy"] == 1.0 and r["accuracy_flexible"] is None and r["format_rate"] == 1.0


def test_proof_of_learning_script_runs_and_resumes_on_cpu(tiny_model_dir, tmp_path, monkeypatch):
    """The proof-of-learning benchmark end to end on a tiny model: base eval, training with an eval,
    stop at a deadline, resume, results files with the curve."""
    import json

    from bench import proof_of_learning

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {name_or_path: '%s', lora_r: 4, lora_alpha: 8, dtype: float32}\n"
        "data: {source: 'builtin:decimal_compare', train_size: 40, eval_size: 6, response_prefix: '<think>'}\n"
        "algorithm: {num_generations: 2, prompts_per_step: 2, micro_batch_size: 4, max_completion_length: 6,\n"
        "            max_steps: 4, seed: 3}\n"
        "run: {run_name: proof, save_steps: 1, engine: hf}\n" % tiny_model_dir)
    out = tmp_path / "out"
    common = ["--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--eval-every", "2",
              "--retention-items", "1", "--retention-tokens", "4", "--retention-prompts", "3"]
    torch.manual_seed(0)
    assert proof_of_learning.main(common + ["--deadline-s", "0.001"]) == 0  # stops after step 1
    assert not (out / "proof_of_learning.json").exists()
    partial = json.loads((out / "proof_of_learning_partial.json").read_text())  # written at each evaluation
    assert partial["finished"] is False and [e["step"] for e in partial["evals"]] == [0]
    state = json.loads((tmp_path / "runs" / "proof" / "proof.json").read_text())
    assert [e["step"] for e in state["evals"]] == [0]
    assert proof_of_learning.main(common) == 0  # resumes at step 1, runs to 4
    result = json.loads((out / "proof_of_learning.json").read_text())
    assert [e["step"] for e in result["evals"]] == [0, 2, 4]
    assert result["steps"] == 4 and result["base"]["n"] == 6
    assert (out / "proof_of_learning.png").stat().st_size > 10_000
    steps = [json.loads(line)["step"] for line in (out / "proof_of_learning_metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert result["finished"] is True
    # issue 22: lengths of correct answers, thoughts, the grown sample, retention off the task
    for key in ("mean_tokens_correct", "thought_with_steps", "thought_check_share"):
        assert key in result["base"] and key in result["final"]
    assert {"length_correct_first_50", "length_correct_rising", "thought_check_share_final"} <= set(result)
    assert result["settings"]["beta"] == 0.0 and result["grown_thinking"]["late"]["step"] >= 3
    g = result["retention"]["general"]
    assert g["n"] == 3 and g["kl"] >= 0 and 0 <= g["tuned"]["degenerate_rate"] <= 1 and len(g["items"]) == 3
    assert sorted(result["retention"]["tasks"]) == ["addition", "arithmetic", "chain_arithmetic", "largest",
                                                    "multiplication"]  # not decimal_compare: trained on
    md = (out / "proof_of_learning.md").read_text()
    assert "Retention on 3 general prompts" in md and "steps check out" in md

    # --report-partial: a run cut by its deadline still writes its results, evaluated where it stopped
    part = tmp_path / "part"
    assert proof_of_learning.main(["--config", str(cfg), "--runs-dir", str(tmp_path / "runs2"), "--out", str(part),
                                   "--eval-every", "2", "--deadline-s", "0.001", "--report-partial"]) == 0
    result = json.loads((part / "proof_of_learning.json").read_text())
    assert result["finished"] is False and result["steps"] == 1
    assert [e["step"] for e in result["evals"]] == [0, 1]
    assert "stopped at the time limit before step 4" in (part / "proof_of_learning.md").read_text()


class FailsAfter:
    """A reward that works for `ok_calls` steps, then raises like a broken reward function."""

    names = ["flaky"]

    def __init__(self, ok_calls: int):
        self.ok_calls = ok_calls

    def __call__(self, prompts, completions, columns):
        from core.rewards.base import RewardError
        from core.rewards.registry import RewardResult

        if self.ok_calls <= 0:
            raise RewardError("flaky: boom", reward_name="flaky")
        self.ok_calls -= 1
        values = [0.0] * len(completions)
        return RewardResult(total=values, per_reward={"flaky": values})


def test_headless_run_stops_with_checkpoint_and_reason_instead_of_waiting(tiny_model_dir, tmp_path):
    """The CLI and benchmarks set stop_on_pause: a failing reward must not hang the run forever."""
    cfg = tiny_config(tmp_path, prompts_per_step=2, num_generations=2, max_steps=5)
    cfg.run.save_steps = 100
    trainer = make_trainer(tiny_model_dir, cfg)
    trainer.rewards = FailsAfter(ok_calls=2)
    trainer.control.stop_on_pause = True
    assert trainer.train() == "stopped"
    assert trainer.step == 2
    status = trainer.run.read_status()
    assert status["state"] == "stopped" and "flaky" in status["reason"]
    assert trainer.run.latest_checkpoint().name.endswith("000002")  # the work so far is kept


def test_stop_at_reaches_rollouts_evaluation_and_chat(tiny_model_dir, tmp_path):
    """data.stop_at ends the completions of a step's rollouts, the held-out evaluation and chat alike
    (the cut itself: tests/test_engine_conformance.py, on both backends)."""
    from core.evaluation.chat import answer
    from core.evaluation.evaluate import evaluate_base_and_tuned

    cfg = tiny_config(tmp_path, prompts_per_step=1, num_generations=2)
    cfg.data.stop_at = "</answer>"
    trainer = make_trainer(tiny_model_dir, cfg)
    seen = []
    rollout, generate = trainer.engine.rollout, trainer.engine.generate

    def recording_rollout(prompts, sampling, *args, **kwargs):
        seen.append(("rollout", sampling.stop))
        return rollout(prompts, sampling, *args, **kwargs)

    def recording_generate(prompts, sampling, *args, **kwargs):
        seen.append(("generate", sampling.stop))
        return generate(prompts, sampling, *args, **kwargs)

    trainer.engine.rollout, trainer.engine.generate = recording_rollout, recording_generate
    trainer.train_step()
    evaluate_base_and_tuned(trainer, max_items=2)
    answer(trainer.engine, trainer.tokenizer, "2 + 2?", stop_at=cfg.data.stop_at, max_tokens=4)
    answer(trainer.engine, trainer.tokenizer, "2 + 2?", max_tokens=4)  # a caller that sets none: none
    stop = ("</answer>",)
    assert seen[0] == ("rollout", stop) and seen[-1] == ("generate", ())
    assert all(s == stop for _, s in seen[:-1])  # the HF rollout samples through generate, with the same settings
    assert [w for w, _ in seen].count("generate") >= 4  # base and tuned evaluation, the two chats


def test_a_run_folder_from_before_stop_at_resumes_and_chats_as_it_trained(tmp_path):
    """A config.yaml written before data.stop_at existed ran without a stop text: resume (the app's
    library, scripts/train.py) and Compare (checkpoint_run_config) load it so; a newer one keeps its own."""
    import yaml

    from core.config import Config
    from core.evaluation.chat import checkpoint_run_config
    from core.runs.folders import RunDir

    run = RunDir.create(tmp_path, "old")
    old = Config().to_dict()
    del old["data"]["stop_at"]
    run.config_path.write_text(yaml.safe_dump(old))
    assert Config.load(run.config_path).data.stop_at == "</answer>"  # a recipe without it gets the default
    assert run.load_config().data.stop_at == ""
    assert checkpoint_run_config(run.path / "checkpoints" / "step-000010").data.stop_at == ""
    new = Config()
    new.data.stop_at = "####"
    run.config_path.write_text(yaml.safe_dump(new.to_dict()))
    assert run.load_config().data.stop_at == "####"
