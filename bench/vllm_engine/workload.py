"""What the vLLM benchmark runs: its steps, its workload knobs and its model, shared by parent and children.

Owns: the steps in order and which KV-cache dtype's child runs which (`STEP_ORDER`, `STEPS_BY_KV`),
every workload knob's (GPU, --tiny) default (`WORKLOAD`, forwarded by the parent to its children),
the tiny Qwen2 of the CPU smoke test, the LoRA targets, the versions a result records, and the
'[bench]' log line (`log`, `short`).

Refuses to know: vLLM, torch, and how the figures are judged or rendered.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import versions as _versions

ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict:
    return _versions(("torch", "vllm", "transformers", "peft", "tokenizers"))


GIB = 2**30
NAME = "vllm_engine"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
STEP_ORDER = ["engine_start", "kv_capacity", "trainer_model", "memory_copy", "adapter_sync", "rollout_vllm",
              "rollout_hf", "long_rollout", "release_restore"]
STEPS_BY_KV = {"auto": STEP_ORDER[1:], "fp8": ["kv_capacity", "trainer_model", "rollout_vllm", "long_rollout"]}

# a tiny Qwen2 for the CPU smoke test: head_dim 64 (vLLM's CPU attention rejects 16), ids of the
# three special tokens at the end like Qwen's (bos = <|endoftext|>, eos = <|im_end|>)
TINY_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 128,
               "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
               "num_key_value_heads": 1, "vocab_size": 512, "max_position_embeddings": 2048,
               "tie_word_embeddings": True, "bos_token_id": 509, "eos_token_id": 511, "rms_norm_eps": 1e-6}

# (GPU default, --tiny default) of every workload knob; the parent forwards them to its children
WORKLOAD = {
    "gpu_util": (0.30, 0.30),
    "max_model_len": (0, 512),  # 0 = the config's max_position_embeddings
    "max_num_seqs": (64, 16),
    "adapter_iters": (10, 4),
    "rollout_prompts": (64, 8),
    "prompt_len": (64, 16),
    "rollout_tokens": (256, 32),
    "repeats": (2, 1),
    "hf_budget_s": (25.0, 20.0),
    "long_seqs": (8, 2),
    "long_gen": (1024, 32),
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:400] if str(e) else ''}"
