"""Runs: a run's folder (config, metrics, samples, status), its checkpoints, how far its adapter
moved, and which server paths a request may name.

Refuses to know: models, engines, the RL step (a checkpoint is plain data read back without code).
"""
