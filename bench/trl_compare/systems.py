"""What is measured: the systems, the workload's defaults, the model's shape and the lengths.

Owns: the names of the systems (ours, ours-fast, ours-4bit, trl, trl-vllm and the Unsloth ones) and
their labels, which of them run which side (`OURS_SYSTEMS`, `UNSLOTH_SYSTEMS`, `FOUR_BIT`), the
LoRA targets, the default and --tiny model configs, the workload knobs' defaults (GPU, --tiny),
where results go, parsing and fitting completion lengths, why a system cannot run on this machine
(`cannot_run`), the base weights that working memory is counted above, the GPUs' memory bandwidth
(`memory_bandwidth_gbs`), and the one log line format (`log`, `short`).

Refuses to know: how any system is run or measured, and how results are rendered.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NAME = "trl_compare"
GIB = 2**30
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SYSTEMS = ("ours", "ours-fast", "ours-4bit", "trl", "trl-vllm", "unsloth", "unsloth-4bit", "unsloth-defaults")
# all run child_ours: ours-4bit with model.load_in_4bit, ours-fast with algorithm.auto_micro_batch 'fastest'
OURS_SYSTEMS = ("ours", "ours-fast", "ours-4bit")
# all run child_unsloth in their own Python (UNSLOTH_ENV first): unsloth-4bit with load_in_4bit,
# unsloth-defaults at Unsloth's own gpu_memory_utilization (its KV cache is then what that share leaves)
UNSLOTH_SYSTEMS = ("unsloth", "unsloth-4bit", "unsloth-defaults")
FOUR_BIT = ("ours-4bit", "unsloth-4bit")
SYSTEM_LABELS = {
    "ours": "ours (vLLM engine; lowest-memory mode)",
    "ours-fast": "ours, fast mode (auto micro-batch 'fastest')",
    "ours-4bit": "ours, 4-bit NF4 base (vLLM engine)",
    "trl": "TRL GRPOTrainer, use_vllm=False",
    "trl-vllm": "TRL GRPOTrainer, vLLM colocate",
    "unsloth": "Unsloth + TRL GRPOTrainer, fast_inference (its KV cache sized as ours)",
    "unsloth-4bit": "Unsloth, 4-bit base, fast_inference (its KV cache sized as ours)",
    "unsloth-defaults": "Unsloth + TRL, fast_inference at its own defaults",
}
# the Unsloth part of the GPU kit (../shared/devkit/README.md): Unsloth pins trl<=1.15, so its
# process alone puts this folder first on its path
UNSLOTH_ENV = "/tmp/unsloth-site/env.sh"
DEFAULT_CONFIG = ROOT / "bench" / "configs" / "qwen2.5-1.5b.json"
RESULTS = ROOT / "bench" / "results"

# the --tiny model (CPU smoke test): Qwen2-shaped, hidden 64, 2 layers, special ids at the end as in Qwen
TINY_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
               "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
               "num_key_value_heads": 1, "vocab_size": 512, "max_position_embeddings": 2048,
               "tie_word_embeddings": True, "bos_token_id": 509, "eos_token_id": 511, "rms_norm_eps": 1e-6,
               "rope_theta": 1000000.0, "hidden_act": "silu", "torch_dtype": "float32"}

# (GPU default, --tiny default) of the workload knobs
WORKLOAD = {
    "lengths": ("1024,4096", "16,32"),
    "prompt_len": (256, 32),
    "generations": (8, 8),
    "steps": (2, 2),
    "timeout_s": (540.0, 300.0),
    "budget_s": (570.0, 1500.0),
}


def log(msg: str) -> None:
    print(f"[{NAME}] {msg}", flush=True)


def short(e: BaseException, limit: int = 400) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:limit] if text else ''}".rstrip(": ")


def parse_length(text: str) -> int:
    """'4096' -> 4096, '32k' / '32K' -> 32768."""
    t = text.strip().lower()
    if t.endswith("k"):
        return int(float(t[:-1]) * 1024)
    return int(t)


def parse_lengths(text: str) -> list[int]:
    return [parse_length(t) for t in text.split(",") if t.strip()]


def fit_length(requested: int, prompt_len: int, max_positions: int) -> tuple[int, str]:
    """The completion length actually used: at most max_position_embeddings - prompt."""
    if prompt_len + requested <= max_positions:
        return requested, ""
    used = max_positions - prompt_len
    return used, (f"completion cut from {requested} to {used} tokens so that prompt + completion fit the "
                  f"model's {max_positions} positions")


def cannot_run(system: str, cuda: bool, unsloth_env: str = UNSLOTH_ENV) -> str | None:
    """Why `system` cannot run on this machine at all (None: it can), said before launching it."""
    if system == "ours-4bit" and not cuda:
        return "4-bit (bitsandbytes) needs a CUDA GPU"
    if system in UNSLOTH_SYSTEMS:
        if not cuda:
            return "Unsloth's fast_inference (vLLM) needs a CUDA GPU"
        if not Path(unsloth_env).exists():
            return f"the Unsloth part of the GPU kit is not installed ({unsloth_env} missing: carry .devkit/unsloth)"
    return None


def base_weight_bytes(system: str, hf_config, cuda: bool) -> int:
    """The base weights that working memory is measured above: NF4 for the 4-bit systems, else bf16 (fp32 on CPU)."""
    from core.memory.sizes import param_count, weight_bytes

    if system in FOUR_BIT:
        return weight_bytes(hf_config, load_in_4bit=True)
    return weight_bytes(hf_config) if cuda else 4 * param_count(hf_config)


# device memory bandwidth, vendor figures, for the decode-speed limit (tables.py) and the decode probe's floor
BANDWIDTH_GBS = {"H200": 4800.0, "H100 NVL": 3900.0, "H100": 3350.0, "A100": 2039.0, "L40S": 864.0, "A10G": 600.0}


def memory_bandwidth_gbs(records: list[dict], given: float = 0.0) -> tuple[float | None, str]:
    """(GB/s, where it came from): `given`, else the vendor figure for the GPU the records ran on.

    >>> memory_bandwidth_gbs([{"gpu": {"device": "NVIDIA H200"}}])
    (4800.0, 'NVIDIA H200: vendor figure')
    """
    if given:
        return given, "--bandwidth-gbs"
    for rec in records:
        device = (rec.get("gpu") or {}).get("device") or ""
        for name, gbs in BANDWIDTH_GBS.items():  # longest names first would matter for "H100 NVL"
            if name in device and not (name == "H100" and "NVL" in device):
                return gbs, f"{device}: vendor figure"
    return None, "no GPU in these records"
