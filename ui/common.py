"""What every tab shares: the context it is built with and the one way errors reach a person.

Owns: `Ctx` (the manager, the config form, components other tabs need) and `warn`, which turns
an exception into a `gr.Warning` toast plus an inline message, so no action crashes the page.

Refuses to know: any particular tab.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import gradio as gr

from core.app.manager import RunManager
from core.errors import AhaError
from ui.forms import Form

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


def warn(e: BaseException) -> str:
    """Show `e` as a warning toast; return the inline text (Markdown) for the same message."""
    if isinstance(e, AhaError):  # written for a person: shown as it is
        message = str(e)
    else:  # a bug, not the user's fault: keep the traceback in the log, tell the user briefly
        log.exception("unexpected error in a UI action")
        message = f"Unexpected error: {type(e).__name__}: {e}"
    first, _, details = message.partition("\n\n")  # a reward error carries the user's traceback
    gr.Warning(first[:500])
    return f"⚠️ {first}" + (f"\n\n```\n{details}\n```" if details else "")
