"""Benchmark: the vLLM engine on a Qwen2.5-1.5B-shaped model, in the trainer's own setting.

Run it as `python -m bench.vllm_engine` from the repo root; __main__.py documents the four promises
measured, how and the commands. One module per role: workload.py (the steps and knobs shared by
parent and children), kv_log.py (vLLM's KV-cache log lines), child.py (one engine and its
measurements), parent.py (the model folder, the children, the results files), report.py (the
verdicts and the markdown).

This file imports nothing: every module imports its siblings directly.
"""
