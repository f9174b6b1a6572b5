"""What every tab shares: the context it is built with and the one way errors reach a person.

Owns: `Ctx` (the manager, the config form, components other tabs need) and `warn`, which turns
an exception into a `gr.Warning` toast plus an inline message, so no action crashes the page.

Refuses to know: any particular tab.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import gradio as gr

from core.app.manager import RunManager
from core.errors import AhaError
from ui.forms import Form
from ui.i18n import FIELD_LABELS

log = logging.getLogger("aha.ui")


@dataclass
class Ctx:
    manager: RunManager
    form: Form
    shared: dict = field(default_factory=dict)  # components wired across tabs, by name
    late: list = field(default_factory=list)  # wiring that needs every tab's widgets: run at the end

    def after_all_tabs(self, fn) -> None:
        """Run `fn()` once every tab is built (events whose inputs are the whole form)."""
        self.late.append(fn)


_FIELD = re.compile(r"(?<![\w./`-])(" + "|".join(re.escape(k) for k in sorted(FIELD_LABELS, key=len, reverse=True))
                    + r")(?![\w`/-])")


def with_labels(message: str) -> str:
    """A config field's name in a message, with the label the page shows beside it, once per field:
    'algorithm.num_generations = 1: ...' -> '"Completions per question (G)" (algorithm.num_generations) = 1: ...'
    (a new user, 2026-12-06, met the names and could not find the boxes). Names in `code` stay as they are."""
    seen = set()

    def label(m: re.Match) -> str:
        key = m.group(1)
        if key in seen:
            return key
        seen.add(key)
        return f"“{FIELD_LABELS[key][0]}” ({key})"

    return _FIELD.sub(label, message)


def warn(e: BaseException, shown_as: dict[str, str] | None = None) -> str:
    """Show `e` as a warning toast; return the inline text (Markdown) for the same message. `shown_as`:
    text to show otherwise in both, e.g. {server copy's path: the file's name as the user uploaded it}."""
    if isinstance(e, AhaError):  # written for a person: shown as it is, a field with its label
        message = str(e)
        labelled = True
    else:  # a bug, not the user's fault: keep the traceback in the log, tell the user briefly
        log.exception("unexpected error in a UI action")
        message = f"Unexpected error: {type(e).__name__}: {e}"
        labelled = False
    for text, shown_text in (shown_as or {}).items():
        message = message.replace(text, shown_text)
    first, _, details = message.partition("\n\n")  # a reward error carries the user's traceback, left as is
    first = with_labels(first) if labelled else first
    # angle brackets as text: Python names code it did not read from a file "<custom reward code>",
    # which Markdown and the toast took for a tag and dropped with the rest of the line (a new user
    # saw "SyntaxError: expected ':' ("); inside `code` Markdown shows them as they are
    gr.Warning(_escape(first)[:500])
    shown = "".join(part if part.startswith("`") else _escape(part) for part in re.split(r"(`[^`]*`)", first))
    return f"⚠️ {shown}" + (f"\n\n```\n{details}\n```" if details else "")


def _escape(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")
