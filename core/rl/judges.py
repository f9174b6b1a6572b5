"""Pairwise judges for Online DPO: given a question and two answers, which one is better?

Owns: the judge prompt, reading a verdict out of free text (`parse_verdict`), and two judges
with one verb, `compare(questions, answers_a, answers_b) -> [0 (A), 1 (B) or None (no verdict)]`:
  - `EngineJudge`: the run's own base model, through the engine with the adapter switched off,
    answering greedily (`algorithm.judge = "self"`);
  - `HTTPJudge`: any OpenAI-compatible chat endpoint (`algorithm.judge = "http://..."`), called
    with the standard library, a few requests at a time.
A judge that cannot be reached raises `RewardError`, so the training loop pauses with the reason
(as it does for a broken reward function) and resumes the same step once it is fixed.

The operator's key (OPENAI_API_KEY) goes only to a judge the operator named: OpenAI's API, or an
address listed in AHA_JUDGE_KEY_URLS (comma-separated URL prefixes). Anyone logged in may set the
judge URL, so without this any of them could have the key sent to an address of their own
(issue 29); a judge elsewhere is asked without a key.

Refuses to know: which answers get compared (that is `core.rl.online_dpo`), losses, adapters.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from core.rewards.base import RewardError

JUDGE_SYSTEM = "You are a fair and careful judge of answers to questions."
JUDGE_QUESTION = "Which answer is better, A or B? Reply with the single letter A or B."


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[dict]:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": f"Question:\n{question}\n\nAnswer A:\n{answer_a}\n\nAnswer B:\n{answer_b}\n\n"
                                    f"{JUDGE_QUESTION}"},
    ]


# a leading letter A or B standing alone ("B", "A.", "**B**", "B) because ..."), not "A or B"
_LEADING = re.compile(r"^\W*([AB])\b(?!\s+or\b)")
# "answer B", "Option A", "Answer: B" anywhere
_NAMED = re.compile(r"\b(?:answer|option|choice)\s*:?\s*\**([AB])\b", re.IGNORECASE)
# the letter alone as a word anywhere ("I pick B")
_ALONE = re.compile(r"\b([AB])\b")


def parse_verdict(text: str) -> int | None:
    """0 when the judge picked A, 1 for B, None when the text names neither (or both, ambiguously).

    >>> [parse_verdict(t) for t in ["B", " A.", "**B** is better", "Answer: A", "I pick B", "b", "both", "A or B"]]
    [1, 0, 1, 0, 1, 1, None, None]
    """
    if text.strip(" \t\n.*)") in ("a", "b"):  # a lone lower-case letter
        return "ab".index(text.strip(" \t\n.*)"))
    for pattern in (_LEADING, _NAMED):
        found = {m.upper() for m in pattern.findall(text)}
        if len(found) == 1:
            return "AB".index(found.pop())
        if len(found) > 1:
            return None
    found = set(_ALONE.findall(text))
    return "AB".index(found.pop()) if len(found) == 1 else None


# ---------------------------------------------------------------------------


class EngineJudge:
    """The base model (adapter off) as the judge, through the run's own engine, greedy."""

    def __init__(self, engine, tokenizer, chat_template: str = "", max_tokens: int = 8):
        self.engine, self.tokenizer = engine, tokenizer
        self.chat_template, self.max_tokens = chat_template, max_tokens

    def compare(self, questions: list[str], answers_a: list[str], answers_b: list[str]) -> list[int | None]:
        from core.data import prompt_ids
        from core.engines.base import SamplingSettings

        if not questions:
            return []
        prompts = []
        for q, a, b in zip(questions, answers_a, answers_b):
            # whole: the question and both answers are what it judges
            prompts.append(prompt_ids(self.tokenizer, judge_messages(q, a, b), self.chat_template, max_length=None))
        out = self.engine.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_tokens=self.max_tokens),
                                   adapter=None)  # (K, 1)
        return [parse_verdict(group[0].text) for group in out]


KEY_URLS_ENV = "AHA_JUDGE_KEY_URLS"
DEFAULT_KEY_URLS = ("https://api.openai.com/",)


def _url_parts(url: str) -> tuple[str, str, int | None, str]:
    parsed = urllib.parse.urlsplit(url.strip())
    try:
        port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme.lower())
    except ValueError:  # a port that is not a number
        port = -1
    return parsed.scheme.lower(), (parsed.hostname or "").lower(), port, parsed.path or "/"


def key_allowed(endpoint: str, allowed: str | None = None) -> bool:
    """Whether the operator's API key may go to `endpoint`: its scheme, host and port are those of
    an allowed URL and its path lies under that URL's path. `allowed` defaults to OpenAI's API and
    $AHA_JUDGE_KEY_URLS.

    >>> key_allowed("https://api.openai.com/v1/chat/completions")
    True
    >>> key_allowed("https://api.openai.com.evil.example/v1/chat/completions")
    False
    >>> key_allowed("http://127.0.0.1:7997/v1/chat/completions", "http://127.0.0.1:8000/v1")
    False
    >>> key_allowed("http://127.0.0.1:8000/v1/chat/completions", "http://127.0.0.1:8000/v1")
    True
    """
    listed = os.environ.get(KEY_URLS_ENV, "") if allowed is None else allowed
    prefixes = [*(DEFAULT_KEY_URLS if allowed is None else ()), *(u for u in listed.split(",") if u.strip())]
    scheme, host, port, path = _url_parts(endpoint)
    for prefix in prefixes:
        p_scheme, p_host, p_port, p_path = _url_parts(prefix)
        if (scheme, host, port) == (p_scheme, p_host, p_port) and host and (
                path == p_path or path.startswith(p_path.rstrip("/") + "/")):
            return True
    return False


class HTTPJudge:
    """An OpenAI-compatible chat endpoint as the judge. `url` is the API base (".../v1") or the
    full ".../chat/completions"; the key, if any, comes from OPENAI_API_KEY and is sent only
    where `key_allowed` says."""

    def __init__(self, url: str, model: str = "", *, timeout_s: float = 60.0, max_workers: int = 8,
                 max_tokens: int = 8):
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.timeout_s, self.max_workers, self.max_tokens = model, timeout_s, max_workers, max_tokens

    def _ask(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY") and key_allowed(self.endpoint):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read())
            return reply["choices"][0]["message"]["content"] or ""
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise RewardError(f"judge {self.endpoint} failed: {type(e).__name__}: {e}", reward_name="judge") from e

    def compare(self, questions: list[str], answers_a: list[str], answers_b: list[str]) -> list[int | None]:
        messages = [judge_messages(q, a, b) for q, a, b in zip(questions, answers_a, answers_b)]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            return [parse_verdict(text) for text in pool.map(self._ask, messages)]


def make_judge(cfg, engine, tokenizer):
    """The judge named by `cfg.algorithm.judge`, or None when the rewards rank the completions."""
    a = cfg.algorithm
    if not a.judge:
        return None
    if a.judge == "self":
        return EngineJudge(engine, tokenizer, cfg.data.chat_template)
    return HTTPJudge(a.judge, a.judge_model)
