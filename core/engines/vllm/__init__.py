"""vLLM backend: the in-process engine (engine.py) and every reach into vLLM's internals
(compat.py, compat_weights.py).

Refuses to know: rewards, losses, the app.
"""
