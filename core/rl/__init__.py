"""The RL step: rollouts sampled and scored, advantages, losses, the optimizer step and the adapter
pushed to the engine; GRPO and its family, PPO, Online DPO, data parallel.

Refuses to know: the app (threads, the UI), how an engine is built (it is handed one), memory arithmetic.
"""
