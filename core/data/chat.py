"""From a question to the exact text the model is prompted with.

Owns: the conversational form of a prompt (TRL's list of {role, content} messages), the choice
of chat template (the user's, else the tokenizer's, else `DEFAULT_CHAT_TEMPLATE` for base models
that ship none), and the preview table the UI shows before a run starts.

Refuses to know: where questions come from, tokenization beyond `apply_chat_template`, and
models. With `tokenizer=None` the template is rendered here with the same Jinja settings
transformers uses, so the UI can preview before a model is loaded.

A chat template is code a user typed (or a hub model shipped): Jinja's sandbox keeps it from
the app's objects but not from looping for minutes (`range` is capped at 100,000 items, so two
nested loops make 10^10 turns; issue 29 measured a 21 s preview). Each render therefore runs
under a deadline of `RENDER_SECONDS`, checked on every line the compiled template executes.

    >>> build_messages("Which is bigger, 9.11 or 9.9?", "Answer briefly.")
    [{'role': 'system', 'content': 'Answer briefly.'}, {'role': 'user', 'content': 'Which is bigger, 9.11 or 9.9?'}]
    >>> print(render_prompt(None, build_messages("2 + 2?", "")))
    <|im_start|>user
    2 + 2?<|im_end|>
    <|im_start|>assistant
    <BLANKLINE>
"""

from __future__ import annotations

import contextlib
import sys
import time

import jinja2
import pandas as pd
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .base import DataError, TaskData

# ChatML's markers, as plain text for a base model: any model can read them, and a model that
# was trained on ChatML (Qwen, SmolLM) sees its own format.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A real chat template renders in about a millisecond; one that runs for a second is looping.
RENDER_SECONDS = 1.0


class TemplateTimeout(Exception):
    """A chat template ran past its deadline (deliberately not a jinja2.TemplateError, so the
    system-message fallback does not render it a second time)."""


# ---------------------------------------------------------------------------
def build_messages(question: str, system_prompt: str) -> list[dict]:
    """TRL's conversational prompt: a system message (left out when empty), then the question."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    return messages + [{"role": "user", "content": question}]


def render_prompt(tokenizer, messages: list[dict], chat_template: str = "", response_prefix: str = "") -> str:
    """The prompt text, ending where the assistant starts its answer (after `response_prefix`, if any).

    Template: `chat_template` if given, else the tokenizer's own, else `DEFAULT_CHAT_TEMPLATE`.
    A template that refuses a system message (Gemma's, older Mistral's) gets the system text
    folded into the first user message instead.
    """
    template = chat_template if chat_template.strip() else None
    if template is None and not getattr(tokenizer, "chat_template", None):
        template = DEFAULT_CHAT_TEMPLATE
    which = "the chat template given" if chat_template.strip() else "the tokenizer's chat template"
    try:
        with _deadline(RENDER_SECONDS):
            text = _render_or_fold_system(tokenizer, messages, template, which)
    except TemplateTimeout:
        raise DataError(f"{which} took more than {RENDER_SECONDS:g} s to render one prompt, so it was "
                        "stopped: it loops too long (nested for-loops over range()?); a chat template "
                        "should only join the messages") from None
    except RecursionError:
        raise DataError(f"{which} calls itself without end (a macro that recurses)") from None
    return text + response_prefix


def _render_or_fold_system(tokenizer, messages: list[dict], template, which: str) -> str:
    try:
        return _apply(tokenizer, messages, template)
    except jinja2.TemplateError as e:
        if len(messages) > 1 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
            merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]
            try:
                return _apply(tokenizer, merged + messages[2:], template)
            except jinja2.TemplateError:
                pass
        line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise DataError(f"{which} failed{line}: {e}") from e



def prompt_ids(tokenizer, messages: list[dict], chat_template: str = "", response_prefix: str = "", *,
               max_length: int | None) -> list[int]:
    """The token ids a model is prompted with — the one way a question becomes them, for training,
    evaluation, retention, the judge, chat and reward trials: `messages` rendered (`render_prompt`)
    and tokenised without adding special tokens (the template writes them). `max_length`: keep the
    last that many tokens (training cuts from the left, so the answer's start stays), or None for
    the whole prompt; every caller says which.
    """
    ids = tokenizer(render_prompt(tokenizer, messages, chat_template, response_prefix),
                    add_special_tokens=False)["input_ids"]
    return ids[-max_length:] if max_length else ids

def preview(task: TaskData, tokenizer, system_prompt: str, chat_template: str = "", n: int = 5,
            response_prefix: str = "", rows: list[dict] | None = None) -> pd.DataFrame:
    """The first `n` training rows (or `rows`) as the model will see them: question, answer, rendered prompt."""
    rows = (rows if rows is not None else (task.train or task.eval))[:n]
    return pd.DataFrame(
        {
            "question": [r["question"] for r in rows],
            "answer": [r["answer"] for r in rows],
            "rendered_prompt": [
                render_prompt(tokenizer, build_messages(r["question"], system_prompt), chat_template, response_prefix)
                for r in rows
            ],
        },
        columns=["question", "answer", "rendered_prompt"],
    )


# ---------------------------------------------------------------------------
def _apply(tokenizer, messages: list[dict], template: str | None) -> str:
    if tokenizer is None:
        return _render(template or DEFAULT_CHAT_TEMPLATE, messages)
    return tokenizer.apply_chat_template(
        messages, chat_template=template, add_generation_prompt=True, tokenize=False
    )


def _render(template: str, messages: list[dict]) -> str:
    # The settings of transformers' own renderer (trim_blocks, lstrip_blocks, loopcontrols,
    # raise_exception), so a preview without a tokenizer matches the real prompt.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def _raise_exception(message: str):
    raise jinja2.TemplateError(message)


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise TemplateTimeout inside a compiled Jinja template (ours or transformers') that runs
    past `seconds`. Jinja compiles a template to Python code named "<template>"; a trace on this
    thread follows only those frames, whose every loop turn is a line event. Any tracer already
    set (a debugger, coverage) is paused for the render and put back after it. The clock is the
    thread's own CPU time: waiting for the GIL (a busy training or UI thread) never counts."""
    end = time.thread_time() + seconds

    def on_line(frame, event, arg):
        if time.thread_time() > end:
            raise TemplateTimeout
        return on_line

    def on_call(frame, event, arg):
        return on_line if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)
