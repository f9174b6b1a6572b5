"""Per-token log-probs of completions, and a step's rollouts as padded tensors.

Owns: the completion tokens' log-probs (and entropies) read from the decoder's hidden states
through the fused kernel, so the [B, T, V] logits never exist (`completion_logprobs`, built from
`completion_hidden_states` + `logprobs_from_hidden`, which PPO reuses beside its value head);
the layout every loss reads — prompts left-padded, completions right-padded (`pad_rollouts`) —
and a batch of them sliced into micro-batches without the columns that are padding in all of
their rows (`Rollouts.slice`, `padding_trim`), and which rows each forward/backward pass takes
(`pass_rows`).

Refuses to know: losses, advantages, optimizers, which algorithm asks.

Shapes: B = sequences, Lp = longest prompt, T = longest completion, H = hidden size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from kernels import token_logprobs


# ---------------------------------------------------------------------------
# log-probs from hidden states


def decoder_and_head(model):
    """(decoder that returns hidden states, LM head weight) of a (peft-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return decoder, base.get_output_embeddings().weight


def completion_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             completion_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden (B, T, H), LM head weight): the decoder's state before each completion token, the
    one that predicts it. Runs the decoder only (no LM head)."""
    decoder, head = decoder_and_head(model)
    # left padding: positions count real tokens only, as in generation
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).last_hidden_state  # (B, Lp + T, H)
    T = completion_len
    return hidden[:, -T - 1:-1], head  # (B, T, H)


def logprobs_from_hidden(hidden: torch.Tensor, head: torch.Tensor, completion_ids: torch.Tensor,
                         completion_mask: torch.Tensor, temperature: float, return_entropy: bool = False):
    """Per-token log-probs (B, T) of `completion_ids` (and entropy (B, T) if asked), 0 on padding.

    The fused kernel gathers each target's log-prob from the hidden states and the head weight
    chunk by chunk: peak memory is O(rows x chunk), not O(B x T x V) as with `model(...).logits`.
    """
    sel = completion_mask.bool()  # only real tokens go through the head
    out = token_logprobs(hidden[sel], head, completion_ids[sel], temperature, return_entropy=return_entropy)
    logps_flat, ent_flat = out if return_entropy else (out, None)
    logps = torch.zeros(completion_ids.shape, dtype=torch.float32, device=hidden.device)
    logps = logps.masked_scatter(sel, logps_flat)  # (B, T)
    if not return_entropy:
        return logps
    ent = torch.zeros_like(logps).masked_scatter(sel, ent_flat.detach().float())
    return logps, ent


def completion_logprobs(
    model,
    input_ids: torch.Tensor,  # (B, Lp + T): left-padded prompt then right-padded completion
    attention_mask: torch.Tensor,  # (B, Lp + T)
    completion_ids: torch.Tensor,  # (B, T)
    completion_mask: torch.Tensor,  # (B, T)
    temperature: float,
    return_entropy: bool = False,
):
    """Per-token log-probs (B, T) of the completion tokens (and entropy (B, T) if asked)."""
    hidden, head = completion_hidden_states(model, input_ids, attention_mask, completion_ids.size(1))  # (B, T, H)
    return logprobs_from_hidden(hidden, head, completion_ids, completion_mask, temperature, return_entropy)


# ---------------------------------------------------------------------------
# a batch of rollouts as tensors


def pad_rollouts(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                 device) -> tuple[torch.Tensor, ...]:
    """Left-pad prompts, right-pad completions: (input_ids, attention_mask, completion_ids, completion_mask)."""
    B = len(prompt_ids)
    Lp = max(len(p) for p in prompt_ids)
    T = max(1, max(len(c) for c in completion_ids))
    ids = torch.full((B, Lp + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, Lp + T), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, Lp - len(p):Lp] = torch.tensor(p, dtype=torch.long)
        attn[i, Lp - len(p):Lp] = 1
        if c:
            ids[i, Lp:Lp + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[i, Lp:Lp + len(c)] = 1
    comp = ids[:, Lp:].clone()
    cmask = attn[:, Lp:].clone()
    return ids.to(device), attn.to(device), comp.to(device), cmask.to(device)


def padding_trim(attention_mask: torch.Tensor, completion_len: int) -> tuple[int, int]:
    """(k, t) for a micro-batch of left-padded prompts + right-padded completions: columns
    [k, Lp + t) hold every real token of its rows, so slicing inputs to them (and completion
    tensors to [:, :t]) drops only padding columns. Exact: padding attends to nothing and
    positions count real tokens. A batch padded to its longest row then costs each micro-batch
    only its own longest row (with micro-batch 1, every sequence its own length).

    >>> padding_trim(torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0]]), completion_len=3)
    (1, 2)
    """
    real = attention_mask.bool().any(0)  # (Lp + T,) columns with a real token in some row
    L = attention_mask.size(1)
    cols = real.nonzero().squeeze(1)
    if cols.numel() == 0:
        return 0, completion_len
    first, last = int(cols[0]), int(cols[-1])
    prompt_len = L - completion_len
    return min(first, prompt_len - 1), max(1, last - prompt_len + 1)


@dataclass
class Rollouts:
    input_ids: torch.Tensor  # (B, Lp + T)
    attention_mask: torch.Tensor  # (B, Lp + T)
    completion_ids: torch.Tensor  # (B, T)
    completion_mask: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)
    old_logps: torch.Tensor | None = None  # (B, T), when num_iterations > 1
    ref_logps: torch.Tensor | None = None  # (B, T), when beta > 0
    sampling_logps: torch.Tensor | None = None  # (B, T), the sampler's (vLLM's), for the IS correction

    def width(self, i: int, j: int) -> int:
        """Columns `slice(i, j)` keeps: the longest prompt + the longest completion of rows [i, j)."""
        T = self.completion_ids.size(1)
        k, t = padding_trim(self.attention_mask[i:j], T)
        return self.input_ids.size(1) - T + t - k

    def slice(self, i: int, j: int) -> "Rollouts":
        """Rows [i, j), without the columns that are padding in all of them (`padding_trim`)."""
        T = self.completion_ids.size(1)
        k, t = padding_trim(self.attention_mask[i:j], T)
        L = self.input_ids.size(1)

        def s(x):
            return None if x is None else x[i:j, :t]
        return Rollouts(self.input_ids[i:j, k:L - T + t], self.attention_mask[i:j, k:L - T + t], s(self.completion_ids),
                        s(self.completion_mask), self.advantages[i:j], s(self.old_logps), s(self.ref_logps),
                        s(self.sampling_logps))


def sampling_logps(logprobs: list[list[float] | None], T: int, device) -> torch.Tensor | None:
    """The sampler's log-probs of a step's completions (B, T), right-padded with 0, as `pad_rollouts`
    pads them; None unless every completion has them (a warning where some have: the step then goes
    uncorrected).

    >>> sampling_logps([[-0.5, -1.0], [-2.0]], 3, "cpu").tolist()
    [[-0.5, -1.0, 0.0], [-2.0, 0.0, 0.0]]
    """
    if not logprobs or any(lp is None for lp in logprobs):
        if logprobs and any(lp is not None for lp in logprobs):
            warnings.warn("the sampler gave log-probs for some completions only: this step is not IS-corrected")
        return None
    out = torch.zeros(len(logprobs), T, dtype=torch.float32)
    for i, lp in enumerate(logprobs):
        out[i, :len(lp)] = torch.tensor(lp[:T], dtype=torch.float32)
    return out.to(device)


def pass_rows(batch: Rollouts, micro_batch_size: int, planned_width: int, *, grow: bool = True) -> list[tuple[int, int]]:
    """Rows [i, j) of each forward/backward pass over a step's rollouts: `micro_batch_size`
    sequences, or with `grow` a whole multiple of it (2x, 4x, ..., every pass the same size) where
    this step's sequences are short enough that each pass still holds no more padded tokens than the
    planned micro-batch at full length (micro_batch_size x `planned_width`, the longest prompt +
    completion the config allows): the memory the plan counted, fewer and larger passes (a GPU pass
    of a few short sequences is launch-bound). bnpo keeps the configured micro-batch (grow=False):
    its loss is normalised per micro-batch, as TRL's, so another split would change it; the other
    losses are the same for equal parts."""
    B, size = batch.input_ids.size(0), max(1, micro_batch_size)
    if grow:
        budget = size * planned_width
        while B % (2 * size) == 0 and all(2 * size * batch.width(i, i + 2 * size) <= budget
                                          for i in range(0, B, 2 * size)):
            size *= 2
    return [(i, min(i + size, B)) for i in range(0, B, size)]


@torch.no_grad()
def logps_no_grad(model, batch: Rollouts, passes: list[tuple[int, int]], temperature: float) -> torch.Tensor:
    """The completions' log-probs without gradient (pi_old, or the reference with the adapter off),
    pass by pass (`pass_rows`), padded back to the batch's width: (B, T)."""
    out = []
    for i, j in passes:
        mb = batch.slice(i, j)
        lp = completion_logprobs(model, mb.input_ids, mb.attention_mask, mb.completion_ids, mb.completion_mask,
                                 temperature)  # (b, t <= T)
        out.append(torch.nn.functional.pad(lp, (0, batch.completion_ids.size(1) - lp.size(1))))
    return torch.cat(out)
