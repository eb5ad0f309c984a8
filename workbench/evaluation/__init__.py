"""Evaluation for `rl eval`: sampling drivers live elsewhere; pure metric functions are in `workbench.evaluation.metrics`.

Kept import-free on purpose so `import workbench.evaluation` stays cheap (no numpy/scipy until metrics is imported).
"""
