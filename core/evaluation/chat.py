"""Chat with a model, or a model plus a saved adapter: asked the way its run trained it.

Owns: the one road from a chat question to an answer (`answer`: the prompt rendered with a system
prompt, a chat template and an answer prefix, generated within the engine's context, the prefix
put back in front) and what a trained adapter expects to be asked with (`prompt_settings`: the
system prompt, answer prefix and chat template of its run's config.yaml). A model trained on
"<system prompt> ... <think>" and asked without them answers something else (issue 30: a tuned
model at 98.5% held-out accuracy answered garbage in chat under another system prompt), so both
the app's Compare tab (through `core.app.manager`) and this CLI ask a checkpoint as its run did.

Refuses to know: which model or adapter is loaded (the caller passes an engine and an adapter
reference), the UI.

    python -m core.evaluation.chat                                        # the offline default model
    python -m core.evaluation.chat --adapter runs/quickstart/checkpoints/step-000010
    echo "Which is bigger, 9.11 or 9.9?" | python -m core.evaluation.chat --adapter ... --compare

With `--compare` each prompt is answered by the base model and by the adapter, one after the
other, from the same engine (the adapter switched off for the base answer). With `--adapter`
inside a run folder, the system prompt and answer prefix are the run's own unless given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.config import DEFAULT_SYSTEM_PROMPT, Config, ConfigError, ModelConfig


def prompt_settings(cfg: Config | None) -> dict:
    """What a model trained with `cfg` was asked with: {system_prompt, response_prefix, chat_template}
    (the defaults without a config).

    >>> cfg = Config()
    >>> cfg.data.system_prompt, cfg.data.response_prefix = "Be brief.", "<think>"
    >>> prompt_settings(cfg)
    {'system_prompt': 'Be brief.', 'response_prefix': '<think>', 'chat_template': ''}
    """
    data = (cfg or Config()).data
    return {"system_prompt": data.system_prompt, "response_prefix": data.response_prefix,
            "chat_template": data.chat_template}


def checkpoint_run_config(checkpoint: str | Path) -> Config | None:
    """The config.yaml of the run a checkpoint belongs to (runs/<run>/checkpoints/step-N), or None
    when there is none or it does not read back as a config."""
    from core.runs.folders import RunDir

    path = RunDir.of_checkpoint(checkpoint).config_path
    try:
        return Config.load(path) if path.exists() else None
    except ConfigError:
        return None


def load_for_chat(model: str = "", adapter: str | None = None):
    """(engine, tokenizer, adapter_ref or None) ready to answer prompts."""
    from core.engines.hf import HFEngine
    from core.models.loading import load_model_and_tokenizer

    if adapter and not model:
        # a checkpoint remembers its base model
        cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
        model = cfg.get("base_model_name_or_path") or ""
    peft_model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model, lora_r=8, lora_alpha=16))
    engine = HFEngine(peft_model, tok)
    ref = engine.load_adapter(adapter) if adapter else None
    return engine, tok, ref


def answer(engine, tok, prompt: str, *, adapter=None, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
           response_prefix: str = "", chat_template: str = "", max_tokens: int = 256,
           temperature: float = 0.0) -> str:
    """One answer to `prompt`, `response_prefix` included (the model continues from it, as in
    training), at most `max_tokens` and never past the engine's context (vLLM's max_model_len)."""
    from core.data import build_messages, prompt_ids
    from core.engines.base import SamplingSettings

    # 1) the prompt as training rendered it: system message, template, the answer's first words
    # whole: the token budget below is what gives way to the engine's context
    ids = prompt_ids(tok, build_messages(prompt, system_prompt or ""), chat_template, response_prefix, max_length=None)
    # 2) a token budget that fits the engine's context
    limit = engine.limits()["max_model_len"]
    if limit:
        max_tokens = max(1, min(max_tokens, limit - len(ids)))
    # 3) generate; the answer reads as the model wrote it, from the prefix on
    out = engine.generate([ids], SamplingSettings(n=1, temperature=float(temperature), max_tokens=int(max_tokens)),
                          adapter)
    return response_prefix + out[0][0].text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="hub id or folder (default: the offline model, or the adapter's base)")
    ap.add_argument("--adapter", help="a checkpoint folder holding adapter_model.safetensors")
    ap.add_argument("--compare", action="store_true", help="answer with the base model too")
    ap.add_argument("--system", default=None, help="system prompt (default: the adapter's run's, else the default)")
    ap.add_argument("--prefix", default=None, help="answer prefix, e.g. '<think>' (default: the adapter's run's)")
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args(argv)
    asked = prompt_settings(checkpoint_run_config(args.adapter) if args.adapter else None)
    if args.system is not None:
        asked["system_prompt"] = args.system
    if args.prefix is not None:
        asked["response_prefix"] = args.prefix
    engine, tok, ref = load_for_chat(args.model, args.adapter)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        prompt = line.strip()
        if not prompt:
            continue
        if args.compare or ref is None:
            print("base>", answer(engine, tok, prompt, adapter=None, max_tokens=args.max_tokens, **asked), flush=True)
        if ref is not None:
            print("tuned>", answer(engine, tok, prompt, adapter=ref, max_tokens=args.max_tokens, **asked), flush=True)


if __name__ == "__main__":
    sys.exit(main())
