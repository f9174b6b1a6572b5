"""Merged-weight rollouts: fold a peft LoRA adapter into its base weights in place, and undo it exactly.

Owns: `fold_adapter` / `unfold_adapter` (the `merged_adapter` context around both, and
`rollout_with_fold`, the one merged rollout both engines run) on a peft model whose LoRA layers
wrap plain `nn.Linear` weights (bf16, fp16 or fp32). While folded, the base weights ARE the tuned model (W' = round(W + scale * B @ A)), so an engine that serves those
weights (HF `generate` with the adapter switched off; vLLM, whose tensors the trainer's frozen base
is a view of) samples the tuned policy without any LoRA kernel. Afterwards every weight is bitwise
what it was:

  1) fold, per layer, in row chunks: d = scale * (B @ A) in fp32 and W' = round(W + d) (fp32 sum,
     rounded once to W's dtype). Before writing W', find the elements that do not round-trip,
     round(W' - d) != W (compared as bit patterns, so -0.0 and +0.0 differ), and keep those
     elements' original values with their indices. Where more than a third of a chunk fails (large
     deltas), the chunk's original values are kept whole instead: 2 bytes an element beat 6.
  2) unfold: recompute d (the same ops on the same, unchanged tensors: the same bits; a fingerprint
     of d checks it), write round(W' - d), then put the kept elements back. No pristine copy of the
     base is ever made.

Where the kept elements live: in pinned host memory (on a GPU), not on the device. The rollout
is the phase with the KV cache mapped, i.e. the step's peak in the lowest-memory mode; what is
kept is small for a trained adapter (a delta under half a bf16 step of its weight rounds back to
it, so only elements near a rounding boundary are kept) but grows to the whole layer for large
deltas, and a copy to and from the host costs ~1 ms per 25 MB, against rollouts of seconds.
`keep_on="device"` keeps them on the GPU instead.

Refuses to know: engines, vLLM, prefix caches (the caller resets those), training. It refuses to
fold what it cannot undo exactly: 4-bit / quantized base layers, DoRA and other LoRA variants,
LoRA biases, fan-in-fan-out (Conv1D) layers, adapters already merged by peft (`NotFoldable`).
Ideas from Unsloth's "merged-weight rollouts" (exact fold/unfold keeping only the elements that
do not round-trip); the code is our own.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field

import torch

TRAIN_ADAPTER = "default"
# one fold step works on this many elements at a time: its fp32 delta, sum and masks take
# ~13 bytes an element, ~50 MiB here, whatever the layer's size
CHUNK_ELEMENTS = 1 << 22
DENSE_SHARE = 1 / 3  # a chunk whose failing share is above this keeps its original values whole

_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


class NotFoldable(RuntimeError):
    """The adapter cannot be folded into the base exactly (see `foldable`)."""


def _lora_layers(model, adapter: str):
    """(module name, peft LoRA layer) for every layer that holds `adapter`'s lora_A / lora_B."""
    from peft.tuners.lora import LoraLayer

    for name, m in model.named_modules():
        if isinstance(m, LoraLayer) and adapter in getattr(m, "lora_A", {}):
            yield name, m


def foldable(model, adapter: str = TRAIN_ADAPTER) -> str | None:
    """None when `adapter` of `model` can be folded exactly; else why not (one line)."""
    try:
        layers = list(_lora_layers(model, adapter))
    except ImportError:
        return "peft is not installed"
    if not layers:
        return f"no LoRA layers hold adapter {adapter!r}"
    for name, m in layers:
        base = m.get_base_layer()
        if type(base) is not torch.nn.Linear:  # bitsandbytes Linear4bit etc. subclass or replace it
            return f"{name}: base layer is {type(base).__name__}, not a plain nn.Linear (4-bit bases use the adapter)"
        if not base.weight.is_floating_point() or base.weight.element_size() not in _BITS:
            return f"{name}: base weight dtype {base.weight.dtype} cannot be folded"
        if adapter in getattr(m, "lora_variant", {}) or m.use_dora.get(adapter, False):
            return f"{name}: a LoRA variant (DoRA, ...) is not a plain delta"
        if m.lora_bias.get(adapter, False) or getattr(m.lora_B[adapter], "bias", None) is not None:
            return f"{name}: LoRA bias is not supported"
        if getattr(m, "fan_in_fan_out", False):
            return f"{name}: fan_in_fan_out layers are not supported"
        if m.merged_adapters:
            return f"{name}: peft has already merged {m.merged_adapters}"
    return None


# ---------------------------------------------------------------------------
# the record of one fold


@dataclass
class _Kept:
    """Original values of one row chunk [r0, r1) of one weight: sparse (flat index within the
    chunk, value) or dense (every value of the chunk, `index` None)."""

    r0: int
    r1: int
    values: torch.Tensor
    index: torch.Tensor | None = None


@dataclass
class _LayerFold:
    name: str
    layer: object  # the peft LoRA layer
    rows_done: int = 0  # rows of W that hold W' (a fold that failed half way unfolds only these)
    kept: list[_Kept] = field(default_factory=list)
    fingerprint: list[torch.Tensor] = field(default_factory=list)  # one int64 sum of d's bits per chunk
    versions: tuple = ()  # A's and B's tensor versions: the adapter must not change while folded
    fused: bool = False  # folded by the Triton kernels: one _Kept for the whole weight (flat indices)
    written: torch.Tensor | None = None  # the fused write pass's per-tile recount (-1: tile left alone)


@dataclass
class FoldRecord:
    """What `unfold_adapter` needs, and what the fold cost."""

    adapter: str
    layers: list[_LayerFold]
    keep_on: str
    elements: int = 0  # weight elements folded
    kept_elements: int = 0  # elements whose original value is kept (sparse and dense)
    kept_bytes: int = 0
    dense_chunks: int = 0
    fused_layers: int = 0  # layers folded by the Triton kernels (the rest: chunked PyTorch)
    fused_clean: bool = True  # False after a fused fold that failed part way (the unfold checks slots)
    chunk_elements: int = CHUNK_ELEMENTS
    fold_seconds: float = 0.0
    unfolded: bool = False
    unfold_stats: dict = field(default_factory=dict)

    def stats(self) -> dict:
        return {"layers": len(self.layers), "elements": self.elements, "kept_elements": self.kept_elements,
                "kept_share": self.kept_elements / max(1, self.elements), "kept_bytes": self.kept_bytes,
                "dense_chunks": self.dense_chunks, "kept_on": self.keep_on, "fused_layers": self.fused_layers}


def _delta(layer, adapter: str, r0: int, r1: int) -> torch.Tensor:
    """scale * (B[r0:r1] @ A) in fp32, (r1 - r0, in_features): the same ops at fold and unfold."""
    A = layer.lora_A[adapter].weight  # (r, in)
    B = layer.lora_B[adapter].weight  # (out, r)
    W = layer.get_base_layer().weight
    d = torch.mm(B[r0:r1].to(W.device, torch.float32), A.to(W.device, torch.float32))
    return d.mul_(float(layer.scaling[adapter]))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(_BITS[t.element_size()])


def _fingerprint(d: torch.Tensor) -> torch.Tensor:
    return _bits(d).sum(dtype=torch.int64)  # exact and order-free: any changed bit shows (almost surely)


def _to_keep(t: torch.Tensor, keep_on: str) -> torch.Tensor:
    if keep_on == "host" and t.is_cuda:
        out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return out.copy_(t, non_blocking=True)  # stream-ordered: `t` may be freed right after
    return t.clone()


def _chunks(W: torch.Tensor, chunk_elements: int):
    out, inn = W.shape
    step = max(1, chunk_elements // max(1, inn))
    for r0 in range(0, out, step):
        yield r0, min(out, r0 + step)


# ---------------------------------------------------------------------------
# fold / unfold


def _fold_layer_torch(record: FoldRecord, lf: _LayerFold, W: torch.Tensor) -> None:
    """Fold one layer chunk by chunk in PyTorch (a float32 chunk, one host sync a chunk)."""
    layer, adapter, keep_on = lf.layer, record.adapter, record.keep_on
    for r0, r1 in _chunks(W, record.chunk_elements):
        w = W[r0:r1]  # (rows, in), contiguous: rows of a row-major matrix
        d = _delta(layer, adapter, r0, r1)  # (rows, in) fp32
        lf.fingerprint.append(_fingerprint(d))
        new = (w + d).to(W.dtype)  # W' = round(W + d): the sum is fp32
        bad = _bits((new - d).to(W.dtype)) != _bits(w)  # does W' - d round back to W?
        flat = bad.view(-1).nonzero().squeeze(1)  # (k,)
        k = flat.numel()
        if k > DENSE_SHARE * w.numel():
            lf.kept.append(_Kept(r0, r1, _to_keep(w, keep_on)))
            record.dense_chunks += 1
            record.kept_elements += w.numel()
        elif k:
            index = flat.to(torch.int32) if w.numel() < 2**31 else flat
            lf.kept.append(_Kept(r0, r1, _to_keep(w.reshape(-1)[flat], keep_on), _to_keep(index, keep_on)))
            record.kept_elements += k
        w.copy_(new)
        lf.rows_done = r1
        record.elements += w.numel()


def _adapter_of(lf: _LayerFold, adapter: str):
    layer = lf.layer
    return layer.lora_A[adapter].weight, layer.lora_B[adapter].weight, float(layer.scaling[adapter])


def _kernel_counts(record: FoldRecord, backend: str) -> list:
    """Pass 1 of the fused fold (`kernels/lora_fold_triton.py`): each layer's kept count per tile,
    or None where the kernels do not serve the layer; then the totals in one host sync."""
    if backend == "torch":
        return [None] * len(record.layers)
    from kernels import lora_fold_triton as fused

    counts = []
    try:  # the count pass writes nothing into the weights: any failure here just means PyTorch folds
        for lf in record.layers:
            W = lf.layer.get_base_layer().weight.data
            A, B, scale = _adapter_of(lf, record.adapter)
            why = fused.supported(W, A, B)
            if why is not None and backend == "triton":
                raise NotFoldable(f"{lf.name}: the fused fold cannot serve it ({why})")
            counts.append(None if why is not None else fused.fold_count(W, A, B, scale))
        have = [c for c in counts if c is not None]
        totals = iter(torch.stack([c.sum(dtype=torch.int64) for c in have]).tolist() if have else [])
    except Exception as e:
        if backend == "triton":
            raise
        warnings.warn(f"the fused LoRA fold failed before writing anything ({type(e).__name__}: {e}); "
                      "folding in PyTorch")
        return [None] * len(record.layers)
    return [None if c is None else (c, next(totals)) for c in counts]


@torch.no_grad()
def fold_adapter(model, adapter: str = TRAIN_ADAPTER, *, keep_on: str | None = None,
                 chunk_elements: int = CHUNK_ELEMENTS, backend: str = "auto") -> FoldRecord:
    """Fold `adapter` into the base weights in place; returns the record `unfold_adapter` needs.

    keep_on: "host" (pinned CPU memory; the default on a GPU) or "device". While folded, run the
    model with the adapter switched off (`model.disable_adapter()`), or the delta counts twice.
    backend: "auto" (the fused Triton kernels for bf16/fp16 weights on a GPU, PyTorch for the
    rest and for a layer whose kept share is above DENSE_SHARE), "torch", or "triton" (refuses
    a layer the kernels cannot fold).
    """
    why = foldable(model, adapter)
    if why is not None:
        raise NotFoldable(why)
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend={backend!r}: auto, torch or triton")
    t0 = time.perf_counter()
    layers = list(_lora_layers(model, adapter))
    on_gpu = any(m.get_base_layer().weight.is_cuda for _, m in layers)
    keep_on = keep_on or ("host" if on_gpu else "device")
    record = FoldRecord(adapter, [], keep_on, chunk_elements=chunk_elements)
    for name, layer in layers:
        record.layers.append(_LayerFold(name, layer, versions=(layer.lora_A[adapter].weight._version,
                                                               layer.lora_B[adapter].weight._version)))
    try:
        planned = _kernel_counts(record, backend)
        recounts = []  # the fused fold's two passes must have found the same kept elements
        for lf, plan in zip(record.layers, planned):
            W = lf.layer.get_base_layer().weight.data  # (out, in); a view of the engine's tensor with vLLM
            if plan is None or plan[1] > DENSE_SHARE * W.numel():
                _fold_layer_torch(record, lf, W)  # the kernels do not serve it, or most of it is kept
                continue
            from kernels import lora_fold_triton as fused

            counts, total = plan
            A, B, scale = _adapter_of(lf, adapter)
            written, index, values, prints = fused.fold_buffers(W, counts, total)  # before W changes
            # recorded before the launch: its buffers say "not folded" (-1) until the kernel writes
            lf.fused, lf.written, lf.rows_done = True, written, W.shape[0]
            lf.kept.append(_Kept(0, W.shape[0], values, index))
            lf.fingerprint.append(prints)
            fused.fold_write(W, A, B, scale, counts, (written, index, values, prints))
            recounts.append((counts, written))
            if total and keep_on == "host":  # then off the device; the device copies serve until done
                lf.kept[0] = _Kept(0, W.shape[0], _to_keep(values, keep_on), _to_keep(index, keep_on))
            record.kept_elements += total
            record.elements += W.numel()
            record.fused_layers += 1
        if recounts and bool(torch.stack([(c != w).any() for c, w in recounts]).any()):
            record.fused_clean = False
            raise RuntimeError("the fused fold's count and write passes disagreed: the weights are put back "
                               "and this rollout samples through the adapter")
        record.kept_bytes = sum(k.values.numel() * k.values.element_size()
                                + (0 if k.index is None else k.index.numel() * k.index.element_size())
                                for lf in record.layers for k in lf.kept)
    except BaseException:
        record.fused_clean = False  # a fused layer may be recorded with its write pass not (fully) run
        unfold_adapter(record)  # what was folded so far goes back before the error does
        raise
    record.fold_seconds = time.perf_counter() - t0
    return record


@torch.no_grad()
def unfold_adapter(record: FoldRecord) -> dict:
    """Undo `fold_adapter`: every base weight bitwise as before. Returns {"unfold_seconds": s}.

    Raises RuntimeError (after restoring all it can) if the adapter changed while folded or the
    delta did not recompute bit for bit: then the base weights cannot be vouched for.
    """
    if record.unfolded:
        return {}
    t0 = time.perf_counter()
    adapter = record.adapter
    changed, prints = [], []
    for lf in reversed(record.layers):
        layer = lf.layer
        W = layer.get_base_layer().weight.data
        if (layer.lora_A[adapter].weight._version, layer.lora_B[adapter].weight._version) != lf.versions:
            changed.append(lf.name)
        if lf.fused:
            from kernels import lora_fold_triton as fused

            A, B, scale = _adapter_of(lf, adapter)
            k = lf.kept[0]
            prints.append((lf.fingerprint[0], fused.unfold(W, A, B, scale, lf.written, k.index, k.values,
                                                           clean=record.fused_clean)))
            continue
        kept = {k.r0: k for k in lf.kept}
        for i, (r0, r1) in enumerate(_chunks(W, record.chunk_elements)):
            if r0 >= lf.rows_done:
                break
            w = W[r0:r1]
            d = _delta(layer, adapter, r0, r1)
            prints.append((lf.fingerprint[i], _fingerprint(d)))
            w.copy_((w - d).to(W.dtype))  # round(W' - d): W itself but where the fold kept the value
            k = kept.get(r0)
            if k is None:
                continue
            values = k.values.to(W.device, non_blocking=True)
            if k.index is None:
                w.copy_(values.view_as(w))
            else:
                w.view(-1).index_copy_(0, k.index.to(W.device, non_blocking=True).long(), values)
    record.unfolded = True
    seconds = time.perf_counter() - t0
    if changed:
        raise RuntimeError(f"the adapter changed while folded ({', '.join(changed[:3])}, ...): "
                           "the base weights may be off")
    if prints and not bool(torch.stack([(a == b).all() for a, b in prints]).all()):
        raise RuntimeError("the LoRA delta did not recompute bit for bit: the base weights may be off by an ulp")
    return {"unfold_seconds": seconds}


@contextlib.contextmanager
def merged_adapter(model, adapter: str = TRAIN_ADAPTER, **kwargs):
    """Fold `adapter` into the base for the block and unfold it exactly after, whatever happens.
    Yields the FoldRecord (`stats()`; `unfold_stats` once done). Inside, run the model only with
    the adapter switched off (HF: `adapter=None`, i.e. `disable_adapter()`; vLLM: no LoRA
    request), or the delta counts twice."""
    record = fold_adapter(model, adapter, **kwargs)
    try:
        yield record
    finally:
        record.unfold_stats = unfold_adapter(record)


# ---------------------------------------------------------------------------
# one rollout, folded where it can be (what both engines' `rollout` run)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rollout_with_fold(model, sample, adapter, merged: bool, *, blocked: str | None = None,
                      reset=lambda: None, adapter_name: str = TRAIN_ADAPTER):
    """`sample(adapter_or_None)` with the adapter folded into `model`'s base weights when `merged`
    (and nothing `blocked` it, and `foldable` agrees): then `sample(None)` runs on the merged
    weights, with `reset()` (the engine's prefix-cache reset) right after the fold and after the
    unfold; otherwise `sample(adapter)`. Returns (completions, stats): whether it folded (or why
    not), fold / sample / unfold seconds and what the fold kept."""
    why = "off" if not merged else blocked or (foldable(model, adapter_name) if model is not None else "no model")
    if why is not None:
        t0 = time.perf_counter()
        out = sample(adapter)
        return out, {"merged": False, "why_not_merged": why, "sample_s": time.perf_counter() - t0}
    _sync()
    t0 = time.perf_counter()
    try:
        record = fold_adapter(model, adapter_name)
    except torch.OutOfMemoryError as e:  # fold_adapter has put back what it had folded: sample as it is
        warnings.warn(f"no room to fold the adapter ({e}); sampling through it this step")
        out = sample(adapter)
        return out, {"merged": False, "why_not_merged": "out of memory while folding",
                     "sample_s": time.perf_counter() - t0}
    reset()  # cached prefixes were computed with other weights
    _sync()
    t1 = time.perf_counter()
    try:
        out = sample(None)  # the base weights are the tuned model now: no LoRA request
        _sync()
        t2 = time.perf_counter()
    finally:
        unfold_adapter(record)
        reset()
        _sync()
    return out, {"merged": True, "fold_s": t1 - t0, "sample_s": t2 - t1, "unfold_s": time.perf_counter() - t2,
                 **{k: v for k, v in record.stats().items() if k != "layers"}, "folded_layers": len(record.layers)}
