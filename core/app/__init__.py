"""The app's process: one run manager (one model, one worker thread, at most one active run), the
run library, chat and evaluation on demand, exports, and the messages a person reads.

Refuses to know: gradio (ui/ draws it), the RL step's insides.
"""
