"""Hugging Face `generate` backend of the engine protocol: works anywhere, CPU included.

Owns: sampling from the trainer's own peft model. Because it *is* the trained model, pushing an
adapter costs nothing (`update_adapter` only bumps the version), the base model is the same
weights with the adapter switched off (`disable_adapter()`), and checkpoints for the Compare
tab load as extra named adapters beside the training one.

Refuses to know: rewards, losses, chat templates (token ids in, token ids and text out).

It is the slow path: fine for CPUs and small runs; on a GPU the vLLM backend is the fast one.
On a GPU it sizes each `generate` batch from the free memory (KV cache + logits per sequence), so
long rollouts run in more, smaller batches instead of spiking past what is free.
"""

from __future__ import annotations

import contextlib
import itertools

import torch

from core.engines.base import AdapterRef, Completion, EngineInfo, RolloutStopped, SamplingSettings, completion_of
from core.memory.sizes import sequences_that_fit


class _StopText:
    """generate's stopping criterion for `SamplingSettings.stop`: a row is done once the text of its
    last few new tokens holds a stop text (`completion_of` then cuts it exactly). It decodes a short tail
    a step; transformers' `stop_strings` added ~0.9 s to a 6.5 s CPU rollout of the 135M model (8 x 64
    tokens, one measurement on 2026-12-06)."""

    def __init__(self, tokenizer, stop: tuple[str, ...], prompt_len: int):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, stop, prompt_len
        self.tail = max(len(t.encode()) for t in stop) + 8  # tokens: a text of n UTF-8 bytes spans at most n

    def __call__(self, input_ids, scores, **kwargs):
        tails = input_ids[:, self.prompt_len:][:, -self.tail:].tolist()
        done = [any(t and t in self.tokenizer.decode(row, skip_special_tokens=True) for t in self.stop) for row in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StopWhen:
    """generate's stopping criterion for a Stop pressed mid-rollout: every row done at the next token once
    `should_stop()` is true (a CPU rollout of 8 x 7,000 tokens runs for many minutes in one `generate`:
    a Stop checked only between batches waited all of it, 2026-12-07)."""

    def __init__(self, should_stop):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), bool(self.should_stop()), dtype=torch.bool, device=input_ids.device)


TRAIN_ADAPTER = "default"  # peft's name for the adapter being trained


class HFEngine:
    gives_logprobs = False  # samples with the trainer's own forward: nothing for an IS correction to weigh

    def __init__(self, model, tokenizer, *, max_batch_sequences: int = 64, merged_rollouts: bool = False):
        self.model = model  # a peft model; its "default" adapter is the one being trained
        self.tokenizer = tokenizer
        self.max_batch_sequences = max_batch_sequences
        # rollout(): fold the training adapter into the base for the sampling (merged_lora.py);
        # the caller's `merged=` wins (the trainer passes the run's run.merged_rollouts)
        self.merged_rollouts = merged_rollouts
        self.rollout_stats: dict = {}
        self._versions = itertools.count(1)
        self._train_ref: AdapterRef | None = None
        self._loaded: dict[str, AdapterRef] = {}
        device = str(next(model.parameters()).device)
        self.info = EngineInfo(backend="hf", device=device, details={"max_batch_sequences": max_batch_sequences})

    def _max_sequences(self, prompts, sampling: SamplingSettings) -> int:
        """Sequences per generate call: the configured cap, lowered to what free GPU memory holds."""
        free = self._free_bytes()
        if free is None or not prompts:
            return self.max_batch_sequences
        seq_len = max(len(p) for p in prompts) + sampling.max_tokens
        dtype_bytes = next(self.model.parameters()).element_size()
        fit = sequences_that_fit(self.model.config, free, seq_len, dtype_bytes=dtype_bytes)
        return max(sampling.n, min(self.max_batch_sequences, fit))  # one prompt's group at least

    def _free_bytes(self) -> int | None:
        """Free memory of the model's GPU; None on the CPU (no limit worth planning for)."""
        from core.memory.device import gpu_memory

        device = next(self.model.parameters()).device
        return gpu_memory(device=device)[0] if device.type == "cuda" else None

    # -- adapters -------------------------------------------------------------
    def update_adapter(self, model=None) -> AdapterRef:
        # The engine samples from the training model itself, so the weights are already live.
        version = next(self._versions)
        self._train_ref = AdapterRef(name=f"train-v{version}", version=version)
        return self._train_ref

    def load_adapter(self, path: str) -> AdapterRef:
        version = next(self._versions)
        name = f"ckpt-v{version}"
        self.model.load_adapter(path, adapter_name=name, is_trainable=False)
        ref = AdapterRef(name=name, version=version)
        self._loaded[name] = ref
        return ref

    def unload_adapter(self, ref: AdapterRef) -> None:
        if ref.name in self._loaded:
            self.model.delete_adapter(ref.name)
            del self._loaded[ref.name]

    @contextlib.contextmanager
    def _adapter(self, adapter: AdapterRef | None):
        if adapter is None:
            with self.model.disable_adapter():
                yield
        elif adapter.name in self._loaded:
            self.model.set_adapter(adapter.name)
            try:
                yield
            finally:
                self.model.set_adapter(TRAIN_ADAPTER)
        else:  # the training adapter (any version: the model holds the newest weights)
            yield

    # -- memory ---------------------------------------------------------------
    def close(self) -> None:
        """Nothing to shut down: the model belongs to the trainer."""

    def reset(self) -> None:
        """Nothing is ever left queued: `generate` runs to the end or raises."""

    def limits(self) -> dict:
        """Any adapter rank; the model's own context (its max_position_embeddings), which `generate`
        would otherwise run past: a 30,000-token question held the app's one worker for over ten
        minutes on a CPU (2026-12-07, a new user's paste), Stop and chat waiting behind it."""
        n = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return {"max_model_len": int(n) if isinstance(n, int) and n > 0 else None, "max_lora_rank": None}

    def configure(self, *, release_kv: bool) -> None:
        """Its KV cache lives only inside one `generate` call: nothing to keep or free."""

    def bind(self, model) -> None:
        """Sample from the trainer's new peft model (the adapters loaded before are gone with the old one)."""
        self.model = model
        self._loaded.clear()
        self._train_ref = None

    def has_adapter(self, ref: AdapterRef) -> bool:
        return ref.name in self._loaded

    def release_memory(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def restore_memory(self) -> None:
        pass

    # -- generation -----------------------------------------------------------
    def rollout(self, prompts: list[list[int]], sampling: SamplingSettings, adapter: AdapterRef | None, *,
                model=None, merged: bool | None = None, should_stop=None) -> list[list[Completion]]:
        """`generate` for a training step (see base.Engine.rollout). Folded, it samples with the
        adapter switched off from base weights that hold the adapter: no LoRA path per token."""
        from core.engines.merged_lora import rollout_with_fold

        merged = self.merged_rollouts if merged is None else merged
        blocked = None if model is None or model is self.model else "the model is not the one this engine samples"

        def sample(a):
            self.restore_memory()
            try:
                return self.generate(prompts, sampling, a, should_stop=should_stop)
            finally:
                self.release_memory()

        out, self.rollout_stats = rollout_with_fold(self.model, sample, adapter, merged, blocked=blocked)
        return out

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingSettings,
                 adapter: AdapterRef | None = None, should_stop=None) -> list[list[Completion]]:
        """n completions per prompt, in batches that fit; RolloutStopped between two batches once
        `should_stop()` is true."""
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        eos_id = self.tokenizer.eos_token_id
        per_chunk = max(1, self._max_sequences(prompts, sampling) // max(1, sampling.n))
        out: list[list[Completion]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with self._adapter(adapter):
                for start in range(0, len(prompts), per_chunk):
                    if should_stop is not None and should_stop():
                        raise RolloutStopped(f"stopped after {start} of {len(prompts)} prompts")
                    chunk = prompts[start:start + per_chunk]
                    # 1) left-pad the prompts into one batch
                    L = max(len(p) for p in chunk)
                    ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
                    attn = torch.zeros((len(chunk), L), dtype=torch.long)
                    for i, p in enumerate(chunk):
                        ids[i, L - len(p):] = torch.tensor(p)
                        attn[i, L - len(p):] = 1
                    greedy = sampling.temperature <= 0
                    gen_kwargs = dict(
                        max_new_tokens=sampling.max_tokens,
                        do_sample=not greedy,
                        num_return_sequences=sampling.n,
                        pad_token_id=pad_id,
                        eos_token_id=eos_id,
                        use_cache=True,
                    )
                    if not greedy:
                        gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
                    criteria = [_StopWhen(should_stop)] if should_stop is not None else []
                    if sampling.ignore_eos:
                        gen_kwargs.update(min_new_tokens=sampling.max_tokens)
                    elif sampling.stop:  # stop sampling there (the cut below is what every backend does)
                        criteria.append(_StopText(self.tokenizer, sampling.stop, L))
                    if criteria:
                        gen_kwargs.update(stopping_criteria=criteria)
                    # 2) sample n completions per prompt: (len(chunk) * n, L + new)
                    with torch.compiler.set_stance("force_eager"):  # compile_layers is for training's passes
                        seqs = self.model.generate(
                            input_ids=ids.to(device), attention_mask=attn.to(device), **gen_kwargs
                        )
                    if should_stop is not None and should_stop():  # cut short by a Stop: not a rollout to train on
                        raise RolloutStopped(f"stopped inside the rollout of prompts {start + 1}-{start + len(chunk)}")
                    new = seqs[:, L:].tolist()
                    # 3) cut each at its first EOS (kept, as the trainer learns to stop)
                    for i in range(len(chunk)):
                        group = []
                        for row in new[i * sampling.n:(i + 1) * sampling.n]:
                            if eos_id in row and not sampling.ignore_eos:
                                row = row[: row.index(eos_id) + 1]
                                reason = "stop"
                            else:
                                reason = "length"
                            group.append(completion_of(row, reason, self.tokenizer, sampling))
                        out.append(group)
        finally:
            if was_training:
                self.model.train()
        return out
