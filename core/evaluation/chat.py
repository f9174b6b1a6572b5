"""Chat with a model, or a model plus a saved adapter: asked the way its run trained it.

Owns: the one road from a chat question to an answer (`answer`: the prompt rendered with a system
prompt, a chat template and an answer prefix, generated within the engine's context, the prefix
put back in front) and what a trained adapter expects to be asked with (`prompt_settings`: the
system prompt, answer prefix and chat template of its run's config.yaml). A model trained on
"<system prompt> ... <think>" and asked without them answers something else (issue 30: a tuned
model at 98.5% held-out accuracy answered garbage in chat under another system prompt), so both
the app's Compare tab (through `core.app.playground`) and the chat CLI (scripts/chat.py) ask a checkpoint as its run did.

Refuses to know: which model or adapter is loaded (the caller passes an engine and an adapter
reference), the UI. The command line is scripts/chat.py.
"""

from __future__ import annotations

from pathlib import Path

from core.config import DEFAULT_SYSTEM_PROMPT, Config, ConfigError
from core.errors import AhaError


class QuestionTooLong(AhaError, ValueError):
    """A question the engine's context cannot hold: said to the person as it is (no exception type)."""


def prompt_settings(cfg: Config | None) -> dict:
    """What a model trained with `cfg` was asked with: {system_prompt, response_prefix, chat_template,
    stop_at} (the defaults without a config).

    >>> cfg = Config()
    >>> cfg.data.system_prompt, cfg.data.response_prefix = "Be brief.", "<think>"
    >>> prompt_settings(cfg)
    {'system_prompt': 'Be brief.', 'response_prefix': '<think>', 'chat_template': '', 'stop_at': '</answer>'}
    """
    data = (cfg or Config()).data
    return {"system_prompt": data.system_prompt, "response_prefix": data.response_prefix,
            "chat_template": data.chat_template, "stop_at": data.stop_at}


def checkpoint_run_config(checkpoint: str | Path) -> Config | None:
    """The config.yaml of the run a checkpoint belongs to (runs/<run>/checkpoints/step-N), or None
    when there is none or it does not read back as a config."""
    from core.runs.folders import RunDir

    run = RunDir.of_checkpoint(checkpoint)
    try:
        return run.load_config() if run.config_path.exists() else None
    except ConfigError:
        return None


def answer(engine, tok, prompt: str, *, adapter=None, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
           response_prefix: str = "", chat_template: str = "", max_tokens: int = 256,
           temperature: float = 0.0, stop_at: str = "") -> str:
    """One answer to `prompt`, `response_prefix` included (the model continues from it, as in
    training), at most `max_tokens` and never past the engine's context (vLLM's max_model_len),
    ended at `stop_at` as the run's completions were."""
    from core.data import build_messages, prompt_ids
    from core.engines.base import SamplingSettings, stop_texts

    # 1) the prompt as training rendered it: system message, template, the answer's first words
    # whole: the token budget below is what gives way to the engine's context
    ids = prompt_ids(tok, build_messages(prompt, system_prompt or ""), chat_template, response_prefix, max_length=None)
    # 2) a token budget that fits the engine's context
    limit = engine.limits()["max_model_len"]
    if limit and len(ids) >= limit:  # vLLM would refuse it in its own words
        raise QuestionTooLong(f"the question takes {len(ids):,} tokens with the system prompt and the answer's first "
                         f"words, and the model's engine holds {limit:,} (question and answer together): "
                         "shorten it")
    if limit:
        max_tokens = max(1, min(max_tokens, limit - len(ids)))
    # 3) generate; the answer reads as the model wrote it, from the prefix on
    out = engine.generate([ids], SamplingSettings(n=1, temperature=float(temperature), max_tokens=int(max_tokens),
                                                  stop=stop_texts(stop_at)),
                          adapter)
    return response_prefix + out[0][0].text
