"""Reward code written for TRL, or copied from a GRPO notebook, runs unchanged (issue 30): an async
reward, functions imported from `trl.rewards`, a function named like a preset, the notebook set.

Each is scored three ways the app scores custom code — the reward editor's road
(`RewardSet.from_config`, which Start, Resume and Try on samples load the code through), Try on
samples (`RunManager.try_rewards`) and training from `--rewards-file` — and each must give the
values the functions give when called here directly, as TRL's GRPOTrainer calls them: by keyword,
completions as `[{"role": "assistant", "content": ...}]`, an async one awaited.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from core.config import Config, ModelConfig, RewardsConfig
from core.data import build_messages
from core.rewards.code import find_rewards
from core.rewards.registry import RewardSet

# The app's default presets: a custom `correctness` replaces the second.
PRESETS = ["format_soft", "correctness"]

ASYNC_REWARD = '''
import asyncio

async def length_judge(prompts, completions, **kwargs) -> list[float]:
    """An async reward, as one asking a remote judge is written."""
    async def judge(text):
        await asyncio.sleep(0)
        return min(len(text), 300) / 100
    return list(await asyncio.gather(*(judge(c[0]["content"]) for c in completions)))
'''

TRL_IMPORTS = '''
from trl.rewards import think_format_reward, accuracy_reward
'''

NAMED_LIKE_A_PRESET = '''
def correctness(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 when the reference answer appears anywhere in the completion."""
    return [1.0 if str(a) in c[0]["content"] else 0.0 for c, a in zip(completions, answer)]
'''

# Our own functions with the names, signatures and habits of the GRPO notebooks' set (reasoning
# and answer tags, helpers beside the rewards, a print, the reference as `answer`).
NOTEBOOK_SET = r'''
import re

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)  # the text inside the last answer tags

def extract_xml_answer(text: str) -> str:
    found = ANSWER.findall(text)
    return found[-1].strip() if found else ""

def texts_of(completions):
    return [messages[0]["content"] for messages in completions]

def correctness_reward_func(prompts, completions, answer, **kwargs) -> list[float]:
    replies = [extract_xml_answer(t) for t in texts_of(completions)]
    print("question:", prompts[0][-1]["content"], "| reference:", answer[0], "| reply:", replies[0])
    return [2.0 if reply == str(ref) else 0.0 for reply, ref in zip(replies, answer)]

def int_reward_func(completions, **kwargs) -> list[float]:
    return [0.5 if re.fullmatch(r"-?\d+", extract_xml_answer(t)) else 0.0 for t in texts_of(completions)]

def strict_format_reward_func(completions, **kwargs) -> list[float]:
    # exactly: reasoning block, answer block, each tag on its own line, nothing around them
    pattern = re.compile(r"<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n", re.DOTALL)
    return [0.5 if pattern.fullmatch(t) else 0.0 for t in texts_of(completions)]

def soft_format_reward_func(completions, **kwargs) -> list[float]:
    # a reasoning block, then (after optional whitespace) an answer block, anywhere in the text
    pattern = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
    return [0.5 if pattern.search(t) else 0.0 for t in texts_of(completions)]

def count_xml(text: str) -> float:
    tags = ["<reasoning>\n", "\n</reasoning>\n", "\n<answer>\n", "\n</answer>"]
    score = sum(0.125 for tag in tags if text.count(tag) == 1)
    if text.count("\n</answer>") == 1:
        score -= 0.001 * len(text.rsplit("\n</answer>", 1)[1].strip())  # text after the answer
    return score

def xmlcount_reward_func(completions, **kwargs) -> list[float]:
    return [count_xml(t) for t in texts_of(completions)]
'''
NOTEBOOK_NAMES = ["correctness_reward_func", "int_reward_func", "strict_format_reward_func",
                  "soft_format_reward_func", "xmlcount_reward_func"]

# case: (code, the reward names the run gets, in order)
CASES = {
    "async": (ASYNC_REWARD, [*PRESETS, "length_judge"]),
    "trl_rewards": (TRL_IMPORTS, [*PRESETS, "think_format_reward", "accuracy_reward"]),
    "named_like_a_preset": (NAMED_LIKE_A_PRESET, PRESETS),
    "notebook_set": (NOTEBOOK_SET, [*PRESETS, *NOTEBOOK_NAMES]),
}
CUSTOM = {"async": ["length_judge"], "trl_rewards": ["think_format_reward", "accuracy_reward"],
          "named_like_a_preset": ["correctness"], "notebook_set": NOTEBOOK_NAMES}


def direct(code: str, names: list[str], prompts: list, completions: list, answers: list) -> dict[str, list[float]]:
    """The functions of `code` called in this process as TRL's GRPOTrainer calls them: by keyword,
    each dataset column as a list (`solution` is TRL's name for the reference), awaited if async."""
    namespace: dict = {}
    exec(code, namespace)
    out = {}
    for name in names:
        result = namespace[name](prompts=prompts, completions=completions, answer=answers, solution=answers)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
        out[name] = [float(v) for v in result]
    return out


def messages(texts) -> list[list[dict]]:
    return [[{"role": "assistant", "content": t}] for t in texts]


# ---------------------------------------------------------------------------
# The editor's road: RewardSet.from_config on a batch of known completions

PROMPTS = [[{"role": "system", "content": "Think first."}, {"role": "user", "content": "What is 6*7?"}]] * 4
TEXTS = [
    "<reasoning>\n6*7 is 42\n</reasoning>\n<answer>\n42\n</answer>\n",  # the notebooks' format, right
    "<think>6*7</think> so \\boxed{42}",  # TRL's think format, a boxed answer
    "<answer>41</answer>",  # wrong
    "I think it is 42",  # right, but no tags
]
ANSWERS = ["42"] * 4

# What each custom function gives on TEXTS, worked out by hand.
EXPECTED = {
    "length_judge": [len(t) / 100 for t in TEXTS],
    "think_format_reward": [0.0, 1.0, 0.0, 0.0],
    "accuracy_reward": [0.0, 1.0, 0.0, 0.0],  # a boxed (LaTeX) answer only
    "correctness": [1.0, 1.0, 0.0, 1.0],  # the custom one: the preset would give 0.0 to the last
    "correctness_reward_func": [2.0, 0.0, 0.0, 0.0],
    "int_reward_func": [0.5, 0.0, 0.5, 0.0],
    "strict_format_reward_func": [0.5, 0.0, 0.0, 0.0],
    "soft_format_reward_func": [0.5, 0.0, 0.0, 0.0],
    "xmlcount_reward_func": [0.5, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("case", list(CASES))
def test_editor_road_scores_as_called_directly(case):
    code, names = CASES[case]
    custom = CUSTOM[case]
    want = direct(code, custom, PROMPTS, messages(TEXTS), ANSWERS)
    assert want == {name: pytest.approx(EXPECTED[name]) for name in custom}  # the oracle, checked by hand

    with RewardSet.from_config(RewardsConfig(names=PRESETS, custom_code=code, custom_timeout_s=30)) as rewards:
        assert rewards.names == names
        got = rewards(PROMPTS, messages(TEXTS), {"answer": ANSWERS})
    assert {name: got.per_reward[name] for name in custom} == want
    assert {s.name: s.source for s in rewards.specs} == {**dict.fromkeys(PRESETS, "preset"),
                                                         **dict.fromkeys(custom, "custom")}
    if case == "named_like_a_preset":  # replaces the preset, keeps its weight, and says so once
        assert rewards.weights == [0.5, 1.0]
        assert rewards.notes == ["custom reward 'correctness' replaces the preset of that name (weight 1)"]
        fmt = got.per_reward["format_soft"]
        assert got.total == pytest.approx([0.5 * f + c for f, c in zip(fmt, want["correctness"])])
    else:
        assert rewards.notes == []


def test_a_list_or_all_selects_the_rewards():
    listed = NOTEBOOK_SET + "\nfrom trl.rewards import accuracy_reward\n" \
        "reward_funcs = [xmlcount_reward_func, correctness_reward_func, accuracy_reward]\n"
    with RewardSet.from_config(RewardsConfig(names=[], custom_code=listed, custom_timeout_s=30)) as rewards:
        assert rewards.names == ["xmlcount_reward_func", "correctness_reward_func", "accuracy_reward"]
        got = rewards(PROMPTS, messages(TEXTS), {"answer": ANSWERS})
    assert got.per_reward == {"xmlcount_reward_func": EXPECTED["xmlcount_reward_func"],
                              "correctness_reward_func": EXPECTED["correctness_reward_func"],
                              "accuracy_reward": EXPECTED["accuracy_reward"]}

    namespace: dict = {}
    exec(TRL_IMPORTS + "__all__ = ['accuracy_reward', 'missing', 'helper']\n"
         "def helper(text):\n    return 1\n", namespace)
    found = find_rewards(namespace)
    assert list(found.functions) == ["accuracy_reward"]
    assert found.notes == ["__all__ names 'missing', which the code does not define",
                           "'helper' in __all__ is not a reward function "
                           "(it needs `completions` and `**kwargs`): left out"]


def test_discovery_takes_callable_objects_and_skips_helpers():
    namespace: dict = {}
    exec("import re\nfrom trl.rewards import get_cosine_scaled_reward\n"
         "cosine = get_cosine_scaled_reward(max_len=100)\n"
         "def _private(prompts, completions, **kwargs):\n    return []\n"
         "def helper(text):\n    return text\n", namespace)
    assert list(find_rewards(namespace).functions) == ["cosine"]  # not the factory, a module, a helper
    exec("from trl.rewards import get_cosine_scaled_reward\n"
         "reward_funcs = [get_cosine_scaled_reward(max_len=10), get_cosine_scaled_reward(max_len=20)]\n", namespace)
    found = find_rewards(namespace)  # named as TRL names them, the second made unique
    assert list(found.functions) == ["cosine_scaled_reward", "cosine_scaled_reward_2"]
    assert found.notes == ["a second reward function named 'cosine_scaled_reward' is called 'cosine_scaled_reward_2'"]


# ---------------------------------------------------------------------------
# Try on samples: the tiny model's completions and the reference answers


@pytest.fixture(scope="module")
def manager(tiny_model_dir, tmp_path_factory):
    from core.app.manager import RunManager

    m = RunManager(tmp_path_factory.mktemp("runs"),
                   ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8),
                   device="cpu")
    yield m
    m.close()


@pytest.mark.parametrize("case", list(CASES))
def test_try_on_samples_scores_as_called_directly(manager, case):
    code, names = CASES[case]
    data = manager.default_config().data
    data.source, data.train_size, data.eval_size = "builtin:decimal_compare", 16, 4
    df = manager.try_rewards(RewardsConfig(names=PRESETS, custom_code=code, custom_timeout_s=30), data, n=2,
                             max_tokens=12)
    assert list(df.columns) == ["question", "answer", "source", "completion", *names, "total"]
    prompts = [build_messages(q, data.system_prompt) for q in df["question"]]
    want = direct(code, CUSTOM[case], prompts, messages(df["completion"]), list(df["answer"]))
    for name, values in want.items():
        assert list(df[name]) == values, name
    reference = df[df["source"] == "reference"]  # "<think>\nThe answer is X.\n</think>\n<answer>\nX\n</answer>"
    on_reference = {"length_judge": lambda v: v > 0.3, "think_format_reward": lambda v: v == 1.0,
                    "correctness": lambda v: v == 1.0, "correctness_reward_func": lambda v: v == 2.0}
    for name in CUSTOM[case]:
        if name in on_reference:
            assert all(on_reference[name](v) for v in reference[name]), (name, list(reference[name]))
    notes = df.attrs["notes"]
    assert notes == (["custom reward 'correctness' replaces the preset of that name (weight 1)"]
                     if case == "named_like_a_preset" else [])


def test_a_run_says_once_that_a_preset_was_replaced(manager):
    cfg = manager.default_config()
    cfg.data.source, cfg.data.train_size, cfg.data.eval_size = "builtin:decimal_compare", 16, 4
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.max_completion_length, a.max_steps = 4, 2, 8, 1
    cfg.rewards.names, cfg.rewards.weights, cfg.rewards.custom_code = PRESETS, [], NAMED_LIKE_A_PRESET
    cfg.run.engine = "hf"
    name = manager.start(cfg)
    assert manager.wait(timeout=120) == "finished"
    assert manager.status()["note"] == "custom reward 'correctness' replaces the preset of that name (weight 1)"
    assert {"rewards/format_soft/mean", "rewards/correctness/mean"} <= set(manager.metrics(name).columns)


# ---------------------------------------------------------------------------
# Training from --rewards-file


def _cli_config(tmp_path, model_dir, max_steps: int):
    cfg = Config()
    cfg.model.name_or_path, cfg.model.dtype, cfg.model.lora_r, cfg.model.lora_alpha = str(model_dir), "float32", 4, 8
    cfg.data.source, cfg.data.train_size, cfg.data.eval_size = "builtin:decimal_compare", 16, 4
    cfg.rewards.names, cfg.rewards.weights = PRESETS, []
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.max_completion_length, a.max_steps = 4, 2, 12, max_steps
    cfg.run.output_dir, cfg.run.run_name, cfg.run.engine = str(tmp_path / "runs"), "trl_rewards", "hf"
    cfg.run.log_samples = 8  # every completion of a step, with its rewards
    path = tmp_path / "run.yaml"
    cfg.save(path)
    return path, cfg


@pytest.mark.parametrize("case", list(CASES))
def test_rewards_file_trains_and_scores_as_called_directly(tiny_model_dir, tmp_path, capsys, case):
    from core.runs.folders import RunDir
    from scripts.train import main

    code, names = CASES[case]
    steps = 2 if case == "notebook_set" else 1  # the notebook set trains as written
    cfg_path, cfg = _cli_config(tmp_path, tiny_model_dir, steps)
    rewards_file = tmp_path / "my_rewards.py"
    rewards_file.write_text(code)
    assert main(["--config", str(cfg_path), "--rewards-file", str(rewards_file)]) == 0
    err = capsys.readouterr().err
    assert ("rewards: custom reward 'correctness' replaces the preset of that name" in err) == (
        case == "named_like_a_preset")

    run = RunDir(tmp_path / "runs" / "trl_rewards")
    metrics = run.read_metrics()
    assert len(metrics) == steps
    for m in metrics:
        assert {f"rewards/{name}/mean" for name in names} <= set(m)
    samples = run.read_samples()
    assert len(samples) == 8 * steps
    prompts = [build_messages(s["question"], cfg.data.system_prompt) for s in samples]
    want = direct(code, CUSTOM[case], prompts, messages(s["completion"] for s in samples),
                  [s["answer"] for s in samples])
    for name, values in want.items():
        assert [s["rewards"][name] for s in samples] == pytest.approx(values, abs=1e-6), name
    if case == "async":
        assert len(set(want["length_judge"])) > 1  # completions of different lengths: a real comparison
