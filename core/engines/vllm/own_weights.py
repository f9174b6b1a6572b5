"""The vLLM engine's own copy of the base, for a base the trainer cannot share (vLLM serving fp8).

Owns: what `VLLMEngine` does when `pushes_weights` (VLLMSettings.quantization "fp8", or own_weights):
the trainer keeps its own bf16 base, and
  - a merged rollout sends vLLM the tuned model, W + scale x B @ A of every LoRA layer
    (`core.engines.weight_stream`), which vLLM loads layer by layer and quantizes again
    (compat_weights.worker_reload_weights): the decode then reads fp8 weights, no LoRA kernels;
  - before anything else samples (chat, evaluation, a rollout through the adapter) the base goes
    back, once (`_serve_base`): the bound trainer's base, else the model's files; so chat's base and
    tuned answers come from the same fp8 base (tuned: through the adapter; a run's rollouts sampled the
    fp8 of the merged weights). A judge on the run's engine (Online DPO, `judge: self`) therefore costs
    two pushes a step (the base for it, the tuned model for the next rollouts).
The rollout's tokens then come from the fp8 model: their log-probs (vLLM's, asked for by the trainer's
importance-sampling correction) are the fp8 model's, which is what that correction weighs.

Refuses to know: losses, how the weights are quantized (vLLM's business), the app.
"""

from __future__ import annotations

import time
import warnings
import weakref

import torch

from core.engines.base import EngineError
from core.engines.vllm import compat_weights


class OwnWeights:
    """Mixed into VLLMEngine: needs `llm`, `pushes_weights`, `_holds`, `_bound`, `pushes` (its __init__)."""

    push_broken: str | None = None  # why this engine no longer sends the tuned weights (a push failed)

    def bind(self, model) -> None:
        """The trainer's model, whose base `_serve_base` sends back (`pushes_weights`); otherwise the
        engine serves the base it owns and whatever adapter `update_adapter` pushes. A new model (the
        app's next run) tries the push again, however the last one went."""
        self._bound = weakref.ref(model) if model is not None else None
        self.push_broken = None

    def _push(self, model, *, merged: bool) -> None:
        """Send vLLM `model`'s weights (the tuned model when `merged`; None: the model's files), which
        it loads layer by layer and quantizes again (compat_weights.worker_reload_weights)."""
        from core.engines.weight_stream import model_weights

        self._holds = "unknown"  # until vLLM has taken every layer
        stream = None if model is None else model_weights(model, merged=merged)
        res = self.llm.collective_rpc(compat_weights.worker_reload_weights, args=(stream,))[0]
        self.llm.reset_prefix_cache()  # cached prefixes were computed with other weights
        if res["not_loaded"]:
            raise EngineError(f"vLLM did not take every weight ({'; '.join(res['not_loaded'][:3])})")
        self.pushes += 1
        self._holds = "merged" if merged else None

    def _serve_base(self) -> None:
        """The model's own base back in the engine after a merged rollout: the bound trainer's base
        (the weights it trains on), else the model's files."""
        if self._holds is None:
            return
        model = self._bound() if self._bound is not None else None
        for source in ([model] if model is not None else []) + [None]:
            try:
                return self._push(source, merged=False)
            except Exception as e:  # noqa: BLE001 - the files are the last resort; their failure is said
                if source is not None:
                    warnings.warn(f"the trainer's base did not go back into vLLM ({type(e).__name__}: {e}); "
                                  "from the model's files instead")
                else:
                    raise EngineError(f"vLLM could not take the base weights back ({type(e).__name__}: {e}); "
                                      "the next request tries again") from e

    def _rollout_pushed(self, model, sample, adapter, merged: bool):
        """rollout()'s sampling on an engine with its own weights: the tuned model sent in (`_push`;
        its time is the stats' fold_s, and there is no unfold: the base goes back only before another
        generation), sampled with no LoRA request; unmerged, the base and the adapter. A push that
        fails (vLLM's reload rolled back) does not fail the step: it samples through the adapter, says
        why (a warning, the stats), and stops trying for this model (`push_broken`, until the next `bind`:
        each try costs a reload); out of memory costs that step only."""
        from core.engines.merged_lora import foldable

        why = "off" if not merged else foldable(model) if model is not None else "no model"
        why = why or self.push_broken
        t0 = time.perf_counter()
        if why is None:
            try:
                self._push(model, merged=True)
            except Exception as e:  # noqa: BLE001 - the adapter's path still samples the same model
                why = f"sending vLLM the tuned weights failed ({type(e).__name__}: {e})"
                if isinstance(e, torch.OutOfMemoryError):  # a tight step: this one goes through the adapter
                    why += "; this step samples through the adapter"
                else:
                    why = self.push_broken = why + "; this run samples through the adapter from now on"
                warnings.warn(why)
        if why is not None:
            self._serve_base()
            t1 = time.perf_counter()
            out = sample(adapter)
            return out, {"merged": False, "why_not_merged": why, "push_s": t1 - t0, "sample_s": time.perf_counter() - t1}
        t1 = time.perf_counter()
        out = sample(None)  # the engine's weights are the tuned model now: no LoRA request
        return out, {"merged": True, "pushed": True, "fold_s": t1 - t0, "sample_s": time.perf_counter() - t1,
                     "unfold_s": 0.0}
