"""Which settings each algorithm reads (`core.rl.algorithms.ignored_fields`), checked against the
trainers, and the Train tab that hides the others when the algorithm is picked.

The check runs each algorithm's step on a tiny model on the CPU, from one baseline in which every
setting has something to act on (beta > 0 and two passes, an adapter already a little off the base,
completions of different lengths, some cut at the length limit, a sampler that hands back log-probs a
known way off the trainer's, as vLLM does), then again with settings changed: the fields an algorithm
ignores, all changed at once, leave its step's loss and update exactly as they were; each field it
reads, changed alone, changes them."""

from __future__ import annotations

import math

import pytest
import torch
from rl_helpers import FirstTokenParity, tiny_config, tiny_task

from ui.forms import config_fields
from core.engines.hf import HFEngine
from core.rl.algorithms import ALGORITHMS, GROUP, READ_BY, ignored_fields

# a value for each field that acts, from the baseline below, wherever the field is read
CHANGED = {
    "loss_type": "grpo", "scale_rewards": "none", "use_bias_correction_kl": False, "num_iterations": 1,
    "epsilon": 0.01, "epsilon_high": 0.01, "beta": 0.0, "mask_truncated_completions": True,
    "vllm_importance_sampling_correction": False, "vllm_importance_sampling_mode": "sequence_truncate",
    "vllm_importance_sampling_clip_max": 1.2, "vllm_importance_sampling_clip_min": 0.8,
    "dpo_beta": 1.0, "dpo_pair_rule": "random_pair", "judge": "self", "judge_model": "other-model",
    "gae_lambda": 0.5, "gamma": 0.9, "vf_coef": 1.0, "cliprange_value": 0.001,
}
BASELINE = dict(beta=0.1, num_iterations=2, vllm_importance_sampling_mode="token_truncate",
                vllm_importance_sampling_clip_max=3.0, vllm_importance_sampling_clip_min=0.0,
                num_generations=4, prompts_per_step=2, micro_batch_size=4)
# read, but with nothing to act on in one CPU step: the judge's model name is sent to a judge endpoint only
NOT_SHOWN_IN_A_STEP = {("online_dpo", "judge_model")}


class LogprobSampler(HFEngine):
    """HF sampling, cut to lengths of 3 to 10 tokens (every third one marked as cut at the limit), with
    each token's log-probability as a sampler that found it 0.4 nats more, then less, likely than the
    trainer does (token ratios of 0.67 and 1.49: a clip of [0.8, 1.2] acts on every token)."""

    gives_logprobs = True

    def rollout(self, prompts, sampling, adapter, **kw):
        from core.rl.logprobs import completion_logprobs, pad_rollouts

        groups = super().rollout(prompts, sampling, adapter, **kw)
        flat = [c for g in groups for c in g]
        for i, c in enumerate(flat):
            c.token_ids, c.finish_reason = c.token_ids[: 3 + i % 8], "length" if i % 3 == 0 else "stop"
        if sampling.logprobs:
            ids, attn, comp, cmask = pad_rollouts([p for p, g in zip(prompts, groups) for _ in g],
                                                  [c.token_ids for c in flat], self.tokenizer.pad_token_id, "cpu")
            with torch.no_grad():
                lp = completion_logprobs(self.model, ids, attn, comp, cmask, sampling.temperature)
            for i, c in enumerate(flat):
                c.logprobs = [float(x) + (0.4 if t % 2 else -0.4) for t, x in enumerate(lp[i, :len(c.token_ids)])]
        return groups


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from core.models.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("fields") / "model", initializer_range=0.4)


def one_step(model_dir, tmp_path, algorithm: str, **changed) -> tuple[float, list[torch.Tensor]]:
    """One step of `algorithm` from the baseline with `changed` settings: its loss and the trained
    weights after it (the adapter's, PPO's value head's)."""
    from core.models.loading import add_lora, load_base_model, load_tokenizer
    from core.rl.algorithms import make_trainer

    cfg = tiny_config(tmp_path, algorithm=algorithm, **{**BASELINE, **changed})
    cfg.data.stop_at = ""
    torch.manual_seed(cfg.algorithm.seed)
    cfg.model.name_or_path = str(model_dir)
    tok = load_tokenizer(str(model_dir))
    model = add_lora(load_base_model(cfg.model, "cpu"), cfg.model)
    trainer = make_trainer(cfg, model=model, tokenizer=tok, engine=LogprobSampler(model, tok), task=tiny_task(),
                           reward_set=FirstTokenParity(), device="cpu")
    seeded = torch.Generator().manual_seed(0)  # an adapter already trained a little: the policy is not the
    with torch.no_grad():                      # reference, so a KL to it acts from the first step
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=seeded))
    loss = trainer.train_step().metrics["loss"]
    return loss, [p.detach().clone() for p in trainer.params]


def same(a, b) -> bool:
    (loss_a, params_a), (loss_b, params_b) = a, b
    same_loss = loss_a == loss_b or (math.isnan(loss_a) and math.isnan(loss_b))
    return same_loss and all(torch.equal(x, y) for x, y in zip(params_a, params_b, strict=True))


def test_the_table_names_real_fields_and_the_trainers_algorithms():
    from core.rl.trainer import GRPO_FAMILY

    assert GROUP == GRPO_FAMILY and set(ALGORITHMS) == {"grpo", "gspo", "rloo", "online_dpo", "ppo"}
    assert set(READ_BY) <= set(config_fields("algorithm")) and set(CHANGED) == set(READ_BY)
    assert all(set(readers) <= set(ALGORITHMS) and readers for readers in READ_BY.values())
    ppo = ignored_fields("ppo")
    assert "loss_type" in ppo and "scale_rewards" in ppo and "vllm_importance_sampling_correction" in ppo
    assert not {"learning_rate", "epsilon", "num_iterations", "beta", "gae_lambda", "temperature"} & ppo
    dpo = ignored_fields("online_dpo")
    assert {"loss_type", "epsilon", "epsilon_high", "num_iterations", "beta", "scale_rewards"} <= dpo
    assert not {"learning_rate", "dpo_beta", "judge", "num_generations", "max_completion_length"} & dpo
    assert ignored_fields("grpo") == {"dpo_beta", "dpo_pair_rule", "judge", "judge_model", "gae_lambda", "gamma",
                                      "vf_coef", "cliprange_value"}
    assert ignored_fields("rloo") - ignored_fields("grpo") == {n for n in READ_BY if n.startswith("vllm_importance")}
    with pytest.raises(ValueError, match="unknown algorithm"):
        ignored_fields("dqn")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_what_an_algorithm_ignores_changes_nothing_and_what_it_reads_does(model_dir, tmp_path, algorithm):
    base = one_step(model_dir, tmp_path / "base", algorithm)
    assert same(base, one_step(model_dir, tmp_path / "again", algorithm))  # a step is repeatable
    ignored = ignored_fields(algorithm)
    if not same(base, one_step(model_dir, tmp_path / "ignored", algorithm, **{n: CHANGED[n] for n in ignored})):
        acting = [n for n in sorted(ignored) if not same(base, one_step(model_dir, tmp_path / n, algorithm,
                                                                         **{n: CHANGED[n]}))]
        pytest.fail(f"{algorithm} is said to ignore {acting or sorted(ignored)} (core.rl.algorithms.READ_BY), "
                    "but changing them changed its step")
    read = [n for n in READ_BY if n not in ignored and (algorithm, n) not in NOT_SHOWN_IN_A_STEP]
    unchanged = [n for n in read if same(base, one_step(model_dir, tmp_path / n, algorithm, **{n: CHANGED[n]}))]
    assert not unchanged, f"{algorithm} reads {unchanged} (core.rl.algorithms.READ_BY), but changing them did nothing"


# ---------------------------------------------------------------------------
# the Train tab


@pytest.fixture(scope="module")
def page(tiny_model_dir, tmp_path_factory):
    from core.app.manager import RunManager
    from core.config import ModelConfig
    from ui.studio import build_app

    manager = RunManager(tmp_path_factory.mktemp("page-runs"),
                         ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"), device="cpu")
    yield build_app(manager)
    manager.close()


NOTES = {"train-loss-note": "grpo", "train-loss-note-online-dpo": "online_dpo", "train-loss-note-ppo": "ppo"}


def test_picking_an_algorithm_shows_only_the_settings_it_reads_and_its_loss_note(page, monkeypatch):
    from ui.tabs import train

    form = page.form
    picked, engine = form.components["algorithm_algorithm"], form.components["run_engine"]
    box = {f"algorithm_{n}": form.components[f"algorithm_{n}"] for n in READ_BY}
    # as built: the default algorithm's view (grpo): PPO's and Online DPO's settings hidden, GRPO's shown,
    # vLLM's correction only where a run on this machine samples with vLLM (not this CPU without vLLM)
    assert form.defaults.algorithm.algorithm == "grpo"
    vllm_here = train.samples_with_vllm(form.defaults.run.engine, "cpu")
    assert {k for k, c in box.items() if not c.visible} == {
        f"algorithm_{n}" for n in ignored_fields("grpo") | (frozenset() if vllm_here else train.VLLM_ONLY)}
    notes = {c.elem_id: c for c in page.blocks.values() if c.elem_id in NOTES}
    assert {i for i, c in notes.items() if c.visible} == {"train-loss-note"}
    group = next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "train-engine")
    assert group.visible is vllm_here
    assert all(c.visible is not False for k, c in form.components.items() if k not in box)

    on_pick = [f for f in page.fns.values() if (picked._id, "change") in f.targets]
    assert len(on_pick) == 1
    (dep,) = on_pick
    assert set(dep.outputs) == set(box.values()) | set(notes.values()) | {group}
    assert [f.fn for f in page.fns.values() if (engine._id, "change") in f.targets and group in f.outputs] == [dep.fn]
    # a machine whose runs sample with vLLM unless told otherwise (a GPU with vLLM)
    monkeypatch.setattr(train, "samples_with_vllm", lambda engine, device: engine != "hf")

    def shown(algorithm: str, engine: str = "auto") -> dict:
        updates = dep.fn(algorithm, engine)
        assert all(set(u) == {"__type__", "visible"} for u in updates)  # visibility only: every value stays
        return {c.elem_id: u["visible"] for c, u in zip(dep.outputs, updates, strict=True)}

    for algorithm in ALGORITHMS:
        view = shown(algorithm)
        for name in READ_BY:
            assert view[f"form-algorithm_{name}"] is (name not in ignored_fields(algorithm)), (algorithm, name)
        assert [i for i in NOTES if view[i]] == [{"online_dpo": "train-loss-note-online-dpo",
                                                  "ppo": "train-loss-note-ppo"}.get(algorithm, "train-loss-note")]
    ppo = shown("ppo")
    assert not ppo["form-algorithm_loss_type"] and not ppo["form-algorithm_scale_rewards"]
    assert ppo["form-algorithm_epsilon"] and ppo["form-algorithm_gae_lambda"] and not ppo["form-algorithm_dpo_beta"]
    assert "form-algorithm_learning_rate" not in ppo  # read by every algorithm: never hidden
    dpo = shown("online_dpo")
    assert not any(dpo[f"form-algorithm_{n}"] for n in ("loss_type", "epsilon", "epsilon_high", "num_iterations",
                                                       "vllm_importance_sampling_correction", "beta"))
    assert dpo["form-algorithm_dpo_beta"] and dpo["form-algorithm_judge"]
    grpo = shown("grpo")  # back to a GRPO-family algorithm: its settings return
    assert grpo["form-algorithm_loss_type"] and grpo["form-algorithm_vllm_importance_sampling_correction"]
    assert not grpo["form-algorithm_gae_lambda"] and grpo["train-loss-note"] and grpo["train-engine"]
    hf = shown("grpo", "hf")  # Hugging Face generate: vLLM's correction and engine settings out of view
    assert not any(hf[f"form-algorithm_{n}"] for n in train.VLLM_ONLY) and not hf["train-engine"]
    assert hf["form-algorithm_loss_type"] and hf["form-algorithm_beta"]

    # a config shown on load (the run's own algorithm, maybe not the default) gets the same view
    show_run = next(i for i, f in page.fns.items() if getattr(f.fn, "__name__", "") == "show_run")
    after = [f for f in page.fns.values() if f.trigger_after == show_run and f.fn is dep.fn]
    assert len(after) == 1 and after[0].outputs == dep.outputs and after[0].inputs == [picked, engine]


def test_hidden_settings_keep_their_values_in_the_config(page):
    cfg = page.form.to_config({"algorithm_algorithm": "ppo", "algorithm_loss_type": "bnpo", "algorithm_epsilon": 0.1})
    assert (cfg.algorithm.algorithm, cfg.algorithm.loss_type, cfg.algorithm.epsilon) == ("ppo", "bnpo", 0.1)


def test_the_samples_table_drops_an_advantage_no_step_logged():
    import pandas as pd

    from ui.views import samples_view

    row = {"step": 1, "question": "q", "answer": "4", "completion": "c", "reward": 1.0, "correctness": 1.0}
    ppo = samples_view(pd.DataFrame([{**row, "advantage": None}, {**row, "advantage": None}]))
    assert "advantage" not in list(ppo.columns) and "reward" in list(ppo.columns)
    grpo = samples_view(pd.DataFrame([{**row, "advantage": 0.5}, {**row, "advantage": None}]))
    assert "advantage" in list(grpo.columns)
    assert "优势" not in list(samples_view(pd.DataFrame([{**row, "advantage": None}]), lang="zh").columns)
