"""What an exported adapter carries: its files, an adapter_config.json that names the base model
by its Hub id (not this machine's cache folder), and a model card with the training settings.

Owns: the list of files a download or a Hub push holds, and their contents.
Refuses to know: where they go (a zip, a Hub repo: core/app/manager.py), how they were trained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from core.models.bundled import BUNDLED_HUB_ID

NOT_EXPORTED = ("trainer_state.pt", "state.json", "README.md")  # resume state stays with the run


def base_model_id(name_or_path: str) -> str:
    """The base model as someone else can load it: the Hub id where one is known.

    >>> base_model_id("")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> base_model_id("/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/abc")
    'Qwen/Qwen2.5-0.5B-Instruct'
    >>> base_model_id("/root/.cache/aha-studio/models/SmolLM2-135M-Instruct")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> base_model_id("Qwen/Qwen2.5-1.5B-Instruct")
    'Qwen/Qwen2.5-1.5B-Instruct'
    """
    name = (name_or_path or "").rstrip("/")
    if not name:
        return BUNDLED_HUB_ID
    cached = re.search(r"models--([^/]+?)--([^/]+)", name)
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    if name.split("/")[-1] == BUNDLED_HUB_ID.split("/")[-1]:
        return BUNDLED_HUB_ID
    return name


def model_card(base: str, run_name: str, step: str, config: dict) -> str:
    """A README with Hub metadata (base_model, library_name, tags) and how the adapter was trained."""
    a, r, d = config.get("algorithm", {}), config.get("rewards", {}), config.get("data", {})
    meta = {"base_model": base, "library_name": "peft", "tags": ["lora", "grpo", "aha-studio", "reinforcement-learning"]}
    rows = [("algorithm", f"{a.get('algorithm', '?')} (loss {a.get('loss_type', '?')}, beta {a.get('beta', '?')})"),
            ("steps", step), ("learning rate", a.get("learning_rate", "?")),
            ("completions per prompt", a.get("num_generations", "?")),
            ("prompts per step", a.get("prompts_per_step", "?")),
            ("max completion tokens", a.get("max_completion_length", "?")),
            ("rewards", ", ".join(map(str, r.get("names", []))) or "?"),
            ("data", Path(str(d.get("source", "?"))).name)]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    prefix = d.get("response_prefix") or ""
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
            f"# {run_name} ({step})\n\nA LoRA adapter for `{base}`, trained with GRPO-family reinforcement "
            f"learning in Aha Studio.\n\n| setting | value |\n|---|---|\n{table}\n\n"
            f"The run's whole config is in `aha_config.yaml`.\n\n```python\nfrom peft import PeftModel\n"
            f"from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"base = AutoModelForCausalLM.from_pretrained(\"{base}\")\n"
            f"model = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n"
            f"tokenizer = AutoTokenizer.from_pretrained(\"{base}\")\n```\n"
            + (f"\nIt was trained with the answer starting with `{prefix}`: start the assistant's turn with it too.\n"
               if prefix else ""))


def export_files(checkpoint: Path, base_name_or_path: str) -> dict[str, bytes]:
    """{file name: contents} for an exported adapter of `checkpoint` (runs/<run>/checkpoints/step-N)."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent.parent
    base = base_model_id(base_name_or_path)
    out: dict[str, bytes] = {}
    for f in sorted(checkpoint.iterdir()):
        if f.is_file() and f.name not in NOT_EXPORTED:
            out[f.name] = f.read_bytes()
    if "adapter_config.json" in out:
        cfg = json.loads(out["adapter_config.json"])
        cfg["base_model_name_or_path"] = base
        out["adapter_config.json"] = json.dumps(cfg, indent=2).encode()
    config = {}
    if (run_dir / "config.yaml").exists():
        out["aha_config.yaml"] = (run_dir / "config.yaml").read_bytes()
        config = yaml.safe_load(out["aha_config.yaml"]) or {}
    out["README.md"] = model_card(base, run_dir.name, checkpoint.name, config).encode()
    return out
