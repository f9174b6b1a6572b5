"""What a trained adapter can do: chat asked as its run trained, held-out evaluation,
retention off the task.

Refuses to know: how training runs, the app's threads and UI.
"""
