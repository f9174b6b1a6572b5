"""Rewards: the registry and weighted score (registry.py), user reward code found (code.py)
and run in a limited worker process (sandbox.py, process_guard.py), the shared error (base.py).

Refuses to know: models, engines, training.
"""
