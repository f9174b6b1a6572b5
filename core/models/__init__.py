"""Models: loading (the offline default, hub ids, local folders, LoRA on top, tiny test
models) and activation offload.

Refuses to know: engines, rewards, runs.
"""
