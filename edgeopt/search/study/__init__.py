"""The Optuna study and what every worker shares through it: storage, artifacts, settings."""
