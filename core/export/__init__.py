"""What leaves the app: an adapter's model card and files, a standalone TRL script.

Refuses to know: training and engines.
"""
