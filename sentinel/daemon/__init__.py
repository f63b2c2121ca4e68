"""The long-running daemon: rule-group runner, lifecycle, the composition root, self-
metrics.
"""
