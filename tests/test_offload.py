"""Activation offload (per-layer checkpointing + saved-tensor hooks) keeps gradients exact."""

from __future__ import annotations

import pytest
import torch

from core.config import ModelConfig
from core.models.offload import checkpointed_layers, offloaded_activations


def _grads(model, ids, ctx):
    model.zero_grad(set_to_none=True)
    with ctx:
        out = model(input_ids=ids).logits.float().logsumexp(-1).mean()
        out.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_offload_and_checkpointing_give_identical_gradients(tiny_model_dir, device):
    import contextlib

    from core.models.loading import add_lora, load_base_model

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8)
    model = add_lora(load_base_model(cfg, device), cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    ids = torch.randint(3, 300, (2, 24), device=device)
    plain = _grads(model, ids, contextlib.nullcontext())
    ckpt = _grads(model, ids, checkpointed_layers(model))
    off = _grads(model, ids, offloaded_activations(model, min_bytes=0))
    assert plain.keys() == ckpt.keys() == off.keys() and len(plain) > 0
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(off[n], plain[n], rtol=1e-5, atol=1e-6)
    # the layers' forwards are restored after the context
    layers = model.get_base_model().model.layers
    assert all("wrapped" not in getattr(l.forward, "__name__", "") for l in layers)


def test_checkpointing_leaves_no_reference_cycle(tiny_model_dir):
    """After the context the layers have no forward of their own: no cycle keeps a deleted model
    (its weights, LoRA and gradients) alive until a full garbage collection."""
    import gc
    import weakref

    from core.config import ModelConfig
    from core.models.loading import load_base_model
    from core.models.offload import _decoder_layers, checkpointed_layers

    model = load_base_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"), "cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with checkpointed_layers(model):
        assert all("forward" in layer.__dict__ for layer in _decoder_layers(model))
        model(ids).logits.sum().backward()
    assert all("forward" not in layer.__dict__ for layer in _decoder_layers(model))
    ref = weakref.ref(_decoder_layers(model)[0])
    gc.disable()
    try:
        del model
        assert ref() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_offload_keeps_weights_and_small_tensors_on_the_device():
    from core.models.offload import _PinnedOffload

    weight = torch.nn.Parameter(torch.zeros(256, 256))
    hooks = _PinnedOffload(min_bytes=1024, params=[weight])
    assert not hooks.wants(weight)  # a parameter
    assert not hooks.wants(weight.detach())  # the same storage, not a Parameter object
    assert hooks.wants(torch.zeros(256, 256))  # an activation of 256 KiB
    assert not hooks.wants(torch.zeros(8))  # 32 bytes: not worth a copy


def test_offload_copies_back_one_layer_ahead_and_shares_what_every_layer_saves(tiny_model_dir):
    """The offload's bookkeeping, run on CPU copies (simulate): gradients as without offload; a
    tensor saved more than once goes out once; in backward every slot but the first ones the
    loss needs comes back prefetched (its copy was started while the layer above it ran)."""
    import contextlib

    from core.models.loading import add_lora, load_base_model

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8)
    model = add_lora(load_base_model(cfg, "cpu"), cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    ids = torch.randint(3, 300, (2, 24))
    plain = _grads(model, ids, contextlib.nullcontext())
    off = _grads(model, ids, offloaded_activations(model, min_bytes=0, simulate=True))
    for n in plain:
        torch.testing.assert_close(off[n], plain[n], rtol=1e-5, atol=1e-6)
    # once more, keeping the hook object to read its counts
    model.zero_grad(set_to_none=True)
    with offloaded_activations(model, min_bytes=0, simulate=True) as hooks:
        model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
    c = hooks.counts
    assert c["shared"] > 0 and hooks.offloaded_bytes > 0
    assert c["prefetched"] + c["waited"] >= c["slots"] - c["shared"]  # every slot came back
    assert c["waited"] <= 2 and c["prefetched"] >= c["slots"] - c["shared"] - 2, c  # 2: the loss's own
    without = offloaded_activations(model, min_bytes=0, simulate=True, prefetch=False)
    model.zero_grad(set_to_none=True)
    with without as h2:
        model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
    assert h2.counts["prefetched"] == 0 and h2.counts["waited"] == c["prefetched"] + c["waited"]
