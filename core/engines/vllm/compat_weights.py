"""vLLM's internals, part 2: the engine's weights (see `compat.py`'s list, items 2, 3 and 9).

Owns: the served model's tensors by name and their fingerprints (`worker_named_weights`,
`worker_weight_fingerprints`), the trainer's frozen base as views of them, 4-bit shards included
(`hf_views_of_vllm_weights`, `build_hf_model_on_views`), and new values for them in place
(`worker_reload_weights`: vLLM's own weight update, for an engine whose weights the trainer cannot
view, e.g. served in fp8). Like `compat.py`, nothing here patches vLLM: these functions are handed
to `LLM.collective_rpc`, which in-process calls them with the worker.

Refuses to know: when weights are sent and what they are (the engine's, `own_weights.py`), training.
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

# layers a checkpoint holds nothing of (a rotary cache, whatever its scaling class; a head tied to the
# embedding) make vLLM's reload warn "<Layer>: Failed to load weights" every time, then keep what they
# had, as wanted (vllm/model_executor/model_loader/reload/layerwise.py, finalize_layerwise_processing)
def _nothing_to_load(layer_class: str, tied: bool) -> bool:
    return layer_class.endswith("RotaryEmbedding") or (tied and layer_class == "ParallelLMHead")


class _Quiet:
    """A logging filter for vLLM's layerwise reload: drops the warnings of `_nothing_to_load`, counts the rest."""

    def __init__(self, tied: bool):
        self.others: list[str] = []
        self.tied = tied  # an LM head tied to the embedding has nothing of its own to load; an untied one has

    def filter(self, record) -> bool:
        msg = record.getMessage()
        if "Failed to load weights" not in msg:
            return True
        if not _nothing_to_load(msg.split(":")[0], self.tied):
            self.others.append(msg)
            return True
        return False


def base_layer_names(param_names, packed: dict):
    """A renamer of checkpoint names for a vLLM that loads weights by the parameter's own name while
    `enable_lora` wrapped the linear layers after loading (0.24: the model's `load_weights` looks up
    `params_dict[name]`, and a wrapped layer's weight is `<module>.base_layer.weight`, so `q_proj.weight`
    -> `qkv_proj.weight` is a KeyError and `o_proj.weight` is skipped in silence): a name whose (fused)
    module is wrapped names its base layer. `packed`: the model's `packed_modules_mapping`. None where
    nothing is wrapped. Assumes the checkpoint's module paths are vLLM's (Llama, Qwen, Mistral families).

    >>> rename = base_layer_names(["model.layers.0.self_attn.qkv_proj.base_layer.weight",
    ...                            "model.layers.0.self_attn.qkv_proj.base_layer.bias", "model.norm.weight"],
    ...                           {"qkv_proj": ["q_proj", "k_proj", "v_proj"]})
    >>> rename("model.layers.0.self_attn.k_proj.bias"), rename("model.norm.weight")
    ('model.layers.0.self_attn.k_proj.base_layer.bias', 'model.norm.weight')
    """
    wrapped = {n.rsplit(".base_layer.", 1)[0] for n in param_names if ".base_layer." in n}
    if not wrapped:
        return None
    fused_of = {part: fused for fused, parts in (packed or {}).items() for part in parts}

    def rename(name: str) -> str:
        module, _, leaf = name.rpartition(".")
        parent, _, last = module.rpartition(".")
        target = ".".join(x for x in (parent, fused_of.get(last, last)) if x)
        return f"{module}.base_layer.{leaf}" if target in wrapped else name

    return rename


def _rollback(model) -> None:
    """After a reload that raised: every layer still waiting for its weights (on the meta device, some
    buffered) gets its served tensors back and forgets the buffer (layerwise.py `_place_kernel_tensors`,
    `LayerReloadingInfo.reset`), so the engine serves again (the layers done hold the new values)."""
    from vllm.model_executor.model_loader.reload import layerwise

    for layer in model.modules():
        info = layerwise.get_layerwise_info(layer)
        if info.can_load() and info.kernel_tensors is not None:
            layerwise._place_kernel_tensors(layer, info)
        info.reset()
    if hasattr(model, "_original_do_torchao_reload"):
        model._do_torchao_reload = model._original_do_torchao_reload


def worker_forget_reloads(worker) -> int:
    """Drop what vLLM's reload keeps of this engine's layers (layerwise.LAYERWISE_INFO: weak keys whose
    values hold loaders that hold the layers, so they and their weights would outlive the engine)."""
    from vllm.model_executor.model_loader.reload import layerwise

    info = getattr(layerwise, "LAYERWISE_INFO", {})
    return sum(info.pop(m, None) is not None for m in worker.model_runner.get_model().modules())


def worker_reload_weights(worker, weights) -> dict:
    """Load `weights` ((checkpoint name, tensor) pairs in checkpoint layout, e.g. a model's
    `q_proj.weight` that vLLM stacks into `qkv_proj`), or the model's files when None, into the served
    model in place: vLLM's `Worker.reload_weights(is_checkpoint_format=True)`
    (vllm/model_executor/model_loader/reload/layerwise.py) materialises each layer once all its
    tensors arrived, loads them, runs its quantization again (fp8: new scales, Marlin repacking) and
    copies the result into the tensors CUDA graphs read. Around it, for 0.24 (read in its source; CPU tests
    run 0.31): names go to LoRA-wrapped layers' base layers (`base_layer_names`; 0.31's wrappers load for
    them, `BaseLayerWithLoRA.load_weights`); Marlin's `workspace`, a plain attribute each processing
    makes anew, is put back (CUDA graphs hold the first one's address); a reload that raises is rolled
    back (`_rollback`); 0.31 drops every LoRA adapter after a reload (`reset_lora_state`: a new base
    may not fit them), ours belong to this model, so they go back. Returns how many tensors went in,
    the layers vLLM said it could not load (besides `_nothing_to_load`), the adapters put back."""
    import logging
    from contextlib import nullcontext

    from vllm.config import set_current_vllm_config
    from vllm.lora.layers.base import BaseLayerWithLoRA

    runner = worker.model_runner
    model = runner.get_model()
    rename = None
    if not hasattr(BaseLayerWithLoRA, "load_weights"):
        rename = base_layer_names([n for n, _ in model.named_parameters()],
                                  getattr(model, "packed_modules_mapping", None))
    if weights is None and rename is not None:  # vLLM's own files path would miss the base layers too
        from vllm.model_executor.model_loader import get_model_loader

        weights = get_model_loader(runner.load_config).get_all_weights(runner.model_config, model)
    sent = [0]

    def counted(it):
        for name, tensor in it:
            sent[0] += 1
            yield (rename(name) if rename is not None else name), tensor

    workspaces = {m: m.workspace for m in model.modules() if isinstance(getattr(m, "workspace", None), torch.Tensor)}
    adapters = getattr(getattr(runner, "lora_manager", None), "_adapter_manager", None)
    kept = dict(getattr(adapters, "_registered_adapters", None) or {})
    tied = bool(getattr(getattr(runner.model_config, "hf_config", None), "tie_word_embeddings", False))
    quiet, log = _Quiet(tied), logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    log.addFilter(quiet)
    config = getattr(worker, "vllm_config", None)  # 0.31's worker sets it around its reload, 0.24's does not
    put_back = 0
    try:
        with set_current_vllm_config(config) if config is not None else nullcontext():
            worker.reload_weights(weights_iterator=None if weights is None else counted(weights),
                                  is_checkpoint_format=True)
    except BaseException:
        _rollback(model)
        raise
    finally:
        log.removeFilter(quiet)
        for m, w in workspaces.items():
            m.workspace = w
        for lora in kept.values():
            if lora.id not in adapters._registered_adapters:
                put_back += 1
                if len(adapters) + 1 > adapters.capacity:
                    adapters.remove_oldest_adapter()
                adapters.add_adapter(lora)
    return {"tensors": sent[0], "not_loaded": quiet.others, "adapters_put_back": put_back}
