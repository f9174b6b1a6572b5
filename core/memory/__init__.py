"""Memory arithmetic: a run's peak GPU memory (or RAM on a CPU) predicted from the model's config
before anything loads, the engine's sizes, and the words that explain a plan.

Refuses to know: torch (nothing here imports it), engines' objects, the UI.
"""
