"""Reward presets, the registry and RewardSet's weighted scoring (no model, no GPU)."""

from __future__ import annotations

import math

import pytest

from core.config import RewardsConfig
from core.rewards.registry import REGISTRY, RewardSet, RewardSpec, get_reward, list_rewards
from core.rewards.base import RewardError, check_rewards
from reward_presets import PRESET_NAMES
from reward_presets._common import completion_text, extract_answer, parse_number
from reward_presets.correctness import correctness
from reward_presets.countdown_equation import countdown_equation, evaluate
from reward_presets.exact_match import exact_match
from reward_presets.format_soft import format_soft
from reward_presets.format_strict import format_strict
from reward_presets.integer_answer import integer_answer
from reward_presets.length_penalty import DEFAULT_BUDGET_CHARS, length_penalty
from reward_presets.math_equivalence import math_equivalence
from reward_presets.numeric_match import numeric_match
from reward_presets.reflection_bonus import REFLECTION_PHRASES, count_reflections, reflection_bonus
from reward_presets.xml_tag_count import xml_tag_count

BRIEF_PRESETS = {
    "format_strict", "format_soft", "xml_tag_count", "integer_answer", "correctness", "exact_match",
    "numeric_match", "math_equivalence", "length_penalty", "reflection_bonus", "countdown_equation",
}


def conversational(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.fixture(params=["string", "conversational"])
def form(request):
    """Completions as plain strings, or as TRL's conversational message lists."""
    return (lambda t: t) if request.param == "string" else conversational


def score(fn, form, texts, **columns):
    return fn(prompts=["question"] * len(texts), completions=[form(t) for t in texts], **columns)


# ---------------------------------------------------------------------------
# Shared helpers


def test_completion_text_reads_every_form():
    assert completion_text("abc") == "abc"
    assert completion_text(conversational("abc")) == "abc"
    assert completion_text({"role": "assistant", "content": "abc"}) == "abc"
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "ab"
    two = [
        {"role": "assistant", "content": "first"},
        {"role": "tool", "content": "x"},
        {"role": "assistant", "content": "second"},
    ]
    assert completion_text(two) == "first\nsecond"
    assert completion_text([{"content": "no role"}]) == "no role"
    assert completion_text(None) == ""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>1</answer> then <answer>\n 2 \n</answer>", "2"),  # the last answer tag
        ("<think>x</think><answer></answer>", ""),  # an empty answer tag is an empty answer
        ("Natalia sold 48 clips...\n#### 72", "72"),  # GSM8K
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),  # boxed, nested braces
        ("<answer>3</answer> and \\boxed{4}", "3"),  # the tag wins over boxed
        ("<answer>42", None),  # unclosed tag
        ("\\boxed{unclosed", None),
        ("the answer is 42", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("1,234", 1234), ("$5", 5), ("3.50", 3.5), ("1/2", 0.5), ("-7", -7), ("1e3", 1000), ("50%", 50), (".5", 0.5)],
)
def test_parse_number(text, expected):
    assert parse_number(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["x+1", "1,23", "", "five", "1/0", "\\frac{1}{2}"])
def test_parse_number_refuses_non_numbers(text):
    assert parse_number(text) is None


# ---------------------------------------------------------------------------
# Format presets


def test_format_strict(form):
    right = [
        "<think>6*7 = 42</think>\n<answer>42</answer>",
        "  <reasoning>\n6*7\n</reasoning><answer>42</answer>\n\n",
    ]
    wrong = [
        "Sure. <think>6*7</think><answer>42</answer>",  # text before
        "<think>6*7</think><answer>42</answer> Hope that helps!",  # text after
        "<think>6*7</think> so <answer>42</answer>",  # text between
        "<answer>42</answer><think>6*7</think>",  # wrong order
        "<think>6*7</reasoning><answer>42</answer>",  # mismatched tags
        "<think>a</think><think>b</think><answer>42</answer>",  # two think blocks
        "<think>6*7</think><answer>4</answer><answer>2</answer>",  # two answers
        "<think>6*7</think><answer>42",  # unclosed
        "42",
        "",
    ]
    assert score(format_strict, form, right + wrong) == [1.0] * len(right) + [0.0] * len(wrong)


def test_format_soft(form):
    right = [
        "Sure. <think>6*7</think> so <answer>42</answer> Hope that helps!",
        "<reasoning>6*7</reasoning><answer>42</answer>",
    ]
    wrong = ["<answer>42</answer><think>6*7</think>", "<think>6*7<answer>42</answer>", "<think>6*7</think> 42", "42"]
    assert score(format_soft, form, right + wrong) == [1.0] * len(right) + [0.0] * len(wrong)


def test_xml_tag_count(form):
    texts = [
        "<think>6*7</think>\n<answer>42</answer>",  # all four tags: 1.0
        "<reasoning>6*7</reasoning><answer>42</answer>",  # reasoning counts as think
        "<think>6*7</think><answer>42</answer>abc",  # 3 trailing characters: -0.003
        "<think>6*7</think><answer>42</answer>" + "x" * 1000,  # trailing penalty capped at 0.25
        "<think>6*7<answer>42</answer>",  # no </think>
        "<think>6*7</think><answer>4</answer><answer>2</answer>",  # answer tags twice: no credit for them
        "<think>a</think><think>b</think>",  # think tags twice, no answer
        "42",
    ]
    assert score(xml_tag_count, form, texts) == pytest.approx([1.0, 1.0, 0.997, 0.75, 0.75, 0.5, 0.0, 0.0])


# ---------------------------------------------------------------------------
# Answer presets


def test_integer_answer(form):
    right = ["<answer>42</answer>", "<answer> -7 </answer>", "<answer>1,234</answer>", "so\n#### 72"]
    wrong = ["<answer>42.5</answer>", "<answer>12 apples</answer>", "<answer>1,23</answer>", "<answer></answer>", "42"]
    assert score(integer_answer, form, right + wrong) == [1.0] * len(right) + [0.0] * len(wrong)


CORRECTNESS_CASES = [
    # (completion, reference, correctness) -- the comment says which check decides
    ("<answer>42</answer>", "42", 1.0),  # exact
    ("<answer>Paris.</answer>", "paris", 1.0),  # exact after normalisation
    ("<answer>1,234</answer>", "1234", 1.0),  # numeric: thousands comma
    ("<answer>$5</answer>", "5", 1.0),  # numeric: currency
    ("<answer>3.50</answer>", "3.5", 1.0),  # numeric: trailing zero
    ("<answer>1/2</answer>", "0.5", 1.0),  # numeric: fraction
    ("<answer>1000000.5</answer>", "1000000", 1.0),  # numeric: within relative 1e-6
    ("<answer>\\frac{1}{2}</answer>", "0.5", 1.0),  # math-verify
    ("<answer>\\dfrac{3}{4}</answer>", "\\frac{3}{4}", 1.0),  # math-verify, LaTeX both sides
    ("reasoning...\n#### 72", "Natalia sold 48 clips...\n#### 72", 1.0),  # GSM8K both sides
    ("<think>...</think>\\boxed{7}", "7", 1.0),  # boxed fallback
    ("<answer>41</answer>", "42", 0.0),  # wrong
    ("<answer>1.00001</answer>", "1", 0.0),  # outside relative 1e-6
    ("<answer>Lyon</answer>", "paris", 0.0),
    ("<answer>\\frac{1}{3}</answer>", "0.5", 0.0),
    ("<answer>42", "42", 0.0),  # malformed: unclosed tag, nothing extracted
    ("I think it is 42", "42", 0.0),  # no answer marked
    ("<answer>9^{9^{9^9}}</answer>", "5", 0.0),  # refused before sympy could hang
]


def test_correctness(form):
    texts, refs, expected = zip(*CORRECTNESS_CASES)
    assert score(correctness, form, texts, answer=list(refs)) == list(expected)


def test_exact_numeric_math_each_decide_their_own_cases(form):
    texts = ["<answer>Paris</answer>", "<answer>1/2</answer>", "<answer>\\frac{1}{2}</answer>", "<answer>3</answer>"]
    refs = ["paris", "0.5", "0.5", "4"]
    assert score(exact_match, form, texts, answer=refs) == [1.0, 0.0, 0.0, 0.0]
    assert score(numeric_match, form, texts, answer=refs) == [0.0, 1.0, 0.0, 0.0]
    assert score(math_equivalence, form, texts, answer=refs)[1:] == [1.0, 1.0, 0.0]
    assert score(correctness, form, texts, answer=refs) == [1.0, 1.0, 1.0, 0.0]


def test_answer_presets_take_numeric_reference_values():
    assert correctness(prompts=["q"], completions=["<answer>7</answer>"], answer=[7]) == [1.0]


def test_answer_presets_name_a_missing_column():
    with pytest.raises(KeyError, match="correctness needs the dataset column 'answer'.*got columns: target"):
        correctness(prompts=["q"], completions=["<answer>7</answer>"], target=[7])


def test_countdown_equation(form):
    rows = [
        # (answer, numbers, target, expected)
        ("(6 - 2) * 6", [2, 6, 6], 24, 1.0),
        ("(6 - 2) * 6 = 24", [2, 6, 6], 24, 1.0),  # "expr = target" judged on its left side
        ("3 * 7 + 5", [3, 5, 7, 9], 26, 1.0),  # unused numbers are fine
        ("10 / 3", [10, 3], 3.3333333, 1.0),  # within 1e-6
        ("25 - 1 × 1", [25, 1, 1], 24, 1.0),  # the multiplication sign
        ("6 * 6 - 2", [2, 6], 34, 0.0),  # 6 used twice, given once
        ("2 * 12", [2, 6, 6], 24, 0.0),  # 12 not given
        ("(6 - 2) * 6", [2, 6, 6], 25, 0.0),  # wrong value
        ("2 ** 3", [2, 3], 8, 0.0),  # power is not allowed
        ("__import__('os').getcwd()", [1], 1, 0.0),  # code is never run
        ("6 / (2 - 2)", [6, 2, 2], 1, 0.0),  # division by zero
        ("6 * (2", [6, 2], 12, 0.0),  # malformed
        ("True * 24", [24], 24, 0.0),  # True is not a number here
    ]
    texts = [f"<think>...</think><answer>{a}</answer>" for a, *_ in rows]
    got = score(countdown_equation, form, texts, numbers=[r[1] for r in rows], target=[r[2] for r in rows])
    assert got == [r[3] for r in rows]
    # a CSV-loaded row gives the numbers as text
    from_csv = countdown_equation(
        prompts=["q"], completions=["<answer>3*7+5</answer>"], numbers=["[3, 5, 7]"], target=["26"]
    )
    assert from_csv == [1.0]


def test_countdown_evaluate_refuses_names_calls_and_attributes():
    for expression in ["x + 1", "print(1)", "(1).real", "[1][0]", "1 if 1 else 2"]:
        with pytest.raises(ValueError, match="not allowed in an equation"):
            evaluate(expression)


# ---------------------------------------------------------------------------
# Shaping presets


def test_length_penalty(form):
    texts = ["x" * 5, "x" * 10, "x" * 15, "x" * 40]
    assert score(length_penalty, form, texts, length_budget=10) == [0.0, 0.0, -0.5, -1.0]
    assert score(length_penalty, form, texts, length_budget=[4, 4, 30, 30]) == [-0.25, -1.0, 0.0, -1 / 3]
    default = score(length_penalty, form, ["x" * DEFAULT_BUDGET_CHARS, "x" * (DEFAULT_BUDGET_CHARS * 3 // 2)])
    assert default == [0.0, -0.5]
    # the budget comes from the data's column only (no field sets it): an empty cell is the default too
    long = "x" * (DEFAULT_BUDGET_CHARS * 3 // 2)
    assert score(length_penalty, form, [long, long], length_budget=[3000, None]) == [0.0, -0.5]
    assert REGISTRY["length_penalty"].description == (
        "0 up to a per-question `length_budget` column in the data, in characters (else 1000); -1 at twice the budget.")


def test_reflection_phrases_are_exported_for_the_aha_panel():
    for phrase in ["wait", "let me check", "let me verify", "on second thought", "hmm", "actually"]:
        assert phrase in REFLECTION_PHRASES
    assert count_reflections("Wait. WAIT! hmmm... On second thought, let me verify.") == 5
    assert count_reflections("I awaited the actuality of hmmingbirds") == 0  # whole words only
    assert count_reflections("That\u2019s not right") == 1  # curly apostrophe


def test_reflection_bonus(form):
    texts = [
        "<think>6*7=43. Wait, let me check: 6*7=42.</think><answer>42</answer>",  # 2 phrases
        "<think>" + "wait. " * 9 + "</think><answer>42</answer>",  # capped at 0.5
        "<think>6*7=42</think><answer>42</answer>",  # no reflection
        "Wait, hmm, actually <answer>42</answer>",  # outside any think block
        "<think>fine</think><answer>wait</answer>",  # in the answer, not the think block
    ]
    assert score(reflection_bonus, form, texts) == [0.2, 0.5, 0.0, 0.0, 0.0]


def test_presets_ignore_the_extra_keywords_trl_passes():
    # GRPOTrainer also passes completion_ids, trainer_state, log_extra, log_metric
    extra = dict(completion_ids=[[1, 2, 3]], trainer_state=object(), log_extra=print, log_metric=print)
    columns = dict(answer=["42"], numbers=[[6, 7]], target=[42])
    for spec in list_rewards():
        completions = [conversational("<think>6*7</think><answer>42</answer>")]
        values = spec.fn(prompts=[conversational("q")], completions=completions, **columns, **extra)
        assert len(values) == 1 and isinstance(values[0], float), spec.name


# ---------------------------------------------------------------------------
# Registry


def test_registry_lists_every_preset_with_a_description():
    assert set(REGISTRY) == BRIEF_PRESETS == set(PRESET_NAMES)
    assert [s.name for s in list_rewards()] == list(PRESET_NAMES)
    for spec in list_rewards():
        assert spec.source == "preset"
        assert spec.fn.__name__ == spec.name
        assert spec.description and "\n" not in spec.description and len(spec.description) < 120, spec.name
        assert isinstance(spec.default_weight, float)
    weights = {s.name: s.default_weight for s in list_rewards()}
    assert weights["correctness"] == 1.0
    assert weights["format_strict"] == weights["format_soft"] == weights["xml_tag_count"] == 0.5
    assert weights["length_penalty"] == 0.5
    assert weights["reflection_bonus"] == 0.2


def test_every_preset_has_a_doctest_example():
    for spec in list_rewards():
        assert ">>> " + spec.name + "(" in spec.fn.__doc__, spec.name


def test_get_reward_unknown_names_the_known_ones():
    with pytest.raises(RewardError) as info:
        get_reward("corectness")
    assert info.value.reward_name == "corectness"
    assert "unknown reward 'corectness'" in str(info.value)
    assert "correctness" in str(info.value).split("known:")[1]


def test_default_config_builds():
    rewards = RewardSet.from_config(RewardsConfig())
    assert rewards.names == ["correctness", "format_strict", "xml_tag_count"]
    assert rewards.weights == [1.0, 0.5, 0.5]  # each preset's default weight


# ---------------------------------------------------------------------------
# RewardSet


GOOD = "<think>6*7=42</think>\n<answer>42</answer>"


def test_weighted_total_with_explicit_weights(form):
    cfg = RewardsConfig(names=["format_strict", "correctness", "length_penalty"], weights=[0.5, 2.0, 1.0])
    with RewardSet.from_config(cfg) as rewards:
        completions = [
            form(GOOD),  # strict 1, correct 1, inside the budget
            form("Sure! <think>6*7</think><answer>41</answer>"),  # 0, 0
            form(GOOD + " " + "x" * 33),  # 0 (trailing text), 1, 75 chars: 25 over a budget of 50, -0.5
        ]
        assert len(GOOD) == 41
        n = len(completions)
        result = rewards(["q"] * n, completions, {"answer": ["42"] * n, "length_budget": [50] * n})
    assert result.per_reward == {
        "format_strict": [1.0, 0.0, 0.0],
        "correctness": [1.0, 0.0, 1.0],
        "length_penalty": [0.0, 0.0, -0.5],
    }
    assert result.total == pytest.approx([0.5 * 1 + 2.0 * 1, 0.0, 2.0 * 1 + 1.0 * -0.5])


def test_default_weights_when_weights_empty(form):
    rewards = RewardSet.from_config(RewardsConfig(names=["correctness", "reflection_bonus"], weights=[]))
    assert rewards.weights == [1.0, 0.2]
    result = rewards(["q"], [form("<think>43? Wait, 42.</think><answer>42</answer>")], {"answer": ["42"]})
    assert result.per_reward == {"correctness": [1.0], "reflection_bonus": [0.1]}
    assert result.total == pytest.approx([1.0 + 0.2 * 0.1])


def test_columns_named_prompt_or_completion_are_not_passed():
    rewards = RewardSet.from_config(RewardsConfig(names=["correctness"]))
    result = rewards(["q"], [GOOD], {"answer": ["42"], "prompt": ["q"], "completion": ["x"]})
    assert result.total == [1.0]


def test_batch_shape_mistakes_are_caller_errors():
    rewards = RewardSet.from_config(RewardsConfig(names=["correctness"]))
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        rewards(["q", "q"], [GOOD], {"answer": ["42"]})
    with pytest.raises(ValueError, match="column 'answer' has 2 values for 1 completions"):
        rewards(["q"], [GOOD], {"answer": ["42", "42"]})


def _spec(fn) -> RewardSpec:
    return RewardSpec(fn.__name__, fn, "test", 1.0)


def returns_none(prompts, completions, **kwargs):
    return None


def returns_none_inside(prompts, completions, **kwargs):
    return [1.0, None]


def returns_nan(prompts, completions, **kwargs):
    return [1.0, float("nan")]


def returns_inf(prompts, completions, **kwargs):
    return [float("-inf"), 1.0]


def returns_a_string(prompts, completions, **kwargs):
    return "1.0, 0.0"


def returns_strings(prompts, completions, **kwargs):
    return ["1.0", "0.0"]


def returns_too_few(prompts, completions, **kwargs):
    return [1.0]


def raises(prompts, completions, **kwargs):
    return [1.0 / 0 for _ in completions]


@pytest.mark.parametrize(
    "fn, message",
    [
        (returns_none, "returned None instead of a list of 2 floats"),
        (returns_none_inside, "returned None at index 1"),
        (returns_nan, "returned NaN at index 1"),
        (returns_inf, "returned -inf at index 0"),
        (returns_a_string, "returned a string ('1.0, 0.0') instead of a list of 2 floats"),
        (returns_strings, "returned a string ('1.0') at index 0"),
        (returns_too_few, "returned 1 values for 2 completions"),
        (raises, "raised ZeroDivisionError: float division by zero"),
    ],
)
def test_bad_reward_output_is_a_reward_error_naming_the_function(fn, message):
    rewards = RewardSet([get_reward("format_soft"), _spec(fn)])
    with pytest.raises(RewardError) as info:
        rewards(["q", "q"], [GOOD, GOOD], {})
    assert info.value.reward_name == fn.__name__
    assert f"reward '{fn.__name__}'" in str(info.value)
    assert message in str(info.value)
    if fn is raises:
        assert "1.0 / 0" in info.value.traceback_text


def test_missing_column_is_a_reward_error_naming_the_function():
    rewards = RewardSet.from_config(RewardsConfig(names=["countdown_equation"]))
    message = "reward 'countdown_equation' raised MissingColumnError: countdown_equation needs the dataset column 'numbers'"
    with pytest.raises(RewardError, match=message) as info:
        rewards(["q"], [GOOD], {"answer": ["42"]})
    assert info.value.reward_name == "countdown_equation"


def test_check_rewards_accepts_numpy_like_and_ints():
    class ArrayLike:
        def tolist(self):
            return [1, 0]

    assert check_rewards("r", ArrayLike(), 2) == [1.0, 0.0]
    assert check_rewards("r", (x for x in [1, 2.5]), 2) == [1.0, 2.5]


def test_reward_set_rejects_a_name_twice_and_wrong_weight_count():
    with pytest.raises(RewardError, match="listed twice"):
        RewardSet([get_reward("correctness"), get_reward("correctness")])
    with pytest.raises(RewardError, match="1 weights for 2 rewards"):
        RewardSet([get_reward("correctness"), get_reward("format_soft")], weights=[1.0])


# A reward function written for TRL's GRPOTrainer, as a user would paste it: conversational
# completions indexed as TRL documents them, a dataset column by name, a print.
TRL_STYLE_CODE = '''
import re

def extract_xml_answer(text: str) -> str:
    return text.split("<answer>")[-1].split("</answer>")[0].strip()

def correctness_reward_func(prompts, completions, answer, **kwargs) -> list[float]:
    """2.0 for the right answer."""
    responses = [completion[0]["content"] for completion in completions]
    question = prompts[0][-1]["content"]
    extracted = [extract_xml_answer(r) for r in responses]
    print("Question:", question, "Extracted:", extracted[0])
    return [2.0 if r == a else 0.0 for r, a in zip(extracted, answer)]

def strict_format_reward_func(completions, **kwargs) -> list[float]:
    pattern = r"^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>\\n$"
    responses = [completion[0]["content"] for completion in completions]
    return [0.5 if re.match(pattern, r, flags=re.DOTALL) else 0.0 for r in responses]
'''


def test_trl_style_functions_run_unchanged_in_process_and_sandboxed():
    namespace: dict = {}
    exec(TRL_STYLE_CODE, namespace)
    prompts = [[{"role": "system", "content": "Think."}, {"role": "user", "content": "6*7?"}]] * 2
    completions = [
        conversational("<think>\n6*7\n</think>\n<answer>\n42\n</answer>\n"),
        conversational("<answer>41</answer>"),
    ]
    columns = {"answer": ["42", "42"], "completion_ids": [[1, 2], [3]]}

    in_process = RewardSet(
        [_spec(namespace["correctness_reward_func"]), _spec(namespace["strict_format_reward_func"])], weights=[1.0, 1.0]
    )
    expected = {"correctness_reward_func": [2.0, 0.0], "strict_format_reward_func": [0.5, 0.0]}
    assert in_process(prompts, completions, columns).per_reward == expected

    cfg = RewardsConfig(names=["format_soft"], custom_code=TRL_STYLE_CODE, custom_timeout_s=20)
    with RewardSet.from_config(cfg) as sandboxed:
        assert sandboxed.names == ["format_soft", "correctness_reward_func", "strict_format_reward_func"]
        assert sandboxed.weights == [0.5, 1.0, 1.0]
        assert [s.source for s in sandboxed.specs] == ["preset", "custom", "custom"]
        assert sandboxed.specs[1].description == "2.0 for the right answer."
        result = sandboxed(prompts, completions, columns)
    assert result.per_reward == {"format_soft": [1.0, 0.0], **expected}
    assert result.total == pytest.approx([0.5 + 2.0 + 0.5, 0.0])
    assert not math.isnan(sum(result.total))


def test_correctness_is_the_same_outside_the_main_thread():
    # math-verify's timeouts use signals, which only the main thread may set; the trainer may
    # score in another thread.
    import threading

    texts, refs, expected = zip(*CORRECTNESS_CASES)
    got = []
    thread = threading.Thread(target=lambda: got.append(correctness(["q"] * len(texts), list(texts), answer=list(refs))))
    thread.start()
    thread.join(60)
    assert got == [list(expected)]


def test_custom_code_errors_surface_from_from_config():
    with pytest.raises(RewardError, match="failed to load: NameError"):
        RewardSet.from_config(RewardsConfig(names=["correctness"], custom_code="undefined_name + 1"))


def test_a_custom_function_with_a_presets_name_replaces_the_preset():
    """Code written for TRL often names a function `correctness`: it takes the preset's place and
    weight, and a note says so (it was refused: "rename the function")."""
    mine = "def correctness(prompts, completions, **kwargs):\n    return [0.25 for _ in completions]\n"
    cfg = RewardsConfig(names=["correctness", "format_soft"], weights=[2.0, 0.5], custom_code=mine)
    with RewardSet.from_config(cfg) as rewards:
        assert rewards.names == ["correctness", "format_soft"]
        assert [s.source for s in rewards.specs] == ["custom", "preset"]
        assert rewards.weights == [2.0, 0.5]
        assert rewards.notes == ["custom reward 'correctness' replaces the preset of that name (weight 2)"]
        result = rewards(["q"], [GOOD], {"answer": ["42"]})
    assert result.per_reward == {"correctness": [0.25], "format_soft": [1.0]}  # the preset would give 1.0
    assert result.total == [2.0 * 0.25 + 0.5 * 1.0]
    # not selected: the custom one runs under the preset's name, weight 1.0, and a note says so
    with RewardSet.from_config(RewardsConfig(names=["format_soft"], custom_code=mine)) as rewards:
        assert rewards.names == ["format_soft", "correctness"] and rewards.weights == [0.5, 1.0]
        assert rewards.notes == ["custom reward 'correctness' is used under the name of a preset that is not selected"]


def test_trl_style_reward_reads_solution_beside_answer():
    """TRL's rewards (trl.rewards.accuracy_reward) read the reference from `solution`: it is
    passed as an alias of our `answer` column, unless the data has its own `solution`."""

    def solution_match(prompts, completions, solution, **kwargs):
        return [1.0 if completion_text(c).strip() == s else 0.0 for c, s in zip(completions, solution)]

    rewards = RewardSet([_spec(solution_match)])
    result = rewards(["q1", "q2"], ["9.9", "7"], {"answer": ["9.9", "8"]})
    assert result.per_reward["solution_match"] == [1.0, 0.0]
    own = rewards(["q1", "q2"], ["9.9", "7"], {"answer": ["9.9", "8"], "solution": ["1", "7"]})
    assert own.per_reward["solution_match"] == [0.0, 1.0]


def test_math_equal_off_the_main_thread_keeps_math_verify_quiet(caplog):
    """Off the main thread math-verify runs without its signal timeouts (the worker's time limit is
    ours) and warns once per process that it does; the app's console is spared it, the answer is not."""
    import logging
    import threading

    import math_verify.grader
    import math_verify.parser

    from reward_presets._common import math_equal

    math_verify.parser.TIMEOUT_WARNING_SHOWN = math_verify.grader.TIMEOUT_WARNING_SHOWN = False  # as at a start
    got = []
    with caplog.at_level(logging.WARNING):
        worker = threading.Thread(target=lambda: got.append(math_equal("\\frac{1}{2}", "0.5")))
        worker.start()
        worker.join()
    assert got == [True]
    assert not [r for r in caplog.records if "Timeout is disabled" in r.getMessage()], caplog.text
