"""Built-in tasks: small reasoning problems generated on the spot, with no download.

Owns: eight generators, each deterministic for a seed and each refusing to repeat a problem:
`decimal_compare`, `arithmetic` (2-4 step word problems) and `countdown` for models that can
already reason a little, three one-step drills (`addition`, `multiplication`, `largest`) sized
for the smallest models (SmolLM2-135M), and `chain_arithmetic` (4 * 3 + 5 - 2), where the same
small model gains from writing one step at a time (bench/results/aha_task_search.md), with
`long_chain_arithmetic` its 2-5-step form; and
`load_builtin`, which draws the held-out rows
and the training rows from different seeds and keeps every held-out problem out of training.
Every answer is computed while the question is built, so it is right by construction.

Refuses to know: files, column mapping, chat templates, and how a completion is scored (the
reward presets do that; countdown's `solution` column is one valid expression, not the only one).

    >>> sorted(BUILTIN_TASKS)
    ['addition', 'arithmetic', 'chain_arithmetic', 'countdown', 'decimal_compare', 'largest', 'long_chain_arithmetic', 'multiplication']
    >>> BUILTIN_TASKS["decimal_compare"].generate(2, seed=0) == BUILTIN_TASKS["decimal_compare"].generate(2, seed=0)
    True
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterable

from core.config import FORMAT_INSTRUCTION

from .base import DataError, TaskData

BUILTIN_PREFIX = "builtin:"
# Rows a built-in task makes at most: 100,000 take a few seconds and ~100 MB; train_size 10^7 took
# 618 s and 6.4 GB while Start waited (issue 29).
MAX_BUILTIN_ROWS = 100_000


# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltinTask:
    name: str
    description: str
    draw: Callable[[random.Random], dict]  # one row from the generator's random stream
    # The problem a row poses, for telling repeats apart: "9.9 or 9.11?" asked the other way
    # round, or countdown's numbers in another order, is the same problem in other words.
    problem: Callable[[dict], str] = lambda row: row["question"]
    # one worked question of the task's kind for the system prompt (`system_prompt_for`): the
    # configs/smollm2-*.yaml recipes' examples; empty = the default prompt's own example
    example: str = ""

    def generate(self, n: int, seed: int, *, exclude: Iterable[str] = (), at_most: bool = False) -> list[dict]:
        """`n` rows posing distinct problems, none in `exclude` (keys from `problem`); same seed, same rows.
        A task with fewer distinct problems than asked for raises, or with `at_most` gives all it has."""
        rng = random.Random(seed)
        seen = set(exclude)
        rows: list[dict] = []
        budget = 50 * n + 1000  # draws before giving up: generous, the spaces are large
        stale = 0  # draws in a row that found nothing new: with `at_most`, a task drawn dry ends early
        while len(rows) < n:
            if at_most and stale >= max(1000, 10 * len(seen)):
                return rows
            if budget == 0:
                if at_most:
                    return rows
                raise DataError(
                    f"{BUILTIN_PREFIX}{self.name}: could only make {len(rows)} distinct problems "
                    f"of the {n} asked for; ask for fewer"
                )
            budget -= 1
            row = self.draw(rng)
            key = self.problem(row)
            stale += 1
            if key not in seen:
                stale = 0
                seen.add(key)
                rows.append(row)
        return rows


def load_builtin(name: str, train_size: int, eval_size: int, seed: int) -> TaskData:
    """Held-out rows from seed 2*seed+1, training rows from seed 2*seed, no problem in both.

    The held-out set depends only on (eval_size, seed), so runs that differ in train_size are
    evaluated on the same questions.
    """
    if name not in BUILTIN_TASKS:
        raise DataError(
            f"no built-in task {name!r}; choose one of "
            + ", ".join(f"{BUILTIN_PREFIX}{n}" for n in BUILTIN_TASKS)
        )
    task = BUILTIN_TASKS[name]
    for what, n, field in (("training", train_size, "train_size"), ("held-out", eval_size, "eval_size")):
        if n > MAX_BUILTIN_ROWS:
            raise DataError(f"{BUILTIN_PREFIX}{name}: data.{field} = {n:,} asks for more {what} rows than the "
                            f"{MAX_BUILTIN_ROWS:,} a built-in task makes (a run of max_steps x prompts_per_step x "
                            "gradient_accumulation_steps questions needs no more); lower it")
    held_out = task.generate(eval_size, seed=2 * seed + 1)
    # a small task (multiplication: 712 problems) trains on all it has left rather than refusing the
    # default train_size of 2000 (a new user's first pick, 2026-12-06, could not start), and says so
    train = task.generate(train_size, seed=2 * seed, exclude=[task.problem(r) for r in held_out], at_most=True)
    notes = []
    if len(train) < train_size:
        if not train:
            raise DataError(f"{BUILTIN_PREFIX}{name}: every one of its problems is held out (data.eval_size = "
                            f"{eval_size}); lower data.eval_size")
        notes.append(f"{BUILTIN_PREFIX}{name} has few distinct problems: {len(held_out)} held out, the "
                     f"{len(train)} others it made for training (data.train_size asked for {train_size})")
    return TaskData(
        train=train, eval=held_out, source=f"{BUILTIN_PREFIX}{name}", columns=list(train[0]) if train else [],
        notes=notes,
    )


# ---------------------------------------------------------------------------
# decimal_compare: "Which is bigger, 9.11 or 9.9?"
# ---------------------------------------------------------------------------
_COMPARE_PHRASES = {
    "larger": (
        "Which is bigger, {a} or {b}?",
        "Which number is larger: {a} or {b}?",
        "Of {a} and {b}, which is greater?",
        "Is {a} or {b} the bigger number?",
    ),
    "smaller": (
        "Which is smaller, {a} or {b}?",
        "Which number is smaller: {a} or {b}?",
        "Of {a} and {b}, which is less?",
        "Is {a} or {b} the smaller number?",
    ),
}


def _digits(rng: random.Random, k: int) -> str:
    """`k` decimal digits whose last is not 0, so each number has one way to be written."""
    if k == 0:
        return ""
    return "".join(str(rng.randint(0, 9)) for _ in range(k - 1)) + str(rng.randint(1, 9))


def _draw_decimal_pair(rng: random.Random) -> tuple[str, str]:
    whole = rng.randint(0, 20) if rng.random() < 0.7 else rng.randint(21, 99)  # 9.11 has company
    kind = rng.random()
    if kind < 0.4:
        # The trap: the longer decimal is the smaller number (9.11 < 9.9, 3.45 < 3.5).
        d = rng.randint(1, 9)
        return f"{whole}.{d}", f"{whole}.{rng.randint(0, d - 1)}{_digits(rng, rng.randint(1, 2))}"
    if kind < 0.6:
        # Same start, longer is larger (3.5 < 3.56): the trap's rule must not be over-learnt.
        head = _digits(rng, rng.randint(1, 2))
        return f"{whole}.{head}", f"{whole}.{head}{_digits(rng, rng.randint(1, 2))}"
    if kind < 0.8:
        # Different whole parts; the smaller one often has more decimals (8.95 vs 10.1).
        other = rng.choice([w for w in range(max(0, whole - 3), whole + 4) if w != whole])
        return f"{whole}.{_digits(rng, rng.randint(1, 3))}", f"{other}.{_digits(rng, rng.randint(1, 3))}"
    return f"{whole}.{_digits(rng, rng.randint(1, 3))}", f"{whole}.{_digits(rng, rng.randint(1, 3))}"


def _draw_decimal_compare(rng: random.Random) -> dict:
    a, b = _draw_decimal_pair(rng)
    while Decimal(a) == Decimal(b):
        a, b = _draw_decimal_pair(rng)
    if rng.random() < 0.5:
        a, b = b, a
    asks = rng.choice(("larger", "smaller"))
    larger, smaller = (a, b) if Decimal(a) > Decimal(b) else (b, a)
    answer = larger if asks == "larger" else smaller
    question = rng.choice(_COMPARE_PHRASES[asks]).format(a=a, b=b)
    return {"question": question, "answer": answer, "answer_raw": answer, "a": a, "b": b, "asks": asks}


# ---------------------------------------------------------------------------
# arithmetic: GSM8K-like word problems of 2-4 steps
# ---------------------------------------------------------------------------
_PEOPLE = (
    ("Mia", "she", "her"), ("Liam", "he", "his"), ("Ava", "she", "her"), ("Noah", "he", "his"),
    ("Zoe", "she", "her"), ("Omar", "he", "his"), ("Priya", "she", "her"), ("Kenji", "he", "his"),
    ("Sofia", "she", "her"), ("Lucas", "he", "his"), ("Amara", "she", "her"), ("Mateo", "he", "his"),
)


def _apples(rng, name, he, his):
    bought, k = rng.randint(20, 60), rng.randint(2, 9)
    sold, picked = rng.randint(3, bought - 10), rng.randint(2, 30)
    picked += -(bought - sold + picked) % k  # so the apples share out evenly
    left, total = bought - sold, bought - sold + picked
    q = (f"{name} buys {bought} apples at the market. {he.capitalize()} sells {sold} of them to a "
         f"neighbour and then picks {picked} more from the garden. {he.capitalize()} shares all "
         f"{his} apples equally among {k} friends. How many apples does each friend get?")
    steps = [f"After selling, {name} has {bought} - {sold} = {left} apples.",
             f"After picking more, {he} has {left} + {picked} = {total} apples.",
             f"Each friend gets {total} / {k} = {total // k} apples."]
    return q, steps, total // k


def _books(rng, name, he, his):
    n, price = rng.randint(2, 6), rng.randint(3, 15)
    money, earned = n * price + rng.randint(1, 80), rng.randint(5, 40)
    q = (f"{name} has ${money}. {he.capitalize()} buys {n} books that cost ${price} each, and then "
         f"earns ${earned} doing chores. How many dollars does {name} have now?")
    steps = [f"The books cost {n} * {price} = {n * price} dollars.",
             f"After buying them, {name} has {money} - {n * price} = {money - n * price} dollars.",
             f"After the chores, {he} has {money - n * price} + {earned} = {money - n * price + earned} dollars."]
    return q, steps, money - n * price + earned


def _pencils(rng, name, he, his):
    boxes, per_box = rng.randint(3, 12), rng.randint(6, 24)
    total = boxes * per_box
    monday, tuesday = rng.randint(1, total // 3), rng.randint(1, total // 3)
    q = (f"{name}'s shop has {boxes} boxes with {per_box} pencils in each. It sells {monday} pencils "
         f"on Monday and {tuesday} pencils on Tuesday. How many pencils are left?")
    steps = [f"The shop starts with {boxes} * {per_box} = {total} pencils.",
             f"After Monday, {total} - {monday} = {total - monday} pencils are left.",
             f"After Tuesday, {total - monday} - {tuesday} = {total - monday - tuesday} pencils are left."]
    return q, steps, total - monday - tuesday


def _cookies(rng, name, he, his):
    dozens, bag = rng.randint(2, 10), rng.randint(2, 8)
    baked = 12 * dozens
    broken = baked % bag + bag * rng.randint(0 if baked % bag else 1, 2)  # leaves a multiple of bag
    good = baked - broken
    q = (f"{name} bakes {dozens} dozen cookies. {broken} of them break. {he.capitalize()} packs the "
         f"rest into bags of {bag}. How many bags does {he} fill?")
    steps = [f"{name} bakes {dozens} * 12 = {baked} cookies.",
             f"Without the broken ones there are {baked} - {broken} = {good} cookies.",
             f"That fills {good} / {bag} = {good // bag} bags."]
    return q, steps, good // bag


def _reading(rng, name, he, his):
    p, d, q_, e = rng.randint(5, 40), rng.randint(2, 7), rng.randint(5, 40), rng.randint(2, 7)
    q = (f"{name} reads {p} pages a day for {d} days, then {q_} pages a day for {e} more days. "
         f"How many pages does {he} read in total?")
    steps = [f"First {he} reads {p} * {d} = {p * d} pages.",
             f"Then {he} reads {q_} * {e} = {q_ * e} pages.",
             f"In total {he} reads {p * d} + {q_ * e} = {p * d + q_ * e} pages."]
    return q, steps, p * d + q_ * e


def _bus(rng, name, he, his):
    on_board = rng.randint(10, 60)
    off, on = rng.randint(1, on_board - 1), rng.randint(1, 30)
    q = (f"{name} drives a bus with {on_board} passengers. At the first stop {off} get off and {on} "
         f"get on. How many passengers are on the bus now?")
    steps = [f"After {off} get off, {on_board} - {off} = {on_board - off} passengers remain.",
             f"After {on} get on, there are {on_board - off} + {on} = {on_board - off + on} passengers."]
    return q, steps, on_board - off + on


def _marbles(rng, name, he, his):
    start, won = rng.randint(5, 40), rng.randint(1, 20)
    lost = rng.randint(1, start + won - 1)
    now = start + won - lost
    friend = rng.choice([p[0] for p in _PEOPLE if p[0] != name])
    q = (f"{name} has {start} marbles. {he.capitalize()} wins {won} more and then loses {lost}. "
         f"{friend} has twice as many marbles as {name} has now. How many marbles do they have together?")
    steps = [f"After winning, {name} has {start} + {won} = {start + won} marbles.",
             f"After losing, {he} has {start + won} - {lost} = {now} marbles.",
             f"{friend} has {now} * 2 = {2 * now} marbles.",
             f"Together they have {now} + {2 * now} = {3 * now} marbles."]
    return q, steps, 3 * now


_WORD_PROBLEMS = (_apples, _books, _pencils, _cookies, _reading, _bus, _marbles)


def _draw_arithmetic(rng: random.Random) -> dict:
    name, he, his = rng.choice(_PEOPLE)
    question, steps, answer = rng.choice(_WORD_PROBLEMS)(rng, name, he, his)
    raw = "\n".join(steps) + f"\n#### {answer}"
    return {"question": question, "answer": str(answer), "answer_raw": raw}


# ---------------------------------------------------------------------------
# countdown: reach a target from 3-4 numbers with + - * /
# ---------------------------------------------------------------------------
def _draw_countdown(rng: random.Random) -> dict:
    while True:
        numbers = [rng.randint(1, 25) for _ in range(rng.choice((3, 4)))]
        # Combine random pairs until one expression is left; '-' and '/' only when the result
        # stays a positive whole number, so the target and every step are integers.
        items = [(n, str(n)) for n in numbers]
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            (x, ex), (y, ey) = items[i], items[j]
            ops = ["+", "*"] + (["-"] if x > y else []) + (["/"] if y > 1 and x % y == 0 else [])
            op = rng.choice(ops)
            value = {"+": x + y, "-": x - y, "*": x * y, "/": x // max(y, 1)}[op]
            items = [it for k, it in enumerate(items) if k not in (i, j)] + [(value, f"({ex} {op} {ey})")]
        target, solution = items[0]
        if 10 <= target <= 999 and target not in numbers:
            break
    rng.shuffle(numbers)
    shown = ", ".join(map(str, numbers))
    question = (f"Using the numbers {shown}, write an equation that equals {target}. You may use "
                f"+, -, * and /, and each number at most once.")
    return {"question": question, "answer": str(target), "answer_raw": str(target),
            "numbers": numbers, "target": target, "solution": solution[1:-1]}


# ---------------------------------------------------------------------------
# drills for the smallest models: one operation on small whole numbers
# ---------------------------------------------------------------------------
_DRILL_PHRASES = {
    "+": ("What is {a} + {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?", "Compute {a} + {b}."),
    "*": ("What is {a} * {b}?", "Multiply {a} by {b}.", "What is {a} times {b}?", "Compute {a} * {b}."),
}


def _draw_drill(rng: random.Random, op: str, a: int, b: int) -> dict:
    if rng.random() < 0.5:
        a, b = b, a
    value = a + b if op == "+" else a * b
    question = rng.choice(_DRILL_PHRASES[op]).format(a=a, b=b)
    return {"question": question, "answer": str(value), "answer_raw": f"{a} {op} {b} = {value}\n#### {value}",
            "a": a, "b": b}


def _draw_addition(rng: random.Random) -> dict:
    return _draw_drill(rng, "+", rng.randint(10, 99), rng.randint(10, 99))


def _draw_multiplication(rng: random.Random) -> dict:
    return _draw_drill(rng, "*", rng.randint(2, 9), rng.randint(11, 99))


def _draw_largest(rng: random.Random) -> dict:
    numbers = rng.sample(range(10, 100), 4)
    shown = ", ".join(map(str, numbers))
    question = rng.choice(("Which is the largest of {n}?", "Which number is the biggest: {n}?",
                           "What is the largest number in this list: {n}?")).format(n=shown)
    return {"question": question, "answer": str(max(numbers)), "answer_raw": str(max(numbers)), "choices": numbers}


# ---------------------------------------------------------------------------
# chain_arithmetic: a times table fact, then one or two small additions or subtractions
# ---------------------------------------------------------------------------
_CHAIN_PHRASES = ("What is {e}?", "Compute {e}.", "Work out {e}.", "What does {e} equal?")


def _draw_chain(rng: random.Random, extra_steps: tuple[int, ...]) -> dict:
    """a * b (2-9 each), then `rng.choice(extra_steps)` more steps of + or - a number 1-9, never below 0."""
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    total = a * b
    expression, steps = f"{a} * {b}", [f"{a} * {b} = {total}."]
    for _ in range(rng.choice(extra_steps)):
        x = rng.randint(1, 9)
        op = "-" if x <= total and rng.random() < 0.5 else "+"
        new = total + x if op == "+" else total - x
        expression += f" {op} {x}"
        steps.append(f"{total} {op} {x} = {new}.")
        total = new
    question = rng.choice(_CHAIN_PHRASES).format(e=expression)
    return {"question": question, "answer": str(total), "answer_raw": " ".join(steps) + f"\n#### {total}",
            "expression": expression, "steps": len(steps)}


def _draw_chain_arithmetic(rng: random.Random) -> dict:
    """a * b (2-9 each), then 1 or 2 more steps of + or - a number 1-9, never below 0.

    Each step is one the 135M model mostly knows (a times-table fact, a 2-digit number plus or
    minus a 1-digit one); the whole expression in one go it mostly does not. Half the problems
    take 2 steps, half 3.
    """
    return _draw_chain(rng, (1, 2))


def _draw_long_chain_arithmetic(rng: random.Random) -> dict:
    """The same steps, 2 to 5 of them (a quarter each): 7 * 4 - 6 + 8 + 3 - 5.

    With 2-3 steps the length of a correct answer is fixed by its problem, so a model that learns
    only drops filler (2026-12-05 H100: 42 -> 38 tokens while accuracy rose 20% -> 82%). With a
    wider spread the base solves almost only the shortest chains, and a model that learns to carry
    a thought through more steps solves longer ones: what lengthens is the thought a correct
    answer needed (each row's `steps` says how many; the evaluation reports length by steps).
    """
    return _draw_chain(rng, (1, 2, 3, 4))


def _chain_problem(expression: str) -> str:
    """4 * 3 + 5 and 3 * 4 + 5 are one problem: the factors in order, then the rest.

    >>> _chain_problem("4 * 3 + 5 - 2")
    '3 * 4 + 5 - 2'
    """
    a, _, b, *rest = expression.split()
    low, high = sorted((a, b), key=int)
    return " ".join([low, "*", high, *rest])


# ---------------------------------------------------------------------------
BUILTIN_TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in (
        BuiltinTask(
            "decimal_compare",
            "Which of two decimals is bigger or smaller (9.11 or 9.9?). Answer: the number.",
            _draw_decimal_compare,
            problem=lambda row: "|".join(sorted((row["a"], row["b"]), key=Decimal)),
            # its trap (the longer decimal is the smaller), not its headline (9.11 vs 9.9, which Compare asks)
            example="Question: Which is bigger, 4.7 or 4.25?\n<think>4.7 is 4.70, and 4.70 is more than 4.25.</think>\n<answer>4.7</answer>",
        ),
        BuiltinTask(
            "arithmetic",
            "Word problems of 2-4 arithmetic steps (buy, sell, share...). Answer: an integer; "
            "answer_raw holds a worked solution ending in '#### N'.",
            _draw_arithmetic,
            example="Question: Tom buys 3 bags of 4 apples and eats 2 of them. How many apples are left?\n<think>3 * 4 = 12 apples. 12 - 2 = 10.</think>\n<answer>10</answer>",
        ),
        BuiltinTask(
            "countdown",
            "Reach a target from 3-4 numbers with + - * /, each number at most once. Answer: the "
            "target; columns numbers, target and one solution.",
            _draw_countdown,
            problem=lambda row: f"{sorted(row['numbers'])} -> {row['target']}",
            example="Question: Using the numbers 3, 7, 4, write an equation that equals 25. You may use +, -, * and /, and each number at most once.\n<think>3 * 7 = 21. 21 + 4 = 25.</think>\n<answer>3 * 7 + 4</answer>",
        ),
        BuiltinTask(
            "addition",
            "Add two 2-digit numbers (47 + 38). A first task for the smallest models. Answer: the sum.",
            _draw_addition,
            problem=lambda row: str(sorted((row["a"], row["b"]))),
            example="Question: What is 47 + 38?\n<think>47 + 38 = 85.</think>\n<answer>85</answer>",
        ),
        BuiltinTask(
            "multiplication",
            "A 1-digit times a 2-digit number (6 * 47); 712 distinct problems. Answer: the product.",
            _draw_multiplication,
            problem=lambda row: str(sorted((row["a"], row["b"]))),
            example="Question: What is 6 * 47?\n<think>6 * 47 = 282.</think>\n<answer>282</answer>",
        ),
        BuiltinTask(
            "largest",
            "The largest of four 2-digit numbers. Answer: that number.",
            _draw_largest,
            problem=lambda row: str(sorted(row["choices"])),
            example="Question: Which is the largest of 31, 74, 58, 19?\n<think>74 is more than 31, 58 and 19.</think>\n<answer>74</answer>",
        ),
        BuiltinTask(
            "chain_arithmetic",
            "A times-table fact then one or two small steps (4 * 3 + 5 - 2): thinking step by step pays "
            "even for a 135M model. Answer: the value; answer_raw holds the steps ending in '#### N'.",
            _draw_chain_arithmetic,
            problem=lambda row: _chain_problem(row["expression"]),
            example="Question: What is 6 * 7 + 5?\n<think>6 * 7 = 42. 42 + 5 = 47.</think>\n<answer>47</answer>",
        ),
        BuiltinTask(
            "long_chain_arithmetic",
            "The same with one to four small steps after the times-table fact (7 * 4 - 6 + 8 + 3): the "
            "base model solves mostly the short ones, so the thought a correct answer needs grows as a "
            "model learns. Answer: the value; column steps: how many (2-5).",
            _draw_long_chain_arithmetic,
            problem=lambda row: _chain_problem(row["expression"]),
            example="Question: What is 3 * 8 - 4 + 9 + 2?\n<think>3 * 8 = 24. 24 - 4 = 20. 20 + 9 = 29. 29 + 2 = 31.</think>\n<answer>31</answer>",
        ),
    )
}


def system_prompt_for(source: str) -> str:
    """The system prompt a data source starts with: the format instruction and one worked question
    of the built-in task's own kind (a decimal comparison before an addition problem showed the
    tags on the wrong kind of question: a new user's try, 2026-12-06); for a built-in task without
    an example, or any other source (a file, a hub dataset), the format instruction alone: no
    example of another kind of question (a walkthrough's upload kept the largest-number example).

    >>> system_prompt_for("my.csv") == system_prompt_for("builtin:nope") == FORMAT_INSTRUCTION
    True
    """
    task = BUILTIN_TASKS.get(source[len(BUILTIN_PREFIX):]) if source.startswith(BUILTIN_PREFIX) else None
    if task is None or not task.example:
        return FORMAT_INSTRUCTION
    return f"{FORMAT_INSTRUCTION}\nExample:\n{task.example}"


def is_a_default_system_prompt(text: str) -> bool:
    """Whether `text` is one of the prompts `system_prompt_for` gives (a recipe's prompt counts when it
    is a task's own, as most configs/smollm2-*.yaml are): the Data tab swaps only such a prompt when
    the user picks another built-in task; one the user wrote stays."""
    defaults = {system_prompt_for(BUILTIN_PREFIX + name).strip() for name in BUILTIN_TASKS} | {FORMAT_INSTRUCTION}
    return text.strip() in defaults
