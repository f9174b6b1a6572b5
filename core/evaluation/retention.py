"""Retention: has the adapter kept what the base model could do off the task it was trained on?

Owns: the fixed set of general prompts (`GENERAL_PROMPTS`, 60 everyday requests), the check for
degenerate answers (`degenerate_reasons`: repeated n-grams, a short unit repeated in a row,
runaway tags), the teacher-forced divergence of the tuned model from the base on the base's own
greedy answers (`answer_kl`: per-token log-probs with the adapter on and off, from hidden states
through the trainer's `completion_logprobs`, so the [B, T, V] logits never exist), and
`measure_retention`, which puts them together with the held-out accuracy on the built-in tasks
the run did not train on. The CLI-free callers are the Compare tab (through the manager) and
`bench/proof_of_learning.py`, so both report the same figures.

Refuses to know: training, the UI, how the engine samples. The engine writes the answers; the
peft model (adapter on = tuned, `disable_adapter()` = base) scores them.

    >>> degenerate_reasons("12 + 7 = 19. The answer is 19.")
    []
    >>> degenerate_reasons("<think>12 + 7 = 9 <<<<<<<<<<<<<</</</</</</</</")
    ['repeated characters']
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

# ---------------------------------------------------------------------------
# the general prompts: what a person might ask any chat model, none of it a built-in task

GENERAL_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "What is photosynthesis?",
    "Give me a synonym for happy.",
    "Translate 'good morning' into Spanish.",
    "What is 12 + 7?",
    "Explain what a computer virus is in one sentence.",
    "List four animals that live in the ocean.",
    "What should I pack for a weekend camping trip?",
    "Who wrote Romeo and Juliet?",
    "Why is the sky blue?",
    "Suggest a name for a pet cat.",
    "What is the difference between weather and climate?",
    "How many days are in a leap year?",
    "Write a one-sentence birthday message for a friend.",
    "What does a thermometer measure?",
    "Give me a tip for studying for an exam.",
    "What is the largest planet in our solar system?",
    "Describe a rainbow to a child.",
    "What is the boiling point of water in Celsius?",
    "How do bees make honey?",
    "Write a haiku about autumn.",
    "What are the three states of matter?",
    "Recommend a healthy breakfast.",
    "What is the opposite of cold?",
    "Explain what gravity is.",
    "How can I save water at home?",
    "What language is spoken in Brazil?",
    "Tell me a fun fact about elephants.",
    "What is a noun? Give an example.",
    "How do you say thank you in French?",
    "Summarise the story of Cinderella in two sentences.",
    "What is the freezing point of water in Fahrenheit?",
    "Give me three ideas for a rainy day.",
    "What does the heart do?",
    "Write a polite email asking for a meeting next week.",
    "What is the main ingredient in guacamole?",
    "How many continents are there?",
    "Explain the water cycle briefly.",
    "What is a prime number?",
    "Suggest a title for a story about a lost dog.",
    "Why do we need sleep?",
    "What is the chemical symbol for gold?",
    "How do I make a cup of tea?",
    "Name a famous painting by Leonardo da Vinci.",
    "What is 5 times 6?",
    "What are the colours of the traffic light?",
    "Give me a word that rhymes with cat.",
    "What is the tallest mountain in the world?",
    "How does a bicycle work?",
    "Write a short thank-you note to a teacher.",
    "What is the square root of 81?",
    "What is recycling and why does it matter?",
    "Describe your favourite season in two sentences.",
    "What do plants need to grow?",
    "Explain what a verb is.",
    "What is the speed of light, roughly?",
    "Tell me a short joke.",
)

# built-in tasks measured for retention when the run did not train on them (Countdown is left
# out: the bundled model scores 0 on it with or without an adapter, so it shows nothing)
RETENTION_TASKS = ("addition", "multiplication", "largest", "decimal_compare", "arithmetic", "chain_arithmetic")
# a built-in task whose questions are another's, more of them: training on it is training on that one
SAME_TASK = {"long_chain_arithmetic": ("chain_arithmetic",)}


# ---------------------------------------------------------------------------
# degenerate answers

# a unit of 1-8 characters starting with a non-space, followed by itself 5 or more times in a
# row ("<<<<<<", "</</</</</</", "ha ha ha ha ha ha ")
_REPEATED_UNIT_RE = re.compile(r"(\S.{0,7}?)\1{5,}", re.DOTALL)
# an opening or closing think / reasoning / answer tag
_TAG_RE = re.compile(r"</?(?:think|reasoning|answer)>")


def degenerate_reasons(text: str, *, n: int = 4, max_repeat_share: float = 0.5, max_tags: int = 4) -> list[str]:
    """Why `text` reads as a broken answer; [] when it does not.

    - "repeated n-grams": over half of its word `n`-grams (at least 8 of them) are repeats;
    - "repeated characters": a short unit repeated six or more times in a row, 12+ characters;
    - "runaway tags": more than `max_tags` think / answer tags (a well-formed answer has 4).

    >>> degenerate_reasons("the cat sat on the mat the cat sat on the mat the cat sat on the mat again")
    ['repeated n-grams']
    >>> degenerate_reasons("<think>a</think><answer>1</answer><answer>2</answer><answer>3</answer>")
    ['runaway tags']
    """
    reasons = []
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) >= 8 and 1 - len(set(grams)) / len(grams) > max_repeat_share:
        reasons.append("repeated n-grams")
    if any(len(m.group(0)) >= 12 for m in _REPEATED_UNIT_RE.finditer(text)):
        reasons.append("repeated characters")
    if len(_TAG_RE.findall(text)) > max_tags:
        reasons.append("runaway tags")
    return reasons


def has_tags(text: str) -> bool:
    """The answer uses the training format's tags (a general answer with none is the base's habit).

    >>> has_tags("Paris."), has_tags("<think>France</think> Paris")
    (False, True)
    """
    return bool(_TAG_RE.search(text))


def answer_stats(texts: list[str], truncated: list[bool], lengths: list[int]) -> dict:
    """Rates over a set of answers: degenerate, with tags, cut at the token limit; mean tokens."""
    n = max(len(texts), 1)
    return {
        "degenerate_rate": sum(bool(degenerate_reasons(t)) for t in texts) / n,
        "tag_rate": sum(has_tags(t) for t in texts) / n,
        "truncated_rate": sum(truncated) / n,
        "mean_tokens": sum(lengths) / n,
    }


# ---------------------------------------------------------------------------
# the divergence of the tuned model from the base, on the base's own answers


@torch.no_grad()
def answer_kl(model, prompt_ids: list[list[int]], answer_ids: list[list[int]], *, pad_id: int,
              micro_batch: int = 16) -> dict:
    """Teacher-forced divergence of the adapter-on model from the adapter-off model on `answer_ids`.

    For each answer token, d = log p_tuned - log p_base (both from hidden states, temperature 1).
    `kl` is the mean over tokens of exp(d) - d - 1 (the k3 estimator of KL(base || tuned); exact in
    expectation when the answers are samples of the base, here its greedy answers), `logprob_drop`
    the mean of -d (how much less likely the tuned model finds the base's words), `per_answer` the
    k3 mean of each answer (None for an empty one). The adapter must be the tuned weights.
    """
    from core.rl.logprobs import completion_logprobs, pad_rollouts

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no LoRA dropout while scoring
    k3_sum = drop_sum = tokens = 0.0
    per_answer: list[float | None] = []
    try:
        for i in range(0, len(prompt_ids), micro_batch):
            prompts, answers = prompt_ids[i:i + micro_batch], answer_ids[i:i + micro_batch]
            ids, attn, comp, cmask = pad_rollouts(prompts, answers, pad_id, device)
            with torch.compiler.set_stance("force_eager"):  # model.compile_layers is for training's passes
                tuned = completion_logprobs(model, ids, attn, comp, cmask, 1.0)  # (b, T)
                with model.disable_adapter():
                    base = completion_logprobs(model, ids, attn, comp, cmask, 1.0)  # (b, T)
            mask = cmask.float()
            d = (tuned - base) * mask  # log(p_tuned / p_base), 0 on padding
            k3 = (torch.exp(d) - d - 1) * mask
            counts = mask.sum(1)
            k3_sum += float(k3.sum())
            drop_sum += float(-d.sum())
            tokens += float(counts.sum())
            per_answer += [float(k / c) if c > 0 else None for k, c in zip(k3.sum(1), counts)]
    finally:
        model.train(was_training)
    return {"kl": k3_sum / tokens if tokens else 0.0, "logprob_drop": drop_sum / tokens if tokens else 0.0,
            "tokens": int(tokens), "per_answer": per_answer}


@contextlib.contextmanager
def adapter_weights(model, checkpoint: str | Path | None):
    """Inside the block the model's active adapter holds `checkpoint`'s weights (None: no change).

    A checkpoint of the same LoRA shapes is copied into the trained adapter ("default") and its
    own weights copied back after; any other (another rank, other target modules) is loaded beside
    it as a named adapter, made active, then switched back and deleted. Either way the model leaves
    the block as it came in.
    """
    if checkpoint is None:
        yield
        return
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    loaded = load_file(str(Path(checkpoint) / "adapter_model.safetensors"))
    if set(loaded) == set(saved) and all(saved[k].shape == v.shape for k, v in loaded.items()):
        set_peft_model_state_dict(model, loaded)
        try:
            yield
        finally:
            set_peft_model_state_dict(model, saved)
        return
    name, active = "retention-scoring", model.active_adapter
    model.load_adapter(str(checkpoint), adapter_name=name, is_trainable=False)
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(active)  # also gives the trained adapter back its requires_grad
        model.delete_adapter(name)


# ---------------------------------------------------------------------------
# all of it


def tasks_not_trained(source: str) -> list[str]:
    """The retention tasks minus the built-in task `source` trains on.

    >>> tasks_not_trained("builtin:largest")
    ['addition', 'multiplication', 'decimal_compare', 'arithmetic', 'chain_arithmetic']
    >>> tasks_not_trained("builtin:long_chain_arithmetic")
    ['addition', 'multiplication', 'largest', 'decimal_compare', 'arithmetic']
    """
    trained = source.split(":", 1)[1].strip() if source.startswith("builtin:") else None
    same = {trained, *SAME_TASK.get(trained, ())}
    return [t for t in RETENTION_TASKS if t not in same]


def measure_retention(engine, tokenizer, model, adapter, *, source: str = "", prompts=GENERAL_PROMPTS,
                      n_task: int = 50, max_tokens: int = 128, chat_template: str = "", checkpoint=None,
                      micro_batch: int = 16, stop_at: str = "") -> dict:
    """Base vs tuned off the trained task: general prompts and the built-in tasks not trained on.

    1) greedy answers of the base (adapter off) and the tuned model to `prompts`, asked as a
       person would chat (no system prompt, no prefilled answer): degenerate, tag and truncation
       rates for each;
    2) the divergence of the tuned model from the base on the base's answers (`answer_kl`; with
       `checkpoint`, its weights are put in the model's adapter for the scoring);
    3) held-out accuracy on `n_task` questions of each built-in task not trained on, with the
       app's default system prompt (the same for both models). Where the run's answers end at a stop text
       (`stop_at`, its `data.stop_at`), these end at the one that prompt asks for, `</answer>` (a run's own
       text, "####" say, would cut them before their answer tags); without one, at max_tokens as the run's.
    Returns {'general': {n, kl, logprob_drop, tokens, base: {...rates}, tuned: {...}, items},
    'tasks': {name: {'base': {accuracy, accuracy_flexible, format_rate, n}, 'tuned': {...}}}}.
    """
    from core.config import FORMAT_INSTRUCTION
    from core.data import build_messages, load_builtin, prompt_ids
    from core.engines.base import SamplingSettings
    from core.evaluation.evaluate import evaluate

    # 1) the general prompts, answered by both
    prompts = list(prompts)
    # general prompts, short and not the task's: asked whole
    ids = [prompt_ids(tokenizer, build_messages(p, ""), chat_template, max_length=None) for p in prompts]
    greedy = SamplingSettings(n=1, temperature=0.0, max_tokens=max_tokens)
    base = [g[0] for g in engine.generate(ids, greedy, adapter=None)]
    tuned = [g[0] for g in engine.generate(ids, greedy, adapter=adapter)]

    # 2) the tuned model's divergence on the base's words
    with adapter_weights(model, checkpoint):
        kl = answer_kl(model, ids, [c.token_ids for c in base], pad_id=tokenizer.pad_token_id,
                       micro_batch=micro_batch)
    items = [{"prompt": p, "base": b.text, "tuned": t.text, "kl": k,
              "base_flags": degenerate_reasons(b.text), "tuned_flags": degenerate_reasons(t.text)}
             for p, b, t, k in zip(prompts, base, tuned, kl["per_answer"])]
    general = {
        "n": len(prompts), "kl": kl["kl"], "logprob_drop": kl["logprob_drop"], "tokens": kl["tokens"],
        "base": answer_stats([c.text for c in base], [c.truncated for c in base], [len(c.token_ids) for c in base]),
        "tuned": answer_stats([c.text for c in tuned], [c.truncated for c in tuned],
                              [len(c.token_ids) for c in tuned]),
        "items": items,
    }

    # 3) the built-in tasks the run did not train on
    tasks = {}
    pick = ("accuracy", "accuracy_flexible", "format_rate", "n")
    kw = dict(system_prompt=FORMAT_INSTRUCTION, chat_template=chat_template, max_items=n_task,
              max_tokens=max_tokens, stop_at="</answer>" if stop_at else "")  # FORMAT_INSTRUCTION's closing tag
    for name in tasks_not_trained(source) if n_task > 0 else []:
        rows = load_builtin(name, train_size=0, eval_size=n_task, seed=0).eval
        b = evaluate(engine, tokenizer, rows, adapter=None, **kw)
        t = evaluate(engine, tokenizer, rows, adapter=adapter, **kw)
        tasks[name] = {"base": {k: b[k] for k in pick}, "tuned": {k: t[k] for k in pick}}
    return {"general": general, "tasks": tasks}
