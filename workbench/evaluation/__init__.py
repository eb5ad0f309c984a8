"""Evaluation for `rl eval` and the evaluations inside `rl train`. One idea per module: `plan` (what to evaluate,
every input checked), `identity` (what defines a result), `dispatch` (which loop samples), `generate` (the HF
sampling and tool loops), `vllm_backend`, `rows` (samples -> rows -> metrics), `metrics` (pure metric functions),
`runner` (executes a plan; the names callers import). The `eval:` schema is `workbench.config.EvalConfig`.

Kept import-free on purpose so `import workbench.evaluation` stays cheap (no numpy/scipy until metrics is imported).
"""
