"""Benchmark: one GRPO step of ours against TRL's GRPOTrainer and Unsloth, same model, same settings.

Run it as `python -m bench.trl_compare` from the repo root; __main__.py documents the set of runs,
what is measured and how. One module per role: systems.py (what is measured), prompts.py (what
every side is given), measure.py (device memory, step timing, the child's record), ours.py,
trl_side.py and unsloth_side.py (each system's side, in its own child process), child.py (one
measurement), parent.py (the plan and the children), records.py (keys, merge, headline figures),
goals.py, tables.py and render.py (the markdown and the plot, `--render`).

This file imports nothing: every module imports its siblings directly.
"""
