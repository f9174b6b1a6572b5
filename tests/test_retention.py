"""Issue 22: retention off the task, the thought check, the aha metrics, on tiny models on the CPU.

The teacher-forced KL from hidden states is checked against the slow, obvious computation from
full logits; a fresh adapter (LoRA B = 0) must read as exactly no change.
"""

from __future__ import annotations

import pytest
import torch

from core.config import ModelConfig
from core.engines.base import Completion
from core.evaluation.evaluate import grown_thinking, thought_check, thought_summary
from core.evaluation.retention import GENERAL_PROMPTS, RETENTION_TASKS, adapter_weights, answer_kl, degenerate_reasons, measure_retention, tasks_not_trained


@pytest.fixture()
def peft_model(tiny_model_dir):
    from core.models.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8, lora_dropout=0.0), "cpu")
    return model, tok


def _perturb(model, scale=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _naive_logps(model, prompt, answer):
    """log p(answer token | prefix) from the full logits of one unpadded sequence."""
    ids = torch.tensor([prompt + answer])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]  # (T, V): each predicts the next token
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(answer)[:, None])[:, 0]


# ---------------------------------------------------------------------------
# degenerate answers, the prompt set


def test_general_prompts_are_a_fixed_set_of_at_least_50():
    assert len(GENERAL_PROMPTS) == 60 and len(set(GENERAL_PROMPTS)) == 60
    assert GENERAL_PROMPTS[7] == "What is 12 + 7?"  # the question the broken adapter failed


@pytest.mark.parametrize("text,reasons", [
    ("Paris is the capital of France.", []),
    ("<think>3 + 4 = 7</think>\n<answer>7</answer>", []),
    ("<think>12 + 7 = 9 <<<<<<<<<<<<<</</</</</</", ["repeated characters"]),
    ("ha " * 12, ["repeated n-grams", "repeated characters"]),
    ("I like it. " * 6, ["repeated n-grams"]),
    ("<answer>1</answer><answer>1</answer><answer>1</answer>", ["runaway tags"]),
    ("| a | b |\n|---|---|\n| 1 | 2 |", []),  # a Markdown table is not a repetition
])
def test_degenerate_reasons(text, reasons):
    assert degenerate_reasons(text) == reasons


def test_tasks_not_trained_leave_out_the_trained_one():
    assert tasks_not_trained("builtin:chain_arithmetic") == [t for t in RETENTION_TASKS if t != "chain_arithmetic"]
    assert tasks_not_trained("data/my.csv") == list(RETENTION_TASKS)
    from core.data import BUILTIN_TASKS

    assert set(RETENTION_TASKS) <= set(BUILTIN_TASKS)


# ---------------------------------------------------------------------------
# the KL of tuned from base on the base's answers


def test_answer_kl_is_zero_for_a_fresh_adapter_and_matches_full_logits_after_a_change(peft_model):
    model, tok = peft_model
    prompts = [tok("Hi there")["input_ids"], tok("What is two plus two, please?")["input_ids"]]
    answers = [tok(" hello friend")["input_ids"], tok(" four")["input_ids"]]
    fresh = answer_kl(model, prompts, answers, pad_id=tok.pad_token_id, micro_batch=2)
    assert fresh["kl"] == 0.0 and fresh["logprob_drop"] == 0.0
    assert fresh["tokens"] == sum(map(len, answers))

    _perturb(model)
    got = answer_kl(model, prompts, answers, pad_id=tok.pad_token_id, micro_batch=1)  # padding-free
    batched = answer_kl(model, prompts, answers, pad_id=tok.pad_token_id, micro_batch=2)  # left/right padded
    with torch.no_grad():
        d = []
        for p, a in zip(prompts, answers):
            tuned = _naive_logps(model, p, a)
            with model.disable_adapter():
                base = _naive_logps(model, p, a)
            d.append(tuned - base)
    d = torch.cat(d)
    assert got["kl"] > 1e-3
    assert got["kl"] == pytest.approx(float((torch.exp(d) - d - 1).mean()), rel=1e-4)
    assert got["logprob_drop"] == pytest.approx(float(-d.mean()), rel=1e-4, abs=1e-6)
    assert batched["kl"] == pytest.approx(got["kl"], rel=1e-4)
    for training in (True, False):  # scoring puts the model back in the mode it found
        model.train(training)
        answer_kl(model, prompts, answers, pad_id=tok.pad_token_id)
        assert model.training is training


def test_adapter_weights_swaps_a_checkpoint_in_and_back_out(peft_model, tmp_path):
    from peft.utils import get_peft_model_state_dict

    model, tok = peft_model
    _perturb(model, seed=3)
    model.save_pretrained(tmp_path / "ck")  # the checkpoint: perturbed weights
    saved = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    _perturb(model, seed=4)  # the live adapter: other weights
    live = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    with adapter_weights(model, tmp_path / "ck"):
        inside = get_peft_model_state_dict(model)
        assert all(torch.equal(inside[k], saved[k]) for k in saved)
    after = get_peft_model_state_dict(model)
    assert all(torch.equal(after[k], live[k]) for k in live)
    with adapter_weights(model, None):  # nothing to swap
        assert all(torch.equal(get_peft_model_state_dict(model)[k], live[k]) for k in live)


def test_adapter_weights_scores_a_checkpoint_of_another_rank_and_leaves_the_model_as_it_was(
        tiny_model_dir, peft_model, tmp_path):
    from peft.utils import get_peft_model_state_dict

    from core.models.loading import load_model_and_tokenizer

    other, _ = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=8,
                                                    lora_alpha=16), "cpu")
    _perturb(other, seed=5)
    other.save_pretrained(tmp_path / "r8")
    model, tok = peft_model  # rank 4
    prompts, answers = [tok("Hi there")["input_ids"]], [tok(" hello friend")["input_ids"]]
    want = answer_kl(other, prompts, answers, pad_id=tok.pad_token_id)["kl"]
    before = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    with adapter_weights(model, tmp_path / "r8"):
        got = answer_kl(model, prompts, answers, pad_id=tok.pad_token_id)["kl"]
    assert want > 1e-4 and got == pytest.approx(want, rel=1e-5)
    after = get_peft_model_state_dict(model)
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable
    assert list(model.peft_config) == ["default"]


class EchoEngine:
    """Greedy 'answers': the base says `base`, the adapter `tuned`, with a token per word."""

    def __init__(self, tok, base, tuned):
        self.tok, self.base, self.tuned, self.calls, self.stops = tok, base, tuned, [], []

    def generate(self, prompts, sampling, adapter=None):
        self.calls.append((len(prompts), adapter))
        self.stops.append(tuple(sampling.stop))
        text = self.tuned if adapter is not None else self.base
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return [[Completion(token_ids=ids, text=text, finish_reason="stop")] for _ in prompts]


def test_measure_retention_counts_broken_answers_and_scores_the_base_words(peft_model):
    model, tok = peft_model
    engine = EchoEngine(tok, base="It is Paris.", tuned="<think>12 + 7 = 9 <<<<<<<<<<<<<<<<")
    r = measure_retention(engine, tok, model, adapter="tuned", source="builtin:addition",
                          prompts=GENERAL_PROMPTS[:4], n_task=2, max_tokens=8, stop_at="####")
    g = r["general"]
    assert g["n"] == 4 and g["base"]["degenerate_rate"] == 0.0 and g["tuned"]["degenerate_rate"] == 1.0
    assert g["tuned"]["tag_rate"] == 1.0 and g["base"]["tag_rate"] == 0.0
    assert g["kl"] == 0.0  # a fresh adapter: the model itself has not moved
    assert g["tokens"] == 4 * len(tok("It is Paris.", add_special_tokens=False)["input_ids"])
    assert [i["prompt"] for i in g["items"]] == list(GENERAL_PROMPTS[:4])
    assert g["items"][0]["tuned_flags"] == ["repeated characters"]
    assert sorted(r["tasks"]) == sorted(t for t in RETENTION_TASKS if t != "addition")
    assert all(r["tasks"][t]["base"]["n"] == 2 for t in r["tasks"])
    assert engine.calls[0] == (4, None) and engine.calls[1] == (4, "tuned")
    # the general prompts are chat, asked without a stop text; the tasks' questions, asked with the answer
    # tags, end at the closing tag where the run's answers end at a stop text at all (its own, "####", would
    # cut them before their tags), and at max_tokens where they do not
    assert engine.stops[:2] == [(), ()] and set(engine.stops[2:]) == {("</answer>",)}
    engine.stops.clear()
    measure_retention(engine, tok, model, adapter="tuned", source="builtin:addition", prompts=GENERAL_PROMPTS[:1],
                      n_task=2, max_tokens=8, stop_at="")
    assert set(engine.stops) == {()}


def test_manager_retention_of_a_fresh_adapter_is_no_change(tiny_model_dir, tmp_path):
    from core.app.manager import RunManager

    manager = RunManager(tmp_path / "runs", ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=4),
                         device="cpu")
    try:
        r = manager.retention("current", n_prompts=2, n_task=0, max_tokens=6)
    finally:
        manager.close()
    g = r["general"]
    assert g["n"] == 2 and g["kl"] == 0.0 and r["tasks"] == {}
    assert [i["base"] for i in g["items"]] == [i["tuned"] for i in g["items"]]  # same weights, same answers


# ---------------------------------------------------------------------------
# the thought check and the aha example


@pytest.mark.parametrize("text,expected", [
    ("<think>6 * 7 = 42. 42 + 5 = 47.</think><answer>47</answer>", (2, 2, True)),
    ("<think>6 * 7 = 42. 42 + 5 = 48.</think><answer>48</answer>", (2, 1, False)),
    ("<think>6 x 7 = 42 and 20 - 25 = -5</think>", (2, 2, True)),
    ("<think>47</think><answer>47</answer>", (0, 0, False)),
    ("6 * 7 = 42 outside any thought", (0, 0, False)),
    ("<think>8 / 0 = 1</think>", (1, 0, False)),
])
def test_thought_check(text, expected):
    c = thought_check(text)
    assert (c["equations"], c["right"], c["checks_out"]) == expected


def test_thought_summary_counts_only_thoughts_with_steps():
    s = thought_summary(["<think>1 + 1 = 2</think>", "<think>2</think>", "<think>2 * 3 = 5</think>", "none"])
    assert s == {"with_steps": 0.5, "check_share": 0.5}
    assert thought_summary(["<think>7</think>"]) == {"with_steps": 0.0, "check_share": None}


def test_grown_thinking_picks_a_short_early_and_a_checked_long_late_sample():
    def sample(step, completion, right=1.0):
        return {"step": step, "question": f"q{step}", "completion": completion, "rewards": {"correctness": right}}

    samples = [sample(1, "<think>47</think>"), sample(1, "<think>6 * 7 = 42 so 47</think>"),
               sample(2, "<think>x</think>", 0.0), sample(5, "<think>bad</think>"),
               sample(10, "<think>6 * 7 = 42. 42 + 5 = 47.</think>"),
               sample(10, "<think>6 * 7 = 41. 41 + 5 = 46. and many more words here</think>"),
               sample(10, "<think>a very long wrong thought with many many words in it</think>", 0.0)]
    g = grown_thinking(samples)
    assert g["early"]["completion"] == "<think>47</think>" and g["early"]["thought_words"] == 1
    assert g["late"]["completion"] == "<think>6 * 7 = 42. 42 + 5 = 47.</think>"  # checks out beats longer
    assert g["early"]["correct"] and g["late"]["correct"]
    wrong_only = grown_thinking([sample(1, "<think>a</think>", 0.0), sample(2, "<think>a b</think>", 0.0)])
    assert wrong_only["late"]["correct"] is False  # the panel says so rather than call it grown thinking
    assert grown_thinking([sample(1, "<think>1</think>")]) is None


# ---------------------------------------------------------------------------
# the per-step lengths of correct and wrong completions


def test_rollout_metrics_split_lengths_by_correctness(tiny_model_dir, tmp_path):
    from test_trainer import make_trainer, tiny_config

    from core.rewards.registry import RewardResult
    from core.rl.rollouts import ScoredRollouts

    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path))
    comps = [Completion(token_ids=[1] * n, text="x" * n, finish_reason="stop") for n in (4, 10, 6, 2)]
    scored = RewardResult(total=[1.0, 2.0, 0.5, 1.0],
                          per_reward={"format_strict": [1.0, 1.0, 0.5, 1.0], "correctness": [0.0, 1.0, 0.0, 1.0]})
    batch = ScoredRollouts(rows=[{"question": "q"}] * 2, prompt_ids=[[1], [1]], completions=comps, scored=scored,
                           num_generations=2, generation_time=1.0)
    m = trainer.step_metrics(batch, 1, 0.0)
    assert m["completions/mean_length_correct"] == 6.0  # (10 + 2) / 2
    assert m["completions/mean_length_incorrect"] == 5.0  # (4 + 6) / 2
    none_right = ScoredRollouts(batch.rows, batch.prompt_ids, comps, RewardResult(
        total=[0.0] * 4, per_reward={"correctness": [0.0] * 4}), 2, 1.0)
    m = trainer.step_metrics(none_right, 1, 0.0)
    assert m["completions/mean_length_correct"] != m["completions/mean_length_correct"]  # nan: none right
    assert m["completions/mean_length_incorrect"] == 5.5
    no_correctness = ScoredRollouts(batch.rows, batch.prompt_ids, comps, RewardResult(
        total=[0.0] * 4, per_reward={"format_strict": [0.0] * 4}), 2, 1.0)
    assert "completions/mean_length_correct" not in trainer.step_metrics(no_correctness, 1, 0.0)
