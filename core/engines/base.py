"""The engine protocol: the few verbs the trainer and the UI use to get text out of a model.

Owns: the contract. An engine generates `n` completions per prompt (token ids in, token ids and
text out), with an optional adapter (None = the base model, adapter switched off), takes new
adapter weights from the trainer, and can release / restore its memory around the trainer's
forward/backward. A training step's rollouts (`rollout`) may fold the adapter into the base
weights for the duration, exactly undone after. Backends live in their own modules (`hf.py`,
and `vllm` on a GPU) and are chosen by `core.engines.registry.make_engine`.

Refuses to know: rewards, losses, optimizers, chat templates. The trainer tokenizes; the engine
only sees token ids (like nanochat's engine) and hands back decoded text for convenience.

Modelled on verl's rollout base (generate / update weights / release / resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from core.errors import AhaError


class EngineError(AhaError, RuntimeError):
    """A request the engine could not serve; it is left ready for the next one."""


class RolloutStopped(Exception):
    """A rollout gave up between two generation batches because its `should_stop()` said so (Stop
    pressed, SIGTERM): a large step ends in one batch's time, not the whole step's (issue 29)."""


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample. `temperature == 0` means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: every completion runs to max_tokens
    stop: tuple[str, ...] = ()  # texts that end a completion, kept in it (`completion_of`); off with ignore_eos
    logprobs: bool = False  # each sampled token's log-probability as sampled (temperature applied), for the trainer


def stop_texts(stop_at: str | None) -> tuple[str, ...]:
    """A config's `data.stop_at` as `SamplingSettings.stop`: () when it is empty."""
    return (stop_at,) if stop_at else ()


def completion_of(token_ids: list[int], finish_reason: str, tokenizer, sampling: SamplingSettings,
                  logprobs: list[float] | None = None) -> "Completion":
    """Every backend's sampled ids as a Completion, its text decoded here, once (the same text from
    every backend, vLLM's incremental detokenizer dropping a trailing partial UTF-8 character), with
    the sampler's `logprobs` of those ids where it gave them (`sampling.logprobs`). A
    completion whose text holds one of `sampling.stop` ends at the shortest prefix whose decoded text
    does (the token that completes the stop text is kept, as EOS is), finish reason "stop": so its
    ids and text end at the same token whatever sampled it, and sampling past the stop and cutting
    gives the same distribution as stopping there.

    >>> class Chars:  # a tokenizer whose tokens are characters
    ...     def decode(self, ids, skip_special_tokens=True): return "".join(map(chr, ids))
    >>> s = SamplingSettings(stop=("</a>",))
    >>> c = completion_of([ord(ch) for ch in "<a>9</a><a>9</a>"], "length", Chars(), s)
    >>> c.text, len(c.token_ids), c.finish_reason
    ('<a>9</a>', 8, 'stop')
    >>> completion_of([ord(ch) for ch in "<a>9"], "length", Chars(), s).finish_reason
    'length'
    """
    def text_of(k: int) -> str:
        return tokenizer.decode(token_ids[:k], skip_special_tokens=True)

    def holds(text: str) -> bool:
        return any(t and t in text for t in sampling.stop)

    text = text_of(len(token_ids))
    if not sampling.stop or sampling.ignore_eos or not holds(text):
        return Completion(token_ids=token_ids, text=text, finish_reason=finish_reason, logprobs=logprobs)
    lo, hi = 1, len(token_ids)  # holds at hi; find the smallest such k (a prefix's text only grows)
    while lo < hi:
        mid = (lo + hi) // 2
        mid_text = text_of(mid)
        if holds(mid_text):
            hi, text = mid, mid_text
        else:
            lo = mid + 1
    return Completion(token_ids=token_ids[:hi], text=text, finish_reason="stop",
                      logprobs=None if logprobs is None else logprobs[:hi])


@dataclass(frozen=True)
class AdapterRef:
    """A versioned handle to adapter weights loaded in an engine. Names are never reused."""

    name: str
    version: int


@dataclass
class Completion:
    """One sampled completion."""

    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (EOS) or "length" (cut at max_tokens)
    logprobs: list[float] | None = None  # (len(token_ids),) as sampled, when SamplingSettings.logprobs asked

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class EngineInfo:
    backend: str
    device: str
    details: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """What every backend provides. All methods are called from one worker thread."""

    info: EngineInfo
    # whether `SamplingSettings.logprobs` is honoured (vLLM: its kernels' probabilities, which the trainer's
    # importance-sampling correction weighs against its own); HF samples with the trainer's own forward: no
    gives_logprobs: bool

    def generate(
        self,
        prompts: list[list[int]],  # (B, prompt_len_i) token ids, no padding
        sampling: SamplingSettings,
        adapter: AdapterRef | None = None,
    ) -> list[list[Completion]]:  # (B, n)
        """Sample `sampling.n` completions for each prompt, with the adapter (or the base model)."""
        ...

    def rollout(
        self,
        prompts: list[list[int]],
        sampling: SamplingSettings,
        adapter: AdapterRef | None,
        *,
        model=None,  # the trainer's peft model, whose current adapter `adapter` is
        merged: bool | None = None,  # None: the engine's own setting
        should_stop: Callable[[], bool] | None = None,  # checked between generation batches (HF)
    ) -> list[list[Completion]]:  # (B, n)
        """A training step's rollouts: take the memory back, sample as `generate` does, free it again.

        With merged rollouts the adapter is folded into the (shared) base weights for the sampling
        and unfolded bit for bit after (`core/engines/merged_lora.py`), so no LoRA kernel runs;
        where it cannot be folded (a 4-bit base, weights not shared) it samples through the
        adapter. An engine with weights of its own (vLLM in fp8) is sent the tuned weights instead,
        which stay until the next `generate` asks for the base. What it did and what each part took:
        `rollout_stats` (a dict).
        """
        ...

    def update_adapter(self, model) -> AdapterRef:
        """Take the trainer's current adapter weights (a peft model) and make them servable.

        Returns a new, never-reused AdapterRef; the previous training adapter is dropped.
        """
        ...

    def load_adapter(self, path: str) -> AdapterRef:
        """Load a saved adapter folder (a checkpoint) for serving, e.g. in the Compare tab."""
        ...

    def unload_adapter(self, ref: AdapterRef) -> None:
        """Forget a loaded adapter (a checkpoint no longer shown, or one that failed to load)."""
        ...

    def release_memory(self) -> None:
        """Free what generation holds (KV cache) while the trainer runs forward/backward."""
        ...

    def restore_memory(self) -> None:
        """Take back what `release_memory` freed, before the next generation."""
        ...

    def reset(self) -> None:
        """Ready for the next caller whatever the last one left (after a failed step or run):
        nothing still queued, the memory taken back."""
        ...

    def limits(self) -> dict:
        """What this engine was built to serve, for the callers that must not ask more of it:
        {"max_model_len": tokens or None, "max_lora_rank": rank or None} (None: no limit)."""
        ...

    def configure(self, *, release_kv: bool) -> None:
        """The run's settings a built engine takes as they are (no rebuild): whether it frees its
        KV cache while the trainer runs."""
        ...

    def bind(self, model) -> None:
        """The trainer's peft model changed (a fresh adapter on the same base): serve from it (an
        engine with weights of its own takes its base back from this model's)."""
        ...

    def close(self) -> None:
        """Shut down, so that another engine can be built in this process (vLLM)."""
        ...
