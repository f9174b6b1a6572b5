"""Merged-weight rollouts on the CPU: fold the adapter into the base, unfold it bit for bit.

`core/engines/merged_lora.py` folds W' = round(W + scale * B @ A) in place and keeps the elements
that do not round-trip, so the unfold restores W exactly. These hold it to that on tiny bf16 and
fp32 models: bitwise restoration (small deltas, several ranks, dropout on or off, and a hard case
whose deltas are large enough that most elements must be kept), merged logits as close to the
fp32 LoRA computation as the bf16 LoRA model itself is, and the HF engine's greedy tokens with
the fold equal to its tokens through the adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import ModelConfig
from core.engines.base import SamplingSettings
from core.engines.merged_lora import NotFoldable, fold_adapter, foldable, merged_adapter, unfold_adapter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from core.models.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("fold") / "model", hidden_size=128, num_heads=2)


def lora_model(model_dir, dtype=torch.bfloat16, *, rank=8, dropout=0.0, a_std=0.1, b_std=0.01, seed=0,
               base_dtype=torch.bfloat16):
    """A peft model on the tiny base (weights rounded to `base_dtype`, then held in `dtype`) with
    random A and B (peft starts B at zero: nothing to fold)."""
    from transformers import AutoModelForCausalLM

    from core.models.loading import add_lora

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=base_dtype).to(dtype)
    model = add_lora(base, ModelConfig(lora_r=rank, lora_alpha=2 * rank, lora_dropout=dropout))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n:
                p.copy_(torch.randn(p.shape, generator=g) * a_std)
            elif "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * b_std)
    return model.eval()


def base_bits(model) -> dict[str, torch.Tensor]:
    bits = {2: torch.int16, 4: torch.int32}
    return {n: p.detach().clone().view(bits[p.element_size()]) for n, p in model.named_parameters()
            if "lora_" not in n}


def assert_bitwise(before: dict, model) -> None:
    after = base_bits(model)
    assert before.keys() == after.keys()
    bad = [n for n in before if not torch.equal(before[n], after[n])]
    assert not bad, f"{len(bad)} weights changed, e.g. {bad[:3]}"


@pytest.mark.parametrize("rank,dropout,b_std,dtype", [
    (8, 0.0, 0.002, torch.bfloat16),  # a small delta, as after some training
    (8, 0.1, 0.01, torch.bfloat16),  # dropout changes nothing (the fold is the eval-mode adapter)
    (4, 0.0, 0.01, torch.bfloat16),
    (16, 0.0, 0.01, torch.bfloat16),
    (8, 0.0, 0.01, torch.float32),
], ids=["bf16-r8-small", "bf16-r8-dropout", "bf16-r4", "bf16-r16", "fp32-r8"])
def test_unfold_restores_every_weight_bit_for_bit(model_dir, rank, dropout, b_std, dtype):
    model = lora_model(model_dir, dtype, rank=rank, dropout=dropout, b_std=b_std)
    with torch.no_grad():  # signed zeros differ in bits: -0.0 must come back as -0.0
        w = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
        w[0, :4] = torch.tensor([-0.0, 0.0, -0.0, 0.0])
    before = base_bits(model)
    record = fold_adapter(model, chunk_elements=5000)  # several chunks per weight
    stats = record.stats()
    assert stats["layers"] == 2 * 7 and stats["elements"] == sum(
        m.base_layer.weight.numel() for n, m in model.named_modules() if n.endswith("_proj"))
    assert 0 < stats["kept_share"] < 1 / 3 and stats["dense_chunks"] == 0  # sparse: a few elements kept
    changed = sum(int((a != b).sum()) for a, b in zip(before.values(), base_bits(model).values()))
    assert changed > 0.5 * stats["elements"]  # the fold really wrote the weights
    unfold_adapter(record)
    assert_bitwise(before, model)


def test_large_deltas_keep_whole_chunks_and_still_restore(model_dir):
    """The hard case: deltas as large as the weights, so most elements do not round-trip and
    their chunks are kept whole (cheaper than index + value); the restore is still exact."""
    model = lora_model(model_dir, b_std=0.3, a_std=0.3)
    before = base_bits(model)
    record = fold_adapter(model, chunk_elements=5000)
    stats = record.stats()
    assert stats["kept_share"] > 0.9 and stats["dense_chunks"] > 0
    assert stats["kept_bytes"] <= 2 * stats["elements"] * 1.01  # never more than a bf16 copy (+ sparse chunks)
    unfold_adapter(record)
    assert_bitwise(before, model)


@pytest.mark.parametrize("b_std", [0.002, 0.01, 0.05])
def test_merged_logits_are_lora_logits_within_bf16_noise(model_dir, b_std):
    """Tolerance: against the fp32 computation of the same model (same bf16-valued base, same fp32
    adapter), the merged bf16 model's mean |logit error| is within 1.25x, and its max within 2x,
    of the bf16 LoRA model's own; the adapter itself moves the logits 10-100x more than that."""
    model = lora_model(model_dir, b_std=b_std)
    truth_model = lora_model(model_dir, torch.float32, b_std=b_std)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        truth = truth_model(input_ids=ids).logits.float()
        lora = model(input_ids=ids).logits.float()
        with merged_adapter(model), model.disable_adapter():
            merged = model(input_ids=ids).logits.float()
        with model.disable_adapter():
            base = model(input_ids=ids).logits.float()
    e_lora, e_merged = (lora - truth).abs(), (merged - truth).abs()
    effect = (truth - base).abs().max()
    assert e_merged.mean() <= 1.25 * e_lora.mean(), (e_merged.mean(), e_lora.mean())
    assert e_merged.max() <= 2 * e_lora.max(), (e_merged.max(), e_lora.max())
    assert effect > 10 * e_lora.max()


def test_hf_engine_greedy_tokens_with_fold_equal_the_adapter_s(model_dir):
    """The HF engine's rollout with the fold (adapter off, merged weights) gives the tokens its
    rollout through the adapter gives; the base model's tokens differ (the adapter matters)."""
    from core.engines.hf import HFEngine
    from core.models.loading import load_tokenizer

    model = lora_model(model_dir, torch.float32, b_std=0.05, base_dtype=torch.float32)
    engine = HFEngine(model, load_tokenizer(str(model_dir)))
    ref = engine.update_adapter(model)
    prompts = [engine.tokenizer(q, add_special_tokens=False)["input_ids"]
               for q in ("Which is bigger, 9.11 or 9.9?", "Tom has 3 apples", "Using the numbers 3 4 5")]
    greedy = SamplingSettings(n=1, temperature=0.0, max_tokens=12, ignore_eos=True)
    before = base_bits(model)
    lora = engine.rollout(prompts, greedy, ref, model=model, merged=False)
    assert engine.rollout_stats == {"merged": False, "why_not_merged": "off",
                                    "sample_s": engine.rollout_stats["sample_s"]}
    folded = engine.rollout(prompts, greedy, ref, model=model, merged=True)
    stats = engine.rollout_stats
    assert stats["merged"] and stats["folded_layers"] == 14 and stats["fold_s"] > 0 and stats["unfold_s"] > 0
    base = engine.generate(prompts, greedy, None)
    tokens = [[g[0].token_ids for g in out] for out in (lora, folded, base)]
    assert tokens[1] == tokens[0]
    assert tokens[2] != tokens[0]
    assert_bitwise(before, model)  # and the engine's weights are the base again after the rollout
    assert [g[0].token_ids for g in engine.generate(prompts, greedy, ref)] == tokens[0]


def test_what_cannot_be_folded_is_refused_and_the_engine_samples_through_the_adapter(model_dir):
    from core.engines.hf import HFEngine
    from core.models.loading import load_tokenizer

    model = lora_model(model_dir, torch.float32)
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    layer.lora_B["default"].bias = torch.nn.Parameter(torch.zeros(layer.out_features))
    assert "bias" in foldable(model)
    with pytest.raises(NotFoldable):
        fold_adapter(model)
    engine = HFEngine(model, load_tokenizer(str(model_dir)), merged_rollouts=True)
    out = engine.rollout([[1, 2, 3]], SamplingSettings(n=2, max_tokens=3), engine.update_adapter(model), model=model)
    assert len(out[0]) == 2 and not engine.rollout_stats["merged"]
    assert "bias" in engine.rollout_stats["why_not_merged"]


def test_a_failure_while_folded_still_restores_the_weights(model_dir):
    model = lora_model(model_dir)
    before = base_bits(model)
    with pytest.raises(RuntimeError, match="sampling failed"):
        with merged_adapter(model):
            raise RuntimeError("sampling failed")
    assert_bitwise(before, model)


def test_an_adapter_changed_while_folded_is_reported(model_dir):
    model = lora_model(model_dir)
    record = fold_adapter(model)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).mul_(2)
    with pytest.raises(RuntimeError, match="changed while folded"):
        unfold_adapter(record)


def test_a_training_step_with_merged_rollouts_logs_where_the_time_went(tiny_model_dir, tmp_path):
    """The trainer's step with the fold on (HF engine, CPU): rollouts come from the merged weights,
    the metrics split the step's time by phase, and the base weights are the base again."""
    from test_trainer import make_trainer, tiny_config

    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path, prompts_per_step=2, num_generations=4))
    with torch.no_grad():  # a non-zero adapter, so there is something to fold
        for n, p in trainer.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    before = base_bits(trainer.model)
    trainer.merged_rollouts = True
    m = trainer.train_step().metrics
    assert m["rollout/merged"] == 1.0 and 0 <= m["rollout/kept_share"] < 1
    assert m["rollout/fused_share"] == 0.0  # the CPU folds in PyTorch
    parts = ("rollout", "scoring", "forward_backward", "optimizer", "adapter_push")
    assert all(m[f"time/{p}"] > 0 for p in parts), {k: v for k, v in m.items() if k.startswith("time/")}
    assert m["time/fold"] + m["time/sample"] + m["time/unfold"] <= m["time/rollout"] + 1e-6
    assert_bitwise(before, trainer.model)


# ---------------------------------------------------------------------------- the fused (Triton) fold
# fold_adapter's kernel path, run through Triton's CPU interpreter in a child process (the kernels'
# own tests are kernels/test_lora_fold.py): float16, where the interpreter rounds as a GPU does


def _fold_adapter_case():
    """merged_lora.fold_adapter, kernels vs PyTorch, on a tiny float16 peft model."""
    import tempfile

    from core.models.loading import build_tiny_model

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model", hidden_size=64, num_heads=2)
        folded = {}
        for backend in ("torch", "triton"):
            model = lora_model(model_dir, torch.float16, b_std=0.01, base_dtype=torch.float16)
            before = base_bits(model)
            record = fold_adapter(model, backend=backend, chunk_elements=3000)
            folded[backend] = base_bits(model)
            out[f"{backend}_fused_layers"] = record.stats()["fused_layers"]
            out[f"{backend}_kept"] = record.stats()["kept_elements"]
            out[f"{backend}_groups"] = len(record.groups)
            unfold_adapter(record)
            out[f"{backend}_restored"] = all(torch.equal(before[k], v) for k, v in base_bits(model).items())
        # the two backends sum B @ A in another order (numpy's matmul in the interpreter, torch's on
        # this CPU: it depends on the CPU, 2026-12-07), so a folded element may land one step of
        # its dtype apart; each backend restores its own fold bit for bit (above)
        steps = [(folded["torch"][k].view(torch.int16).int() - folded["triton"][k].view(torch.int16).int()).abs()
                 for k in folded["torch"]]
        out["folded_elements"] = sum(d.numel() for d in steps)
        out["folded_differ"] = sum(int((d > 0).sum()) for d in steps)
        out["folded_max_step"] = max(int(d.max()) for d in steps)
        # large deltas: most of a layer is kept, so "auto" folds it in PyTorch (whole chunks kept)
        model = lora_model(model_dir, torch.float16, b_std=0.3, a_std=0.3, base_dtype=torch.float16)
        before = base_bits(model)
        record = fold_adapter(model, chunk_elements=3000)
        out["dense_fused_layers"], out["dense_chunks"] = record.stats()["fused_layers"], record.dense_chunks
        unfold_adapter(record)
        out["dense_restored"] = all(torch.equal(before[k], v) for k, v in base_bits(model).items())
        # a failure after some layers' write passes (keeping a group's pairs off the device): every
        # weight comes back, fused ones included. One group a layer (GROUP_BYTES 1): the 5th layer's
        # index copy, its values still on the device; one group for all: after every write pass,
        # its index already on the host, its values not
        import core.engines.merged_lora as ml

        real, real_bytes = ml._to_keep, ml.GROUP_BYTES
        for name, group_bytes, fail_at in (("failure", 1, 9), ("failure_grouped", real_bytes, 2)):
            model = lora_model(model_dir, torch.float16, b_std=0.01, base_dtype=torch.float16)
            before = base_bits(model)
            calls = {"n": 0}

            def failing(t, keep_on, calls=calls, fail_at=fail_at):
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise torch.OutOfMemoryError("no pinned memory")
                return real(t, keep_on)

            ml._to_keep, ml.GROUP_BYTES = failing, group_bytes
            try:
                fold_adapter(model, keep_on="host", backend="triton")
                out[f"{name}_raised"] = False
            except torch.OutOfMemoryError:
                out[f"{name}_raised"] = True
            finally:
                ml._to_keep, ml.GROUP_BYTES = real, real_bytes
            out[f"{name}_calls"] = calls["n"]
            out[f"{name}_restored"] = all(torch.equal(before[k], v) for k, v in base_bits(model).items())
        # groups of a few layers (GROUP_BYTES 10,000) broken by two dense layers (PyTorch folds them), then
        # failures inside a group: a write pass raising before its launch and after it, a count pass off by one
        import kernels.lora_fold_triton as kft

        def mixed():
            model = lora_model(model_dir, torch.float16, b_std=0.01, base_dtype=torch.float16)
            with torch.no_grad():
                for i, (_, m) in enumerate(ml._lora_layers(model, "default")):
                    if i in (3, 9):
                        m.lora_B["default"].weight.mul_(40)
            return model, base_bits(model)

        def restored(model, before):
            return all(torch.equal(before[k], v) for k, v in base_bits(model).items())

        ml.GROUP_BYTES = 10_000
        try:
            model, before = mixed()
            record = fold_adapter(model, keep_on="host")
            out["mixed_groups"] = [(g.start, len(g.layers)) for g in record.groups]
            out["mixed_fused"], out["mixed_dense"] = record.fused_layers, record.dense_chunks
            unfold_adapter(record)
            out["mixed_restored"] = restored(model, before)
            for name, target, at, when in (("write_before", "fold_write", 6, "before"),
                                           ("write_after", "fold_write", 6, "after"),
                                           ("count_off", "fold_count", 5, "after")):
                model, before = mixed()
                real_fn, calls = getattr(kft, target), {"n": 0}

                def wrapped(*a, real_fn=real_fn, calls=calls, at=at, when=when, target=target, **k):
                    calls["n"] += 1
                    if calls["n"] == at and when == "before":
                        raise RuntimeError("injected before the launch")
                    r = real_fn(*a, **k)
                    if calls["n"] == at and target == "fold_count":
                        r[k.get("tile0", 0)] += 1  # its first tile's count one more than its write pass will find
                    elif calls["n"] == at:
                        raise RuntimeError("injected after the launch")
                    return r

                setattr(kft, target, wrapped)
                try:
                    fold_adapter(model, keep_on="host")
                    out[f"{name}_raised"] = ""
                except RuntimeError as e:
                    out[f"{name}_raised"] = str(e)
                finally:
                    setattr(kft, target, real_fn)
                out[f"{name}_restored"] = restored(model, before)
        finally:
            ml.GROUP_BYTES = real_bytes
        # a rank the kernels do not take (one tl.dot holds the rank) is folded in PyTorch
        model = lora_model(model_dir, torch.float16, rank=96, b_std=0.01, base_dtype=torch.float16)
        record = fold_adapter(model)
        out["rank96_fused_layers"] = record.stats()["fused_layers"]
        unfold_adapter(record)
    return out



def _fused_fold_child():
    from kernels.interpreted import print_results

    print_results(_fold_adapter_case())


@pytest.fixture(scope="module")
def fused_fold_results():
    from kernels.interpreted import run_interpreted
    from kernels.lora_fold_triton import HAVE_TRITON

    if not HAVE_TRITON:
        pytest.skip("triton is not importable here, so its interpreter cannot run the kernels")
    return run_interpreted("tests.test_merged_lora", "_fused_fold_child")


def test_interpreter_fold_adapter_kernels_equal_pytorch_and_restore(fused_fold_results):
    r = fused_fold_results
    assert r["torch_fused_layers"] == 0 and r["triton_fused_layers"] == 2 * 7, r
    assert r["torch_restored"] and r["triton_restored"], r
    # the same folded weights, but for a rare element one step apart (another summation order)
    assert r["folded_max_step"] <= 1 and r["folded_differ"] <= r["folded_elements"] // 1000, r
    assert abs(r["torch_kept"] - r["triton_kept"]) <= r["folded_differ"] and r["torch_kept"] > 0, r
    assert r["dense_fused_layers"] == 0 and r["dense_chunks"] > 0 and r["dense_restored"], r
    assert r["failure_raised"] and r["failure_calls"] == 9 and r["failure_restored"], r
    assert r["failure_grouped_raised"] and r["failure_grouped_calls"] == 2 and r["failure_grouped_restored"], r
    # the tiny model's kept pairs fit one group: two host copies a fold, not two a layer
    assert r["triton_groups"] == 1 and r["torch_groups"] == 0, r


def test_interpreter_grouped_fold_around_dense_layers_and_failures_inside_a_group(fused_fold_results):
    """Groups of several layers, numbered past two dense layers that PyTorch folds, restore bit for bit;
    so does every failure inside a group, with its own message (not a false fingerprint mismatch)."""
    r = fused_fold_results
    groups = r["mixed_groups"]
    assert r["mixed_fused"] == 12 and r["mixed_dense"] > 0 and r["mixed_restored"], r
    assert sum(n for _, n in groups) == 12 and max(n for _, n in groups) >= 2 and len(groups) >= 3, r
    assert groups[0][0] == 0 and all(b[0] > a[0] for a, b in zip(groups, groups[1:])), r
    assert r["write_before_raised"] == "injected before the launch" and r["write_before_restored"], r
    assert r["write_after_raised"] == "injected after the launch" and r["write_after_restored"], r
    assert "count and write passes disagreed" in r["count_off_raised"] and r["count_off_restored"], r
    assert r["rank96_fused_layers"] == 0, r


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_grouped_fold_equals_pytorch_and_restores(model_dir):
    """fold_adapter on a GPU, bf16: the kernels' grouped layout (one group, and one group a layer) gives the
    PyTorch fold's W' (but for a rare element one step apart: tl.dot sums B @ A in another order) and
    restores every weight; the pairs go to pinned host memory a group at a time."""
    import core.engines.merged_lora as ml
    from kernels.lora_fold_triton import HAVE_TRITON

    if not HAVE_TRITON:
        pytest.skip("needs triton")
    model = lora_model(model_dir, torch.bfloat16, b_std=0.01).cuda()
    before = base_bits(model)
    record = fold_adapter(model, backend="torch")
    want = base_bits(model)
    unfold_adapter(record)
    assert_bitwise(before, model)
    real = ml.GROUP_BYTES
    try:
        for group_bytes in (real, 1):
            ml.GROUP_BYTES = group_bytes
            record = fold_adapter(model, backend="triton")
            got = base_bits(model)
            stats = record.stats()
            assert stats["fused_layers"] == len(record.layers) and stats["kept_on"] == "host"
            assert record.groups and all(g.index.is_pinned() and g.values.is_pinned() for g in record.groups if g.size)
            assert stats["kept_bytes"] == sum(g.index.nbytes + g.values.nbytes for g in record.groups)
            assert len(record.groups) == 1 if group_bytes == real else len(record.groups) > 1
            steps = [(want[k].int() - got[k].int()).abs() for k in want]
            assert max(int(d.max()) for d in steps) <= 1
            assert sum(int((d > 0).sum()) for d in steps) <= sum(d.numel() for d in steps) // 1000
            unfold_adapter(record)
            assert_bitwise(before, model)
    finally:
        ml.GROUP_BYTES = real
