"""The one base class of errors written for a person.

Owns: `AhaError`, and `ConfigError` (the config room's own: `core.config` and `core.config_text`
both raise it). An exception of this class (every room's own error derives from it: a bad
config, data, a reward, a model, a checkpoint, an engine that cannot serve a run, a path a request
may not name) carries a message that says what went wrong and what to do, and is shown as it is;
any other exception is a bug, shown with its type and logged with its traceback.
Refuses to know: any room's errors in particular (they live beside the code that raises them).
"""

from __future__ import annotations


class AhaError(Exception):
    """An error whose message is for the person using the app (shown as is, without its type)."""


class ConfigError(AhaError, ValueError):
    """A config value is out of range; the message names the field."""


def user_message(e: BaseException) -> str:
    """The text a person sees for `e`: an AhaError's own message; anything else with its type.

    >>> user_message(AhaError("pick a smaller rank"))
    'pick a smaller rank'
    >>> user_message(KeyError("x"))
    "KeyError: 'x'"
    """
    text = str(e).strip() or type(e).__name__
    return text if isinstance(e, AhaError) else f"{type(e).__name__}: {text}"
