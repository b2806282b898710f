"""Outside tools that watch a search: MLflow tracking and optuna-dashboard."""
