"""The memory plan in words: each sentence a list of keyed fragments, rendered by `say`.

Owns: `WORDS` (the English of every fragment), `say`, `gb`. The keys are what the UI translates
(ui/zh.py PLAN_ZH holds the same keys with the same {placeholders}), so the words are written once
here and the numbers never twice. Refuses to know: the arithmetic (`sizes.py`, `planner.py`).
"""

from __future__ import annotations

from core.memory.sizes import GIB

WORDS = {
    # a GPU plan's first sentence, fragment by fragment
    "peak": "Predicted peak {peak}",
    "phase.sampling": " (sampling)",
    "phase.training": " (training)",
    "of_free": " of {free} free",
    "parts": ": weights {weights}, adapter + optimizer {adapter}, rollout KV cache {kv}",
    "kv_freed": " (freed while training)",
    "moments_host": ", AdamW's moments {moments} in host memory between updates",
    "activations": ", activations {activations} (micro-batch {mbs})",
    "loss_buffers": ", loss buffers {loss}",
    "engine_extras": ", engine extras {extra}",
    "cuda": ", CUDA context {outside}.",
    "cuda_vllm": ", CUDA context and vLLM kernels {outside}.",
    # notes on the micro-batch
    "note.fastest": "Micro-batch {mbs} (auto, fastest: the largest whose step fits {share} of the free {free}).",
    "note.fastest_saturated": "Micro-batch {mbs} (auto, fastest: {tokens} tokens a pass should keep the GPU busy, "
                              "as measured on an H100 at 1.5B; a larger one would cost memory, not time; steps of "
                              "shorter answers run several micro-batches as one pass).",
    "note.lowest": "Micro-batch {mbs} (auto: training needs no more than the rollouts' {budget} KV cache, "
                   "which is freed while it runs).",
    "note.one_too_big": "Micro-batch 1 (auto); even one sequence's forward/backward ({one}) needs more than the "
                        "rollouts' {budget} KV cache: activation offload would lower it.",
    "note.one_too_big_offload": "Micro-batch 1 (auto); even one sequence's forward/backward ({one}) needs more "
                                "than the rollouts' {budget} KV cache.",
    "note.lowered": "Micro-batch lowered from {before} to {mbs} to fit.",
    # a note on the adapter
    "note.rank_above_width": "LoRA rank {rank} is above the model's width ({width}): no layer can use more "
                             "than {width}, so the rest costs memory and adds nothing.",
    "does_not_fit": "It does not fit: lower the completion length or G, turn on activation offload, "
                    "or load the base in 4-bit.",
    # a CPU plan (RAM)
    "cpu.peak": "CPU run: about {peak} of RAM at the step's peak",
    "cpu.of_available": " ({available} available)",
    "cpu.parts": ": weights {weights} ({dtype}), adapter + optimizer {adapter}, the larger of sampling's KV cache "
                 "{kv} and training's activations {activations} (micro-batch {mbs}, every sequence at its limit of "
                 "{tokens} tokens: shorter answers take less), and {besides} that training holds besides.",
    "cpu.does_not_fit": "It may not fit: lower the completion length, G or the micro-batch.",
    "cpu.try_checkpointing": " Or turn on Gradient checkpointing (Model tab): training then keeps one layer's "
                             "activations at a time, not every layer's.",
    "cpu.will_not_fit": "It will not fit: {times} times the RAM available. Lower the completion length, G or the "
                        "micro-batch.",
    # the run's engine (core/app/manager.py), and what the planner cannot know
    "engine.loaded": "It runs on the loaded vLLM engine (LoRA rank up to {rank}, a context of {context} tokens, "
                     "KV cache {kv}).",
    "engine.loaded_waves": "It runs on the loaded vLLM engine (LoRA rank up to {rank}, a context of {context} "
                           "tokens, KV cache {kv}) - its rollouts are sampled in waves.",
    "engine.built": "Its vLLM engine is built for it: LoRA rank up to {rank}, a context of {context} tokens, "
                    "KV cache {kv}.",
    "engine.rebuilt": "Its vLLM engine is rebuilt for it ({reasons}): LoRA rank up to {rank}, a context of "
                      "{context} tokens, KV cache {kv}.",
    "unknown": "Memory plan: unknown for this model.",
    "unknown_note": "Memory plan: unknown for this model. {note}",
}

Sentence = list  # [(key, values), ...]: fragments read in order


def say(sentences: list[Sentence], words: dict[str, str] | None = None, sep: str = " ") -> str:
    """The sentences in words (English unless another table with the same keys is given).

    >>> say([[("peak", {"peak": "1.00 GB"}), ("phase.training", {})], [("note.lowered", {"before": 8, "mbs": 4})]])
    'Predicted peak 1.00 GB (training) Micro-batch lowered from 8 to 4 to fit.'
    """
    words = words or WORDS
    return sep.join("".join(words[key].format(**values) for key, values in sentence) for sentence in sentences)


def gb(b: float) -> str:
    """Bytes in GB the way the plan writes them: one decimal from 10 GB up, two below; from 1,024 GB up
    in TB, then PB, then EB, the same way (a million completion tokens on a CPU read "about 4491118.5 GB").

    >>> gb(3.5 * GIB), gb(46120.8 * GIB), gb(4491118.5 * GIB), gb(2.0 ** 70)
    ('3.50 GB', '45.0 TB', '4.28 PB', '1024.0 EB')
    """
    size, units = b / GIB, ("GB", "TB", "PB", "EB")
    for unit in units[:-1]:
        if size < 1024:
            break
        size /= 1024
    else:
        unit = units[-1]
    return f"{size:.1f} {unit}" if size >= 10 else f"{size:.2f} {unit}"


# a CPU plan needing more than this many times the RAM available "will not fit", not "may not fit"
FAR_BEYOND = 4.0
