"""The search: the only package that imports optuna.

It composes the stages' search spaces into candidates, runs each candidate in a bounded child
process, measures or estimates it on every target, and records plain numbers in the study.
"""
