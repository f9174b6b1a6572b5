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

Where the kept elements live: in pinned host memory (on a GPU), not on the device (the rollout,
with the KV cache mapped, is the lowest-memory mode's peak): small for a trained adapter (only
elements near a rounding boundary), up to whole layers for large deltas; ~1 ms per 25 MB each
way, copied a group of layers (GROUP_BYTES) at a time. `keep_on="device"` keeps them on the GPU.

Refuses to know: engines, vLLM, prefix caches (the caller resets those), training. It refuses to
fold what it cannot undo exactly: 4-bit / quantized base layers, DoRA and other LoRA variants,
LoRA biases, fan-in-fan-out (Conv1D) layers, adapters already merged by peft (`NotFoldable`).
Ideas from Unsloth's "merged-weight rollouts" (exact fold/unfold keeping only the elements that
do not round-trip); the code is our own.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import warnings
from dataclasses import dataclass, field

import torch

TRAIN_ADAPTER = "default"
# one fold step works on this many elements at a time: its fp32 delta, sum and masks take
# ~13 bytes an element, ~50 MiB here, whatever the layer's size
CHUNK_ELEMENTS = 1 << 22
DENSE_SHARE = 1 / 3  # a chunk whose failing share is above this keeps its original values whole
# the fused fold keeps a run of consecutive layers' (index, value) pairs in one buffer of up to this
# size (one layer's if larger): a few allocations and host copies a fold instead of two a layer
GROUP_BYTES = 64 << 20

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
    fused: bool = False  # folded by the Triton kernels: its kept pairs in its group's buffers (flat indices)
    tiles: tuple = ()  # fused: its tiles' range in the record's flat buffers (_Flat: its recounts, prints)
    span: tuple = ()  # fused: (group, a, b): its kept pairs are [a, b) of that group's buffers


@dataclass
class _Flat:
    """The fused fold's per-tile numbers, one buffer each over the tiles of every layer the kernels serve,
    in fold order: counts, recounts (-1: tile left alone), d's fingerprints, each tile's first kept pair."""

    counts: torch.Tensor | None  # (tiles,) int32; counts and starts are let go once the fold is done
    written: torch.Tensor  # (tiles,) int32
    prints: torch.Tensor  # (tiles,) int64
    starts: torch.Tensor | None  # (tiles,) int64: exclusive cumsum of counts


@dataclass
class _Group:
    """Consecutive fused layers whose kept (index, value) pairs share one buffer each; a tile's first
    pair in them is _Flat.starts less `start` (the group's first pair in that count)."""

    start: int
    size: int = 0  # pairs
    bytes: int = 0
    dtypes: tuple = ()  # (index dtype, value dtype)
    layers: list = field(default_factory=list)
    index: torch.Tensor | None = None
    values: torch.Tensor | None = None


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
    flat: _Flat | None = None  # the fused layers' per-tile buffers
    groups: list = field(default_factory=list)  # _Group: the fused layers' kept pairs
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
    """Pass 1 of the fused fold (`kernels/lora_fold_triton.py`): kept counts per tile into one buffer
    (`record.flat`), each layer's total in one host sync; None where the kernels do not serve it (one
    device's layers are served, the first's: a model split over GPUs folds the rest in PyTorch)."""
    none = [None] * len(record.layers)
    if backend == "torch":
        return none
    from kernels import lora_fold_triton as fused

    try:  # the count pass writes nothing into the weights: any failure here just means PyTorch folds
        served, device = [], None
        for lf in record.layers:
            W = lf.layer.get_base_layer().weight.data
            A, B, _ = _adapter_of(lf, record.adapter)
            why = fused.supported(W, A, B)
            if why is None and device not in (None, W.device):
                why = f"on {W.device}, not {device}"
            if why is not None and backend == "triton":
                raise NotFoldable(f"{lf.name}: the fused fold cannot serve it ({why})")
            served.append(why is None)
            device = W.device if why is None and device is None else device
        if device is None:
            return none
        ends = list(itertools.accumulate(fused.tiles(lf.layer.get_base_layer().weight)
                                         for lf, ok in zip(record.layers, served) if ok))
        counts = torch.empty(ends[-1], dtype=torch.int32, device=device)
        for lf, s0, e0 in zip([lf for lf, ok in zip(record.layers, served) if ok], [0] + ends[:-1], ends):
            A, B, scale = _adapter_of(lf, record.adapter)
            lf.tiles = (s0, e0)
            fused.fold_count(lf.layer.get_base_layer().weight.data, A, B, scale, out=counts, tile0=s0)
        upto = torch.cumsum(counts, 0, dtype=torch.int64)
        inclusive = upto[torch.tensor([e - 1 for e in ends], device=device)].tolist()  # the one host sync
        record.flat = _Flat(counts, torch.full_like(counts, -1), torch.empty_like(upto), upto - counts)
    except Exception as e:
        if backend == "triton":
            raise
        warnings.warn(f"the fused LoRA fold failed before writing anything ({type(e).__name__}: {e}); "
                      "folding in PyTorch")
        return none
    totals = iter(b - a for a, b in zip([0] + inclusive[:-1], inclusive))
    return [next(totals) if ok else None for ok in served]


def _plan_groups(record: FoldRecord, planned: list) -> list:
    """Per layer: None (PyTorch folds it: not served, or most of it kept) or (group, a, b); groups
    (`record.groups`) run over consecutive served layers, broken by a dense one, a dtype, GROUP_BYTES."""
    from kernels import lora_fold_triton as fused

    out, group, start = [], None, 0
    for lf, total in zip(record.layers, planned):
        if total is None:
            out.append(None)
            continue
        W = lf.layer.get_base_layer().weight
        if total > DENSE_SHARE * W.numel():  # its pairs' place in the count is skipped: the group ends
            out.append(None)
            group, start = None, start + total
            continue
        dtypes = (fused.index_dtype(W), W.dtype)
        size = total * (dtypes[0].itemsize + W.element_size())
        if group is None or group.dtypes != dtypes or (group.layers and group.bytes + size > GROUP_BYTES):
            group = _Group(start=start, dtypes=dtypes)
            record.groups.append(group)
        group.layers.append(lf)
        out.append((len(record.groups) - 1, group.size, group.size + total))
        group.size, group.bytes, start = group.size + total, group.bytes + size, start + total
    return out


def _runs(ranges: list) -> list:
    """Tile ranges merged where they touch: [(0, 4), (4, 6), (9, 12)] -> [(0, 6), (9, 12)] (any order in)."""
    out: list = []
    for s0, e0 in sorted(ranges):
        out[-1:] = [(out[-1][0], e0)] if out and out[-1][1] == s0 else out[-1:] + [(s0, e0)]
    return out


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
    from kernels import lora_fold_triton as fused  # (imports without triton too: then nothing is served)

    try:
        plans = _plan_groups(record, _kernel_counts(record, backend))
        flat, ranges = record.flat, []
        for lf, plan in zip(record.layers, plans):
            W = lf.layer.get_base_layer().weight.data  # (out, in); a view of the engine's tensor with vLLM
            if plan is None:
                _fold_layer_torch(record, lf, W)  # the kernels do not serve it, or most of it is kept
                continue
            gi, a, b = plan
            g, (s0, e0) = record.groups[gi], lf.tiles
            if g.index is None:  # its first layer: the group's buffers, -1 = "not written" until the kernel writes
                g.index = torch.full((g.size,), -1, dtype=g.dtypes[0], device=W.device)
                g.values = torch.empty(g.size, dtype=g.dtypes[1], device=W.device)
            A, B, scale = _adapter_of(lf, adapter)
            # recorded before the launch: its buffers say "not folded" (-1) until the kernel writes
            lf.fused, lf.rows_done, lf.span = True, W.shape[0], plan
            # the whole buffers and W's place in them, not slices: a slice's address is 16-byte aligned or
            # not, and Triton builds a kernel for each alignment it meets (as for each shape's divisibility)
            fused.fold_write(W, A, B, scale, flat.counts, (flat.written, g.index, g.values, flat.prints),
                             offsets=flat.starts, tile0=s0, slot0=g.start)
            ranges.append((s0, e0))
            record.kept_elements += b - a
            record.elements += W.numel()
            record.fused_layers += 1
            if lf is g.layers[-1] and keep_on == "host":  # then off the device; the device copies serve until done
                g.index, g.values = _to_keep(g.index, keep_on), _to_keep(g.values, keep_on)
        if ranges and bool(torch.stack([(flat.counts[s0:e0] != flat.written[s0:e0]).any()
                                        for s0, e0 in _runs(ranges)]).any()):
            record.fused_clean = False
            raise RuntimeError("the fused fold's count and write passes disagreed: the weights are put back "
                               "and this rollout samples through the adapter")
        if flat is not None:  # the unfold needs the recounts and fingerprints only
            flat.counts = flat.starts = None
        record.kept_bytes = sum(k.values.nbytes + (0 if k.index is None else k.index.nbytes)
                                for lf in record.layers for k in lf.kept)
        record.kept_bytes += sum(g.index.nbytes + g.values.nbytes for g in record.groups if g.index is not None)
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
    from kernels import lora_fold_triton as fused

    changed, prints, ranges, staged = [], [], [], None
    again = torch.empty_like(record.flat.prints) if any(lf.fused for lf in record.layers) else None
    for lf in reversed(record.layers):
        layer = lf.layer
        W = layer.get_base_layer().weight.data
        if (layer.lora_A[adapter].weight._version, layer.lora_B[adapter].weight._version) != lf.versions:
            changed.append(lf.name)
        if lf.fused:
            A, B, scale = _adapter_of(lf, adapter)
            gi, a, b = lf.span
            if staged is None or staged[0] != gi:  # the group's kept pairs onto the device once, for all its layers
                g, staged = record.groups[gi], None  # (the last group's copies go first)
                index = g.index.to(W.device, non_blocking=True)
                staged = (gi, index if index.dtype == torch.int64 else index.long(),
                          g.values.to(W.device, non_blocking=True))
            s0, e0 = lf.tiles
            fused.unfold(W, A, B, scale, record.flat.written, staged[1][a:b], staged[2][a:b],
                         clean=record.fused_clean, prints=again, tile0=s0)
            ranges.append((s0, e0))
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
    # a tile the write pass never wrote (-1: a fold that failed before its launch) has no fingerprint to match
    prints += [(record.flat.prints[s0:e0], torch.where(record.flat.written[s0:e0] < 0, record.flat.prints[s0:e0],
                                                       again[s0:e0])) for s0, e0 in _runs(ranges)]
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
