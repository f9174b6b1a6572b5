"""Chat with a model, or a model plus a saved adapter, from the terminal.

    python -m core.chat                                        # the offline default model
    python -m core.chat --adapter runs/quickstart/checkpoints/step-000005
    echo "Which is bigger, 9.11 or 9.9?" | python -m core.chat --adapter ... --compare

With `--compare` each prompt is answered by the base model and by the adapter, one after the
other, from the same engine (the adapter switched off for the base answer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.config import DEFAULT_SYSTEM_PROMPT, ModelConfig


def load_for_chat(model: str = "", adapter: str | None = None):
    """(engine, tokenizer, adapter_ref or None) ready to answer prompts."""
    from core.engines.hf import HFEngine
    from core.models import load_model_and_tokenizer

    if adapter and not model:
        # a checkpoint remembers its base model
        cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
        model = cfg.get("base_model_name_or_path") or ""
    peft_model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model, lora_r=8, lora_alpha=16))
    engine = HFEngine(peft_model, tok)
    ref = engine.load_adapter(adapter) if adapter else None
    return engine, tok, ref


def answer(engine, tok, prompt: str, *, adapter=None, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
           max_tokens: int = 256, temperature: float = 0.0) -> str:
    from core.data import build_messages, render_prompt
    from core.engines import SamplingSettings

    ids = tok(render_prompt(tok, build_messages(prompt, system_prompt)), add_special_tokens=False)["input_ids"]
    out = engine.generate([ids], SamplingSettings(n=1, temperature=temperature, max_tokens=max_tokens), adapter)
    return out[0][0].text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="hub id or folder (default: the offline model, or the adapter's base)")
    ap.add_argument("--adapter", help="a checkpoint folder holding adapter_model.safetensors")
    ap.add_argument("--compare", action="store_true", help="answer with the base model too")
    ap.add_argument("--system", default=DEFAULT_SYSTEM_PROMPT)
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args(argv)
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
            print("base>", answer(engine, tok, prompt, adapter=None, system_prompt=args.system,
                                  max_tokens=args.max_tokens), flush=True)
        if ref is not None:
            print("tuned>", answer(engine, tok, prompt, adapter=ref, system_prompt=args.system,
                                   max_tokens=args.max_tokens), flush=True)


if __name__ == "__main__":
    sys.exit(main())
