"""The search: the only package that imports optuna.

It composes the stages' search spaces into candidates, runs each candidate in a bounded child
process, measures or estimates it on every target, and records plain numbers in the study.

Grouped by concern, each group importing only the ones before it:
``strategy`` (what to try: space, seeds, halving) < ``study`` (the Optuna study and what it
shares: storage, artifacts, shared settings, context, source, lifecycle) < ``trial`` (one
trial: objective, builder child, protocol) < ``integrations`` (MLflow tracking, dashboard) <
``run`` (a run's lifecycle and read side: setup, model probe, loop, progress, final measure,
collect, replay).
"""
