"""Run configuration: five dataclasses (model, data, rewards, algorithm, run) and their YAML form.

Owns: every knob a run has, its default, its allowed range and its help text. The help text is
written once, here, and the UI reads it for its tooltips (`field_help`). Validation names the
field and the allowed range so a bad value never gets as far as a training step.

Refuses to know: how any of it is used. Nothing here imports torch.

    >>> cfg = Config()
    >>> cfg.algorithm.num_generations
    8
    >>> cfg.algorithm.loss_type = "nope"
    >>> validate(cfg)
    Traceback (most recent call last):
    ...
    core.errors.ConfigError: algorithm.loss_type = 'nope': must be one of grpo, bnpo, dr_grpo, dapo
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config_text import coerce_number, read_yaml
from core.errors import ConfigError


def _f(default, help: str, *, choices=None, range=None, factory=None):
    """A dataclass field with help text and an allowed set or [lo, hi] range (TRL style)."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = list(choices)
    if range is not None:
        meta["range"] = range
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

FORMAT_INSTRUCTION = (
    "You are a careful assistant. Think step by step inside <think> and </think>, "
    "then give only the final answer inside <answer> and </answer>."
)
# The default task is builtin:largest (the largest of four 2-digit numbers: Compare's 9.11-vs-9.9 question
# asked of more numbers), and the system prompt shows the format once on a question of its kind: with it
# and the answer prefilled with <think>, the bundled 135M model writes the tags often enough for the
# rewards to differ within a group from the first step, and held-out accuracy rises on a CPU in 20 steps
# (5% -> 15-40% at four seeds; the decimal task it replaced, 60% -> 30-55%: a two-way question the base
# already half gets; bench/results/default_search.md).
DEFAULT_SYSTEM_PROMPT = FORMAT_INSTRUCTION + (
    "\nExample:\nQuestion: Which is the largest of 31, 74, 58, 19?\n"
    "<think>74 is more than 31, 58 and 19.</think>\n<answer>74</answer>"
)


# ---------------------------------------------------------------------------
@dataclass
class ModelConfig:
    name_or_path: str = _f(
        "",
        "Hugging Face hub id (e.g. Qwen/Qwen2.5-1.5B-Instruct) or a local folder. Empty = the bundled "
        "offline default, SmolLM2-135M-Instruct.",
    )
    dtype: str = _f(
        "auto",
        "Weights dtype. 'auto' = bfloat16 on a GPU or CPU that supports it natively, else float32.",
        choices=["auto", "float32", "bfloat16", "float16"],
    )
    load_in_4bit: bool = _f(
        False,
        "QLoRA: keep the frozen base in 4-bit NF4 (bitsandbytes, GPU only). Cuts weight memory ~4x.",
    )
    lora_r: int = _f(16, "LoRA rank. 8-64 is typical; higher learns more but uses more memory.", range=(1, 1024))
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r). Usually 2 x rank.", range=(1, 4096))
    lora_dropout: float = _f(0.0, "Dropout on the LoRA path. 0 is standard for RL.", range=(0.0, 0.9))
    lora_target_modules: list = _f(
        None,
        "Linear layers that get LoRA adapters. All attention and MLP projections by default.",
        factory=lambda: list(DEFAULT_TARGETS),
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute activations in backward to save memory (slower, ~30%)."
    )
    offload_activations: bool = _f(
        False,
        "Keep only each decoder layer's input, in pinned CPU memory, and recompute the rest in backward "
        "(GPU only). Largest saving for long completions.",
    )
    compile_layers: bool = _f(False, "For GPUs: compile each decoder layer with torch.compile for training (one graph "
                                     "for every layer, any length): fewer, fused kernels, where a small micro-batch "
                                     "spends most of its time (H100, 1.5B: a pass 0.6-0.7x as long, bf16 or 4-bit). The "
                                     "first step waits for the compile (~50 s; less once cached); on a CPU it costs more "
                                     "than it saves. Needs a C compiler.")


@dataclass
class DataConfig:
    source: str = _f("builtin:largest", "Where the questions come from: 'builtin:largest', 'builtin:decimal_compare', "
                     "'builtin:arithmetic', 'builtin:countdown', 'builtin:addition', 'builtin:multiplication', 'builtin:"
                     "chain_arithmetic', 'builtin:long_chain_arithmetic', a CSV/JSONL/Parquet file, a dataset folder, or a hub dataset id.")
    subset: str = _f("", "Hub dataset configuration name (e.g. 'main' for GSM8K). Empty if none.")
    split: str = _f("train", "Split to train on when the source has named splits.")
    eval_split: str = _f("", "Split to hold out for evaluation. Empty = carve `eval_size` rows off the training split.")
    prompt_column: str = _f("prompt", "Column holding the question text.")
    answer_column: str = _f("answer", "Column holding the reference answer. GSM8K-style '... #### 42' keeps only 42.")
    system_prompt: str = _f(DEFAULT_SYSTEM_PROMPT, "System message put before every question.")
    response_prefix: str = _f(
        "<think>",
        "Text every answer starts with, written after the chat template's assistant header (R1-Zero "
        "style '<think>'). The model continues from it; rewards, samples and chat see it as part of "
        "the answer. Helps small models that never write the tags on their own (the bundled 135M model "
        "never does without it). Empty = the model starts the answer itself.",
    )
    stop_at: str = _f(
        "</answer>",
        "A completion ends once it has written this text (kept, as EOS is): in rollouts, evaluation and chat "
        "alike, so an answer ends at its closing tag instead of repeating it to the token limit. Empty = only "
        "EOS or the token limit end a completion.",
    )
    chat_template: str = _f("", "Jinja chat template. Empty = the tokenizer's own, or a plain default for base "
                                "models without one.")
    train_size: int = _f(2000, "Training rows to generate (built-in tasks) or keep at most (files).", range=(1, 10_000_000))
    eval_size: int = _f(200, "Held-out questions for evaluation, at most (a file without an evaluation split holds out "
                             "a tenth of its distinct questions, at least 5, up to this).", range=(0, 1_000_000))
    hold_out_by: str = _f("question", "How a file without an evaluation split is carved: question = distinct questions, one row "
                          "each, their repeats not trained on; row = rows (runs before 2026-12-08).", choices=["question", "row"])
    seed: int = _f(0, "Seed for built-in task generation and for the train/held-out split.", range=(0, 2**31 - 1))
    curriculum_column: str = _f("", "Easy questions first: a numeric column saying how hard each question is (the chain "
                                "tasks' 'steps'). Training starts on the rows with its smallest value and each larger "
                                "value joins in turn, the last at the step set beside it; held-out evaluation always "
                                "asks every row. Empty = every step draws from all rows.")
    curriculum_steps: int = _f(100, "With a curriculum column: the step from which every row is drawn (the levels in "
                                    "between join evenly spaced). 0 = all rows from the start.", range=(0, 10_000_000))


@dataclass
class RewardsConfig:
    names: list = _f(
        None,
        "Reward presets to use (see the registry). The total reward is their weighted sum. The default pays "
        "for the right answer, the exact format and each tag written (partial credit from the first step).",
        factory=lambda: ["correctness", "format_strict", "xml_tag_count"],
    )
    weights: list = _f(
        None, "One weight per reward, same order, each between -1000 and 1000. Empty = each preset's default "
        "weight (correctness 1.0, format_strict 0.5, xml_tag_count 0.5, ...).", factory=list
    )
    custom_code: str = _f(
        "",
        "Python source of extra reward functions with TRL's signature "
        "`def my_reward(prompts, completions, **kwargs) -> list[float]` (async, or imported: "
        "`from trl.rewards import accuracy_reward`); one named like a preset replaces it. Runs in a "
        "separate process with a time limit.",
    )
    custom_timeout_s: float = _f(10.0, "Time limit for one call of the custom reward code.", range=(0.1, 600.0))


@dataclass
class AlgorithmConfig:
    algorithm: str = _f(
        "grpo",
        "Training recipe. grpo: group-normalised advantages (DeepSeekMath). gspo: grpo with a "
        "sequence-level importance ratio (Qwen, arXiv:2507.18071). rloo: leave-one-out baseline "
        "(Ahmadian et al. 2024). online_dpo: a DPO step on the best-vs-worst sampled pair, ranked by the "
        "rewards or a judge (Guo et al. 2024, arXiv:2402.04792). ppo: per-token advantages from a value "
        "head and GAE (Schulman et al. 2017; Ouyang et al. 2022).",
        choices=["grpo", "gspo", "rloo", "online_dpo", "ppo"],
    )
    loss_type: str = _f(
        "dapo",
        "How token losses are averaged. grpo: per sequence then over sequences (length bias). "
        "bnpo: over all tokens of the micro-batch. dr_grpo: sum / (batch x max_completion_length) "
        "(Dr. GRPO, arXiv:2503.20783). dapo: over all tokens of the whole batch (DAPO, arXiv:2503.14476; "
        "TRL's default).",
        choices=["grpo", "bnpo", "dr_grpo", "dapo"],
    )
    num_generations: int = _f(
        8, "G: completions sampled per prompt. Advantages compare completions within a group.", range=(2, 256)
    )
    prompts_per_step: int = _f(
        4, "Distinct prompts per optimizer step (batch = prompts_per_step x num_generations).", range=(1, 4096)
    )
    micro_batch_size: int = _f(
        0, "Sequences per forward/backward pass at full length. 0 = auto: on a GPU the memory planner picks it (see "
        "'Auto micro-batch aims for'; by default the largest that needs no more memory than the rollouts' KV cache, "
        "free while training runs); on a CPU 8, fewer where a step would not fit the RAM available. Larger trains faster, needs more memory. Steps of shorter answers "
        "run 2x, 4x ... as many a pass within the same tokens (bnpo excepted).",
        range=(0, 4096)
    )
    auto_micro_batch: str = _f(
        "lowest_memory", "How micro-batch 0 (auto) picks on a GPU. lowest_memory: training needs no more memory "
        "than sampling; AdamW's moments wait in host memory between updates. fastest: the largest micro-batch that "
        "fits 90% of the GPU's free memory, up to passes that keep the GPU busy (on an H100, 1.5B at 1280 tokens: "
        "4 of 8, a 22% shorter step for 1.4 GiB more; 8 was no faster and took 1.6 GiB more).",
        choices=["lowest_memory", "fastest"]
    )
    num_iterations: int = _f(
        1, "mu: optimizer passes over each batch of rollouts. >1 makes the clipping active.", range=(1, 16)
    )
    epsilon: float = _f(0.2, "Lower clip range of the importance ratio (PPO's epsilon).", range=(0.0, 10.0))
    epsilon_high: float = _f(
        0.28, "Upper clip range. DAPO's clip-higher uses 0.28; set equal to epsilon for symmetric.", range=(0.0, 10.0)
    )
    beta: float = _f(
        0.0,
        "KL coefficient to the reference (the base model with the adapter switched off). 0 = no KL term, "
        "as in DAPO and Dr. GRPO; 0.04 was DeepSeekMath's.",
        range=(0.0, 10.0),
    )
    use_bias_correction_kl: bool = _f(
        True,
        "Multiply the KL term by the importance ratio so its gradient is the unbiased reverse-KL gradient "
        "(DeepSeek-V3.2, arXiv:2512.02556; TRL's default). Only matters when beta > 0.",
    )
    scale_rewards: str = _f(
        "group",
        "Divide advantages by the reward std of the group, of the whole batch, or not at all "
        "(Dr. GRPO recommends none).",
        choices=["group", "batch", "none"],
    )
    mask_truncated_completions: bool = _f(
        False, "Exclude completions cut at max_completion_length from the loss (DAPO)."
    )
    vllm_importance_sampling_correction: bool = _f(
        True, "Weigh each rollout's loss by how likely the trainer finds what vLLM sampled (TRL's default): vLLM's "
        "kernels, and the adapter folded into bf16 weights, give tokens slightly other probabilities than the "
        "trainer's forward. No extra pass: the ratio comes from the training pass. grpo and gspo on vLLM only. "
        "With top_p < 1 vLLM's probabilities are the nucleus's (as TRL's): ratios <= 1, long answers weigh less.")
    vllm_importance_sampling_mode: str = _f(
        "sequence_mask", "How the vLLM correction weighs. token_truncate: each token's ratio clipped to [min, max]; "
        "token_mask: tokens outside it left out; sequence_truncate / sequence_mask (TRL's default): one ratio per "
        "completion (its tokens' product), clipped, or the completion left out of the loss.",
        choices=["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
    vllm_importance_sampling_clip_max: float = _f(
        3.0, "Upper bound of the vLLM correction's ratio (TRL's default 3).", range=(1.0, 1e6))
    vllm_importance_sampling_clip_min: float = _f(
        0.0, "Lower bound of the vLLM correction's ratio; 0 = none (TRL's None).", range=(0.0, 1.0))
    temperature: float = _f(1.0, "Sampling temperature for rollouts.", range=(0.01, 5.0))
    top_p: float = _f(1.0, "Nucleus sampling for rollouts. 1.0 = off.", range=(0.01, 1.0))
    max_prompt_length: int = _f(512, "Prompts longer than this many tokens are cut from the left.", range=(8, 1_000_000))
    max_completion_length: int = _f(256, "Longest completion sampled, in tokens.", range=(1, 1_000_000))
    learning_rate: float = _f(1e-4, "AdamW learning rate for the LoRA weights. 1e-5..3e-4 is typical for LoRA; "
                                    "the SmolLM2 recipes use 1e-4, the CPU quick settings 3e-4 (20 short steps).",
                              range=(0.0, 1.0))
    lr_scheduler: str = _f(
        "constant_with_warmup", "Learning-rate schedule.", choices=["constant", "constant_with_warmup", "linear", "cosine"]
    )
    warmup_steps: int = _f(0, "Linear warm-up steps.", range=(0, 1_000_000))
    weight_decay: float = _f(0.0, "AdamW weight decay.", range=(0.0, 1.0))
    max_steps: int = _f(100, "Optimizer steps to train.", range=(1, 10_000_000))
    gradient_accumulation_steps: int = _f(
        1,
        "Batches of prompts_per_step prompts accumulated into each optimizer step: a step samples and scores "
        "prompts_per_step x this many prompts (G completions each) and sums the gradients of all of them, "
        "micro-batch by micro-batch, before its one AdamW step: the same update as prompts_per_step x this many "
        "with 1 here, and the same memory and time: micro_batch_size, not this, bounds what one backward holds.",
        range=(1, 1024),
    )
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this. 0 = no clipping.", range=(0.0, 1e6))
    seed: int = _f(42, "Seed for sampling, prompt order and initialisation.", range=(0, 2**31 - 1))
    # -- online_dpo ------------------------------------------------------------------
    dpo_beta: float = _f(
        0.1,
        "online_dpo: strength of the pull towards the reference in DPO's loss "
        "-log sigmoid(beta x (chosen log-ratio - rejected log-ratio)). 0.1 is DPO's usual value "
        "(Rafailov et al. 2023); lower lets the adapter move further.",
        range=(1e-4, 100.0),
    )
    dpo_pair_rule: str = _f(
        "best_vs_worst",
        "online_dpo: which two of the G completions of a prompt form the pair. best_vs_worst: the highest "
        "against the lowest ranked. random_pair: two at random, ordered by their rank (as TRL's Online DPO).",
        choices=["best_vs_worst", "random_pair"],
    )
    judge: str = _f(
        "",
        "online_dpo: who ranks the completions. Empty = the reward functions. 'self' = the run's base model "
        "(adapter off) asked 'Which answer is better, A or B?'. An http(s) URL = an OpenAI-compatible "
        "chat endpoint (e.g. http://localhost:8000/v1), asked the same; the key in OPENAI_API_KEY is sent only "
        "to OpenAI's API or an address the operator listed in AHA_JUDGE_KEY_URLS.",
    )
    judge_model: str = _f("", "online_dpo: model name sent to the judge endpoint (when judge is a URL).")
    # -- ppo ---------------------------------------------------------------------------
    gae_lambda: float = _f(
        0.95, "ppo: GAE's lambda. 1 = Monte-Carlo returns (no bias, most variance); lower trusts the value head "
        "more (Schulman et al. 2016, arXiv:1506.02438).", range=(0.0, 1.0))
    gamma: float = _f(1.0, "ppo: discount per token. 1.0 is the norm for LLMs (the reward comes at the end).",
                      range=(0.0, 1.0))
    vf_coef: float = _f(0.1, "ppo: weight of the value-head loss beside the policy loss (TRL's PPO default).",
                        range=(0.0, 100.0))
    cliprange_value: float = _f(
        0.2, "ppo: the value head's new predictions stay within this of the old ones in the clipped value loss.",
        range=(0.0, 100.0))


@dataclass
class RunConfig:
    output_dir: str = _f("runs", "Folder that holds one sub-folder per run.")
    run_name: str = _f("", "Name of this run's folder. Empty = a timestamp and the task name.")
    save_steps: int = _f(25, "Write a checkpoint (adapter, optimizer, RNG) every N steps.", range=(1, 1_000_000))
    keep_checkpoints: int = _f(3, "Keep only the newest N checkpoints (0 = keep all).", range=(0, 1_000_000))
    log_samples: int = _f(4, "Sample completions kept per step for the samples table.", range=(0, 10_000))
    engine: str = _f(
        "auto", "Rollout engine. auto = vLLM on a GPU when installed, else Hugging Face generate.",
        choices=["auto", "hf", "vllm"],
    )
    merged_rollouts: bool = _f(
        True, "Sample each step's rollouts from the base weights with the adapter folded in (W + scale x B x A, "
        "undone bit for bit after sampling), so the engine decodes without LoRA kernels: faster rollouts, the same "
        "model up to bf16 rounding. With a 16/32-bit base, on a GPU or a CPU; a 4-bit base samples through the "
        "adapter. Chat and evaluation always use the adapter. Off = rollouts through the adapter too.")
    # vLLM engine settings: 0 / "auto" = chosen from the GPU and the run (core/memory/planner.run_engine_sizes, core/engines/registry.vllm_settings_for)
    vllm_gpu_memory_utilization: float = _f(
        0.0, "vLLM's share of the GPU memory (weights + KV cache). 0 = sized from free memory and this run's plan.",
        range=(0.0, 0.95))
    vllm_max_num_seqs: int = _f(
        0, "Most sequences vLLM decodes at once. 0 = one step's rollouts (prompts x G), at least 16.",
        range=(0, 4096))
    vllm_max_num_batched_tokens: int = _f(
        0, "Token budget of one vLLM scheduler step (prefill chunks). 0 = max(8192, prompt + completion length).",
        range=(0, 1_000_000))
    vllm_enable_prefix_caching: bool = _f(
        True, "Reuse the KV cache of shared prompt prefixes (the G samples of one prompt share it).")
    vllm_enforce_eager: bool = _f(
        False, "Skip CUDA-graph capture: starts 1-3 min faster, decodes ~2x slower. For short runs and small models.")
    vllm_cuda_graphs: str = _f(
        "all", "CUDA graphs vLLM captures. all = its default (decode and prefill, batches up to twice the sequences "
        "decoded at once). decode = decode steps only, batches up to that number: fewer graphs to capture and hold; "
        "prefills run without graphs. A run on the app's shared engine uses that engine's.", choices=["all", "decode"])
    vllm_free_kv_between_steps: bool = _f(
        True, "Free vLLM's KV cache while the trainer runs forward/backward and take it back before the next "
        "rollouts. Off saves a little time per step when memory is plentiful (small models).")
    vllm_kv_cache_dtype: str = _f(
        "auto", "KV-cache precision. fp8 halves its memory: longer rollouts or more at once, small accuracy cost.",
        choices=["auto", "fp8"])
    vllm_weights_dtype: str = _f(
        "auto", "Precision of the weights vLLM samples from (rollouts, chat, evaluation). auto = the model's own, "
        "shared with the trainer: one copy. fp8 = vLLM's own fp8 copy (weight-only, Marlin kernels; CUDA GPU, 16-bit "
        "base): half the bytes a decoded token reads, for ~half the base's size more memory; each step sends it the "
        "tuned weights. Its probabilities differ from the trainer's: keep the vLLM correction on, token_truncate.",
        choices=["auto", "fp8"])


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # -- YAML ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def from_dict(cls, d: dict | None) -> "Config":
        d = {} if d is None else d
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a mapping of sections (model, data, rewards, algorithm, run), "
                              f"not {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}; expected model, data, rewards, algorithm, run")
        parts = {}
        for f in dataclasses.fields(cls):
            sub = d.get(f.name) or {}
            sub_cls = f.default_factory
            if not isinstance(sub, dict):
                raise ConfigError(f"{f.name}: expected a mapping, got {type(sub).__name__}")
            fields = {sf.name: sf for sf in dataclasses.fields(sub_cls)}
            bad = set(sub) - set(fields)
            if bad:
                raise ConfigError(f"{f.name}: unknown field(s) {sorted(bad)}")
            parts[f.name] = sub_cls(**{k: coerce_number(_default(fields[k]), v) for k, v in sub.items()})
        cfg = cls(**parts)
        validate(cfg)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        try:
            text = Path(path).read_text()
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a text file ({e.reason})") from None
        d = read_yaml(text, str(path))
        if d is None:
            raise ConfigError(f"{path} is empty: a config names at least the sections it changes "
                              "(see configs/quickstart.yaml)")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def copy(self) -> "Config":
        return Config.from_dict(self.to_dict())


def _default(f: dataclasses.Field) -> Any:
    """A field's default value (None where it has a factory: lists are never numbers)."""
    return f.default if f.default is not dataclasses.MISSING else None


# ---------------------------------------------------------------------------
def _check(section: str, f: dataclasses.Field, value: Any) -> None:
    name = f"{section}.{f.name}"
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    # Types: ints stay ints, floats accept ints, bools stay bools.
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} = {value!r}: must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} = {value!r}: must be a whole number")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} = {value!r}: must be a finite number")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r}: must be text")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{name} = {value!r}: must be a list")
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{name} = {value!r}: must be one of {', '.join(map(str, meta['choices']))}")
    if "range" in meta:
        lo, hi = meta["range"]
        if not (lo <= value <= hi):
            raise ConfigError(f"{name} = {value!r}: must be between {lo} and {hi}")


def validate(cfg: Config) -> Config:
    """Check every field's type and range; raise ConfigError naming the first bad field."""
    for section_f in dataclasses.fields(cfg):
        section = getattr(cfg, section_f.name)
        for f in dataclasses.fields(section):
            _check(section_f.name, f, getattr(section, f.name))
    # Cross-field rules.
    r = cfg.rewards
    if r.weights and len(r.weights) != len(r.names):
        raise ConfigError(
            f"rewards.weights has {len(r.weights)} values but rewards.names has {len(r.names)}: give one weight per reward"
        )
    for name, w in zip(r.names, r.weights):  # past ±1000 one reward swamps the rest (-1e30: every total -1e30)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or abs(w) > 1000:
            raise ConfigError(f"the weight of {name} = {w!r} (`rewards.weights`): must be between -1000 and 1000")
    if not r.names and not r.custom_code.strip():
        raise ConfigError("no reward to train with: tick a Reward preset on the Rewards tab or write a Custom reward "
                          "(Python) there (in a config file: `rewards.names`, `rewards.custom_code`)")
    a = cfg.algorithm  # each checked where its algorithm reads it (core.rl.algorithms.READ_BY): the page hides the rest
    if a.algorithm != "online_dpo" and a.epsilon_high < a.epsilon:
        raise ConfigError(f"algorithm.epsilon_high = {a.epsilon_high}: must be at least epsilon ({a.epsilon})")
    if a.algorithm == "online_dpo" and a.judge and a.judge != "self" and not a.judge.startswith(("http://", "https://")):
        raise ConfigError(f"algorithm.judge = {a.judge!r}: must be empty (the rewards), 'self' or an http(s) URL")
    return cfg


# settings a 2-core CPU finishes in minutes on the bundled 135M model (the app starts from them
# when there is no GPU; configs/quickstart.yaml is the same run headless)
CPU_QUICK = {"algorithm.num_generations": 4, "algorithm.prompts_per_step": 2, "algorithm.micro_batch_size": 0,
             "algorithm.max_completion_length": 64, "algorithm.max_steps": 20, "algorithm.learning_rate": 3e-4,
             "run.save_steps": 10}


def cpu_defaults() -> Config:
    """The defaults with CPU_QUICK applied: what Start runs on a machine without a GPU.

    >>> cpu_defaults().algorithm.num_generations, Config().algorithm.num_generations
    (4, 8)
    """
    cfg = Config()
    for key, value in CPU_QUICK.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def field_help(section: str, name: str) -> str:
    """Help text of `section.name`, for UI tooltips."""
    return field_spec(section, name).get("help", "")


def field_spec(section: str, name: str) -> dict:
    """Help, choices and range of a field, for building UI widgets."""
    cls = {f.name: f.default_factory for f in dataclasses.fields(Config)}[section]
    for f in dataclasses.fields(cls):
        if f.name == name:
            return dict(f.metadata)
    raise KeyError(f"{section}.{name}")
