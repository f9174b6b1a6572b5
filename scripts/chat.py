"""Chat from a terminal with a model, or a model plus a saved adapter, asked the way its run trained it.

    python -m scripts.chat                                        # the offline default model
    python -m scripts.chat --adapter runs/quickstart/checkpoints/step-000010
    echo "Which is bigger, 9.11 or 9.9?" | python -m scripts.chat --adapter ... --compare

With `--compare` each prompt is answered by the base model and by the adapter, one after the
other, from the same engine (the adapter switched off for the base answer). With `--adapter`
inside a run folder, the system prompt and answer prefix are the run's own unless given.
A thin command line over core.evaluation.chat (`answer`, `prompt_settings`); the engine comes from
the registry (core.engines.registry).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.config import ModelConfig
from core.evaluation.chat import answer, checkpoint_run_config, prompt_settings


def load_for_chat(model: str = "", adapter: str | None = None):
    """(engine, tokenizer, adapter_ref or None) ready to answer prompts."""
    from core.engines.registry import make_engine
    from core.models.loading import load_model_and_tokenizer

    if adapter and not model:
        # a checkpoint remembers its base model
        cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
        model = cfg.get("base_model_name_or_path") or ""
    peft_model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model, lora_r=8, lora_alpha=16))
    engine = make_engine("hf", peft_model, tok)
    ref = engine.load_adapter(adapter) if adapter else None
    return engine, tok, ref


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
