"""Helpers the reward presets share: completion text, answer extraction, answer comparison.

Owns: turning a completion (a string, or TRL's conversational list of messages) into text,
finding the answer in it (`<answer>` tag, GSM8K's `#### x`, LaTeX `\\boxed{x}`), finding the
think block, and the three ways two answers can agree (same text, same number, same maths).

Refuses to know: weights, registries, processes, the trainer. Nothing here imports torch;
math-verify (sympy) is imported only when an answer first needs it.

    >>> text = completion_text([{"role": "assistant", "content": "<think>6*7</think><answer> 42 </answer>"}])
    >>> extract_answer(text), think_block(text)
    ('42', '6*7')
"""

from __future__ import annotations

import logging
import math
import re
import threading
from fractions import Fraction
from typing import Any

# ---------------------------------------------------------------------------
# Completion text


def completion_text(completion: Any) -> str:
    """The text of one completion, whichever form TRL hands it in.

    A plain string is returned as is. A conversational completion (a list of messages, or one
    message dict) gives the content of its assistant messages joined by newlines; content given
    as a list of parts (`[{"type": "text", "text": ...}]`) gives its text parts.

    >>> completion_text("plain")
    'plain'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "parts"}]}])
    'parts'
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        if not messages:
            return "".join(str(part) for part in completion)
        spoken = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return "\n".join(_content_text(m.get("content")) for m in spoken)
    return str(completion)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # multimodal parts
        return "".join(
            p.get("text", "") if isinstance(p, dict) else str(p) for p in content
        )
    return str(content)


class MissingColumnError(KeyError):
    """A preset needs a dataset column the batch does not have."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def column(kwargs: dict, name: str, reward: str) -> list:
    """The dataset column `name` from a reward function's kwargs, or an error naming both.

    >>> column({"answer": ["1"]}, "answer", "correctness")
    ['1']
    >>> try:
    ...     column({"numbers": [[1]]}, "answer", "correctness")
    ... except MissingColumnError as e:
    ...     print(e)
    correctness needs the dataset column 'answer' (one value per completion); got columns: numbers
    """
    if kwargs.get(name) is None:
        got = ", ".join(sorted(k for k, v in kwargs.items() if v is not None)) or "none"
        raise MissingColumnError(
            f"{reward} needs the dataset column {name!r} (one value per completion); got columns: {got}"
        )
    return kwargs[name]


# ---------------------------------------------------------------------------
# Tags and answers

# "<answer>", then as little as possible (newlines included), then "</answer>"
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# "<think>" or "<reasoning>", as little as possible, then the matching closing tag
THINK_RE = re.compile(r"<(think|reasoning)>(.*?)</\1>", re.DOTALL)
# "####", optional spaces, then the rest of that line (GSM8K's final-answer marker)
GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
BOXED = "\\boxed{"


def extract_answer(text: str) -> str | None:
    """The final answer in `text`, stripped; None if there is none.

    Tried in order: the content of the last `<answer>...</answer>`, the last GSM8K
    `#### x` line, the content of the last `\\boxed{...}` (nested braces allowed).

    >>> extract_answer("<answer>1</answer> then <answer> 2 </answer>")
    '2'
    >>> extract_answer("so the total is\\n#### 1,234")
    '1,234'
    >>> extract_answer("we get $\\\\boxed{\\\\frac{1}{2}}$")
    '\\\\frac{1}{2}'
    >>> extract_answer("no answer here") is None
    True
    """
    found = ANSWER_RE.findall(text)
    if found:
        return found[-1].strip()
    found = [m.strip() for m in GSM8K_RE.findall(text) if m.strip()]
    if found:
        return found[-1]
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    return None


def _last_boxed(text: str) -> str | None:
    start = text.rfind(BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unclosed


def think_block(text: str) -> str | None:
    """The content of the first `<think>` (or `<reasoning>`) block, or None.

    >>> think_block("<reasoning>hmm</reasoning><answer>1</answer>")
    'hmm'
    """
    m = THINK_RE.search(text)
    return m.group(2) if m else None


def reference_answer(value: Any) -> str | None:
    """A dataset's reference answer as text; a GSM8K solution keeps only what follows `####`.

    >>> reference_answer("48 / 2 = 24 clips\\n#### 72"), reference_answer(7), reference_answer(None)
    ('72', '7', None)
    """
    if value is None:
        return None
    text = str(value)
    found = GSM8K_RE.findall(text)
    if found and found[-1].strip():
        return found[-1].strip()
    return text.strip()


# ---------------------------------------------------------------------------
# Comparing answers

# "\boxed{" at the start and "}" at the end, capturing what is inside
_BOXED_WHOLE_RE = re.compile(r"^\\boxed\{(.*)\}$", re.DOTALL)
# "\text{...}" anywhere, capturing its content
_TEXT_RE = re.compile(r"\\text\{([^{}]*)\}")
# a run of whitespace
_SPACES_RE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Answer text reduced for an exact comparison.

    Drops `$...$` / `\\(...\\)` delimiters, an enclosing `\\boxed{}`, `\\text{}` wrappers, a
    trailing full stop and surrounding spaces; collapses whitespace; lower-cases.

    >>> normalize_answer("  $\\\\boxed{Paris}$. ")
    'paris'
    """
    s = text.strip().rstrip(".").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
    m = _BOXED_WHOLE_RE.match(s)
    if m:
        s = m.group(1).strip()
    s = _TEXT_RE.sub(r"\1", s)
    s = s.rstrip(".").strip()
    s = _SPACES_RE.sub(" ", s)
    return s.casefold()


# optional sign, then digits with optional thousands commas ("1,234") or plain digits, an optional
# decimal part, an optional exponent ("1e-3"); or a leading-dot decimal (".5")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?$|^[+-]?\.\d+(?:[eE][+-]?\d+)?$")
# a number, "/", a number: a plain fraction like "1/2" or "-3 / 4"
_FRACTION_RE = re.compile(r"^([+-]?\d+)\s*/\s*(\d+)$")


def parse_number(text: str | None) -> Fraction | None:
    """The number written in `text` as an exact Fraction, or None if it is not a plain number.

    Accepts thousands commas, a currency sign, a trailing percent sign (read as the number
    itself: "50%" is 50), decimals, exponents and plain fractions.

    >>> parse_number("$1,234.50"), parse_number("1/2"), parse_number("-3"), parse_number("x + 1")
    (Fraction(2469, 2), Fraction(1, 2), Fraction(-3, 1), None)
    """
    if text is None:
        return None
    s = normalize_answer(str(text))
    s = s.replace("\u2212", "-").replace("\\$", "").replace("$", "").replace("\\%", "").rstrip("%")
    s = s.replace("\\!", "").replace(" ", "")
    if _NUMBER_RE.match(s):
        try:
            return Fraction(s.replace(",", ""))
        except (ValueError, ZeroDivisionError):
            return None
    m = _FRACTION_RE.match(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    return None


def exact_equal(predicted: str | None, reference: str | None) -> bool:
    """Same text after `normalize_answer`.

    >>> exact_equal("Paris.", "paris"), exact_equal("Lyon", "Paris")
    (True, False)
    """
    if predicted is None or reference is None:
        return False
    p, r = normalize_answer(predicted), normalize_answer(reference)
    return bool(p) and p == r


def numeric_equal(predicted: str | None, reference: str | None, rel_tol: float = 1e-6) -> bool:
    """Same number, within relative tolerance `rel_tol`.

    >>> numeric_equal("3.50", "$3.5"), numeric_equal("1/2", "0.5"), numeric_equal("3", "4")
    (True, True, False)
    """
    p, r = parse_number(predicted), parse_number(reference)
    if p is None or r is None:
        return False
    if p == r:
        return True
    return math.isclose(float(p), float(r), rel_tol=rel_tol)


MAX_MATH_CHARS = 200  # longer answers are not handed to sympy

# Answers that can make sympy compute for minutes (9^{9^9} has ~370 million digits). The signal
# timeout math-verify uses works only in the main thread, so outside it these are the only guard.
_COSTLY_RE = re.compile(
    r"""
      \^\s*\{[^{}]*\^              # a braced exponent that holds another power: 9^{9^9}
    | \^\s*\([^()]*\^              # the same in parentheses: 9^(9^9)
    | \^\s*\d+\s*\^                # a bare chain of powers: 9^9^9
    | (?:\^|\*\*)\s*[{(]?\s*\d{4,} # an exponent of four or more digits: 10^{10000}
    | \*\*\s*\(?\s*\d+\s*\)?\s*\*\*  # a Python-style chain of powers: 9**9**9
    | (?:\d{3,}|[)}])\s*!          # a factorial of a big number or of an expression: (2^{10})!
    """,
    re.VERBOSE,
)


def math_equal(predicted: str | None, reference: str | None) -> bool:
    """Mathematically the same, by math-verify (`\\frac{1}{2}` equals `0.5`, `x+1` equals `1+x`).

    In the main thread math-verify's own 5 s signal timeouts apply; in other threads (where
    signals cannot be used) it runs without them, so answers that look costly are refused in
    every thread, keeping the result the same wherever it is computed.

    >>> math_equal("\\\\frac{1}{2}", "0.5"), math_equal("\\\\sqrt{4}", "3")
    (True, False)
    """
    if not predicted or not reference:
        return False
    if len(predicted) > MAX_MATH_CHARS or _COSTLY_RE.search(predicted):
        return False
    from math_verify import parse, verify  # sympy: imported on first use only

    in_main = threading.current_thread() is threading.main_thread()
    timeout = 5 if in_main else None
    if timeout is None:
        _quiet_timeout_warning()
    try:
        gold = parse(_as_latex(reference), parsing_timeout=timeout)
        pred = parse(_as_latex(predicted), parsing_timeout=timeout)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=timeout))
    except Exception:  # math-verify raises on odd input in some versions; not equal
        return False


class _OwnTimeouts(logging.Filter):
    """math-verify warns once per process that its timeouts are off when a call passes none ("you must
    provide the logic for timeout interruption yourself"): here that logic is the reward worker's time
    limit and `_COSTLY_RE`, so the app's console does not need the warning at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


def _quiet_timeout_warning() -> None:
    for name in ("math_verify.parser", "math_verify.grader"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _OwnTimeouts) for f in log.filters):
            log.addFilter(_OwnTimeouts())


def _as_latex(text: str) -> str:
    # math-verify finds LaTeX such as \sqrt{4} only between math delimiters.
    return text if "$" in text or "\\(" in text or "\\[" in text else f"${text}$"
