"""Preset `countdown_equation`: the answer is an arithmetic expression that hits the target.

Owns: the safe evaluation of the model's expression. It is parsed with `ast` and walked node by
node; only numbers, + - * / and parentheses pass (a unary minus too), so nothing the model
writes is ever run as code. Refuses to know how Countdown rows are generated.
"""

from __future__ import annotations

import ast
import operator
from collections import Counter
from fractions import Fraction

from reward_presets._common import column, completion_text, extract_answer

DESCRIPTION = "1 if the answer uses the given numbers (each at most once) with + - * / ( ) to reach the target."
DEFAULT_WEIGHT = 1.0

MAX_EXPRESSION_CHARS = 200
TOLERANCE = 1e-6

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str) -> tuple[Fraction, list[int | float]]:
    """The exact value of an arithmetic expression and the numbers it uses, in order.

    Raises ValueError on anything but numbers, + - * /, parentheses and unary minus, and
    ZeroDivisionError on division by zero.

    >>> evaluate("(25 - 1) * 3 / 4")
    (Fraction(18, 1), [25, 1, 3, 4])
    >>> evaluate("__import__('os')")
    Traceback (most recent call last):
    ...
    ValueError: not allowed in an equation: Call
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    tree = ast.parse(expression.replace("\u00d7", "*").replace("\u00f7", "/").replace("\u2212", "-"), mode="eval")
    used: list[int | float] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # bool is not a number here
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"not allowed in an equation: {type(node).__name__}")

    return walk(tree), used


def _as_list(value) -> list:
    if isinstance(value, str):  # a column read from CSV: "[3, 5, 7]"
        value = ast.literal_eval(value)
    return list(value)


def solves(expression: str | None, numbers, target) -> bool:
    """Whether `expression` uses only `numbers` (each at most once) and equals `target`.

    >>> solves("(6 - 2) * 6", [2, 6, 6], 24), solves("6 * 6 - 2", [2, 6], 34), solves("2 * 12", [2, 6], 24)
    (True, False, False)
    """
    if not expression:
        return False
    available = Counter(Fraction(x) for x in _as_list(numbers))  # a bad data row raises: not the model's fault
    target = float(target)
    left = expression.split("=")[0]  # "(6 - 2) * 6 = 24": judge the left side only
    try:
        value, used = evaluate(left)
        if Counter(Fraction(x) for x in used) - available:  # some number not given, or used too often
            return False
        return abs(float(value) - target) <= TOLERANCE
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return False


def countdown_equation(prompts, completions, numbers=None, target=None, **kwargs) -> list[float]:
    """1.0 when the answer is an equation over the row's `numbers` that equals its `target`.

    Needs the dataset columns `numbers` (a list per row) and `target`. Each number may be used
    at most once; only + - * / and parentheses are allowed; "expr = target" is read as expr.

    >>> countdown_equation(
    ...     prompts=["Use 3, 5, 7 to make 26"] * 3,
    ...     completions=["<answer>3 * 7 + 5</answer>", "<answer>3 * 7 + 7</answer>", "<answer>26</answer>"],
    ...     numbers=[[3, 5, 7]] * 3,
    ...     target=[26] * 3,
    ... )
    [1.0, 0.0, 0.0]
    """
    columns = {"numbers": numbers, "target": target, **kwargs}
    numbers = column(columns, "numbers", "countdown_equation")
    targets = column(columns, "target", "countdown_equation")
    return [
        1.0 if solves(extract_answer(completion_text(c)), nums, t) else 0.0
        for c, nums, t in zip(completions, numbers, targets, strict=True)
    ]
