"""Aha Studio's library: one folder (a room) per job, imports running one way, from the first to the last.

errors, config (config.py, config_text.py)   what a run is, and the errors written for a person
data, memory, models, rewards                questions and prompts; memory arithmetic; loading; rewards
runs                                         run folders and checkpoints
engines                                      the engine protocol, its backends, the one registry
rl                                           the RL step (GRPO family, PPO, Online DPO)
evaluation, export                           what a trained adapter can do; what leaves the app
app                                          the run manager of the app's process

Refuses to know: gradio (ui/), command lines (scripts/). tests/test_layout.py holds the order.
"""
