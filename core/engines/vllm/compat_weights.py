"""vLLM's internals, part 2: the engine's weights (see `compat.py`'s list, items 2, 3 and 9).

Owns: the served model's tensors by name and their fingerprints (`worker_named_weights`,
`worker_weight_fingerprints`), the trainer's frozen base as views of them, 4-bit shards included
(`hf_views_of_vllm_weights`, `build_hf_model_on_views`), and new values for them in place
(`worker_reload_weights`: vLLM's own weight update, for an engine whose weights the trainer cannot
view, e.g. served in fp8). Like `compat.py`, nothing here patches vLLM: these functions are handed
to `LLM.collective_rpc`, which in-process calls them with the worker.
"""

from __future__ import annotations

import torch

# 2) the engine's weights (path: worker.model_runner.model)


def worker_named_weights(worker) -> dict[str, torch.Tensor]:
    """The served model's parameters by name, with LoRA wrappers' `.base_layer` removed."""
    out = {}
    for name, p in worker.model_runner.model.named_parameters():
        out[name.replace(".base_layer", "")] = p.data
    return out


def worker_weight_fingerprints(worker) -> dict[str, int]:
    """One exact number per served parameter (the int64 sum of its bit patterns): equal before a
    fold and after the unfold when every weight came back bit for bit."""
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    chunk = 2**24  # sum(dtype=int64) widens its input first: a whole embedding would take 1.74 GiB
    out = {}
    for name, p in worker.model_runner.model.named_parameters():
        flat = p.data.reshape(-1).view(bits[p.element_size()])
        out[name] = sum(int(flat[i:i + chunk].sum(dtype=torch.int64)) for i in range(0, flat.numel(), chunk))
    return out


def worker_bnb_quant_states(worker) -> dict[str, tuple[dict, list[int]]]:
    """For a 4-bit bitsandbytes engine: packed weight name -> ({shard: QuantState}, shard offsets).

    vLLM 0.24's loader (`BitsAndBytesModelLoader._bind_quant_states_to_params`) sets
    `bnb_quant_state` (shard index -> QuantState, double quantization already undone) and
    `bnb_shard_offsets` (where each shard's packed bytes start in the fused tensor) on each
    quantized Parameter. Empty for an unquantized engine.
    """
    out = {}
    for name, p in worker.model_runner.model.named_parameters():
        states = getattr(p, "bnb_quant_state", None)
        if states is None:
            continue
        if not isinstance(states, dict):
            states = {0: states}
        offsets = getattr(p, "bnb_shard_offsets", None)
        offsets = [int(x) for x in offsets] if offsets is not None else [0, p.shape[0]]
        out[name.replace(".base_layer", "")] = (states, offsets)
    return out


_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def hf_views_of_vllm_weights(vllm_weights: dict[str, torch.Tensor], hf_config,
                             quant_states: dict[str, tuple[dict, list[int]]] | None = None) -> dict:
    """HF parameter name -> view into vLLM's tensors (Llama/Qwen2-style decoders).

    vLLM fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj` (rows stacked in that
    order) and pads the vocabulary; HF keeps them apart. Row slices of a row-major weight are
    contiguous views, so no byte is copied. A 4-bit weight (named in `quant_states`, from
    `worker_bnb_quant_states`) maps to `(packed uint8 view, QuantState)`: vLLM quantized each HF
    weight on its own and stacked the packed bytes, so shard i is bytes offsets[i]:offsets[i+1].
    """
    quant_states = quant_states or {}
    views: dict = {}
    for name, (states, offsets) in quant_states.items():
        packed = vllm_weights[name]
        fused = next((f for f in _FUSED if f".{f}." in name), None)
        names = [name.replace(fused, part) for part in _FUSED[fused]] if fused else [name]
        if len(states) != len(names) or len(offsets) != len(names) + 1:
            raise RuntimeError(f"{name}: {len(states)} quantized shards for {len(names)} HF weights")
        for i, hf_name in enumerate(names):
            views[hf_name] = (packed[offsets[i]:offsets[i + 1]], states[i])
    vllm_weights = {n: t for n, t in vllm_weights.items() if n not in quant_states}
    c = hf_config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q = c.num_attention_heads * head_dim
    kv = c.num_key_value_heads * head_dim
    inter = c.intermediate_size
    vocab = c.vocab_size
    rows = {"qkv_proj": (q, kv, kv), "gate_up_proj": (inter, inter)}  # rows of each part, in _FUSED order
    for name, t in vllm_weights.items():
        fused = next((f for f in _FUSED if f".{f}." in name), None)
        if fused:
            start = 0
            for part, n in zip(_FUSED[fused], rows[fused]):
                views[name.replace(fused, part)] = t[start:start + n]
                start += n
        elif name.endswith("embed_tokens.weight") or name == "lm_head.weight":
            views[name] = t[:vocab]
        else:
            views[name] = t
    if "lm_head.weight" not in views and "model.embed_tokens.weight" in views:
        views["lm_head.weight"] = views["model.embed_tokens.weight"]  # tied embeddings
    return views


def _linear4bit_on_view(linear: torch.nn.Linear, packed: torch.Tensor, quant_state, dtype: torch.dtype):
    """A bitsandbytes `Linear4bit` in place of `linear` (on meta) whose weight is `packed` itself."""
    import bitsandbytes as bnb

    out_f, in_f = (int(x) for x in quant_state.shape)
    if (out_f, in_f) != (linear.out_features, linear.in_features):
        raise RuntimeError(f"4-bit shape mismatch: vLLM {(out_f, in_f)} vs HF {(linear.out_features, linear.in_features)}")
    layer = bnb.nn.Linear4bit(in_f, out_f, bias=False, compute_dtype=dtype, quant_type=quant_state.quant_type,
                              device="meta")
    # Params4bit wraps the same storage (Tensor._make_subclass): no byte is copied
    layer.weight = bnb.nn.Params4bit(packed, requires_grad=False, quant_state=quant_state,
                                     blocksize=quant_state.blocksize, compress_statistics=False,
                                     quant_type=quant_state.quant_type, quant_storage=packed.dtype,
                                     module=layer, bnb_quantized=True)
    layer.quant_state = quant_state
    return layer


def build_hf_model_on_views(hf_config, views: dict, device: str):
    """A transformers causal LM whose every parameter is a view into `views` (no new weight memory).

    A `(packed, QuantState)` entry (4-bit engine) turns that `nn.Linear` into a bitsandbytes
    `Linear4bit` on the packed bytes; the model is then marked `is_loaded_in_4bit` so peft wraps
    those layers with its 4-bit LoRA.
    """
    from transformers import AutoModelForCausalLM

    dtype = next(v.dtype for v in views.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    missing, four_bit = [], 0
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        if name not in views:
            missing.append(name)
            continue
        mod_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(mod_name)
        view = views[name]
        if isinstance(view, tuple):  # 4-bit weight: swap the whole layer (its bias, if any, comes next)
            parent, _, child = mod_name.rpartition(".")
            layer = _linear4bit_on_view(module, view[0], view[1], dtype)
            setattr(model.get_submodule(parent) if parent else model, child, layer)
            four_bit += 1
            continue
        if tuple(view.shape) != tuple(param.shape):
            raise RuntimeError(f"shape mismatch for {name}: vLLM {tuple(view.shape)} vs HF {tuple(param.shape)}")
        setattr(module, leaf, torch.nn.Parameter(view, requires_grad=False))
    if missing:
        raise RuntimeError(f"vLLM has no weights for {missing[:5]}... (unsupported architecture for sharing)")
    # non-persistent buffers (rotary inv_freq) were built on meta: rebuild those modules on the device
    for mod_name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            rebuilt = type(module)(config=module.config).to(device) if hasattr(module, "config") else None
            if rebuilt is None:
                raise RuntimeError(f"cannot rebuild buffers of {mod_name} ({type(module).__name__})")
            parent, _, leaf = mod_name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, rebuilt)
    if four_bit:
        model.is_loaded_in_4bit = True  # peft: wrap Linear4bit layers with its bnb LoRA
    model.config.use_cache = False
    return model


# ---------------------------------------------------------------------------
# 9) new values for the engine's own weights (path: worker.reload_weights, vLLM >= 0.12's RL update)

# layers a checkpoint holds nothing of (a rotary cache; a head tied to the embedding) make vLLM's
# reload warn "<Layer>: Failed to load weights" every time, then keep what they had, as wanted
_NOTHING_TO_LOAD = ("RotaryEmbedding:", "ParallelLMHead:")


class _Quiet:
    """A logging filter for vLLM's layerwise reload: drops the warnings of `_NOTHING_TO_LOAD`, counts the rest."""

    def __init__(self):
        self.others: list[str] = []

    def filter(self, record) -> bool:
        msg = record.getMessage()
        if "Failed to load weights" not in msg:
            return True
        if not msg.startswith(_NOTHING_TO_LOAD):
            self.others.append(msg)
            return True
        return False


def worker_reload_weights(worker, weights) -> dict:
    """Load `weights` ((checkpoint name, tensor) pairs in checkpoint layout, e.g. a model's
    `q_proj.weight` that vLLM stacks into `qkv_proj`), or the model's files when None, into the served
    model in place: vLLM's `Worker.reload_weights(is_checkpoint_format=True)`
    (vllm/model_executor/model_loader/reload/layerwise.py) materialises each layer once all its
    tensors arrived, loads them, runs its quantization again (fp8: new scales, Marlin repacking) and
    copies the result into the tensors CUDA graphs read. Returns how many tensors went in and the
    layers vLLM said it could not load (besides `_NOTHING_TO_LOAD`)."""
    import logging

    sent = [0]

    def counted(it):
        for pair in it:
            sent[0] += 1
            yield pair

    from contextlib import nullcontext

    from vllm.config import set_current_vllm_config

    # 0.31's runner drops every LoRA adapter after a reload (`reset_lora_state`: a new base may not fit
    # them; 0.24's keeps them); ours belong to this same model, so the ones it dropped go back, in order
    adapters = getattr(getattr(worker.model_runner, "lora_manager", None), "_adapter_manager", None)
    kept = dict(getattr(adapters, "_registered_adapters", None) or {})
    quiet, log = _Quiet(), logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    log.addFilter(quiet)
    # 0.31's worker sets vLLM's current config around it (quantization code may read it), 0.24's does not
    config = getattr(worker, "vllm_config", None)
    try:
        with set_current_vllm_config(config) if config is not None else nullcontext():
            worker.reload_weights(weights_iterator=None if weights is None else counted(weights),
                                  is_checkpoint_format=True)
    finally:
        log.removeFilter(quiet)
        put_back = 0
        for lora in kept.values():
            if lora.id not in adapters._registered_adapters:
                put_back += 1
                if len(adapters) + 1 > adapters.capacity:
                    adapters.remove_oldest_adapter()
                adapters.add_adapter(lora)
    return {"tensors": sent[0], "not_loaded": quiet.others, "adapters_put_back": put_back}
