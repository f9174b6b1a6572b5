"""Config validation and YAML round trip; the offline default model loads and answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Config, ConfigError, field_help, validate


def test_yaml_round_trip(tmp_path):
    cfg = Config()
    cfg.algorithm.loss_type = "dr_grpo"
    cfg.rewards.names = ["format_strict", "correctness"]
    cfg.rewards.weights = [0.5, 1.0]
    cfg.save(tmp_path / "c.yaml")
    back = Config.load(tmp_path / "c.yaml")
    assert back == cfg and back.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("section,name,value,expect", [
    ("algorithm", "loss_type", "ppo", "algorithm.loss_type = 'ppo': must be one of grpo, bnpo, dr_grpo, dapo"),
    ("algorithm", "num_generations", 1, "algorithm.num_generations = 1: must be between 2 and 256"),
    ("algorithm", "temperature", float("nan"), "algorithm.temperature = nan: must be a finite number"),
    ("algorithm", "max_steps", 2.5, "algorithm.max_steps = 2.5: must be a whole number"),
    ("model", "load_in_4bit", "yes", "model.load_in_4bit = 'yes': must be true or false"),
    ("algorithm", "scale_rewards", "std", "must be one of group, batch, none"),
])
def test_invalid_values_name_field_and_range(section, name, value, expect):
    cfg = Config()
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert expect in str(e.value)


@pytest.mark.parametrize("weight", [-1e30, 1000.5, float("inf"), float("nan"), "2", True])
def test_reward_weights_are_finite_numbers_within_1000(weight):
    cfg = Config()
    cfg.rewards.names, cfg.rewards.weights = ["correctness", "format_strict"], [1.0, weight]
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == f"the weight of format_strict = {weight!r} (`rewards.weights`): must be between -1000 and 1000"
    cfg.rewards.weights = [-1000, 1000.0]  # the bounds themselves are allowed
    assert validate(cfg).rewards.weights == [-1000, 1000.0]


def test_yaml_errors_name_the_problem(tmp_path):
    (tmp_path / "a.yaml").write_text("algorithm:\n  bogus_field: 3\n")
    with pytest.raises(ConfigError, match=r"algorithm: unknown field\(s\) \['bogus_field'\]"):
        Config.load(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("rewards:\n  names: [correctness]\n  weights: [1, 2]\n")
    with pytest.raises(ConfigError, match="2 values but rewards.names has 1"):
        Config.load(tmp_path / "b.yaml")


def test_every_field_has_help_text():
    import dataclasses

    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory):
            assert len(field_help(section.name, f.name)) > 15, (section.name, f.name)


def test_cli_overrides():
    from core.config_text import apply_overrides

    cfg = apply_overrides(Config(), ["algorithm.max_steps=7", "model.lora_target_modules=[q_proj, v_proj]"])
    assert cfg.algorithm.max_steps == 7 and cfg.model.lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="must be between"):
        apply_overrides(Config(), ["algorithm.epsilon=-1"])


def test_offline_default_model_answers_a_chat_prompt(smollm2_dir):
    from core.evaluation.chat import answer
    from core.engines.hf import HFEngine
    from core.models.loading import load_model_and_tokenizer
    from core.config import ModelConfig

    model, tok = load_model_and_tokenizer(ModelConfig(), "cpu")
    assert model.get_base_model().config.model_type == "llama"
    assert tok.eos_token == "<|im_end|>"
    engine = HFEngine(model, tok)
    reply = answer(engine, tok, "What is the capital of France?", system_prompt="", max_tokens=16)
    assert "Paris" in reply


def test_unknown_model_gives_a_clear_error(tmp_path):
    from core.config import ModelConfig
    from core.models.loading import ModelError, load_base_model

    with pytest.raises(ModelError, match="neither a local folder nor a reachable hub model id"):
        load_base_model(ModelConfig(name_or_path="no-such-org/no-such-model-xyz"), "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no loadable model"):
        load_base_model(ModelConfig(name_or_path=str(tmp_path / "empty")), "cpu")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_configs_load_and_their_builtin_data_builds(path):
    from core.config import Config
    from core.data import load_task_data

    cfg = Config.load(path)
    assert cfg.algorithm.num_generations >= 2 and cfg.rewards.names
    if cfg.data.source.startswith("builtin:"):
        task = load_task_data(cfg.data)
        assert len(task.train) == cfg.data.train_size and len(task.eval) == cfg.data.eval_size


def test_compile_layers_without_a_c_compiler_is_refused_by_name(tiny_model_dir, monkeypatch):
    """torch.compile needs a C compiler; without one the setting is refused when the model is built,
    not with an inductor traceback at the first step."""
    import shutil

    from core.config import ModelConfig
    from core.models.loading import ModelError, add_lora, load_base_model

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8, compile_layers=True)
    base = load_base_model(cfg, "cpu")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ModelError, match=r"model.compile_layers: torch.compile builds its kernels with a C compiler"):
        add_lora(base, cfg)
    assert not hasattr(base, "peft_config")  # refused before the model was touched


def test_a_setting_the_algorithm_does_not_read_never_blocks_its_start():
    """The Train tab hides what an algorithm ignores (core.rl.algorithms.ignored_fields): a bad value
    left in a hidden box must not refuse Start with a field the person cannot see."""
    cfg = Config()
    cfg.algorithm.epsilon, cfg.algorithm.epsilon_high = 0.3, 0.1
    with pytest.raises(ConfigError, match="epsilon_high = 0.1: must be at least epsilon"):
        validate(cfg)
    cfg.algorithm.algorithm = "online_dpo"  # reads no epsilon: its hidden boxes keep any value
    validate(cfg)
    cfg.algorithm.judge = "not a url"
    with pytest.raises(ConfigError, match="algorithm.judge = 'not a url'"):
        validate(cfg)
    cfg.algorithm.algorithm, cfg.algorithm.epsilon_high = "grpo", 0.3  # grpo reads no judge
    validate(cfg)
