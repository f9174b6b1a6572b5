"""core.data: every source format, every user-data error, built-in tasks, prompts and preview.

All offline and on the CPU: files live in tmp_path, the tokenizer is trained here on a few
sentences, and the hub path is only checked for a clean error with the hub switched off.
"""

from __future__ import annotations

import ast
import operator
import re
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import pandas as pd
import pytest

from core.config import DataConfig
from core.data import (
    BUILTIN_TASKS,
    DEFAULT_CHAT_TEMPLATE,
    DataError,
    build_messages,
    load_builtin,
    load_table,
    load_task_data,
    normalise_answer,
    preview,
    render_prompt,
    split_names,
)

ROWS = [
    {"prompt": "What is 2 + 2?", "answer": "4", "level": 1},
    {"prompt": "What is 3 * 3?", "answer": "9", "level": 2},
    {"prompt": "Which is bigger, 9.11 or 9.9?", "answer": "9.9", "level": 3},
]


def _cfg(source, **kw) -> DataConfig:
    return DataConfig(source=str(source), **{"eval_size": 1, "system_prompt": "", **kw})


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------
def test_csv_keeps_cells_as_text_with_quoted_commas_and_newlines(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(
        'prompt,answer\n"Add 1,000 and 7,\nthen say it",1007\nPad 7,007\nRound 9.90,9.90\n', encoding="utf-8"
    )
    table = load_table(path)
    assert list(table.columns) == ["prompt", "answer"]
    assert table["prompt"].tolist() == ["Add 1,000 and 7,\nthen say it", "Pad 7", "Round 9.90"]
    assert table["answer"].tolist() == ["1007", "007", "9.90"]  # text, not 7 or 9.9


def test_tsv_and_utf8_bom(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_bytes("\ufeffprompt\tanswer\ncafé?\toui\n".encode("utf-8"))
    assert load_table(path).to_dict("records") == [{"prompt": "café?", "answer": "oui"}]


def test_jsonl_skips_blank_lines_and_keeps_u2028_inside_strings(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"prompt": "a\u2028b", "answer": 1}\n\n{"prompt": "c", "answer": 2}\n', encoding="utf-8")
    table = load_table(path)
    assert table["prompt"].tolist() == ["a\u2028b", "c"]
    assert table["answer"].tolist() == [1, 2]


@pytest.mark.parametrize(
    "text",
    [
        '[{"prompt": "p", "answer": "a"}]',
        '{"version": 2, "data": [{"prompt": "p", "answer": "a"}]}',
        '{"data": [{"prompt": "p", "answer": "a"}, {"prompt": "q", "answer": "b"}]}',  # wrapped alone: not a column
        '{"prompt": ["p"], "answer": ["a"]}',
        '{"prompt": "p", "answer": "a"}\n{"prompt": "p", "answer": "a"}\n',  # JSON Lines named .json
    ],
)
def test_json_shapes(tmp_path, text):
    path = tmp_path / "q.json"
    path.write_text(text)
    assert load_table(path).to_dict("records")[0] == {"prompt": "p", "answer": "a"}


def test_json_column_form_keeps_a_column_of_objects(tmp_path):
    """Columns of equal length, one of them objects: the column form, all three kept (not the wrapped form)."""
    path = tmp_path / "q.json"
    path.write_text('{"question": ["a", "b"], "answer": ["1", "2"], "meta": [{"x": 1}, {"x": 2}]}')
    table = load_table(path)
    assert list(table.columns) == ["question", "answer", "meta"] and table["meta"].tolist() == [{"x": 1}, {"x": 2}]


def test_json_errors_name_line_and_shape(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('[{"prompt": "p",\n  "answer": "a",}]')
    with pytest.raises(DataError, match=r"q\.json, line 2, column 17: not valid JSON \(Expecting property name"):
        load_table(path)
    path.write_text('[{"prompt": "p"}, 3]')
    with pytest.raises(DataError, match=r"q\.json: item 1 is a number, expected an object"):
        load_table(path)


def test_parquet_lists_come_back_as_plain_python(tmp_path):
    path = tmp_path / "q.parquet"
    pd.DataFrame({"prompt": ["make 10", "make 12"], "answer": [10, 12], "numbers": [[2, 5], [3, 4]]}).to_parquet(path)
    assert load_table(path)["answer"].tolist() == [10, 12]
    task = load_task_data(_cfg(path, eval_size=0))
    by_answer = {r["answer"]: r for r in task.train}
    assert by_answer["10"]["numbers"] == [2, 5] and type(by_answer["10"]["numbers"][0]) is int
    assert task.columns == ["prompt", "answer", "numbers"]


def test_dataframe_is_copied():
    frame = pd.DataFrame(ROWS)
    table = load_table(frame)
    table.loc[0, "prompt"] = "changed"
    assert frame.loc[0, "prompt"] == "What is 2 + 2?"
    assert table["answer"].tolist() == ["4", "9", "9.9"]


def test_datasets_folders_single_and_dict(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS),
            "test": datasets.Dataset.from_list([{"prompt": "Held?", "answer": "yes", "level": 9}]),
        }
    ).save_to_disk(str(tmp_path / "two"))

    assert load_table(tmp_path / "one")["prompt"].tolist() == [r["prompt"] for r in ROWS]
    assert split_names(tmp_path / "one") == []
    assert sorted(split_names(tmp_path / "two")) == ["test", "train"]
    assert load_table(tmp_path / "two", split="test")["prompt"].tolist() == ["Held?"]
    with pytest.raises(DataError, match=r"no split 'validation'.*'train'"):
        load_table(tmp_path / "two", split="validation")

    # A named held-out split is used as it is; no training row is carved off.
    task = load_task_data(_cfg(tmp_path / "two", eval_split="test", eval_size=5))
    assert [r["question"] for r in task.eval] == ["Held?"]
    assert sorted(r["question"] for r in task.train) == sorted(r["prompt"] for r in ROWS)
    assert task.train[0]["level"] in (1, 2, 3)

    # A held-out split that is not there: carve instead, and say so.
    task = load_task_data(_cfg(tmp_path / "one", eval_split="test", eval_size=1))
    assert len(task.eval) == 1 and len(task.train) == 2
    assert any("no split 'test'" in n for n in task.notes)


# ---------------------------------------------------------------------------
# Errors that name the problem
# ---------------------------------------------------------------------------
def test_csv_unclosed_quote_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('prompt,answer\nok,1\n"never closed,2\nmore,3\n')
    with pytest.raises(DataError) as e:
        load_table(path)
    assert "bad.csv, line 3" in str(e.value) and "never closed" in str(e.value)


def test_csv_stray_quote_and_extra_field_name_their_lines(tmp_path):
    path = tmp_path / "stray.csv"
    path.write_text('prompt,answer\n"x"y,1\n')
    with pytest.raises(DataError, match=r"stray\.csv, line 2: not valid CSV .*doubled"):
        load_table(path)
    path = tmp_path / "wide.csv"
    path.write_text("prompt,answer\na,1\nb,2,3\n")
    with pytest.raises(DataError, match=r"wide\.csv, line 3: 3 fields but the header has 2"):
        load_table(path)


def test_invalid_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": }\n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: not valid JSON \(Expecting value at column 27\)"):
        load_table(path)
    path.write_text('{"prompt": "a", "answer": "1"}\n["not", "an", "object"]\n')
    with pytest.raises(DataError, match=r"line 2: expected a JSON object .*got a list"):
        load_table(path)


@pytest.mark.parametrize("name, content", [("e.csv", b""), ("e.jsonl", b"\n \n"), ("e.parquet", b""), ("e.json", b"")])
def test_empty_files(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"{re.escape(name)}: the file is empty"):
        load_table(tmp_path / name)


def test_header_only_csv(tmp_path):
    (tmp_path / "h.csv").write_text("prompt,answer\n")
    with pytest.raises(DataError, match="header but no rows"):
        load_table(tmp_path / "h.csv")


def test_non_utf8_names_the_byte_offset(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("prompt,answer\ncafé,1\n".encode("latin-1"))  # é is 0xe9 at byte 17
    with pytest.raises(DataError) as e:
        load_table(path)
    assert "latin.csv: not UTF-8 text: byte 0xe9 at byte offset 17 (line 2)" in str(e.value)


def test_unsupported_missing_and_oversized_files(tmp_path):
    (tmp_path / "q.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=r"q\.xlsx: unsupported file type '\.xlsx'"):
        load_table(tmp_path / "q.xlsx")
    with pytest.raises(DataError, match="nope.csv: no such file or folder"):
        load_table(tmp_path / "nope.csv")
    (tmp_path / "big.csv").write_text("prompt,answer\n" + "x,1\n" * 100)
    with pytest.raises(DataError, match=r"big\.csv: the file is 0\.0 MB, over the 0\.0 MB limit \(max_bytes\)"):
        load_table(tmp_path / "big.csv", max_bytes=100)
    assert len(load_table(tmp_path / "big.csv", max_bytes=10_000)) == 100


def test_corrupt_parquet(tmp_path):
    (tmp_path / "c.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"c\.parquet: not a readable Parquet file"):
        load_table(tmp_path / "c.parquet")


def test_missing_column_lists_the_available_ones(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("Question,answer\nx,1\n")
    with pytest.raises(DataError) as e:
        load_task_data(_cfg(path, prompt_column="question"))
    msg = str(e.value)
    assert "no column 'question' for the question" in msg
    assert "Available columns: 'Question', 'answer'" in msg and "Did you mean 'Question'?" in msg


def test_semicolon_file_gets_a_hint(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("prompt;answer\nx;1\n")
    with pytest.raises(DataError, match="separated by something other than commas"):
        load_task_data(_cfg(path))


def test_unknown_hub_id_offline_is_a_clean_error(monkeypatch):
    import datasets
    import huggingface_hub.constants

    # Offline mode answers at once; with the network merely unreachable it retries for ~25 s.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as e:
        load_table("nobody-here/no-such-dataset")
    msg = str(e.value)
    assert msg.startswith("hub dataset 'nobody-here/no-such-dataset', split 'train': could not load it")
    assert "internet connection" in msg


# ---------------------------------------------------------------------------
# Columns, answers, split
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Natalia sold 48 / 2 = 24 clips.\n#### 72", "72"),
        ("Total is 1,000 + 234.\n####  1,234 ", "1234"),
        ("a #### b #### 1,234,567", "1234567"),
        ("#### 3,14", "3,14"),  # not a thousands separator
        ("  9.9 ", "9.9"),
    ],
)
def test_normalise_answer(raw, expected):
    assert normalise_answer(raw) == expected


def test_gsm8k_answers_and_column_mapping(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(
        '{"question": "Q1?", "answer": "2 * 617 = 1234\\n#### 1,234"}\n'
        '{"question": "Q2?", "answer": "#### 5"}\n'
    )
    task = load_task_data(_cfg(path, prompt_column="question", eval_size=0))
    rows = {r["question"]: r for r in task.train}
    assert rows["Q1?"]["answer"] == "1234"
    assert rows["Q1?"]["answer_raw"] == "2 * 617 = 1234\n#### 1,234"
    assert rows["Q2?"]["answer"] == "5"


def test_empty_rows_are_dropped_and_none_left_is_an_error(tmp_path):
    frame = pd.DataFrame({"prompt": ["ok?", "", "no answer", None], "answer": [1.0, 2.0, None, 4.0]})
    from core.data import task_rows

    notes = []
    rows = task_rows(frame, "prompt", "answer", where="frame", notes=notes)
    assert [(r["question"], r["answer"]) for r in rows] == [("ok?", "1")]  # 1.0 -> "1"
    assert notes == ["frame: dropped 3 rows with an empty 'prompt' or 'answer'"]
    with pytest.raises(DataError, match="no usable rows: all 2 have an empty 'prompt' or 'answer'"):
        task_rows(frame.iloc[1:3], "prompt", "answer", where="frame")


def test_carved_split_is_seeded_disjoint_and_capped(tmp_path):
    path = tmp_path / "many.csv"
    path.write_text("prompt,answer\n" + "".join(f"q{i},{i}\n" for i in range(50)) + "q0,0\n")  # q0 twice
    cfg = _cfg(path, eval_size=10, train_size=30, seed=3)
    a, b = load_task_data(cfg), load_task_data(cfg)
    assert a.train == b.train and a.eval == b.eval
    assert len(a.eval) == 5 and len(a.train) == 30  # 51 rows: a tenth, at least 5, at most 10
    assert not {r["question"] for r in a.train} & {r["question"] for r in a.eval}
    other = load_task_data(_cfg(path, eval_size=10, train_size=30, seed=4))
    assert [r["question"] for r in other.eval] != [r["question"] for r in a.eval]
    assert any("dropped 1 training rows whose question is also held out" in n for n in a.notes) == (
        sum(r["question"] == "q0" for r in a.eval) == 1
    )
    # Too few rows for the held-out size: hold out a tenth (at least 5, at most half) and say so.
    (tmp_path / "few.csv").write_text("prompt,answer\n" + "".join(f"q{i},{i}\n" for i in range(5)))
    small = load_task_data(_cfg(tmp_path / "few.csv", eval_size=1000))
    assert len(small.eval) == 2 and len(small.train) == 3
    assert small.notes == ["5 usable rows: held out 2 (at most half of so few) instead of 1000"]
    # columns no name suggests are said again when the data loads (Start's banner), not only at upload
    (tmp_path / "foo.csv").write_text("question,foo\n" + "".join(f"q{i},{i}\n" for i in range(20)))
    foo = load_task_data(_cfg(tmp_path / "foo.csv", prompt_column="question", answer_column="foo"))
    assert foo.notes[0] == ("check that the Data tab's columns are the ones meant: the answer column `foo` is not "
                            "named like an answer column")
    (tmp_path / "qa.csv").write_text("q,a\n" + "".join(f"q{i},{i}\n" for i in range(20)))
    qa = load_task_data(_cfg(tmp_path / "qa.csv", prompt_column="q", answer_column="a"))
    assert "the question column `q` is not named like a question column; the answer column `a`" in qa.notes[0]
    # the 20-row CSV with the default eval_size (200): 5 held out, 15 to train on (was 1)
    (tmp_path / "twenty.csv").write_text("prompt,answer\n" + "".join(f"q{i},{i}\n" for i in range(20)))
    twenty = load_task_data(DataConfig(source=str(tmp_path / "twenty.csv")))
    assert len(twenty.eval) == 5 and len(twenty.train) == 15


# ---------------------------------------------------------------------------
# Built-in tasks
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_builtin_is_deterministic_and_disjoint(name):
    a = load_builtin(name, train_size=300, eval_size=60, seed=7)
    b = load_task_data(DataConfig(source=f"builtin:{name}", train_size=300, eval_size=60, seed=7))
    assert a.train == b.train and a.eval == b.eval
    assert len(a.train) == 300 and len(a.eval) == 60
    assert a.source == f"builtin:{name}" and {"question", "answer"} <= set(a.columns)
    c = load_builtin(name, train_size=300, eval_size=60, seed=8)
    assert [r["question"] for r in c.train] != [r["question"] for r in a.train]
    # No problem (not just no question string) is both trained on and held out.
    task = BUILTIN_TASKS[name]
    train_problems = {task.problem(r) for r in a.train}
    assert not train_problems & {task.problem(r) for r in a.eval}
    assert not {r["question"] for r in a.train} & {r["question"] for r in a.eval}
    assert len(train_problems) == 300
    # The held-out set does not move when only the training size changes.
    assert load_builtin(name, train_size=5, eval_size=60, seed=7).eval == a.eval


def test_decimal_compare_answers_are_right():
    rows = BUILTIN_TASKS["decimal_compare"].generate(500, seed=1)
    asks = Counter()
    for r in rows:
        a, b = float(r["a"]), float(r["b"])
        assert a != b and r["a"] in r["question"] and r["b"] in r["question"]
        want = max(a, b) if r["asks"] == "larger" else min(a, b)
        assert float(r["answer"]) == want and r["answer"] in (r["a"], r["b"])
        asks[r["asks"]] += 1
        word = re.search(r"bigger|larger|greater|smaller|less", r["question"]).group()
        assert (word in ("smaller", "less")) == (r["asks"] == "smaller")
    assert asks["larger"] > 150 and asks["smaller"] > 150
    # The trap is there: often the answer to "which is bigger" has fewer decimals.
    trap = [r for r in rows if r["asks"] == "larger" and r["a"].split(".")[0] == r["b"].split(".")[0]
            and len(r["answer"]) < max(len(r["a"]), len(r["b"]))]
    assert len(trap) > 30
    assert max(len(Decimal(r["a"]).as_tuple().digits) for r in rows) >= 4


_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")  # "a op b = c" inside a worked solution
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_AST_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def test_arithmetic_answers_match_their_worked_solutions():
    rows = BUILTIN_TASKS["arithmetic"].generate(300, seed=2)
    assert len({r["question"].split()[1] for r in rows}) > 5  # several templates
    for r in rows:
        assert r["answer_raw"].endswith(f"#### {r['answer']}")
        assert normalise_answer(r["answer_raw"]) == r["answer"] and int(r["answer"]) >= 0
        steps = _STEP.findall(r["answer_raw"])
        assert 2 <= len(steps) <= 4
        for x, op, y, z in steps:
            assert _OPS[op](int(x), int(y)) == int(z), r["answer_raw"]
        assert int(steps[-1][3]) == int(r["answer"])


def _evaluate(expression: str, numbers: list[int]) -> Fraction:
    """Value of a + - * / expression that uses each of `numbers` at most once (exact arithmetic)."""
    used = Counter()

    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            return _AST_OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used[node.value] += 1
            return Fraction(node.value)
        raise AssertionError(f"not allowed in a countdown answer: {ast.dump(node)}")

    value = walk(ast.parse(expression, mode="eval").body)
    assert not used - Counter(numbers), f"{expression} uses numbers not given: {numbers}"
    return value


def test_countdown_instances_are_solvable():
    rows = BUILTIN_TASKS["countdown"].generate(300, seed=3)
    for r in rows:
        assert 3 <= len(r["numbers"]) <= 4 and all(type(n) is int for n in r["numbers"])
        assert r["answer"] == str(r["target"]) and r["target"] not in r["numbers"]
        assert _evaluate(r["solution"], r["numbers"]) == r["target"]
        assert ", ".join(map(str, r["numbers"])) in r["question"] and str(r["target"]) in r["question"]
    with pytest.raises(AssertionError):
        _evaluate("100 + 1", [1, 2])  # the checker itself refuses numbers not given


@pytest.mark.parametrize("name,op,lo,hi", [("addition", operator.add, 10, 99), ("multiplication", operator.mul, 2, 99)])
def test_drill_answers_are_right(name, op, lo, hi):
    rows = BUILTIN_TASKS[name].generate(400, seed=4)
    phrasings = Counter()
    for r in rows:
        assert r["answer"] == str(op(r["a"], r["b"])) and lo <= min(r["a"], r["b"]) <= max(r["a"], r["b"]) <= hi
        assert re.findall(r"\d+", r["question"]) == [str(r["a"]), str(r["b"])]  # the question shows both, in order
        assert normalise_answer(r["answer_raw"]) == r["answer"]
        phrasings[r["question"].split()[0]] += 1
    assert len(phrasings) >= 3 and len({(r["a"], r["b"]) for r in rows}) == 400
    if name == "multiplication":  # one 1-digit factor, one 2-digit factor
        assert all(sorted((r["a"], r["b"]))[0] <= 9 and sorted((r["a"], r["b"]))[1] >= 11 for r in rows)
        with pytest.raises(DataError, match="could only make 712 distinct problems"):
            BUILTIN_TASKS[name].generate(800, seed=0)


def test_largest_answers_are_right():
    rows = BUILTIN_TASKS["largest"].generate(300, seed=5)
    for r in rows:
        shown = [int(x) for x in re.findall(r"\d+", r["question"])]
        assert shown == r["choices"] and len(set(shown)) == 4 and r["answer"] == str(max(shown))
    # the largest is not always in the same place
    assert len({r["choices"].index(max(r["choices"])) for r in rows}) == 4


@pytest.mark.parametrize("name, steps", [("chain_arithmetic", {2, 3}), ("long_chain_arithmetic", {2, 3, 4, 5})])
def test_chain_arithmetic_steps_check_out_and_lead_to_the_answer(name, steps):
    from core.evaluation.evaluate import thought_check

    rows = BUILTIN_TASKS[name].generate(600, seed=6)
    by_steps = Counter(r["steps"] for r in rows)
    assert set(by_steps) == steps and min(by_steps.values()) > 0.8 * 600 / len(steps)  # about even shares
    assert len({r["question"].split()[0] for r in rows}) >= 3  # several phrasings
    for r in rows:
        a, b = (int(x) for x in re.findall(r"\d+", r["expression"])[:2])
        assert 2 <= a <= 9 and 2 <= b <= 9 and r["expression"] in r["question"]
        assert normalise_answer(r["answer_raw"]) == r["answer"] and int(r["answer"]) >= 0
        steps = _STEP.findall(r["answer_raw"])
        assert len(steps) == r["steps"] and steps[0][:3] == (str(a), "*", str(b))
        for x, op, y, z in steps:  # each step is right, starts from the last result and stays >= 0
            assert _OPS[op](int(x), int(y)) == int(z) >= 0
        assert all(steps[i][0] == steps[i - 1][3] for i in range(1, len(steps)))
        assert int(steps[-1][3]) == int(r["answer"])
        # the worked steps, written as a thought, pass the evaluation's thought check
        worked = "<think>" + r["answer_raw"].split("\n")[0] + "</think>"
        assert thought_check(worked) == {"equations": r["steps"], "right": r["steps"], "checks_out": True}
    # the same problem asked with its factors swapped is not a new problem
    task = BUILTIN_TASKS[name]
    assert task.problem({"expression": "4 * 3 + 5"}) == task.problem({"expression": "3 * 4 + 5"})


def test_unknown_builtin_lists_the_choices():
    choices = ("builtin:decimal_compare, builtin:arithmetic, builtin:countdown, builtin:addition, "
               "builtin:multiplication, builtin:largest, builtin:chain_arithmetic, builtin:long_chain_arithmetic")
    with pytest.raises(DataError, match=f"no built-in task 'nope'; choose one of {choices}"):
        load_task_data(DataConfig(source="builtin:nope"))


# ---------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    """A tiny BPE tokenizer trained here, with no chat template, as a base model would ship."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    sentences = ["Which is bigger, 9.11 or 9.9?", "Think step by step.", "What is 2 + 2?"]
    bpe.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<eos>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<eos>")
    assert not tok.chat_template
    return tok


def test_build_messages():
    assert build_messages("Q?", "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q?"},
    ]
    assert build_messages("Q?", "  ") == [{"role": "user", "content": "Q?"}]


def test_render_prompt_falls_back_to_the_default_template(tokenizer):
    messages = build_messages("Which is bigger, 9.11 or 9.9?", "Think step by step.")
    text = render_prompt(tokenizer, messages)
    assert text == (
        "<|im_start|>system\nThink step by step.<|im_end|>\n"
        "<|im_start|>user\nWhich is bigger, 9.11 or 9.9?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_prompt(None, messages) == text  # the no-tokenizer preview renders the same
    assert render_prompt(tokenizer, messages, DEFAULT_CHAT_TEMPLATE) == text


def test_render_prompt_prefers_given_then_own_template(tokenizer):
    messages = build_messages("Q?", "S")
    own = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer)
    own.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant]"
    assert render_prompt(own, messages) == "[system] S\n[user] Q?\n[assistant]"
    given = "{{ messages[-1].content }} =>{% if add_generation_prompt %} A:{% endif %}"
    assert render_prompt(own, messages, given) == "Q? => A:"


def test_render_prompt_folds_system_into_user_when_refused(tokenizer):
    gemma_like = (
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}<model>"
    )
    expected = "<user>S\n\nQ?</user><model>"
    assert render_prompt(tokenizer, build_messages("Q?", "S"), gemma_like) == expected
    assert render_prompt(None, build_messages("Q?", "S"), gemma_like) == expected


def test_broken_template_is_a_data_error(tokenizer):
    with pytest.raises(DataError, match=r"the chat template given failed \(line 1\)"):
        render_prompt(tokenizer, build_messages("Q?", ""), "{% for %}")


def test_preview_columns_and_values(tokenizer):
    task = load_builtin("decimal_compare", train_size=8, eval_size=2, seed=0)
    table = preview(task, tokenizer, "Think.", n=3)
    assert list(table.columns) == ["question", "answer", "rendered_prompt"]
    assert table["question"].tolist() == [r["question"] for r in task.train[:3]]
    assert table["answer"].tolist() == [r["answer"] for r in task.train[:3]]
    for question, prompt in zip(table["question"], table["rendered_prompt"]):
        assert prompt.startswith("<|im_start|>system\nThink.<|im_end|>\n")
        assert f"<|im_start|>user\n{question}<|im_end|>" in prompt
    assert list(preview(task, None, "", n=0).columns) == ["question", "answer", "rendered_prompt"]


# ---------------------------------------------------------------------------
# the order of training rows and the curriculum (core/data/order.py)

def _old_order(rows, step, per_step, seed):
    """The order every run had before the curriculum (trainer.prompt_rows until 2026-12-06)."""
    import numpy as np

    out = []
    for k in range(per_step):
        epoch, j = divmod(step * per_step + k, len(rows))
        out.append(rows[int(np.random.default_rng(seed + 7919 * epoch).permutation(len(rows))[j])])
    return out


def test_step_rows_without_a_curriculum_keep_the_order_runs_had():
    from core.data.order import step_rows

    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(37)]
    for step in (0, 1, 5, 9, 30):  # 30 x 4 > 37: several epochs
        assert step_rows(rows, step, 4, seed=3) == _old_order(rows, step, 4, 3)
    assert step_rows(rows, 2, 4, seed=3) != step_rows(rows, 2, 4, seed=4)


def test_curriculum_starts_on_the_easiest_rows_and_widens_to_all_by_its_last_step():
    from core.data import load_task_data
    from core.data.order import step_rows

    cfg = DataConfig(source="builtin:long_chain_arithmetic", train_size=400, eval_size=40,
                     curriculum_column="steps", curriculum_steps=60)
    task = load_task_data(cfg)
    assert sorted({r["steps"] for r in task.train}) == [2, 3, 4, 5]
    assert any("curriculum by steps 2: " in n and "then 3 at step 20, 4 at step 40, 5 at step 60; every row from step 60"
               in n for n in task.notes), task.notes
    assert {r["steps"] for r in task.eval} == {2, 3, 4, 5}  # held-out rows are every kind, always

    def steps_of(step):  # the run's step (1-based) -> the chain lengths it asks
        return [r["steps"] for r in step_rows(task.train, step - 1, 16, seed=1, curriculum_column="steps",
                                               curriculum_steps=60)]

    for s in (1, 10, 19):  # levels join at steps 0, 20, 40, 60
        assert set(steps_of(s)) == {2}
    assert set(steps_of(25)) <= {2, 3} and 3 in steps_of(25) + steps_of(26) + steps_of(27)
    assert max(steps_of(45)) <= 4
    seen = set()
    for s in range(60, 80):
        got = step_rows(task.train, s - 1, 16, seed=1, curriculum_column="steps", curriculum_steps=60)
        assert got == _old_order(task.train, s - 1, 16, 1)  # from step 60 on: the order without a curriculum
        seen |= {r["steps"] for r in got}
    assert seen == {2, 3, 4, 5}
    # 0 steps = every row from the start
    assert step_rows(task.train, 0, 16, 1, curriculum_column="steps", curriculum_steps=0) == _old_order(task.train, 0, 16, 1)


@pytest.mark.parametrize("column,rows,needle", [
    ("level", [{"question": "a", "answer": "1", "steps": 2}], "have no such column (columns: 'question', 'answer', 'steps')"),
    ("Steps", [{"question": "a", "answer": "1", "steps": 2}], "Did you mean 'steps'?"),
    ("steps", [{"question": "What is 2 * 3?", "answer": "6", "steps": "hard"}, {"question": "b", "answer": "1", "steps": 2}],
     "the row of question 'What is 2 * 3?' holds 'hard', not a number; pick a column of numbers"),
    ("steps", [{"question": "a", "answer": "1", "steps": 2}, {"question": "q" * 80, "answer": "1", "steps": None}],
     "the row of question '" + "q" * 59 + "…' has no value there; "),
    ("steps", [{"question": "a", "answer": "1", "steps": 2}, {"question": "b", "answer": "1", "steps": 2}],
     "nothing to order by"),
])
def test_a_bad_curriculum_column_is_refused_by_name(column, rows, needle):
    from core.data.order import curriculum_levels

    with pytest.raises(DataError) as e:
        curriculum_levels(rows, column)
    assert f"data.curriculum_column {column!r}" in str(e.value) and needle in str(e.value)


def test_curriculum_levels_take_true_false_and_the_note_stays_short():
    from core.data.order import curriculum_levels, curriculum_summary

    rows = [{"question": f"q{i}", "answer": "1", "is_hard": i % 2 == 0, "score": i / 7} for i in range(300)]
    assert curriculum_levels(rows, "is_hard") == [0.0, 1.0]
    note = curriculum_summary(rows, "score")
    assert note.startswith("score 0: 1 rows, 0.14285714285714285: 1 rows") and note.endswith("(300 levels up to 42.714285714285715)")
    assert len(note) < 400


def test_the_data_notes_say_when_each_level_joins_and_when_there_is_no_curriculum():
    from core.data import load_task_data

    def notes(**kw):
        return load_task_data(DataConfig(source="builtin:long_chain_arithmetic", train_size=300, eval_size=20, **kw)).notes

    assert [n for n in notes(curriculum_column="steps", curriculum_steps=0) if "curriculum" in n] == [
        "curriculum by 'steps': 'all rows from step' is 0, so every row is drawn from the start (no curriculum)"]
    many = [n for n in notes(curriculum_column="answer", curriculum_steps=30) if "curriculum" in n][0]
    assert "distinct values: a column with a few levels (a step count, a grade) orders best" in many
    with pytest.raises(DataError, match=r"'question': a row holds 'W.*', not a number; pick a column of numbers"):
        notes(curriculum_column="question")


def test_a_bad_curriculum_column_is_refused_when_the_data_loads(tmp_path):
    from core.data import load_task_data

    p = tmp_path / "qa.csv"
    p.write_text("prompt,answer,difficulty\n" + "".join(f"q{i},{i},{'easy' if i % 2 else 1}\n" for i in range(30)))
    with pytest.raises(DataError, match="not a number"):
        load_task_data(DataConfig(source=str(p), curriculum_column="difficulty"))
    with pytest.raises(DataError, match="have no such column"):
        load_task_data(DataConfig(source=str(p), curriculum_column="level"))
    p.write_text("prompt,answer,difficulty\n" + "".join(f"q{i},{i},{i % 3}\n" for i in range(30)))
    task = load_task_data(DataConfig(source=str(p), curriculum_column="difficulty", curriculum_steps=10))
    assert any("curriculum by difficulty 0: " in n for n in task.notes)


def test_each_built_in_task_has_a_system_prompt_of_its_kind():
    from core.config import DEFAULT_SYSTEM_PROMPT, FORMAT_INSTRUCTION
    from core.data import BUILTIN_TASKS, is_a_default_system_prompt, system_prompt_for

    assert system_prompt_for("builtin:largest") == DEFAULT_SYSTEM_PROMPT  # the default task's own
    assert "Question: Which is bigger, 4.7 or 4.25?" in system_prompt_for("builtin:decimal_compare")
    # a file or a hub dataset: the format alone, no example of another kind of question
    assert system_prompt_for("my.csv") == FORMAT_INSTRUCTION and system_prompt_for("builtin:nope") == FORMAT_INSTRUCTION
    add = system_prompt_for("builtin:addition")
    assert add.startswith(FORMAT_INSTRUCTION) and "Question: What is 47 + 38?" in add and "<answer>85</answer>" in add
    prompts = {system_prompt_for("builtin:" + n) for n in BUILTIN_TASKS}
    assert len(prompts) == len(BUILTIN_TASKS)  # every task its own example
    assert all(is_a_default_system_prompt(p) for p in prompts)
    assert not is_a_default_system_prompt("Reply with the number only.") and not is_a_default_system_prompt("")
    # each example's answer is the task's kind of answer, and each is in the <think>/<answer> format
    for n in BUILTIN_TASKS:
        example = system_prompt_for("builtin:" + n).split("\nExample:\n", 1)[1]
        assert example.startswith("Question: ") and example.count("<think>") == example.count("</think>") == 1, n
        assert example.endswith("</answer>") and example.count("<answer>") == 1, n


def test_a_small_task_trains_on_all_its_problems_and_says_so():
    """multiplication has 712 distinct problems: the default train_size 2000 used to refuse the run
    (a new user's first pick, 2026-12-06); now the 512 left after the 200 held out train, with a note."""
    from core.data.builtin import load_builtin

    task = load_builtin("multiplication", train_size=2000, eval_size=200, seed=42)
    assert len(task.eval) == 200 and len(task.train) == 512
    held = {BUILTIN_TASKS["multiplication"].problem(r) for r in task.eval}
    assert not held & {BUILTIN_TASKS["multiplication"].problem(r) for r in task.train}  # still apart
    assert task.notes == ["builtin:multiplication has few distinct problems: 200 held out, the 512 others it made "
                          "for training (data.train_size asked for 2000)"]
    # a task drawn dry stops early, not after 50 draws per row asked for (100,000 took 18 s)
    import time

    t0 = time.perf_counter()
    assert len(load_builtin("multiplication", train_size=100_000, eval_size=200, seed=42).train) == 512
    assert time.perf_counter() - t0 < 5
    # a large task asked for all it can: the same rows as the strict draw
    big = BUILTIN_TASKS["addition"]
    assert big.generate(300, seed=3, at_most=True) == big.generate(300, seed=3)
    assert load_builtin("multiplication", train_size=100, eval_size=200, seed=42).notes == []  # enough: no note
    with pytest.raises(DataError, match="every one of its problems is held out"):
        load_builtin("multiplication", train_size=10, eval_size=712, seed=1)


def test_a_file_of_repeated_questions_is_split_by_distinct_question(tmp_path):
    """A walkthrough's upload: 6 questions asked 6 times each. Held out by row, 5 held-out rows were
    5 questions and training kept one; held out by distinct question, training keeps half of them."""
    path = tmp_path / "repeats.csv"
    path.write_text("prompt,answer\n" + "".join(f"q{i},{i}\n" for _ in range(6) for i in range(6)))
    task = load_task_data(_cfg(path, eval_size=200))
    held = [r["question"] for r in task.eval]
    trained = {r["question"] for r in task.train}
    assert len(held) == len(set(held)) == 3  # one row per held-out question, half of so few
    assert len(trained) == 3 and not trained & set(held) and len(task.train) == 18
    assert "36 usable rows ask 6 distinct questions: held out 3 (at most half of so few) instead of 200" in task.notes
    assert "the 18 training rows ask 3 distinct questions: a run learns those, add rows with other " \
           "questions to teach more" in task.notes
    capped = load_task_data(_cfg(path, eval_size=200, train_size=4))  # said of the rows trained on
    assert len(capped.train) == 4 and any(n.startswith("the 4 training rows ask ") for n in capped.notes)


def test_a_run_from_before_hold_out_by_keeps_its_split(tmp_path):
    """A run folder written before data.hold_out_by trained on rows carved by row: its resume and
    evaluation load it so (the same train and held-out rows); a new config carves by question."""
    import yaml

    from core.config import Config
    from core.runs.folders import RunDir

    path = tmp_path / "repeats.csv"
    path.write_text("prompt,answer\n" + "".join(f"q{i},{i}\n" for _ in range(6) for i in range(6)))
    cfg = Config()
    cfg.data = DataConfig(source=str(path))
    raw = cfg.to_dict()
    del raw["data"]["hold_out_by"]
    run = RunDir.create(tmp_path / "runs", "old")
    run.config_path.write_text(yaml.safe_dump(raw))
    loaded = run.load_config().data
    assert (loaded.hold_out_by, cfg.data.hold_out_by) == ("row", "question")
    by_row, by_question = load_task_data(loaded), load_task_data(cfg.data)
    assert len(by_row.eval) == 5 and len({r["question"] for r in by_row.train}) == 1  # the old carve, as it trained
    assert len(by_question.eval) == 3 and len({r["question"] for r in by_question.train}) == 3
