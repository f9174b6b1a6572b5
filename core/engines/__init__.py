"""Engines: the protocol (`base.py`), one module or folder per backend (`hf.py`, `vllm/`), merged-weight
rollouts (`merged_lora.py`), and the one registry from a run's config to its engine (`registry.py`).

Refuses to know: rewards, losses, chat templates (see `base.py`).
"""
